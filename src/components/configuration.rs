//! The `config_store` building block: configuration items an app reads,
//! writes and watches, scoped by app id, group and label.
//!
//! A store keeps items and publishes a feed of changes from every writer
//! (this sidecar or any other): [`ConfigStore::watch`]. When a store cannot
//! vouch for its feed (it reconnected, or a watcher fell behind) it says
//! [`ConfigEvent::Resync`], and the subscriber is sent the current values
//! instead, so no change is missed silently.

pub mod etcd;
pub mod file;
pub mod memory;
pub mod postgres;
pub mod redis;

use std::collections::BTreeMap;

use futures::stream::BoxStream;
use tokio::sync::broadcast;

use super::{Component, ComponentError};

/// The group and label of items that name none, as in Layotto.
pub const DEFAULT_GROUP: &str = "default";
pub const DEFAULT_LABEL: &str = "default";

/// Where an item lives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemId {
    pub app_id: String,
    pub group: String,
    pub label: String,
    pub key: String,
}

/// An item's value.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ItemValue {
    pub content: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Which items a request means: every key of the app, group and label
/// when `keys` is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    pub app_id: String,
    pub group: String,
    pub label: String,
    pub keys: Vec<String>,
}

impl Selector {
    pub fn matches(&self, id: &ItemId) -> bool {
        id.app_id == self.app_id
            && id.group == self.group
            && id.label == self.label
            && (self.keys.is_empty() || self.keys.contains(&id.key))
    }

    pub fn id(&self, key: &str) -> ItemId {
        ItemId {
            app_id: self.app_id.clone(),
            group: self.group.clone(),
            label: self.label.clone(),
            key: key.to_owned(),
        }
    }
}

/// What a watcher hears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigEvent {
    /// An item was written (`Some`) or deleted (`None`).
    Changed(ItemId, Option<ItemValue>),
    /// Changes may have been missed: read the current values again.
    Resync,
}

/// The feed of one watcher. It ends when the store closes.
pub type ConfigEvents = BoxStream<'static, ConfigEvent>;

/// A configuration store.
#[async_trait::async_trait]
pub trait ConfigStore: Component {
    async fn get(&self, selector: &Selector) -> Result<Vec<(ItemId, ItemValue)>, ComponentError>;

    /// Writes every item, or none where the backend allows.
    async fn save(&self, items: Vec<(ItemId, ItemValue)>) -> Result<(), ComponentError>;

    async fn delete(&self, ids: Vec<ItemId>) -> Result<(), ComponentError>;

    /// Every change to the store, from now on.
    async fn watch(&self) -> Result<ConfigEvents, ComponentError>;
}

/// The fan-out of a store's change feed to its watchers. A watcher that
/// falls behind the buffer hears `Resync` instead of what it missed.
pub struct Feed(broadcast::Sender<ConfigEvent>);

impl Default for Feed {
    fn default() -> Self {
        Feed(broadcast::channel(1024).0)
    }
}

impl Feed {
    pub fn publish(&self, event: ConfigEvent) {
        let _ = self.0.send(event);
    }

    pub fn watch(&self) -> ConfigEvents {
        let receiver = self.0.subscribe();
        Box::pin(futures::stream::unfold(receiver, |mut rx| async move {
            match rx.recv().await {
                Ok(event) => Some((event, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some((ConfigEvent::Resync, rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        }))
    }
}
