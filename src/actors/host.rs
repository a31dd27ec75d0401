//! The actor that hosts one component instance.
//!
//! It builds its backend client when it starts (every start, so a restart
//! never reuses a dead connection), runs a periodic health check, and
//! serves operations as concurrent tasks. It stops on a build error, on
//! failed health checks, on an error the component marks fatal, and on a
//! panic caught at its boundary; its supervisor is told why and restarts it.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use actix::prelude::*;
use futures::FutureExt;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{Instrument, Span, debug, info, warn};

use super::Operation;
use super::handle::{CallError, Permit};
use crate::components::tasks::{TaskEnded, Tasks};
use crate::components::{BuildContext, BuildingBlock, Component, ComponentError, ComponentSpec, Retained, TypeEntry};
use crate::config::SupervisorConfig;
use crate::supervisor::StopReason;

/// What a component actor tells its supervisor.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum ChildEvent {
    /// The build succeeded; the component serves.
    Up { name: String, generation: u64 },
    /// The actor stopped, and why.
    Stopped {
        name: String,
        generation: u64,
        reason: StopReason,
    },
}

/// Settings the supervisor hands each actor it starts.
#[derive(Clone, Debug)]
pub struct HostSettings {
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub health_failure_threshold: u32,
    /// A build that takes longer has failed.
    pub build_timeout: Duration,
    pub queue_capacity: usize,
}

impl HostSettings {
    pub fn new(config: &SupervisorConfig, queue_capacity: usize) -> Self {
        HostSettings {
            health_interval: config.health_interval,
            health_timeout: config.health_timeout,
            health_failure_threshold: config.health_failure_threshold,
            build_timeout: config.init_timeout,
            queue_capacity,
        }
    }
}

pub struct ComponentActor<B: BuildingBlock> {
    spec: Arc<ComponentSpec>,
    entry: &'static TypeEntry<B::Component>,
    settings: HostSettings,
    /// Distinguishes this start from earlier ones, so the supervisor can
    /// ignore a late event from an actor it already replaced.
    generation: u64,
    supervisor: Recipient<ChildEvent>,
    component: Option<Arc<B::Component>>,
    /// `"<kind>/<name>"`, for errors and logs.
    key: Arc<str>,
    /// Background work the component linked to this actor.
    tasks: Option<Tasks>,
    /// What the component keeps across restarts, from its slot.
    retained: Retained,
    health_failures: u32,
    health_in_flight: bool,
    /// When the last health check started.
    health_started: Option<Instant>,
    /// Operations handed a task of their own (those that did not answer on
    /// their first poll), and how many of them have finished: the stall
    /// watch compares the two.
    spawned: u64,
    finished: Arc<AtomicU64>,
    /// Whether a stall watch tick is scheduled.
    stall_watch: bool,
    stop_reason: Option<StopReason>,
    /// Turns true when the actor stops because its backend is unreachable:
    /// the operations still running answer UNAVAILABLE at once rather than
    /// wait for the client's own timeouts (a connection pool's acquire
    /// timeout, a broker's ack timeout) against a backend that is gone.
    abandon: watch::Sender<Option<String>>,
    span: Span,
}

impl<B: BuildingBlock> ComponentActor<B> {
    pub fn new(
        spec: Arc<ComponentSpec>,
        entry: &'static TypeEntry<B::Component>,
        settings: HostSettings,
        generation: u64,
        supervisor: Recipient<ChildEvent>,
        retained: Retained,
    ) -> Self {
        let span = tracing::info_span!(
            "component",
            kind = %B::KIND,
            name = %spec.name,
            r#type = %spec.type_name,
        );
        let key = format!("{}/{}", B::KIND, spec.name).into();
        ComponentActor {
            spec,
            entry,
            settings,
            generation,
            supervisor,
            component: None,
            key,
            tasks: None,
            retained,
            health_failures: 0,
            health_in_flight: false,
            health_started: None,
            spawned: 0,
            finished: Arc::new(AtomicU64::new(0)),
            stall_watch: false,
            stop_reason: None,
            abandon: watch::channel(None).0,
            span,
        }
    }

    /// Stops the actor, keeping the first reason given.
    fn stop_because(&mut self, ctx: &mut Context<Self>, reason: StopReason) {
        if reason.backend_unreachable() && self.abandon.borrow().is_none() {
            self.abandon.send_replace(Some(reason.to_string()));
        }
        if self.stop_reason.is_none() {
            self.stop_reason = Some(reason);
        }
        ctx.stop();
    }

