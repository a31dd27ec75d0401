//! The Distributed Lock API: TryLock, Unlock and LockKeepAlive, over
//! [`blocks::lock`](crate::api::blocks::lock).

use tonic::Status;

use crate::api::ApiContext;
use crate::api::blocks::lock::{self, LeaseRequest, LockStatus, UnlockRequest};
use crate::proto::runtime::v1 as pb;

pub async fn try_lock(ctx: &ApiContext, req: pb::TryLockRequest) -> Result<pb::TryLockResponse, Status> {
    let lease = LeaseRequest {
        store: req.store_name,
        resource_id: req.resource_id,
        owner: req.lock_owner,
        expire: req.expire,
    };
    let success = lock::try_lock(ctx, lease).await?;
    Ok(pb::TryLockResponse { success })
}

pub async fn unlock(ctx: &ApiContext, req: pb::UnlockRequest) -> Result<pb::UnlockResponse, Status> {
    let unlock = UnlockRequest {
        store: req.store_name,
        resource_id: req.resource_id,
        owner: req.lock_owner,
    };
    let status = match lock::unlock(ctx, unlock).await? {
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
    let lease = LeaseRequest {
        store: req.store_name,
        resource_id: req.resource_id,
        owner: req.lock_owner,
        expire: req.expire,
    };
    let status = match lock::keep_alive(ctx, lease).await? {
        LockStatus::Success => pb::lock_keep_alive_response::Status::Success,
        LockStatus::Unexist => pb::lock_keep_alive_response::Status::LockUnexist,
        LockStatus::BelongsToOthers => pb::lock_keep_alive_response::Status::LockBelongToOthers,
    };
    Ok(pb::LockKeepAliveResponse { status: status as i32 })
}
