//! The Pub/Sub block: publishing, and subscriptions on a subscriber's
//! stream.
//!
//! What an app publishes is wrapped in a CloudEvent (unless it asks for
//! `rawPayload`), with `ttlInSeconds` as its expiry. A stream subscription
//! (Layotto's `SubscribeTopicEvents`) claims its topic: one stream per
//! pubsub and topic at a time. Its events are delivered by
//! [`delivery`](crate::api::delivery), at least once, and settled by the
//! subscriber's answers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::{BlockError, MAX_TTL_SECONDS, quote};
use crate::actors::pubsub::Publish;
use crate::api::ApiContext;
use crate::api::cloudevents::{self, Outgoing};
use crate::api::delivery::{Sink, run_subscription};
use crate::components::ComponentSpec;
use crate::components::pubsub::{CONSUMER_ID, PublishRequest, SubscribeRequest, consumer_group};

pub use crate::api::cloudevents::TopicEvent;

/// Publish metadata: send the bytes as they are, without a CloudEvent.
pub const RAW_PAYLOAD: &str = "rawPayload";
/// Publish metadata: seconds until the event expires.
pub const TTL_IN_SECONDS: &str = "ttlInSeconds";
/// Metadata (subscription or component): deliveries in flight at once.
pub const MAX_CONCURRENT_HANDLERS: &str = "maxConcurrentHandlers";
const DEFAULT_CONCURRENCY: usize = 32;
/// How long a stream subscription waits for the broker subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Events a stream subscriber has not taken yet.
const BUFFERED_EVENTS: usize = 64;
/// The field that names the pubsub, in routing errors.
const PUBSUB_NAME: &str = "pubsub_name";

/// An event to publish.
#[derive(Clone, Debug, Default)]
pub struct PublishEvent {
    pub pubsub: String,
    pub topic: String,
    pub data: Vec<u8>,
    /// Blank: guessed from the data (see [`cloudevents`]).
    pub content_type: String,
    /// `rawPayload` and `ttlInSeconds` are read here; the rest travels with
    /// the message.
    pub metadata: HashMap<String, String>,
    /// Whose API published it: a CloudEvent the sidecar wraps carries that
    /// runtime's type and source.
    pub api: Api,
}

/// The API an event was published through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Api {
    /// Dapr's (gRPC or HTTP): type `com.dapr.event.sent`, source the app id.
    #[default]
    Dapr,
    /// Layotto's: type `com.runtime.event.sent`, source `runtime`, as
    /// Layotto's `DefaultCloudEventType` and `DefaultCloudEventSource`.
    Layotto,
}

/// Layotto's CloudEvent type of a published event.
pub const LAYOTTO_EVENT_TYPE: &str = "com.runtime.event.sent";
/// Layotto's CloudEvent source of a published event.
pub const LAYOTTO_EVENT_SOURCE: &str = "runtime";

/// What the application did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: acknowledge.
    Success,
    /// Deliver again later.
    Retry,
    /// Do not deliver again.
    Drop,
}

/// One subscription to run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionSpec {
    pub pubsub: String,
    pub topic: String,
    pub metadata: HashMap<String, String>,
    /// Events the app dropped, that matched no route, expired, or ran out
    /// of retries are published here on the same pub/sub.
    pub dead_letter_topic: Option<String>,
}

fn ttl(metadata: &HashMap<String, String>) -> Result<Option<Duration>, BlockError> {
    let Some(value) = metadata.get(TTL_IN_SECONDS) else {
        return Ok(None);
    };
    match value.trim().parse::<i64>() {
        Ok(secs) if secs > 0 && secs <= MAX_TTL_SECONDS => Ok(Some(Duration::from_secs(secs.unsigned_abs()))),
        _ => Err(BlockError::invalid(format!(
            "ttlInSeconds '{}' must be a number of seconds from 1 to {MAX_TTL_SECONDS}",
            quote(value)
        ))),
    }
}

/// The message the broker is sent for `event`: a CloudEvent unless raw,
/// and without the metadata the sidecar itself reads.
pub(crate) fn publish_request(event: PublishEvent, source: &str) -> Result<PublishRequest, BlockError> {
    if event.topic.is_empty() {
        return Err(BlockError::invalid(format!(
            "topic is empty; name the topic to publish to on pubsub '{}'",
            quote(&event.pubsub)
        )));
    }
    let ttl = ttl(&event.metadata)?;
    let raw = event.metadata.get(RAW_PAYLOAD).is_some_and(|v| v == "true");
    let (source, event_type) = match event.api {
        Api::Dapr => (source, cloudevents::EVENT_TYPE),
        Api::Layotto => (LAYOTTO_EVENT_SOURCE, LAYOTTO_EVENT_TYPE),
    };
    let (data, content_type) = if raw {
        let ct = if event.content_type.is_empty() {
            "application/octet-stream".to_owned()
        } else {
            event.content_type
        };
        (event.data, ct)
    } else {
        cloudevents::wrap(&Outgoing {
            data: &event.data,
            content_type: &event.content_type,
            topic: &event.topic,
            pubsub_name: &event.pubsub,
            source,
            event_type,
            ttl,
        })
    };
    let metadata = event
        .metadata
        .into_iter()
        .filter(|(k, _)| k != RAW_PAYLOAD && k != TTL_IN_SECONDS)
        .collect();
    Ok(PublishRequest {
        topic: event.topic,
        data,
        content_type,
        metadata,
        ttl,
    })
}