    fn check_health(&mut self, ctx: &mut Context<Self>) {
        let Some(component) = self.component.clone() else {
            return;
        };
        if self.health_in_flight {
            return;
        }
        self.health_in_flight = true;
        self.health_started = Some(Instant::now());
        let timeout = self.settings.health_timeout;
        let check = async move {
            let guarded = AssertUnwindSafe(component.health_check()).catch_unwind();
            match tokio::time::timeout(timeout, guarded).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(e.to_string()),
                Ok(Err(panic)) => Err(format!("health check panicked: {}", panic_message(&*panic))),
                Err(_) => Err(format!("health check timed out after {timeout:?}")),
            }
        };
        ctx.spawn(
            check
                .instrument(self.span.clone())
                .into_actor(self)
                .map(|result, act, ctx| {
                    act.health_in_flight = false;
                    let _span = act.span.clone().entered();
                    match result {
                        Ok(()) => act.health_failures = 0,
                        Err(error) => {
                            act.health_failures += 1;
                            warn!(%error, failures = act.health_failures, "Component health check failed");
                            if act.health_failures >= act.settings.health_failure_threshold {
                                act.stop_because(ctx, StopReason::HealthCheckFailed(error));
                            }
                        }
                    }
                }),
        );
    }

    /// Watches the operations running in tasks of their own while there are
    /// any: `mark` is how many had been started when this tick was
    /// scheduled. Fewer finished than that means one of them has waited a
    /// whole tick, so the backend's health is checked now.
    fn watch_stalls(&mut self, ctx: &mut Context<Self>, mark: u64) {
        if self.stop_reason.is_some() {
            self.stall_watch = false;
            return;
        }
        let finished = self.finished.load(Ordering::Acquire);
        let checked_lately = self
            .health_started
            .is_some_and(|started| started.elapsed() < STALL_CHECK_GAP);
        if finished < mark && !checked_lately {
            debug!(
                waiting = mark - finished,
                "Calls stalled on the backend; checking its health"
            );
            self.check_health(ctx);
        }
        if finished < self.spawned {
            let mark = self.spawned;
            ctx.run_later(STALL_TICK, move |act, ctx| act.watch_stalls(ctx, mark));
        } else {
            self.stall_watch = false;
        }
    }
}

impl<B: BuildingBlock> Actor for ComponentActor<B> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        ctx.set_mailbox_capacity(self.settings.queue_capacity);
        debug!(generation = self.generation, "Building component");
        let (tasks, ended) = Tasks::new();
        self.tasks = Some(tasks.clone());
        // A task of its own waits for a linked task's end, rather than a
        // stream on the actor's context: the context polls its streams on
        // every message, and this one almost never has anything to say.
        let actor = ctx.address().downgrade();
        let mut ended = ended;
        actix_rt::spawn(async move {
            if let Some(ended) = ended.recv().await
                && let Some(actor) = actor.upgrade()
            {
                actor.do_send(LinkedTaskEnded(ended));
            }
        });
        let build = (self.entry.build)(BuildContext {
            spec: (*self.spec).clone(),
            tasks,
            retained: self.retained.clone(),
        });
        let timeout = self.settings.build_timeout;
        let build = async move {
            match tokio::time::timeout(timeout, AssertUnwindSafe(build).catch_unwind()).await {
                Ok(Ok(Ok(component))) => Ok(component),
                Ok(Ok(Err(e))) => Err(e.to_string()),
                Ok(Err(panic)) => Err(format!("panicked: {}", panic_message(&*panic))),
                Err(_) => Err(format!("timed out after {timeout:?}")),
            }
        };
        ctx.spawn(
            build
                .instrument(self.span.clone())
                .into_actor(self)
                .map(|result, act, ctx| {
                    let _span = act.span.clone().entered();
                    match result {
                        Ok(component) => {
                            info!(generation = act.generation, "Component up");
                            act.component = Some(component);
                            act.supervisor.do_send(ChildEvent::Up {
                                name: act.spec.name.clone(),
                                generation: act.generation,
                            });
                            ctx.run_interval(act.settings.health_interval, Self::check_health);
                        }
                        Err(error) => {
                            warn!(%error, "Component failed to start");
                            act.stop_because(ctx, StopReason::BuildFailed(error));
                        }
                    }
                }),
        );
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        let reason = self.stop_reason.take().unwrap_or(StopReason::Shutdown);
        info!(%reason, "Component stopped");
        if let Some(tasks) = self.tasks.take() {
            tasks.abort_all();
        }
        if let Some(component) = self.component.take() {
            actix_rt::spawn(async move { component.close().await }.instrument(self.span.clone()));
        }
        self.supervisor.do_send(ChildEvent::Stopped {
            name: self.spec.name.clone(),
            generation: self.generation,
            reason,
        });
    }
}

/// One operation for the actor, with where to send its result.
pub(super) struct Call<B: BuildingBlock, O: Operation<B>> {
    pub(super) op: O,
    pub(super) reply: oneshot::Sender<Result<O::Output, CallError>>,
    /// The call's place in the component's bound; released when the
    /// operation has finished, not when its caller stops waiting.
    pub(super) permit: Permit,
    pub(super) _block: std::marker::PhantomData<fn() -> B>,
}

