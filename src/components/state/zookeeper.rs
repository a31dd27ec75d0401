//! `zookeeper`: state in ZooKeeper, one persistent node per key at
//! `<keyPrefixPath>/<key>` (the key escaped as a node name, see
//! `zookeeper_client`), as Dapr's zookeeper state store lays it out.
//!
//! A node's data is a 9-byte header then the value: a format byte (1) and
//! the expiry as milliseconds since the Unix epoch, big-endian (0: never).
//! A node whose data has no such header (written by Dapr or by hand) reads
//! as a value that never expires. An expired node reads as missing, and
//! the read removes it (checking its version, so a newer write stays).
//!
//! The etag is the node's `mzxid`: the id of the ZooKeeper transaction that
//! wrote the value. Dapr answers the node's version instead, which starts
//! at 0 again when a key is deleted and written anew, so an etag taken
//! before the delete would match the new value; a transaction id never
//! comes back.
//!
//! Every write (a single upsert or delete too) reads the nodes it touches,
//! checks etags, first-write and expiry against what it read, and commits
//! one ZooKeeper multi-operation whose every step names the version it read
//! (or creates a node that did not exist): it applies entirely or not at
//! all, and a node changed in between fails it, upon which the write reads
//! again. Transactions are therefore atomic against every other writer,
//! other sidecars included. Queries list the children of `keyPrefixPath`
//! and read each matching node.
//!
//! ZooKeeper refuses requests larger than its `jute.maxbuffer` (1 MiB less
//! one byte by default) and drops the connection that sent one, so writes
//! larger than `maxBufferSize` (values, paths and framing together) are
//! refused here, before sending, as invalid.
//!
//! Metadata: the connection keys of `zookeeper_client` (`servers` or
//! `zookeeperHosts`, `sessionTimeout`, `zookeeperPassword`, `logInfo`,
//! `keyPrefixPath`, default `/layotto/state`), Dapr's `maxBufferSize` and
//! `maxConnBufferSize`, and `keyPrefix`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::zookeeper_client as zk;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{
    Concurrency, Consistency, DeleteRequest, Etag, SetRequest, StateStore, StateValue, TransactionOp, already_exists,
    etag_mismatch, too_many,
};
use crate::components::meta::Section;
use crate::components::zookeeper_client::{Zookeeper, ZookeeperConnection, key_of, map_error};
use crate::components::{
    BuildContext, BuildError, Component, ComponentError, ComponentType, KeyPrefixSection, MetadataError, TypeEntry,
};

pub const TYPE: TypeEntry<dyn StateStore> = TypeEntry::of::<ZookeeperType>();

/// Where keys live when `keyPrefixPath` is not set.
pub const DEFAULT_BASE: &str = "/layotto/state";

/// ZooKeeper's default `jute.maxbuffer`: the largest request it takes.
pub const JUTE_MAXBUFFER: u64 = 0xfffff;

/// Dapr's buffer keys, a section of the state store's metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BufferKeys {
    /// The largest write request sent to ZooKeeper, in bytes (values, paths
    /// and framing together); default 1,048,575, ZooKeeper's default
    /// `jute.maxbuffer`. Raise it only with the servers' `jute.maxbuffer`.
    #[serde(default = "default_max_buffer")]
    pub max_buffer_size: u64,
    /// Dapr's size of its client's connection buffer: accepted and ignored
    /// (this client sizes its buffers to each request).
    #[serde(default)]
    pub max_conn_buffer_size: Option<u64>,
}

fn default_max_buffer() -> u64 {
    JUTE_MAXBUFFER
}

impl Section for BufferKeys {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        if self.max_buffer_size < 1024 {
            errors.push(MetadataError::new(
                "maxBufferSize",
                format!(
                    "'{}' leaves no room for a value: at least 1024 bytes",
                    self.max_buffer_size
                ),
            ));
        }
    }
}

pub struct ZookeeperType;

impl ComponentType<dyn StateStore> for ZookeeperType {
    const NAME: &'static str = "zookeeper";
    type Metadata = (ZookeeperConnection, BufferKeys, KeyPrefixSection);