pub async fn publish(ctx: &ApiContext, event: PublishEvent) -> Result<(), BlockError> {
    let broker = ctx.router.pubsubs.get(PUBSUB_NAME, &event.pubsub)?;
    let (pubsub, topic) = (event.pubsub.clone(), event.topic.clone());
    let request = publish_request(event, &ctx.app.app_id)?;
    let published = broker.call(Publish(request)).await;
    ctx.metrics.count_publish(&pubsub, &topic, published.is_ok());
    Ok(published?)
}

/// Events to publish to one topic at once (Dapr's BulkPublishEvent).
#[derive(Clone, Debug, Default)]
pub struct BulkPublish {
    pub pubsub: String,
    pub topic: String,
    pub entries: Vec<BulkEntry>,
    /// Applies to every entry; an entry's own metadata overrides it.
    pub metadata: HashMap<String, String>,
}

/// One event of a [`BulkPublish`].
#[derive(Clone, Debug, Default)]
pub struct BulkEntry {
    /// Names the entry in the answer; unique and non-empty.
    pub entry_id: String,
    pub event: Vec<u8>,
    pub content_type: String,
    pub metadata: HashMap<String, String>,
}

/// An entry the broker did not take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedEntry {
    pub entry_id: String,
    pub error: String,
}

/// Entries published to the broker at once by one bulk publish.
const BULK_PARALLELISM: usize = 32;

