//! The example API plugin: named counters (`layotto.plugins.counter.v1.
//! Counter`, `proto/layotto/plugins/counter/v1/counter.proto`).
//!
//! A counter is a decimal number in the configured state store under
//! `counter:<key>` (so the app can read it with GetState). An increment is
//! a read-modify-write: it takes the counter's lock in the configured lock
//! store (`counter:<key>`, a fresh owner per call), reads the value, adds
//! with checked arithmetic, and writes back over the etag it read, then
//! unlocks. The lock serialises increments; the etag makes a write after a
//! lost lease (a call that outlived [`LEASE_SECONDS`]) fail ABORTED rather
//! than overwrite a newer value. Both go through the block services, so
//! the stores' key prefixes, health and queues apply.
//!
//! Settings (`[plugins.counter]`): `state_store` and `lock_store`, each the
//! name of a configured component of that block.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tonic::service::RoutesBuilder;
use tonic::{Request, Response, Status};

use super::{ApiPlugin, Components, PluginError};
use crate::api::ApiContext;
use crate::api::blocks::lock::{self, LeaseRequest, UnlockRequest};
use crate::api::blocks::state::{
    self, Concurrency, Consistency, DeleteItem, DeleteState, GetState, SaveState, StateItem,
};
use crate::api::blocks::{BlockError, quote};
use crate::components::Kind;
use crate::config::Problem;
use crate::proto::plugins::counter::v1 as pb;
use crate::proto::plugins::counter::v1::counter_server::{Counter, CounterServer};
use crate::supervisor::backoff::Backoff;

/// The plugin, as [`PLUGINS`](super::PLUGINS) lists it.
pub struct CounterPlugin;

/// Its name in config: `[plugins.counter]`.
pub const NAME: &str = "counter";

/// The lease an increment takes on its counter: longer than any one
/// read and write should take, short enough that a call cancelled while
/// holding it (its unlock is sent anyway, see [`Held`]) or a crashed
/// sidecar delays others by no more than this.
pub const LEASE_SECONDS: i32 = 5;

/// How long an increment waits for a counter's lock before it is answered
/// ABORTED (retry).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Prefix of a counter's state key and lock resource.
const KEY_PREFIX: &str = "counter:";

/// The settings, as validated.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    /// The state store the counters live in.
    state_store: String,
    /// The lock store whose locks serialise increments.
    lock_store: String,
}

impl Settings {
    /// Reads the table; every problem is listed, each at its field.
    fn parse(value: &Value) -> Result<Settings, Vec<Problem>> {
        let mut problems = Vec::new();
        let Some(table) = super::table(value, &mut problems) else {
            return Err(problems);
        };
        let mut field = |key: &str| match table.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(Value::String(_)) | None => {
                problems.push(Problem {
                    path: key.to_owned(),
                    message: "required: the name of a configured component".into(),
                });
                None
            }
            Some(other) => {
                problems.push(Problem {
                    path: key.to_owned(),
                    message: format!("expected a string, found {}", crate::config::kind_of(other)),
                });
                None
            }
        };
        let state_store = field("state_store");
        let lock_store = field("lock_store");
        for key in table
            .keys()
            .filter(|k| !matches!(k.as_str(), "state_store" | "lock_store"))
        {
            problems.push(Problem {
                path: key.clone(),
                message: "unknown field; the counter plugin takes state_store and lock_store".into(),
            });
        }
        match (state_store, lock_store) {
            (Some(state_store), Some(lock_store)) if problems.is_empty() => Ok(Settings {
                state_store,
                lock_store,
            }),
            _ => Err(problems),
        }
    }
}

