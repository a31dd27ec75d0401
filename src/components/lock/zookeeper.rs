//! `zookeeper`: a lock is an ephemeral node `<keyPrefixPath>/<key>` (the
//! key escaped as a node name, see `zookeeper_client`), as in Layotto:
//! taking it creates the node, which only one session can do, so one owner
//! holds it until it is deleted.
//!
//! The node holds `<deadline>\n<owner>`: the lock's expiry as milliseconds
//! since the Unix epoch, then the owner. Layotto opens a session per lock
//! whose timeout is the lock's expiry and closes it when the expiry has
//! passed; here one session serves every lock, and a node past its
//! deadline counts as free: taking it deletes the expired node (checking
//! its version, so only the node that was read goes) and creates the new
//! one in one multi-operation. Releasing compares the owner and deletes
//! with the version read; extending (which Layotto leaves unimplemented)
//! rewrites the deadline with the version read, so a release, a takeover
//! or another extension in between makes it read again.
//!
//! Deadlines are read on the clocks of the sidecars sharing the ensemble,
//! so their skew adds to or takes from a lock's life. A node written by
//! Layotto (its owner alone) has no deadline: it is held until deleted or
//! until its session ends. As the node is ephemeral, the locks of a sidecar
//! that dies go when its session times out (`sessionTimeout`), whatever
//! their expiry.
//!
//! Metadata: the connection keys of `zookeeper_client` (`zookeeperHosts`,
//! `zookeeperPassword`, `sessionTimeout`, `logInfo`, `keyPrefixPath`,
//! default `/` as Layotto), and `keyPrefix`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::zookeeper_client as zk;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{LockStatus, LockStore};
use crate::components::zookeeper_client::{Zookeeper, ZookeeperConnection, map_error};
use crate::components::{
    BuildContext, BuildError, Component, ComponentError, ComponentType, KeyPrefixSection, TypeEntry,
};

pub const TYPE: TypeEntry<dyn LockStore> = TypeEntry::of::<ZookeeperType>();

pub struct ZookeeperType;

impl ComponentType<dyn LockStore> for ZookeeperType {
    const NAME: &'static str = "zookeeper";
    type Metadata = (ZookeeperConnection, KeyPrefixSection);

    fn build(
        _ctx: BuildContext,
        (connection, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn LockStore>, BuildError>> {
        async move {
            let zookeeper = connection.connect(&connection.base_or("/")).await?;
            Ok(Arc::new(ZookeeperLocks { zookeeper }) as Arc<dyn LockStore>)
        }
        .boxed()
    }
}

/// How often a call reads again when the node changed under it.
const ATTEMPTS: usize = 16;

pub struct ZookeeperLocks {
    zookeeper: Zookeeper,
}

/// What a lock node holds.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    /// Milliseconds since the Unix epoch; `None`: no deadline (a node
    /// written by Layotto).
    deadline: Option<u64>,
    owner: Vec<u8>,
}

impl Held {
    fn parse(data: &[u8]) -> Held {
        if let Some(newline) = data.iter().position(|&b| b == b'\n')
            && let Ok(text) = std::str::from_utf8(&data[..newline])
            && let Ok(deadline) = text.parse::<u64>()
        {
            return Held {
                deadline: Some(deadline),
                owner: data[newline + 1..].to_vec(),
            };
        }
        Held {
            deadline: None,
            owner: data.to_vec(),
        }
    }

    fn live(&self, now: u64) -> bool {
        self.deadline.is_none_or(|deadline| deadline > now)
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The node's data for `owner` until `ttl` from now.
fn node_data(owner: &str, ttl: Duration) -> Result<Vec<u8>, ComponentError> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let deadline = now_ms()
        .checked_add(ttl_ms)
        .ok_or_else(|| ComponentError::InvalidArgument(format!("an expiry of {ttl:?} is too far away")))?;
    let mut data = format!("{deadline}\n").into_bytes();
    data.extend_from_slice(owner.as_bytes());
    Ok(data)
}

fn ephemeral() -> zk::CreateOptions<'static> {
    zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all())
}

fn contended(what: &str, path: &str) -> ComponentError {
    ComponentError::Unavailable(format!(
        "zookeeper: {ATTEMPTS} attempts to {what} {path} lost to other writers"
    ))
}

