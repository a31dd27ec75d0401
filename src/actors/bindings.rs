//! Messages for `bindings` components.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Operation;
use crate::components::bindings::{Binding, BindingRequest, BindingResponse, Deliveries};
use crate::components::{Bindings, ComponentError};

/// One output binding call. An operation the binding does not do is
/// refused here, naming those it does.
pub struct Invoke {
    /// The binding's name, for the refusal.
    pub name: String,
    pub request: BindingRequest,
}

impl Operation<Bindings> for Invoke {
    type Output = BindingResponse;

    fn run(self, binding: Arc<dyn Binding>) -> BoxFuture<'static, Result<BindingResponse, ComponentError>> {
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

/// Starts reading an input binding's events (Unsupported for an
/// output-only binding).
pub struct Read;

impl Operation<Bindings> for Read {
    type Output = Deliveries;

    fn run(self, binding: Arc<dyn Binding>) -> BoxFuture<'static, Result<Deliveries, ComponentError>> {
        async move { binding.read().await }.boxed()
    }
}

/// Whether the binding reads input events.
pub struct IsInput;

impl Operation<Bindings> for IsInput {
    type Output = bool;

    fn run(self, binding: Arc<dyn Binding>) -> BoxFuture<'static, Result<bool, ComponentError>> {
        async move { Ok(binding.is_input()) }.boxed()
    }
}
