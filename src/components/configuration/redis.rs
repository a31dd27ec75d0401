//! `redis`: configuration items as Redis keys
//! `layotto||config||<app>||<group>||<label>||<key>` holding JSON
//! (`{content, tags, metadata}`), with a set per app, group and label
//! listing its keys.
//!
//! The change feed has two sources on one subscription. Sidecars announce
//! each write, value included, on the channel `layotto||config-changes||<db>`
//! inside the transaction that makes it (announcement first), so watchers
//! get every intermediate value, in order. Keyspace notifications cover
//! other writers (`redis-cli`, a script): a notification that follows an
//! announcement for its key is the same write and is skipped; any other is
//! read back and passed on. The store turns notifications on
//! (`notify-keyspace-events` gains `K$g`) when they are off, on every
//! connection, since a restarted Redis forgets them. The feed is a task
//! linked to the component: when its connection drops the task fails, the
//! component goes DOWN and is rebuilt, and watchers, whose feed ended, read
//! the current values from the new one. A failed read of a changed key is
//! never a delete: when Redis is unreachable watchers are told to read the
//! current values again; a value that is no string (another tool wrote a
//! hash over the item, say) is not passed on, and the key's next write
//! brings its value.
//!
//! Metadata: the connection keys of `redis_client` (`redisHost`, ...).

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use redis::aio::ConnectionManager;
use tokio::task::AbortHandle;
use tracing::{info, warn};

use super::{ConfigEvent, ConfigEvents, ConfigStore, Feed, ItemId, ItemValue, Selector};
use crate::components::redis_client::{self, RedisConnection, map_error};
use crate::components::tasks::Tasks;
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn ConfigStore> = TypeEntry::of::<RedisType>();

pub struct RedisType;

impl ComponentType<dyn ConfigStore> for RedisType {
    const NAME: &'static str = "redis";
    type Metadata = RedisConnection;

    fn build(
        ctx: BuildContext,
        connection: RedisConnection,
    ) -> BoxFuture<'static, Result<Arc<dyn ConfigStore>, BuildError>> {
        async move {
            RedisConfig::connect(&connection, &ctx.tasks)
                .await
                .map(|s| s as Arc<dyn ConfigStore>)
        }
        .boxed()
    }
}

const SEP: &str = "||";
const ITEM_PREFIX: &str = "layotto||config||";
const INDEX_PREFIX: &str = "layotto||config-index||";
const CHANGES_CHANNEL: &str = "layotto||config-changes||";

/// A write as sidecars announce it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Announcement {
    app_id: String,
    group: String,
    label: String,
    key: String,
    /// `None` for a delete.
    value: Option<ItemValue>,
}

fn item_key(id: &ItemId) -> String {
    format!(
        "{ITEM_PREFIX}{}{SEP}{}{SEP}{}{SEP}{}",
        id.app_id, id.group, id.label, id.key
    )
}

fn index_key(app_id: &str, group: &str, label: &str) -> String {
    format!("{INDEX_PREFIX}{app_id}{SEP}{group}{SEP}{label}")
}

/// The item a Redis key holds, from its name.
fn parse_item_key(key: &str) -> Option<ItemId> {
    let rest = key.strip_prefix(ITEM_PREFIX)?;
    let mut parts = rest.splitn(4, SEP);
    Some(ItemId {
        app_id: parts.next()?.to_owned(),
        group: parts.next()?.to_owned(),
        label: parts.next()?.to_owned(),
        key: parts.next()?.to_owned(),
    })
}

/// Makes sure Redis publishes keyspace events for string and generic
/// commands, adding to whatever flags are already set.
async fn ensure_notifications(conn: &mut ConnectionManager) -> Result<(), String> {
    let current: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(conn)
        .await
        .map_err(|e| format!("cannot read notify-keyspace-events: {e}"))?;
    let flags = current.get(1).cloned().unwrap_or_default();
    let has = |c: char| flags.contains(c) || (c != 'K' && c != 'E' && flags.contains('A'));
    if has('K') && has('$') && has('g') {
        return Ok(());
    }
    let mut wanted = flags.clone();
    for c in ['K', '$', 'g'] {
        if !has(c) {
            wanted.push(c);
        }
    }
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(&wanted)
        .query_async::<()>(conn)
        .await
        .map_err(|e| {
            format!("keyspace notifications are off and cannot be turned on ({e}); set notify-keyspace-events to K$g")
        })?;
    info!(flags = %wanted, "Turned on Redis keyspace notifications for configuration changes");
    Ok(())
}

