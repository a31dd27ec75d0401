//! `redis`: state in Redis, one hash per key holding `data` and `version`
//! (the etag), as Dapr's Redis state store lays it out.
//!
//! Etag checks and transactions run server-side as Lua scripts, so any
//! number of sidecars sharing one Redis stay correct: a script runs alone,
//! checks every condition, and writes only when all hold. TTLs are Redis
//! expiries (`PEXPIRE`).
//!
//! Metadata: the connection keys of `redis_client` (`redisHost`, ...) and
//! `keyPrefix`.

use std::sync::Arc;
use std::sync::LazyLock;

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{
    Concurrency, Consistency, DeleteRequest, Etag, SetRequest, StateStore, StateValue, TransactionOp, already_exists,
    etag_mismatch, new_etag,
};
use crate::components::redis_client::{self, RedisConnection, map_error};
use crate::components::{
    BuildContext, BuildError, Component, ComponentError, ComponentType, KeyPrefixSection, TypeEntry,
};

pub const TYPE: TypeEntry<dyn StateStore> = TypeEntry::of::<RedisType>();

pub struct RedisType;

impl ComponentType<dyn StateStore> for RedisType {
    const NAME: &'static str = "redis";
    type Metadata = (RedisConnection, KeyPrefixSection);

    fn build(
        _ctx: BuildContext,
        (connection, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn StateStore>, BuildError>> {
        async move {
            let conn = connection.connect().await?;
            Ok(Arc::new(RedisStore { conn }) as Arc<dyn StateStore>)
        }
        .boxed()
    }
}

/// Applies a list of operations atomically. ARGV holds six fields per
/// operation: kind (`u`/`d`), data, expected etag (`""` for none),
/// first-write (`1`/`0`), new etag, TTL in ms (`""` for none); KEYS holds
/// each operation's key. Every check runs before any write, and a check
/// sees the writes of the operations before it.
static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = #KEYS
local version = {}
for i = 1, n do
  local key = KEYS[i]
  local base = (i - 1) * 6
  local kind, expected, first = ARGV[base + 1], ARGV[base + 3], ARGV[base + 4]
  local current = version[key]
  if current == nil then
    current = redis.call('HGET', key, 'version')
  end
  if expected ~= '' then
    if current == false or current ~= expected then
      return redis.error_reply('ETAG_MISMATCH ' .. i)
    end
  elseif first == '1' and current ~= false then
    return redis.error_reply('ALREADY_EXISTS ' .. i)
  end
  if kind == 'u' then version[key] = ARGV[base + 5] else version[key] = false end
end
for i = 1, n do
  local key = KEYS[i]
  local base = (i - 1) * 6
  if ARGV[base + 1] == 'u' then
    redis.call('HSET', key, 'data', ARGV[base + 2], 'version', ARGV[base + 5])
    if ARGV[base + 6] ~= '' then
      redis.call('PEXPIRE', key, ARGV[base + 6])
    else
      redis.call('PERSIST', key)
    end
  else
    redis.call('DEL', key)
  end
end
return n
"#,
    )
});

pub struct RedisStore {
    conn: ConnectionManager,
}

impl RedisStore {
    /// Runs [`APPLY`]; answers the new etags of the upserts, in order.
    async fn apply(&self, ops: Vec<TransactionOp>) -> Result<Vec<Etag>, ComponentError> {
        let mut invocation = APPLY.prepare_invoke();
        let mut etags = Vec::with_capacity(ops.len());
        for op in &ops {
            invocation.key(op.key());
            match op {
                TransactionOp::Upsert(req) => {
                    let etag = new_etag();
                    etags.push(etag);
                    invocation
                        .arg("u")
                        .arg(req.value.as_slice())
                        .arg(req.etag.map(|e| e.to_string()).unwrap_or_default())
                        .arg(if req.concurrency == Concurrency::FirstWrite {
                            "1"
                        } else {
                            "0"
                        })
                        .arg(etag)
                        .arg(req.ttl.map(|t| t.as_millis().max(1).to_string()).unwrap_or_default());
                }
                TransactionOp::Delete(req) => {
                    invocation
                        .arg("d")
                        .arg("")
                        .arg(req.etag.map(|e| e.to_string()).unwrap_or_default())
                        .arg("0")
                        .arg("")
                        .arg("");
                }
            }
        }
        let mut conn = self.conn.clone();
        match invocation.invoke_async::<i64>(&mut conn).await {
            Ok(_) => Ok(etags),
            Err(e) => Err(script_error(e, &ops)),
        }
    }
}

/// Names the operation a script refused, or maps a transport error.
fn script_error(e: redis::RedisError, ops: &[TransactionOp]) -> ComponentError {
    let key_of = |detail: Option<&str>| {
        detail
            .and_then(|d| d.trim().parse::<usize>().ok())
            .and_then(|i| ops.get(i.saturating_sub(1)))
            .map(|op| op.key().to_owned())
            .unwrap_or_default()
    };
    match e.code() {
        Some("ETAG_MISMATCH") => etag_mismatch(&key_of(e.detail())),
        Some("ALREADY_EXISTS") => already_exists(&key_of(e.detail())),
        _ => map_error(e),
    }
}

#[async_trait::async_trait]
impl Component for RedisStore {
    async fn health_check(&self) -> Result<(), ComponentError> {
        redis_client::ping(&mut self.conn.clone()).await
    }
}

#[async_trait::async_trait]
impl StateStore for RedisStore {
    async fn get(&self, key: &str, _consistency: Consistency) -> Result<Option<StateValue>, ComponentError> {
        let mut conn = self.conn.clone();
        let (data, version): (Option<Vec<u8>>, Option<String>) = redis::cmd("HMGET")
            .arg(key)
            .arg("data")
            .arg("version")
            .query_async(&mut conn)
            .await
            .map_err(map_error)?;
        let Some(data) = data else {
            return Ok(None);
        };
        Ok(Some(StateValue {
            data,
            // A value written by another tool without a version still reads.
            etag: version.and_then(|v| v.parse().ok()).unwrap_or_default(),
            expires_at: None,
        }))
    }

    async fn bulk_get(
        &self,
        keys: Vec<String>,
        _parallelism: usize,
    ) -> Vec<Result<Option<StateValue>, ComponentError>> {
        // One round trip for all keys.
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("HMGET").arg(key).arg("data").arg("version");
        }
        let mut conn = self.conn.clone();
        match pipe
            .query_async::<Vec<(Option<Vec<u8>>, Option<String>)>>(&mut conn)
            .await
        {
            Ok(rows) => rows
                .into_iter()
                .map(|(data, version)| {
                    Ok(data.map(|data| StateValue {
                        data,
                        etag: version.and_then(|v| v.parse().ok()).unwrap_or_default(),
                        expires_at: None,
                    }))
                })
                .collect(),
            Err(e) => {
                let error = map_error(e);
                keys.iter().map(|_| Err(error.clone())).collect()
            }
        }
    }

    async fn set(&self, req: SetRequest) -> Result<Etag, ComponentError> {
        let etags = self.apply(vec![TransactionOp::Upsert(req)]).await?;
        Ok(etags.first().copied().unwrap_or_default())
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), ComponentError> {
        self.apply(vec![TransactionOp::Delete(req)]).await.map(drop)
    }

    async fn transact(&self, ops: Vec<TransactionOp>) -> Result<(), ComponentError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.apply(ops).await.map(drop)
    }
}
