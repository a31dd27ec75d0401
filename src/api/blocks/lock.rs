//! The Distributed Lock block: try a lock, release it, extend its lease.
//!
//! Resources are scoped as Layotto does (`lock|||<prefix>||<resource>`);
//! every request names its resource and owner, and a lease is a positive
//! number of seconds.

use std::time::Duration;

use super::{BlockError, required, scoped_key};
use crate::actors::lock::{KeepAlive, TryLock, Unlock};
use crate::api::ApiContext;
use crate::components::ComponentSpec;
pub use crate::components::lock::LockStatus;

/// The backend key of a resource: `lock|||<prefix>||<resource_id>`.
const NAMESPACE: &str = "lock";
/// The field that names the store, in routing errors.
const STORE_NAME: &str = "store_name";

/// Takes, or extends, the lock on `resource_id` for `owner`.
#[derive(Clone, Debug, Default)]
pub struct LeaseRequest {
    pub store: String,
    pub resource_id: String,
    pub owner: String,
    /// The lease, in seconds; must be positive.
    pub expire: i32,
}

/// Releases the lock on `resource_id` held by `owner`.
#[derive(Clone, Debug, Default)]
pub struct UnlockRequest {
    pub store: String,
    pub resource_id: String,
    pub owner: String,
}

/// Checks the resource and owner of a request and builds the backend key.
pub(crate) fn lock_key(
    app_id: &str,
    spec: &ComponentSpec,
    store: &str,
    resource_id: &str,
    owner: &str,
) -> Result<String, BlockError> {
    required(resource_id, "resource_id")?;
    required(owner, "lock_owner")?;
    scoped_key(NAMESPACE, spec, app_id, store, resource_id)
}

pub(crate) fn lease(expire: i32) -> Result<Duration, BlockError> {
    match u64::try_from(expire) {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(BlockError::invalid(format!(
            "expire is {expire}; it must be a positive number of seconds"
        ))),
    }
}

/// Whether the lock was taken; never waits, and is not reentrant.
pub async fn try_lock(ctx: &ApiContext, req: LeaseRequest) -> Result<bool, BlockError> {
    let store = ctx.router.locks.get(STORE_NAME, &req.store)?;
    let key = lock_key(&ctx.app.app_id, &store.spec(), &req.store, &req.resource_id, &req.owner)?;
    let ttl = lease(req.expire)?;
    Ok(store
        .call(TryLock {
            key,
            owner: req.owner,
            ttl,
        })
        .await?)
}

pub async fn unlock(ctx: &ApiContext, req: UnlockRequest) -> Result<LockStatus, BlockError> {
    let store = ctx.router.locks.get(STORE_NAME, &req.store)?;
    let key = lock_key(&ctx.app.app_id, &store.spec(), &req.store, &req.resource_id, &req.owner)?;
    Ok(store.call(Unlock { key, owner: req.owner }).await?)
}

pub async fn keep_alive(ctx: &ApiContext, req: LeaseRequest) -> Result<LockStatus, BlockError> {
    let store = ctx.router.locks.get(STORE_NAME, &req.store)?;
    let key = lock_key(&ctx.app.app_id, &store.spec(), &req.store, &req.resource_id, &req.owner)?;
    let ttl = lease(req.expire)?;
    Ok(store
        .call(KeepAlive {
            key,
            owner: req.owner,
            ttl,
        })
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ComponentSpec {
        ComponentSpec::new("lk", "memory")
    }

    #[test]
    fn lock_keys_need_a_resource_and_an_owner() {
        assert_eq!(
            lock_key("app", &spec(), "lk", "res", "me").expect("accepted"),
            "lock|||app||res"
        );
        assert_eq!(
            lock_key("app", &spec(), "lk", "", "me").expect_err("refused"),
            BlockError::invalid("resource_id is empty")
        );
        assert_eq!(
            lock_key("app", &spec(), "lk", "res", "").expect_err("refused"),
            BlockError::invalid("lock_owner is empty")
        );
        assert!(lock_key("app", &spec(), "lk", "a||b", "me").is_err());
    }

    #[test]
    fn leases_are_positive_seconds() {
        assert_eq!(lease(1).expect("accepted"), Duration::from_secs(1));
        assert_eq!(lease(3600).expect("accepted"), Duration::from_secs(3600));
        for bad in [0, -1, i32::MIN] {
            let err = lease(bad).expect_err("refused");
            assert_eq!(
                err,
                BlockError::invalid(format!("expire is {bad}; it must be a positive number of seconds"))
            );
        }
    }
}
