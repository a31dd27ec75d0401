//! `redis`: sidecars register in Redis, one sorted set per app id
//! (`<keyPrefix><app id>`) whose members are internal addresses scored by
//! their expiry in milliseconds on the Redis server's clock. A sidecar adds
//! itself when built, renews its score every `updateInterval - timeout`,
//! and removes itself when it closes; lookups return the members whose
//! expiry is in the future (and drop the expired ones).
//!
//! Metadata: the Redis connection keys (`redisHost`, `redisPassword`, ...),
//! `keyPrefix` (default `layotto-nr||`), `timeout` (default 1s),
//! `updateInterval` (the TTL, default 5s).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;

use super::{NameResolver, Registration};
use crate::components::meta::{self, Seconds};
use crate::components::redis_client::{self, RedisConnection};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn NameResolver> = TypeEntry::of::<RedisType>();

/// The registry's own keys, beside the connection's.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisRegistryMetadata {
    /// Prefix of the per-app-id keys. Default `layotto-nr||`.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
    /// How long one registry command may take. Default 1s.
    #[serde(default = "default_timeout")]
    pub timeout: Seconds,
    /// An entry not renewed for this long no longer resolves. Default 5s;
    /// at least `timeout` + 1s.
    #[serde(default = "default_update")]
    pub update_interval: Seconds,
}

impl meta::Section for RedisRegistryMetadata {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        if self.timeout.0.is_zero() {
            errors.push(MetadataError::new("timeout", "must be above zero"));
        }
        if self.update_interval.0 < self.timeout.0 + Duration::from_secs(1) {
            errors.push(MetadataError::new("updateInterval", "must be at least timeout + 1s"));
        }
    }
}

fn default_prefix() -> String {
    "layotto-nr||".into()
}

fn default_timeout() -> Seconds {
    Seconds::secs(1)
}

fn default_update() -> Seconds {
    Seconds::secs(5)
}

/// Adds or renews a member: `KEYS[1]` the set, `ARGV[1]` the address,
/// `ARGV[2]` the TTL in ms. Expired members go at the same time.
const REGISTER: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
";

/// The live members of `KEYS[1]`.
const LOOKUP: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
";

pub struct RedisType;

impl ComponentType<dyn NameResolver> for RedisType {
    const NAME: &'static str = "redis";
    type Metadata = (RedisConnection, RedisRegistryMetadata);

    fn build(
        ctx: BuildContext,
        (connection, registry): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn NameResolver>, BuildError>> {
        async move {
            let conn = connection.connect().await?;
            let ttl_ms = u64::try_from(registry.update_interval.0.as_millis()).unwrap_or(u64::MAX);
            let resolver = RedisRegistry {
                conn,
                prefix: registry.key_prefix,
                ttl_ms,
                timeout: registry.timeout.0,
                registration: Registration::of(&ctx.spec),
                register: redis::Script::new(REGISTER),
                lookup: redis::Script::new(LOOKUP),
            };
            if let Some(reg) = resolver.registration.clone() {
                resolver.register(&reg).await.map_err(|e| BuildError(e.to_string()))?;
                let every = registry.update_interval.0.saturating_sub(registry.timeout.0);
                let this = resolver.renewer();
                ctx.tasks.spawn("heartbeat", async move {
                    let mut tick = tokio::time::interval(every.max(Duration::from_millis(200)));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        this.register(&reg)
                            .await
                            .map_err(|e| format!("cannot renew the registration: {e}"))?;
                    }
                });
            }
            Ok(Arc::new(resolver) as Arc<dyn NameResolver>)
        }
        .boxed()
    }
}

struct RedisRegistry {
    conn: ConnectionManager,
    prefix: String,
    ttl_ms: u64,
    timeout: Duration,
    registration: Option<Registration>,
    register: redis::Script,
    lookup: redis::Script,
}

impl RedisRegistry {
    fn renewer(&self) -> RedisRegistry {
        RedisRegistry {
            conn: self.conn.clone(),
            prefix: self.prefix.clone(),
            ttl_ms: self.ttl_ms,
            timeout: self.timeout,
            registration: None,
            register: self.register.clone(),
            lookup: self.lookup.clone(),
        }
    }

    fn key(&self, app_id: &str) -> String {
        format!("{}{app_id}", self.prefix)
    }

    async fn register(&self, reg: &Registration) -> Result<(), ComponentError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.register.key(self.key(&reg.app_id));
        invocation.arg(&reg.address).arg(self.ttl_ms);
        match tokio::time::timeout(self.timeout, invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(done) => done.map(drop).map_err(redis_client::map_error),
            Err(_) => Err(ComponentError::Unavailable("redis: registering timed out".into())),
        }
    }
}

#[async_trait::async_trait]
impl Component for RedisRegistry {
    async fn health_check(&self) -> Result<(), ComponentError> {
        redis_client::ping(&mut self.conn.clone()).await
    }

    async fn close(&self) {
        if let Some(reg) = &self.registration {
            let mut conn = self.conn.clone();
            let mut remove = redis::cmd("ZREM");
            remove.arg(self.key(&reg.app_id)).arg(&reg.address);
            let _ = tokio::time::timeout(self.timeout, remove.query_async::<i64>(&mut conn)).await;
        }
    }
}

#[async_trait::async_trait]
impl NameResolver for RedisRegistry {
    async fn resolve(&self, app_id: &str, _namespace: &str) -> Result<Vec<String>, ComponentError> {
        let mut conn = self.conn.clone();
        self.lookup
            .key(self.key(app_id))
            .invoke_async::<Vec<String>>(&mut conn)
            .await
            .map_err(redis_client::map_error)
    }
}
