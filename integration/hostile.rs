//! Requests a hostile or careless client sends, each reproducing a finding
//! of the robustness review: none may panic a component, lose another
//! client's data, or answer with an unbounded error.

use std::collections::HashMap;

use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::support;

const MEMORY: &str = r#"
[app]
app_id = "hostile"
[state.mem]
type = "in-memory"
[pub_subs.ps]
type = "in-memory"
"#;

/// `ttlInSeconds` = i64::MAX once panicked the in-memory store (overflow
/// adding it to an Instant) and its restart lost every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_ttl_is_refused_and_loses_nothing() {
    let (rt, mut client) = support::start_ready(MEMORY).await;
    let item = |key: &str, ttl: Option<&str>| pb::StateItem {
        key: key.into(),
        value: b"v".to_vec(),
        metadata: ttl
            .map(|t| HashMap::from([("ttlInSeconds".to_owned(), t.to_owned())]))
            .unwrap_or_default(),
        ..Default::default()
    };
    let keys: Vec<String> = (0..50).map(|i| format!("kept-{i}")).collect();
    client
        .save_state(pb::SaveStateRequest {
            store_name: "mem".into(),
            states: keys.iter().map(|k| item(k, None)).collect(),
        })
        .await
        .expect("saved");

    for ttl in ["9223372036854775807", "2147483648", "-2", "0", "x"] {
        let err = client
            .save_state(pb::SaveStateRequest {
                store_name: "mem".into(),
                states: vec![item("ok", None), item("bad", Some(ttl))],
            })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "ttl {ttl}: {err:?}");
        let err = client
            .execute_state_transaction(pb::ExecuteStateTransactionRequest {
                store_name: "mem".into(),
                operations: vec![pb::TransactionalStateOperation {
                    operation_type: "upsert".into(),
                    request: Some(item("bad", None)),
                }],
                metadata: HashMap::from([("ttlInSeconds".to_owned(), ttl.to_owned())]),
            })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "ttl {ttl}: {err:?}");
        let err = client
            .publish_event(pb::PublishEventRequest {
                pubsub_name: "ps".into(),
                topic: "t".into(),
                data: b"{}".to_vec(),
                data_content_type: "application/json".into(),
                metadata: HashMap::from([("ttlInSeconds".to_owned(), ttl.to_owned())]),
            })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "publish ttl {ttl}: {err:?}");
    }
    // Nothing of the refused requests was written; everything else is kept.
    let got = client
        .get_bulk_state(pb::GetBulkStateRequest {
            store_name: "mem".into(),
            keys: keys
                .iter()
                .cloned()
                .chain(["ok".to_owned(), "bad".to_owned()])
                .collect(),
            ..Default::default()
        })
        .await
        .expect("read")
        .into_inner();
    for item in &got.items {
        let expected: &[u8] = if item.key.starts_with("kept-") { b"v" } else { b"" };
        assert_eq!(item.data, expected, "{}", item.key);
    }
    let (_, body) = support::readiness(&rt).await;
    assert_eq!(body["components"]["state/mem"]["details"]["restarts"], 0, "{body}");
    rt.shutdown().await;
}

