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
use crate::actors::pubsub::Subscribe;
use crate::components::pubsub::Delivery;
use crate::components::tasks::panic_message;
use crate::supervisor::backoff::Backoff;

/// Redelivery backoff after RETRY or a failed call: doubles up to the max.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Between attempts to subscribe again after a broker failure.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(200);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);
/// How often the app's subscription list is read again while it is up.
const RESYNC: Duration = Duration::from_secs(10);
/// While the app's callback server does not answer: doubles up to the max.
const APP_RETRY_MIN: Duration = Duration::from_millis(500);
const APP_RETRY_MAX: Duration = Duration::from_secs(10);

/// Where a subscription's events go.
#[derive(Clone)]
pub enum Sink {
    Callback { app: AppCallback, route: String },
    Stream(StreamSink),
}

impl Sink {
    async fn deliver(&self, event: &TopicEvent) -> Result<Outcome, String> {
        match self {
            Sink::Callback { app, route } => app.deliver(event, route).await.map_err(|s| s.to_string()),
            Sink::Stream(stream) => stream.deliver(event).await,
        }
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
    let request = subscribe_request(&spec, handle.spec());
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
    let event = cloudevents::unwrap(&message.data, &message.topic, &spec.pubsub, message.metadata);
    let metrics = &ctx.metrics;
    if event.expired {
        metrics.count_delivery(&spec.pubsub, &spec.topic, "expired");
        if let Err(error) = acker.ack().await {
            warn!(pubsub = %spec.pubsub, topic = %spec.topic, %error, "Cannot ack an expired event");
        }
        return;
    }
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        let started = Instant::now();
        let outcome = sink.deliver(&event).await;
        metrics.observe_delivery(&spec.pubsub, &spec.topic, started.elapsed().as_secs_f64());
        let settled = match outcome {
            Ok(Outcome::Success) => Some("success"),
            Ok(Outcome::Drop) => Some("drop"),
            Ok(Outcome::Retry) => None,
            Err(error) => {
                debug!(pubsub = %spec.pubsub, topic = %spec.topic, id = %event.id, %error, "Delivery failed; retrying");
                metrics.count_delivery(&spec.pubsub, &spec.topic, "error");
                None
            }
        };
        if let Some(status) = settled {
            metrics.count_delivery(&spec.pubsub, &spec.topic, status);
            if let Err(error) = acker.ack().await {
                // The broker will deliver it again: at least once.
                warn!(pubsub = %spec.pubsub, topic = %spec.topic, id = %event.id, %error, "Ack failed");
            }
            return;
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

/// The subscriptions the app declares through its callback server.
pub struct Subscriptions {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriptions {
    pub fn start(ctx: Arc<ApiContext>, app: AppCallback) -> Subscriptions {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise_follower(ctx, app, stop_rx));
        Subscriptions { stop, task }
    }

    /// Stops consuming; deliveries in flight get until `deadline` to finish.
    pub async fn stop(self, deadline: tokio::time::Instant) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            warn!("Deliveries still in flight after the grace period; giving them back");
            task.abort();
        }
    }
}

/// Runs the app follower until stopped, starting it again if it panics.
async fn supervise_follower(ctx: Arc<ApiContext>, app: AppCallback, stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new(APP_RETRY_MIN, APP_RETRY_MAX);
    loop {
        let run = std::panic::AssertUnwindSafe(follow_app(ctx.clone(), app.clone(), stop.clone())).catch_unwind();
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

async fn follow_app(ctx: Arc<ApiContext>, app: AppCallback, mut stop: watch::Receiver<bool>) {
    let mut running: HashMap<AppSubscription, watch::Sender<bool>> = HashMap::new();
    // Which subscription each runner serves, to restart the one that ends.
    let mut runner_of: HashMap<tokio::task::Id, AppSubscription> = HashMap::new();
    let mut runners = JoinSet::new();
    let mut backoff = Backoff::new(APP_RETRY_MIN, APP_RETRY_MAX);
    let mut restarts = Backoff::new(RESUBSCRIBE_MIN, RESUBSCRIBE_MAX);
    let mut reachable = false;
    while !*stop.borrow() {
        let wait = match app.subscriptions().await {
            Ok(wanted) => {
                if !reachable {
                    info!(subscriptions = wanted.len(), "The app's callback server answers");
                }
                reachable = true;
                backoff.reset();
                running.retain(|sub, stop_one| {
                    let keep = wanted.contains(sub);
                    if !keep {
                        info!(pubsub = %sub.pubsub_name, topic = %sub.topic, "The app dropped a subscription");
                        let _ = stop_one.send(true);
                    }
                    keep
                });
                for sub in wanted {
                    if running.contains_key(&sub) {
                        continue;
                    }
                    let (stop_one, stop_rx) = watch::channel(false);
                    let spec = SubscriptionSpec {
                        pubsub: sub.pubsub_name.clone(),
                        topic: sub.topic.clone(),
                        metadata: sub.metadata.iter().cloned().collect(),
                    };
                    let sink = Sink::Callback {
                        app: app.clone(),
                        route: sub.route.clone(),
                    };
                    let id = runners
                        .spawn(run_subscription(ctx.clone(), spec, sink, stop_rx, None))
                        .id();
                    runner_of.insert(id, sub.clone());
                    running.insert(sub, stop_one);
                }
                RESYNC
            }
            Err(status) => {
                if reachable {
                    warn!(%status, "The app's callback server does not answer; retrying");
                } else {
                    debug!(%status, "Waiting for the app's callback server");
                }
                reachable = false;
                backoff.next_delay()
            }
        };
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
                        sleep.as_mut().reset(tokio::time::Instant::now() + restarts.next_delay());
                    }
                }
            }
        }
    }
    for stop_one in running.values() {
        let _ = stop_one.send(true);
    }
    while runners.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests;
