//! API plugins, end to end on the `layotto` binary: the example `counter`
//! plugin served when configured (natively or through Layotto's
//! `grpc_config.extends`), correct under concurrent increments, its bad
//! input refused, listed by reflection and named by the metrics; absent
//! when not configured; an unknown plugin refused at validation.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use futures::StreamExt;
use layotto::proto::plugins::counter::v1 as pb;
use layotto::proto::plugins::counter::v1::counter_client::CounterClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::{self, Sidecar};

const STORES: &str = r#"
[app]
app_id = "app1"
[state.counters]
type = "in-memory"
[lock.counter_locks]
type = "in-memory"
"#;

const COUNTER: &str = r#"
[plugins.counter]
state_store = "counters"
lock_store = "counter_locks"
"#;

const SERVICE: &str = "layotto.plugins.counter.v1.Counter";

async fn counter_client(sidecar: &Sidecar) -> CounterClient<Channel> {
    CounterClient::connect(format!("http://{}", sidecar.grpc_addr()))
        .await
        .expect("connects to the sidecar")
}

async fn increment(client: &mut CounterClient<Channel>, key: &str, delta: i64) -> Result<i64, tonic::Status> {
    let request = pb::IncrementRequest { key: key.into(), delta };
    Ok(client.increment(request).await?.into_inner().value)
}

async fn get(client: &mut CounterClient<Channel>, key: &str) -> Result<i64, tonic::Status> {
    Ok(client.get(pb::GetRequest { key: key.into() }).await?.into_inner().value)
}

