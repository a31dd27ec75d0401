//! The supervisor of one building block: it starts one actor per configured
//! component and restarts an actor that stops, after a backoff, with a
//! freshly built component.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::join_all;
use tracing::{error, info, warn};

use super::StopReason;
use super::backoff::{RestartHistory, RestartPolicy};
use super::root::Escalation;
use super::status::Health;
use crate::actors::{ChildEvent, ComponentActor, HostSettings, Reconfigure, Shutdown, Slot};
use crate::components::ComponentSpec;
use crate::components::{BuildingBlock, TypeEntry};
use crate::config::SupervisorConfig;

/// How long a component may take to close at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

struct Child<B: BuildingBlock> {
    slot: Arc<Slot<B>>,
    entry: &'static TypeEntry<B::Component>,
    generation: u64,
    history: RestartHistory,
    pending_restart: Option<SpawnHandle>,
    /// Why the current actor's predecessor stopped, for the restart count.
    last_stop: Option<&'static str>,
}

pub struct BlockSupervisor<B: BuildingBlock> {
    children: BTreeMap<String, Child<B>>,
    settings: SupervisorConfig,
    policy: RestartPolicy,
    escalate: Recipient<Escalation>,
    stopping: bool,
    /// The last actor generation handed out.
    next_generation: u64,
}

impl<B: BuildingBlock> BlockSupervisor<B> {
    /// Prepares one child per slot. A slot whose type is missing from the
    /// registry cannot get here: config validation rejects it.
    pub fn new(slots: &[Arc<Slot<B>>], settings: SupervisorConfig, escalate: Recipient<Escalation>) -> Self {
        let children = slots
            .iter()
            .filter_map(|slot| {
                let entry = B::entry(&slot.spec().type_name)?;
                let child = Child {
                    slot: slot.clone(),
                    entry,
                    generation: 0,
                    history: RestartHistory::default(),
                    pending_restart: None,
                    last_stop: None,
                };
                Some((slot.spec().name.clone(), child))
            })
            .collect();
        BlockSupervisor {
            children,
            policy: RestartPolicy::from(&settings),
            settings,
            escalate,
            stopping: false,
            next_generation: 0,
        }
    }

    fn start_child(&mut self, name: &str, ctx: &mut Context<Self>) {
        let supervisor = ctx.address().recipient();
        let Some(child) = self.children.get_mut(name) else {
            return;
        };
        child.pending_restart = None;
        // Unique across this block's children: a replaced child's late
        // events never match its successor under the same name.
        self.next_generation += 1;
        child.generation = self.next_generation;
        let (spec, entry, generation) = (child.slot.spec(), child.entry, child.generation);
        let settings = HostSettings::new(&self.settings, child.slot.capacity());
        let retained = child.slot.retained.clone();
        let addr = ComponentActor::<B>::new(spec, entry, settings, generation, supervisor, retained).start();
        child.slot.set_actor(Some(addr));
    }

    fn child_stopped(&mut self, name: &str, reason: StopReason, ctx: &mut Context<Self>) {
        let Some(child) = self.children.get_mut(name) else {
            return;
        };
        let key = child.slot.status.id().key();
        child.slot.set_actor(None);
        if self.stopping {
            child.slot.status.set(Health::Down, "shutdown");
            return;
        }
        child.last_stop = Some(reason.label());
        let mut restart = child.history.next(&self.policy, Instant::now(), &mut rand::rng());
        if reason.backend_unreachable() {
            // The backend is unreachable (the build failed, or a component
            // built lazily found it gone): probe it at a short fixed
            // interval, so the component is UP soon after the backend's
            // return however long the outage. A component that misbehaves
            // by itself (a panic, an ended background task: a crash loop)
            // keeps backing off.
            restart.delay = restart.delay.min(self.settings.probe_interval);
        }
        let mut status = format!("{reason}; restarting in {:?}", restart.delay);
        if restart.intensity_exceeded {
            error!(
                component = %key,
                restarts = child.history.recent(),
                window = ?self.policy.window,
                %reason,
                "Component exceeded its restart intensity"
            );
            status = format!(
                "{reason}; more than {} restarts in {:?}, restarting in {:?}",
                self.policy.max_restarts, self.policy.window, restart.delay
            );
            if self.settings.fail_fast {
                self.escalate.do_send(Escalation {
                    component: key.clone(),
                    reason: reason.to_string(),
                });
            }
        } else {
            warn!(component = %key, %reason, delay = ?restart.delay, "Restarting component");
        }
        child.slot.status.set(Health::Down, &status);
        let name = name.to_owned();
        child.pending_restart = Some(ctx.run_later(restart.delay, move |act, ctx| {
            if act.stopping {
                return;
            }
            if let Some(child) = act.children.get(&name) {
                child
                    .slot
                    .status
                    .count_restart(child.last_stop.unwrap_or(StopReason::Shutdown.label()));
            }
            act.start_child(&name, ctx);
        }));
    }
}

impl<B: BuildingBlock> Actor for BlockSupervisor<B> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let names: Vec<String> = self.children.keys().cloned().collect();
        for name in names {
            self.start_child(&name, ctx);
        }
        info!(kind = %B::KIND, components = self.children.len(), "Building block supervisor started");
    }
}

impl<B: BuildingBlock> Handler<ChildEvent> for BlockSupervisor<B> {
    type Result = ();

