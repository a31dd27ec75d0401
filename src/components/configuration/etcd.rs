//! `etcd`: configuration items as Layotto's etcd store keeps them: the
//! content at `/<appId>/<group>/<label>/<key>` and each tag at
//! `/<appId>/<group>/<label>/<key>/<tag name>` holding the tag's value, so
//! items written with `etcdctl put /app1/default/default/k v` are read, and
//! the keys stay readable with etcdctl. Item metadata is not stored (as in
//! Layotto). Names containing `/` are refused: they would change the path.
//!
//! The change feed is one etcd watch over the store's prefix, a task
//! linked to the component: every revision that touches an item is passed
//! on with the item as it stood at that revision (read at that revision,
//! so watchers get every intermediate value, in order), whoever wrote it.
//! When the watch ends (a lost connection, a compaction) the task fails,
//! the component is rebuilt, and watchers read the current values.
//!
//! Metadata: Layotto's etcd keys (`endpoints`, `dialTimeout`, `username`,
//! `password`; `keyPrefixPath` puts the tree under a path, default none).
//! Layotto's config.json writes the servers as `address` and the timeout
//! as `timeout` beside `type`; the config layer reads them as `endpoints`
//! and `dialTimeout`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::task::AbortHandle;

use super::{ConfigEvent, ConfigEvents, ConfigStore, Feed, ItemId, ItemValue, Selector};
use crate::components::etcd_client::{self, Etcd, EtcdConnection};
use crate::components::tasks::Tasks;
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};
use crate::proto::etcd as pb;

pub const TYPE: TypeEntry<dyn ConfigStore> = TypeEntry::of::<EtcdType>();

pub struct EtcdType;

impl ComponentType<dyn ConfigStore> for EtcdType {
    const NAME: &'static str = "etcd";
    type Metadata = EtcdConnection;

    fn build(
        ctx: BuildContext,
        connection: EtcdConnection,
    ) -> BoxFuture<'static, Result<Arc<dyn ConfigStore>, BuildError>> {
        async move {
            EtcdConfig::connect(&connection, &ctx.tasks)
                .await
                .map(|s| s as Arc<dyn ConfigStore>)
        }
        .boxed()
    }
}

pub struct EtcdConfig {
    etcd: Etcd,
    prefix: String,
    feed: Arc<Feed>,
    follower: AbortHandle,
}

impl EtcdConfig {
    async fn connect(connection: &EtcdConnection, tasks: &Tasks) -> Result<Arc<EtcdConfig>, BuildError> {
        let etcd = connection.connect().await?;
        let prefix = connection.prefix_or("/");
        let feed = Arc::new(Feed::default());
        // Watch before serving, so no change after start-up is missed and
        // a feed that cannot start fails the build.
        let watch = etcd
            .watch_prefix(prefix.as_bytes(), 0)
            .await
            .map_err(|e| BuildError(format!("etcd config store cannot follow changes: {e}")))?;
        let follower = tasks.spawn("change feed", follow(watch, etcd.clone(), prefix.clone(), feed.clone()));
        Ok(Arc::new(EtcdConfig {
            etcd,
            prefix,
            feed,
            follower,
        }))
    }

    fn item_key(&self, id: &ItemId) -> Result<String, ComponentError> {
        for (what, part) in [
            ("app id", &id.app_id),
            ("group", &id.group),
            ("label", &id.label),
            ("key", &id.key),
        ] {
            if part.contains('/') || part.is_empty() {
                return Err(ComponentError::InvalidArgument(format!(
                    "{what} '{part}' must be non-empty and contain no '/' in an etcd configuration store"
                )));
            }
        }
        Ok(format!(
            "{}{}/{}/{}/{}",
            self.prefix, id.app_id, id.group, id.label, id.key
        ))
    }
}

