//! Graceful shutdown: readiness drops first, calls in flight finish, new
//! calls are refused, and a call that outlives the grace period is cut off.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::{self, eventually, say_hello};

fn config(token: &str, grace: &str) -> String {
    format!(
        r#"
        [server]
        shutdown_grace_period = "{grace}"
        [hellos.f]
        type = "faulty"
        metadata = {{ token = "{token}" }}
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_finish_and_readiness_goes_down_first() {
    let token = support::unique("drain");
    let rt = support::start(&config(&token, "5s")).await;
    let actuator = rt.actuator_addr();
    let status = rt.status().clone();
    let mut client = support::client(&rt).await;
    let in_flight = tokio::spawn(async move { say_hello(&mut client, "f", "sleep:800").await });
    // Let the call reach the component before shutting down.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let shutdown = tokio::spawn(rt.shutdown());
    eventually("readiness to report the shutdown", Duration::from_secs(5), || async {
        (status.runtime().reason == "shutdown").then_some(())
    })
    .await;
    let readiness = format!("http://{actuator}/actuator/health/readiness");
    if let Ok(response) = reqwest::get(&readiness).await {
        assert_eq!(response.status(), 503);
    }

    let reply = in_flight.await.expect("task").expect("the call in flight completes");
    assert_eq!(reply, "faulty, sleep:800");
    shutdown.await.expect("shutdown completes");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain waited for the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_the_grace_period_is_cut_off() {
    let token = support::unique("cutoff");
    let rt = support::start(&config(&token, "300ms")).await;
    let mut client = support::client(&rt).await;
    let in_flight = tokio::spawn(async move { say_hello(&mut client, "f", "sleep:30000").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(10), rt.shutdown())
        .await
        .expect("shutdown ends soon after the grace period");
    let outcome = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the call ends");
    assert!(outcome.expect("task").is_err(), "a cut-off call cannot succeed");
}

/// Open subscription streams (configuration, pub/sub) never end by
/// themselves; shutdown ends them instead of waiting out the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_subscription_streams_end_at_shutdown() {
    use layotto::proto::runtime::v1 as pb;
    use pb::subscribe_topic_events_request::SubscribeTopicEventsRequestType;
    use tokio_stream::wrappers::ReceiverStream;

    let (rt, mut client) = support::start_ready(
        r#"
        [server]
        shutdown_grace_period = "60s"
        [config_store.c]
        type = "in-memory"
        [pub_subs.ps]
        type = "in-memory"
        "#,
    )
    .await;

    let (config_requests, rx) = tokio::sync::mpsc::channel(1);
    config_requests
        .send(pb::SubscribeConfigurationRequest {
            store_name: "c".into(),
            keys: vec!["k".into()],
            ..Default::default()
        })
        .await
        .expect("send");
    let mut config_stream = client
        .subscribe_configuration(ReceiverStream::new(rx))
        .await
        .expect("subscribe to configuration")
        .into_inner();

    let (topic_requests, rx) = tokio::sync::mpsc::channel(1);
    topic_requests
        .send(pb::SubscribeTopicEventsRequest {
            subscribe_topic_events_request_type: Some(SubscribeTopicEventsRequestType::InitialRequest(
                pb::SubscribeTopicEventsRequestInitial {
                    pubsub_name: "ps".into(),
                    topic: "t".into(),
                    ..Default::default()
                },
            )),
        })
        .await
        .expect("send");
    let mut topic_stream = client
        .subscribe_topic_events(ReceiverStream::new(rx))
        .await
        .expect("subscribe to a topic")
        .into_inner();
    // The topic stream opens with its initial response.
    topic_stream.message().await.expect("initial response");

    // The clients keep their request streams open throughout.
    tokio::time::timeout(Duration::from_secs(30), rt.shutdown())
        .await
        .expect("shutdown does not wait for open streams");
    for (what, ended) in [
        ("configuration", config_stream.message().await.map(|m| m.is_none())),
        ("topic", topic_stream.message().await.map(|m| m.is_none())),
    ] {
        // Either a clean end of stream or a status: never another message.
        assert!(!matches!(ended, Ok(false)), "the {what} stream goes on: {ended:?}");
    }
    drop((config_requests, topic_requests));
}