    fn handle(&mut self, event: ChildEvent, ctx: &mut Context<Self>) {
        match event {
            ChildEvent::Up { name, generation } => {
                if let Some(child) = self.children.get(&name).filter(|c| c.generation == generation) {
                    child.slot.status.set(Health::Up, "");
                }
            }
            ChildEvent::Stopped {
                name,
                generation,
                reason,
            } => {
                let current = self.children.get(&name).is_some_and(|c| c.generation == generation);
                if current {
                    self.child_stopped(&name, reason, ctx);
                }
            }
        }
    }
}

/// Adds a component at run time (an installed function, a reload) and
/// starts it. A child of the same name is forgotten without being stopped:
/// whoever replaces it stops its actor once requests have moved.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddChild<B: BuildingBlock>(pub Arc<Slot<B>>);

impl<B: BuildingBlock> Handler<AddChild<B>> for BlockSupervisor<B> {
    type Result = ();

    fn handle(&mut self, AddChild(slot): AddChild<B>, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let Some(entry) = B::entry(&slot.spec().type_name) else {
            slot.status.set(Health::Down, "unknown component type");
            return;
        };
        let name = slot.spec().name.clone();
        if let Some(handle) = self.children.get_mut(&name).and_then(|old| old.pending_restart.take()) {
            ctx.cancel_future(handle);
        }
        self.children.insert(
            name.clone(),
            Child {
                slot,
                entry,
                generation: 0,
                history: RestartHistory::default(),
                pending_restart: None,
                last_stop: None,
            },
        );
        self.start_child(&name, ctx);
    }
}

/// Stops a component for good (an uninstalled function) and forgets it;
/// answers once it has closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveChild(pub String);

impl<B: BuildingBlock> Handler<RemoveChild> for BlockSupervisor<B> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, RemoveChild(name): RemoveChild, ctx: &mut Context<Self>) -> Self::Result {
        let Some(mut child) = self.children.remove(&name) else {
            return Box::pin(async {});
        };
        if let Some(handle) = child.pending_restart.take() {
            ctx.cancel_future(handle);
        }
        let actor = child.slot.actor();
        child.slot.set_actor(None);
        child.slot.status.set(Health::Down, "removed");
        Box::pin(async move {
            if let Some(addr) = actor {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, addr.send(Shutdown)).await;
            }
        })
    }
}

/// Gives a running component new settings (a reload): a component that is
/// UP is rebuilt make-before-break by its actor (see [`Reconfigure`]); one
/// that is not serving is restarted with them at once. Answers whether the
/// new settings took; when they did not, the old ones stay.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct ReconfigureChild(pub Arc<ComponentSpec>);

impl<B: BuildingBlock> Handler<ReconfigureChild> for BlockSupervisor<B> {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, ReconfigureChild(spec): ReconfigureChild, ctx: &mut Context<Self>) -> Self::Result {
        let refused = |reason: String| -> Self::Result { Box::pin(actix::fut::ready(Err(reason))) };
        if self.stopping {
            return refused("the sidecar is stopping".into());
        }
        let Some(entry) = B::entry(&spec.type_name) else {
            return refused(format!("unknown {} type '{}'", B::KIND, spec.type_name));
        };
        let name = spec.name.clone();
        let Some(child) = self.children.get_mut(&name) else {
            return refused(format!("{}/{name} is not running", B::KIND));
        };
        let old = child.slot.spec();
        let actor = child.slot.actor().filter(|_| child.slot.status.check().is_ok());
        let Some(actor) = actor else {
            // Not serving: nothing to keep up; start over with the new
            // settings now.
            child.slot.set_spec(spec);
            child.entry = entry;
            child.history = RestartHistory::default();
            if let Some(handle) = child.pending_restart.take() {
                ctx.cancel_future(handle);
            }
            let previous = child.slot.actor();
            // The old actor's stop event is ignored: the generation moves on.
            self.start_child(&name, ctx);
            if let Some(previous) = previous {
                previous.do_send(Shutdown);
            }
            return Box::pin(actix::fut::ready(Ok(())));
        };
        let reconfigured = actor.send(Reconfigure::<B> {
            spec: spec.clone(),
            entry,
        });
        Box::pin(reconfigured.into_actor(self).map(move |answer, act, _ctx| {
            let answer = answer.unwrap_or_else(|_| Err("the component stopped during the rebuild".into()));
            if let Some(child) = act.children.get_mut(&name) {
                match &answer {
                    Ok(()) => {
                        child.slot.set_spec(spec);
                        child.entry = entry;
                    }
                    Err(_) => child.slot.set_spec(old),
                }
            }
            answer
        }))
    }
}

/// Stops every child (closing its component), then the supervisor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopBlock;

impl<B: BuildingBlock> Handler<StopBlock> for BlockSupervisor<B> {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StopBlock, ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        let mut stops = Vec::new();
        for child in self.children.values_mut() {
            if let Some(handle) = child.pending_restart.take() {
                ctx.cancel_future(handle);
            }
            if let Some(addr) = child.slot.actor() {
                stops.push(async move {
                    // A stuck close must not hold up the whole shutdown.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, addr.send(Shutdown)).await;
                });
            }
            child.slot.status.set(Health::Down, "shutdown");
        }
        Box::pin(join_all(stops).into_actor(self).map(|_, act, ctx| {
            for child in act.children.values() {
                child.slot.set_actor(None);
            }
            ctx.stop();
        }))
    }
}