pub struct RedisConfig {
    conn: ConnectionManager,
    /// Where this database's writes are announced.
    channel: String,
    feed: Arc<Feed>,
    follower: AbortHandle,
}

impl RedisConfig {
    async fn connect(connection: &RedisConnection, tasks: &Tasks) -> Result<Arc<RedisConfig>, BuildError> {
        let mut conn = connection.connect().await?;
        ensure_notifications(&mut conn)
            .await
            .map_err(|e| BuildError(format!("redis config store: {e}")))?;
        let client = redis::Client::open(connection.url()).map_err(|e| BuildError(e.to_string()))?;
        let db = connection.redis_db.0.to_string();
        let feed = Arc::new(Feed::default());
        let channel = format!("{CHANGES_CHANNEL}{db}");
        // Subscribe before serving, so no change after start-up is missed
        // and a feed that cannot start fails the build.
        let pubsub = subscribe(&client, &db)
            .await
            .map_err(|e| BuildError(format!("redis config store cannot follow changes: {e}")))?;
        let follower = tasks.spawn("change feed", follow(pubsub, conn.clone(), db, feed.clone()));
        Ok(Arc::new(RedisConfig {
            conn,
            channel,
            feed,
            follower,
        }))
    }
}

impl Drop for RedisConfig {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// The subscription the change feed reads: the announcements, and the
/// keyspace events of item keys.
async fn subscribe(client: &redis::Client, db: &str) -> Result<redis::aio::PubSub, String> {
    let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
    pubsub
        .subscribe(format!("{CHANGES_CHANNEL}{db}"))
        .await
        .map_err(|e| e.to_string())?;
    pubsub
        .psubscribe(format!("__keyspace@{db}__:{ITEM_PREFIX}*"))
        .await
        .map_err(|e| e.to_string())?;
    Ok(pubsub)
}

/// Turns announcements and keyspace notifications into the change feed,
/// until the subscription's connection is lost.
async fn follow(
    mut pubsub: redis::aio::PubSub,
    mut conn: ConnectionManager,
    db: String,
    feed: Arc<Feed>,
) -> Result<(), String> {
    let channel_prefix = format!("__keyspace@{db}__:");
    let announcements = format!("{CHANGES_CHANNEL}{db}");
    // Keyspace events still to come for announced writes, by key.
    let mut announced: HashMap<String, usize> = HashMap::new();
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        if message.get_channel_name() == announcements {
            let Ok(a) = serde_json::from_slice::<Announcement>(message.get_payload_bytes()) else {
                continue;
            };
            let id = ItemId {
                app_id: a.app_id,
                group: a.group,
                label: a.label,
                key: a.key,
            };
            *announced.entry(item_key(&id)).or_default() += 1;
            feed.publish(ConfigEvent::Changed(id, a.value));
            continue;
        }
        let Some(key) = message.get_channel_name().strip_prefix(&channel_prefix) else {
            continue;
        };
        if let Some(pending) = announced.get_mut(key) {
            *pending -= 1;
            if *pending == 0 {
                announced.remove(key);
            }
            continue;
        }
        let Some(id) = parse_item_key(key) else {
            continue;
        };
        // Another tool wrote it: read what is there now.
        let event: String = message.get_payload().unwrap_or_default();
        let value = match event.as_str() {
            "del" | "expired" | "evicted" => None,
            _ => match read(&mut conn, &id).await {
                Ok(value) => value,
                // Redis answered, but not with a value (a hash written over
                // the item, say): not a delete, and nothing to pass on
                // either. The key's next write is read again.
                Err(ComponentError::Internal(error)) => {
                    warn!(%error, %key, "Configuration item changed to something unreadable; not passed on");
                    continue;
                }
                // Watchers read the current values, and retry until that
                // works.
                Err(error) => {
                    warn!(%error, %key, "Cannot read a changed configuration item; watchers resync");
                    feed.publish(ConfigEvent::Resync);
                    continue;
                }
            },
        };
        feed.publish(ConfigEvent::Changed(id, value));
    }
    Err("the keyspace subscription lost its connection to Redis".to_owned())
}