impl Drop for EtcdConfig {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// What an etcd key under the prefix stands for: an item's content
/// (`tag` none) or one of its tags.
fn parse_key(prefix: &str, key: &[u8]) -> Option<(ItemId, Option<String>)> {
    let key = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    let parts: Vec<&str> = key.split('/').collect();
    let id = |p: &[&str]| ItemId {
        app_id: p[0].to_owned(),
        group: p[1].to_owned(),
        label: p[2].to_owned(),
        key: p[3].to_owned(),
    };
    match parts.as_slice() {
        [_, _, _, _] if parts.iter().all(|p| !p.is_empty()) => Some((id(&parts), None)),
        [_, _, _, _, tag] if parts.iter().all(|p| !p.is_empty()) => Some((id(&parts), Some((*tag).to_owned()))),
        _ => None,
    }
}

/// Items from the key-values of a range: content and tags together.
fn items_of(prefix: &str, kvs: &[pb::KeyValue]) -> BTreeMap<ItemId, ItemValue> {
    let mut items: BTreeMap<ItemId, ItemValue> = BTreeMap::new();
    let mut with_content = HashSet::new();
    for kv in kvs {
        let Some((id, tag)) = parse_key(prefix, &kv.key) else {
            continue;
        };
        let value = String::from_utf8_lossy(&kv.value).into_owned();
        let item = items.entry(id.clone()).or_default();
        match tag {
            None => {
                item.content = value;
                with_content.insert(id);
            }
            Some(tag) => {
                item.tags.insert(tag, value);
            }
        }
    }
    // Tags left behind without their item are not an item.
    items.retain(|id, _| with_content.contains(id));
    items
}

/// The item `id` as it stood at `revision` (or now, when that revision
/// was compacted away): `None` when it did not exist.
async fn read_item(etcd: &Etcd, prefix: &str, id: &ItemId, revision: i64) -> Result<Option<ItemValue>, ComponentError> {
    let key = format!("{prefix}{}/{}/{}/{}", id.app_id, id.group, id.label, id.key);
    let content = match etcd.range(key.as_bytes(), false, revision).await {
        Ok(r) => r,
        Err(_) => etcd.range(key.as_bytes(), false, 0).await?,
    };
    let Some(content) = content.kvs.into_iter().next() else {
        return Ok(None);
    };
    let tags_key = format!("{key}/");
    let tags = match etcd
        .range(tags_key.as_bytes(), true, content.mod_revision.max(revision))
        .await
    {
        Ok(r) => r,
        Err(_) => etcd.range(tags_key.as_bytes(), true, 0).await?,
    };
    let mut all = vec![content];
    all.extend(tags.kvs);
    Ok(items_of(prefix, &all).remove(id))
}

/// Turns the watch into the change feed, until it ends.
async fn follow(
    mut watch: tonic::Streaming<pb::WatchResponse>,
    etcd: Etcd,
    prefix: String,
    feed: Arc<Feed>,
) -> Result<(), String> {
    loop {
        let response = match watch.next().await {
            Some(Ok(response)) => response,
            Some(Err(status)) => return Err(format!("the etcd watch failed: {}", status.message())),
            None => return Err("the etcd watch ended (connection lost)".to_owned()),
        };
        if response.canceled {
            feed.publish(ConfigEvent::Resync);
            return Err(format!("etcd cancelled the watch: {}", response.cancel_reason));
        }
        // The items this response touched, each at its last revision here,
        // in the order they first appear.
        let mut touched: Vec<(ItemId, i64)> = Vec::new();
        for event in &response.events {
            let Some(kv) = &event.kv else { continue };
            let Some((id, _)) = parse_key(&prefix, &kv.key) else {
                continue;
            };
            match touched.iter_mut().find(|(t, _)| *t == id) {
                Some((_, revision)) => *revision = (*revision).max(kv.mod_revision),
                None => touched.push((id, kv.mod_revision)),
            }
        }
        for (id, revision) in touched {
            match read_item(&etcd, &prefix, &id, revision).await {
                Ok(value) => feed.publish(ConfigEvent::Changed(id, value)),
                Err(_) => feed.publish(ConfigEvent::Resync),
            }
        }
    }
}

#[async_trait::async_trait]
impl Component for EtcdConfig {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.etcd.ping().await
    }

    async fn close(&self) {
        self.follower.abort();
    }
}

#[async_trait::async_trait]
impl ConfigStore for EtcdConfig {
    async fn get(&self, selector: &Selector) -> Result<Vec<(ItemId, ItemValue)>, ComponentError> {
        let folder = self.item_key(&selector.id("k"))?;
        let folder = folder.strip_suffix('k').unwrap_or(&folder);
        let kvs = self.etcd.range(folder.as_bytes(), true, 0).await?.kvs;
        Ok(items_of(&self.prefix, &kvs)
            .into_iter()
            .filter(|(id, _)| selector.matches(id))
            .collect())
    }

    async fn save(&self, items: Vec<(ItemId, ItemValue)>) -> Result<(), ComponentError> {
        // The last write of an item wins, as it would one by one.
        let mut latest: BTreeMap<ItemId, ItemValue> = BTreeMap::new();
        for (id, value) in items {
            latest.insert(id, value);
        }
        let mut ops = Vec::new();
        for (id, value) in &latest {
            let key = self.item_key(id)?;
            for tag in value.tags.keys() {
                if tag.contains('/') || tag.is_empty() {
                    return Err(ComponentError::InvalidArgument(format!(
                        "tag name '{tag}' must be non-empty and contain no '/' in an etcd configuration store"
                    )));
                }
            }
            // Tags the item no longer has go in the same transaction.
            let old = self.etcd.range(format!("{key}/").as_bytes(), true, 0).await?.kvs;
            for kv in old {
                if let Some((_, Some(tag))) = parse_key(&self.prefix, &kv.key)
                    && !value.tags.contains_key(&tag)
                {
                    ops.push(etcd_client::delete(&kv.key, false));
                }
            }
            ops.push(etcd_client::put(key.as_bytes(), value.content.as_bytes(), 0));
            for (tag, tag_value) in &value.tags {
                ops.push(etcd_client::put(
                    format!("{key}/{tag}").as_bytes(),
                    tag_value.as_bytes(),
                    0,
                ));
            }
        }
        self.etcd.all_of(ops).await
    }

    async fn delete(&self, ids: Vec<ItemId>) -> Result<(), ComponentError> {
        let mut seen = HashSet::new();
        let mut ops = Vec::new();
        for id in &ids {
            let key = self.item_key(id)?;
            if seen.insert(key.clone()) {
                ops.push(etcd_client::delete(key.as_bytes(), false));
                ops.push(etcd_client::delete(format!("{key}/").as_bytes(), true));
            }
        }
        self.etcd.all_of(ops).await
    }

    async fn watch(&self) -> Result<ConfigEvents, ComponentError> {
        Ok(self.feed.watch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_into_items_and_tags() {
        let (id, tag) = parse_key("/", b"/app/g/l/k").expect("item");
        assert_eq!((id.app_id.as_str(), id.key.as_str(), tag), ("app", "k", None));
        let (_, tag) = parse_key("/", b"/app/g/l/k/owner").expect("tag");
        assert_eq!(tag.as_deref(), Some("owner"));
        assert!(parse_key("/", b"/layotto/lock|||x").is_none());
        assert!(parse_key("/cfg/", b"/app/g/l/k").is_none());
    }
}
