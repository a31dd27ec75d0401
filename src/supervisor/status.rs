//! The one status registry: each component's INIT/UP/DOWN, restart count and
//! time of last change, plus the runtime's own start-up status. The
//! actuator, gRPC health, the Dapr health endpoints and the metrics all
//! read it; only the supervisor writes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::components::Kind;
use crate::metrics::Metrics;

/// Health as the actuator spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Up,
    Init,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "UP",
            Health::Init => "INIT",
            Health::Down => "DOWN",
        }
    }
}

/// Which component a status belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentId {
    pub kind: Kind,
    pub name: String,
    pub type_name: String,
}

impl ComponentId {
    /// `"<kind>/<name>"`: the actuator key and gRPC health service name.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// A point-in-time view of one status.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub health: Health,
    /// Why it is not UP; empty when UP.
    pub reason: String,
    pub restarts: u64,
    /// When `health` last changed.
    pub since: SystemTime,
}

impl Snapshot {
    fn new(health: Health, reason: &str) -> Self {
        Snapshot {
            health,
            reason: reason.to_owned(),
            restarts: 0,
            since: SystemTime::now(),
        }
    }
}

/// The status of one component.
pub struct StatusCell {
    id: ComponentId,
    /// Read on every request, without taking the lock.
    up: AtomicBool,
    state: Mutex<Snapshot>,
    registry: Arc<Shared>,
}

impl StatusCell {
    pub fn id(&self) -> &ComponentId {
        &self.id
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    /// `Ok` when UP, else the reason it is not.
    pub fn check(&self) -> Result<(), String> {
        if self.up.load(Ordering::Acquire) {
            return Ok(());
        }
        let state = self.lock();
        match state.health {
            Health::Up => Ok(()),
            Health::Init => Err(format!("starting ({})", state.reason)),
            Health::Down => Err(state.reason.clone()),
        }
    }

    pub(super) fn set(&self, health: Health, reason: &str) {
        {
            let mut state = self.lock();
            if state.health != health {
                state.since = SystemTime::now();
            }
            state.health = health;
            state.reason = reason.to_owned();
            self.up.store(health == Health::Up, Ordering::Release);
        }
        self.registry
            .metrics
            .set_component_up(self.id.kind, &self.id.name, &self.id.type_name, health == Health::Up);
        self.registry.changed();
    }

    pub(crate) fn count_restart(&self, reason: &'static str) {
        self.lock().restarts += 1;
        self.registry
            .metrics
            .count_component_restart(self.id.kind, &self.id.name, &self.id.type_name, reason);
        self.registry.changed();
    }

    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Shared {
    metrics: Arc<Metrics>,
    changes: watch::Sender<u64>,
}

impl Shared {
    fn changed(&self) {
        self.changes.send_modify(|version| *version += 1);
    }
}

/// Every status in the runtime.
pub struct StatusRegistry {
    shared: Arc<Shared>,
    runtime: Mutex<Snapshot>,
    /// Runtime-level notes shown in readiness, always UP (the last config
    /// reload's outcome), by name.
    notes: Mutex<std::collections::BTreeMap<&'static str, Snapshot>>,
    components: Mutex<Vec<Arc<StatusCell>>>,
}

impl StatusRegistry {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        let (changes, _) = watch::channel(0);
        Arc::new(StatusRegistry {
            shared: Arc::new(Shared { metrics, changes }),
            runtime: Mutex::new(Snapshot::new(Health::Init, "starting")),
            notes: Mutex::new(Default::default()),
            components: Mutex::new(Vec::new()),
        })
    }

    /// Adds a component, INIT until its first build finishes.
    pub fn register(&self, id: ComponentId) -> Arc<StatusCell> {
        let cell = Arc::new(StatusCell {
            id,
            up: AtomicBool::new(false),
            state: Mutex::new(Snapshot::new(Health::Init, "starting")),
            registry: self.shared.clone(),
        });
        self.shared
            .metrics
            .component_registered(cell.id.kind, &cell.id.name, &cell.id.type_name);
        lock(&self.components).push(cell.clone());
        self.shared.changed();
        cell
    }

    /// Removes a component (an uninstalled function): it leaves readiness,
    /// the actuator and the component gauge.
    pub fn unregister(&self, cell: &Arc<StatusCell>) {
        lock(&self.components).retain(|c| !Arc::ptr_eq(c, cell));
        self.shared
            .metrics
            .component_removed(cell.id.kind, &cell.id.name, &cell.id.type_name);
        self.shared.changed();
    }

    /// Every component with its current status, in registration order.
    pub fn components(&self) -> Vec<(ComponentId, Snapshot)> {
        lock(&self.components)
            .iter()
            .map(|cell| (cell.id.clone(), cell.snapshot()))
            .collect()
    }

    /// The runtime's own status (`runtime_startup`): INIT while starting,
    /// UP once serving, DOWN while shutting down.
    pub fn runtime(&self) -> Snapshot {
        lock(&self.runtime).clone()
    }

    pub fn set_runtime(&self, health: Health, reason: &str) {
        {
            let mut state = lock(&self.runtime);
            if state.health != health {
                state.since = SystemTime::now();
            }
            state.health = health;
            state.reason = reason.to_owned();
        }
        self.shared.changed();
    }

    /// Sets a note shown in readiness under `name`: informative, it never
    /// makes the sidecar unready.
    pub fn set_note(&self, name: &'static str, reason: &str) {
        lock(&self.notes).insert(name, Snapshot::new(Health::Up, reason));
        self.shared.changed();
    }

    /// The notes, by name.
    pub fn notes(&self) -> Vec<(&'static str, Snapshot)> {
        lock(&self.notes).iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// Ready means the runtime serves and every component is UP.
    pub fn ready(&self) -> bool {
        self.runtime().health == Health::Up && self.components().iter().all(|(_, s)| s.health == Health::Up)
    }

    /// Wakes on every status change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
