//! `in-memory`: locks inside the sidecar, for tests and single-sidecar use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{LockStatus, LockStore};
use crate::components::{
    BuildContext, BuildError, Component, ComponentError, ComponentType, KeyPrefixSection, TypeEntry,
};

pub const TYPE: TypeEntry<dyn LockStore> = TypeEntry::of::<MemoryType>();

pub struct MemoryType;

impl ComponentType<dyn LockStore> for MemoryType {
    const NAME: &'static str = "in-memory";
    type Metadata = KeyPrefixSection;

    fn build(
        ctx: BuildContext,
        _metadata: KeyPrefixSection,
    ) -> BoxFuture<'static, Result<Arc<dyn LockStore>, BuildError>> {
        // Held locks survive a restart of the component.
        let locks = ctx.retained.get_or_init(MemoryLocks::default);
        async move { Ok(locks as Arc<dyn LockStore>) }.boxed()
    }
}

/// key -> (owner, lease end)
#[derive(Default)]
pub struct MemoryLocks(Mutex<HashMap<String, (String, Instant)>>);

impl MemoryLocks {
    /// The locks, with expired leases gone.
    fn live(&self) -> MutexGuard<'_, HashMap<String, (String, Instant)>> {
        let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        locks.retain(|_, (_, until)| *until > now);
        locks
    }

    fn with_owner(&self, key: &str, owner: &str, then: impl FnOnce(&mut (String, Instant))) -> LockStatus {
        match self.live().get_mut(key) {
            None => LockStatus::Unexist,
            Some(held) if held.0 != owner => LockStatus::BelongsToOthers,
            Some(held) => {
                then(held);
                LockStatus::Success
            }
        }
    }
}

#[async_trait::async_trait]
impl Component for MemoryLocks {
    async fn health_check(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl LockStore for MemoryLocks {
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, ComponentError> {
        let mut locks = self.live();
        if locks.contains_key(key) {
            return Ok(false);
        }
        locks.insert(key.to_owned(), (owner.to_owned(), Instant::now() + ttl));
        Ok(true)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<LockStatus, ComponentError> {
        let status = self.with_owner(key, owner, |_| {});
        if status == LockStatus::Success {
            self.live().remove(key);
        }
        Ok(status)
    }

    async fn keep_alive(&self, key: &str, owner: &str, ttl: Duration) -> Result<LockStatus, ComponentError> {
        Ok(self.with_owner(key, owner, |held| held.1 = Instant::now() + ttl))
    }
}
