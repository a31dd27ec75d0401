//! Layotto's own sample configs (our copies in `config/layotto/`, pointed
//! at this machine's services) start unchanged and serve every API they
//! configure: each runs as a `layotto -c FILE` process, and every component
//! in its `grpc_config` answers a real call of its building block.
//!
//! Only the listeners move (free ports, a temporary unix socket), through
//! the environment, so parallel tests do not collide; the files themselves
//! are what a Layotto user has.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

use crate::file::S3Server;
use crate::support::{self, Service, Sidecar, backend_available, free_port, unique};

fn config_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/layotto").join(name)
}

/// The runtime filter's `grpc_config` of a Layotto config.
fn grpc_config(config: &Value) -> serde_json::Map<String, Value> {
    config["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["listeners"].as_array().into_iter().flatten())
        .flat_map(|l| l["filter_chains"].as_array().into_iter().flatten())
        .flat_map(|c| c["filters"].as_array().into_iter().flatten())
        .find_map(|f| f.pointer("/config/grpc_config").and_then(Value::as_object).cloned())
        .expect("the config has a runtime grpc filter")
}

/// The services a config's components need; `None` when one is down
/// outside CI (the test then skips, saying why).
fn services_up(services: &[Service]) -> bool {
    services.iter().all(|s| backend_available(s.name(), s.addr()))
}

/// Starts `name` as a process with its listeners moved: on TCP (or on a
/// fresh unix socket, when the file asks for one).
async fn start(text: &str, name: &str, dir: &Path) -> (Sidecar, RuntimeClient<Channel>) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    let mut envs: Vec<(String, String)> =
        vec![("LAYOTTO__SERVER__METRICS".into(), format!("127.0.0.1:{}", free_port()))];
    let socket = dir.join("client-proxy.sock");
    let unix = text.contains("\"network\": \"unix\"");
    if unix {
        envs.push(("LAYOTTO__SERVER__GRPC_SOCKET".into(), socket.display().to_string()));
    }
    let envs_ref: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sidecar = Sidecar::start_env(path, &envs_ref).await;
    let client = if unix {
        unix_client(&socket).await
    } else {
        support::client_at(sidecar.grpc_addr()).await
    };
    (sidecar, client)
}

/// A gRPC client over the unix socket at `path`.
async fn unix_client(path: &Path) -> RuntimeClient<Channel> {
    let path = path.to_path_buf();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .expect("connect over the unix socket");
    RuntimeClient::new(channel)
}

