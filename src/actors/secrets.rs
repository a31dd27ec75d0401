//! Messages for `secret_store` components.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Operation;
use crate::components::secrets::{Secret, SecretStore};
use crate::components::{ComponentError, SecretStores};

/// One secret.
pub struct GetSecret {
    pub key: String,
}

impl Operation<SecretStores> for GetSecret {
    type Output = Option<Secret>;

    fn run(self, store: Arc<dyn SecretStore>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { store.get(&self.key).await }.boxed()
    }
}

/// Every secret.
pub struct GetBulkSecret;

impl Operation<SecretStores> for GetBulkSecret {
    type Output = BTreeMap<String, Secret>;

    fn run(self, store: Arc<dyn SecretStore>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { store.bulk().await }.boxed()
    }
}
