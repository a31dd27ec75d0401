//! The Pub/Sub API: PublishEvent and SubscribeTopicEvents.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::actors::pubsub::Publish;
use crate::api::ApiContext;
use crate::api::callback::Outcome;
use crate::api::cloudevents::{self, Outgoing};
use crate::api::delivery::{Sink, StreamSink, SubscriptionSpec, run_subscription};
use crate::components::pubsub::PublishRequest;
use crate::proto::runtime::v1 as pb;
use crate::proto::runtime::v1::subscribe_topic_events_request::SubscribeTopicEventsRequestType as RequestType;
use crate::proto::runtime::v1::subscribe_topic_events_response::SubscribeTopicEventsResponseType as ResponseType;
use crate::proto::runtime::v1::topic_event_response::TopicEventResponseStatus;

/// Publish metadata: send the bytes as they are, without a CloudEvent.
const RAW_PAYLOAD: &str = "rawPayload";
/// How long SubscribeTopicEvents waits for the broker subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Publish metadata: seconds until the event expires.
const TTL_IN_SECONDS: &str = "ttlInSeconds";

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeTopicEventsResponse, Status>> + Send + 'static>>;

fn ttl(metadata: &HashMap<String, String>) -> Result<Option<Duration>, Status> {
    let Some(value) = metadata.get(TTL_IN_SECONDS) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Some(Duration::from_secs(secs))),
        _ => Err(Status::invalid_argument(format!(
            "ttlInSeconds '{value}' must be a positive number of seconds"
        ))),
    }
}

pub async fn publish_event(ctx: &ApiContext, req: pb::PublishEventRequest) -> Result<(), Status> {
    let broker = ctx.router.pubsubs.get("pubsub_name", &req.pubsub_name)?;
    if req.topic.is_empty() {
        return Err(Status::invalid_argument(format!(
            "topic is empty; name the topic to publish to on pubsub '{}'",
            req.pubsub_name
        )));
    }
    let ttl = ttl(&req.metadata)?;
    let raw = req.metadata.get(RAW_PAYLOAD).is_some_and(|v| v == "true");
    let (data, content_type) = if raw {
        let ct = if req.data_content_type.is_empty() {
            "application/octet-stream".to_owned()
        } else {
            req.data_content_type.clone()
        };
        (req.data, ct)
    } else {
        cloudevents::wrap(&Outgoing {
            data: &req.data,
            content_type: &req.data_content_type,
            topic: &req.topic,
            pubsub_name: &req.pubsub_name,
            source: &ctx.app.app_id,
            ttl,
        })
    };
    let metadata = req
        .metadata
        .into_iter()
        .filter(|(k, _)| k != RAW_PAYLOAD && k != TTL_IN_SECONDS)
        .collect();
    let published = broker
        .call(Publish(PublishRequest {
            topic: req.topic.clone(),
            data,
            content_type,
            metadata,
            ttl,
        }))
        .await;
    ctx.metrics
        .count_publish(&req.pubsub_name, &req.topic, published.is_ok());
    published.map_err(Status::from)
}

/// Opens a subscription on a stream: the first message names it, events
/// flow back on the response stream, and `event_processed` messages settle
/// them. One stream per pubsub and topic.
pub async fn subscribe_topic_events(
    ctx: Arc<ApiContext>,
    mut requests: Streaming<pb::SubscribeTopicEventsRequest>,
) -> Result<EventStream, Status> {
    let initial = match requests.message().await? {
        Some(pb::SubscribeTopicEventsRequest {
            subscribe_topic_events_request_type: Some(RequestType::InitialRequest(initial)),
        }) => initial,
        Some(_) => return Err(Status::invalid_argument("the first message must be an initial_request")),
        None => return Err(Status::invalid_argument("the stream closed before its initial_request")),
    };
    ctx.router.pubsubs.get("pubsub_name", &initial.pubsub_name)?;
    if initial.topic.is_empty() {
        return Err(Status::invalid_argument("initial_request.topic is empty"));
    }
    let key = format!("{}/{}", initial.pubsub_name, initial.topic);
    let claim = StreamClaim::take(ctx.clone(), key.clone()).ok_or_else(|| {
        Status::already_exists(format!(
            "a stream already subscribes to topic {key}; one stream per topic"
        ))
    })?;

    let (events, events_rx) = mpsc::channel(64);
    let (open, opened) = watch::channel(false);
    let sink = StreamSink::new(events.clone(), opened);
    let (stop, stop_rx) = watch::channel(false);
    let (live, is_live) = oneshot::channel();

    // Answers from the subscriber settle events; its end (or the
    // sidecar's) ends the subscription.
    let answers = sink.clone();
    let mut stopping = ctx.stopping.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => break,
                message = requests.message() => match message {
                    Ok(Some(pb::SubscribeTopicEventsRequest {
                        subscribe_topic_events_request_type: Some(RequestType::EventProcessed(done)),
                    })) => {
                        let status = done.status.map(|s| s.status());
                        let outcome = match status {
                            Some(TopicEventResponseStatus::Success) | None => Outcome::Success,
                            Some(TopicEventResponseStatus::Retry) => Outcome::Retry,
                            Some(TopicEventResponseStatus::Drop) => Outcome::Drop,
                        };
                        answers.processed(&done.id, outcome);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                },
                _ = answers.closed() => break,
            }
        }
        let _ = stop.send(true);
    });

    let spec = SubscriptionSpec {
        pubsub: initial.pubsub_name,
        topic: initial.topic,
        metadata: initial.metadata,
    };
    tokio::spawn(async move {
        run_subscription(claim.ctx.clone(), spec, Sink::Stream(sink), stop_rx, Some(live)).await;
        drop(claim);
    });
    // The initial response says the subscription stands: what is published
    // after it reaches this stream.
    match tokio::time::timeout(SUBSCRIBE_TIMEOUT, is_live).await {
        Ok(Ok(())) => {}
        _ => {
            return Err(Status::unavailable(format!(
                "could not subscribe to topic {key} within {SUBSCRIBE_TIMEOUT:?}; is the broker up?"
            )));
        }
    }
    let initial_response = pb::SubscribeTopicEventsResponse {
        subscribe_topic_events_response_type: Some(ResponseType::InitialResponse(
            pb::SubscribeTopicEventsResponseInitial {},
        )),
    };
    events
        .send(Ok(initial_response))
        .await
        .map_err(|_| Status::cancelled("the subscriber went away"))?;
    let _ = open.send(true);
    Ok(Box::pin(ReceiverStream::new(events_rx)))
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
        fresh.then_some(StreamClaim { ctx, key })
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
