//! Hot reload, end to end: a sidecar process whose config file changes
//! (rewritten in place, or replaced by a rename) takes the change without a
//! restart, under load, failing no call; an invalid edit changes nothing
//! and is reported in readiness.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use redis::AsyncCommands;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{self, Service, Sidecar, backend_available, eventually, unique};

/// The config with store `a` on Redis database `db`, plus what `extra`
/// adds.
fn config(db: u8, extra: &str) -> String {
    format!(
        "[state.a]\ntype = \"redis\"\nmetadata = {{ redisHost = \"127.0.0.1:6379\", redisDB = \"{db}\", keyPrefix = \"none\" }}\n{extra}"
    )
}

const B: &str = "[state.b]\ntype = \"in-memory\"\n";

/// Replaces the file as editors and ConfigMap updates do: a new file
/// renamed over it.
fn replace(path: &Path, text: &str) {
    let next = path.with_extension("toml.next");
    std::fs::write(&next, text).expect("write the new config");
    std::fs::rename(&next, path).expect("rename it over the old one");
}

/// The `config_reload` note in readiness, once it mentions `what`.
async fn reload_note(sidecar: &Sidecar, what: &str) -> String {
    let url = format!("http://{}/actuator/health/readiness", sidecar.actuator_addr());
    eventually(
        &format!("readiness to report '{what}'"),
        Duration::from_secs(20),
        || {
            let url = url.clone();
            async move {
                let body: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
                let reason = body["components"]["config_reload"]["details"]["reason"]
                    .as_str()?
                    .to_owned();
                reason.contains(what).then_some(reason)
            }
        },
    )
    .await
}

