//! `SayHello`, answered by a `hellos` component.

use tonic::Status;

use crate::actors::hello::SayHello;
use crate::api::ApiContext;
use crate::proto::runtime::v1::{SayHelloRequest, SayHelloResponse};

pub async fn say_hello(ctx: &ApiContext, req: SayHelloRequest) -> Result<SayHelloResponse, Status> {
    let component = ctx.router.hellos.get("service_name", &req.service_name)?;
    let hello = component.call(SayHello { name: req.name }).await?;
    Ok(SayHelloResponse { hello, data: req.data })
}
