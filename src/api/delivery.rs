//! Delivering consumed messages to the application, at least once.
//!
//! A subscription consumes its topic through the pub/sub component's actor
//! and hands each message, as a CloudEvent, to a [`Sink`]: the app's
//! AppCallback server, or a `SubscribeTopicEvents` stream. The app's answer
//! settles the message with the broker: SUCCESS and DROP ack it (so does
//! UNIMPLEMENTED, as in Dapr); RETRY or an error delivers it again after a
//! backoff, without acking, so a sidecar crash leaves it to the broker to
//! redeliver. Deliveries per subscription run concurrently, up to
//! `maxConcurrentHandlers`.
//!
//! With a callback server configured, [`Subscriptions`] asks the app for its
//! subscriptions (retrying with backoff until the app is up), starts them,
//! and asks again every little while, and as soon as the app comes back
//! after being unreachable, starting and stopping subscriptions to match.
//!
//! The engine supervises itself: a subscription runner that panics or ends
//! while it should run is logged and started again at the next resync (a
//! moment later, with backoff), and the app follower that runs them is
//! restarted the same way if it panics, so a delivery loop never dies
//! silently. Every retry here waits with the one jittered
//! [`Backoff`](crate::supervisor::backoff::Backoff).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::ApiContext;
use super::blocks::pubsub::{Outcome, StreamSink, SubscriptionSpec, subscribe_request};
use super::callback::{AppCallback, AppSubscription};
use super::cloudevents::{self, TopicEvent};
use crate::actors::pubsub::{Publish, Subscribe};
use crate::components::pubsub::{Acker, Delivery, PublishRequest};
use crate::components::tasks::panic_message;
use crate::config::{AppHealthCheck, Routes, compile_rule};
use crate::supervisor::backoff::Backoff;

/// Redelivery backoff after RETRY or a failed call: doubles up to the max.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Between attempts to subscribe again after a broker failure.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(200);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);
/// How often the app's subscription list is read again while it is up.
const RESYNC: Duration = Duration::from_secs(10);
/// How long publishing to a dead-letter topic may take (daprd's).
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(30);
/// While the app's callback server does not answer: doubles up to the max.
const APP_RETRY_MIN: Duration = Duration::from_millis(500);
const APP_RETRY_MAX: Duration = Duration::from_secs(10);

/// Failed deliveries before an event goes to the subscription's
/// dead-letter topic (only when it has one; without, RETRY redelivers
/// until the app takes the event). Subscription metadata `maxRetries`
/// sets it.
pub const DEAD_LETTER_AFTER_RETRIES: u32 = 5;
const MAX_RETRIES: &str = "maxRetries";

/// Where a subscription's events go.
#[derive(Clone)]
pub enum Sink {
    Callback(Box<CallbackSink>),
    Stream(StreamSink),
}

/// The app's callback server, for one subscription.
#[derive(Clone)]
pub struct CallbackSink {
    pub app: AppCallback,
    pub routes: Arc<RouteTable>,
    /// False while the app's health checks fail: deliveries wait.
    pub healthy: watch::Receiver<bool>,
}

/// Where an event should go.
enum Route {
    To(String),
    /// No rule matched and there is no default: drop (dead-letter).
    Nowhere,
}

impl Sink {
    fn route(&self, event: &TopicEvent) -> Result<Route, String> {
        match self {
            Sink::Callback(sink) => sink.routes.pick(event),
            Sink::Stream(_) => Ok(Route::To(String::new())),
        }
    }

    async fn deliver(&self, event: &TopicEvent, route: &str) -> Result<Outcome, String> {
        match self {
            Sink::Callback(sink) => sink.app.deliver(event, route).await.map_err(|s| s.to_string()),
            Sink::Stream(stream) => stream.deliver(event).await,
        }
    }

