//! `wasmer`: a function whose module runs on wasmer (cranelift), with
//! Layotto's ABI ([`super::abi`]).
//!
//! The build reads and compiles the module (or takes it from the caches,
//! [`super::engine`]) and starts `instanceNum` instances; a module that
//! does not compile, does not follow the ABI or traps at start fails the
//! build, naming why. A request takes a free instance (waiting up to
//! `queueTimeout`) and runs on a blocking thread, never on the event
//! loop; its caller stops waiting when `timeout` is up, and metering stops
//! the guest itself. An instance whose request failed is dropped and a
//! fresh one built in its place.
//!
//! With `watch` on, the file is checked every second; a changed module is
//! compiled and started beside the serving one and replaces it only once
//! it works, so a broken file leaves the old version serving.
//!
//! Metadata: [`WasmKeys`], plus `config.<key>` entries: the plugin
//! configuration (Layotto's "user data"), handed to the guest as a JSON
//! object in `proxy_on_configure`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::{info, warn};
use wasmer::Module;

use super::abi::{Guest, GuestSettings};
use super::engine::{self, PAGE};
use super::{Announced, Failure, Function, FunctionHost, FunctionRequest, FunctionResponse, GuestError};
use crate::components::meta::{self, Metadata, Parser, Section};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn Function> = TypeEntry::of::<WasmerType>();

/// The metadata prefix of plugin configuration entries.
pub const CONFIG_PREFIX: &str = "config.";

/// How often a watched file is checked.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Most instances a function may keep.
pub const MAX_INSTANCES: usize = 1024;

pub struct WasmerType;

impl ComponentType<dyn Function> for WasmerType {
    const NAME: &'static str = "wasmer";
    type Metadata = WasmMetadata;

    fn build(ctx: BuildContext, metadata: WasmMetadata) -> BoxFuture<'static, Result<Arc<dyn Function>, BuildError>> {
        build(ctx, metadata).boxed()
    }
}

/// What `wasmer` reads from its metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmKeys {
    /// The `.wasm` file (Layotto's `vm_config.path`). Required.
    #[serde(deserialize_with = "meta::non_empty")]
    pub path: String,
    /// Instances kept, each serving one request at a time (Layotto's
    /// `instance_num`); 0 means one per CPU, as in Layotto.
    #[serde(default)]
    pub instance_num: usize,
    /// The root context id handed to the guest (Layotto's
    /// `root_context_id`).
    #[serde(default = "one")]
    pub root_context_id: i32,
    /// Most linear memory an instance may have, in MiB; a guest that grows
    /// past it traps.
    #[serde(default = "default_memory")]
    pub max_memory_mb: u32,
    /// The execution budget of one request: a guest still running then is
    /// stopped, and its caller answered with an error.
    #[serde(default = "default_timeout")]
    pub timeout: meta::Seconds,
    /// How long a request waits for a free instance.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout: meta::Seconds,
    /// Reload the module when its file changes.
    #[serde(default = "yes")]
    pub watch: bool,
    /// Where compiled modules are cached; default
    /// `$XDG_CACHE_HOME/layotto/wasm` or `~/.cache/layotto/wasm`.
    #[serde(default)]
    pub cache_dir: Option<String>,
}

fn one() -> i32 {
    1
}
fn default_memory() -> u32 {
    64
}
fn default_timeout() -> meta::Seconds {
    meta::Seconds::secs(1)
}
fn default_queue_timeout() -> meta::Seconds {
    meta::Seconds::secs(5)
}
fn yes() -> bool {
    true
}

impl WasmKeys {
    /// The memory limit in WebAssembly pages.
    fn max_pages(&self) -> u32 {
        u32::try_from(u64::from(self.max_memory_mb) * 1024 * 1024 / PAGE).unwrap_or(u32::MAX)
    }

    fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .as_deref()
            .map_or_else(engine::default_cache_dir, PathBuf::from)
    }
}

impl Section for WasmKeys {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        if !(1..=4095).contains(&self.max_memory_mb) {
            errors.push(MetadataError::new("maxMemoryMb", "must be between 1 and 4095 (MiB)"));
        }
        if self.instance_num > MAX_INSTANCES {
            errors.push(MetadataError::new(
                "instanceNum",
                format!("must be at most {MAX_INSTANCES}"),
            ));
        }
        if Duration::from(self.timeout).is_zero() {
            errors.push(MetadataError::new("timeout", "must be above 0"));
        }
    }
}

/// [`WasmKeys`] and the plugin configuration.
#[derive(Clone, Debug)]
pub struct WasmMetadata {
    pub keys: WasmKeys,
    /// `config.<key>` entries.
    pub config: BTreeMap<String, String>,
}

