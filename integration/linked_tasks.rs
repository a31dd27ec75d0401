//! Background work linked to its component: a broker consumer or a change
//! feed that loses its connection turns the component DOWN with the task's
//! name and why, the supervisor rebuilds it, and deliveries and change
//! events resume without a sidecar restart. And a config store that cannot
//! read a changed item never passes that on as a delete.

use std::time::Duration;

use layotto::Runtime;

use crate::apps::{TestApp, always_success, subscription};
use crate::configuration::{Subscriber, is_deleted, item, save};
use crate::pubsub::publish;
use crate::support::{self, PrivateRedis, eventually};

const WAIT: Duration = Duration::from_secs(30);

/// A connection of the test's own to a Redis.
async fn redis_conn(addr: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}/0"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Closes every connection of one `CLIENT KILL TYPE` (`normal`, `pubsub`)
/// but the caller's; answers how many.
async fn kill_clients(addr: &str, kind: &str) -> i64 {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg(kind)
        .query_async(&mut redis_conn(addr).await)
        .await
        .expect("CLIENT KILL")
}

/// Closes the connection whose last command was `command` (e.g. the
/// consumer's `xreadgroup`), and no other.
async fn kill_client_running(addr: &str, command: &str) {
    let mut conn = redis_conn(addr).await;
    let id = eventually(&format!("a client running {command}"), WAIT, || {
        let mut conn = conn.clone();
        async move {
            let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.ok()?;
            list.lines()
                .find(|line| line.split(' ').any(|field| field == format!("cmd={command}")))
                .and_then(|line| line.split(' ').find_map(|field| field.strip_prefix("id=")))
                .map(str::to_owned)
        }
    })
    .await;
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query_async::<i64>(&mut conn)
        .await
        .expect("CLIENT KILL ID");
}

/// Waits for `component` to show DOWN in readiness, and answers its reason.
async fn down_reason(rt: &Runtime, component: &str) -> String {
    eventually(&format!("{component} to go DOWN"), WAIT, || async {
        let (_, body) = support::readiness(rt).await;
        let status = &body["components"][component];
        (status["status"] == "DOWN").then(|| status["details"]["reason"].as_str().unwrap_or_default().to_owned())
    })
    .await
}

/// Waits for `component` to be UP again after at least one restart.
async fn up_after_restart(rt: &Runtime, component: &str) {
    eventually(&format!("{component} to be UP after a restart"), WAIT, || async {
        let (_, body) = support::readiness(rt).await;
        let status = &body["components"][component];
        (status["status"] == "UP" && status["details"]["restarts"].as_u64() >= Some(1)).then_some(())
    })
    .await;
}

