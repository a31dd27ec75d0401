//! Pub/sub under failure: a sidecar killed with SIGKILL mid-delivery loses
//! no acknowledged event, and a broker that goes away and comes back is
//! recovered from without a sidecar restart.

use std::time::Duration;

use tonic::Code;

use crate::apps::{TestApp, always_success, subscription};
use crate::pubsub::{Broker, config, publish};
use crate::support::{self, BackendType, PrivateRedis, Sidecar, eventually, free_port};

const WAIT: Duration = Duration::from_secs(60);

async fn killing_the_sidecar_loses_no_acknowledged_event(broker: Broker) {
    let (id, topic) = (support::unique("crash-app"), support::unique("t"));
    // A slow app, so that many events are in flight when the sidecar dies.
    let app = TestApp::start_slow(
        vec![subscription("ps", &topic)],
        always_success(),
        Duration::from_millis(200),
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, config(broker, &id, app.port)).expect("write config");
    let (grpc, actuator) = (free_port(), free_port());
    let mut sidecar = Sidecar::start(path, grpc, actuator).await;
    let mut client = support::client_at(([127, 0, 0, 1], grpc).into()).await;
    eventually("the subscription to deliver", WAIT, || {
        let (mut client, topic, received) = (client.clone(), topic.clone(), app.received.clone());
        async move {
            publish(&mut client, &topic, b"warmup").await.expect("publish");
            tokio::time::sleep(Duration::from_millis(300)).await;
            (received.count(b"warmup") > 0).then_some(())
        }
    })
    .await;

    // Every event whose PublishEvent returned OK was accepted by the broker.
    let published: Vec<Vec<u8>> = (0..300).map(|i| format!("crash-{i}").into_bytes()).collect();
    for p in &published {
        publish(&mut client, &topic, p).await.expect("publish");
    }
    eventually("deliveries to be under way", WAIT, || async {
        (app.received.len() > 40).then_some(())
    })
    .await;
    sidecar.kill().await;
    let before = app.received.distinct().len();
    assert!(
        before < published.len() + 1,
        "all were delivered before the kill; the test proves nothing"
    );

    sidecar.spawn().await;
    eventually("every published event after the restart", WAIT, || async {
        let got = app.received.distinct();
        published.iter().all(|p| got.contains(p)).then_some(())
    })
    .await;
    let deliveries = app
        .received
        .events()
        .iter()
        .filter(|e| e.data.starts_with(b"crash-"))
        .count();
    println!(
        "{broker:?}: {} events, {deliveries} deliveries ({} duplicates); {} delivered before the kill",
        published.len(),
        deliveries - published.len(),
        before - 1
    );
    sidecar.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_loses_no_acknowledged_event_when_the_sidecar_is_killed() {
    if Broker::Redis.available() {
        killing_the_sidecar_loses_no_acknowledged_event(Broker::Redis).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_loses_no_acknowledged_event_when_the_sidecar_is_killed() {
    if Broker::Rabbitmq.available() {
        killing_the_sidecar_loses_no_acknowledged_event(Broker::Rabbitmq).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_loses_no_acknowledged_event_when_the_sidecar_is_killed() {
    if Broker::Nats.available() {
        killing_the_sidecar_loses_no_acknowledged_event(Broker::Nats).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_goes_away_turns_the_component_down_and_it_recovers() {
    let Some(mut redis) = PrivateRedis::start() else { return };
    let (id, topic) = (support::unique("fault-app"), support::unique("t"));
    let app = TestApp::start(vec![subscription("ps", &topic)], always_success()).await;
    let (rt, mut client) = support::start_ready(&format!(
        r#"
        [app]
        app_id = "{id}"
        grpc_callback_port = {}
        [supervisor]
        backoff_min = "100ms"
        backoff_max = "500ms"
        health_interval = "200ms"
        [pub_subs.ps]
        type = "redis"
        metadata = {{ redisHost = "{}", readTimeout = "500ms", dialTimeout = "500ms" }}
        "#,
        app.port,
        redis.addr()
    ))
    .await;
    eventually("the subscription to deliver", WAIT, || {
        let (mut client, topic, received) = (client.clone(), topic.clone(), app.received.clone());
        async move {
            publish(&mut client, &topic, b"before").await.expect("publish");
            tokio::time::sleep(Duration::from_millis(200)).await;
            (received.count(b"before") > 0).then_some(())
        }
    })
    .await;

    redis.kill();
    eventually("the component to go DOWN", WAIT, || async {
        let (_, body) = support::readiness(&rt).await;
        (body["components"]["pub_subs/ps"]["status"] == "DOWN").then_some(())
    })
    .await;
    let err = publish(&mut client, &topic, b"during")
        .await
        .expect_err("the broker is gone");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("pub_subs/ps"), "{}", err.message());

    redis.restart();
    // Delivery resumes by itself: the subscription is made again on the
    // rebuilt component (the restarted Redis starts empty).
    eventually("publishing and delivery to resume", WAIT, || {
        let (mut client, topic, received) = (client.clone(), topic.clone(), app.received.clone());
        async move {
            let _ = publish(&mut client, &topic, b"after").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            (received.count(b"after") > 0).then_some(())
        }
    })
    .await;
    let (code, _) = support::readiness(&rt).await;
    assert_eq!(code, 200);
    rt.shutdown().await;
}