impl<B: BuildingBlock, O: Operation<B>> Message for Call<B, O> {
    type Result = ();
}

impl<B: BuildingBlock, O: Operation<B>> Handler<Call<B, O>> for ComponentActor<B> {
    type Result = ();

    fn handle(&mut self, call: Call<B, O>, ctx: &mut Context<Self>) {
        let Call { op, reply, permit, .. } = call;
        // A call that reaches an actor already stopping is not started on a
        // component about to be closed.
        let component = self.component.clone().filter(|_| self.stop_reason.is_none());
        let Some(component) = component else {
            let reason = match &self.stop_reason {
                Some(reason) => reason.to_string(),
                None => "starting".to_owned(),
            };
            let _ = reply.send(Err(CallError::Unavailable {
                component: self.key.clone(),
                reason,
            }));
            return;
        };
        // The synchronous part of `run` (before its future first awaits)
        // runs here, on the event loop every component shares: a panic in
        // it must be caught like one in the future.
        let operation = match std::panic::catch_unwind(AssertUnwindSafe(|| op.run(component))) {
            Ok(operation) => operation,
            Err(panic) => {
                if let Some(reason) = answer(Err(panic), reply, &self.key) {
                    self.stop_because(ctx, reason);
                }
                return;
            }
        };
        let mut operation = AssertUnwindSafe(operation).catch_unwind();
        // Many operations answer without waiting (in-memory stores, cached
        // values): poll once here and spare them a task of their own. A
        // future may be polled again with another waker, so one that is
        // still pending carries on in a task below.
        let first = operation.poll_unpin(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        if let Poll::Ready(outcome) = first {
            if let Some(reason) = answer(outcome, reply, &self.key) {
                self.stop_because(ctx, reason);
            }
            drop(permit);
            return;
        }
        self.spawned += 1;
        let finished = Finished(self.finished.clone());
        if !self.stall_watch {
            self.stall_watch = true;
            let mark = self.spawned;
            ctx.run_later(STALL_TICK, move |act, ctx| act.watch_stalls(ctx, mark));
        }
        let actor = ctx.address();
        let key = self.key.clone();
        let mut abandon = self.abandon.subscribe();
        let abandoned = async move {
            match abandon.wait_for(Option::is_some).await {
                Ok(reason) => reason.clone().unwrap_or_default(),
                // The actor is gone without abandoning its calls (a restart
                // after a panic): they finish on the client they started with.
                Err(_) => std::future::pending().await,
            }
        };
        // A task of its own: operations run concurrently, and one that
        // outlives a restart finishes on the client it started with. Not
        // instrumented with the actor's span: entering a span on every poll
        // of every request costs more than the hop itself; the few events
        // logged here name the component instead.
        actix_rt::spawn(async move {
            let _finished = finished;
            let outcome = tokio::select! {
                biased;
                outcome = &mut operation => outcome,
                reason = abandoned => {
                    let _ = reply.send(Err(CallError::Unavailable { component: key, reason }));
                    return;
                }
            };
            let stop = answer(outcome, reply, &key);
            drop(permit);
            if let Some(reason) = stop {
                actor.do_send(StopWith(reason));
            }
        });
    }
}

/// Rebuilds the hosted component from a new spec, make-before-break: the
/// old instance keeps serving while the new one builds; once it has built,
/// calls go to it, the old one's linked tasks stop, and it closes when the
/// calls it was running have finished. A build that fails leaves the old
/// instance serving and answers why.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Reconfigure<B: BuildingBlock> {
    pub spec: Arc<ComponentSpec>,
    pub entry: &'static TypeEntry<B::Component>,
}

/// How long a replaced instance may take to finish its calls before it is
/// closed anyway.
const REPLACED_DRAIN_LIMIT: Duration = Duration::from_secs(30);

impl<B: BuildingBlock> Handler<Reconfigure<B>> for ComponentActor<B> {
    type Result = ResponseActFuture<Self, Result<(), String>>;

