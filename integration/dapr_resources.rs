//! A `dapr run`-style launch of the binary: no config file, a folder of
//! Dapr Component and Subscription YAML written as Dapr's docs show them
//! (keys this sidecar does not read included), and daprd's flags.

use std::time::Duration;

use serde_json::{Value, json};

use crate::apps::{HttpApp, http_success};
use crate::support::{self, Service, eventually, free_port};

const STATE: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.redis
  version: v1
  metadata:
  - name: redisHost
    value: localhost:6379
  - name: redisPassword
    value: ""
  - name: actorStateStore
    value: "true"
"#;

const PUBSUB: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.rabbitmq
  version: v1
  metadata:
  - name: connectionString
    value: "amqp://localhost:5672"
  - name: durable
    value: "false"
  - name: deletedWhenUnused
    value: "false"
  - name: autoAck
    value: "false"
  - name: reconnectWait
    value: "0"
  - name: concurrency
    value: parallel
"#;

const MORE: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: lockstore
spec:
  type: lock.redis
  version: v1
  metadata:
  - name: redisHost
    value: localhost:6379
  - name: redisPassword
    secretKeyRef:
      name: redis-password
      key: redis-password
auth:
  secretStore: localsecretstore
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: localsecretstore
spec:
  type: secretstores.local.file
  version: v1
  metadata:
  - name: secretsFile
    value: SECRETS
  - name: nestedSeparator
    value: ":"
"#;

const SUBSCRIPTION: &str = r#"apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: order-pub-sub
spec:
  topic: TOPIC
  routes:
    default: /checkout
  pubsubname: pubsub