async fn read(conn: &mut ConnectionManager, id: &ItemId) -> Result<Option<ItemValue>, ComponentError> {
    let raw: Option<String> = redis::cmd("GET")
        .arg(item_key(id))
        .query_async(conn)
        .await
        .map_err(map_error)?;
    // A value another tool wrote as plain text is its content.
    Ok(raw.map(|text| {
        serde_json::from_str(&text).unwrap_or(ItemValue {
            content: text,
            ..Default::default()
        })
    }))
}

/// Queues the announcement of a write in `pipe`.
fn announce(
    pipe: &mut redis::Pipeline,
    channel: &str,
    id: &ItemId,
    value: Option<&ItemValue>,
) -> Result<(), ComponentError> {
    let announcement = Announcement {
        app_id: id.app_id.clone(),
        group: id.group.clone(),
        label: id.label.clone(),
        key: id.key.clone(),
        value: value.cloned(),
    };
    let json = serde_json::to_string(&announcement).map_err(|e| ComponentError::Internal(e.to_string()))?;
    pipe.cmd("PUBLISH").arg(channel).arg(json).ignore();
    Ok(())
}

#[async_trait::async_trait]
impl Component for RedisConfig {
    async fn health_check(&self) -> Result<(), ComponentError> {
        redis_client::ping(&mut self.conn.clone()).await
    }

    async fn close(&self) {
        self.follower.abort();
    }
}

#[async_trait::async_trait]
impl ConfigStore for RedisConfig {
    async fn get(&self, selector: &Selector) -> Result<Vec<(ItemId, ItemValue)>, ComponentError> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = if selector.keys.is_empty() {
            let mut members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(index_key(&selector.app_id, &selector.group, &selector.label))
                .query_async(&mut conn)
                .await
                .map_err(map_error)?;
            members.sort();
            members
        } else {
            selector.keys.clone()
        };
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<ItemId> = keys.iter().map(|k| selector.id(k)).collect();
        let mut cmd = redis::cmd("MGET");
        for id in &ids {
            cmd.arg(item_key(id));
        }
        let values: Vec<Option<String>> = cmd.query_async(&mut conn).await.map_err(map_error)?;
        Ok(ids
            .into_iter()
            .zip(values)
            .filter_map(|(id, raw)| Some((id, serde_json::from_str(&raw?).ok()?)))
            .collect())
    }

    async fn save(&self, items: Vec<(ItemId, ItemValue)>) -> Result<(), ComponentError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (id, value) in &items {
            let json = serde_json::to_string(value).map_err(|e| ComponentError::Internal(e.to_string()))?;
            // The announcement goes first: watchers expect the keyspace
            // event that follows it.
            announce(&mut pipe, &self.channel, id, Some(value))?;
            pipe.cmd("SET").arg(item_key(id)).arg(json).ignore();
            pipe.cmd("SADD")
                .arg(index_key(&id.app_id, &id.group, &id.label))
                .arg(&id.key)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await.map_err(map_error)
    }

    async fn delete(&self, ids: Vec<ItemId>) -> Result<(), ComponentError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in &ids {
            announce(&mut pipe, &self.channel, id, None)?;
            pipe.cmd("DEL").arg(item_key(id)).ignore();
            pipe.cmd("SREM")
                .arg(index_key(&id.app_id, &id.group, &id.label))
                .arg(&id.key)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await.map_err(map_error)
    }

    async fn watch(&self) -> Result<ConfigEvents, ComponentError> {
        Ok(self.feed.watch())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_keys_round_trip() {
        let id = ItemId {
            app_id: "app".into(),
            group: "g".into(),
            label: "l".into(),
            key: "a||b".into(),
        };
        assert_eq!(parse_item_key(&item_key(&id)), Some(id));
    }
}
