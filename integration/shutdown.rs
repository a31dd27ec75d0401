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
        .expect("the call ends")
        .expect("task");
    // Answered UNAVAILABLE, a code clients retry elsewhere, never CANCELLED
    // or INTERNAL (as when the server was simply aborted).
    let status = outcome.expect_err("a cut-off call cannot succeed");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("stopping"), "{status:?}");
}

/// A bulk read cut off at the deadline: never OK with part of the items
/// failed (a run answered OK with 91,600 of 100,000 items in error).
/// Either the whole answer or "the sidecar is stopping". (Dapr HTTP's
/// cut-off is tested on its middleware, `api::dapr_http::tests`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_read_cut_off_at_the_deadline_is_unavailable_not_partial() {
    use layotto::proto::runtime::v1 as pb;

    const KEYS: usize = 20_000;
    let (rt, mut client) = support::start_ready(
        r#"
        [server]
        shutdown_grace_period = "1ms"
        [state.s]
        type = "in-memory"
        "#,
    )
    .await;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
    for chunk in keys.chunks(5_000) {
        let states = chunk
            .iter()
            .map(|k| pb::StateItem {
                key: k.clone(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .collect();
        client
            .save_state(pb::SaveStateRequest {
                store_name: "s".into(),
                states,
            })
            .await
            .expect("save");
    }
    let read = tokio::spawn(async move {
        client
            .get_bulk_state(pb::GetBulkStateRequest {
                store_name: "s".into(),
                keys,
                ..Default::default()
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    tokio::time::timeout(Duration::from_secs(10), rt.shutdown())
        .await
        .expect("shutdown ends");
    match read.await.expect("task") {
        Ok(answer) => {
            let items = answer.into_inner().items;
            let failed = items.iter().filter(|i| !i.error.is_empty()).count();
            assert_eq!((items.len(), failed), (KEYS, 0), "a partial answer");
        }
        Err(status) if refused_by_goaway(&status) => {}
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(status.message().contains("stopping"), "{status:?}");
        }
    }
}

/// A call the server never took: sent after the server's final GOAWAY
/// named the last stream it would process. HTTP/2 says such a call may be
/// retried anywhere; tonic's client reports it as INTERNAL ("GoAway(...,
/// NO_ERROR, Remote)"), grpc-go as UNAVAILABLE. The client's choice of
/// code, not the server's doing.
fn refused_by_goaway(status: &tonic::Status) -> bool {
    let seen = format!("{status:?}");
    status.code() == tonic::Code::Internal && seen.contains("GoAway(") && seen.contains("NO_ERROR, Remote")
}

/// Calls that race the shutdown. Calls the server took are answered OK
/// or, past the grace period, UNAVAILABLE "stopping", never CANCELLED or
/// INTERNAL (a load client once saw both: the server then aborted calls
/// at the deadline). Calls made while the shutdown closes connections may
/// also never be taken: refused by the server's GOAWAY (tonic's client
/// names that INTERNAL, grpc-go UNAVAILABLE), never sent ("operation was
/// canceled"), or lost with a connection the client itself dropped
/// because it saw the GOAWAY while making a new call. Those are the
/// client's, so long calls here each have a connection of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_racing_the_shutdown_end_ok_or_unavailable() {
    let token = support::unique("race");
    let rt = support::start(&config(&token, "300ms")).await;
    // Calls that outlive the grace period, one per connection.
    let mut long = Vec::new();
    for _ in 0..8 {
        let mut client = support::client(&rt).await;
        long.push(tokio::spawn(
            async move { say_hello(&mut client, "f", "sleep:5000").await },
        ));
    }
    // Quick calls, many at once over shared connections, until one fails.
    let mut busy = Vec::new();
    for _ in 0..4 {
        let client = support::client(&rt).await;
        for _ in 0..8 {
            let mut client = client.clone();
            busy.push(tokio::spawn(async move {
                loop {
                    match say_hello(&mut client, "f", "x").await {
                        Ok(_) => continue,
                        Err(status) if refused_by_goaway(&status) => return "refused by GOAWAY".to_owned(),
                        Err(status) => return format!("{:?}: {}", status.code(), status.message()),
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(10), rt.shutdown())
        .await
        .expect("shutdown ends");
    for call in long {
        let status = call.await.expect("task").expect_err("cut off");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("stopping"), "{status:?}");
    }
    for worker in busy {
        let ended = worker.await.expect("task");
        assert!(
            ended.starts_with("Unavailable")
                || ended == "refused by GOAWAY"
                || ended == "Cancelled: operation was canceled"
                || ended == "Unknown: transport error",
            "a quick call racing the shutdown ended {ended}"
        );
    }
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