async fn save(client: &mut RuntimeClient<Channel>, store: &str, key: &str, value: &str) -> Result<(), tonic::Status> {
    client
        .save_state(pb::SaveStateRequest {
            store_name: store.into(),
            states: vec![pb::StateItem {
                key: key.into(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            }],
        })
        .await
        .map(drop)
}

async fn get(client: &mut RuntimeClient<Channel>, store: &str, key: &str) -> Result<Vec<u8>, tonic::Status> {
    client
        .get_state(pb::GetStateRequest {
            store_name: store.into(),
            key: key.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().data)
}

/// Calls to `store` in a loop until `stop`; counts them and their failures.
fn load(
    client: RuntimeClient<Channel>,
    store: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<tonic::Status>)> {
    tokio::spawn(async move {
        let mut client = client;
        let calls = AtomicU64::new(0);
        let mut failures = Vec::new();
        let key = unique("reload-load");
        while !stop.load(Ordering::Relaxed) {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            let outcome = if n.is_multiple_of(2) {
                save(&mut client, store, &key, &n.to_string()).await
            } else {
                get(&mut client, store, &key).await.map(drop)
            };
            if let Err(status) = outcome {
                failures.push(status);
            }
        }
        (calls.into_inner(), failures)
    })
}

async fn start(dir: &Path, text: &str) -> (Sidecar, RuntimeClient<Channel>, std::path::PathBuf) {
    let path = dir.join("layotto.toml");
    std::fs::write(&path, text).expect("write config");
    let sidecar = Sidecar::start_env(path.clone(), &[]).await;
    let client = support::client_at(sidecar.grpc_addr()).await;
    (sidecar, client, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_one_store_under_load_fails_no_call_to_either() {
    if !backend_available(Service::Redis.name(), Service::Redis.addr()) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut sidecar, mut client, path) = start(dir.path(), &config(0, B)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let loads = [
        load(client.clone(), "a", stop.clone()),
        load(client.clone(), "a", stop.clone()),
        load(client.clone(), "b", stop.clone()),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    replace(&path, &config(5, B));
    let note = reload_note(&sidecar, "state/a rebuilt").await;
    assert!(!note.contains("state/b"), "the unchanged store was touched: {note}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for (store, task) in ["a", "a", "b"].into_iter().zip(loads) {
        let (calls, failures) = task.await.expect("load task");
        assert!(calls > 10, "{store}: only {calls} calls");
        assert!(
            failures.is_empty(),
            "{store}: {} of {calls} calls failed: {failures:?}",
            failures.len()
        );
    }
    // The changed store now writes to database 5.
    let key = unique("reload-db");
    save(&mut client, "a", &key, "in five").await.expect("save");
    let redis = redis::Client::open("redis://127.0.0.1:6379/5").expect("redis url");
    let mut conn = redis.get_multiplexed_async_connection().await.expect("redis");
    let stored: Option<Vec<u8>> = conn.hget(&key, "data").await.unwrap_or(None);
    let raw: Option<Vec<u8>> = if stored.is_some() {
        stored
    } else {
        conn.get(&key).await.unwrap_or(None)
    };
    assert!(raw.is_some(), "the key is not in database 5");
    let _: Result<(), _> = conn.del(&key).await;
    sidecar.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_edit_changes_nothing_and_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut sidecar, mut client, path) = start(dir.path(), B).await;
    save(&mut client, "b", "k", "kept").await.expect("save");
    std::fs::write(&path, format!("{B}[state.c]\ntype = \"no-such-store\"\n")).expect("rewrite in place");
    let note = reload_note(&sidecar, "not applied").await;
    assert!(note.contains("no-such-store"), "{note}");
    assert_eq!(get(&mut client, "b", "k").await.expect("get"), b"kept");
    let status = get(&mut client, "c", "k").await.expect_err("c was not added");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    sidecar.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_and_adding_components_needs_no_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut sidecar, mut client, path) = start(dir.path(), B).await;
    save(&mut client, "b", "k", "v").await.expect("save");
    replace(
        &path,
        "[state.c]\ntype = \"in-memory\"\n[lock.l]\ntype = \"in-memory\"\n",
    );
    reload_note(&sidecar, "state/c added").await;
    let status = get(&mut client, "b", "k").await.expect_err("b is gone");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("'b'"), "{status:?}");
    save(&mut client, "c", "k", "new").await.expect("c serves");
    assert_eq!(get(&mut client, "c", "k").await.expect("get"), b"new");
    let locked = client
        .try_lock(pb::TryLockRequest {
            store_name: "l".into(),
            resource_id: "r".into(),
            lock_owner: "o".into(),
            expire: 5,
        })
        .await
        .expect("a new block serves")
        .into_inner();
    assert!(locked.success);
    sidecar.kill().await;
}

/// SIGHUP reloads (and does not end the process); a change to a setting
/// that cannot change live is reported as needing a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_listener_changes_need_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut sidecar, mut client, path) = start(dir.path(), B).await;
    let pid = sidecar.pid().expect("running");
    std::fs::write(
        &path,
        format!("[server]\nshutdown_grace_period = \"3s\"\n{B}[state.d]\ntype = \"in-memory\"\n"),
    )
    .expect("rewrite");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(hup.success());
    let note = reload_note(&sidecar, "state/d added").await;
    assert!(note.contains("needs a restart for: server"), "{note}");
    save(&mut client, "d", "k", "v").await.expect("d serves");
    assert!(sidecar.exited().is_none(), "SIGHUP ended the sidecar");
    sidecar.kill().await;
}

async fn apply(channel: Channel, kind: &str, name: &str, metadata: &[(&str, &str)]) -> Result<(), tonic::Status> {
    let mut lifecycle = pb::lifecycle_client::LifecycleClient::new(channel);
    lifecycle
        .apply_configuration(pb::DynamicConfiguration {
            component_config: Some(pb::ComponentConfig {
                kind: kind.into(),
                name: name.into(),
                metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            }),
        })
        .await
        .map(drop)
}

/// Layotto's Lifecycle API changes any component's settings, not only
/// helloworld's, and the next call uses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_configuration_changes_a_state_store_and_a_greeting() {
    if !backend_available(Service::Redis.name(), Service::Redis.addr()) {
        return;
    }
    let (rt, mut client) = support::start_ready(&format!(
        "{}[hellos.helloworld]\ntype = \"helloworld\"\nmetadata = {{ hello = \"greeting\" }}\n",
        config(0, "")
    ))
    .await;
    let channel = support::channel(&rt).await;
    apply(channel.clone(), "hellos", "helloworld", &[("hello", "bonjour")])
        .await
        .expect("applied");
    assert_eq!(
        support::say_hello(&mut client, "helloworld", "").await.expect("hello"),
        "bonjour"
    );
    apply(
        channel.clone(),
        "state",
        "a",
        &[("redisHost", "127.0.0.1:6379"), ("redisDB", "6"), ("keyPrefix", "none")],
    )
    .await
    .expect("applied");
    let key = unique("lifecycle-db");
    save(&mut client, "a", &key, "in six").await.expect("save");
    let redis = redis::Client::open("redis://127.0.0.1:6379/6").expect("redis url");
    let mut conn = redis.get_multiplexed_async_connection().await.expect("redis");
    let exists: bool = conn.exists(&key).await.expect("EXISTS");
    assert!(exists, "the key is not in database 6");
    let _: Result<(), _> = conn.del(&key).await;
    rt.shutdown().await;
}

