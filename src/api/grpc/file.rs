//! The File API: PutFile, GetFile, ListFile, DelFile and GetFileMeta, over
//! [`blocks::file`](crate::api::blocks::file). Uploads and downloads pass
//! chunk by chunk: nothing holds a whole file.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tonic::{Status, Streaming};

use super::runtime::ResponseStream;
use crate::api::ApiContext;
use crate::api::blocks::BlockError;
use crate::api::blocks::file::{self, FileRef};
use crate::components::ComponentError;
use crate::proto::runtime::v1 as pb;

fn file_ref(request: Option<pb::FileRequest>) -> Result<FileRef, Status> {
    let request = request.ok_or_else(|| Status::invalid_argument("request is missing"))?;
    Ok(FileRef {
        store: request.store_name,
        name: request.name,
        metadata: request.metadata.into_iter().collect(),
    })
}

/// The first message names the store, the file and its metadata; every
/// message's `data` is the next chunk.
pub async fn put_file(ctx: &ApiContext, mut upload: Streaming<pb::PutFileRequest>) -> Result<(), Status> {
    let first = upload
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("PutFile got no message; the first names store_name and name"))?;
    let file = FileRef {
        store: first.store_name,
        name: first.name,
        metadata: first.metadata.into_iter().collect(),
    };
    let rest = upload
        .map_ok(|message| Bytes::from(message.data))
        .map_err(|status| ComponentError::InvalidArgument(format!("the upload broke off: {}", status.message())));
    let data = futures::stream::once(async move { Ok(Bytes::from(first.data)) })
        .chain(rest)
        .try_filter(|chunk| std::future::ready(!chunk.is_empty()))
        .boxed();
    file::put(ctx, file, data).await?;
    Ok(())
}

pub async fn get_file(
    ctx: &ApiContext,
    req: pb::GetFileRequest,
) -> Result<ResponseStream<pb::GetFileResponse>, Status> {
    let file = FileRef {
        store: req.store_name,
        name: req.name,
        metadata: req.metadata.into_iter().collect(),
    };
    let data = file::get(ctx, file).await?;
    Ok(Box::pin(data.map(|chunk| match chunk {
        Ok(data) => Ok(pb::GetFileResponse { data: data.to_vec() }),
        Err(e) => Err(Status::from(BlockError::from_component(e))),
    })))
}

pub async fn list_file(ctx: &ApiContext, req: pb::ListFileRequest) -> Result<pb::ListFileResp, Status> {
    let file = file_ref(req.request)?;
    let listing = file::list(ctx, file, i64::from(req.page_size), req.marker).await?;
    Ok(pb::ListFileResp {
        files: listing
            .files
            .into_iter()
            .map(|f| pb::FileInfo {
                file_name: f.name,
                size: f.size,
                last_modified: f.last_modified,
                metadata: f.metadata.into_iter().collect(),
            })
            .collect(),
        marker: listing.marker,
        is_truncated: listing.is_truncated,
    })
}

pub async fn del_file(ctx: &ApiContext, req: pb::DelFileRequest) -> Result<(), Status> {
    file::delete(ctx, file_ref(req.request)?).await?;
    Ok(())
}

pub async fn get_file_meta(ctx: &ApiContext, req: pb::GetFileMetaRequest) -> Result<pb::GetFileMetaResponse, Status> {
    let meta = file::stat(ctx, file_ref(req.request)?).await?;
    Ok(pb::GetFileMetaResponse {
        size: meta.size,
        last_modified: meta.last_modified,
        response: Some(pb::FileMeta {
            metadata: meta
                .metadata
                .into_iter()
                .map(|(k, value)| (k, pb::FileMetaValue { value }))
                .collect(),
        }),
    })
}
