//! Dapr's HTTP app channel: programmatic subscriptions from `GET
//! /dapr/subscribe`, CloudEvents POSTed to the route a CEL rule picks, the
//! app's answer read as daprd reads it (RETRY redelivers, DROP and 404 go
//! to the dead-letter topic), declarative subscriptions, app health checks
//! that pause deliveries, configuration updates POSTed to the app, and the
//! metadata API describing all of it.

use std::time::Duration;

use layotto::proto::dapr::runtime::v1 as dapr;
use layotto::proto::dapr::runtime::v1::dapr_client::DaprClient;
use serde_json::{Value, json};

use crate::apps::{HttpAnswer, HttpApp, http_success};
use crate::support;

fn sidecar_config(app_port: u16, extra: &str) -> String {
    format!(
        r#"
[app]
app_id = "http-app"
protocol = "http"
port = {app_port}
[pub_subs.ps]
type = "in-memory"
[state.s]
type = "in-memory"
[config_store.cfg]
type = "in-memory"
{extra}
"#
    )
}

async fn publish(rt: &layotto::Runtime, topic: &str, data: Value) {
    let url = format!(
        "http://{}/v1.0/publish/ps/{topic}",
        rt.dapr_http_addr().expect("dapr http")
    );
    let response = reqwest::Client::new()
        .post(url)
        .json(&data)
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
}

/// Waits until the metadata lists `n` subscriptions (each stands).
async fn wait_subscribed(rt: &layotto::Runtime, n: usize) -> Value {
    let url = format!("http://{}/v1.0/metadata", rt.dapr_http_addr().expect("http"));
    support::eventually("the subscriptions", Duration::from_secs(10), || async {
        let m: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
        (m["subscriptions"].as_array().map(Vec::len) == Some(n)).then_some(m)
    })
    .await
}

