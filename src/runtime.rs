//! Puts the sidecar together: listeners, supervision tree, API servers; and
//! takes it apart again in order.
//!
//! Start-up: bind every listener (a taken port fails at once), serve the
//! actuator (readiness shows start-up progress), start the supervision tree,
//! wait up to `init_timeout` for each component's first build, serve gRPC,
//! mark `runtime_startup` UP.
//!
//! Shutdown: mark `runtime_startup` DOWN (readiness fails, load balancers
//! stop sending), stop accepting gRPC connections, let calls in flight
//! finish within the grace period, stop the supervision tree children
//! first, then stop the HTTP listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::api::{self, ApiContext};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::supervisor::{Escalation, Health, Slots, StartError, StatusRegistry, SupervisorHandle};

/// Why the runtime could not start, or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot listen on the {what} address {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Supervisor(#[from] StartError),
    #[error("components failed to start and supervisor.fail_fast is on: {}", .0.join("; "))]
    StartupFailed(Vec<String>),
    #[error("component {component} exceeded its restart intensity and supervisor.fail_fast is on: {reason}")]
    Escalated { component: String, reason: String },
    #[error("the gRPC server stopped: {0}")]
    Grpc(String),
}

type GrpcTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// A running sidecar.
pub struct Runtime {
    grpc_addr: SocketAddr,
    actuator_addr: SocketAddr,
    dapr_http_addr: Option<SocketAddr>,
    status: Arc<StatusRegistry>,
    metrics: Arc<Metrics>,
    supervisor: Option<SupervisorHandle>,
    escalations: mpsc::UnboundedReceiver<Escalation>,
    /// The gRPC server's stop switch and task, once it serves.
    grpc: Option<(watch::Sender<bool>, GrpcTask)>,
    http_stop: watch::Sender<bool>,
    http_tasks: Vec<JoinHandle<std::io::Result<()>>>,
    grace: Duration,
    init_timeout: Duration,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RuntimeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind { what, addr, source })
}

fn local_addr(listener: &TcpListener, what: &'static str, addr: SocketAddr) -> Result<SocketAddr, RuntimeError> {
    listener
        .local_addr()
        .map_err(|source| RuntimeError::Bind { what, addr, source })
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

impl Runtime {
    /// Starts a sidecar from a validated config. Addresses with port 0 get a
    /// free port; see [`Runtime::grpc_addr`] and friends.
    pub async fn start(config: Config) -> Result<Runtime, RuntimeError> {
        let server = &config.server;
        let grpc_listener = bind("gRPC", server.grpc).await?;
        let actuator_listener = bind("actuator", server.actuator).await?;
        let dapr_listener = match server.dapr_http {
            Some(addr) => Some((bind("Dapr HTTP", addr).await?, addr)),
            None => None,
        };
        let grpc_addr = local_addr(&grpc_listener, "gRPC", server.grpc)?;
        let actuator_addr = local_addr(&actuator_listener, "actuator", server.actuator)?;
        let dapr_http_addr = match &dapr_listener {
            Some((listener, addr)) => Some(local_addr(listener, "Dapr HTTP", *addr)?),
            None => None,
        };

        let metrics = Metrics::new();
        let status = StatusRegistry::new(metrics.clone());
        let slots = Slots::new(&config, &status);
        let router = slots.router();
        let (escalate, escalations) = mpsc::unbounded_channel();
        let supervisor = SupervisorHandle::start(slots, config.supervisor.clone(), escalate).await?;

        let ctx = Arc::new(ApiContext {
            router,
            app: config.app.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            supervisor: supervisor.probe(),
        });

        let (http_stop, http_stop_rx) = watch::channel(false);
        let mut http_tasks = vec![tokio::spawn(api::actuator::serve(
            ctx.clone(),
            actuator_listener,
            stopped(http_stop_rx.clone()),
        ))];
        if let Some((listener, _)) = dapr_listener {
            http_tasks.push(tokio::spawn(api::dapr_http::serve(
                ctx.clone(),
                listener,
                stopped(http_stop_rx),
            )));
        }

        let mut runtime = Runtime {
            grpc_addr,
            actuator_addr,
            dapr_http_addr,
            status: status.clone(),
            metrics,
            supervisor: Some(supervisor),
            escalations,
            grpc: None,
            http_stop,
            http_tasks,
            grace: config.server.shutdown_grace_period,
            init_timeout: config.supervisor.init_timeout,
        };

        runtime.await_first_builds().await;
        if config.supervisor.fail_fast {
            let failed: Vec<String> = status
                .components()
                .into_iter()
                .filter(|(_, s)| s.health != Health::Up)
                .map(|(id, s)| format!("{}: {}", id.key(), s.reason))
                .collect();
            if !failed.is_empty() {
                runtime.shutdown().await;
                return Err(RuntimeError::StartupFailed(failed));
            }
        }

        let (grpc_stop, grpc_stop_rx) = watch::channel(false);
        let grpc_task = tokio::spawn(api::grpc::serve(ctx, grpc_listener, stopped(grpc_stop_rx)));
        runtime.grpc = Some((grpc_stop, grpc_task));
        status.set_runtime(Health::Up, "");
        info!(grpc = %grpc_addr, actuator = %actuator_addr, dapr_http = ?dapr_http_addr, "Layotto is serving");
        Ok(runtime)
    }

    /// Waits until every component has finished its first build (UP or
    /// DOWN), or the init timeout passes.
    async fn await_first_builds(&self) {
        // The build itself is bounded by init_timeout; allow for the report.
        let deadline = Instant::now() + self.init_timeout + Duration::from_secs(1);
        let mut changes = self.status.subscribe();
        while self.status.components().iter().any(|(_, s)| s.health == Health::Init) {
            if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                warn!("Some components are still starting; serving anyway");
                return;
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

    pub fn status(&self) -> &Arc<StatusRegistry> {
        &self.status
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Resolves when the runtime cannot go on: an escalation under
    /// `fail_fast`, or the gRPC server failing.
    pub async fn failed(&mut self) -> RuntimeError {
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
            error = grpc_ended => error,
        }
    }

    /// Stops the sidecar gracefully (see the module docs).
    pub async fn shutdown(mut self) {
        info!(grace = ?self.grace, "Shutting down");
        self.status.set_runtime(Health::Down, "shutdown");
        let deadline = Instant::now() + self.grace;

        if let Some((stop, mut task)) = self.grpc.take() {
            let _ = stop.send(true);
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                warn!("Calls still in flight after the grace period; cutting them off");
                task.abort();
            }
        }

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
