//! Messages for `name_resolution` components.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Operation;
use crate::components::name_resolution::NameResolver;
use crate::components::{ComponentError, NameResolvers};

/// The live addresses of `app_id`'s sidecars.
pub struct Resolve {
    pub app_id: String,
    pub namespace: String,
}

impl Operation<NameResolvers> for Resolve {
    type Output = Vec<String>;

    fn run(self, component: Arc<dyn NameResolver>) -> BoxFuture<'static, Result<Vec<String>, ComponentError>> {
        async move { component.resolve(&self.app_id, &self.namespace).await }.boxed()
    }
}
