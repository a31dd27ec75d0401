//! The Pub/Sub API: PublishEvent and SubscribeTopicEvents, over
//! [`blocks::pubsub`](crate::api::blocks::pubsub).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::api::ApiContext;
use crate::api::blocks::pubsub::{self, Outcome, PublishEvent, SubscriptionSpec, TopicStream};
use crate::api::callback::layotto_event;
use crate::api::cloudevents::TopicEvent;
use crate::proto::runtime::v1 as pb;
use crate::proto::runtime::v1::subscribe_topic_events_request::SubscribeTopicEventsRequestType as RequestType;
use crate::proto::runtime::v1::subscribe_topic_events_response::SubscribeTopicEventsResponseType as ResponseType;
use crate::proto::runtime::v1::topic_event_response::TopicEventResponseStatus;

pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeTopicEventsResponse, Status>> + Send + 'static>>;

pub async fn publish_event(ctx: &ApiContext, req: pb::PublishEventRequest) -> Result<(), Status> {
    let event = PublishEvent {
        pubsub: req.pubsub_name,
        topic: req.topic,
        data: req.data,
        content_type: req.data_content_type,
        metadata: req.metadata,
        api: pubsub::Api::Layotto,
    };
    Ok(pubsub::publish(ctx, event).await?)
}

/// Opens a subscription on a stream: the first message names it, events
/// flow back on the response stream after the initial response, and
/// `event_processed` messages settle them.
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
    let spec = SubscriptionSpec {
        pubsub: initial.pubsub_name,
        topic: initial.topic,
        metadata: initial.metadata,
        dead_letter_topic: initial.dead_letter_topic.filter(|t| !t.is_empty()),
    };
    let events = open_stream(
        ctx,
        spec,
        requests,
        |message: pb::SubscribeTopicEventsRequest| match message.subscribe_topic_events_request_type {
            Some(RequestType::EventProcessed(done)) => Some((
                done.id,
                match done.status.map(|s| s.status()) {
                    Some(TopicEventResponseStatus::Success) | None => Outcome::Success,
                    Some(TopicEventResponseStatus::Retry) => Outcome::Retry,
                    Some(TopicEventResponseStatus::Drop) => Outcome::Drop,
                },
            )),
            _ => None,
        },
    )
    .await?;
    // The initial response says the subscription stands: what is published
    // after it reaches this stream.
    let initial_response = pb::SubscribeTopicEventsResponse {
        subscribe_topic_events_response_type: Some(ResponseType::InitialResponse(
            pb::SubscribeTopicEventsResponseInitial {},
        )),
    };
    let events = events.map(|event| {
        Ok(pb::SubscribeTopicEventsResponse {
            subscribe_topic_events_response_type: Some(ResponseType::EventMessage(layotto_event(&event))),
        })
    });
    Ok(Box::pin(
        futures::stream::once(async { Ok(initial_response) }).chain(events),
    ))
}

/// Opens the subscription of a SubscribeTopicEvents stream (Layotto's or
/// Dapr's): the subscriber's answers, read from `requests` by `answer`,
/// settle events; its end (or the sidecar's) ends the subscription, as
/// dropping the answers says. Yields the events to send.
pub async fn open_stream<M, F>(
    ctx: Arc<ApiContext>,
    spec: SubscriptionSpec,
    mut requests: Streaming<M>,
    answer: F,
) -> Result<ReceiverStream<Box<TopicEvent>>, Status>
where
    M: Send + 'static,
    F: Fn(M) -> Option<(String, Outcome)> + Send + 'static,
{
    let TopicStream { events, answers } = pubsub::subscribe_stream(ctx.clone(), spec).await?;
    let mut stopping = ctx.stopping.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => break,
                message = requests.message() => match message {
                    Ok(Some(message)) => {
                        if let Some((id, outcome)) = answer(message) {
                            answers.processed(&id, outcome);
                        }
                    }
                    Ok(None) | Err(_) => break,
                },
                () = answers.closed() => break,
            }
        }
    });
    Ok(ReceiverStream::new(events))
}
