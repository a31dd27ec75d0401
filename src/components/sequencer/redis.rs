//! `redis`: a counter per key, advanced by a server-side script
//! (`max(current, floor) + size`), so sidecars sharing the Redis never
//! overlap.
//!
//! Metadata: the connection keys of `redis_client`, `segmentSize`,
//! `keyPrefix`.

use std::sync::{Arc, LazyLock};

use futures::FutureExt;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{SequencerStore, check_segment_size, segmented};
use crate::components::redis_client::{self, map_error};
use crate::components::{Component, ComponentError, ComponentSpec, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn SequencerStore> = TypeEntry {
    name: "redis",
    validate,
    build: |crate::components::BuildContext { spec, .. }| {
        async move {
            let conn = redis_client::connect(&spec).await?;
            Ok(segmented(Arc::new(RedisCounters { conn }), &spec))
        }
        .boxed()
    },
};

fn validate(spec: &ComponentSpec) -> Vec<MetadataError> {
    let mut errors = Vec::new();
    redis_client::validate(spec, &mut errors);
    check_segment_size(spec, &mut errors);
    errors
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
