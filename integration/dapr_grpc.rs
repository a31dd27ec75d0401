//! Dapr's gRPC API beyond what the three-front-end tests cover: bulk
//! publish (per-entry failures reported) and configuration subscriptions
//! by id (the first message carries only the id; unsubscribe ends one).

use std::collections::HashMap;
use std::time::Duration;

use layotto::proto::dapr::runtime::v1 as dapr;
use layotto::proto::dapr::runtime::v1::dapr_client::DaprClient;
use layotto::proto::runtime::v1 as pb;
use pb::subscribe_topic_events_response::SubscribeTopicEventsResponseType;
use pb::topic_event_response::TopicEventResponseStatus;
use tonic::Code;
use tonic::transport::Channel;

use crate::pubsub::{initial_request, processed};
use crate::support;

async fn dapr_client(rt: &layotto::Runtime) -> DaprClient<Channel> {
    DaprClient::connect(format!("http://{}", rt.grpc_addr()))
        .await
        .expect("connect")
}

fn entry(id: &str, event: &str, metadata: &[(&str, &str)]) -> dapr::BulkPublishRequestEntry {
    dapr::BulkPublishRequestEntry {
        entry_id: id.into(),
        event: event.as_bytes().to_vec(),
        content_type: "text/plain".into(),
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn bulk(pubsub: &str, topic: &str, entries: Vec<dapr::BulkPublishRequestEntry>) -> dapr::BulkPublishRequest {
    dapr::BulkPublishRequest {
        pubsub_name: pubsub.into(),
        topic: topic.into(),
        entries,
        metadata: HashMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_publish_delivers_every_entry_and_checks_the_request_first() {
    let (rt, mut layotto) = support::start_ready(
        r#"
        [pub_subs.ps]
        type = "in-memory"
        "#,
    )
    .await;
    let mut daprc = dapr_client(&rt).await;
    let topic = support::unique("bulk");

    // A malformed request publishes nothing: duplicate or empty entry ids,
    // an unknown pubsub, an empty topic, a bad TTL on one entry.
    let refused = [
        bulk("ps", &topic, vec![entry("a", "1", &[]), entry("a", "2", &[])]),
        bulk("ps", &topic, vec![entry("a", "1", &[]), entry("", "2", &[])]),
        bulk("nope", &topic, vec![entry("a", "1", &[])]),
        bulk("ps", "", vec![entry("a", "1", &[])]),
        bulk(
            "ps",
            &topic,
            vec![
                entry("a", "1", &[]),
                entry("b", "2", &[("ttlInSeconds", "9223372036854775807")]),
            ],
        ),
    ];
    for request in refused {
        let what = format!("{request:?}");
        let err = daprc.bulk_publish_event(request).await.expect_err(&what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }

    // A stream subscriber on the topic, through Layotto's API.
    let (requests, requests_rx) = tokio::sync::mpsc::channel(16);
    requests.send(initial_request(&topic)).await.expect("send");
    let mut events = layotto
        .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
        .await
        .expect("subscribe")
        .into_inner();
    events.message().await.expect("stream").expect("initial response");

    // Publish rounds until one arrives whole (the subscription goes live
    // shortly after the stream opens).
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut whole = None;
    for round in 0..20 {
        let entries = (0..3)
            .map(|i| entry(&format!("e{i}"), &format!("r{round}-{i}"), &[]))
            .collect();
        let answer = daprc
            .bulk_publish_event_alpha1(bulk("ps", &topic, entries))
            .await
            .expect("bulk publish")
            .into_inner();
        assert!(answer.failed_entries.is_empty(), "{answer:?}");
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            while let Ok(Some(message)) = events.message().await {
                if let Some(SubscribeTopicEventsResponseType::EventMessage(event)) =
                    message.subscribe_topic_events_response_type
                {
                    let data = String::from_utf8_lossy(&event.data).into_owned();
                    let round = data.split('-').next().unwrap_or_default().to_owned();
                    *seen.entry(round).or_default() += 1;
                    requests
                        .send(processed(event.id, TopicEventResponseStatus::Success))
                        .await
                        .expect("ack");
                }
            }
        })
        .await;
        if let Some((round, _)) = seen.iter().find(|(_, n)| **n == 3) {
            whole = Some(round.clone());
            break;
        }
    }
    assert!(whole.is_some(), "no round arrived whole: {seen:?}");
    assert!(seen.values().all(|n| *n <= 3), "an entry arrived twice: {seen:?}");
    drop(requests);
    rt.shutdown().await;
}

/// An entry the broker refuses is reported by id; the others are published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_publish_reports_the_entries_the_broker_refused() {
    let nats = support::Service::Nats;
    if !support::backend_available(nats.name(), nats.addr()) {
        return;
    }
    let (rt, _) = support::start_ready(
        r#"
        [pub_subs.ps]
        type = "nats"
        metadata = { natsURL = "nats://127.0.0.1:4222", memoryStorage = "true" }
        "#,
    )
    .await;
    let mut daprc = dapr_client(&rt).await;
    let topic = support::unique("bulk");
    let answer = daprc
        .bulk_publish_event(bulk(
            "ps",
            &topic,
            vec![
                entry("good-1", "1", &[]),
                entry("bad", "2", &[("not a header", "v")]),
                entry("good-2", "3", &[]),
            ],
        ))
        .await
        .expect("a partly failed bulk publish is OK with its failures listed")
        .into_inner();
    let failed: Vec<&str> = answer.failed_entries.iter().map(|f| f.entry_id.as_str()).collect();
    assert_eq!(failed, ["bad"], "{answer:?}");
    assert!(!answer.failed_entries[0].error.is_empty());
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_subscription_opens_with_its_id_and_ends_on_unsubscribe() {
    let (rt, mut layotto) = support::start_ready(
        r#"
        [app]
        app_id = "cfg-sub"
        [config_store.c]
        type = "in-memory"
        "#,
    )
    .await;
    let mut daprc = dapr_client(&rt).await;
    let key = support::unique("k");
    let subscribe = |store: &str| dapr::SubscribeConfigurationRequest {
        store_name: store.into(),
        keys: vec![key.clone()],
        metadata: HashMap::new(),
    };

    let err = daprc
        .subscribe_configuration(subscribe("nope"))
        .await
        .expect_err("unknown store");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let mut stream = daprc
        .subscribe_configuration_alpha1(subscribe("c"))
        .await
        .expect("subscribe")
        .into_inner();
    let first = stream.message().await.expect("stream").expect("first message");
    assert!(!first.id.is_empty() && first.items.is_empty(), "{first:?}");

    layotto
        .save_configuration(pb::SaveConfigurationRequest {
            store_name: "c".into(),
            app_id: "cfg-sub".into(),
            items: vec![pb::ConfigurationItem {
                key: key.clone(),
                content: "v1".into(),
                ..Default::default()
            }],
            metadata: HashMap::new(),
        })
        .await
        .expect("save");
    let change = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a change arrives")
        .expect("stream")
        .expect("a message");
    assert_eq!(change.id, first.id);
    assert_eq!(
        change.items.get(&key).map(|i| i.value.as_str()),
        Some("v1"),
        "{change:?}"
    );

    let wrong_store = daprc
        .unsubscribe_configuration(dapr::UnsubscribeConfigurationRequest {
            store_name: "nope".into(),
            id: first.id.clone(),
        })
        .await
        .expect_err("unknown store");
    assert_eq!(wrong_store.code(), Code::InvalidArgument);
    let ended = daprc
        .unsubscribe_configuration(dapr::UnsubscribeConfigurationRequest {
            store_name: "c".into(),
            id: first.id.clone(),
        })
        .await
        .expect("unsubscribe")
        .into_inner();
    assert!(ended.ok, "{ended:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    let again = daprc
        .unsubscribe_configuration_alpha1(dapr::UnsubscribeConfigurationRequest {
            store_name: "c".into(),
            id: first.id.clone(),
        })
        .await
        .expect("unsubscribe again")
        .into_inner();
    assert!(!again.ok && again.message.contains("does not exist"), "{again:?}");
    rt.shutdown().await;
}

/// `POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}` with daprd's bodies
/// and codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_publish_over_http_answers_as_daprd() {
    use reqwest::StatusCode;
    use serde_json::{Value, json};

    let nats = support::Service::Nats;
    let with_nats = support::backend_available(nats.name(), nats.addr());
    let mut config = "[pub_subs.ps]\ntype = \"in-memory\"\n".to_owned();
    if with_nats {
        config.push_str(
            "[pub_subs.n]\ntype = \"nats\"\nmetadata = { natsURL = \"nats://127.0.0.1:4222\", memoryStorage = \"true\" }\n",
        );
    }
    let (rt, _) = support::start_ready(&config).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", rt.dapr_http_addr().expect("dapr http"));
    let topic = support::unique("bulk");
    let post = |path: String, body: Value| {
        let http = http.clone();
        async move { http.post(path).json(&body).send().await.expect("post") }
    };
    let code = |response: reqwest::Response| async move {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, body["errorCode"].as_str().unwrap_or_default().to_owned(), body)
    };

    // Every entry published: 204. The JavaScript SDK sends "entryID".
    let entries = json!([
        { "entryId": "1", "event": { "n": 1 }, "contentType": "application/json" },
        { "entryID": "2", "event": "hello", "contentType": "text/plain", "metadata": { "k": "v" } },
        { "EntryId": "3", "event": "aGk=", "contentType": "application/octet-stream" },
    ]);
    for version in ["v1.0-alpha1", "v1.0"] {
        let ok = post(format!("{base}/{version}/publish/bulk/ps/{topic}"), entries.clone()).await;
        assert_eq!(ok.status(), StatusCode::NO_CONTENT, "{version}");
    }

    // Malformed: 400 ERR_PUBSUB_EVENTS_SER; unknown pubsub: 404.
    for (what, body) in [
        (
            "duplicate id",
            json!([{ "entryId": "1", "event": "a", "contentType": "text/plain" }, { "entryId": "1", "event": "b", "contentType": "text/plain" }]),
        ),
        (
            "empty id",
            json!([{ "entryId": "", "event": "a", "contentType": "text/plain" }]),
        ),
        (
            "bad content type",
            json!([{ "entryId": "1", "event": "a", "contentType": "image/png" }]),
        ),
        (
            "not base64",
            json!([{ "entryId": "1", "event": "%%%", "contentType": "application/octet-stream" }]),
        ),
        ("not a list", json!({ "entryId": "1" })),
    ] {
        let (status, error, body) = code(post(format!("{base}/v1.0-alpha1/publish/bulk/ps/{topic}"), body).await).await;
        assert_eq!(
            (status, error.as_str()),
            (StatusCode::BAD_REQUEST, "ERR_PUBSUB_EVENTS_SER"),
            "{what}: {body}"
        );
    }
    let (status, error, _) =
        code(post(format!("{base}/v1.0-alpha1/publish/bulk/nope/{topic}"), entries.clone()).await).await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::NOT_FOUND, "ERR_PUBSUB_NOT_FOUND")
    );

    // Entries the broker refuses: 500 with each failed entry named.
    if with_nats {
        let mixed = json!([
            { "entryId": "good", "event": "a", "contentType": "text/plain" },
            { "entryId": "bad", "event": "b", "contentType": "text/plain", "metadata": { "not a header": "v" } },
        ]);
        let (status, error, body) = code(post(format!("{base}/v1.0-alpha1/publish/bulk/n/{topic}"), mixed).await).await;
        assert_eq!(
            (status, error.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "ERR_PUBSUB_PUBLISH_MESSAGE"),
            "{body}"
        );
        let failed: Vec<&str> = body["failedEntries"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f["entryId"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(failed, ["bad"], "{body}");
    }
    rt.shutdown().await;
}

/// Dapr's SubscribeTopicEventsAlpha1: initial response, events, and
/// `event_processed` answers (RETRY delivered again, DROP to the stream's
/// dead-letter topic), with the subscription listed as STREAMING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dapr_streaming_subscriptions_deliver_and_settle() {
    use dapr::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as Req;
    use dapr::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Resp;
    let rt = support::start("[app]\napp_id = \"streams\"\n[pub_subs.ps]\ntype = \"in-memory\"\n").await;
    support::wait_ready(&rt).await;
    let mut client = dapr_client(&rt).await;
    let topic = support::unique("stream");
    let dead = format!("{topic}-dead");
    let open = |topic: &str, dead_letter: Option<String>| {
        let (requests, rx) = tokio::sync::mpsc::channel(16);
        let initial = dapr::SubscribeTopicEventsRequestAlpha1 {
            subscribe_topic_events_request_type: Some(Req::InitialRequest(
                dapr::SubscribeTopicEventsRequestInitialAlpha1 {
                    pubsub_name: "ps".into(),
                    topic: topic.into(),
                    metadata: HashMap::new(),
                    dead_letter_topic: dead_letter,
                },
            )),
        };
        (requests, rx, initial)
    };
    let (requests, rx, initial) = open(&topic, Some(dead.clone()));
    requests.send(initial).await.expect("send");
    let mut events = client
        .subscribe_topic_events_alpha1(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("subscribe")
        .into_inner();
    let first = events.message().await.expect("stream").expect("initial response");
    assert!(matches!(
        first.subscribe_topic_events_response_type,
        Some(Resp::InitialResponse(_))
    ));
    let (dead_requests, dead_rx, dead_initial) = open(&dead, None);
    dead_requests.send(dead_initial).await.expect("send");
    let mut dead_events = client
        .subscribe_topic_events_alpha1(tokio_stream::wrappers::ReceiverStream::new(dead_rx))
        .await
        .expect("subscribe")
        .into_inner();
    dead_events.message().await.expect("stream").expect("initial response");

    let meta = client
        .get_metadata(dapr::GetMetadataRequest {})
        .await
        .expect("metadata")
        .into_inner();
    assert!(
        meta.subscriptions
            .iter()
            .any(|s| s.topic == topic && s.r#type == dapr::PubsubSubscriptionType::Streaming as i32),
        "{:?}",
        meta.subscriptions
    );

    for data in ["retry", "drop"] {
        client
            .publish_event(dapr::PublishEventRequest {
                pubsub_name: "ps".into(),
                topic: topic.clone(),
                data: data.as_bytes().to_vec(),
                data_content_type: "text/plain".into(),
                metadata: HashMap::new(),
            })
            .await
            .expect("publish");
    }
    let answer = |id: String, status: dapr::topic_event_response::TopicEventResponseStatus| {
        dapr::SubscribeTopicEventsRequestAlpha1 {
            subscribe_topic_events_request_type: Some(Req::EventProcessed(
                dapr::SubscribeTopicEventsRequestProcessedAlpha1 {
                    id,
                    status: Some(dapr::TopicEventResponse { status: status as i32 }),
                },
            )),
        }
    };
    use dapr::topic_event_response::TopicEventResponseStatus as S;
    let mut retried = 0;
    let mut dropped = false;
    while retried < 2 || !dropped {
        let message = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event in time")
            .expect("stream")
            .expect("open");
        let Some(Resp::EventMessage(event)) = message.subscribe_topic_events_response_type else {
            continue;
        };
        assert_eq!(event.topic, topic);
        let status = match (event.data.as_slice(), retried) {
            (b"retry", 0) => {
                retried += 1;
                S::Retry
            }
            (b"retry", _) => {
                retried += 1;
                S::Success
            }
            _ => {
                dropped = true;
                S::Drop
            }
        };
        requests.send(answer(event.id, status)).await.expect("answer");
    }
    let dead_letter = tokio::time::timeout(Duration::from_secs(10), dead_events.message())
        .await
        .expect("a dead letter in time")
        .expect("stream")
        .expect("open");
    let Some(Resp::EventMessage(event)) = dead_letter.subscribe_topic_events_response_type else {
        panic!("expected an event, got {dead_letter:?}");
    };
    assert_eq!(
        (event.data.as_slice(), event.topic.as_str()),
        (b"drop".as_slice(), dead.as_str())
    );
    rt.shutdown().await;
}
