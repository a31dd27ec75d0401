//! `redis`: a lock is a key holding its owner, taken with `SET NX PX`;
//! releasing and extending are server-side scripts that compare the owner
//! first, so only the owner can do either, however many sidecars share the
//! Redis.
//!
//! Metadata: the connection keys of `redis_client` (`redisHost`, ...) and
//! `keyPrefix`.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{LockStatus, LockStore};
use crate::components::redis_client::{self, RedisConnection, map_error};
use crate::components::{
    BuildContext, BuildError, Component, ComponentError, ComponentType, KeyPrefixSection, TypeEntry,
};

pub const TYPE: TypeEntry<dyn LockStore> = TypeEntry::of::<RedisType>();

pub struct RedisType;

impl ComponentType<dyn LockStore> for RedisType {
    const NAME: &'static str = "redis";
    type Metadata = (RedisConnection, KeyPrefixSection);

    fn build(
        _ctx: BuildContext,
        (connection, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn LockStore>, BuildError>> {
        async move {
            let conn = connection.connect().await?;
            Ok(Arc::new(RedisLocks { conn }) as Arc<dyn LockStore>)
        }
        .boxed()
    }
}

/// KEYS[1] = lock, ARGV[1] = owner: -1 nobody holds it, -2 someone else
/// does, 1 released.
pub(super) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if not holder then return -1 end
if holder ~= ARGV[1] then return -2 end
redis.call('DEL', KEYS[1])
return 1
",
    )
});

/// KEYS[1] = lock, ARGV[1] = owner, ARGV[2] = lease in ms: as UNLOCK, but
/// extends the lease instead.
pub(super) static KEEP_ALIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if not holder then return -1 end
if holder ~= ARGV[1] then return -2 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
    )
});

fn status(code: i64) -> LockStatus {
    match code {
        -1 => LockStatus::Unexist,
        -2 => LockStatus::BelongsToOthers,
        _ => LockStatus::Success,
    }
}

pub(super) fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

pub struct RedisLocks {
    conn: ConnectionManager,
}

#[async_trait::async_trait]
impl Component for RedisLocks {
    async fn health_check(&self) -> Result<(), ComponentError> {
        redis_client::ping(&mut self.conn.clone()).await
    }
}

#[async_trait::async_trait]
impl LockStore for RedisLocks {
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, ComponentError> {
        let taken: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_error)?;
        Ok(taken.is_some())
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<LockStatus, ComponentError> {
        let code: i64 = UNLOCK
            .key(key)
            .arg(owner)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_error)?;
        Ok(status(code))
    }

    async fn keep_alive(&self, key: &str, owner: &str, ttl: Duration) -> Result<LockStatus, ComponentError> {
        let code: i64 = KEEP_ALIVE
            .key(key)
            .arg(owner)
            .arg(millis(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_error)?;
        Ok(status(code))
    }
}