/// kind, name, metadata, and the refusal's message.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

/// Layotto's argument checks, in its words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_configuration_checks_its_arguments() {
    let (rt, mut client) = support::start_ready(B).await;
    let channel = support::channel(&rt).await;
    let cases: [Case; 5] = [
        ("", "b", &[("k", "v")], "field kind is not configured"),
        ("state", "", &[("k", "v")], "field name is not configured"),
        ("state", "b", &[], "field metadata is not configured"),
        (
            "state",
            "nope",
            &[("k", "v")],
            "component not found. kind: state , name: nope",
        ),
        (
            "nonsense",
            "b",
            &[("k", "v")],
            "component not found. kind: nonsense , name: b",
        ),
    ];
    for (kind, name, metadata, message) in cases {
        let status = apply(channel.clone(), kind, name, metadata).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message(), message);
    }
    // Metadata its type refuses changes nothing.
    save(&mut client, "b", "k", "kept").await.expect("save");
    let status = apply(channel.clone(), "state", "b", &[("keyPrefix", "a||b")])
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(get(&mut client, "b", "k").await.expect("get"), b"kept");
    rt.shutdown().await;
}

/// A pub/sub rebuilt by a reload keeps delivering to the app: its
/// subscription moves to the new instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_pubsub_keeps_delivering_to_the_app() {
    if !backend_available(Service::Redis.name(), Service::Redis.addr()) {
        return;
    }
    use crate::apps::{TestApp, always_success, subscription};
    let topic = unique("reload-topic");
    let app = TestApp::start(vec![subscription("ps", &topic)], always_success()).await;
    let app_id = unique("reload-app");
    let text = |timeout: &str| {
        format!(
            "[app]\napp_id = \"{app_id}\"\ngrpc_callback_port = {}\n[pub_subs.ps]\ntype = \"redis\"\nmetadata = {{ redisHost = \"127.0.0.1:6379\", processingTimeout = \"{timeout}\", redeliverInterval = \"1s\" }}\n",
            app.port
        )
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut sidecar, mut client, path) = start(dir.path(), &text("3s")).await;
    crate::pubsub::warm_up(&mut client, &app, &topic).await;
    replace(&path, &text("4s"));
    reload_note(&sidecar, "pub_subs/ps rebuilt").await;
    let payload = unique("after-reload");
    eventually(
        "an event published after the reload to arrive",
        Duration::from_secs(30),
        || {
            let (mut client, topic, payload) = (client.clone(), topic.clone(), payload.clone());
            let app = &app;
            async move {
                crate::pubsub::publish(&mut client, &topic, payload.as_bytes())
                    .await
                    .ok()?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                (app.received.count(payload.as_bytes()) > 0).then_some(())
            }
        },
    )
    .await;
    sidecar.kill().await;
}

/// A component process started after the sidecar is found by the next
/// reload, and a config naming it then serves without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_discovers_a_pluggable_component_started_since() {
    let folder = tempfile::tempdir().expect("socket folder");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("layotto.toml");
    std::fs::write(&path, B).expect("write config");
    let folder_text = folder.path().display().to_string();
    let mut sidecar = Sidecar::start_env(path.clone(), &[("DAPR_COMPONENTS_SOCKETS_FOLDER", &folder_text)]).await;
    let mut client = support::client_at(sidecar.grpc_addr()).await;
    let name = unique("pylate");
    let Some(components) = crate::pluggable::Components::start_in(folder.path(), &name, "state").await else {
        sidecar.kill().await;
        return;
    };
    replace(&path, &format!("{B}[state.late]\ntype = \"{name}\"\n"));
    reload_note(&sidecar, "state/late added").await;
    eventually("the discovered store to serve", Duration::from_secs(20), || {
        let mut client = client.clone();
        async move { save(&mut client, "late", "k", "v").await.ok() }
    })
    .await;
    assert_eq!(get(&mut client, "late", "k").await.expect("get"), b"v");
    drop(components);
    sidecar.kill().await;
}
