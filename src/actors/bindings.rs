//! Messages for `bindings` components.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Operation;
use crate::components::bindings::{BindingRequest, BindingResponse, OutputBinding};
use crate::components::{ComponentError, OutputBindings};

/// One output binding call. An operation the binding does not do is
/// refused here, naming those it does.
pub struct Invoke {
    /// The binding's name, for the refusal.
    pub name: String,
    pub request: BindingRequest,
}

impl Operation<OutputBindings> for Invoke {
    type Output = BindingResponse;

    fn run(self, binding: Arc<dyn OutputBinding>) -> BoxFuture<'static, Result<BindingResponse, ComponentError>> {
        async move {
            let supported = binding.operations();
            if !supported.contains(&self.request.operation.as_str()) {
                return Err(ComponentError::InvalidArgument(format!(
                    "binding {} does not support operation {}. supported operations: {}",
                    self.name,
                    self.request.operation,
                    supported.join(" ")
                )));
            }
            binding.invoke(self.request).await
        }
        .boxed()
    }
}