impl ZookeeperLocks {
    /// The node of `path` as read: what it holds and its version; `None`
    /// when there is none.
    async fn read(&self, path: &str) -> Result<Option<(Held, i32)>, ComponentError> {
        match self.zookeeper.client.get_data(path).await {
            Ok((data, stat)) => Ok(Some((Held::parse(&data), stat.version))),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(map_error(e)),
        }
    }

    /// Replaces the expired node of version `version` by `data`, in one
    /// multi-operation; `false` when the node changed first.
    async fn take_over(&self, path: &str, version: i32, data: &[u8]) -> Result<bool, ComponentError> {
        let client = &self.zookeeper.client;
        let mut writer = client.new_multi_writer();
        writer.add_delete(path, Some(version)).map_err(map_error)?;
        writer.add_create(path, data, &ephemeral()).map_err(map_error)?;
        match writer.commit().await {
            Ok(_) => Ok(true),
            Err(zk::MultiWriteError::OperationFailed {
                source: zk::Error::BadVersion | zk::Error::NoNode | zk::Error::NodeExists,
                ..
            }) => Ok(false),
            Err(e) => Err(map_error(e.into())),
        }
    }
}

#[async_trait::async_trait]
impl Component for ZookeeperLocks {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.zookeeper.ping().await
    }
}

#[async_trait::async_trait]
impl LockStore for ZookeeperLocks {
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, ComponentError> {
        let path = self.zookeeper.path(key);
        let data = node_data(owner, ttl)?;
        for _ in 0..ATTEMPTS {
            match self.zookeeper.client.create(&path, &data, &ephemeral()).await {
                Ok(_) => return Ok(true),
                Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(map_error(e)),
            }
            // Held, unless its deadline has passed.
            let Some((held, version)) = self.read(&path).await? else {
                // Released in between: try again.
                continue;
            };
            if held.live(now_ms()) {
                return Ok(false);
            }
            if self.take_over(&path, version, &data).await? {
                return Ok(true);
            }
        }
        Err(contended("take", &path))
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<LockStatus, ComponentError> {
        let path = self.zookeeper.path(key);
        for _ in 0..ATTEMPTS {
            let Some((held, version)) = self.read(&path).await? else {
                return Ok(LockStatus::Unexist);
            };
            if !held.live(now_ms()) {
                // Expired: nobody holds it. The stale node may go.
                let _ = self.zookeeper.client.delete(&path, Some(version)).await;
                return Ok(LockStatus::Unexist);
            }
            if held.owner != owner.as_bytes() {
                return Ok(LockStatus::BelongsToOthers);
            }
            match self.zookeeper.client.delete(&path, Some(version)).await {
                Ok(()) => return Ok(LockStatus::Success),
                Err(zk::Error::NoNode) => return Ok(LockStatus::Unexist),
                // Extended or taken over in between: read again.
                Err(zk::Error::BadVersion) => continue,
                Err(e) => return Err(map_error(e)),
            }
        }
        Err(contended("release", &path))
    }

    async fn keep_alive(&self, key: &str, owner: &str, ttl: Duration) -> Result<LockStatus, ComponentError> {
        let path = self.zookeeper.path(key);
        let data = node_data(owner, ttl)?;
        for _ in 0..ATTEMPTS {
            let Some((held, version)) = self.read(&path).await? else {
                return Ok(LockStatus::Unexist);
            };
            if !held.live(now_ms()) {
                return Ok(LockStatus::Unexist);
            }
            if held.owner != owner.as_bytes() {
                return Ok(LockStatus::BelongsToOthers);
            }
            match self.zookeeper.client.set_data(&path, &data, Some(version)).await {
                Ok(_) => return Ok(LockStatus::Success),
                Err(zk::Error::NoNode) => return Ok(LockStatus::Unexist),
                Err(zk::Error::BadVersion) => continue,
                Err(e) => return Err(map_error(e)),
            }
        }
        Err(contended("extend", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zookeeper_lock_nodes_hold_a_deadline_and_the_owner() {
        let data = node_data("alice\nsmith", Duration::from_secs(2)).expect("data");
        let held = Held::parse(&data);
        assert_eq!(held.owner, b"alice\nsmith");
        let now = now_ms();
        assert!(held.live(now));
        assert!(!held.live(now + 2_001));
        // Layotto's nodes hold the owner alone, and never expire.
        let layotto = Held::parse(b"bob");
        assert_eq!(layotto.deadline, None);
        assert_eq!(layotto.owner, b"bob");
        assert!(layotto.live(u64::MAX));
    }
}