/// One real call to every component the config declares, by section.
async fn exercise(client: &mut RuntimeClient<Channel>, grpc_config: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut checked = Vec::new();
    let names = |section: &str| -> Vec<String> {
        grpc_config
            .get(section)
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    for hello in names("hellos") {
        let answer = client
            .say_hello(pb::SayHelloRequest {
                service_name: hello.clone(),
                name: "layotto".into(),
                data: None,
            })
            .await
            .unwrap_or_else(|e| panic!("SayHello on {hello}: {e:?}"))
            .into_inner();
        assert_eq!(answer.hello, "greeting, layotto", "{hello}");
        checked.push(format!("hellos.{hello}"));
    }
    for store in names("state") {
        let key = unique("layotto-config-key");
        client
            .save_state(pb::SaveStateRequest {
                store_name: store.clone(),
                states: vec![pb::StateItem {
                    key: key.clone(),
                    value: b"v1".to_vec(),
                    ..Default::default()
                }],
            })
            .await
            .unwrap_or_else(|e| panic!("SaveState on {store}: {e:?}"));
        let got = client
            .get_state(pb::GetStateRequest {
                store_name: store.clone(),
                key: key.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("GetState on {store}: {e:?}"))
            .into_inner();
        assert_eq!(got.data, b"v1", "{store}");
        client
            .delete_state(pb::DeleteStateRequest {
                store_name: store.clone(),
                key,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("DeleteState on {store}: {e:?}"));
        checked.push(format!("state.{store}"));
    }
    for store in names("lock") {
        let resource = unique("layotto-config-lock");
        let taken = client
            .try_lock(pb::TryLockRequest {
                store_name: store.clone(),
                resource_id: resource.clone(),
                lock_owner: "owner-a".into(),
                expire: 10,
            })
            .await
            .unwrap_or_else(|e| panic!("TryLock on {store}: {e:?}"))
            .into_inner();
        assert!(taken.success, "{store}");
        let second = client
            .try_lock(pb::TryLockRequest {
                store_name: store.clone(),
                resource_id: resource.clone(),
                lock_owner: "owner-b".into(),
                expire: 10,
            })
            .await
            .unwrap_or_else(|e| panic!("TryLock on {store}: {e:?}"))
            .into_inner();
        assert!(!second.success, "{store}: a held lock was taken again");
        let released = client
            .unlock(pb::UnlockRequest {
                store_name: store.clone(),
                resource_id: resource,
                lock_owner: "owner-a".into(),
            })
            .await
            .unwrap_or_else(|e| panic!("Unlock on {store}: {e:?}"))
            .into_inner();
        assert_eq!(released.status, pb::unlock_response::Status::Success as i32, "{store}");
        checked.push(format!("lock.{store}"));
    }
    for store in names("sequencer") {
        let key = unique("layotto-config-seq");
        let mut last = 0;
        for _ in 0..3 {
            let id = client
                .get_next_id(pb::GetNextIdRequest {
                    store_name: store.clone(),
                    key: key.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("GetNextId on {store}: {e:?}"))
                .into_inner()
                .next_id;
            assert!(id > last, "{store}: {id} after {last}");
            last = id;
        }
        checked.push(format!("sequencer.{store}"));
    }
    for pubsub in names("pub_subs") {
        client
            .publish_event(pb::PublishEventRequest {
                pubsub_name: pubsub.clone(),
                topic: unique("layotto-config-topic"),
                data: b"hello".to_vec(),
                data_content_type: "text/plain".into(),
                metadata: HashMap::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("PublishEvent on {pubsub}: {e:?}"));
        checked.push(format!("pub_subs.{pubsub}"));
    }
    for store in names("secret_store") {
        let local_file = grpc_config["secret_store"][&store]["type"] == "local.file";
        let key = if local_file { "db-user-pass:password" } else { "HOME" };
        let secret = client
            .get_secret(pb::GetSecretRequest {
                store_name: store.clone(),
                key: key.into(),
                metadata: HashMap::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("GetSecret {key} on {store}: {e:?}"))
            .into_inner();
        assert!(!secret.data.is_empty(), "{store}: {key} is empty");
        checked.push(format!("secret_store.{store}"));
    }
    for store in names("config_store") {
        let key = unique("layotto-config-item");
        client
            .save_configuration(pb::SaveConfigurationRequest {
                store_name: store.clone(),
                app_id: "app1".into(),
                items: vec![pb::ConfigurationItem {
                    key: key.clone(),
                    content: "content".into(),
                    ..Default::default()
                }],
                metadata: HashMap::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("SaveConfiguration on {store}: {e:?}"));
        let items = client
            .get_configuration(pb::GetConfigurationRequest {
                store_name: store.clone(),
                app_id: "app1".into(),
                keys: vec![key.clone()],
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("GetConfiguration on {store}: {e:?}"))
            .into_inner()
            .items;
        assert_eq!(items.len(), 1, "{store}: {items:?}");
        assert_eq!(items[0].content, "content", "{store}");
        client
            .delete_configuration(pb::DeleteConfigurationRequest {
                store_name: store.clone(),
                app_id: "app1".into(),
                keys: vec![key],
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("DeleteConfiguration on {store}: {e:?}"));
        checked.push(format!("config_store.{store}"));
    }
    checked
}

/// Starts a config (after `edit`, which points it at private servers) and
/// exercises all its components; returns what it checked.
async fn serves(name: &str, services: &[Service], edit: impl FnOnce(String) -> String) -> Option<Vec<String>> {
    if !services_up(services) {
        return None;
    }
    let text = edit(std::fs::read_to_string(config_path(name)).expect("read config"));
    let config: Value = serde_json::from_str(&text).expect("the config is JSON");
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut sidecar, mut client) = start(&text, name, dir.path()).await;
    let checked = exercise(&mut client, &grpc_config(&config)).await;
    sidecar.kill().await;
    Some(checked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_json_serves_its_apis() {
    let checked = serves("config.json", &[], |t| t).await.expect("no services needed");
    for section in [
        "hellos.helloworld",
        "state.state_demo",
        "lock.lock_demo",
        "pub_subs.pub_subs_demo",
    ] {
        assert!(checked.contains(&section.to_owned()), "{checked:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_standalone_json_serves_its_apis() {
    let checked = serves("config_standalone.json", &[], |t| t)
        .await
        .expect("no services needed");
    assert!(checked.contains(&"secret_store.secret_demo".to_owned()), "{checked:?}");
    assert!(checked.contains(&"sequencer.sequencer_demo".to_owned()), "{checked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_redis_json_serves_its_apis() {
    if let Some(checked) = serves("config_redis.json", &[Service::Redis], |t| t).await {
        assert_eq!(checked.len(), 5, "{checked:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_config_json_serves_its_apis() {
    if let Some(checked) = serves("runtime_config.json", &[Service::Etcd], |t| t).await {
        assert_eq!(checked.len(), 4, "{checked:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_zookeeper_json_serves_its_apis() {
    if let Some(checked) = serves("config_zookeeper.json", &[Service::Zookeeper], |t| t).await {
        assert_eq!(
            checked,
            ["hellos.helloworld", "lock.lock_demo", "sequencer.sequencer_demo"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_integrate_test_json_serves_its_apis() {
    let services = [Service::Redis, Service::Etcd, Service::Zookeeper];
    if let Some(checked) = serves("config_integrate_test.json", &services, |t| t).await {
        // One hello, a config store, two state stores, three locks, three
        // sequencers, a broker and a secret store.
        assert_eq!(checked.len(), 12, "{checked:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_snowflake_json_serves_its_apis() {
    if let Some(checked) = serves("config_snowflake.json", &[Service::Mariadb], |t| t).await {
        assert_eq!(checked, ["hellos.helloworld", "sequencer.sequencer_demo"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_uds_json_serves_on_its_unix_socket() {
    let checked = serves("config_uds.json", &[], |t| t).await.expect("no services needed");
    assert_eq!(checked, ["hellos.helloworld"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_json_serves_its_file_store() {
    let Some(s3) = S3Server::start().await else {
        return;
    };
    let bucket = unique("layotto-config-bucket");
    s3.create_bucket(&bucket).await;
    let text = std::fs::read_to_string(config_path("config_file.json"))
        .expect("read")
        .replace("\"127.0.0.1:9000\"", &format!("\"{}\"", s3.endpoint()));
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut sidecar, mut client) = start(&text, "config_file.json", dir.path()).await;
    let name = format!("{bucket}/{}", unique("file"));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::PutFileRequest {
        store_name: "file_demo".into(),
        name: name.clone(),
        data: b"file body".to_vec(),
        metadata: HashMap::new(),
    })
    .await
    .expect("queue the put");
    drop(tx);
    client
        .put_file(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("PutFile");
    let mut stream = client
        .get_file(pb::GetFileRequest {
            store_name: "file_demo".into(),
            name,
            metadata: HashMap::new(),
        })
        .await
        .expect("GetFile")
        .into_inner();
    let mut body = Vec::new();
    while let Some(chunk) = stream.message().await.expect("GetFile chunk") {
        body.extend(chunk.data);
    }
    assert_eq!(body, b"file body");
    sidecar.kill().await;
}

/// A Layotto config whose metrics sink names a port serves `/metrics` there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_sink_port_serves_prometheus_metrics() {
    let port = free_port();
    let text = std::fs::read_to_string(config_path("config.json"))
        .expect("read")
        .replace("\"port\": 34903", &format!("\"port\": {port}"));
    assert!(
        text.contains(&format!("\"port\": {port}")),
        "config.json has a metrics sink on 34903"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.json");
    std::fs::write(&path, text).expect("write");
    let mut sidecar = Sidecar::start_env(path, &[]).await;
    let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("the metrics port answers")
        .text()
        .await
        .expect("a body");
    assert!(body.contains("# TYPE"), "{body}");
    sidecar.kill().await;
}

/// Types whose servers cannot run here fail validation naming the path and
/// the type, as do sections this runtime does not have.
#[test]
fn unimplemented_types_fail_validation_naming_path_and_type() {
    let base: Value =
        serde_json::from_str(&std::fs::read_to_string(config_path("config.json")).expect("read")).expect("json");
    let cases = [
        ("config_store", "apollo"),
        ("config_store", "nacos"),
        ("state", "mongo"),
        ("lock", "consul"),
        ("lock", "mongo"),
        ("sequencer", "mongo"),
        ("file", "aliyun.oss"),
        ("file", "tencentcloud.oss"),
        ("file", "qiniu.oss"),
        ("secret_store", "aws.secretmanager"),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    for (section, type_name) in cases {
        let mut config = base.clone();
        let grpc = config
            .pointer_mut("/servers/0/listeners/0/filter_chains/0/filters/0/config/grpc_config")
            .and_then(Value::as_object_mut)
            .expect("grpc_config");
        grpc.insert(
            section.into(),
            serde_json::json!({ "demo": { "type": type_name, "metadata": {} } }),
        );
        let path = dir.path().join(format!("{section}-{type_name}.json"));
        std::fs::write(&path, config.to_string()).expect("write");
        let out = std::process::Command::new(support::layotto_bin())
            .arg("validate")
            .arg("-c")
            .arg(&path)
            .output()
            .expect("layotto runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{section}/{type_name}: {stderr}");
        assert!(
            stderr.contains(&format!("{section}.demo")) && stderr.contains(type_name),
            "{section}/{type_name}: {stderr}"
        );
    }
}

/// MOSN settings with no meaning here are reported once, at info, by path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_mosn_keys_are_logged_by_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("sidecar.log");
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(config_path("config.json"))
        .expect("read")
        .replace("\"port\": 34903", &format!("\"port\": {}", free_port()));
    std::fs::write(&path, text).expect("write");
    let mut sidecar = Sidecar::start_logged(path, log.clone()).await;
    let text = support::eventually("the start-up log", Duration::from_secs(10), || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("Layotto is serving"))
        }
    })
    .await;
    for path in [
        "tracing (a MOSN setting)",
        "dynamic_resources (a MOSN setting)",
        "static_resources (a MOSN setting)",
        "servers[0].default_log_level",
        "servers[0].listeners[0].bind_port",
        "grpc_config.custom_component.helloworld",
    ] {
        assert!(text.contains(path), "{path} is not reported:\n{text}");
    }
    sidecar.kill().await;
}
