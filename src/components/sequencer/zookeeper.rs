//! `zookeeper`: a counter per key, the persistent node
//! `<keyPrefixPath>/<key>` (the key escaped as a node name, see
//! `zookeeper_client`), its data the last id handed out in decimal. A
//! reservation reads the node and writes the new last id with the version
//! it read (ZooKeeper's compare-and-swap), reading again when another
//! sidecar got there first, so sidecars sharing the ensemble never overlap.
//!
//! Layotto's zookeeper sequencer answers the node's version, bumped by one
//! write per id, on an ephemeral node: its ids start over when the session
//! that created the node ends, stop at 2^31, cannot reserve a segment in
//! one write, and cannot start above `biggerThan` (Layotto refuses to start
//! instead). This counter is persistent and 64-bit, so ids survive restarts
//! and `WEAK` ids come from segments like every other store's.
//!
//! Metadata: the connection keys of `zookeeper_client` (`zookeeperHosts`,
//! `zookeeperPassword`, `sessionTimeout`, `logInfo`, `keyPrefixPath`,
//! default `/` as Layotto), the segment keys, `keyPrefix`.

use std::sync::Arc;

use ::zookeeper_client as zk;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{SequencerStore, Sequencing, segmented};
use crate::components::zookeeper_client::{Zookeeper, ZookeeperConnection, map_error};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn SequencerStore> = TypeEntry::of::<ZookeeperType>();

pub struct ZookeeperType;

impl ComponentType<dyn SequencerStore> for ZookeeperType {
    const NAME: &'static str = "zookeeper";
    type Metadata = (ZookeeperConnection, Sequencing);

    fn build(
        ctx: BuildContext,
        (connection, sequencing): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn SequencerStore>, BuildError>> {
        async move {
            let zookeeper = connection.connect(&connection.base_or("/")).await?;
            let counters = Arc::new(ZookeeperCounters { zookeeper });
            Ok(segmented(counters, &sequencing, ctx.tasks))
        }
        .boxed()
    }
}

/// How often a reservation is retried when other writers keep winning.
const ATTEMPTS: usize = 64;

pub struct ZookeeperCounters {
    zookeeper: Zookeeper,
}

impl ZookeeperCounters {
    /// The counter at `path` and its version; `None` when there is none.
    async fn read(&self, path: &str) -> Result<Option<(i64, i32)>, ComponentError> {
        match self.zookeeper.client.get_data(path).await {
            Ok((data, stat)) => {
                let text = String::from_utf8_lossy(&data);
                let current = text.trim().parse::<i64>().map_err(|_| {
                    ComponentError::Internal(format!("zookeeper node {path} holds '{text}', not a counter"))
                })?;
                Ok(Some((current, stat.version)))
            }
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(map_error(e)),
        }
    }
}

#[async_trait::async_trait]
impl Component for ZookeeperCounters {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.zookeeper.ping().await
    }
}

#[async_trait::async_trait]
impl SequencerStore for ZookeeperCounters {
    async fn reserve(&self, key: &str, size: u64, floor: i64) -> Result<i64, ComponentError> {
        let path = self.zookeeper.path(key);
        let size = i64::try_from(size).map_err(|_| ComponentError::InvalidArgument("segment too large".into()))?;
        let client = &self.zookeeper.client;
        for _ in 0..ATTEMPTS {
            let seen = self.read(&path).await?;
            let current = seen.map_or(0, |(current, _)| current);
            let last = current
                .max(floor)
                .checked_add(size)
                .ok_or_else(|| ComponentError::Internal("the sequence is exhausted".into()))?;
            let data = last.to_string();
            let written = match seen {
                Some((_, version)) => client.set_data(&path, data.as_bytes(), Some(version)).await.map(drop),
                None => {
                    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                    client.create(&path, data.as_bytes(), &options).await.map(drop)
                }
            };
            match written {
                Ok(()) => return Ok(last),
                // Another writer first (or the node went): read again.
                Err(zk::Error::BadVersion | zk::Error::NodeExists | zk::Error::NoNode) => continue,
                Err(e) => return Err(map_error(e)),
            }
        }
        Err(ComponentError::Unavailable(format!(
            "zookeeper: {ATTEMPTS} attempts to advance the counter {path} lost to other writers"
        )))
    }
}