/// A refused duplicate stream once released the one-stream-per-topic
/// guard, so that half of many concurrent duplicates got in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_topic_streams_are_all_refused_but_one() {
    let (rt, client) = support::start_ready(MEMORY).await;
    let initial = || pb::SubscribeTopicEventsRequest {
        subscribe_topic_events_request_type: Some(
            pb::subscribe_topic_events_request::SubscribeTopicEventsRequestType::InitialRequest(
                pb::SubscribeTopicEventsRequestInitial {
                    pubsub_name: "ps".into(),
                    topic: "dup".into(),
                    metadata: HashMap::new(),
                    dead_letter_topic: None,
                },
            ),
        ),
    };
    let mut senders = Vec::new();
    let attempts: Vec<_> = (0..100)
        .map(|_| {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let mut client = client.clone();
            let first = initial();
            senders.push(tx.clone());
            tokio::spawn(async move {
                tx.send(first).await.expect("send");
                client
                    .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                    .map(tonic::Response::into_inner)
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for attempt in futures::future::join_all(attempts).await {
        match attempt.expect("task") {
            Ok(stream) => accepted.push(stream),
            Err(e) => assert_eq!(e.code(), Code::AlreadyExists, "{e:?}"),
        }
    }
    assert_eq!(accepted.len(), 1, "one stream per topic");
    // And after those refusals, the guard still stands.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(initial()).await.expect("send");
    let again = client
        .clone()
        .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    assert_eq!(again.err().map(|e| e.code()), Some(Code::AlreadyExists));
    drop(senders);
    rt.shutdown().await;
}

/// An 8 MB store name once made an 8 MB error, which gRPC could not send
/// (RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_quote_a_bounded_prefix_of_client_input() {
    let (rt, mut client) = support::start_ready(MEMORY).await;
    let huge = "n".repeat(8 * 1024 * 1024);
    let err = client
        .get_state(pb::GetStateRequest {
            store_name: huge.clone(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown store");
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "{}",
        &err.message()[..200.min(err.message().len())]
    );
    assert!(err.message().len() < 512, "{} bytes", err.message().len());
    let err = client
        .save_state(pb::SaveStateRequest {
            store_name: "mem".into(),
            states: vec![pb::StateItem {
                key: "k".into(),
                etag: Some(pb::Etag { value: huge.clone() }),
                ..Default::default()
            }],
        })
        .await
        .expect_err("bad etag");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().len() < 512, "{} bytes", err.message().len());
    rt.shutdown().await;
}

/// On NATS a topic `>` once created a stream capturing every subject,
/// `$JS.API.>` included (JetStream broken for every client), and a metadata
/// key with ':' or a space panicked the component. Both are refused before
/// the broker is touched, with a non-retryable code, and the component
/// stays UP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_refuses_wildcard_topics_and_bad_header_names_without_failing() {
    let nats = support::Service::Nats;
    if !support::backend_available(nats.name(), nats.addr()) {
        return;
    }
    let (rt, mut client) = support::start_ready(
        r#"
        [pub_subs.ps]
        type = "nats"
        metadata = { natsURL = "nats://127.0.0.1:4222", memoryStorage = "true" }
        "#,
    )
    .await;
    let publish = |topic: &str, metadata: &[(&str, &str)]| pb::PublishEventRequest {
        pubsub_name: "ps".into(),
        topic: topic.into(),
        data: b"{}".to_vec(),
        data_content_type: "application/json".into(),
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    for topic in [">", "*", "orders.*", "orders.>", "$JS.API.x", "a..b", "a b", ".a"] {
        let err = client.publish_event(publish(topic, &[])).await.expect_err(topic);
        assert_eq!(err.code(), Code::InvalidArgument, "topic {topic:?}: {err:?}");
    }
    let topic = support::unique("hostile");
    for key in ["a:b", "a b", "a\nb", "ключ"] {
        let err = client
            .publish_event(publish(&topic, &[(key, "v")]))
            .await
            .expect_err(key);
        assert_eq!(err.code(), Code::InvalidArgument, "key {key:?}: {err:?}");
    }
    let err = client
        .publish_event(publish(&topic, &[("k", "line\nbreak")]))
        .await
        .expect_err("value");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Over the broker's max_payload (1 MiB by default), in the body or in
    // the headers: permanent, so INVALID_ARGUMENT, not a retryable
    // UNAVAILABLE.
    let mut big = publish(&topic, &[]);
    big.data = vec![b'x'; 2 << 20];
    let err = client.publish_event(big).await.expect_err("payload over the limit");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let huge_value = "v".repeat(2 << 20);
    let err = client
        .publish_event(publish(&topic, &[("k", &huge_value)]))
        .await
        .expect_err("headers over the limit");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().len() < 1024,
        "a bounded message: {} bytes",
        err.message().len()
    );
    client
        .publish_event(publish(&topic, &[("k", "v")]))
        .await
        .expect("a good event is still published");
    let (_, body) = support::readiness(&rt).await;
    let ps = &body["components"]["pub_subs/ps"];
    assert_eq!(
        (ps["status"].as_str(), ps["details"]["restarts"].as_u64()),
        (Some("UP"), Some(0)),
        "{body}"
    );
    rt.shutdown().await;
}

/// A sidecar with the `[server]` setting `server` and a `faulty` hello
/// component `slow`, and a client of it.
async fn start_slow(server: &str) -> (layotto::Runtime, RuntimeClient<Channel>) {
    let token = support::unique("slow");
    support::start_ready(&format!(
        r#"
        [server]
        {server}
        [hellos.slow]
        type = "faulty"
        metadata = {{ token = "{token}" }}
        "#
    ))
    .await
}

type SlowCall = tokio::task::JoinHandle<Result<String, tonic::Status>>;

/// `n` calls to `slow` that each take 1.5 s, started at once on `client`'s
/// connection.
fn slow_calls(client: &RuntimeClient<Channel>, n: usize) -> Vec<SlowCall> {
    (0..n)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { support::say_hello(&mut client, "slow", "sleep:1500").await })
        })
        .collect()
}

/// How many of `calls` were served and how many refused
/// RESOURCE_EXHAUSTED with a message that contains `refusal`.
async fn served_and_refused(calls: Vec<SlowCall>, refusal: &str) -> (usize, usize) {
    let (mut served, mut refused) = (0, 0);
    for call in futures::future::join_all(calls).await {
        match call.expect("task") {
            Ok(_) => served += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains(refusal), "{}", e.message());
                refused += 1;
            }
        }
    }
    (served, refused)
}

/// Calls beyond `server.max_calls_in_flight` are refused at once with
/// RESOURCE_EXHAUSTED (40,000 calls in flight once took RSS to 313 MB), and
/// service returns to normal when the flood ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_process_limit_are_refused_at_once() {
    let (rt, client) = start_slow("max_calls_in_flight = 3").await;
    let calls = slow_calls(&client, 10);
    assert_eq!(served_and_refused(calls, "calls in flight").await, (3, 7));
    let mut client = client.clone();
    assert_eq!(
        support::say_hello(&mut client, "slow", "after").await.expect("served"),
        "faulty, after"
    );
    rt.shutdown().await;
}

/// `server.max_calls_per_connection`: a connection's calls beyond it are
/// refused RESOURCE_EXHAUSTED, before they take a place among the
/// process's, while another connection is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_connection_limit_are_refused_and_other_connections_served() {
    let (rt, client) = start_slow("max_calls_per_connection = 2").await;
    let calls = slow_calls(&client, 5);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // A connection of its own is not held back by the first one's calls.
    let mut other = support::client(&rt).await;
    assert_eq!(
        support::say_hello(&mut other, "slow", "other").await.expect("served"),
        "faulty, other"
    );
    assert_eq!(served_and_refused(calls, "this connection").await, (2, 3));
    rt.shutdown().await;
}