impl Metadata for WasmMetadata {
    fn read(parser: &mut Parser<'_>) -> Option<Self> {
        let keys = parser.section();
        let config = parser.prefixed(CONFIG_PREFIX, "a string");
        Some(WasmMetadata { keys: keys?, config })
    }

    fn check(&self, errors: &mut Vec<MetadataError>) {
        Section::check(&self.keys, errors);
    }
}

/// A request handed to an instance's thread.
enum Job {
    Serve {
        request: FunctionRequest,
        host: Arc<dyn FunctionHost>,
        reply: oneshot::Sender<Result<FunctionResponse, Failure>>,
        /// The caller's place among the instances, given back once served.
        permit: OwnedSemaphorePermit,
    },
    /// One instance fewer.
    Exit,
}

/// What every instance thread of one version of a module shares.
struct Recipe {
    module: Module,
    settings: GuestSettings,
    runtime: Handle,
    jobs: Mutex<std::sync::mpsc::Receiver<Job>>,
}

/// The instances of one version of a module. A wasmer store cannot move
/// between threads, so each instance lives on a thread of its own and
/// takes requests from a shared queue; dropping the pool ends them once
/// their current request is done.
struct Pool {
    recipe: Arc<Recipe>,
    jobs: std::sync::mpsc::Sender<Job>,
    /// One permit per instance.
    permits: Arc<Semaphore>,
    size: AtomicUsize,
    id: String,
}

impl Pool {
    /// Starts `instances` instance threads of `module` and waits until each
    /// has started its guest. Blocks.
    fn start(module: Module, settings: GuestSettings, instances: usize, runtime: &Handle) -> Result<Pool, GuestError> {
        let (jobs, receiver) = std::sync::mpsc::channel();
        let recipe = Arc::new(Recipe {
            module,
            settings,
            runtime: runtime.clone(),
            jobs: Mutex::new(receiver),
        });
        let pool = Pool {
            recipe,
            jobs,
            permits: Arc::new(Semaphore::new(0)),
            size: AtomicUsize::new(0),
            id: String::new(),
        };
        let ids = pool.spawn(instances)?;
        let id = ids.first().cloned().unwrap_or_default();
        if let Some(other) = ids.iter().find(|other| **other != id) {
            return Err(GuestError::Abi(format!(
                "instances announce different ids ('{id}', '{other}')"
            )));
        }
        pool.permits.add_permits(instances);
        pool.size.store(instances, Ordering::Release);
        Ok(Pool { id, ..pool })
    }

    /// Starts `n` more instance threads; answers the ids they announced.
    fn spawn(&self, n: usize) -> Result<Vec<String>, GuestError> {
        let mut started = Vec::with_capacity(n);
        for _ in 0..n {
            let (ready, up) = std::sync::mpsc::channel();
            let recipe = self.recipe.clone();
            std::thread::Builder::new()
                .name(format!("wasm-{}", recipe.settings.name))
                .spawn(move || instance_thread(recipe, ready))
                .map_err(|e| GuestError::Abi(format!("cannot start an instance thread: {e}")))?;
            started.push(up);
        }
        started
            .into_iter()
            .map(|up| {
                up.recv()
                    .unwrap_or_else(|_| Err(GuestError::Abi("the instance thread ended while starting".into())))
            })
            .collect()
    }
}

/// One instance: starts its guest, then serves jobs until told to exit or
/// the pool is gone. A guest that fails a request is replaced.
fn instance_thread(recipe: Arc<Recipe>, ready: std::sync::mpsc::Sender<Result<String, GuestError>>) {
    let start = || Guest::start(&recipe.module, recipe.settings.clone(), recipe.runtime.clone());
    let mut guest = match start() {
        Ok(guest) => {
            let _ = ready.send(Ok(guest.id.clone()));
            Some(guest)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop(ready);
    loop {
        let job = recipe.jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(Job::Serve {
            request,
            host,
            reply,
            permit,
        }) = job
        else {
            return;
        };
        let mut current = match guest.take().map_or_else(start, Ok) {
            Ok(g) => g,
            Err(error) => {
                let _ = reply.send(Err(Failure { error, replaced: false }));
                continue;
            }
        };
        // A panic in the engine costs this instance, not the thread.
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| current.serve(request, host)))
            .unwrap_or_else(|panic| {
                Err(GuestError::Trap(format!(
                    "the engine panicked: {}",
                    crate::components::tasks::panic_message(&*panic)
                )))
            });
        match served {
            Ok(response) => {
                guest = Some(current);
                drop(permit);
                let _ = reply.send(Ok(response));
            }
            Err(error) => {
                drop(current);
                let _ = reply.send(Err(Failure { error, replaced: true }));
                // The fresh instance is built before this place is given
                // back, so a caller waiting for it gets a working one.
                guest = start()
                    .inspect_err(
                        |e| warn!(error = %e, "Cannot start a fresh instance; one is started at the next request"),
                    )
                    .ok();
                drop(permit);
            }
        }
    }
}

