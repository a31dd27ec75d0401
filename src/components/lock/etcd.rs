//! `etcd`: a lock is a key `<keyPrefixPath><resource>` holding its owner,
//! attached to a lease of the lock's expiry, as in Layotto: taking it is a
//! transaction that puts the key only when it does not exist, so one owner
//! holds it until the lease ends (etcd removes the key) or the owner
//! deletes it. Releasing compares the owner first. Extending, which
//! Layotto leaves unimplemented, moves the key to a fresh lease of the new
//! expiry in an owner-checked transaction and revokes the old lease.
//!
//! etcd rounds leases up to its minimum TTL (2 s with default settings), so
//! a one-second lock lives up to two seconds.
//!
//! Metadata: Layotto's etcd keys (`endpoints`, `dialTimeout`, `username`,
//! `password`, `keyPrefixPath`), and `keyPrefix`.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{LockStatus, LockStore};
use crate::components::etcd_client::{self, Etcd, EtcdConnection};
use crate::components::{
    BuildContext, BuildError, Component, ComponentError, ComponentType, KeyPrefixSection, TypeEntry,
};
use crate::proto::etcd as pb;

pub const TYPE: TypeEntry<dyn LockStore> = TypeEntry::of::<EtcdType>();

pub struct EtcdType;

impl ComponentType<dyn LockStore> for EtcdType {
    const NAME: &'static str = "etcd";
    type Metadata = (EtcdConnection, KeyPrefixSection);

    fn build(
        _ctx: BuildContext,
        (connection, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn LockStore>, BuildError>> {
        async move {
            let etcd = connection.connect().await?;
            Ok(Arc::new(EtcdLocks {
                etcd,
                prefix: connection.prefix(),
            }) as Arc<dyn LockStore>)
        }
        .boxed()
    }
}

pub struct EtcdLocks {
    etcd: Etcd,
    prefix: String,
}

/// Whole seconds of a lease, at least one (etcd counts in seconds).
fn lease_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

impl EtcdLocks {
    fn key(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.prefix).into_bytes()
    }

    /// Nobody (`Unexist`) or someone else (`BelongsToOthers`): what the
    /// failure branch's read of the key says.
    fn refused(answer: &pb::TxnResponse) -> LockStatus {
        if etcd_client::range_kvs(answer.responses.first()).is_empty() {
            LockStatus::Unexist
        } else {
            LockStatus::BelongsToOthers
        }
    }
}

#[async_trait::async_trait]
impl Component for EtcdLocks {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.etcd.ping().await
    }
}

#[async_trait::async_trait]
impl LockStore for EtcdLocks {
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, ComponentError> {
        let key = self.key(key);
        let lease = self.etcd.grant(lease_secs(ttl)).await?;
        let answer = self
            .etcd
            .txn(pb::TxnRequest {
                compare: vec![etcd_client::absent(&key)],
                success: vec![etcd_client::put(&key, owner.as_bytes(), lease)],
                failure: vec![etcd_client::get(&key)],
            })
            .await;
        match answer {
            Ok(answer) if answer.succeeded => Ok(true),
            other => {
                // Not taken: the unused lease goes.
                let _ = self.etcd.revoke(lease).await;
                other.map(|_| false)
            }
        }
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<LockStatus, ComponentError> {
        let key = self.key(key);
        let answer = self
            .etcd
            .txn(pb::TxnRequest {
                compare: vec![etcd_client::value_is(&key, owner.as_bytes())],
                success: vec![etcd_client::get(&key), etcd_client::delete(&key, false)],
                failure: vec![etcd_client::get(&key)],
            })
            .await?;
        if !answer.succeeded {
            return Ok(Self::refused(&answer));
        }
        // The key is gone; its lease has nothing left to hold.
        if let Some(kv) = etcd_client::range_kvs(answer.responses.first()).first()
            && kv.lease != 0
        {
            let _ = self.etcd.revoke(kv.lease).await;
        }
        Ok(LockStatus::Success)
    }

    async fn keep_alive(&self, key: &str, owner: &str, ttl: Duration) -> Result<LockStatus, ComponentError> {
        let key = self.key(key);
        let lease = self.etcd.grant(lease_secs(ttl)).await?;
        let answer = self
            .etcd
            .txn(pb::TxnRequest {
                compare: vec![etcd_client::value_is(&key, owner.as_bytes())],
                success: vec![etcd_client::put(&key, owner.as_bytes(), lease)],
                failure: vec![etcd_client::get(&key)],
            })
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                let _ = self.etcd.revoke(lease).await;
                return Err(e);
            }
        };
        if !answer.succeeded {
            let _ = self.etcd.revoke(lease).await;
            return Ok(Self::refused(&answer));
        }
        if let Some(old) = etcd_client::put_prev(answer.responses.first())
            && old.lease != 0
            && old.lease != lease
        {
            let _ = self.etcd.revoke(old.lease).await;
        }
        Ok(LockStatus::Success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_whole_seconds_rounded_up() {
        assert_eq!(lease_secs(Duration::from_millis(1)), 1);
        assert_eq!(lease_secs(Duration::from_secs(2)), 2);
        assert_eq!(lease_secs(Duration::from_millis(2001)), 3);
    }
}
