//! `in-memory`: configuration inside the sidecar; lost when it stops.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{ConfigEvent, ConfigEvents, ConfigStore, Feed, ItemId, ItemValue, Selector};
use crate::components::meta::NoMetadata;
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn ConfigStore> = TypeEntry::of::<MemoryType>();

pub struct MemoryType;

impl ComponentType<dyn ConfigStore> for MemoryType {
    const NAME: &'static str = "in-memory";
    type Metadata = NoMetadata;

    fn build(ctx: BuildContext, _metadata: NoMetadata) -> BoxFuture<'static, Result<Arc<dyn ConfigStore>, BuildError>> {
        // The items (and their watchers' feed) survive a restart.
        let store = ctx.retained.get_or_init(MemoryConfig::default);
        async move { Ok(store as Arc<dyn ConfigStore>) }.boxed()
    }
}

#[derive(Default)]
pub struct MemoryConfig {
    items: Mutex<BTreeMap<ItemId, ItemValue>>,
    feed: Feed,
}

impl MemoryConfig {
    fn items(&self) -> MutexGuard<'_, BTreeMap<ItemId, ItemValue>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Component for MemoryConfig {
    async fn health_check(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl ConfigStore for MemoryConfig {
    async fn get(&self, selector: &Selector) -> Result<Vec<(ItemId, ItemValue)>, ComponentError> {
        Ok(self
            .items()
            .iter()
            .filter(|(id, _)| selector.matches(id))
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect())
    }

    async fn save(&self, items: Vec<(ItemId, ItemValue)>) -> Result<(), ComponentError> {
        let mut all = self.items();
        for (id, value) in items {
            all.insert(id.clone(), value.clone());
            // Published under the lock, so watchers see changes in order.
            self.feed.publish(ConfigEvent::Changed(id, Some(value)));
        }
        Ok(())
    }

    async fn delete(&self, ids: Vec<ItemId>) -> Result<(), ComponentError> {
        let mut all = self.items();
        for id in ids {
            if all.remove(&id).is_some() {
                self.feed.publish(ConfigEvent::Changed(id, None));
            }
        }
        Ok(())
    }

    async fn watch(&self) -> Result<ConfigEvents, ComponentError> {
        Ok(self.feed.watch())
    }
}