/// The restart backoff is long enough (at least half of `backoff_min`)
/// for readiness polling to see the DOWN in between.
const SUPERVISOR: &str = r#"
[supervisor]
backoff_min = "1s"
backoff_max = "2s"
health_interval = "200ms"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubsub_consumer_that_loses_its_connection_restarts_the_component() {
    let Some(redis) = PrivateRedis::start() else { return };
    let (id, topic) = (support::unique("linked-app"), support::unique("t"));
    let app = TestApp::start(vec![subscription("ps", &topic)], always_success()).await;
    let (rt, client) = support::start_ready(&format!(
        r#"
        [app]
        app_id = "{id}"
        grpc_callback_port = {}
        {SUPERVISOR}
        [pub_subs.ps]
        type = "redis"
        metadata = {{ redisHost = "{}" }}
        "#,
        app.port,
        redis.addr()
    ))
    .await;
    let delivered = |data: &'static [u8]| {
        let (client, topic, received) = (client.clone(), topic.clone(), app.received.clone());
        move || {
            let (mut client, topic, received) = (client.clone(), topic.clone(), received.clone());
            async move {
                if received.count(data) == 0 {
                    let _ = publish(&mut client, &topic, data).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                (received.count(data) > 0).then_some(())
            }
        }
    };
    eventually("the subscription to deliver", WAIT, delivered(b"before")).await;

    // Only the consumer's connection: the component's other one (publish,
    // acks, health check) is fine.
    kill_client_running(&redis.addr(), "xreadgroup").await;
    let reason = down_reason(&rt, "pub_subs/ps").await;
    assert!(reason.contains("background task 'stream consumer' failed"), "{reason}");
    up_after_restart(&rt, "pub_subs/ps").await;
    eventually("delivery to resume", WAIT, delivered(b"after")).await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_feed_that_loses_its_connection_restarts_the_component() {
    let Some(redis) = PrivateRedis::start() else { return };
    let (rt, mut c) = support::start_ready(&format!(
        r#"
        [app]
        app_id = "linked-feed"
        {SUPERVISOR}
        [config_store.c]
        type = "redis"
        metadata = {{ redisHost = "{}" }}
        "#,
        redis.addr()
    ))
    .await;
    save(&mut c, vec![item("k", "before")]).await.expect("save");
    let mut sub = Subscriber::open(&mut c, &["k"]).await;
    assert_eq!(sub.next(WAIT).await.content, "before");

    assert_eq!(
        kill_clients(&redis.addr(), "pubsub").await,
        1,
        "the feed's subscription"
    );
    let reason = down_reason(&rt, "config_store/c").await;
    assert!(
        reason.contains("background task 'change feed' failed") && reason.contains("lost its connection"),
        "{reason}"
    );
    up_after_restart(&rt, "config_store/c").await;
    // The same stream is sent the current values again, then later changes.
    let again = sub.next(WAIT).await;
    assert_eq!((again.key.as_str(), again.content.as_str()), ("k", "before"));
    save(&mut c, vec![item("k", "after")]).await.expect("save");
    let after = sub.until(WAIT, |i| i.content == "after").await;
    assert!(!is_deleted(&after));
    rt.shutdown().await;
}

/// Another tool writes a hash over an item (so reading it fails with
/// WRONGTYPE): subscribers must not hear a delete, and get the value once
/// the key holds one again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_item_that_cannot_be_read_is_not_a_delete() {
    if !support::backend_available("Redis", support::Service::Redis.addr()) {
        return;
    }
    let app = support::unique("cfg-wrongtype");
    let (rt, mut c) = support::start_ready(&format!(
        "[app]\napp_id = \"{app}\"\n[config_store.c]\ntype = \"redis\"\nmetadata = {{ redisHost = \"127.0.0.1:6379\" }}\n"
    ))
    .await;
    save(&mut c, vec![item("k", "v1")]).await.expect("save");
    let mut sub = Subscriber::open(&mut c, &["k"]).await;
    assert_eq!(sub.next(WAIT).await.content, "v1");

    let key = format!("layotto||config||{app}||default||default||k");
    let hash = support::unique("wrongtype-hash");
    let mut conn = redis_conn("127.0.0.1:6379").await;
    redis::cmd("HSET")
        .arg(&hash)
        .arg("content")
        .arg("not a string")
        .query_async::<()>(&mut conn)
        .await
        .expect("HSET");
    // A keyspace event for the item, whose GET now fails with WRONGTYPE.
    redis::cmd("RENAME")
        .arg(&hash)
        .arg(&key)
        .query_async::<()>(&mut conn)
        .await
        .expect("RENAME");
    sub.silent(Duration::from_millis(500)).await;

    redis::cmd("SET")
        .arg(&key)
        .arg(r#"{"content":"v2"}"#)
        .query_async::<()>(&mut conn)
        .await
        .expect("SET");
    let fixed = sub.next(WAIT).await;
    assert_eq!((fixed.key.as_str(), fixed.content.as_str()), ("k", "v2"));
    assert!(!is_deleted(&fixed));
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut conn)
        .await
        .expect("DEL");
    rt.shutdown().await;
}