    fn build(
        _ctx: BuildContext,
        (connection, buffers, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn StateStore>, BuildError>> {
        async move {
            let zookeeper = connection.connect(&connection.base_or(DEFAULT_BASE)).await?;
            Ok(Arc::new(ZookeeperStore {
                zookeeper,
                max_request: buffers.max_buffer_size,
            }) as Arc<dyn StateStore>)
        }
        .boxed()
    }
}

/// How often a write reads again when a node changed under it.
const ATTEMPTS: usize = 16;

/// The header's format byte.
const FORMAT: u8 = 1;
/// The header's length: the format byte and the expiry.
const HEADER: usize = 9;
/// Framing of a request and of each of its operations, beyond paths and
/// data (headers, lengths, versions, ACLs, flags), with room to spare.
const REQUEST_FRAMING: u64 = 64;
const OP_FRAMING: u64 = 96;

pub struct ZookeeperStore {
    zookeeper: Zookeeper,
    max_request: u64,
}

/// A node's data: its value and when it expires.
struct Stored<'a> {
    value: &'a [u8],
    /// Milliseconds since the Unix epoch; `None`: never.
    expires_at: Option<u64>,
}

impl<'a> Stored<'a> {
    fn parse(data: &'a [u8]) -> Stored<'a> {
        match data.split_first() {
            Some((&FORMAT, rest)) if data.len() >= HEADER => {
                let mut expiry = [0u8; 8];
                expiry.copy_from_slice(&rest[..8]);
                let expiry = u64::from_be_bytes(expiry);
                Stored {
                    value: &data[HEADER..],
                    expires_at: (expiry != 0).then_some(expiry),
                }
            }
            _ => Stored {
                value: data,
                expires_at: None,
            },
        }
    }
}

/// A node's data for `value`, expiring after `ttl`.
fn encode(value: &[u8], ttl: Option<Duration>) -> Result<Vec<u8>, ComponentError> {
    let expiry = match ttl {
        None => 0,
        Some(ttl) => now_ms()
            .checked_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .ok_or_else(|| ComponentError::InvalidArgument(format!("a TTL of {ttl:?} is too far away")))?,
    };
    let mut data = Vec::with_capacity(HEADER + value.len());
    data.push(FORMAT);
    data.extend_from_slice(&expiry.to_be_bytes());
    data.extend_from_slice(value);
    Ok(data)
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A node as read.
struct Node {
    value: Vec<u8>,
    etag: Etag,
    /// Milliseconds since the Unix epoch; `None`: never.
    expires_at: Option<u64>,
    version: i32,
}

impl Node {
    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

/// What a write read of one node.
#[derive(Clone, Copy)]
struct Read {
    /// The node's version, when it exists (expired or not).
    version: Option<i32>,
    /// The live value's etag, when there is one.
    etag: Option<Etag>,
}

/// A key as the operations before the current one left it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Absent,
    Stored(Etag),
    /// Written by this transaction: no etag a client holds matches it.
    Written,
}

/// The etag and first-write rules against what the transaction sees.
fn check(op: &TransactionOp, seen: Seen) -> Result<(), ComponentError> {
    let (expected, first_write) = match op {
        TransactionOp::Upsert(req) => (req.etag, req.concurrency == Concurrency::FirstWrite),
        TransactionOp::Delete(req) => (req.etag, false),
    };
    match (expected, seen) {
        (Some(expected), Seen::Stored(current)) if expected == current => Ok(()),
        (Some(_), _) => Err(etag_mismatch(op.key())),
        (None, Seen::Stored(_) | Seen::Written) if first_write => Err(already_exists(op.key())),
        (None, _) => Ok(()),
    }
}

impl ZookeeperStore {
    /// Reads the node at `path`, expired or not; `None` when there is none.
    async fn read_node(&self, path: &str) -> Result<Option<Node>, ComponentError> {
        let (data, stat) = match self.zookeeper.client.get_data(path).await {
            Ok(found) => found,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(map_error(e)),
        };
        let stored = Stored::parse(&data);
        Ok(Some(Node {
            value: stored.value.to_vec(),
            etag: stat.mzxid,
            expires_at: stored.expires_at,
            version: stat.version,
        }))
    }

    /// What a write needs to know of `path`.
    async fn read_for_write(&self, path: &str) -> Result<Read, ComponentError> {
        let now = now_ms();
        Ok(match self.read_node(path).await? {
            None => Read {
                version: None,
                etag: None,
            },
            Some(node) => Read {
                version: Some(node.version),
                etag: node.live(now).then_some(node.etag),
            },
        })
    }

    /// Refuses a request ZooKeeper would refuse (and drop the connection
    /// over).
    fn check_size(&self, ops: &[(String, Option<Vec<u8>>)]) -> Result<(), ComponentError> {
        let mut total = REQUEST_FRAMING;
        for (path, data) in ops {
            let len = data.as_ref().map_or(0, Vec::len);
            total = total
                .saturating_add(OP_FRAMING)
                .saturating_add(u64::try_from(path.len()).unwrap_or(u64::MAX))
                .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
        }
        if total > self.max_request {
            return Err(ComponentError::InvalidArgument(format!(
                "the write would send ZooKeeper about {total} bytes, more than its limit of {} \
                 (maxBufferSize, ZooKeeper's jute.maxbuffer): ZooKeeper holds values up to about 1 MB, \
                 and a transaction's values together must fit in that",
                self.max_request
            )));
        }
        Ok(())
    }

    /// Applies `ops` atomically; answers the etag they wrote (every write
    /// of one multi-operation shares it), or `None` when nothing was
    /// written.
    async fn apply(&self, ops: &[TransactionOp]) -> Result<Option<Etag>, ComponentError> {
        // The net effect on each key, in order of first appearance.
        let mut keys: Vec<&str> = Vec::new();
        for op in ops {
            if !keys.contains(&op.key()) {
                keys.push(op.key());
            }
        }
        let paths: HashMap<&str, String> = keys.iter().map(|k| (*k, self.zookeeper.path(k))).collect();
        // The data of each key's last upsert: what a key written at all
        // ends up holding.
        let mut data: HashMap<&str, Vec<u8>> = HashMap::new();
        for op in ops {
            if let TransactionOp::Upsert(req) = op {
                data.insert(op.key(), encode(&req.value, req.ttl)?);
            }
        }
        // The final data of each key (`None`: deleted), for the size check.
        let mut finals: HashMap<&str, Option<&Vec<u8>>> = HashMap::new();
        for op in ops {
            let value = match op {
                TransactionOp::Upsert(_) => data.get(op.key()),
                TransactionOp::Delete(_) => None,
            };
            finals.insert(op.key(), value);
        }
        let planned: Vec<(String, Option<Vec<u8>>)> = keys
            .iter()
            .map(|k| {
                (
                    paths.get(k).cloned().unwrap_or_default(),
                    finals.get(k).copied().flatten().cloned(),
                )
            })
            .collect();
        self.check_size(&planned)?;

        for _ in 0..ATTEMPTS {
            let reads = futures::future::try_join_all(keys.iter().map(|k| {
                let path = paths.get(k).cloned().unwrap_or_default();
                async move { self.read_for_write(&path).await }
            }))
            .await?;
            let read: HashMap<&str, Read> = keys.iter().copied().zip(reads).collect();
            let mut seen: HashMap<&str, Seen> = read
                .iter()
                .map(|(k, r)| (*k, r.etag.map_or(Seen::Absent, Seen::Stored)))
                .collect();
            let mut deleted: HashMap<&str, bool> = HashMap::new();
            for op in ops {
                let now = seen.get(op.key()).copied().unwrap_or(Seen::Absent);
                check(op, now)?;
                let (next, gone) = match op {
                    TransactionOp::Upsert(_) => (Seen::Written, false),
                    TransactionOp::Delete(_) => (Seen::Absent, true),
                };
                seen.insert(op.key(), next);
                deleted.insert(op.key(), gone);
            }

            let client = &self.zookeeper.client;
            let mut writer = client.new_multi_writer();
            let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            let mut writes = 0usize;
            for key in &keys {
                let (Some(path), Some(read)) = (paths.get(key), read.get(key)) else {
                    continue;
                };
                let gone = deleted.get(key).copied().unwrap_or(false);
                let value = data.get(key).filter(|_| !gone);
                match (read.version, value) {
                    (Some(version), Some(value)) => writer.add_set_data(path, value, Some(version)),
                    (Some(version), None) => writer.add_delete(path, Some(version)),
                    (None, Some(value)) => writer.add_create(path, value, &persistent),
                    // Absent before and after: create and delete, which
                    // fails if the key appeared since it was read.
                    (None, None) => writer
                        .add_create(path, &[], &persistent)
                        .and_then(|()| writer.add_delete(path, Some(0))),
                }
                .map_err(map_error)?;
                writes += 1;
            }
            if writes == 0 {
                return Ok(None);
            }
            match writer.commit().await {
                Ok(results) => {
                    let etag = results.iter().find_map(|r| match r {
                        zk::MultiWriteResult::SetData { stat } | zk::MultiWriteResult::Create { stat, .. }
                            if stat.mzxid > 0 =>
                        {
                            Some(stat.mzxid)
                        }
                        _ => None,
                    });
                    return Ok(etag);
                }
                // A node changed since it was read: read again (and check
                // the etags against what is there now).
                Err(zk::MultiWriteError::OperationFailed {
                    source: zk::Error::BadVersion | zk::Error::NoNode | zk::Error::NodeExists,
                    ..
                }) => continue,
                Err(e) => return Err(map_error(e.into())),
            }
        }
        Err(ComponentError::Unavailable(format!(
            "zookeeper: {ATTEMPTS} attempts to write lost to other writers"
        )))
    }
}

#[async_trait::async_trait]
impl Component for ZookeeperStore {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.zookeeper.ping().await
    }
}

#[async_trait::async_trait]
impl StateStore for ZookeeperStore {
    async fn get(&self, key: &str, _consistency: Consistency) -> Result<Option<StateValue>, ComponentError> {
        let path = self.zookeeper.path(key);
        let Some(node) = self.read_node(&path).await? else {
            return Ok(None);
        };
        if !node.live(now_ms()) {
            // Expired: gone, unless written again since it was read.
            let _ = self.zookeeper.client.delete(&path, Some(node.version)).await;
            return Ok(None);
        }
        Ok(Some(StateValue {
            data: node.value,
            etag: node.etag,
            expires_at: node.expires_at.map(system_time),
        }))
    }

