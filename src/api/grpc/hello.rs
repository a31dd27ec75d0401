//! `SayHello`, over [`blocks::hello`](crate::api::blocks::hello).

use tonic::Status;

use crate::api::ApiContext;
use crate::api::blocks::hello::{self, SayHelloRequest};
use crate::proto::runtime::v1 as pb;

pub async fn say_hello(ctx: &ApiContext, req: pb::SayHelloRequest) -> Result<pb::SayHelloResponse, Status> {
    let hello = hello::say_hello(
        ctx,
        SayHelloRequest {
            service_name: req.service_name,
            name: req.name,
        },
    )
    .await?;
    // Layotto echoes the request's `data`.
    Ok(pb::SayHelloResponse { hello, data: req.data })
}
