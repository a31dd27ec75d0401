//! The Bindings block: one operation of an output binding.
//!
//! The operation must be named and be one the binding does; a failure of
//! the binding is reported as Dapr words it (`error invoking output
//! binding <name>: <error>`).

use super::BlockError;
use crate::actors::bindings::Invoke;
use crate::api::ApiContext;
use crate::components::ComponentError;
pub use crate::components::bindings::{BindingRequest, BindingResponse};

/// Invokes the output binding `name`.
pub async fn invoke(ctx: &ApiContext, name: &str, mut request: BindingRequest) -> Result<BindingResponse, BlockError> {
    let binding = ctx.router.bindings.get("name", name)?;
    if request.operation.is_empty() {
        return Err(BlockError::invalid("operation field is missing from request"));
    }
    request.functions = super::wasm::access(ctx);
    binding
        .call(Invoke {
            name: name.to_owned(),
            request,
        })
        .await
        .map_err(|e| match e {
            crate::actors::CallError::Component {
                error: ComponentError::InvalidArgument(message),
                ..
            } => BlockError::InvalidArgument(message),
            crate::actors::CallError::Component { error, .. } => {
                BlockError::Internal(format!("error invoking output binding {name}: {error}"))
            }
            other => BlockError::from(other),
        })
}