    async fn set(&self, req: SetRequest) -> Result<Etag, ComponentError> {
        let path = self.zookeeper.path(&req.key);
        match self.apply(&[TransactionOp::Upsert(req)]).await? {
            Some(etag) => Ok(etag),
            // The server answered no transaction id: read what was written.
            None => Ok(self.read_node(&path).await?.map_or(0, |node| node.etag)),
        }
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), ComponentError> {
        let path = self.zookeeper.path(&req.key);
        if req.etag.is_none() {
            // Without an etag, one delete does, whatever is there.
            return match self.zookeeper.client.delete(&path, None).await {
                Ok(()) | Err(zk::Error::NoNode) => Ok(()),
                Err(e) => Err(map_error(e)),
            };
        }
        self.apply(&[TransactionOp::Delete(req)]).await.map(drop)
    }

    async fn transact(&self, ops: Vec<TransactionOp>) -> Result<(), ComponentError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.apply(&ops).await.map(drop)
    }

    async fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, StateValue)>, ComponentError> {
        let base = self.zookeeper.base().to_owned();
        let names = self.zookeeper.client.list_children(&base).await.map_err(map_error)?;
        let mut keys: Vec<String> = names
            .iter()
            .filter_map(|name| key_of(name))
            .filter(|key| key.starts_with(prefix))
            .collect();
        keys.sort();
        let mut entries = Vec::new();
        for key in keys {
            if let Some(value) = self.get(&key, Consistency::Unspecified).await? {
                if entries.len() == limit {
                    return Err(too_many(limit));
                }
                entries.push((key, value));
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zookeeper_state_nodes_hold_a_header_then_the_value() {
        let data = encode(b"v", Some(Duration::from_secs(1))).expect("encodes");
        let stored = Stored::parse(&data);
        assert_eq!(stored.value, b"v");
        let now = now_ms();
        let expires_at = stored.expires_at.expect("an expiry");
        assert!(expires_at > now && expires_at <= now + 1_000);
        let forever = encode(b"", None).expect("encodes");
        assert_eq!(forever.len(), HEADER);
        let stored = Stored::parse(&forever);
        assert_eq!((stored.value, stored.expires_at), (&b""[..], None));
        // Dapr's nodes hold the bare value.
        let stored = Stored::parse(b"{\"a\":1}");
        assert_eq!((stored.value, stored.expires_at), (&b"{\"a\":1}"[..], None));
    }

    #[test]
    fn zookeeper_state_checks_see_earlier_operations() {
        let upsert = |etag: Option<Etag>, concurrency| {
            TransactionOp::Upsert(SetRequest {
                key: "k".into(),
                value: Vec::new(),
                etag,
                concurrency,
                ttl: None,
            })
        };
        assert!(check(&upsert(Some(5), Concurrency::LastWrite), Seen::Stored(5)).is_ok());
        assert!(check(&upsert(Some(5), Concurrency::LastWrite), Seen::Written).is_err());
        assert!(check(&upsert(Some(5), Concurrency::LastWrite), Seen::Absent).is_err());
        assert!(check(&upsert(None, Concurrency::FirstWrite), Seen::Written).is_err());
        assert!(check(&upsert(None, Concurrency::FirstWrite), Seen::Absent).is_ok());
        assert!(check(&upsert(None, Concurrency::LastWrite), Seen::Stored(1)).is_ok());
    }
}