/// What the component and its watcher share.
struct Shared {
    name: Arc<str>,
    path: PathBuf,
    max_pages: u32,
    cache_dir: Option<PathBuf>,
    budget: Duration,
    queue_timeout: Duration,
    settings: GuestSettings,
    runtime: Handle,
    pool: RwLock<Option<Arc<Pool>>>,
    announced: Arc<Announced>,
}

impl Shared {
    fn pool(&self) -> Option<Arc<Pool>> {
        self.pool.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Compiles `wasm` and starts `instances` instances of it, off the
    /// event loop.
    async fn load(self: &Arc<Self>, wasm: Vec<u8>, instances: usize) -> Result<Pool, String> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let (compiled, source) = engine::load(&wasm, shared.max_pages, shared.cache_dir.as_deref())?;
            let settings = GuestSettings {
                engine: compiled.engine,
                ..shared.settings.clone()
            };
            let pool = Pool::start(compiled.module, settings, instances, &shared.runtime).map_err(|e| e.to_string())?;
            info!(function = &*shared.name, id = %pool.id, instances, ?source, "WASM function loaded");
            Ok(pool)
        })
        .await
        .map_err(|e| format!("loading the module failed: {e}"))?
    }
}

pub struct WasmFunction {
    shared: Arc<Shared>,
}

async fn build(ctx: BuildContext, metadata: WasmMetadata) -> Result<Arc<dyn Function>, BuildError> {
    let keys = metadata.keys;
    let name: Arc<str> = ctx.spec.name.as_str().into();
    let path = PathBuf::from(&keys.path);
    let wasm = tokio::fs::read(&path)
        .await
        .map_err(|e| BuildError(format!("cannot read the module {}: {e}", path.display())))?;
    let budget = Duration::from(keys.timeout);
    let plugin_config = if metadata.config.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&metadata.config).unwrap_or_default()
    };
    let instances = match keys.instance_num {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let announced = ctx.retained.get_or_init(Announced::default);
    let max_pages = keys.max_pages();
    let settings = GuestSettings {
        name: name.clone(),
        root_context_id: keys.root_context_id,
        vm_config: Vec::new(),
        plugin_config,
        budget,
        points: tokio::task::spawn_blocking(move || engine::budget_points(budget))
            .await
            .map_err(|e| BuildError(e.to_string()))?,
        // Set by each load to the compiled module's own.
        engine: wasmer::Engine::default(),
    };
    let cache_dir = Some(keys.cache_dir());
    let shared = Shared {
        name,
        path: path.clone(),
        max_pages,
        cache_dir,
        budget,
        queue_timeout: keys.queue_timeout.into(),
        settings,
        runtime: Handle::current(),
        pool: RwLock::new(None),
        announced: announced.clone(),
    };
    let shared = Arc::new(shared);
    let pool = shared.load(wasm.clone(), instances).await.map_err(BuildError)?;
    announced.set(&pool.id);
    *shared.pool.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(pool));
    if keys.watch {
        let watched = Arc::downgrade(&shared);
        let mut last = stamp(&path);
        let mut last_hash = engine::module_hash(&wasm);
        ctx.tasks.spawn("watch the module file", async move {
            loop {
                tokio::time::sleep(WATCH_INTERVAL).await;
                let Some(shared) = watched.upgrade() else {
                    return Ok(());
                };
                let now = stamp(&shared.path);
                if now == last {
                    continue;
                }
                last = now;
                let Ok(wasm) = tokio::fs::read(&shared.path).await else {
                    warn!(function = &*shared.name, path = %shared.path.display(), "The module file is gone; the loaded version keeps serving");
                    continue;
                };
                let hash = engine::module_hash(&wasm);
                if hash == last_hash {
                    continue;
                }
                let instances = shared.pool().map_or(1, |p| p.size.load(Ordering::Acquire));
                match shared.load(wasm, instances).await {
                    Ok(pool) => {
                        last_hash = hash;
                        shared.announced.set(&pool.id);
                        *shared.pool.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(pool));
                        info!(function = &*shared.name, path = %shared.path.display(), "The module file changed; the new version serves");
                    }
                    Err(e) => {
                        warn!(function = &*shared.name, path = %shared.path.display(), error = %e, "The module file changed but does not load; the loaded version keeps serving");
                    }
                }
            }
        });
    }
    Ok(Arc::new(WasmFunction { shared }))
}

/// The file's modification time and length, to notice a change cheaply.
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[async_trait::async_trait]
impl Component for WasmFunction {
    async fn health_check(&self) -> Result<(), ComponentError> {
        match self.shared.pool() {
            Some(pool) if pool.size.load(Ordering::Acquire) > 0 => Ok(()),
            _ => Err(ComponentError::Unavailable("the function has no instances".into())),
        }
    }

