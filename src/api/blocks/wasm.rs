//! The WASM block: run a function by the id its guest announced, answer
//! the guest's host calls through the other blocks, and install, update
//! and uninstall functions at run time (Layotto's `/wasm/*` admin API).
//!
//! Functions are components of the `wasm` kind under their own block
//! supervisor ([`crate::supervisor::SupervisorHandle::start_functions`]),
//! so an installed one has a status, restarts and metrics like a
//! configured one; this table is the API side's view of them, by name.
//! A request whose instance was replaced (a trap, a blown budget) counts
//! as a restart of the function.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use actix::Addr;

use super::BlockError;
use crate::actors::ComponentHandle;
use crate::actors::wasm::{Resize, Run};
use crate::api::ApiContext;
use crate::components::wasm::{
    Announced, FunctionAccess, FunctionHost, FunctionRequest, FunctionResponse, FunctionRunner, GuestError,
};
use crate::components::{ComponentSpec, Functions, Kind};
use crate::supervisor::{AddChild, BlockSupervisor, Health, RemoveChild, StatusRegistry};

/// How long an install waits for the function's first build to finish.
const INSTALL_WAIT: Duration = Duration::from_secs(60);

/// The functions of this sidecar, by component name.
pub struct FunctionTable {
    supervisor: Option<Addr<BlockSupervisor<Functions>>>,
    entries: RwLock<BTreeMap<String, ComponentHandle<Functions>>>,
    status: Arc<StatusRegistry>,
    queue_capacity: usize,
    instance_id: String,
    app_id: String,
}

impl FunctionTable {
    pub fn new(
        supervisor: Option<Addr<BlockSupervisor<Functions>>>,
        configured: impl IntoIterator<Item = ComponentHandle<Functions>>,
        status: Arc<StatusRegistry>,
        queue_capacity: usize,
        instance_id: String,
        app_id: String,
    ) -> Self {
        FunctionTable {
            supervisor,
            entries: RwLock::new(configured.into_iter().map(|h| (h.spec().name.clone(), h)).collect()),
            status,
            queue_capacity,
            instance_id,
            app_id,
        }
    }