impl ApiPlugin for CounterPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn file_descriptor_set(&self) -> &'static [u8] {
        pb::FILE_DESCRIPTOR_SET
    }

    fn validate(&self, settings: &Value, components: &Components<'_>) -> Vec<Problem> {
        let mut problems = Settings::parse(settings).err().unwrap_or_default();
        // Each store given is checked even when the other is missing, so
        // that every problem shows at once.
        for (field, kind) in [("state_store", Kind::State), ("lock_store", Kind::Lock)] {
            let given = settings
                .get(field)
                .and_then(Value::as_str)
                .filter(|n| !n.trim().is_empty());
            if let Some(name) = given {
                problems.extend(components.check(kind, field, name));
            }
        }
        problems
    }

    fn add_services(
        &self,
        ctx: Arc<ApiContext>,
        settings: &Value,
        routes: &mut RoutesBuilder,
    ) -> Result<(), PluginError> {
        let settings = Settings::parse(settings).map_err(|problems| PluginError::Settings {
            plugin: NAME,
            message: problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        })?;
        routes.add_service(CounterServer::new(CounterService {
            ctx,
            settings: Arc::new(settings),
        }));
        Ok(())
    }
}

/// The gRPC handlers: decode, call [`increment`], [`get`] or [`reset`],
/// encode (a [`BlockError`] maps as every block's does).
struct CounterService {
    ctx: Arc<ApiContext>,
    settings: Arc<Settings>,
}

#[tonic::async_trait]
impl Counter for CounterService {
    async fn increment(
        &self,
        request: Request<pb::IncrementRequest>,
    ) -> Result<Response<pb::IncrementResponse>, Status> {
        let req = request.into_inner();
        let value = increment(&self.ctx, &self.settings, &req.key, req.delta).await?;
        Ok(Response::new(pb::IncrementResponse { value }))
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let req = request.into_inner();
        check_key(&req.key)?;
        let (value, _) = read(&self.ctx, &self.settings, &req.key).await?;
        Ok(Response::new(pb::GetResponse { value }))
    }

    async fn reset(&self, request: Request<pb::ResetRequest>) -> Result<Response<pb::ResetResponse>, Status> {
        let req = request.into_inner();
        reset(&self.ctx, &self.settings, &req.key).await?;
        Ok(Response::new(pb::ResetResponse {}))
    }
}

fn check_key(key: &str) -> Result<(), BlockError> {
    if key.is_empty() {
        return Err(BlockError::InvalidArgument("key is empty".into()));
    }
    if key.contains("||") {
        return Err(BlockError::InvalidArgument(format!(
            "key '{}' must not contain '||'",
            quote(key)
        )));
    }
    Ok(())
}

/// The counter's value and etag; 0 and none when it does not exist.
async fn read(ctx: &ApiContext, settings: &Settings, key: &str) -> Result<(i64, Option<String>), BlockError> {
    let found = state::get(
        ctx,
        GetState {
            store: settings.state_store.clone(),
            key: format!("{KEY_PREFIX}{key}"),
            consistency: Consistency::Strong,
        },
    )
    .await?;
    let Some(found) = found else {
        return Ok((0, None));
    };
    let value = std::str::from_utf8(&found.data)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .ok_or_else(|| {
            BlockError::FailedPrecondition(format!(
                "counter '{}' holds something other than a whole number (state key '{KEY_PREFIX}{}' in store '{}'); reset it",
                quote(key),
                quote(key),
                settings.state_store
            ))
        })?;
    Ok((value, Some(found.etag.to_string())))
}

/// Adds `delta` under the counter's lock; answers the new value.
async fn increment(ctx: &Arc<ApiContext>, settings: &Settings, key: &str, delta: i64) -> Result<i64, BlockError> {
    check_key(key)?;
    let held = Held::take(ctx, settings, key).await?;
    let result = async {
        let (current, etag) = read(ctx, settings, key).await?;
        let value = current.checked_add(delta).ok_or_else(|| {
            BlockError::InvalidArgument(format!(
                "delta {delta} would take counter '{}' from {current} out of the range of a signed 64-bit integer",
                quote(key)
            ))
        })?;
        // Over the etag read: a lost lease cannot overwrite a newer value.
        // A counter read as absent is written only if still absent.
        let concurrency = if etag.is_some() {
            Concurrency::LastWrite
        } else {
            Concurrency::FirstWrite
        };
        let save = SaveState {
            store: settings.state_store.clone(),
            items: vec![StateItem {
                key: format!("{KEY_PREFIX}{key}"),
                value: value.to_string().into_bytes(),
                etag,
                concurrency,
                ..StateItem::default()
            }],
        };
        state::save(ctx, save).await.map_err(|e| match e {
            BlockError::Conflict(_) => BlockError::Conflict(format!(
                "counter '{}' changed while this increment held its lock (the lease of {LEASE_SECONDS}s ran out); retry",
                quote(key)
            )),
            other => other,
        })?;
        Ok(value)
    }
    .await;
    held.release().await;
    result
}