/// Answers by the event's `data.kind`: `retry` is RETRY the first time,
/// `drop` is DROP, `gone` is a 404, `fail` is a 500 every time.
fn by_kind() -> HttpAnswer {
    std::sync::Arc::new(|_path, event, before| {
        let kind = event["data"]["kind"].as_str().unwrap_or_default();
        match (kind, before) {
            ("retry", 0) => (200, r#"{"status":"RETRY"}"#.into()),
            ("drop", _) => (200, r#"{"status":"DROP"}"#.into()),
            ("gone", _) => (404, String::new()),
            ("fail", _) => (500, "boom".into()),
            // No body at all is SUCCESS too.
            _ => (200, String::new()),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_app_gets_routed_events_retries_and_dead_letters() {
    let topic = support::unique("orders");
    let dead = format!("{topic}-dead");
    let subscribe = json!([
        {
            "pubsubname": "ps",
            "topic": topic,
            "routes": {
                "rules": [{ "match": "event.data.kind == \"big\"", "path": "/big" }],
                "default": "orders"
            },
            "deadLetterTopic": dead,
            "metadata": { "maxRetries": "2" }
        },
        { "pubsubName": "ps", "topic": dead, "route": "/dead" },
        { "pubsubname": "ps", "topic": "no-route" }
    ]);
    let app = HttpApp::start(subscribe, by_kind()).await;
    let config = sidecar_config(app.port, "").replace(
        "protocol = \"http\"",
        "protocol = \"http\"\napi_token = \"app-t0ken\"\nmax_concurrency = 2",
    );
    let rt = support::start(&config).await;
    support::wait_ready(&rt).await;
    // The subscriptions stand once the metadata lists them.
    let metadata = wait_subscribed(&rt, 2).await;
    let ours = metadata["subscriptions"]
        .as_array()
        .and_then(|subs| subs.iter().find(|s| s["topic"] == topic))
        .cloned()
        .expect("listed");
    assert_eq!(ours["type"], "PROGRAMMATIC");
    assert_eq!(ours["deadLetterTopic"], dead);
    assert_eq!(
        ours["rules"],
        json!([{ "match": "event.data.kind == \"big\"", "path": "/big" }, { "path": "/orders" }])
    );
    assert_eq!(
        metadata["appConnectionProperties"],
        json!({ "port": app.port, "protocol": "http", "channelAddress": "127.0.0.1", "maxConcurrency": 2 })
    );

    for kind in ["big", "small", "retry", "drop", "gone", "fail"] {
        publish(&rt, &topic, json!({ "kind": kind })).await;
    }
    assert_eq!(
        app.wait_at("/big", 1, Duration::from_secs(10)).await,
        [json!({"kind": "big"})]
    );
    // RETRY is delivered again; the second answer (success) settles it.
    let count = |k: &str| app.data_at("/orders").iter().filter(|d| d["kind"] == k).count();
    support::eventually("the retried event again", Duration::from_secs(10), || async {
        (count("retry") == 2).then_some(())
    })
    .await;
    assert_eq!(count("small"), 1);
    // DROP, 404, and a 500 past maxRetries go to the dead-letter topic,
    // which the app consumes like any other.
    let dead_letters = app.wait_at("/dead", 3, Duration::from_secs(20)).await;
    let mut kinds: Vec<&str> = dead_letters.iter().filter_map(|d| d["kind"].as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["drop", "fail", "gone"]);
    assert_eq!(
        app.data_at("/orders").iter().filter(|d| d["kind"] == "fail").count(),
        3,
        "1 + maxRetries tries"
    );

    // What the app saw is a CloudEvent, with daprd's headers.
    let delivery = app.received().into_iter().find(|d| d.path == "/big").expect("big");
    assert_eq!(delivery.headers["content-type"], "application/cloudevents+json");
    assert_eq!(delivery.headers.get("pubsubname").map(String::as_str), Some("ps"));
    assert_eq!(
        delivery.headers.get("dapr-api-token").map(String::as_str),
        Some("app-t0ken"),
        "APP_API_TOKEN travels with every callback"
    );
    assert_eq!(delivery.body["topic"], topic);
    assert_eq!(delivery.body["pubsubname"], "ps");
    assert_eq!(delivery.body["type"], "com.dapr.event.sent");
    assert_eq!(delivery.body["source"], "http-app");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarative_subscriptions_reach_an_app_without_dapr_subscribe() {
    let topic = support::unique("declared");
    let app = HttpApp::start(Value::Null, http_success()).await;
    let extra = format!(
        r#"
[subscriptions.declared]
pubsub_name = "ps"
topic = "{topic}"
routes = {{ rules = [{{ match = 'event.data.n > 10', path = "/large" }}], default = "/small" }}
"#
    );
    let rt = support::start(&sidecar_config(app.port, &extra)).await;
    support::wait_ready(&rt).await;
    let mut client = DaprClient::connect(format!("http://{}", rt.grpc_addr()))
        .await
        .expect("connect");
    let metadata = support::eventually("the declared subscription", Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let m = client
                .get_metadata(dapr::GetMetadataRequest {})
                .await
                .ok()?
                .into_inner();
            (!m.subscriptions.is_empty()).then_some(m)
        }
    })
    .await;
    assert_eq!(
        metadata.subscriptions[0].r#type,
        dapr::PubsubSubscriptionType::Declarative as i32
    );
    let props = metadata.app_connection_properties.expect("app connection");
    assert_eq!((props.port, props.protocol.as_str()), (i32::from(app.port), "http"));
    for n in [5, 50] {
        publish(&rt, &topic, json!({ "n": n })).await;
    }
    assert_eq!(
        app.wait_at("/large", 1, Duration::from_secs(10)).await,
        [json!({"n": 50})]
    );
    assert_eq!(
        app.wait_at("/small", 1, Duration::from_secs(10)).await,
        [json!({"n": 5})]
    );
    let _ = client.shutdown(dapr::ShutdownRequest {}).await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_app_gets_no_events_then_all_of_them_once_it_recovers() {
    let topic = support::unique("health");
    let subscribe = json!([{ "pubsubname": "ps", "topic": topic, "route": "/events" }]);
    let app = HttpApp::start(subscribe, http_success()).await;
    let extra = "[app.health_check]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nthreshold = 1\n";
    let config = sidecar_config(app.port, "").replace("[pub_subs.ps]", &format!("{extra}[pub_subs.ps]"));
    let rt = support::start(&config).await;
    support::wait_ready(&rt).await;
    wait_subscribed(&rt, 1).await;
    publish(&rt, &topic, json!({ "n": 0 })).await;
    app.wait_at("/events", 1, Duration::from_secs(10)).await;

    app.set_healthy(false);
    support::eventually("the app seen unhealthy", Duration::from_secs(5), || async {
        let (code, body) = support::readiness(&rt).await;
        (code == 503 && body["components"]["app"]["status"] == "DOWN").then_some(())
    })
    .await;
    for n in 1..=20 {
        publish(&rt, &topic, json!({ "n": n })).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        app.data_at("/events").len(),
        1,
        "nothing is delivered to an unhealthy app"
    );
    let meta: Value = reqwest::get(format!("http://{}/v1.0/metadata", rt.dapr_http_addr().expect("http")))
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(meta["extended"]["appHealth"], "UNHEALTHY");
    assert_eq!(meta["appConnectionProperties"]["health"]["healthCheckPath"], "/healthz");
    assert_eq!(
        meta["appConnectionProperties"]["health"]["healthProbeInterval"],
        "100ms"
    );

    app.set_healthy(true);
    let events = app.wait_at("/events", 21, Duration::from_secs(15)).await;
    let mut seen: Vec<i64> = events.iter().filter_map(|d| d["n"].as_i64()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..=20).collect::<Vec<_>>(), "every event once");
    let (code, body) = support::readiness(&rt).await;
    assert_eq!((code, &body["components"]["app"]["status"]), (200, &json!("UP")));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_subscriptions_over_http_post_changes_to_the_app() {
    let app = HttpApp::start(Value::Null, http_success()).await;
    let rt = support::start(&sidecar_config(app.port, "")).await;
    support::wait_ready(&rt).await;
    let base = format!("http://{}/v1.0", rt.dapr_http_addr().expect("http"));
    let http = reqwest::Client::new();
    let key = support::unique("flag");
    let subscribed: Value = http
        .get(format!("{base}/configuration/cfg/subscribe?key={key}"))
        .send()
        .await
        .expect("subscribe")
        .json()
        .await
        .expect("json");
    let id = subscribed["id"].as_str().expect("an id").to_owned();

    // A change made through the Layotto API reaches the app as a POST.
    support::save_configuration(&rt, "cfg", "http-app", &key, "on").await;
    let path = format!("/configuration/cfg/{key}");
    let update = support::eventually("the update POSTed", Duration::from_secs(10), || async {
        app.received()
            .into_iter()
            .find(|d| d.path == path && d.body["items"][&key]["value"] == "on")
    })
    .await;
    assert_eq!(update.body["id"], id);

    let ok: Value = http
        .get(format!("{base}/configuration/cfg/{id}/unsubscribe"))
        .send()
        .await
        .expect("unsubscribe")
        .json()
        .await
        .expect("json");
    assert_eq!(ok, json!({ "ok": true }));
    let again = http
        .get(format!("{base}/configuration/cfg/{id}/unsubscribe"))
        .send()
        .await
        .expect("unsubscribe again");
    assert_eq!(again.status(), reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = again.json().await.expect("json");
    assert_eq!(body["ok"], false);
    assert!(
        body["message"].as_str().unwrap_or_default().contains("does not exist"),
        "{body}"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_subscription_without_an_http_app_is_refused_as_daprd_does() {
    let rt = support::start("[config_store.cfg]\ntype = \"in-memory\"\n").await;
    support::wait_ready(&rt).await;
    let url = format!(
        "http://{}/v1.0/configuration/cfg/subscribe?key=a",
        rt.dapr_http_addr().expect("http")
    );
    let response = reqwest::get(url).await.expect("subscribe");
    assert_eq!(response.status(), reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errorCode"], "ERR_APP_CHANNEL_NIL");
    rt.shutdown().await;
}
