//! Subscribes to a topic over SubscribeTopicEvents, publishes three events
//! through the sidecar, and prints them as they arrive.
//!
//! ```text
//! cargo run --release -- start                        # has "pub_subs_demo" (in-memory)
//! cargo run --example pubsub -- pub_subs_demo orders
//! ```
//!
//! `LAYOTTO_ADDR` overrides the address (default `http://127.0.0.1:34904`).

use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use layotto::proto::runtime::v1::subscribe_topic_events_request::SubscribeTopicEventsRequestType as Request;
use layotto::proto::runtime::v1::subscribe_topic_events_response::SubscribeTopicEventsResponseType as Response;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("LAYOTTO_ADDR").unwrap_or_else(|_| "http://127.0.0.1:34904".into());
    let mut args = std::env::args().skip(1);
    let pubsub = args.next().unwrap_or_else(|| "pub_subs_demo".into());
    let topic = args.next().unwrap_or_else(|| "orders".into());
    let mut client = RuntimeClient::connect(addr).await?;

    // Subscribe: the first message names the topic; the answer says the
    // subscription stands.
    let (requests, requests_rx) = tokio::sync::mpsc::channel(16);
    requests
        .send(pb::SubscribeTopicEventsRequest {
            subscribe_topic_events_request_type: Some(Request::InitialRequest(
                pb::SubscribeTopicEventsRequestInitial {
                    pubsub_name: pubsub.clone(),
                    topic: topic.clone(),
                    ..Default::default()
                },
            )),
        })
        .await?;
    let mut events = client
        .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
        .await?
        .into_inner();
    events.message().await?;
    println!("subscribed to {pubsub}/{topic}");

    for i in 1..=3 {
        client
            .publish_event(pb::PublishEventRequest {
                pubsub_name: pubsub.clone(),
                topic: topic.clone(),
                data: format!(r#"{{"order":{i}}}"#).into_bytes(),
                data_content_type: "application/json".into(),
                ..Default::default()
            })
            .await?;
    }

    let mut received = 0;
    while let Some(message) = events.message().await? {
        let Some(Response::EventMessage(event)) = message.subscribe_topic_events_response_type else {
            continue;
        };
        println!("received {} (id {})", String::from_utf8_lossy(&event.data), event.id);
        // Settle it: SUCCESS acks; RETRY would deliver it again.
        requests
            .send(pb::SubscribeTopicEventsRequest {
                subscribe_topic_events_request_type: Some(Request::EventProcessed(
                    pb::SubscribeTopicEventsRequestProcessed {
                        id: event.id,
                        status: Some(pb::TopicEventResponse { status: 0 }),
                    },
                )),
            })
            .await?;
        received += 1;
        if received == 3 {
            break;
        }
    }
    Ok(())
}