/// Publishes every entry; answers the ones the broker refused. The whole
/// request is checked first (pubsub, topic, entry ids, each entry's TTL),
/// so a malformed entry publishes nothing.
pub async fn bulk_publish(ctx: &ApiContext, bulk: BulkPublish) -> Result<Vec<FailedEntry>, BlockError> {
    use futures::StreamExt;

    let broker = ctx.router.pubsubs.get(PUBSUB_NAME, &bulk.pubsub)?;
    if bulk.topic.is_empty() {
        return Err(BlockError::invalid(format!(
            "topic is empty; name the topic to publish to on pubsub '{}'",
            quote(&bulk.pubsub)
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(bulk.entries.len());
    let mut requests = Vec::with_capacity(bulk.entries.len());
    for (i, entry) in bulk.entries.into_iter().enumerate() {
        if entry.entry_id.is_empty() {
            return Err(BlockError::invalid(format!("entries[{i}].entry_id is empty")));
        }
        if !seen.insert(entry.entry_id.clone()) {
            return Err(BlockError::invalid(format!(
                "entries[{i}].entry_id '{}' is duplicated",
                quote(&entry.entry_id)
            )));
        }
        let mut metadata = bulk.metadata.clone();
        metadata.extend(entry.metadata);
        let event = PublishEvent {
            pubsub: bulk.pubsub.clone(),
            topic: bulk.topic.clone(),
            data: entry.event,
            content_type: entry.content_type,
            metadata,
            api: Api::Dapr,
        };
        requests.push((entry.entry_id, publish_request(event, &ctx.app.app_id)?));
    }
    let (pubsub, topic) = (&bulk.pubsub, &bulk.topic);
    let failed = futures::stream::iter(requests)
        .map(|(entry_id, request)| {
            let broker = broker.clone();
            async move {
                let published = broker.call(Publish(request)).await;
                ctx.metrics.count_publish(pubsub, topic, published.is_ok());
                published.err().map(|error| FailedEntry {
                    entry_id,
                    error: BlockError::from(error).to_string(),
                })
            }
        })
        .buffer_unordered(BULK_PARALLELISM)
        .filter_map(std::future::ready)
        .collect()
        .await;
    Ok(failed)
}

/// What to ask the broker for `spec` on `component`: its consumer group
/// (`consumerID`, else the component's), and its concurrency
/// (`maxConcurrentHandlers` of the subscription, else of the component,
/// else 32) as the broker's prefetch.
pub fn subscribe_request(spec: &SubscriptionSpec, component: &ComponentSpec) -> SubscribeRequest {
    let concurrency = spec
        .metadata
        .get(MAX_CONCURRENT_HANDLERS)
        .map(String::as_str)
        .or(component.meta(MAX_CONCURRENT_HANDLERS))
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(DEFAULT_CONCURRENCY);
    SubscribeRequest {
        topic: spec.topic.clone(),
        group: spec
            .metadata
            .get(CONSUMER_ID)
            .cloned()
            .unwrap_or_else(|| consumer_group(component)),
        max_in_flight: concurrency,
        metadata: spec.metadata.clone(),
    }
}

/// Events for a subscriber's stream, each settled by an answer carrying
/// the event's id.
#[derive(Clone)]
pub struct StreamSink {
    events: mpsc::Sender<Box<TopicEvent>>,
    waiting: Arc<Mutex<HashMap<String, VecDeque<oneshot::Sender<Outcome>>>>>,
}

impl StreamSink {
    pub(crate) fn new(events: mpsc::Sender<Box<TopicEvent>>) -> Self {
        StreamSink {
            events,
            waiting: Arc::default(),
        }
    }

    /// Settles the oldest event with `id` still waiting for an answer.
    pub(crate) fn processed(&self, id: &str, outcome: Outcome) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = waiting.get_mut(id) {
            if let Some(waiter) = queue.pop_front() {
                let _ = waiter.send(outcome);
            }
            if queue.is_empty() {
                waiting.remove(id);
            }
        }
    }

    /// Hands `event` to the subscriber and waits for its answer.
    pub(crate) async fn deliver(&self, event: &TopicEvent) -> Result<Outcome, String> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(event.id.clone())
            .or_default()
            .push_back(tx);
        self.events
            .send(Box::new(event.clone()))
            .await
            .map_err(|_| "the subscriber's stream closed".to_owned())?;
        rx.await
            .map_err(|_| "the subscriber's stream closed before answering".to_owned())
    }

    /// Resolves when the subscriber's stream is gone.
    async fn closed(&self) {
        self.events.closed().await;
    }
}

/// A subscription on a subscriber's stream, standing at the broker.
pub struct TopicStream {
    /// The events to send; dropping it ends the subscription. Boxed: a
    /// channel allocates room for 32 items when it is made, 8 KiB of
    /// unboxed events for every stream, however quiet.
    pub events: mpsc::Receiver<Box<TopicEvent>>,
    /// Where the subscriber's answers go; dropping it ends the
    /// subscription too.
    pub answers: Answers,
}

/// The subscriber's side of a [`TopicStream`].
pub struct Answers {
    sink: StreamSink,
    /// Dropped with the answers: the subscriber is gone.
    _subscribed: oneshot::Sender<()>,
}

impl Answers {
    /// The subscriber is done with event `id`.
    pub fn processed(&self, id: &str, outcome: Outcome) {
        self.sink.processed(id, outcome);
    }

    /// Resolves when the subscriber no longer takes events.
    pub async fn closed(&self) {
        self.sink.closed().await;
    }
}

/// Subscribes a stream to `spec`'s topic, once the broker subscription
/// stands: what is published after this returns reaches the stream. Runs
/// until the stream's events or answers are dropped, or the sidecar stops.
pub async fn subscribe_stream(ctx: Arc<ApiContext>, spec: SubscriptionSpec) -> Result<TopicStream, BlockError> {
    ctx.router.pubsubs.get(PUBSUB_NAME, &spec.pubsub)?;
    if spec.topic.is_empty() {
        return Err(BlockError::invalid("initial_request.topic is empty"));
    }
    let key = format!("{}/{}", spec.pubsub, spec.topic);
    let claim = StreamClaim::take(ctx.clone(), key.clone()).ok_or_else(|| {
        BlockError::AlreadyExists(format!(
            "a stream already subscribes to topic {}; one stream per topic",
            quote(&key)
        ))
    })?;

    let (events_tx, events) = mpsc::channel(BUFFERED_EVENTS);
    let sink = StreamSink::new(events_tx);
    let (stop, stop_rx) = watch::channel(false);
    let (subscribed, mut unsubscribed) = oneshot::channel();
    let (live, is_live) = oneshot::channel();

    // The subscriber's end (or the sidecar's) ends the subscription.
    let watched = sink.clone();
    let mut stopping = ctx.stopping.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = stopping.wait_for(|s| *s) => {}
            () = watched.closed() => {}
            _ = &mut unsubscribed => {}
        }
        let _ = stop.send(true);
    });
    let delivering = sink.clone();
    tokio::spawn(async move {
        run_subscription(claim.ctx.clone(), spec, Sink::Stream(delivering), stop_rx, Some(live)).await;
        drop(claim);
    });
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, is_live).await {
        Ok(Ok(())) => Ok(TopicStream {
            events,
            answers: Answers {
                sink,
                _subscribed: subscribed,
            },
        }),
        _ => Err(BlockError::Unavailable(format!(
            "could not subscribe to topic {key} within {SUBSCRIBE_TIMEOUT:?}; is the broker up?"
        ))),
    }
}

