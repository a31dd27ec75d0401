//! The Distributed Lock API: TryLock, Unlock and LockKeepAlive.

use std::time::Duration;

use tonic::Status;

use super::scoped_key;
use crate::actors::lock::{KeepAlive, TryLock, Unlock};
use crate::api::ApiContext;
use crate::components::ComponentSpec;
use crate::components::lock::LockStatus;
use crate::proto::runtime::v1 as pb;

/// The backend key of a resource: `lock|||<prefix>||<resource_id>`.
const NAMESPACE: &str = "lock";

fn required(value: &str, field: &str) -> Result<(), Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is empty")))
    } else {
        Ok(())
    }
}

/// Checks the resource and owner of a request and builds the backend key.
fn lock_key(
    ctx: &ApiContext,
    spec: &ComponentSpec,
    store: &str,
    resource_id: &str,
    owner: &str,
) -> Result<String, Status> {
    required(resource_id, "resource_id")?;
    required(owner, "lock_owner")?;
    scoped_key(NAMESPACE, spec, &ctx.app.app_id, store, resource_id)
}

fn lease(expire: i32) -> Result<Duration, Status> {
    match u64::try_from(expire) {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(Status::invalid_argument(format!(
            "expire is {expire}; it must be a positive number of seconds"
        ))),
    }
}

pub async fn try_lock(ctx: &ApiContext, req: pb::TryLockRequest) -> Result<pb::TryLockResponse, Status> {
    let store = ctx.router.locks.get("store_name", &req.store_name)?;
    let key = lock_key(ctx, store.spec(), &req.store_name, &req.resource_id, &req.lock_owner)?;
    let ttl = lease(req.expire)?;
    let success = store
        .call(TryLock {
            key,
            owner: req.lock_owner,
            ttl,
        })
        .await?;
    Ok(pb::TryLockResponse { success })
}

pub async fn unlock(ctx: &ApiContext, req: pb::UnlockRequest) -> Result<pb::UnlockResponse, Status> {
    let store = ctx.router.locks.get("store_name", &req.store_name)?;
    let key = lock_key(ctx, store.spec(), &req.store_name, &req.resource_id, &req.lock_owner)?;
    let status = store
        .call(Unlock {
            key,
            owner: req.lock_owner,
        })
        .await?;
    let status = match status {
        LockStatus::Success => pb::unlock_response::Status::Success,
        LockStatus::Unexist => pb::unlock_response::Status::LockUnexist,
        LockStatus::BelongsToOthers => pb::unlock_response::Status::LockBelongToOthers,
    };
    Ok(pb::UnlockResponse { status: status as i32 })
}

pub async fn lock_keep_alive(
    ctx: &ApiContext,
    req: pb::LockKeepAliveRequest,
) -> Result<pb::LockKeepAliveResponse, Status> {
    let store = ctx.router.locks.get("store_name", &req.store_name)?;
    let key = lock_key(ctx, store.spec(), &req.store_name, &req.resource_id, &req.lock_owner)?;
    let ttl = lease(req.expire)?;
    let status = store
        .call(KeepAlive {
            key,
            owner: req.lock_owner,
            ttl,
        })
        .await?;
    let status = match status {
        LockStatus::Success => pb::lock_keep_alive_response::Status::Success,
        LockStatus::Unexist => pb::lock_keep_alive_response::Status::LockUnexist,
        LockStatus::BelongsToOthers => pb::lock_keep_alive_response::Status::LockBelongToOthers,
    };
    Ok(pb::LockKeepAliveResponse { status: status as i32 })
}
