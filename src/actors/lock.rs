//! Messages for `lock` components.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Operation;
use crate::components::lock::{LockStatus, LockStore};
use crate::components::{ComponentError, Locks};

/// Takes a lock if it is free.
pub struct TryLock {
    pub key: String,
    pub owner: String,
    pub ttl: Duration,
}

impl Operation<Locks> for TryLock {
    type Output = bool;

    fn run(self, store: Arc<dyn LockStore>) -> BoxFuture<'static, Result<bool, ComponentError>> {
        async move { store.try_lock(&self.key, &self.owner, self.ttl).await }.boxed()
    }
}

/// Releases a lock the owner holds.
pub struct Unlock {
    pub key: String,
    pub owner: String,
}

impl Operation<Locks> for Unlock {
    type Output = LockStatus;

    fn run(self, store: Arc<dyn LockStore>) -> BoxFuture<'static, Result<LockStatus, ComponentError>> {
        async move { store.unlock(&self.key, &self.owner).await }.boxed()
    }
}

/// Extends the lease of a lock the owner holds.
pub struct KeepAlive {
    pub key: String,
    pub owner: String,
    pub ttl: Duration,
}

impl Operation<Locks> for KeepAlive {
    type Output = LockStatus;

    fn run(self, store: Arc<dyn LockStore>) -> BoxFuture<'static, Result<LockStatus, ComponentError>> {
        async move { store.keep_alive(&self.key, &self.owner, self.ttl).await }.boxed()
    }
}