/// Marks a topic as taken by a stream, until dropped.
struct StreamClaim {
    ctx: Arc<ApiContext>,
    key: String,
}

impl StreamClaim {
    fn take(ctx: Arc<ApiContext>, key: String) -> Option<StreamClaim> {
        let fresh = ctx
            .topic_streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        // Not `then_some`: it would build (and drop, releasing the key) a
        // claim for a refused duplicate too.
        if fresh { Some(StreamClaim { ctx, key }) } else { None }
    }
}

impl Drop for StreamClaim {
    fn drop(&mut self) {
        self.ctx
            .topic_streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(metadata: &[(&str, &str)]) -> PublishEvent {
        PublishEvent {
            pubsub: "ps".into(),
            topic: "t".into(),
            data: b"{\"a\":1}".to_vec(),
            content_type: "application/json".into(),
            metadata: metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            api: Api::Dapr,
        }
    }

    #[test]
    fn events_are_wrapped_in_a_cloudevent() {
        let request = publish_request(event(&[("x", "y")]), "app").expect("accepted");
        assert_eq!(request.content_type, cloudevents::CLOUDEVENT_CONTENT_TYPE);
        let wrapped: serde_json::Value = serde_json::from_slice(&request.data).expect("json");
        assert_eq!(wrapped["source"], "app");
        assert_eq!(wrapped["topic"], "t");
        assert_eq!(wrapped["data"]["a"], 1);
        assert_eq!(request.metadata.get("x").map(String::as_str), Some("y"));
        assert_eq!(request.ttl, None);
    }

    #[test]
    fn raw_payloads_go_as_they_are_without_the_sidecars_metadata() {
        let mut raw = event(&[(RAW_PAYLOAD, "true"), (TTL_IN_SECONDS, "5")]);
        raw.content_type.clear();
        let request = publish_request(raw, "app").expect("accepted");
        assert_eq!(request.data, b"{\"a\":1}");
        assert_eq!(request.content_type, "application/octet-stream");
        assert_eq!(request.ttl, Some(Duration::from_secs(5)));
        assert!(request.metadata.is_empty(), "{:?}", request.metadata);
    }

    #[test]
    fn publish_ttls_are_positive_seconds() {
        for bad in ["0", "-1", "soon"] {
            let err = publish_request(event(&[(TTL_IN_SECONDS, bad)]), "app").expect_err("refused");
            assert!(matches!(err, BlockError::InvalidArgument(_)), "{bad}");
        }
    }

    #[test]
    fn subscriptions_take_concurrency_and_group_from_spec_then_component() {
        let component = ComponentSpec::new("ps", "memory").with_metadata(MAX_CONCURRENT_HANDLERS, "4");
        let plain = SubscriptionSpec {
            pubsub: "ps".into(),
            topic: "t".into(),
            metadata: HashMap::new(),
            dead_letter_topic: None,
        };
        let request = subscribe_request(&plain, &component);
        assert_eq!(request.max_in_flight, 4);
        assert_eq!(request.group, consumer_group(&component));
        let own = SubscriptionSpec {
            metadata: HashMap::from([
                (MAX_CONCURRENT_HANDLERS.to_owned(), "2".to_owned()),
                (CONSUMER_ID.to_owned(), "g".to_owned()),
            ]),
            ..plain.clone()
        };
        let request = subscribe_request(&own, &component);
        assert_eq!((request.max_in_flight, request.group.as_str()), (2, "g"));
        let bare = ComponentSpec::new("ps", "memory");
        let zero = SubscriptionSpec {
            metadata: HashMap::from([(MAX_CONCURRENT_HANDLERS.to_owned(), "0".to_owned())]),
            ..plain
        };
        assert_eq!(subscribe_request(&zero, &bare).max_in_flight, DEFAULT_CONCURRENCY);
    }

    #[tokio::test]
    async fn answers_settle_the_oldest_event_with_their_id() {
        let (tx, mut rx) = mpsc::channel(4);
        let sink = StreamSink::new(tx);
        let event = cloudevents::unwrap(b"x", "t", "ps", HashMap::new());
        let (first, second) = (sink.clone(), sink.clone());
        let (e1, e2) = (event.clone(), event.clone());
        let one = tokio::spawn(async move { first.deliver(&e1).await });
        rx.recv().await.expect("first event");
        let two = tokio::spawn(async move { second.deliver(&e2).await });
        rx.recv().await.expect("second event");
        sink.processed(&event.id, Outcome::Retry);
        sink.processed(&event.id, Outcome::Success);
        assert_eq!(one.await.expect("delivered"), Ok(Outcome::Retry));
        assert_eq!(two.await.expect("delivered"), Ok(Outcome::Success));
        sink.processed("unknown", Outcome::Drop);
    }
}
