//! The supervision tree and the status registry.
//!
//! ```text
//! RootSupervisor                      (actor system thread)
//!  ├── BlockSupervisor<Hellos>        one per building block in use
//!  │    ├── ComponentActor "hello-a"  one arbiter (thread) per component
//!  │    └── ComponentActor "hello-b"
//!  └── BlockSupervisor<...>
//! ```
//!
//! A component actor that stops (build error, failed health check, fatal
//! error, caught panic) is restarted by its block supervisor after an
//! exponential backoff with jitter ([`backoff`]); every transition is
//! written to the [`StatusRegistry`].

pub mod backoff;
mod block;
mod root;
mod status;

pub use root::Escalation;
pub use status::{ComponentId, Health, Snapshot, StatusCell, StatusRegistry};

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use tokio::sync::{mpsc, oneshot};

use crate::actors::{Blocks, Router, Slot};
use crate::components::{BuildingBlock, Hellos, State};
use crate::config::{Config, SupervisorConfig};
use root::{Ping, RootSupervisor, StopTree};

/// Every configured component's slot, by building block. Built before the
/// tree starts, so the router and the registry know every component from
/// the first moment.
pub struct Slots {
    pub hellos: Vec<Arc<Slot<Hellos>>>,
    pub state: Vec<Arc<Slot<State>>>,
}

impl Slots {
    pub fn new(config: &Config, registry: &StatusRegistry) -> Self {
        Slots {
            hellos: slots_of::<Hellos>(config, registry),
            state: slots_of::<State>(config, registry),
        }
    }

    /// The API side's view of the same components.
    pub fn router(&self) -> Router {
        Router {
            hellos: Blocks::new(&self.hellos),
            state: Blocks::new(&self.state),
        }
    }
}

fn slots_of<B: BuildingBlock>(config: &Config, registry: &StatusRegistry) -> Vec<Arc<Slot<B>>> {
    config
        .components_of(B::KIND)
        .iter()
        .map(|spec| {
            let status = registry.register(ComponentId {
                kind: B::KIND,
                name: spec.name.clone(),
                type_name: spec.type_name.clone(),
            });
            let capacity = spec.queue_capacity.unwrap_or(config.supervisor.queue_capacity);
            Slot::new(spec.clone(), status, capacity)
        })
        .collect()
}

/// Asks the root supervisor whether the actor system still answers.
#[derive(Clone)]
pub struct SupervisorProbe(Addr<RootSupervisor>);

impl SupervisorProbe {
    /// Whether the actor system answers within `timeout`.
    pub async fn alive(&self, timeout: Duration) -> bool {
        matches!(tokio::time::timeout(timeout, self.0.send(Ping)).await, Ok(Ok(())))
    }
}

/// Why the supervision tree could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the supervisor: {0}")]
pub struct StartError(String);

/// The running supervision tree, seen from outside the actor system.
pub struct SupervisorHandle {
    root: Addr<RootSupervisor>,
    system: actix_rt::System,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SupervisorHandle {
    /// Starts the actor system on a thread of its own, then the tree.
    /// Escalations (under `fail_fast`) arrive on `escalations`.
    pub async fn start(
        slots: Slots,
        settings: SupervisorConfig,
        escalations: mpsc::UnboundedSender<Escalation>,
    ) -> Result<SupervisorHandle, StartError> {
        let (started, on_started) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("layotto-supervisor".into())
            .spawn(move || {
                let system = actix_rt::System::new();
                let root = system
                    .block_on(async move { actix::Actor::start(RootSupervisor::new(slots, settings, escalations)) });
                if started.send((root, actix_rt::System::current())).is_ok() {
                    // Returns when the system is stopped.
                    let _ = system.run();
                }
            })
            .map_err(|e| StartError(format!("cannot spawn the actor system thread: {e}")))?;
        let (root, system) = on_started
            .await
            .map_err(|_| StartError("the actor system thread exited during start-up".into()))?;
        Ok(SupervisorHandle {
            root,
            system,
            thread: Some(thread),
        })
    }

    /// A probe of the actor system, for the liveness endpoint.
    pub fn probe(&self) -> SupervisorProbe {
        SupervisorProbe(self.root.clone())
    }

    /// Stops every component, children first, then the actor system.
    pub async fn stop(mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.root.send(StopTree)).await;
        self.system.stop();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