scopes:
- orderprocessing
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_dapr_resources_starts_with_daprd_flags_and_serves() {
    if !support::backend_available(Service::Redis.name(), Service::Redis.addr())
        || !support::backend_available(Service::Rabbitmq.name(), Service::Rabbitmq.addr())
    {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = support::unique("orders");
    let secrets = dir.path().join("secrets.json");
    // An empty password: the lock's secretKeyRef resolves to "" (no AUTH).
    std::fs::write(&secrets, r#"{"redis-password": ""}"#).expect("secrets");
    let resources = dir.path().join("components");
    std::fs::create_dir(&resources).expect("folder");
    for (name, text) in [
        ("statestore.yaml", STATE.to_owned()),
        ("pubsub.yaml", PUBSUB.to_owned()),
        ("more.yaml", MORE.replace("SECRETS", &secrets.display().to_string())),
        ("subscription.yaml", SUBSCRIPTION.replace("TOPIC", &topic)),
    ] {
        std::fs::write(resources.join(name), text).expect("write");
    }
    let app = HttpApp::start(Value::Null, http_success()).await;
    let (grpc, http, metrics, actuator) = (free_port(), free_port(), free_port(), free_port());
    let mut child = tokio::process::Command::new(support::layotto_bin())
        .args(["start", "--resources-path"])
        .arg(&resources)
        // daprd's one-dash spelling, and flags `dapr run` passes that this
        // sidecar accepts without using.
        .args(["-app-id", "orderprocessing", "--app-port", &app.port.to_string()])
        .args(["--placement-host-address", "localhost:50005", "--enable-metrics"])
        .args(["--app-max-concurrency", "-1"])
        .args([
            "--dapr-grpc-port",
            &grpc.to_string(),
            "--dapr-http-port",
            &http.to_string(),
        ])
        .args(["--metrics-port", &metrics.to_string(), "--log-level", "warn"])
        .args(["--dapr-listen-addresses", "127.0.0.1"])
        // The native overrides still apply, under the flags.
        .env("LAYOTTO__SERVER__ACTUATOR", format!("127.0.0.1:{actuator}"))
        .env("LAYOTTO__SERVER__DAPR_HTTP", "127.0.0.1:1")
        .env_remove("DAPR_API_TOKEN")
        .env_remove("APP_ID")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("layotto starts");
    let base = format!("http://127.0.0.1:{http}/v1.0");
    eventually("the sidecar", Duration::from_secs(60), || async {
        matches!(reqwest::get(format!("{base}/healthz")).await, Ok(r) if r.status() == 204).then_some(())
    })
    .await;

    // Only the resources: the embedded default's components are absent.
    let metadata: Value = reqwest::get(format!("{base}/metadata"))
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(metadata["id"], "orderprocessing");
    let mut types: Vec<String> = metadata["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| {
            format!(
                "{}={}",
                c["name"].as_str().unwrap_or_default(),
                c["type"].as_str().unwrap_or_default()
            )
        })
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "localsecretstore=secretstores.local.file",
            "lockstore=lock.redis",
            "pubsub=pubsub.rabbitmq",
            "statestore=state.redis"
        ]
    );

    // State: keys are scoped by app id, as Dapr scopes them.
    let http_client = reqwest::Client::new();
    let key = support::unique("k");
    let saved = http_client
        .post(format!("{base}/state/statestore"))
        .json(&json!([{ "key": key, "value": { "n": 1 } }]))
        .send()
        .await
        .expect("save");
    assert_eq!(saved.status(), 204);
    let redis = redis::Client::open("redis://127.0.0.1:6379").expect("redis client");
    let mut conn = redis.get_multiplexed_async_connection().await.expect("redis");
    let stored: Option<String> = redis::cmd("HGET")
        .arg(format!("orderprocessing||{key}"))
        .arg("data")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(stored.as_deref(), Some(r#"{"n":1}"#));
    let _: () = redis::cmd("DEL")
        .arg(format!("orderprocessing||{key}"))
        .query_async(&mut conn)
        .await
        .expect("DEL");

    // Pub/sub through the declarative subscription, over RabbitMQ, to the
    // HTTP app on --app-port.
    support::eventually("the subscription", Duration::from_secs(20), || async {
        let m: Value = reqwest::get(format!("{base}/metadata")).await.ok()?.json().await.ok()?;
        (m["subscriptions"][0]["type"] == "DECLARATIVE").then_some(())
    })
    .await;
    let published = http_client
        .post(format!("{base}/publish/pubsub/{topic}"))
        .json(&json!({ "orderId": 7 }))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 204);
    assert_eq!(
        app.wait_at("/checkout", 1, Duration::from_secs(20)).await,
        [json!({ "orderId": 7 })]
    );

    // The lock resolved its secretKeyRef and serves.
    let locked: Value = http_client
        .post(format!("http://127.0.0.1:{http}/v1.0-alpha1/lock/lockstore"))
        .json(&json!({ "resourceId": support::unique("r"), "lockOwner": "me", "expiryInSeconds": 5 }))
        .send()
        .await
        .expect("lock")
        .json()
        .await
        .expect("json");
    assert_eq!(locked, json!({ "success": true }));

    // --dapr-grpc-port serves both gRPC APIs; --metrics-port the metrics.
    let mut dapr =
        layotto::proto::dapr::runtime::v1::dapr_client::DaprClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .expect("grpc");
    let meta = dapr
        .get_metadata(layotto::proto::dapr::runtime::v1::GetMetadataRequest {})
        .await
        .expect("GetMetadata")
        .into_inner();
    assert_eq!(meta.id, "orderprocessing");
    let text = reqwest::get(format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(text.contains("layotto_"), "Prometheus text on the metrics port");

    let _ = child.start_kill();
    let _ = child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_of_a_type_we_lack_stops_the_launch_naming_file_and_type() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("cosmos.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: cosmos\nspec:\n  type: state.azure.cosmosdb\n  version: v1\n",
    )
    .expect("write");
    let out = tokio::process::Command::new(support::layotto_bin())
        .args(["start", "--resources-path"])
        .arg(dir.path())
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cosmos.yaml: spec.type") && stderr.contains("state.azure.cosmosdb"),
        "{stderr}"
    );
}