    fn entries(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ComponentHandle<Functions>>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The function whose guest announced `id`.
    pub fn by_id(&self, id: &str) -> Option<ComponentHandle<Functions>> {
        self.entries().values().find(|h| announced(h) == id).cloned()
    }

    /// The function announced as `id`, or else named `id` in config.
    fn by_id_or_name(&self, id: &str) -> Option<ComponentHandle<Functions>> {
        self.by_id(id).or_else(|| self.entries().get(id).cloned())
    }

    /// `(component name, announced id)` of every function.
    pub fn list(&self) -> Vec<(String, String)> {
        self.entries()
            .iter()
            .map(|(name, h)| (name.clone(), announced(h)))
            .collect()
    }
}

fn announced(handle: &ComponentHandle<Functions>) -> String {
    handle.retained().get_or_init(Announced::default).get()
}

/// Runs a service invocation whose target is a function id on that
/// function, as Layotto's `mosn` rpc channel reaches its WASM ingress: the
/// `id` header names it, the method is the path, the caller's metadata are
/// headers and the data the body. The answer is an HTTP 200 with the
/// function's body.
pub(crate) async fn invoke_function(
    ctx: &ApiContext,
    id: &str,
    req: super::invoke::InvokeRequest,
) -> Result<super::invoke::InvokeResponse, BlockError> {
    let mut headers: Vec<(String, String)> = req.metadata.into_iter().filter(|(k, _)| k != "id").collect();
    headers.push(("id".into(), id.to_owned()));
    headers.push((":path".into(), format!("/{}", req.method.trim_start_matches('/'))));
    if !req.content_type.is_empty() {
        headers.push(("content-type".into(), req.content_type));
    }
    let answer = call(
        ctx,
        id,
        FunctionRequest {
            headers,
            body: req.data,
        },
    )
    .await?;
    let content_type = answer
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map_or_else(|| "text/plain; charset=utf-8".to_owned(), |(_, v)| v.clone());
    Ok(super::invoke::InvokeResponse {
        code: 200,
        headers: answer.headers,
        data: answer.body,
        content_type,
        ..Default::default()
    })
}

/// Runs `request` on the function announced as `id`.
pub async fn call(ctx: &ApiContext, id: &str, request: FunctionRequest) -> Result<FunctionResponse, BlockError> {
    if id.is_empty() {
        return Err(BlockError::InvalidArgument("the function id is empty".into()));
    }
    let Some(function) = ctx.functions.by_id(id) else {
        let known: Vec<String> = ctx
            .functions
            .list()
            .into_iter()
            .map(|(_, id)| id)
            .filter(|id| !id.is_empty())
            .collect();
        return Err(BlockError::NotFound(format!(
            "function '{}' is not registered; registered: {}",
            super::quote(id),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    let name = function.spec().name.clone();
    let host: Arc<dyn FunctionHost> = Arc::new(Host { ctx: ctx.this.clone() });
    let started = Instant::now();
    let answer = function.call(Run { request, host }).await;
    let seconds = started.elapsed().as_secs_f64();
    match answer {
        Ok(Ok(response)) => {
            ctx.metrics.observe_wasm_call(&name, "ok", seconds);
            Ok(response)
        }
        Ok(Err(failure)) => {
            let outcome = match failure.error {
                GuestError::Trap(_) => "trap",
                GuestError::Budget(_) => "budget",
                GuestError::Abi(_) => "abi",
                GuestError::Stopped(_) => "stopped",
                GuestError::Busy(..) => "busy",
            };
            ctx.metrics.observe_wasm_call(&name, outcome, seconds);
            if failure.replaced {
                function.slot().status.count_restart(outcome);
            }
            let message = format!("function '{id}' ({name}): {}", failure.error);
            Err(match failure.error {
                GuestError::Budget(_) => BlockError::DeadlineExceeded(message),
                GuestError::Busy(..) => BlockError::ResourceExhausted(message),
                _ => BlockError::Internal(message),
            })
        }
        Err(e) => {
            ctx.metrics.observe_wasm_call(&name, "unavailable", seconds);
            Err(e.into())
        }
    }
}

/// Why an admin request failed: Layotto answers each with its message.
pub type AdminError = String;

/// Installs a function from a Layotto plugin config (`name`,
/// `instance_num`, `vm_config.path`, user data): refused when the name is
/// taken; the module is compiled and started before anything is added,
/// so a broken one changes nothing.
pub async fn install(
    ctx: &Arc<ApiContext>,
    conf: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), AdminError> {
    let Some(name) = conf.get("name").and_then(|v| v.as_str()) else {
        return Err("can't get name property".into());
    };
    let table = &ctx.functions;
    if table.by_id_or_name(name).is_some() {
        return Err(format!("{name} is already registered"));
    }
    let metadata = crate::config::layotto_json::wasm_function_metadata(conf)?;
    let mut spec = ComponentSpec::new(
        name,
        <crate::components::wasm::wasmer::WasmerType as crate::components::ComponentType<
            dyn crate::components::wasm::Function,
        >>::NAME,
    );
    spec.metadata = metadata;
    spec.app_id = table.app_id.clone();
    if let Some(problems) = Kind::Wasm.validate(&spec)
        && !problems.is_empty()
    {
        let text: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
        return Err(text.join("; "));
    }
    crate::components::wasm::wasmer::probe(&spec).await?;
    let Some(supervisor) = table.supervisor.clone() else {
        return Err("functions are not enabled in this sidecar".into());
    };
    let slot = crate::supervisor::slot_for::<Functions>(&spec, table.queue_capacity, &table.status, &table.instance_id);
    {
        let mut entries = table.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.contains_key(name) {
            table.status.unregister(&slot.status);
            return Err(format!("{name} is already registered"));
        }
        entries.insert(name.to_owned(), ComponentHandle::new(slot.clone()));
    }
    let mut changes = table.status.subscribe();
    supervisor
        .send(AddChild(slot.clone()))
        .await
        .map_err(|e| format!("the function supervisor is gone: {e}"))?;
    // Answer once the first build has finished, as Layotto does.
    let deadline = tokio::time::Instant::now() + INSTALL_WAIT;
    while slot.status.snapshot().health == Health::Init {
        if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
            break;
        }
    }
    let snapshot = slot.status.snapshot();
    if snapshot.health != Health::Up {
        return Err(format!(
            "{name} was installed but is {}: {}",
            snapshot.health.as_str(),
            snapshot.reason
        ));
    }
    Ok(())
}

/// Uninstalls the function announced as (or named) `name`.
pub async fn uninstall(ctx: &Arc<ApiContext>, name: &str) -> Result<(), AdminError> {
    let table = &ctx.functions;
    let Some(function) = table.by_id_or_name(name) else {
        return Err(format!("{name} is not registered"));
    };
    let component = function.spec().name.clone();
    table
        .entries
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&component);
    if let Some(supervisor) = &table.supervisor {
        let _ = supervisor.send(RemoveChild(component)).await;
    }
    table.status.unregister(&function.slot().status);
    Ok(())
}

/// Sets the number of instances of the function announced as (or named)
/// `name`.
pub async fn update(ctx: &Arc<ApiContext>, name: &str, instances: usize) -> Result<(), AdminError> {
    let Some(function) = ctx.functions.by_id_or_name(name) else {
        return Err(format!("{name} is not registered"));
    };
    function.call(Resize { instances }).await.map_err(|e| e.to_string())
}

/// The functions as a component (the `wasm` binding) reaches them.
pub fn access(ctx: &ApiContext) -> FunctionAccess {
    FunctionAccess::new(Arc::new(Runner { ctx: ctx.this.clone() }))
}

struct Runner {
    ctx: Weak<ApiContext>,
}

#[async_trait::async_trait]
impl FunctionRunner for Runner {
    async fn run(&self, id: &str, request: FunctionRequest) -> Result<FunctionResponse, String> {
        let ctx = self.ctx.upgrade().ok_or_else(|| "the sidecar is stopping".to_owned())?;
        call(&ctx, id, request).await.map_err(|e| e.to_string())
    }
}

/// The guest's way into the sidecar: the same block services as the APIs.
struct Host {
    ctx: Weak<ApiContext>,
}

impl Host {
    fn ctx(&self) -> Result<Arc<ApiContext>, String> {
        self.ctx.upgrade().ok_or_else(|| "the sidecar is stopping".to_owned())
    }
}

#[async_trait::async_trait]
impl FunctionHost for Host {
    async fn get_state(&self, store: String, key: String) -> Result<Option<Vec<u8>>, String> {
        let ctx = self.ctx()?;
        let value = super::state::get(
            &ctx,
            super::state::GetState {
                store,
                key,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(value.map(|v| v.data))
    }

    async fn save_state(&self, store: String, key: String, value: Vec<u8>) -> Result<(), String> {
        let ctx = self.ctx()?;
        super::state::save(
            &ctx,
            super::state::SaveState {
                store,
                items: vec![super::state::StateItem {
                    key,
                    value,
                    ..Default::default()
                }],
            },
        )
        .await
        .map_err(|e| e.to_string())
    }

    async fn invoke(&self, id: String, method: String, data: Vec<u8>) -> Result<Vec<u8>, String> {
        let ctx = self.ctx()?;
        // A function id reaches that function (see `invoke::invoke`), any
        // other an app.
        let response = super::invoke::invoke(
            &ctx,
            super::invoke::InvokeRequest {
                app_id: id,
                method,
                verb: String::new(),
                query: String::new(),
                data,
                type_url: String::new(),
                content_type: String::new(),
                metadata: Vec::new(),
                timeout: None,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        if !response.is_ok() {
            return Err(format!(
                "the app answered {}: {}",
                response.http_status(),
                String::from_utf8_lossy(&response.data)
            ));
        }
        Ok(response.data)
    }

    async fn publish(&self, pubsub: String, topic: String, data: Vec<u8>) -> Result<(), String> {
        let ctx = self.ctx()?;
        super::pubsub::publish(
            &ctx,
            super::pubsub::PublishEvent {
                pubsub,
                topic,
                data,
                content_type: String::new(),
                metadata: Default::default(),
                api: super::pubsub::Api::Layotto,
            },
        )
        .await
        .map_err(|e| e.to_string())
    }
}
