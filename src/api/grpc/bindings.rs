//! Layotto's InvokeBinding, over [`blocks::bindings`](crate::api::blocks::bindings).

use tonic::Status;

use crate::api::ApiContext;
use crate::api::blocks::bindings::{self, BindingRequest};
use crate::proto::runtime::v1 as pb;

pub async fn invoke_binding(
    ctx: &ApiContext,
    req: pb::InvokeBindingRequest,
) -> Result<pb::InvokeBindingResponse, Status> {
    let response = bindings::invoke(
        ctx,
        &req.name,
        BindingRequest {
            operation: req.operation,
            data: req.data,
            metadata: req.metadata.into_iter().collect(),
            ..Default::default()
        },
    )
    .await?;
    Ok(pb::InvokeBindingResponse {
        data: response.data.unwrap_or_default(),
        metadata: response.metadata.into_iter().collect(),
    })
}