    /// Waits while the app is unhealthy; false when stopped meanwhile.
    async fn until_healthy(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let Sink::Callback(sink) = self else {
            return true;
        };
        let healthy = &sink.healthy;
        if *healthy.borrow() {
            return true;
        }
        let mut healthy = healthy.clone();
        tokio::select! {
            ok = healthy.wait_for(|h| *h) => ok.is_ok(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }
}

/// A subscription's routing rules, compiled: the first CEL `match` true
/// over the CloudEvent (`event`) picks the path, else the default.
pub struct RouteTable {
    rules: Vec<(cel::Program, String)>,
    default: String,
}

impl RouteTable {
    /// Compiles the rules; one that does not compile is an error.
    pub fn new(routes: &Routes) -> Result<RouteTable, String> {
        let rules = routes
            .rules
            .iter()
            .map(|(expression, path)| compile_rule(expression).map(|program| (program, path.clone())))
            .collect::<Result<_, _>>()?;
        Ok(RouteTable {
            rules,
            default: routes.default.clone(),
        })
    }

    /// The path for `event`; `None` when no rule matches and there is no
    /// default.
    pub(crate) fn path_for(&self, event: &TopicEvent) -> Result<Option<String>, String> {
        self.pick(event).map(|route| match route {
            Route::To(path) => Some(path),
            Route::Nowhere => None,
        })
    }

    fn pick(&self, event: &TopicEvent) -> Result<Route, String> {
        if self.rules.is_empty() {
            // Layotto apps and Dapr gRPC apps without routes: one path
            // (maybe empty) for everything.
            return Ok(Route::To(self.default.clone()));
        }
        let value = cel::to_value(cloudevents::to_json(event)).map_err(|e| format!("cannot read the event: {e}"))?;
        for (program, path) in &self.rules {
            let mut context = cel::Context::default();
            context.add_variable_from_value("event", value.clone());
            // The events are the publishers': whatever one holds, a rule
            // that trips over it is a failed delivery, never a lost task.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| program.execute(&context)))
                .map_err(|panic| format!("a routing rule panicked: {}", panic_message(&*panic)))?;
            match outcome {
                Ok(cel::Value::Bool(true)) => return Ok(Route::To(path.clone())),
                Ok(cel::Value::Bool(false)) => {}
                Ok(other) => return Err(format!("a routing rule gave {other:?}, not true or false")),
                Err(e) => return Err(format!("a routing rule failed: {e}")),
            }
        }
        Ok(if self.default.is_empty() {
            Route::Nowhere
        } else {
            Route::To(self.default.clone())
        })
    }
}

/// Consumes `spec` and delivers to `sink` until `stop` turns true; then
/// lets deliveries in flight finish (giving back what they cannot settle).
/// `live` hears once the broker subscription first stands.
pub async fn run_subscription(
    ctx: Arc<ApiContext>,
    spec: SubscriptionSpec,
    sink: Sink,
    mut stop: watch::Receiver<bool>,
    mut live: Option<oneshot::Sender<()>>,
) {
    let handle = match ctx.router.pubsubs.get("pubsub_name", &spec.pubsub) {
        Ok(handle) => handle.clone(),
        Err(e) => {
            warn!(pubsub = %spec.pubsub, topic = %spec.topic, error = %e, "Cannot subscribe");
            return;
        }
    };
    let request = subscribe_request(&spec, &handle.spec());
    let concurrency = request.max_in_flight;
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut deliveries = JoinSet::new();
    let mut backoff = Backoff::new(RESUBSCRIBE_MIN, RESUBSCRIBE_MAX);
    info!(pubsub = %spec.pubsub, topic = %spec.topic, group = %request.group, concurrency, "Subscribing");
    'subscribe: while !*stop.borrow() {
        let mut stream = tokio::select! {
            subscribed = handle.call(Subscribe(request.clone())) => match subscribed {
                Ok(stream) => stream,
                Err(error) => {
                    debug!(pubsub = %spec.pubsub, topic = %spec.topic, %error, "Subscribe failed; retrying");
                    tokio::select! {
                        _ = backoff.wait() => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        backoff.reset();
        if let Some(live) = live.take() {
            let _ = live.send(());
        }
        loop {
            // A free delivery slot first: the broker's prefetch does the
            // rest of the flow control.
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break 'subscribe,
                },
                _ = stop.changed() => break 'subscribe,
            };
            let next = tokio::select! {
                next = stream.next() => next,
                _ = stop.changed() => break 'subscribe,
            };
            match next {
                Some(Ok(delivery)) => {
                    let (ctx, spec, sink, stop) = (ctx.clone(), spec.clone(), sink.clone(), stop.clone());
                    deliveries.spawn(async move {
                        deliver(&ctx, &spec, &sink, delivery, stop).await;
                        drop(permit);
                    });
                }
                Some(Err(error)) => {
                    warn!(pubsub = %spec.pubsub, topic = %spec.topic, %error, "Subscription lost; subscribing again");
                    break;
                }
                None => {
                    debug!(pubsub = %spec.pubsub, topic = %spec.topic, "Subscription ended; subscribing again");
                    break;
                }
            }
            // Reap finished deliveries as we go.
            while deliveries.try_join_next().is_some() {}
        }
        tokio::select! {
            _ = tokio::time::sleep(RESUBSCRIBE_MIN) => {}
            _ = stop.changed() => {}
        }
    }
    while deliveries.join_next().await.is_some() {}
    info!(pubsub = %spec.pubsub, topic = %spec.topic, "Subscription stopped");
}

/// Delivers one message until the app settles it or the subscription stops.
async fn deliver(
    ctx: &ApiContext,
    spec: &SubscriptionSpec,
    sink: &Sink,
    delivery: Delivery,
    mut stop: watch::Receiver<bool>,
) {
    let Delivery { message, acker } = delivery;
    let event = cloudevents::unwrap(&message.data, &message.topic, &spec.pubsub, message.metadata.clone());
    let metrics = &ctx.metrics;
    if event.expired {
        dead_letter(ctx, spec, &message).await;
        return settle(ctx, spec, acker, &event.id, "expired").await;
    }
    let max_retries = spec
        .metadata
        .get(MAX_RETRIES)
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(DEAD_LETTER_AFTER_RETRIES);
    let mut failures: u32 = 0;
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        if !sink.until_healthy(&mut stop).await {
            acker.nack().await;
            return;
        }
        let started = Instant::now();
        let outcome = match sink.route(&event) {
            Ok(Route::To(path)) => sink.deliver(&event, &path).await,
            Ok(Route::Nowhere) => {
                debug!(pubsub = %spec.pubsub, topic = %spec.topic, id = %event.id, "No route matches the event; dropping it");
                Ok(Outcome::Drop)
            }
            Err(error) => Err(error),
        };
        metrics.observe_delivery(&spec.pubsub, &spec.topic, started.elapsed().as_secs_f64());
        match outcome {
            Ok(Outcome::Success) => return settle(ctx, spec, acker, &event.id, "success").await,
            Ok(Outcome::Drop) => {
                dead_letter(ctx, spec, &message).await;
                return settle(ctx, spec, acker, &event.id, "drop").await;
            }
            Ok(Outcome::Retry) => {}
            Err(error) => {
                debug!(pubsub = %spec.pubsub, topic = %spec.topic, id = %event.id, %error, "Delivery failed; retrying");
                metrics.count_delivery(&spec.pubsub, &spec.topic, "error");
            }
        }
        failures = failures.saturating_add(1);
        if spec.dead_letter_topic.is_some() && failures > max_retries {
            dead_letter(ctx, spec, &message).await;
            return settle(ctx, spec, acker, &event.id, "dead_letter").await;
        }
        metrics.count_delivery(&spec.pubsub, &spec.topic, "retry");
        tokio::select! {
            _ = backoff.wait() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            // Stopping: hand it back rather than hold it.
            acker.nack().await;
            return;
        }
    }
}

/// Acknowledges a settled message, counting how it was settled.
async fn settle(ctx: &ApiContext, spec: &SubscriptionSpec, acker: Box<dyn Acker>, id: &str, status: &'static str) {
    ctx.metrics.count_delivery(&spec.pubsub, &spec.topic, status);
    if let Err(error) = acker.ack().await {
        // The broker will deliver it again: at least once.
        warn!(pubsub = %spec.pubsub, topic = %spec.topic, %id, %error, "Ack failed");
    }
}

/// Publishes the original message to the subscription's dead-letter topic
/// on the same pub/sub, when it has one.
async fn dead_letter(ctx: &ApiContext, spec: &SubscriptionSpec, message: &crate::components::pubsub::Message) {
    let Some(topic) = &spec.dead_letter_topic else {
        return;
    };
    let handle = match ctx.router.pubsubs.get("pubsub_name", &spec.pubsub) {
        Ok(handle) => handle,
        Err(error) => {
            warn!(pubsub = %spec.pubsub, %error, "Cannot reach the pub/sub for the dead-letter topic");
            return;
        }
    };
    let request = PublishRequest {
        topic: topic.clone(),
        data: message.data.clone(),
        content_type: message
            .metadata
            .get("content-type")
            .or_else(|| message.metadata.get("Content-Type"))
            .cloned()
            .unwrap_or_else(|| cloudevents::CLOUDEVENT_CONTENT_TYPE.to_owned()),
        metadata: message.metadata.clone(),
        ttl: None,
    };
    match tokio::time::timeout(DEAD_LETTER_TIMEOUT, handle.call(Publish(request))).await {
        Ok(Ok(())) => {
            info!(pubsub = %spec.pubsub, topic = %spec.topic, dead_letter_topic = %topic, "Event sent to the dead-letter topic");
            ctx.metrics.count_publish(&spec.pubsub, topic, true);
        }
        Ok(Err(error)) => {
            warn!(pubsub = %spec.pubsub, dead_letter_topic = %topic, %error, "Cannot publish to the dead-letter topic");
            ctx.metrics.count_publish(&spec.pubsub, topic, false);
        }
        Err(_) => {
            warn!(pubsub = %spec.pubsub, dead_letter_topic = %topic, "Publishing to the dead-letter topic timed out")
        }
    }
}

/// The subscriptions delivered to the app: those declared in config and
/// those the app asks for through its callback server; and the app's
/// health checks, which pause deliveries while they fail.
pub struct Subscriptions {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    health: Option<tokio::task::JoinHandle<()>>,
}

impl Subscriptions {
    pub fn start(ctx: Arc<ApiContext>, app: AppCallback) -> Subscriptions {
        let (stop, stop_rx) = watch::channel(false);
        let (healthy, health) = match ctx.app.health_check.clone() {
            None => (watch::channel(true).1, None),
            Some(check) => {
                let (tx, rx) = watch::channel(false);
                let task = tokio::spawn(watch_app_health(ctx.clone(), app.clone(), check, tx, stop_rx.clone()));
                (rx, Some(task))
            }
        };
        let task = tokio::spawn(supervise_follower(ctx, app, healthy, stop_rx));
        Subscriptions { stop, task, health }
    }

    /// Stops consuming; deliveries in flight get until `deadline` to finish.
    pub async fn stop(self, deadline: tokio::time::Instant) {
        let _ = self.stop.send(true);
        if let Some(health) = self.health {
            health.abort();
        }
        let mut task = self.task;
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            warn!("Deliveries still in flight after the grace period; giving them back");
            task.abort();
        }
    }
}

/// Dapr's app health state machine: unhealthy until the first probe
/// succeeds; `threshold` failures in a row make it unhealthy again.
async fn watch_app_health(
    ctx: Arc<ApiContext>,
    app: AppCallback,
    check: AppHealthCheck,
    healthy: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    ctx.app_health.send_replace(Some(false));
    let mut failures = check.threshold;
    let mut ticks = tokio::time::interval(check.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let ok = app.probe(&check.path, check.timeout).await;
        failures = if ok { 0 } else { failures.saturating_add(1) };
        let now = if ok {
            true
        } else if failures >= check.threshold {
            false
        } else {
            *healthy.borrow()
        };
        if now != *healthy.borrow() {
            if now {
                info!("The app is healthy; deliveries resume");
            } else {
                warn!(failures, "The app is unhealthy; deliveries pause until it recovers");
            }
            healthy.send_replace(now);
        }
        ctx.app_health.send_replace(Some(now));
    }
}

/// Runs the app follower until stopped, starting it again if it panics.
async fn supervise_follower(
    ctx: Arc<ApiContext>,
    app: AppCallback,
    healthy: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(APP_RETRY_MIN, APP_RETRY_MAX);
    loop {
        let run = std::panic::AssertUnwindSafe(follow_app(ctx.clone(), app.clone(), healthy.clone(), stop.clone()))
            .catch_unwind();
        match run.await {
            Ok(()) => return,
            Err(panic) => {
                if *stop.borrow() {
                    return;
                }
                error!(panic = %panic_message(&*panic), "The subscription follower panicked; starting it again");
                backoff.wait().await;
            }
        }
    }
}

/// The declarative subscriptions, as the app channel delivers them.
fn declared(ctx: &ApiContext) -> Vec<AppSubscription> {
    ctx.declared_subscriptions
        .iter()
        .map(|s| AppSubscription {
            pubsub_name: s.pubsub_name.clone(),
            topic: s.topic.clone(),
            metadata: s.metadata.clone().into_iter().collect(),
            routes: s.routes.clone(),
            dead_letter_topic: s.dead_letter_topic.clone(),
            declarative: true,
        })
        .collect()
}

async fn follow_app(
    ctx: Arc<ApiContext>,
    app: AppCallback,
    healthy: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let declared = declared(&ctx);
    let mut running: HashMap<AppSubscription, watch::Sender<bool>> = HashMap::new();
    // Which subscription each runner serves, to restart the one that ends.
    let mut runner_of: HashMap<tokio::task::Id, AppSubscription> = HashMap::new();
    let mut runners = JoinSet::new();
    let mut backoff = Backoff::new(APP_RETRY_MIN, APP_RETRY_MAX);
    let mut restarts = Backoff::new(RESUBSCRIBE_MIN, RESUBSCRIBE_MAX);
    let mut reachable = false;
    while !*stop.borrow() {
        let (wanted, wait) = match app.subscriptions().await {
            Ok(listed) => {
                if !reachable {
                    info!(subscriptions = listed.len(), "The app's callback server answers");
                }
                reachable = true;
                backoff.reset();
                let mut wanted = declared.clone();
                wanted.extend(listed.into_iter().filter(|s| !declared.contains(s)));
                (wanted, RESYNC)
            }
            Err(error) => {
                if reachable {
                    warn!(%error, "The app's callback server does not answer; retrying");
                } else {
                    debug!(%error, "Waiting for the app's callback server");
                }
                reachable = false;
                // Keep what runs; the declared ones run regardless.
                let mut wanted: Vec<AppSubscription> = running.keys().cloned().collect();
                wanted.extend(declared.iter().filter(|s| !running.contains_key(*s)).cloned());
                (wanted, backoff.next_delay())
            }
        };
        running.retain(|sub, stop_one| {
            let keep = wanted.contains(sub);
            if !keep {
                info!(pubsub = %sub.pubsub_name, topic = %sub.topic, "The app dropped a subscription");
                let _ = stop_one.send(true);
                forget_active(&ctx, sub);
            }
            keep
        });
        for sub in wanted {
            if running.contains_key(&sub) {
                continue;
            }
            let routes = match RouteTable::new(&sub.routes) {
                Ok(routes) => Arc::new(routes),
                Err(error) => {
                    warn!(pubsub = %sub.pubsub_name, topic = %sub.topic, %error, "Cannot compile the subscription's routes");
                    continue;
                }
            };
            let (stop_one, stop_rx) = watch::channel(false);
            let spec = SubscriptionSpec {
                pubsub: sub.pubsub_name.clone(),
                topic: sub.topic.clone(),
                metadata: sub.metadata.iter().cloned().collect(),
                dead_letter_topic: sub.dead_letter_topic.clone(),
            };
            let sink = Sink::Callback(Box::new(CallbackSink {
                app: app.clone(),
                routes,
                healthy: healthy.clone(),
            }));
            // Listed in the metadata once the broker subscription stands.
            let (live, is_live) = oneshot::channel();
            let (listed_ctx, listed) = (ctx.clone(), sub.clone());
            tokio::spawn(async move {
                if is_live.await.is_ok() {
                    let mut active = listed_ctx
                        .active_subscriptions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if !active.contains(&listed) {
                        active.push(listed);
                    }
                }
            });
            let id = runners
                .spawn(run_subscription(ctx.clone(), spec, sink, stop_rx, Some(live)))
                .id();
            runner_of.insert(id, sub.clone());
            running.insert(sub, stop_one);
        }
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = stop.changed() => break,
                Some(ended) = runners.join_next_with_id(), if !runners.is_empty() => {
                    let (id, how) = match ended {
                        Ok((id, ())) => (id, "ended".to_owned()),
                        Err(e) => (e.id(), if e.is_panic() {
                            format!("panicked: {}", panic_message(&*e.into_panic()))
                        } else {
                            "was cancelled".to_owned()
                        }),
                    };
                    let Some(sub) = runner_of.remove(&id) else { continue };
                    // A runner only ends by itself when its stop was asked
                    // for (the app dropped the subscription); any other end
                    // is a failure: forget it, so the next resync (soon)
                    // starts it again.
                    if running.get(&sub).is_some_and(|stop_one| !*stop_one.borrow()) {
                        warn!(pubsub = %sub.pubsub_name, topic = %sub.topic, %how, "A subscription runner stopped unexpectedly; starting it again");
                        running.remove(&sub);
                        forget_active(&ctx, &sub);
                        sleep.as_mut().reset(tokio::time::Instant::now() + restarts.next_delay());
                    }
                }
            }
        }
    }
    for stop_one in running.values() {
        let _ = stop_one.send(true);
    }
    ctx.active_subscriptions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    while runners.join_next().await.is_some() {}
}

fn forget_active(ctx: &ApiContext, sub: &AppSubscription) {
    ctx.active_subscriptions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|s| s != sub);
}

#[cfg(test)]
mod tests;
