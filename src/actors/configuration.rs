//! Messages for `config_store` components.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Operation;
use crate::components::configuration::{ConfigEvents, ConfigStore, ItemId, ItemValue, Selector};
use crate::components::{ComponentError, ConfigStores};

/// The items a selector names.
pub struct GetItems(pub Selector);

impl Operation<ConfigStores> for GetItems {
    type Output = Vec<(ItemId, ItemValue)>;

    fn run(self, store: Arc<dyn ConfigStore>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { store.get(&self.0).await }.boxed()
    }
}

/// Writes items.
pub struct SaveItems(pub Vec<(ItemId, ItemValue)>);

impl Operation<ConfigStores> for SaveItems {
    type Output = ();

    fn run(self, store: Arc<dyn ConfigStore>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { store.save(self.0).await }.boxed()
    }
}

/// Deletes items.
pub struct DeleteItems(pub Vec<ItemId>);

impl Operation<ConfigStores> for DeleteItems {
    type Output = ();

    fn run(self, store: Arc<dyn ConfigStore>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { store.delete(self.0).await }.boxed()
    }
}

/// The store's change feed, for as long as this incarnation lives.
pub struct Watch;

impl Operation<ConfigStores> for Watch {
    type Output = ConfigEvents;

    fn run(self, store: Arc<dyn ConfigStore>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { store.watch().await }.boxed()
    }
}
