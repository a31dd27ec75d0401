//! Messages for `hellos` components.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Operation;
use crate::components::hello::HelloService;
use crate::components::{ComponentError, Hellos};

/// Greets `name`.
pub struct SayHello {
    pub name: String,
}

impl Operation<Hellos> for SayHello {
    type Output = String;

    fn run(self, component: Arc<dyn HelloService>) -> BoxFuture<'static, Result<String, ComponentError>> {
        async move { component.hello(&self.name).await }.boxed()
    }
}
