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

pub use block::{AddChild, BlockSupervisor, ReconfigureChild, RemoveChild};
pub use reason::StopReason;
pub use root::Escalation;
pub use status::{ComponentId, Health, Snapshot, StatusCell, StatusRegistry};

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use tokio::sync::mpsc;

use crate::actors::{Blocks, Router, Slot};
use crate::components::{BuildingBlock, ComponentSpec, Kind};
use crate::config::{Config, SupervisorConfig};
use root::{BlockOf, Ping, RootSupervisor, StartBlocks, StartDynamicBlock, StopTree};

macro_rules! slots {
    ($(($block:ident, $field:ident)),*) => {
        /// Configured components' slots, by building block (one field per
        /// row of the block table). Built before their supervisors start, so
        /// the router and the registry know every component from the first
        /// moment.
        #[derive(Default)]
        pub struct Slots {
            $(pub $field: Vec<Arc<Slot<crate::components::$block>>>,)*
        }

        impl Slots {
            /// The slots of the components of `config` whose kind `wanted`
            /// accepts; `instance_id` names this sidecar to backends it
            /// shares with others.
            pub fn new(
                config: &Config,
                registry: &StatusRegistry,
                instance_id: &str,
                wanted: impl Fn(Kind) -> bool,
            ) -> Self {
                Slots {
                    $($field: if wanted(<crate::components::$block as BuildingBlock>::KIND) {
                        slots_of::<crate::components::$block>(config, registry, instance_id)
                    } else {
                        Vec::new()
                    },)*
                }
            }

            /// Adds `other`'s slots to these.
            pub fn extend(&mut self, other: &Slots) {
                $(self.$field.extend(other.$field.iter().cloned());)*
            }

            /// The API side's view of the same components.
            pub fn router(&self) -> Router {
                Router {
                    $($field: Blocks::new(&self.$field),)*
                }
            }

            /// Starts one supervisor per block with components, in the
            /// table's order.
            fn start_blocks(&self, root: &mut RootSupervisor, ctx: &mut actix::Context<RootSupervisor>) {
                $(root.start_block(&self.$field, ctx);)*
            }
        }
    };
}

with_blocks!(slots);

fn slots_of<B: BuildingBlock>(config: &Config, registry: &StatusRegistry, instance_id: &str) -> Vec<Arc<Slot<B>>> {
    config
        .components_of(B::KIND)
        .iter()
        .map(|spec| slot_for(spec, config.supervisor.queue_capacity, registry, instance_id))
        .collect()
}

/// The slot of one component, registered with the status registry; for
/// components added at run time as for configured ones.
pub fn slot_for<B: BuildingBlock>(
    spec: &ComponentSpec,
    default_capacity: usize,
    registry: &StatusRegistry,
    instance_id: &str,
) -> Arc<Slot<B>> {
    let status = registry.register(ComponentId {
        kind: B::KIND,
        name: spec.name.clone(),
        type_name: spec.type_name.clone(),
    });
    let capacity = spec.queue_capacity.unwrap_or(default_capacity);
    let mut spec = spec.clone();
    spec.instance_id = instance_id.to_owned();
    Slot::new(spec, status, capacity)
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
#[derive(Clone)]
pub struct SupervisorHandle {
    root: Addr<RootSupervisor>,
}

impl SupervisorHandle {
    /// Starts the tree, with no components yet, on the current actix
    /// arbiter: the runtime's event loop. Escalations (under `fail_fast`)
    /// arrive on `escalations`.
    pub fn start(settings: SupervisorConfig, escalations: mpsc::UnboundedSender<Escalation>) -> SupervisorHandle {
        let root = actix::Actor::start(RootSupervisor::new(settings, escalations));
        SupervisorHandle { root }
    }

    /// Starts a supervisor for each block with components in `slots`.
    /// Blocks started earlier stop later at shutdown.
    pub async fn start_components(&self, slots: Slots) {
        let _ = self.root.send(StartBlocks(slots)).await;
    }

    /// Starts the supervisor of the functions (configured ones in
    /// `slots`); installs and uninstalls go to it.
    pub async fn start_functions(
        &self,
        slots: Vec<Arc<Slot<crate::components::Functions>>>,
    ) -> Option<Addr<BlockSupervisor<crate::components::Functions>>> {
        self.root.send(StartDynamicBlock(slots)).await.ok()
    }

    /// The supervisor of block `B`, started now if the block had no
    /// components yet.
    pub async fn block<B: BuildingBlock>(&self) -> Option<Addr<BlockSupervisor<B>>> {
        self.root.send(BlockOf::<B>(std::marker::PhantomData)).await.ok()
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

#[cfg(test)]
mod tests;
