//! The Pub/Sub conformance suite, through the gRPC API of running sidecars
//! and a test app serving AppCallback, against every broker. A new broker
//! joins with a `Broker` variant and one line in `conformance!`.

use std::collections::HashMap;
use std::time::Duration;

use layotto::Runtime;
use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use layotto::proto::runtime::v1::topic_event_response::TopicEventResponseStatus;
use tonic::Code;
use tonic::transport::Channel;

use crate::apps::{self, DaprApp, TestApp, always_success, subscription};
use crate::support::{self, BackendType, Service, eventually};

/// A broker under test, on the machine's services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broker {
    Memory,
    Redis,
    Rabbitmq,
    Nats,
    Mqtt,
    /// A Python process serving Dapr's pluggable pub/sub protocol
    /// (`integration/pluggable/components.py`).
    Pluggable,
}

const WAIT: Duration = Duration::from_secs(30);

impl Broker {
    /// The `[pub_subs.ps]` entry.
    pub fn entry(self) -> String {
        let (ty, meta) = match self {
            Broker::Memory => ("in-memory", ""),
            Broker::Redis => (
                "redis",
                r#"redisHost = "127.0.0.1:6379", processingTimeout = "3s", redeliverInterval = "1s""#,
            ),
            Broker::Rabbitmq => ("rabbitmq", r#"host = "amqp://guest:guest@127.0.0.1:5672/%2f""#),
            Broker::Nats => ("nats", r#"natsURL = "nats://127.0.0.1:4222", ackWaitTime = "3s""#),
            Broker::Mqtt => ("mqtt", r#"url = "tcp://127.0.0.1:1883""#),
            Broker::Pluggable => ("", ""),
        };
        let ty = match self {
            Broker::Pluggable => crate::pluggable::shared_name(),
            _ => ty.to_owned(),
        };
        format!("[pub_subs.ps]\ntype = \"{ty}\"\nmetadata = {{ {meta} }}\n")
    }
}

impl BackendType for Broker {
    fn service(self) -> Option<Service> {
        match self {
            Broker::Memory | Broker::Pluggable => None,
            Broker::Redis => Some(Service::Redis),
            Broker::Rabbitmq => Some(Service::Rabbitmq),
            Broker::Nats => Some(Service::Nats),
            Broker::Mqtt => Some(Service::Mosquitto),
        }
    }
}

/// The config of a sidecar for `app_id` delivering to a callback on
/// `callback_port` (0: none).
pub fn config(broker: Broker, app_id: &str, callback_port: u16) -> String {
    format!(
        "[app]\napp_id = \"{app_id}\"\ngrpc_callback_port = {callback_port}\n{}",
        broker.entry()
    )
}

pub async fn sidecar(broker: Broker, app_id: &str, callback_port: u16) -> Runtime {
    if broker == Broker::Pluggable {
        // Its process, started once and discovered (the cases skip before
        // this when Python is missing outside CI).
        crate::pluggable::shared().await.expect("the pluggable pub/sub runs");
    }
    let rt = support::start(&config(broker, app_id, callback_port)).await;
    support::wait_ready(&rt).await;
    rt
}

pub async fn publish(client: &mut RuntimeClient<Channel>, topic: &str, data: &[u8]) -> Result<(), tonic::Status> {
    client
        .publish_event(pb::PublishEventRequest {
            pubsub_name: "ps".into(),
            topic: topic.into(),
            data: data.to_vec(),
            data_content_type: "text/plain".into(),
            metadata: HashMap::new(),
        })
        .await
        .map(drop)
}

/// Publishes `warmup` until the app has it: the subscription is live.
pub(crate) async fn warm_up(client: &mut RuntimeClient<Channel>, app: &TestApp, topic: &str) {
    eventually("the subscription to deliver", WAIT, || {
        let mut client = client.clone();
        async move {
            publish(&mut client, topic, b"warmup").await.expect("publish");
            tokio::time::sleep(Duration::from_millis(300)).await;
            (app.received.count(b"warmup") > 0).then_some(())
        }
    })
    .await;
}

// ---- The cases.

pub async fn a_thousand_events_arrive_intact(broker: Broker) {
    let (id, topic) = (support::unique("ps-app"), support::unique("t"));
    let app = TestApp::start(vec![subscription("ps", &topic)], always_success()).await;
    let rt = sidecar(broker, &id, app.port).await;
    let mut client = support::client(&rt).await;
    warm_up(&mut client, &app, &topic).await;
    let payloads: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("event-{i}-{}", "x".repeat(i % 50)).into_bytes())
        .collect();
    for p in &payloads {
        publish(&mut client, &topic, p).await.expect("publish");
    }
    app.received.wait_distinct(payloads.len() + 1, WAIT).await;
    let got = app.received.distinct();
    for p in &payloads {
        assert!(got.contains(p), "missing {}", String::from_utf8_lossy(p));
    }
    let event = app
        .received
        .events()
        .into_iter()
        .find(|e| e.data == payloads[7])
        .expect("event");
    assert_eq!(event.topic, topic);
    assert_eq!(event.pubsub_name, "ps");
    // Published through Layotto's API: Layotto's CloudEvent source and type.
    assert_eq!(event.source, "runtime");
    assert_eq!(event.r#type, "com.runtime.event.sent");
    assert_eq!(event.spec_version, "1.0");
    assert_eq!(event.data_content_type, "text/plain");
    assert!(!event.id.is_empty());
    rt.shutdown().await;
}

pub async fn retry_is_delivered_again_and_drop_is_not(broker: Broker) {
    let (id, topic) = (support::unique("ps-app"), support::unique("t"));
    let answer: apps::Answer =
        std::sync::Arc::new(
            |event: &pb::TopicEventRequest, seen: usize| match event.data.as_slice() {
                b"retry-me" if seen < 2 => TopicEventResponseStatus::Retry,
                b"drop-me" => TopicEventResponseStatus::Drop,
                _ => TopicEventResponseStatus::Success,
            },
        );
    let app = TestApp::start(vec![subscription("ps", &topic)], answer).await;
    let rt = sidecar(broker, &id, app.port).await;
    let mut client = support::client(&rt).await;
    warm_up(&mut client, &app, &topic).await;
    publish(&mut client, &topic, b"retry-me").await.expect("publish");
    publish(&mut client, &topic, b"drop-me").await.expect("publish");
    eventually("the third delivery of retry-me", WAIT, || async {
        (app.received.count(b"retry-me") >= 3).then_some(())
    })
    .await;
    app.received.wait_for(b"drop-me", WAIT).await;
    // Give a redelivery every chance to show up.
    publish(&mut client, &topic, b"sentinel").await.expect("publish");
    app.received.wait_for(b"sentinel", WAIT).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(app.received.count(b"drop-me"), 1, "a dropped event came back");
    assert_eq!(
        app.received.count(b"retry-me"),
        3,
        "retried until SUCCESS, then not again"
    );
    let text = support::metrics(&rt).await;
    for status in ["success", "drop", "retry"] {
        let n = support::metric(
            &text,
            "layotto_pubsub_delivered_total",
            &[("name", "ps"), ("topic", &topic), ("status", status)],
        );
        assert!(n.is_some_and(|n| n >= 1.0), "delivered {status}: {text}");
    }
    let published = support::metric(
        &text,
        "layotto_pubsub_published_total",
        &[("name", "ps"), ("topic", &topic), ("outcome", "ok")],
    );
    assert!(published.is_some_and(|n| n >= 3.0), "{text}");
    rt.shutdown().await;
}

pub async fn an_event_published_while_the_app_is_down_arrives_when_it_is_up(broker: Broker) {
    let (id, topic) = (support::unique("ps-app"), support::unique("t"));
    let mut app = TestApp::start(vec![subscription("ps", &topic)], always_success()).await;
    let rt = sidecar(broker, &id, app.port).await;
    let mut client = support::client(&rt).await;
    warm_up(&mut client, &app, &topic).await;
    app.stop().await;
    publish(&mut client, &topic, b"while-down")
        .await
        .expect("publish while the app is down");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.received.count(b"while-down"), 0);
    app.restart().await;
    app.received.wait_for(b"while-down", WAIT).await;
    rt.shutdown().await;
}

pub async fn a_consumer_group_shares_the_events(broker: Broker) {
    let (id, topic) = (support::unique("ps-app"), support::unique("t"));
    let app_a = TestApp::start(vec![subscription("ps", &topic)], always_success()).await;
    let rt_a = sidecar(broker, &id, app_a.port).await;
    let mut client = support::client(&rt_a).await;
    warm_up(&mut client, &app_a, &topic).await;
    // The second member: another sidecar of the same app id (the group)
    // with its own app. An in-memory broker lives inside one sidecar, so
    // there the second member is a stream subscriber on the same sidecar.
    let (rt_b, member_b) = if broker == Broker::Memory {
        (None, stream_member(&rt_a, &topic).await)
    } else {
        let app_b = TestApp::start(vec![subscription("ps", &topic)], always_success()).await;
        let rt_b = sidecar(broker, &id, app_b.port).await;
        (Some(rt_b), Member::App(app_b))
    };
    // Both members must be consuming before the count starts.
    eventually("both members to receive", WAIT, || {
        let mut client = client.clone();
        let (a, b, topic) = (&app_a, &member_b, topic.clone());
        async move {
            for _ in 0..10 {
                publish(&mut client, &topic, b"warmup").await.expect("publish");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            (a.received.len() > 1 && b.received().len() > 0).then_some(())
        }
    })
    .await;
    let payloads: Vec<Vec<u8>> = (0..200).map(|i| format!("shared-{i}").into_bytes()).collect();
    for p in &payloads {
        publish(&mut client, &topic, p).await.expect("publish");
    }
    eventually("every event, across the group", WAIT, || async {
        let mut all = app_a.received.distinct();
        all.extend(member_b.received().distinct());
        payloads.iter().all(|p| all.contains(p)).then_some(())
    })
    .await;
    let (a, b) = (app_a.received.distinct(), member_b.received().distinct());
    let a_share = payloads.iter().filter(|p| a.contains(*p)).count();
    let b_share = payloads.iter().filter(|p| b.contains(*p)).count();
    assert!(
        a_share > 0 && b_share > 0,
        "each member gets part: {a_share} and {b_share}"
    );
    assert!(
        a_share < payloads.len() && b_share < payloads.len(),
        "neither gets all: {a_share} and {b_share}"
    );
    rt_a.shutdown().await;
    if let Some(rt_b) = rt_b {
        rt_b.shutdown().await;
    }
}

/// A member of a consumer group: an app behind a sidecar, or a stream.
enum Member {
    App(TestApp),
    Stream(apps::Received),
}

impl Member {
    fn received(&self) -> &apps::Received {
        match self {
            Member::App(app) => &app.received,
            Member::Stream(received) => received,
        }
    }
}

pub fn initial_request(topic: &str) -> pb::SubscribeTopicEventsRequest {
    pb::SubscribeTopicEventsRequest {
        subscribe_topic_events_request_type: Some(
            pb::subscribe_topic_events_request::SubscribeTopicEventsRequestType::InitialRequest(
                pb::SubscribeTopicEventsRequestInitial {
                    pubsub_name: "ps".into(),
                    topic: topic.into(),
                    metadata: HashMap::new(),
                    dead_letter_topic: None,
                },
            ),
        ),
    }
}

pub fn processed(id: String, status: TopicEventResponseStatus) -> pb::SubscribeTopicEventsRequest {
    pb::SubscribeTopicEventsRequest {
        subscribe_topic_events_request_type: Some(
            pb::subscribe_topic_events_request::SubscribeTopicEventsRequestType::EventProcessed(
                pb::SubscribeTopicEventsRequestProcessed {
                    id,
                    status: Some(pb::TopicEventResponse { status: status as i32 }),
                },
            ),
        ),
    }
}

/// A SubscribeTopicEvents stream that records and acks every event.
async fn stream_member(rt: &Runtime, topic: &str) -> Member {
    let mut client = support::client(rt).await;
    let (requests, requests_rx) = tokio::sync::mpsc::channel(64);
    requests.send(initial_request(topic)).await.expect("send");
    let mut events = client
        .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
        .await
        .expect("subscribe")
        .into_inner();
    let received = apps::Received::default();
    let record = received.clone();
    tokio::spawn(async move {
        while let Ok(Some(message)) = events.message().await {
            if let Some(pb::subscribe_topic_events_response::SubscribeTopicEventsResponseType::EventMessage(event)) =
                message.subscribe_topic_events_response_type
            {
                let id = event.id.clone();
                record.push(event);
                if requests
                    .send(processed(id, TopicEventResponseStatus::Success))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    Member::Stream(received)
}

pub async fn a_stream_subscriber_receives_and_acknowledges(broker: Broker) {
    let (id, topic) = (support::unique("ps-app"), support::unique("t"));
    let rt = sidecar(broker, &id, 0).await;
    let mut client = support::client(&rt).await;
    let (requests, requests_rx) = tokio::sync::mpsc::channel(16);
    requests.send(initial_request(&topic)).await.expect("send");
    let mut events = client
        .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
        .await
        .expect("subscribe")
        .into_inner();
    let first = events.message().await.expect("stream").expect("initial response");
    assert!(matches!(
        first.subscribe_topic_events_response_type,
        Some(pb::subscribe_topic_events_response::SubscribeTopicEventsResponseType::InitialResponse(_))
    ));
    // A second stream on the same topic is refused.
    let (second, second_rx) = tokio::sync::mpsc::channel::<pb::SubscribeTopicEventsRequest>(1);
    second.send(initial_request(&topic)).await.expect("send");
    let refused = support::client(&rt)
        .await
        .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(second_rx))
        .await;
    assert_eq!(refused.err().map(|s| s.code()), Some(Code::AlreadyExists));

    // Publish until the stream's subscription is live, answering RETRY to
    // the first delivery of "again" and SUCCESS to everything else.
    let publisher = {
        let mut client = client.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            for i in 0..5 {
                publish(&mut client, &topic, format!("s-{i}").as_bytes())
                    .await
                    .expect("publish");
            }
            publish(&mut client, &topic, b"again").await.expect("publish");
        })
    };
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut again = 0;
    let done = tokio::time::timeout(WAIT, async {
        while let Some(message) = events.message().await.expect("stream") {
            let Some(pb::subscribe_topic_events_response::SubscribeTopicEventsResponseType::EventMessage(event)) =
                message.subscribe_topic_events_response_type
            else {
                continue;
            };
            let status = if event.data == b"again" && again == 0 {
                again += 1;
                TopicEventResponseStatus::Retry
            } else {
                if event.data == b"again" {
                    again += 1;
                }
                TopicEventResponseStatus::Success
            };
            seen.push(event.data.clone());
            requests.send(processed(event.id, status)).await.expect("ack");
            if again >= 2 && (0..5).all(|i| seen.contains(&format!("s-{i}").into_bytes())) {
                return;
            }
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "stream events: {:?}",
        seen.iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
    );
    publisher.await.expect("publisher");
    assert_eq!(again, 2, "RETRY on the stream delivers again");
    drop(requests);
    rt.shutdown().await;
}

pub async fn publish_validates_its_input(broker: Broker) {
    let id = support::unique("ps-app");
    let rt = sidecar(broker, &id, 0).await;
    let mut client = support::client(&rt).await;
    let err = publish(&mut client, "", b"x").await.expect_err("empty topic");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .publish_event(pb::PublishEventRequest {
            pubsub_name: "nope".into(),
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown pubsub");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("configured: ps"), "{}", err.message());
    let err = client
        .publish_event(pb::PublishEventRequest {
            pubsub_name: "ps".into(),
            topic: "t".into(),
            metadata: HashMap::from([("ttlInSeconds".into(), "soon".into())]),
            ..Default::default()
        })
        .await
        .expect_err("bad ttl");
    assert_eq!(err.code(), Code::InvalidArgument);
    rt.shutdown().await;
}

pub async fn a_raw_payload_arrives_as_it_was_sent(broker: Broker) {
    let (id, topic) = (support::unique("ps-app"), support::unique("t"));
    let app = TestApp::start(vec![subscription("ps", &topic)], always_success()).await;
    let rt = sidecar(broker, &id, app.port).await;
    let mut client = support::client(&rt).await;
    warm_up(&mut client, &app, &topic).await;
    let raw = vec![0u8, 1, 2, 255, 254];
    client
        .publish_event(pb::PublishEventRequest {
            pubsub_name: "ps".into(),
            topic: topic.clone(),
            data: raw.clone(),
            data_content_type: "application/octet-stream".into(),
            metadata: HashMap::from([("rawPayload".into(), "true".into())]),
        })
        .await
        .expect("publish raw");
    app.received.wait_for(&raw, WAIT).await;
    rt.shutdown().await;
}

macro_rules! conformance {
    ($($name:ident => $broker:expr),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                conformance!(@cases $broker;
                    a_thousand_events_arrive_intact,
                    retry_is_delivered_again_and_drop_is_not,
                    an_event_published_while_the_app_is_down_arrives_when_it_is_up,
                    a_consumer_group_shares_the_events,
                    a_stream_subscriber_receives_and_acknowledges,
                    publish_validates_its_input,
                    a_raw_payload_arrives_as_it_was_sent,
                );
            }
        )*
    };
    (@cases $broker:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if !$broker.available() {
                    return;
                }
                if $broker == Broker::Pluggable && crate::pluggable::shared().await.is_none() {
                    return;
                }
                super::$case($broker).await;
            }
        )*
    };
}

conformance! {
    memory => Broker::Memory,
    redis => Broker::Redis,
    rabbitmq => Broker::Rabbitmq,
    nats => Broker::Nats,
    mqtt => Broker::Mqtt,
    pluggable => Broker::Pluggable,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_built_on_dapr_sdks_receive_events_on_their_route() {
    let (id, topic) = (support::unique("dapr-app"), support::unique("t"));
    let app = DaprApp::start("ps", &topic).await;
    let rt = support::start(&format!(
        "[app]\napp_id = \"{id}\"\ngrpc_callback_port = {}\ncallback_protocol = \"dapr\"\n{}",
        app.port,
        Broker::Memory.entry()
    ))
    .await;
    let client = support::client(&rt).await;
    let received = eventually("a delivery on the /orders route", WAIT, || {
        let mut client = client.clone();
        let (topic, received) = (topic.clone(), app.received.clone());
        async move {
            let payload = br#"{"order":1}"#;
            client
                .publish_event(pb::PublishEventRequest {
                    pubsub_name: "ps".into(),
                    topic,
                    data: payload.to_vec(),
                    data_content_type: "application/json".into(),
                    metadata: HashMap::new(),
                })
                .await
                .expect("publish");
            tokio::time::sleep(Duration::from_millis(200)).await;
            received.lock().unwrap_or_else(|p| p.into_inner()).first().cloned()
        }
    })
    .await;
    assert_eq!(received.path, "/orders");
    assert_eq!(received.data, br#"{"order":1}"#);
    assert_eq!(received.data_content_type, "application/json");
    // Published through Layotto's API: Layotto's CloudEvent source.
    assert_eq!(received.source, "runtime");
    let extensions = received.extensions.expect("extensions");
    assert!(extensions.fields.contains_key("time"), "{extensions:?}");
    rt.shutdown().await;
}
