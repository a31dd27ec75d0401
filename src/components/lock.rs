//! The `lock` building block: non-blocking, lease-based distributed locks.
//!
//! Keys arrive already scoped (`lock|||<prefix>||<resource>`, built in the
//! API layer). A store's job: only one owner holds a key until its lease
//! expires, and only the owner can release or extend it, however many
//! sidecars share the backend.

pub mod etcd;
pub mod memory;
pub mod postgres;
pub mod redis;
pub mod redis_cluster;
mod sql;
pub mod sqlite;
pub mod zookeeper;

use std::time::Duration;

use super::{Component, ComponentError};

/// The answer to an unlock or a lease extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockStatus {
    /// Done.
    Success,
    /// Nobody holds the lock (never taken, released, or expired).
    Unexist,
    /// Someone else holds it.
    BelongsToOthers,
}

/// A lock store.
#[async_trait::async_trait]
pub trait LockStore: Component {
    /// Takes `key` for `owner` for `ttl` if nobody holds it; never waits.
    /// Not reentrant: the holder asking again gets `false`.
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, ComponentError>;

    /// Releases `key` if `owner` holds it.
    async fn unlock(&self, key: &str, owner: &str) -> Result<LockStatus, ComponentError>;

    /// Extends the lease of `key` to `ttl` from now, if `owner` holds it.
    async fn keep_alive(&self, key: &str, owner: &str, ttl: Duration) -> Result<LockStatus, ComponentError>;
}
