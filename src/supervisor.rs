//! The supervision tree and the status registry.
//!
//! ```text
//! RootSupervisor                      all on the runtime's event loop
//!  ├── BlockSupervisor<Hellos>        one per building block in use
//!  │    ├── ComponentActor "hello-a"  one per component instance
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
mod reason;
mod root;
mod status;

pub use reason::StopReason;
pub use root::Escalation;
pub use status::{ComponentId, Health, Snapshot, StatusCell, StatusRegistry};

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use tokio::sync::mpsc;

use crate::actors::{Blocks, Router, Slot};
use crate::components::{BuildingBlock, ConfigStores, Hellos, Locks, PubSubs, SecretStores, Sequencers, State};
use crate::config::{Config, SupervisorConfig};
use root::{Ping, RootSupervisor, StopTree};

/// Every configured component's slot, by building block. Built before the
/// tree starts, so the router and the registry know every component from
/// the first moment.
pub struct Slots {
    pub secret_stores: Vec<Arc<Slot<SecretStores>>>,
    pub config_stores: Vec<Arc<Slot<ConfigStores>>>,
    pub hellos: Vec<Arc<Slot<Hellos>>>,
    pub state: Vec<Arc<Slot<State>>>,
    pub pubsubs: Vec<Arc<Slot<PubSubs>>>,
    pub locks: Vec<Arc<Slot<Locks>>>,
    pub sequencers: Vec<Arc<Slot<Sequencers>>>,
}

impl Slots {
    /// `instance_id` names this sidecar to backends it shares with others.
    pub fn new(config: &Config, registry: &StatusRegistry, instance_id: &str) -> Self {
        Slots {
            secret_stores: slots_of::<SecretStores>(config, registry, instance_id),
            config_stores: slots_of::<ConfigStores>(config, registry, instance_id),
            hellos: slots_of::<Hellos>(config, registry, instance_id),
            state: slots_of::<State>(config, registry, instance_id),
            pubsubs: slots_of::<PubSubs>(config, registry, instance_id),
            locks: slots_of::<Locks>(config, registry, instance_id),
            sequencers: slots_of::<Sequencers>(config, registry, instance_id),
        }
    }

    /// The API side's view of the same components.
    pub fn router(&self) -> Router {
        Router {
            hellos: Blocks::new(&self.hellos),
            state: Blocks::new(&self.state),
            pubsubs: Blocks::new(&self.pubsubs),
            locks: Blocks::new(&self.locks),
            sequencers: Blocks::new(&self.sequencers),
            secret_stores: Blocks::new(&self.secret_stores),
            config_stores: Blocks::new(&self.config_stores),
        }
    }
}

fn slots_of<B: BuildingBlock>(config: &Config, registry: &StatusRegistry, instance_id: &str) -> Vec<Arc<Slot<B>>> {
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
            let mut spec = spec.clone();
            spec.instance_id = instance_id.to_owned();
            Slot::new(spec, status, capacity)
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

/// The running supervision tree.
pub struct SupervisorHandle {
    root: Addr<RootSupervisor>,
}

impl SupervisorHandle {
    /// Starts the tree on the current actix arbiter: the runtime's event
    /// loop. Escalations (under `fail_fast`) arrive on `escalations`.
    pub fn start(
        slots: Slots,
        settings: SupervisorConfig,
        escalations: mpsc::UnboundedSender<Escalation>,
    ) -> SupervisorHandle {
        let root = actix::Actor::start(RootSupervisor::new(slots, settings, escalations));
        SupervisorHandle { root }
    }

    /// A probe of the actor system, for the liveness endpoint.
    pub fn probe(&self) -> SupervisorProbe {
        SupervisorProbe(self.root.clone())
    }

    /// Stops every component, children first.
    pub async fn stop(self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.root.send(StopTree)).await;
    }
}