    async fn close(&self) {
        // The instance threads end once their current request is done.
        self.shared.pool.write().unwrap_or_else(|p| p.into_inner()).take();
    }
}

#[async_trait::async_trait]
impl Function for WasmFunction {
    async fn run(
        &self,
        request: FunctionRequest,
        host: Arc<dyn FunctionHost>,
    ) -> Result<Result<FunctionResponse, Failure>, ComponentError> {
        let shared = &self.shared;
        let pool = shared
            .pool()
            .ok_or_else(|| ComponentError::Unavailable("the function is closing".into()))?;
        let instances = pool.size.load(Ordering::Acquire);
        let permit = match tokio::time::timeout(shared.queue_timeout, pool.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(ComponentError::Unavailable("the function is closing".into())),
            Err(_) => {
                return Ok(Err(Failure {
                    error: GuestError::Busy(instances, shared.queue_timeout),
                    replaced: false,
                }));
            }
        };
        let (reply, answer) = oneshot::channel();
        pool.jobs
            .send(Job::Serve {
                request,
                host,
                reply,
                permit,
            })
            .map_err(|_| ComponentError::Unavailable("the function's instances are gone".into()))?;
        match tokio::time::timeout(shared.budget, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(ComponentError::Internal("the instance ended without answering".into())),
            // Metering stops the guest itself; its thread then replaces it.
            Err(_) => Ok(Err(Failure {
                error: GuestError::Budget(shared.budget),
                replaced: true,
            })),
        }
    }

    async fn resize(&self, instances: usize) -> Result<(), ComponentError> {
        if instances == 0 || instances > MAX_INSTANCES {
            return Err(ComponentError::InvalidArgument(format!(
                "instance_num must be between 1 and {MAX_INSTANCES}"
            )));
        }
        let pool = self
            .shared
            .pool()
            .ok_or_else(|| ComponentError::Unavailable("the function is closing".into()))?;
        let current = pool.size.load(Ordering::Acquire);
        if instances > current {
            let more = instances - current;
            let grow = pool.clone();
            tokio::task::spawn_blocking(move || grow.spawn(more))
                .await
                .map_err(|e| ComponentError::Internal(e.to_string()))?
                .map_err(|e| ComponentError::Internal(e.to_string()))?;
            pool.permits.add_permits(more);
        } else if instances < current {
            let fewer = current - instances;
            // Waits for busy instances to finish, within their budget.
            let permits = pool
                .permits
                .clone()
                .acquire_many_owned(u32::try_from(fewer).unwrap_or(u32::MAX))
                .await
                .map_err(|_| ComponentError::Unavailable("the function is closing".into()))?;
            permits.forget();
            for _ in 0..fewer {
                let _ = pool.jobs.send(Job::Exit);
            }
        }
        pool.size.store(instances, Ordering::Release);
        info!(
            function = &*self.shared.name,
            from = current,
            to = instances,
            "WASM function resized"
        );
        Ok(())
    }
}

/// Checks that the function `spec` describes loads: its module compiles
/// and one instance starts and announces an id (Layotto's install refuses
/// a module that does not). Nothing is kept but the compiled module in
/// the caches, which the build then finds.
pub async fn probe(spec: &crate::components::ComponentSpec) -> Result<String, String> {
    let metadata: WasmMetadata = meta::parse_for_build(spec).map_err(|problems| {
        problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let keys = metadata.keys;
    let path = PathBuf::from(&keys.path);
    let wasm = tokio::fs::read(&path)
        .await
        .map_err(|e| format!("cannot read the module {}: {e}", path.display()))?;
    let max_pages = keys.max_pages();
    let cache_dir = keys.cache_dir();
    let budget = Duration::from(keys.timeout);
    let runtime = Handle::current();
    let name: Arc<str> = spec.name.as_str().into();
    tokio::task::spawn_blocking(move || {
        let (compiled, _) = engine::load(&wasm, max_pages, Some(&cache_dir))?;
        let module = compiled.module;
        let settings = GuestSettings {
            name,
            root_context_id: keys.root_context_id,
            vm_config: Vec::new(),
            plugin_config: Vec::new(),
            budget,
            points: engine::budget_points(budget),
            engine: compiled.engine,
        };
        // A store is tied to its thread: start the probe on one of its own.
        std::thread::scope(|scope| {
            scope
                .spawn(|| Guest::start(&module, settings, runtime).map(|g| g.id.clone()))
                .join()
                .map_err(|_| "the probe instance panicked".to_owned())?
                .map_err(|e| e.to_string())
        })
    })
    .await
    .map_err(|e| format!("loading the module failed: {e}"))?
}
