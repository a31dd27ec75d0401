//! `redis`: a counter per key, advanced by a server-side script
//! (`max(current, floor) + size`), so sidecars sharing the Redis never
//! overlap.
//!
//! Metadata: the connection keys of `redis_client`, `segmentSize`,
//! `keyPrefix`.

use std::sync::{Arc, LazyLock};

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{SequencerStore, Sequencing, segmented};
use crate::components::redis_client::{self, RedisConnection, map_error};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn SequencerStore> = TypeEntry::of::<RedisType>();

pub struct RedisType;

impl ComponentType<dyn SequencerStore> for RedisType {
    const NAME: &'static str = "redis";
    type Metadata = (RedisConnection, Sequencing);

    fn build(
        ctx: BuildContext,
        (connection, sequencing): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn SequencerStore>, BuildError>> {
        async move {
            let conn = connection.connect().await?;
            Ok(segmented(Arc::new(RedisCounters { conn }), &sequencing, ctx.tasks))
        }
        .boxed()
    }
}

/// KEYS[1] = counter, ARGV[1] = size, ARGV[2] = floor: the new value.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[2])
if current < floor then current = floor end
local last = current + tonumber(ARGV[1])
redis.call('SET', KEYS[1], last)
return last
",
    )
});

pub struct RedisCounters {
    conn: ConnectionManager,
}

#[async_trait::async_trait]
impl Component for RedisCounters {
    async fn health_check(&self) -> Result<(), ComponentError> {
        redis_client::ping(&mut self.conn.clone()).await
    }
}

#[async_trait::async_trait]
impl SequencerStore for RedisCounters {
    async fn reserve(&self, key: &str, size: u64, floor: i64) -> Result<i64, ComponentError> {
        RESERVE
            .key(key)
            .arg(size)
            .arg(floor)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_error)
    }
}
