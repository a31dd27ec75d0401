//! The Hello block: a greeting from a `hellos` component.

use super::BlockError;
use crate::actors::hello::SayHello;
use crate::api::ApiContext;

/// Asks the component `service_name` to greet `name`.
#[derive(Clone, Debug, Default)]
pub struct SayHelloRequest {
    pub service_name: String,
    pub name: String,
}

/// The greeting.
pub async fn say_hello(ctx: &ApiContext, req: SayHelloRequest) -> Result<String, BlockError> {
    let component = ctx.router.hellos.get("service_name", &req.service_name)?;
    Ok(component.call(SayHello { name: req.name }).await?)
}
