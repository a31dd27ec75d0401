//! A state store whose backend goes away: DOWN in readiness, calls fail
//! fast, and it recovers by itself when the backend returns.

use std::time::Duration;

use layotto::proto::runtime::v1 as pb;
use tonic::Code;

use crate::state::item;
use crate::support::{self, PrivateRedis, eventually};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_store_goes_down_with_its_backend_and_recovers_without_a_restart() {
    let Some(mut redis) = PrivateRedis::start() else { return };
    let (rt, mut client) = support::start_ready(&format!(
        r#"
        [supervisor]
        backoff_min = "100ms"
        backoff_max = "500ms"
        health_interval = "200ms"
        health_timeout = "500ms"
        [state.r]
        type = "redis"
        metadata = {{ redisHost = "{}", readTimeout = "500ms", dialTimeout = "500ms" }}
        [hellos.helloworld]
        type = "helloworld"
        "#,
        redis.addr()
    ))
    .await;
    let save = |key: &str| pb::SaveStateRequest {
        store_name: "r".into(),
        states: vec![item(key, b"v")],
    };
    client
        .save_state(save("before"))
        .await
        .expect("serves while Redis is up");

    redis.kill();
    let body = eventually("readiness to report the store DOWN", WAIT, || async {
        let (code, body) = support::readiness(&rt).await;
        (code == 503 && body["components"]["state/r"]["status"] == "DOWN").then_some(body)
    })
    .await;
    let reason = body["components"]["state/r"]["details"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("redis"), "{reason}");
    let err = client.save_state(save("during")).await.expect_err("Redis is gone");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("state/r"), "{}", err.message());
    // The other components are unaffected.
    support::say_hello(&mut client, "helloworld", "x")
        .await
        .expect("hello still serves");

    redis.restart();
    eventually("the store to come back", WAIT, || {
        let mut client = client.clone();
        async move { client.save_state(save("after")).await.ok() }
    })
    .await;
    let (code, body) = support::readiness(&rt).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body["components"]["state/r"]["details"]["restarts"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{body}"
    );
    let got = client
        .get_state(pb::GetStateRequest {
            store_name: "r".into(),
            key: "after".into(),
            ..Default::default()
        })
        .await
        .expect("reads after recovery")
        .into_inner();
    assert_eq!(got.data, b"v");
    rt.shutdown().await;
}

/// A write that holds SQLite's one connection for seconds (50,000 items in
/// one transaction) once starved the health check queued behind it: the
/// check timed out and the supervisor restarted a healthy store. The check
/// has a connection of its own now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_write_does_not_starve_the_sqlite_health_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (rt, mut client) = support::start_ready(&format!(
        r#"
        [supervisor]
        health_interval = "50ms"
        health_timeout = "200ms"
        [state.s]
        type = "sqlite"
        metadata = {{ connectionString = "{}" }}
        "#,
        dir.path().join("state.db").display()
    ))
    .await;
    let states = (0..50_000).map(|i| item(&format!("bulk-{i}"), b"v")).collect();
    client
        .save_state(pb::SaveStateRequest {
            store_name: "s".into(),
            states,
        })
        .await
        .expect("the bulk write succeeds");
    let (code, body) = support::readiness(&rt).await;
    assert_eq!(code, 200, "{body}");
    let store = &body["components"]["state/s"];
    assert_eq!(store["status"], "UP", "{body}");
    assert_eq!(store["details"]["restarts"], 0, "{body}");
    rt.shutdown().await;
}

/// A backend that hangs (SIGSTOP: its connections stay open, nothing is
/// answered) cannot stall detection: the health check's timeout turns the
/// store DOWN, and it is UP again once the server runs. On the default
/// settings (a check every 1 s, each bounded by 1 s) that is within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_is_noticed_by_the_health_check_timeout() {
    let Some(redis) = PrivateRedis::start() else { return };
    let (rt, _client) = support::start_ready(&format!(
        r#"
        [state.r]
        type = "redis"
        metadata = {{ redisHost = "{}" }}
        "#,
        redis.addr()
    ))
    .await;
    redis.pause();
    let paused = tokio::time::Instant::now();
    let reason = eventually("the store to go DOWN", WAIT, || async {
        let (_, body) = support::readiness(&rt).await;
        let store = &body["components"]["state/r"];
        (store["status"] == "DOWN").then(|| store["details"]["reason"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    println!("a hung Redis was seen DOWN after {:?}: {reason}", paused.elapsed());
    redis.resume();
    eventually("the store to come back", WAIT, || async {
        let (code, _) = support::readiness(&rt).await;
        (code == 200).then_some(())
    })
    .await;
    rt.shutdown().await;
}