/// Removes the counter, under its lock so that no increment in flight
/// writes it back.
async fn reset(ctx: &Arc<ApiContext>, settings: &Settings, key: &str) -> Result<(), BlockError> {
    check_key(key)?;
    let held = Held::take(ctx, settings, key).await?;
    let delete = DeleteState {
        store: settings.state_store.clone(),
        item: DeleteItem {
            key: format!("{KEY_PREFIX}{key}"),
            etag: None,
        },
    };
    let result = state::delete(ctx, delete).await;
    held.release().await;
    result
}

/// A counter's lock, held. Released by [`Held::release`]; if the call is
/// dropped first (its client went away), the unlock is sent from a task
/// of its own, so the next increment need not wait out the lease.
struct Held {
    ctx: Arc<ApiContext>,
    unlock: Option<UnlockRequest>,
}

impl Held {
    /// Tries the lock until it is taken, backing off, for up to
    /// [`LOCK_WAIT`].
    async fn take(ctx: &Arc<ApiContext>, settings: &Settings, key: &str) -> Result<Held, BlockError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let resource_id = format!("{KEY_PREFIX}{key}");
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        let mut backoff = Backoff::new(Duration::from_millis(2), Duration::from_millis(50));
        loop {
            let lease = LeaseRequest {
                store: settings.lock_store.clone(),
                resource_id: resource_id.clone(),
                owner: owner.clone(),
                expire: LEASE_SECONDS,
            };
            if lock::try_lock(ctx, lease).await? {
                return Ok(Held {
                    ctx: ctx.clone(),
                    unlock: Some(UnlockRequest {
                        store: settings.lock_store.clone(),
                        resource_id,
                        owner,
                    }),
                });
            }
            let delay = backoff.next_delay();
            if tokio::time::Instant::now() + delay > deadline {
                return Err(BlockError::Conflict(format!(
                    "counter '{}' stayed locked by other calls for {}s; retry",
                    quote(key),
                    LOCK_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Unlocks. A failure is only logged: the write is done, and the lease
    /// ends by itself.
    async fn release(mut self) {
        if let Some(unlock) = self.unlock.take() {
            unlock_logged(&self.ctx, unlock).await;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(unlock) = self.unlock.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let ctx = self.ctx.clone();
            runtime.spawn(async move { unlock_logged(&ctx, unlock).await });
        }
    }
}

async fn unlock_logged(ctx: &ApiContext, unlock: UnlockRequest) {
    let resource = unlock.resource_id.clone();
    match lock::unlock(ctx, unlock).await {
        Ok(lock::LockStatus::Success) => {}
        Ok(status) => tracing::warn!(?status, %resource, plugin = NAME, "Counter lock was not ours to release"),
        Err(error) => {
            tracing::warn!(%error, %resource, plugin = NAME, "Counter lock release failed; its lease ends it")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_both_stores_and_nothing_else() {
        let ok = Settings::parse(&serde_json::json!({"state_store": "s", "lock_store": "l"})).expect("valid");
        assert_eq!(ok.state_store, "s");
        assert_eq!(ok.lock_store, "l");
        let problems = Settings::parse(&serde_json::json!({"state_store": "", "lock_store": 3, "extra": true}))
            .expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["state_store", "lock_store", "extra"], "{problems:?}");
        let not_a_table = Settings::parse(&serde_json::json!("s")).expect_err("invalid");
        assert_eq!(not_a_table[0].path, "");
    }

    #[test]
    fn keys_are_required_and_free_of_the_separator() {
        assert!(check_key("visits").is_ok());
        assert_eq!(
            check_key("").expect_err("refused"),
            BlockError::InvalidArgument("key is empty".into())
        );
        assert!(matches!(check_key("a||b"), Err(BlockError::InvalidArgument(m)) if m.contains("'||'")));
    }
}
