//! Puts the sidecar together: listeners, supervision tree, API servers; and
//! takes it apart again in order.
//!
//! Everything runs on one event loop (a thread running an actix system):
//! the gRPC and HTTP servers, the supervisors and every component actor. A
//! request is decoded, routed to its component's actor and answered without
//! leaving that thread, so the actor hop is a local message, not a thread
//! wake-up. Components are async and never block; blocking client libraries
//! (SQLite) run on threads of their own.
//!
//! Start-up: bind every listener (a taken port fails at once), serve the
//! actuator (readiness shows start-up progress), start the supervision tree,
//! wait up to `init_timeout` for each component's first build, serve gRPC,
//! mark `runtime_startup` UP.
//!
//! Shutdown: mark `runtime_startup` DOWN (readiness fails, load balancers
//! stop sending), stop accepting gRPC and Dapr HTTP connections, let calls
//! in flight finish within the grace period, answer those still running
//! UNAVAILABLE (the cut-off switch), stop the supervision tree children
//! first, then stop the actuator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::actors::secrets::GetSecret;
use crate::api::callback::AppCallback;
use crate::api::delivery::Subscriptions;
use crate::api::{self, ApiContext};
use crate::components::{Kind, secrets};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::supervisor::{Escalation, Health, Slots, StatusRegistry, SupervisorHandle};

mod reload;
pub use reload::ReloadSource;

/// Stops an API server's intake and waits until `deadline` for its calls
/// in flight; then turns the cut-off switch, which answers those still
/// running "the sidecar is stopping", and gives the answers a moment to
/// leave before the server is stopped outright.
async fn drain<E>(
    api: &str,
    server: Option<(watch::Sender<bool>, JoinHandle<E>)>,
    deadline: Instant,
    cut_off: &watch::Sender<bool>,
) {
    let Some((stop, mut task)) = server else {
        return;
    };
    let _ = stop.send(true);
    if tokio::time::timeout_at(deadline, &mut task).await.is_ok() {
        return;
    }
    warn!(
        api,
        "Calls still in flight after the grace period; answering them UNAVAILABLE"
    );
    let _ = cut_off.send(true);
    if tokio::time::timeout(CUT_OFF_FLUSH, &mut task).await.is_err() {
        warn!(api, "Connections still open after the cut-off; closing them");
        task.abort();
    }
}

/// How long the answers to cut-off calls get to reach their clients
/// before the gRPC server is stopped outright.
const CUT_OFF_FLUSH: Duration = Duration::from_secs(1);

