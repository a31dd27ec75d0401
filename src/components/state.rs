//! The `state` building block: key/value data with optimistic concurrency
//! (etags), expiry and multi-key transactions.
//!
//! Keys reach a store already prefixed (see [`KeyPrefix`]), etags already
//! checked for form, and TTLs already parsed: every store applies the same
//! rules, written once in the API layer. A store's job is to make each write
//! and each transaction atomic against every other writer of the same
//! backend, including other sidecars.

pub mod memory;
pub mod mysql;
pub mod pluggable;
pub mod postgres;
pub mod redis;
mod sql;
pub mod sqlite;
pub mod zookeeper;

use std::time::{Duration, SystemTime};

use futures::StreamExt;

use super::{Component, ComponentError};
pub use super::{KEY_PREFIX, KeyPrefix, PREFIX_SEPARATOR};

/// A stored value and its etag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateValue {
    pub data: Vec<u8>,
    pub etag: Etag,
    /// When the value expires, for stores that know it cheaply.
    pub expires_at: Option<SystemTime>,
}

/// A version tag. Every write gives a key a fresh random one, so an etag
/// taken before a delete never matches the value written after it.
pub type Etag = i64;

/// A new etag: random, positive, and exact in JSON numbers (53 bits).
pub fn new_etag() -> Etag {
    rand::random_range(1..(1i64 << 53))
}

/// How a write treats a value someone else wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Without an etag, overwrite whatever is there.
    #[default]
    LastWrite,
    /// Without an etag, write only a key that does not exist.
    FirstWrite,
}

/// Passed through to the store; see docs/state.md for what each honours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Consistency {
    #[default]
    Unspecified,
    Eventual,
    Strong,
}

/// One upsert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetRequest {
    pub key: String,
    pub value: Vec<u8>,
    /// Write only if the stored etag is this one.
    pub etag: Option<Etag>,
    pub concurrency: Concurrency,
    /// Expire after this long; `None` keeps the value until deleted.
    pub ttl: Option<Duration>,
}

/// One delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRequest {
    pub key: String,
    /// Delete only if the stored etag is this one.
    pub etag: Option<Etag>,
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransactionOp {
    Upsert(SetRequest),
    Delete(DeleteRequest),
}

impl TransactionOp {
    pub fn key(&self) -> &str {
        match self {
            TransactionOp::Upsert(r) => &r.key,
            TransactionOp::Delete(r) => &r.key,
        }
    }
}

/// Why a write was refused: the etag check failed.
pub fn etag_mismatch(key: &str) -> ComponentError {
    ComponentError::Conflict(format!(
        "possible etag mismatch for key '{key}': the stored value changed"
    ))
}

/// Why a first-write was refused.
pub fn already_exists(key: &str) -> ComponentError {
    ComponentError::Conflict(format!(
        "key '{key}' already exists and the write asked for first-write concurrency without an etag"
    ))
}

/// The etag rules, for stores that check in the sidecar: `current` is the
/// etag of the live value, if any.
pub fn check_write(op: &TransactionOp, current: Option<Etag>) -> Result<(), ComponentError> {
    let (expected, first_write) = match op {
        TransactionOp::Upsert(req) => (req.etag, req.concurrency == Concurrency::FirstWrite),
        TransactionOp::Delete(req) => (req.etag, false),
    };
    match (expected, current) {
        (Some(expected), Some(current)) if expected == current => Ok(()),
        (Some(_), _) => Err(etag_mismatch(op.key())),
        (None, Some(_)) if first_write => Err(already_exists(op.key())),
        (None, _) => Ok(()),
    }
}

/// A key/value store.
#[async_trait::async_trait]
pub trait StateStore: Component {
    /// The live value of `key`, if any.
    async fn get(&self, key: &str, consistency: Consistency) -> Result<Option<StateValue>, ComponentError>;

    /// Several keys at once, at most `parallelism` in flight; one result per
    /// key, in order, so one key's failure does not fail the others.
    async fn bulk_get(&self, keys: Vec<String>, parallelism: usize) -> Vec<Result<Option<StateValue>, ComponentError>> {
        futures::stream::iter(keys)
            .map(|key| async move { self.get(&key, Consistency::Unspecified).await })
            .buffered(parallelism.max(1))
            .collect()
            .await
    }

    /// Writes one value; answers its new etag.
    async fn set(&self, req: SetRequest) -> Result<Etag, ComponentError>;

    /// Deletes one key; deleting a missing key without an etag succeeds.
    async fn delete(&self, req: DeleteRequest) -> Result<(), ComponentError>;

    /// Applies every operation or none: an etag check that fails anywhere
    /// leaves the store as it was.
    async fn transact(&self, ops: Vec<TransactionOp>) -> Result<(), ComponentError>;

    /// The live entries whose keys start with `prefix`, in key order, at
    /// most `limit` of them (more is an error): what the query API filters.
    /// A store that cannot list its keys says so.
    async fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, StateValue)>, ComponentError> {
        let _ = (prefix, limit);
        Err(ComponentError::Unsupported(
            "this state store cannot list its keys, so it does not run queries".into(),
        ))
    }
}

/// Refuses a scan that found more than `limit` entries.
pub fn too_many(limit: usize) -> ComponentError {
    ComponentError::InvalidArgument(format!(
        "the query would read more than {limit} entries; the query API filters at most that many"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_positive_and_json_safe() {
        for _ in 0..1000 {
            let e = new_etag();
            assert!(e > 0 && e < (1 << 53));
        }
    }
}
