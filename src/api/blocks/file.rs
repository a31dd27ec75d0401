//! The File block: put, get, list, delete and describe files in a store.
//!
//! Names are checked here for what no store can take (empty, a NUL byte,
//! longer than [`MAX_NAME_BYTES`]); where a name may point is the store's
//! rule (a `local` store refuses names that leave its root). A listing
//! page holds at most [`MAX_PAGE_SIZE`] files; 0 asks for the default,
//! [`DEFAULT_PAGE_SIZE`].

use super::{BlockError, required};
use crate::actors::file::{DelFile, GetFile, ListFile, PutFile, StatFile};
use crate::api::ApiContext;
pub use crate::components::file::{ByteStream, FileInfo, FileListing, FileMeta, FileMetadata, ListFiles};

/// The longest file name taken, in bytes.
pub const MAX_NAME_BYTES: usize = 4096;
/// Files in a listing page when the request asks for none in particular.
pub const DEFAULT_PAGE_SIZE: usize = 1000;
/// The most files one listing page holds.
pub const MAX_PAGE_SIZE: usize = 10_000;

/// Which file a request names.
#[derive(Clone, Debug, Default)]
pub struct FileRef {
    pub store: String,
    pub name: String,
    pub metadata: FileMetadata,
}

fn check_name(name: &str) -> Result<(), BlockError> {
    required(name, "name")?;
    if name.len() > MAX_NAME_BYTES {
        return Err(BlockError::invalid(format!(
            "name is {} bytes long; at most {MAX_NAME_BYTES} are taken",
            name.len()
        )));
    }
    if name.contains('\0') {
        return Err(BlockError::invalid("name contains a NUL byte"));
    }
    Ok(())
}

/// Writes a file from `data`, pulled as the store writes it.
pub async fn put(ctx: &ApiContext, file: FileRef, data: ByteStream) -> Result<(), BlockError> {
    let store = ctx.router.files.get("store_name", &file.store)?;
    check_name(&file.name)?;
    Ok(store
        .call(PutFile {
            name: file.name,
            data,
            metadata: file.metadata,
        })
        .await?)
}

/// The bytes of a file.
pub async fn get(ctx: &ApiContext, file: FileRef) -> Result<ByteStream, BlockError> {
    let store = ctx.router.files.get("store_name", &file.store)?;
    check_name(&file.name)?;
    Ok(store
        .call(GetFile {
            name: file.name,
            metadata: file.metadata,
        })
        .await?)
}

/// A page of the files whose names start with the request's name.
pub async fn list(ctx: &ApiContext, file: FileRef, page_size: i64, marker: String) -> Result<FileListing, BlockError> {
    let store = ctx.router.files.get("store_name", &file.store)?;
    if file.name.contains('\0') || marker.contains('\0') {
        return Err(BlockError::invalid("name and marker may not contain a NUL byte"));
    }
    let page_size = match usize::try_from(page_size) {
        Ok(0) => DEFAULT_PAGE_SIZE,
        Ok(n) if n <= MAX_PAGE_SIZE => n,
        _ => {
            return Err(BlockError::invalid(format!(
                "page_size {page_size} is out of range; 0 (the default, {DEFAULT_PAGE_SIZE}) to {MAX_PAGE_SIZE}"
            )));
        }
    };
    Ok(store
        .call(ListFile(ListFiles {
            prefix: file.name,
            marker,
            page_size,
            metadata: file.metadata,
        }))
        .await?)
}

/// Removes a file.
pub async fn delete(ctx: &ApiContext, file: FileRef) -> Result<(), BlockError> {
    let store = ctx.router.files.get("store_name", &file.store)?;
    check_name(&file.name)?;
    Ok(store
        .call(DelFile {
            name: file.name,
            metadata: file.metadata,
        })
        .await?)
}

/// A file's size, modification time and metadata.
pub async fn stat(ctx: &ApiContext, file: FileRef) -> Result<FileMeta, BlockError> {
    let store = ctx.router.files.get("store_name", &file.store)?;
    check_name(&file.name)?;
    Ok(store
        .call(StatFile {
            name: file.name,
            metadata: file.metadata,
        })
        .await?)
}