/// `layotto validate -c path`: its exit code and stderr.
fn validate(path: &Path) -> (Option<i32>, String) {
    let mut cmd = Command::new(support::layotto_bin());
    for (key, _) in std::env::vars() {
        if key.starts_with("LAYOTTO__") || key == "RUNTIME_CONFIG" {
            cmd.env_remove(key);
        }
    }
    let out = cmd.arg("validate").arg("-c").arg(path).output().expect("layotto runs");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_plugin_counts_every_concurrent_increment_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sidecar = Sidecar::start_with(dir.path(), "counter", &format!("{STORES}{COUNTER}")).await;
    let client = counter_client(&sidecar).await;
    let key = support::unique("visits");

    const TASKS: i64 = 4;
    const EACH: i64 = 25;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (mut client, key) = (client.clone(), key.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..EACH {
                    seen.push(increment(&mut client, &key, 1).await.expect("increment"));
                }
                seen
            })
        })
        .collect();
    let mut answers = BTreeSet::new();
    for task in tasks {
        for value in task.await.expect("task") {
            assert!(answers.insert(value), "two increments answered {value}");
        }
    }
    // Every increment saw its own value: none was lost or doubled.
    assert_eq!(answers, (1..=TASKS * EACH).collect::<BTreeSet<_>>());
    let mut client = client;
    assert_eq!(get(&mut client, &key).await.expect("get"), TASKS * EACH);

    assert_eq!(increment(&mut client, &key, -40).await.expect("negative delta"), 60);
    assert_eq!(get(&mut client, "never-incremented").await.expect("get"), 0);

    // Bad input is INVALID_ARGUMENT, naming what is wrong.
    let empty = increment(&mut client, "", 1).await.expect_err("empty key");
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    assert!(empty.message().contains("key is empty"), "{empty:?}");
    let empty = get(&mut client, "").await.expect_err("empty key");
    assert_eq!(empty.code(), Code::InvalidArgument, "{empty:?}");
    let overflow = increment(&mut client, &key, i64::MAX).await.expect_err("overflow");
    assert_eq!(overflow.code(), Code::InvalidArgument, "{overflow:?}");
    assert!(overflow.message().contains("delta"), "{overflow:?}");
    assert_eq!(
        get(&mut client, &key).await.expect("get"),
        60,
        "a refused increment changes nothing"
    );

    client
        .reset(pb::ResetRequest { key: key.clone() })
        .await
        .expect("reset");
    assert_eq!(get(&mut client, &key).await.expect("get"), 0);
    assert_eq!(increment(&mut client, &key, 2).await.expect("after reset"), 2);

    // Reflection lists the plugin's service; the metrics name its methods.
    let channel = Channel::from_shared(format!("http://{}", sidecar.grpc_addr()))
        .expect("valid uri")
        .connect()
        .await
        .expect("connects");
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let reply = replies.next().await.expect("one reply").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&SERVICE.to_owned()), "{names:?}");

    let (_, text) = support::http_get(&format!("http://{}/metrics", sidecar.actuator_addr())).await;
    let labels = [("service", SERVICE), ("method", "Increment"), ("code", "OK")];
    let ok = support::metric(&text, "layotto_grpc_requests_total", &labels).unwrap_or(0.0);
    assert!(ok >= (TASKS * EACH) as f64, "{ok} OK increments counted in:\n{text}");
    let labels = [
        ("service", SERVICE),
        ("method", "Increment"),
        ("code", "INVALID_ARGUMENT"),
    ];
    assert_eq!(
        support::metric(&text, "layotto_grpc_requests_total", &labels),
        Some(2.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_not_configured_is_not_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sidecar = Sidecar::start_with(dir.path(), "plain", STORES).await;
    let mut client = counter_client(&sidecar).await;
    let e = increment(&mut client, "k", 1).await.expect_err("not served");
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    assert!(e.message().contains(SERVICE), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layottos_extends_configure_the_plugin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.json");
    let json = serde_json::json!({
        "servers": [{"listeners": [{
            "name": "grpc",
            "address": "127.0.0.1:34904",
            "filter_chains": [{"filters": [{"type": "grpc", "config": {
                "server_name": "runtime",
                "grpc_config": {
                    "app": {"app_id": "app1"},
                    "state": {"counters": {"type": "in-memory"}},
                    "lock": {"counter_locks": {"type": "in-memory"}},
                    "extends": {"counter": {"state_store": "counters", "lock_store": "counter_locks"}}
                }
            }}]}]
        }]}]
    });
    std::fs::write(&path, json.to_string()).expect("write config");
    let sidecar = Sidecar::start_env(path, &[]).await;
    let mut client = counter_client(&sidecar).await;
    assert_eq!(increment(&mut client, "k", 5).await.expect("served"), 5);
    assert_eq!(get(&mut client, "k").await.expect("served"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_plugins_and_bad_settings_fail_validation_naming_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");

    let path = dir.path().join("unknown.toml");
    std::fs::write(&path, format!("{STORES}{COUNTER}[plugins.metering]\nrate = 1\n")).expect("write");
    let (code, stderr) = validate(&path);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("plugins.metering: unknown API plugin 'metering'"),
        "{stderr}"
    );

    let path = dir.path().join("settings.toml");
    std::fs::write(&path, format!("{STORES}[plugins.counter]\nstate_store = \"nope\"\n")).expect("write");
    let (code, stderr) = validate(&path);
    assert_eq!(code, Some(64), "{stderr}");
    for expected in [
        "plugins.counter.state_store: names state component 'nope', which is not configured",
        "plugins.counter.lock_store: required",
    ] {
        assert!(stderr.contains(expected), "{expected} in: {stderr}");
    }

    // Layotto's file: the problem is named by its own path, and `start`
    // refuses it the same way.
    let path = dir.path().join("config.json");
    let json = serde_json::json!({
        "servers": [{"listeners": [{"address": "127.0.0.1:34904", "filter_chains": [{"filters": [
            {"type": "grpc", "config": {"server_name": "runtime", "grpc_config": {"extends": {"metering": {}}}}}
        ]}]}]}]
    });
    std::fs::write(&path, json.to_string()).expect("write config");
    let (code, stderr) = validate(&path);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("grpc_config.extends.metering: unknown API plugin"),
        "{stderr}"
    );
    let out = Command::new(support::layotto_bin())
        .arg("start")
        .arg("-c")
        .arg(&path)
        .env("LAYOTTO__SERVER__GRPC", format!("127.0.0.1:{}", support::free_port()))
        .output()
        .expect("layotto runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("grpc_config.extends.metering"), "{stderr}");
}