/// Why the runtime could not start, or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot listen on the {what} address {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on the unix socket {}: {source}", path.display())]
    BindUnix {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("components failed to start and supervisor.fail_fast is on: {}", .0.join("; "))]
    StartupFailed(Vec<String>),
    #[error("component {component} exceeded its restart intensity and supervisor.fail_fast is on: {reason}")]
    Escalated { component: String, reason: String },
    #[error("the gRPC server stopped: {0}")]
    Grpc(String),
    #[error("the runtime's event loop failed: {0}")]
    EventLoop(String),
    /// Not a failure: a client asked the sidecar to shut down (Dapr's
    /// Shutdown); the owner stops it gracefully, as on SIGTERM.
    #[error("a client asked the sidecar to shut down")]
    ShutdownRequested,
    #[error("secret references cannot be resolved:\n  - {}", .0.join("\n  - "))]
    SecretRefs(Vec<String>),
    #[error(transparent)]
    Mtls(#[from] api::mtls::MtlsError),
    #[error(transparent)]
    Plugin(#[from] api::plugins::PluginError),
}

/// A running sidecar, seen from outside its event loop. Dropping it shuts
/// the sidecar down.
pub struct Runtime {
    grpc_addr: SocketAddr,
    actuator_addr: SocketAddr,
    dapr_http_addr: Option<SocketAddr>,
    internal_addr: Option<SocketAddr>,
    status: Arc<StatusRegistry>,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    failures: mpsc::UnboundedReceiver<RuntimeError>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the event loop reports once it serves.
struct Started {
    grpc_addr: SocketAddr,
    actuator_addr: SocketAddr,
    dapr_http_addr: Option<SocketAddr>,
    internal_addr: Option<SocketAddr>,
    status: Arc<StatusRegistry>,
    metrics: Arc<Metrics>,
}

impl Runtime {
    /// Starts a sidecar from a validated config on an event-loop thread of
    /// its own. Addresses with port 0 get a free port; see
    /// [`Runtime::grpc_addr`] and friends.
    pub async fn start(config: Config) -> Result<Runtime, RuntimeError> {
        Runtime::start_reloadable(config, None).await
    }

    /// As [`Runtime::start`], and applies the config's changes while it
    /// runs when `source` says where it comes from (see `runtime::reload`).
    pub async fn start_reloadable(config: Config, source: Option<ReloadSource>) -> Result<Runtime, RuntimeError> {
        let (started_tx, started_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (failures_tx, failures_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("layotto-runtime".into())
            .spawn(move || {
                let system = actix_rt::System::new();
                system.block_on(event_loop(config, source, started_tx, stop_rx, failures_tx));
            })
            .map_err(|e| RuntimeError::EventLoop(format!("cannot spawn its thread: {e}")))?;
        let join = |thread: std::thread::JoinHandle<()>| async move {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        };
        match started_rx.await {
            Ok(Ok(started)) => Ok(Runtime {
                grpc_addr: started.grpc_addr,
                actuator_addr: started.actuator_addr,
                dapr_http_addr: started.dapr_http_addr,
                internal_addr: started.internal_addr,
                status: started.status,
                metrics: started.metrics,
                stop: Some(stop_tx),
                failures: failures_rx,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                join(thread).await;
                Err(e)
            }
            Err(_) => {
                join(thread).await;
                Err(RuntimeError::EventLoop("it ended during start-up".into()))
            }
        }
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn actuator_addr(&self) -> SocketAddr {
        self.actuator_addr
    }

    pub fn dapr_http_addr(&self) -> Option<SocketAddr> {
        self.dapr_http_addr
    }

    /// The internal (service invocation) listener's address, when it is on.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal_addr
    }

    pub fn status(&self) -> &Arc<StatusRegistry> {
        &self.status
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Resolves when the runtime cannot go on: an escalation under
    /// `fail_fast`, or the gRPC server failing.
    pub async fn failed(&mut self) -> RuntimeError {
        match self.failures.recv().await {
            Some(e) => e,
            None => RuntimeError::EventLoop("it ended".into()),
        }
    }

    /// Stops the sidecar gracefully (see the module docs) and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RuntimeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind { what, addr, source })
}

/// A unix socket listener at `path`, replacing a socket file an earlier
/// run left (never another kind of file).
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, RuntimeError> {
    use std::os::unix::fs::FileTypeExt;
    let error = |source| RuntimeError::BindUnix {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        std::fs::remove_file(path).map_err(error)?;
    }
    tokio::net::UnixListener::bind(path).map_err(error)
}

fn local_addr(listener: &TcpListener, what: &'static str, addr: SocketAddr) -> Result<SocketAddr, RuntimeError> {
    listener
        .local_addr()
        .map_err(|source| RuntimeError::Bind { what, addr, source })
}

/// Fills `config`'s secret references from the secret stores running now
/// (at start-up, and for each reloaded config).
pub(crate) async fn resolve_secret_refs(
    config: &mut Config,
    stores: &crate::actors::Blocks<crate::components::SecretStores>,
) -> Result<(), Vec<String>> {
    secrets::refs::resolve(config, |store, secret| {
        let handle = stores.get("store", &store);
        async move {
            let handle = handle.map_err(|e| e.to_string())?;
            handle.call(GetSecret { key: secret }).await.map_err(|e| e.to_string())
        }
    })
    .await
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

type GrpcTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// Runs the sidecar on the current thread until `stop` fires (or its sender
/// is dropped), reporting start-up on `started` and failures on `failures`.
async fn event_loop(
    config: Config,
    source: Option<ReloadSource>,
    started: oneshot::Sender<Result<Started, RuntimeError>>,
    mut stop: oneshot::Receiver<()>,
    failures: mpsc::UnboundedSender<RuntimeError>,
) {
    let mut serving = match Serving::start(config, source).await {
        Ok(serving) => serving,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let report = Started {
        grpc_addr: serving.grpc_addr,
        actuator_addr: serving.actuator_addr,
        dapr_http_addr: serving.dapr_http_addr,
        internal_addr: serving.internal_addr,
        status: serving.status.clone(),
        metrics: serving.metrics.clone(),
    };
    if started.send(Ok(report)).is_err() {
        serving.shutdown().await;
        return;
    }
    loop {
        tokio::select! {
            _ = &mut stop => break,
            failure = serving.failure() => {
                // Reported to the owner, who decides to shut down.
                let _ = failures.send(failure);
            }
        }
    }
    serving.shutdown().await;
}

/// Waits until every registered component has finished its first build
/// (UP or DOWN), or the init timeout passes.
async fn await_first_builds(status: &StatusRegistry, init_timeout: Duration) {
    // The build itself is bounded by init_timeout; allow for the report.
    let deadline = Instant::now() + init_timeout + Duration::from_secs(1);
    let mut changes = status.subscribe();
    while status.components().iter().any(|(_, s)| s.health == Health::Init) {
        if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
            warn!("Some components are still starting; serving anyway");
            return;
        }
    }
}

/// Names this sidecar to backends it shares with other sidecars (a Redis
/// consumer, an MQTT session): the host name and the gRPC port, so it is
/// stable across restarts and differs between sidecars on one host.
fn instance_id(grpc_addr: SocketAddr) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", grpc_addr.port())
}

/// The parts of a serving sidecar, owned by the event loop.
struct Serving {
    grpc_addr: SocketAddr,
    actuator_addr: SocketAddr,
    dapr_http_addr: Option<SocketAddr>,
    internal_addr: Option<SocketAddr>,
    status: Arc<StatusRegistry>,
    metrics: Arc<Metrics>,
    supervisor: Option<SupervisorHandle>,
    escalations: mpsc::UnboundedReceiver<Escalation>,
    /// The gRPC server's stop switch and task, once it serves.
    grpc: Option<(watch::Sender<bool>, GrpcTask)>,
    /// The internal listener's, when it is on.
    internal: Option<(watch::Sender<bool>, GrpcTask)>,
    /// Re-reads the mTLS files when they change, when mTLS is on.
    mtls_watch: Option<JoinHandle<()>>,
    /// Applies config changes, when the config came from a file.
    reload: Option<JoinHandle<()>>,
    /// The Dapr HTTP API's stop switch and task, when it is configured.
    dapr_http: Option<(watch::Sender<bool>, JoinHandle<std::io::Result<()>>)>,
    /// Delivery of the app's subscriptions, when it has a callback server.
    subscriptions: Option<Subscriptions>,
    /// Delivery of input binding events, when it has a callback server.
    input_bindings: Option<api::input::InputBindings>,
    http_stop: watch::Sender<bool>,
    http_tasks: Vec<JoinHandle<std::io::Result<()>>>,
    /// Ends the API's streams at shutdown.
    stopping: watch::Sender<bool>,
    /// Answers the calls still running when the grace period is over.
    cut_off: watch::Sender<bool>,
    /// Connections still closing (see `api::linger`).
    lingering: tokio_util::task::TaskTracker,
    grace: Duration,
    /// Notified by the API's shutdown request.
    shutdown_requested: Arc<tokio::sync::Notify>,
    init_timeout: Duration,
}

impl Serving {
    async fn start(mut config: Config, source: Option<ReloadSource>) -> Result<Serving, RuntimeError> {
        let server = &config.server;
        let mtls = server.mtls.as_ref().map(api::mtls::Mtls::load).transpose()?;
        if let Some(addr) = server.internal
            && mtls.is_none()
            && !addr.ip().is_loopback()
        {
            warn!(internal = %addr, "The internal listener is reachable beyond loopback without mTLS: sidecar-to-sidecar calls are plaintext; set [server.mtls]");
        }
        let grpc_listener = match &server.grpc_socket {
            Some(path) => api::grpc::GrpcListener::Unix(bind_unix(path)?),
            None => api::grpc::GrpcListener::Tcp(bind("gRPC", server.grpc).await?),
        };
        let actuator_listener = bind("actuator", server.actuator).await?;
        let dapr_listener = match server.dapr_http {
            Some(addr) => Some((bind("Dapr HTTP", addr).await?, addr)),
            None => None,
        };
        let metrics_listener = match server.metrics {
            Some(addr) => Some(bind("metrics", addr).await?),
            None => None,
        };
        let wasm_listener = match server.wasm {
            Some(addr) => Some(bind("WASM ingress", addr).await?),
            None => None,
        };
        let wasm_admin_listener = match server.wasm_admin {
            Some(addr) => Some(bind("WASM admin", addr).await?),
            None => None,
        };
        let internal_listener = match server.internal {
            Some(addr) => Some(bind("internal", addr).await?),
            None => None,
        };
        let internal_addr = match (&internal_listener, server.internal) {
            (Some(listener), Some(addr)) => Some(local_addr(listener, "internal", addr)?),
            _ => None,
        };
        // What name resolution registers for this sidecar.
        let advertise = internal_addr.map(|addr| {
            let host = std::env::var("DAPR_HOST_IP")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| server.advertise_host.clone())
                .unwrap_or_else(|| {
                    if addr.ip().is_unspecified() {
                        "127.0.0.1".to_owned()
                    } else {
                        addr.ip().to_string()
                    }
                });
            crate::components::name_resolution::join_host_port(&host, addr.port())
        });
        for specs in config.components.values_mut() {
            for spec in specs {
                spec.advertise = advertise.clone();
            }
        }
        let grpc_addr = match &grpc_listener {
            api::grpc::GrpcListener::Tcp(listener) => local_addr(listener, "gRPC", server.grpc)?,
            api::grpc::GrpcListener::Unix(_) => server.grpc,
        };
        let actuator_addr = local_addr(&actuator_listener, "actuator", server.actuator)?;
        let dapr_http_addr = match &dapr_listener {
            Some((listener, addr)) => Some(local_addr(listener, "Dapr HTTP", *addr)?),
            None => None,
        };

        let metrics = Metrics::new();
        let status = StatusRegistry::new(metrics.clone());
        let instance = instance_id(grpc_addr);
        let (escalate, escalations) = mpsc::unbounded_channel();
        let supervisor = SupervisorHandle::start(config.supervisor.clone(), escalate);

        // Secret stores first, as the supervised components they are: other
        // components' metadata may come from them.
        let secret_stores = Slots::new(&config, &status, &instance, |kind| kind == Kind::SecretStore);
        let mut all = Slots::default();
        all.extend(&secret_stores);
        supervisor.start_components(secret_stores).await;
        if secrets::refs::any(&config) {
            await_first_builds(&status, config.supervisor.init_timeout).await;
            let router = all.router();
            if let Err(problems) = resolve_secret_refs(&mut config, &router.secret_stores).await {
                supervisor.stop(config.server.shutdown_grace_period).await;
                return Err(RuntimeError::SecretRefs(problems));
            }
        }
        let rest = Slots::new(&config, &status, &instance, |kind| kind != Kind::SecretStore);
        all.extend(&rest);
        supervisor.start_components(rest).await;
        let router = all.router();
        // Functions have a supervisor of their own: installs add to it.
        let functions_supervisor = supervisor.start_functions(all.functions.clone()).await;
        let functions = api::blocks::wasm::FunctionTable::new(
            functions_supervisor,
            router.functions.handles(),
            status.clone(),
            config.supervisor.queue_capacity,
            instance.clone(),
            config.app.app_id.clone(),
        );

        let (stopping, stopping_rx) = watch::channel(false);
        let (cut_off, cut_off_rx) = watch::channel(false);
        let ctx = Arc::new_cyclic(|this| ApiContext {
            router,
            app: config.app.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            supervisor: supervisor.probe(),
            topic_streams: Default::default(),
            stopping: stopping_rx,
            cut_off: cut_off_rx,
            lingering: Default::default(),
            config_subscriptions: Default::default(),
            extended_metadata: Default::default(),
            shutdown_requested: Default::default(),
            api_token: config.server.api_token.as_deref().map(api::auth::ApiToken::new),
            app_health: watch::channel(None).0,
            invoker: api::blocks::invoke::Invoker::new(&config.app.app_id, mtls.clone()),
            mtls: mtls.clone(),
            app_channel: AppCallback::for_app(&config.app),
            declared_subscriptions: config.subscriptions.clone(),
            active_subscriptions: Default::default(),
            functions,
            lifecycle: Default::default(),
            this: this.clone(),
        });

        let (http_stop, http_stop_rx) = watch::channel(false);
        let mut http_tasks = vec![tokio::spawn(api::actuator::serve(
            ctx.clone(),
            actuator_listener,
            api::conn::ConnLimits::of(&config.server),
            stopped(http_stop_rx.clone()),
        ))];
        if let Some(listener) = wasm_listener {
            http_tasks.push(tokio::spawn(api::wasm::serve_ingress(
                ctx.clone(),
                listener,
                api::conn::ConnLimits::of(&config.server),
                config.server.max_body_size,
                stopped(http_stop_rx.clone()),
            )));
        }
        if let Some(listener) = wasm_admin_listener {
            http_tasks.push(tokio::spawn(api::wasm::serve_admin(
                ctx.clone(),
                listener,
                api::conn::ConnLimits::of(&config.server),
                stopped(http_stop_rx.clone()),
            )));
        }
        if let Some(listener) = metrics_listener {
            http_tasks.push(tokio::spawn(api::actuator::serve_metrics(
                ctx.clone(),
                listener,
                api::conn::ConnLimits::of(&config.server),
                stopped(http_stop_rx),
            )));
        }
        let dapr_http = dapr_listener.map(|(listener, _)| {
            let (stop, stop_rx) = watch::channel(false);
            let limits = api::conn::ConnLimits::of(&config.server);
            let task = tokio::spawn(api::dapr_http::serve(
                ctx.clone(),
                listener,
                limits,
                config.server.max_body_size,
                stopped(stop_rx),
            ));
            (stop, task)
        });

        let mut serving = Serving {
            grpc_addr,
            actuator_addr,
            dapr_http_addr,
            internal_addr,
            status: status.clone(),
            metrics,
            supervisor: Some(supervisor),
            escalations,
            grpc: None,
            internal: None,
            mtls_watch: mtls.map(|mtls| {
                let ctx = Arc::downgrade(&ctx);
                tokio::spawn(mtls.watch(move || {
                    // Connections to other sidecars are made afresh with
                    // the new certificate.
                    if let Some(ctx) = ctx.upgrade() {
                        ctx.invoker.forget_connections();
                    }
                }))
            }),
            dapr_http,
            reload: None,
            subscriptions: None,
            input_bindings: None,
            http_stop,
            http_tasks,
            stopping,
            cut_off,
            lingering: ctx.lingering.clone(),
            grace: config.server.shutdown_grace_period,
            shutdown_requested: ctx.shutdown_requested.clone(),
            init_timeout: config.supervisor.init_timeout,
        };

        await_first_builds(&status, serving.init_timeout).await;
        if config.supervisor.fail_fast {
            let failed: Vec<String> = status
                .components()
                .into_iter()
                .filter(|(_, s)| s.health != Health::Up)
                .map(|(id, s)| format!("{}: {}", id.key(), s.reason))
                .collect();
            if !failed.is_empty() {
                serving.shutdown().await;
                return Err(RuntimeError::StartupFailed(failed));
            }
        }

        let services = match api::grpc::ApiServices::build(&ctx, &config.plugins) {
            Ok(services) => services,
            Err(e) => {
                serving.shutdown().await;
                return Err(e.into());
            }
        };
        let (grpc_stop, grpc_stop_rx) = watch::channel(false);
        let (limits, ctx_for_grpc) = (config.server.clone(), ctx.clone());
        let grpc_task = tokio::spawn(async move {
            api::grpc::serve(ctx_for_grpc, grpc_listener, &limits, services, stopped(grpc_stop_rx)).await
        });
        serving.grpc = Some((grpc_stop, grpc_task));
        if let Some(listener) = internal_listener {
            let (stop, stop_rx) = watch::channel(false);
            let (limits, ctx) = (config.server.clone(), ctx.clone());
            let task =
                tokio::spawn(async move { api::grpc::serve_internal(ctx, listener, &limits, stopped(stop_rx)).await });
            serving.internal = Some((stop, task));
        }
        if ctx.app_channel.is_none() && !ctx.declared_subscriptions.is_empty() {
            warn!(
                subscriptions = ctx.declared_subscriptions.len(),
                "Declarative subscriptions need an app to deliver to (app.port); none is configured"
            );
        }
        serving.input_bindings = ctx
            .app_channel
            .clone()
            .map(|app| api::input::InputBindings::start(ctx.clone(), app));
        serving.subscriptions = ctx
            .app_channel
            .clone()
            .map(|app| Subscriptions::start(ctx.clone(), app));
        if let Some(supervisor) = serving.supervisor.clone() {
            let (applies, applied) = mpsc::unbounded_channel();
            let _ = ctx.lifecycle.set(applies);
            let reloader = reload::Reloader {
                ctx,
                supervisor,
                status: status.clone(),
                current: config.clone(),
                instance: instance.clone(),
                advertise: advertise.clone(),
            };
            serving.reload = Some(tokio::spawn(reloader.run(source, applied)));
        }
        status.set_runtime(Health::Up, "");
        info!(grpc = %grpc_addr, grpc_socket = ?config.server.grpc_socket, actuator = %actuator_addr, dapr_http = ?dapr_http_addr, internal = ?serving.internal_addr, "Layotto is serving");
        Ok(serving)
    }

    /// The next reason the runtime cannot go on.
    async fn failure(&mut self) -> RuntimeError {
        let grpc_ended = async {
            match self.grpc.as_mut() {
                Some((_, task)) => match task.await {
                    Ok(Ok(())) => RuntimeError::Grpc("the server ended".into()),
                    Ok(Err(e)) => RuntimeError::Grpc(e.to_string()),
                    Err(e) => RuntimeError::Grpc(e.to_string()),
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(e) = self.escalations.recv() => RuntimeError::Escalated { component: e.component, reason: e.reason },
            () = self.shutdown_requested.notified() => RuntimeError::ShutdownRequested,
            error = grpc_ended => {
                // Reported once; what is left of the task is nothing.
                self.grpc = None;
                error
            }
        }
    }

    async fn shutdown(mut self) {
        info!(grace = ?self.grace, "Shutting down");
        if let Some(watch) = self.mtls_watch.take() {
            watch.abort();
        }
        if let Some(reload) = self.reload.take() {
            reload.abort();
        }
        self.status.set_runtime(Health::Down, "shutdown");
        let _ = self.stopping.send(true);
        let deadline = Instant::now() + self.grace;

        // Stop intake on both sides at once: no new calls, no new messages;
        // what is in flight has until the deadline.
        let cut_off = &self.cut_off;
        let drain_grpc = drain("gRPC", self.grpc.take(), deadline, cut_off);
        let drain_http = drain("Dapr HTTP", self.dapr_http.take(), deadline, cut_off);
        let drain_internal = drain("internal", self.internal.take(), deadline, cut_off);
        let drain_calls = async {
            tokio::join!(drain_grpc, drain_http, drain_internal);
        };
        let drain_deliveries = async {
            let input_bindings = async {
                if let Some(input) = self.input_bindings.take() {
                    input.stop(deadline).await;
                }
            };
            let subscriptions = async {
                if let Some(subscriptions) = self.subscriptions.take() {
                    subscriptions.stop(deadline).await;
                }
            };
            tokio::join!(input_bindings, subscriptions);
        };
        tokio::join!(drain_calls, drain_deliveries);
        // Connections closed by the drain finish closing (see api::linger).
        self.lingering.close();
        let _ = tokio::time::timeout(api::linger::LINGER, self.lingering.wait()).await;

        if let Some(supervisor) = self.supervisor.take() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // Components get at least a moment to close, even when draining
            // used up the grace period.
            supervisor.stop(remaining.max(Duration::from_secs(1))).await;
        }

        let _ = self.http_stop.send(true);
        for mut task in self.http_tasks.drain(..) {
            if tokio::time::timeout(Duration::from_secs(1), &mut task).await.is_err() {
                warn!("An HTTP listener did not stop in time");
                task.abort();
            }
        }
        info!("Stopped");
    }
}