    fn handle(&mut self, Reconfigure { spec, entry }: Reconfigure<B>, ctx: &mut Context<Self>) -> Self::Result {
        let (tasks, mut ended) = Tasks::new();
        let actor = ctx.address().downgrade();
        let watched = tasks.clone();
        let build = (entry.build)(BuildContext {
            spec: (*spec).clone(),
            tasks: tasks.clone(),
            retained: self.retained.clone(),
        });
        let timeout = self.settings.build_timeout;
        let build = async move {
            match tokio::time::timeout(timeout, AssertUnwindSafe(build).catch_unwind()).await {
                Ok(Ok(Ok(component))) => Ok(component),
                Ok(Ok(Err(e))) => Err(e.to_string()),
                Ok(Err(panic)) => Err(format!("panicked: {}", panic_message(&*panic))),
                Err(_) => Err(format!("timed out after {timeout:?}")),
            }
        };
        Box::pin(
            build
                .instrument(self.span.clone())
                .into_actor(self)
                .map(move |result, act, _ctx| {
                    let _span = act.span.clone().entered();
                    let component = match result {
                        Ok(component) if act.stop_reason.is_none() => component,
                        Ok(component) => {
                            watched.abort_all();
                            actix_rt::spawn(async move { component.close().await });
                            return Err("the component stopped while the new settings were built".into());
                        }
                        Err(error) => {
                            watched.abort_all();
                            warn!(%error, "New settings failed to build; the running instance keeps serving");
                            return Err(error);
                        }
                    };
                    // The new instance's linked tasks end the actor as the old
                    // one's did.
                    actix_rt::spawn(async move {
                        if let Some(ended) = ended.recv().await
                            && let Some(actor) = actor.upgrade()
                        {
                            actor.do_send(LinkedTaskEnded(ended));
                        }
                    });
                    if let Some(old_tasks) = act.tasks.replace(watched) {
                        old_tasks.abort_all();
                    }
                    act.spec = spec;
                    act.entry = entry;
                    act.health_failures = 0;
                    if let Some(old) = act.component.replace(component) {
                        actix_rt::spawn(
                            async move {
                                // Calls running on the old instance hold it.
                                let deadline = Instant::now() + REPLACED_DRAIN_LIMIT;
                                while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                old.close().await;
                            }
                            .instrument(act.span.clone()),
                        );
                    }
                    info!("Component rebuilt with new settings");
                    Ok(())
                }),
        )
    }
}

/// A background task linked to the actor ended.
#[derive(Message)]
#[rtype(result = "()")]
struct LinkedTaskEnded(TaskEnded);

impl<B: BuildingBlock> Handler<LinkedTaskEnded> for ComponentActor<B> {
    type Result = ();

    fn handle(&mut self, LinkedTaskEnded(ended): LinkedTaskEnded, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        warn!(task = ended.task, end = %ended.end, "Component background task ended");
        self.stop_because(ctx, StopReason::TaskEnded(ended));
    }
}

/// Sends an operation's outcome to its caller; says why the actor must stop
/// when the outcome was a fatal error or a panic.
fn answer<T>(
    outcome: Result<Result<T, ComponentError>, Box<dyn Any + Send>>,
    reply: oneshot::Sender<Result<T, CallError>>,
    component: &Arc<str>,
) -> Option<StopReason> {
    let (result, stop) = match outcome {
        Ok(Ok(output)) => (Ok(output), None),
        Ok(Err(error)) => {
            let stop = error.is_fatal().then(|| StopReason::Fatal(error.to_string()));
            let component = component.clone();
            (Err(CallError::Component { component, error }), stop)
        }
        Err(panic) => {
            let message = panic_message(&*panic);
            warn!(%component, panic = %message, "Component panicked while handling a request");
            (
                Err(CallError::Panicked {
                    component: component.clone(),
                }),
                Some(StopReason::Panicked(message)),
            )
        }
    };
    let _ = reply.send(result);
    stop
}

/// Stops the actor for the given reason (from one of its own tasks).
#[derive(Message)]
#[rtype(result = "()")]
struct StopWith(StopReason);

impl<B: BuildingBlock> Handler<StopWith> for ComponentActor<B> {
    type Result = ();

    fn handle(&mut self, msg: StopWith, ctx: &mut Context<Self>) {
        self.stop_because(ctx, msg.0);
    }
}

/// Stops the actor for good, after closing its component.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl<B: BuildingBlock> Handler<Shutdown> for ComponentActor<B> {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.stop_reason.get_or_insert(StopReason::Shutdown);
        let component = self.component.take();
        let close = async move {
            if let Some(component) = component {
                component.close().await;
            }
        };
        Box::pin(
            close
                .instrument(self.span.clone())
                .into_actor(self)
                .map(|(), _act, ctx| ctx.stop()),
        )
    }
}

/// How long an operation may wait on its backend before the actor checks
/// the backend's health at once, rather than at the next `health_interval`:
/// a backend that died while calls were waiting on it (a connection pool
/// re-dialling a refused server until its acquire timeout, a broker that
/// stopped answering) is found in about this long plus one health check.
const STALL_TICK: Duration = Duration::from_millis(50);

/// Health checks started because calls stalled are at least this far apart,
/// so a backend that is merely slow costs one `SELECT 1` or `PING` per
/// this period while calls wait on it, not one per call.
const STALL_CHECK_GAP: Duration = Duration::from_millis(200);

/// Counts an operation that ran in a task of its own as finished when
/// dropped: answered, abandoned or cancelled.
struct Finished(Arc<AtomicU64>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

pub(crate) use crate::components::tasks::panic_message;
