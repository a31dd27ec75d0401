//! Messages for `wasm` components (functions).

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Operation;
use crate::components::wasm::{Failure, Function, FunctionHost, FunctionRequest, FunctionResponse};
use crate::components::{ComponentError, Functions};

/// Runs one request on the function.
pub struct Run {
    pub request: FunctionRequest,
    pub host: Arc<dyn FunctionHost>,
}

impl Operation<Functions> for Run {
    type Output = Result<FunctionResponse, Failure>;

    fn run(self, function: Arc<dyn Function>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { function.run(self.request, self.host).await }.boxed()
    }
}

/// Changes the number of instances.
pub struct Resize {
    pub instances: usize,
}

impl Operation<Functions> for Resize {
    type Output = ();

    fn run(self, function: Arc<dyn Function>) -> BoxFuture<'static, Result<(), ComponentError>> {
        async move { function.resize(self.instances).await }.boxed()
    }
}
