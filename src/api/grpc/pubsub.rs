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
    };
    let TopicStream { events, answers } = pubsub::subscribe_stream(ctx.clone(), spec).await?;

    // Answers from the subscriber settle events; its end (or the
    // sidecar's) ends the subscription, as dropping `answers` says.
    let mut stopping = ctx.stopping.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => break,
                message = requests.message() => match message {
                    Ok(Some(pb::SubscribeTopicEventsRequest {
                        subscribe_topic_events_request_type: Some(RequestType::EventProcessed(done)),
                    })) => {
                        let outcome = match done.status.map(|s| s.status()) {
                            Some(TopicEventResponseStatus::Success) | None => Outcome::Success,
                            Some(TopicEventResponseStatus::Retry) => Outcome::Retry,
                            Some(TopicEventResponseStatus::Drop) => Outcome::Drop,
                        };
                        answers.processed(&done.id, outcome);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                },
                () = answers.closed() => break,
            }
        }
    });

    // The initial response says the subscription stands: what is published
    // after it reaches this stream.
    let initial_response = pb::SubscribeTopicEventsResponse {
        subscribe_topic_events_response_type: Some(ResponseType::InitialResponse(
            pb::SubscribeTopicEventsResponseInitial {},
        )),
    };
    let events = ReceiverStream::new(events).map(|event| {
        Ok(pb::SubscribeTopicEventsResponse {
            subscribe_topic_events_response_type: Some(ResponseType::EventMessage(layotto_event(&event))),
        })
    });
    Ok(Box::pin(
        futures::stream::once(async { Ok(initial_response) }).chain(events),
    ))
}
