//! The official Dapr SDKs against this sidecar, as apps run them: the
//! Python SDK (installed by `integration/sdk/setup.sh` into a virtualenv
//! outside the checkout; `.ci/run` runs it first) drives Dapr's gRPC API,
//! and apps built on its extensions (dapr-ext-grpc, dapr-ext-fastapi)
//! receive events over both app-channel protocols; the JavaScript SDK
//! drives Dapr's HTTP API.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{self, Service, free_port};

/// The components the JavaScript SDK script uses.
const SDK_APP: &str = r#"
[app]
app_id = "sdk-app"
[state.s]
type = "in-memory"
[pub_subs.ps]
type = "in-memory"
[lock.locks]
type = "in-memory"
[config_store.config]
type = "in-memory"
[secret_store.files]
type = "local.file"
metadata = { secretsFile = "config/secrets/example.json" }
"#;

/// The Python SDK's sidecar: Redis state (under a key prefix of its own),
/// RabbitMQ pub/sub, in-memory locks and configuration, an in-memory store
/// for queries (Redis cannot run them here).
fn python_sidecar(app_id: &str, app: &str) -> String {
    format!(
        r#"
[app]
app_id = "{app_id}"
{app}
[state.s]
type = "redis"
metadata = {{ redisHost = "127.0.0.1:6379", keyPrefix = "{prefix}" }}
[state.q]
type = "in-memory"
[pub_subs.ps]
type = "rabbitmq"
metadata = {{ connectionString = "amqp://guest:guest@127.0.0.1:5672" }}
[lock.locks]
type = "in-memory"
[config_store.config]
type = "in-memory"
[secret_store.files]
type = "local.file"
metadata = {{ secretsFile = "config/secrets/example.json" }}
"#,
        prefix = support::unique("sdk")
    )
}

/// Whether Redis and RabbitMQ are up (fails under CI when not).
fn python_backends() -> bool {
    support::backend_available(Service::Redis.name(), Service::Redis.addr())
        && support::backend_available(Service::Rabbitmq.name(), Service::Rabbitmq.addr())
}

/// The virtualenv's python, when the SDK is installed. Under `CI=true` a
/// missing SDK fails the test; elsewhere it skips with a reason.
pub(crate) fn sdk_python() -> Option<String> {
    let venv = std::env::var("LAYOTTO_SDK_VENV")
        .unwrap_or_else(|_| format!("{}/.cache/layotto-sdk-venv", std::env::var("HOME").unwrap_or_default()));
    let python = format!("{venv}/bin/python");
    let installed = Command::new(&python)
        .args(["-c", "import dapr.clients"])
        .status()
        .is_ok_and(|s| s.success());
    if installed {
        return Some(python);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("the Dapr Python SDK is not installed in {venv}; run integration/sdk/setup.sh");
    }
    eprintln!("skipping: the Dapr Python SDK is not installed (run integration/sdk/setup.sh)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_uses_state_publish_secrets_locks_configuration_and_metadata() {
    run_python_sdk(None).await;
}

/// The same, with an API token: the SDK sends `DAPR_API_TOKEN` on every
/// call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_works_with_an_api_token() {
    run_python_sdk(Some("sdk-t0ken")).await;
}

async fn run_python_sdk(token: Option<&'static str>) {
    let Some(python) = sdk_python() else {
        return;
    };
    if !python_backends() {
        return;
    }
    let server = token
        .map(|t| format!("[server]\napi_token = \"{t}\"\n"))
        .unwrap_or_default();
    let rt = support::start(&format!("{server}{}", python_sidecar("sdk-app", ""))).await;
    support::wait_ready(&rt).await;
    let grpc_port = rt.grpc_addr().port().to_string();
    let http_port = rt.dapr_http_addr().expect("dapr http").port().to_string();
    let output = tokio::task::spawn_blocking(move || {
        let mut python = Command::new(python);
        python
            .arg("integration/sdk/python_state.py")
            .env("DAPR_RUNTIME_HOST", "127.0.0.1")
            .env("DAPR_GRPC_PORT", grpc_port)
            .env("DAPR_HTTP_PORT", http_port)
            .env("DAPR_HEALTH_TIMEOUT", "10")
            .env("STATE_TYPE", "state.redis")
            .env("PUBSUB_TYPE", "pubsub.rabbitmq")
            .env_remove("DAPR_API_TOKEN");
        if let Some(token) = token {
            python.env("DAPR_API_TOKEN", token);
        }
        python.output()
    })
    .await
    .expect("joined")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python sdk failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}\n{stderr}");
    rt.shutdown().await;
}

/// The folder with the JavaScript SDK's node_modules, when installed.
fn sdk_node() -> Option<std::path::PathBuf> {
    let dir = std::env::var("LAYOTTO_SDK_NODE")
        .unwrap_or_else(|_| format!("{}/.cache/layotto-sdk-node", std::env::var("HOME").unwrap_or_default()));
    let dir = std::path::PathBuf::from(dir);
    if dir.join("node_modules/@dapr/dapr/package.json").exists() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!(
            "the Dapr JavaScript SDK is not installed in {}; run integration/sdk/setup.sh",
            dir.display()
        );
    }
    eprintln!("skipping: the Dapr JavaScript SDK is not installed (run integration/sdk/setup.sh)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_sdk_uses_state_publish_secrets_locks_and_metadata_over_http() {
    run_javascript_sdk(None).await;
}

/// The same with `DAPR_API_TOKEN` set: the SDK sends it on every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_sdk_works_with_an_api_token() {
    run_javascript_sdk(Some("js-t0ken")).await;
}

async fn run_javascript_sdk(token: Option<&'static str>) {
    let Some(dir) = sdk_node() else {
        return;
    };
    // ES modules resolve packages from their own folder: run a copy there.
    let script = dir.join(format!("js_state_{}.mjs", token.is_some()));
    std::fs::copy("integration/sdk/js_state.mjs", &script).expect("copy the script");
    let server = token
        .map(|t| format!("[server]\napi_token = \"{t}\"\n"))
        .unwrap_or_default();
    let rt = support::start(&format!("{server}{SDK_APP}")).await;
    support::wait_ready(&rt).await;
    let http_port = rt.dapr_http_addr().expect("dapr http").port().to_string();
    let output = tokio::task::spawn_blocking(move || {
        let mut node = Command::new("node");
        node.arg(script)
            .env("DAPR_HTTP_PORT", http_port)
            .env_remove("DAPR_API_TOKEN");
        if let Some(token) = token {
            node.env("DAPR_API_TOKEN", token);
        }
        node.output()
    })
    .await
    .expect("joined")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "js sdk failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}\n{stderr}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_subscribes_to_configuration_then_shuts_the_sidecar_down() {
    use tokio::io::AsyncBufReadExt;
    let Some(python) = sdk_python() else {
        return;
    };
    if !python_backends() {
        return;
    }
    let mut rt = support::start(&python_sidecar("sdk-config", "")).await;
    support::wait_ready(&rt).await;
    let key = support::unique("flag");
    let mut child = tokio::process::Command::new(python)
        .arg("integration/sdk/python_config.py")
        .env("DAPR_RUNTIME_HOST", "127.0.0.1")
        .env("DAPR_GRPC_PORT", rt.grpc_addr().port().to_string())
        .env(
            "DAPR_HTTP_PORT",
            rt.dapr_http_addr().expect("dapr http").port().to_string(),
        )
        .env("CONFIG_KEY", &key)
        .env_remove("DAPR_API_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut out = String::new();
    let subscribed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            out.push_str(&line);
            out.push('\n');
            if line == "SUBSCRIBED" {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(subscribed, "the script subscribed: {out}");
    support::save_configuration(&rt, "config", "sdk-config", &key, "on").await;
    while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
        out.push_str(&line);
        out.push('\n');
    }
    let status = child.wait().await.expect("python exits");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert!(status.success() && out.contains("all checks passed"), "{out}\n{stderr}");
    // The SDK's Shutdown stops the sidecar as SIGTERM does.
    let stopped = tokio::time::timeout(Duration::from_secs(10), rt.failed()).await;
    assert!(
        matches!(stopped, Ok(layotto::RuntimeError::ShutdownRequested)),
        "the sidecar was asked to shut down"
    );
    rt.shutdown().await;
}

/// A Python app process, killed when dropped, and the events it wrote.
struct PythonApp {
    _child: tokio::process::Child,
    received: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl PythonApp {
    fn start(python: &str, script: &str, port: u16, topic: &str) -> PythonApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let received = dir.path().join("received.jsonl");
        std::fs::write(&received, "").expect("file");
        let child = tokio::process::Command::new(python)
            .arg(script)
            .env("APP_PORT", port.to_string())
            .env("TOPIC", topic)
            .env("RECEIVED_FILE", &received)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python app runs");
        PythonApp {
            _child: child,
            received,
            _dir: dir,
        }
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.received)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How many events of `kind` reached `route`.
    fn count(&self, route: &str, kind: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e["route"] == route && e["data"]["kind"] == kind)
            .count()
    }

    /// Waits until every `(route, kind, n)` holds.
    async fn wait_for(&self, expected: &[(&str, &str, usize)]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !expected.iter().all(|(route, kind, n)| self.count(route, kind) == *n) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {expected:?}; the app received {:?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Publishes `kind` events through Dapr's HTTP API.
async fn publish_kinds(rt: &layotto::Runtime, topic: &str, kinds: &[&str]) {
    let url = format!("http://{}/v1.0/publish/ps/{topic}", rt.dapr_http_addr().expect("http"));
    let http = reqwest::Client::new();
    for kind in kinds {
        let response = http
            .post(&url)
            .json(&json!({ "kind": kind }))
            .send()
            .await
            .expect("publish");
        assert_eq!(response.status(), 204);
    }
}

/// Waits until the sidecar delivers `n` subscriptions to the app.
async fn wait_subscribed(rt: &layotto::Runtime, n: usize) {
    let url = format!("http://{}/v1.0/metadata", rt.dapr_http_addr().expect("http"));
    support::eventually("the app's subscriptions", Duration::from_secs(60), || async {
        let m: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
        (m["subscriptions"].as_array().map(Vec::len) == Some(n)).then_some(())
    })
    .await;
}

/// A Python app from `script` on a free port, for a fresh topic, and a
/// sidecar delivering to it with `app` (given the port and topic) in its
/// `[app]` section; `None` when the SDK or the backends are missing.
async fn python_app(
    script: &str,
    app_id: &str,
    app: impl Fn(u16, &str) -> String,
) -> Option<(PythonApp, layotto::Runtime, String)> {
    let python = sdk_python()?;
    if !python_backends() {
        return None;
    }
    let (port, topic) = (free_port(), support::unique(app_id));
    let process = PythonApp::start(&python, script, port, &topic);
    let rt = support::start(&python_sidecar(app_id, &app(port, &topic))).await;
    support::wait_ready(&rt).await;
    Some((process, rt, topic))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpc_app_gets_routed_retried_and_dead_lettered_events() {
    let Some((app, rt, topic)) = python_app("integration/sdk/python_grpc_app.py", "py-grpc-app", |port, _| {
        format!("protocol = \"grpc\"\nport = {port}")
    })
    .await
    else {
        return;
    };
    wait_subscribed(&rt, 2).await;
    publish_kinds(&rt, &topic, &["big", "small", "retry", "drop"]).await;
    app.wait_for(&[
        ("big", "big", 1),
        ("other", "small", 1),
        ("other", "retry", 2),
        ("other", "drop", 1),
        ("dead", "drop", 1),
    ])
    .await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_http_app_gets_routed_retried_and_dead_lettered_events() {
    let Some((app, rt, topic)) = python_app("integration/sdk/python_http_app.py", "py-http-app", |port, topic| {
        format!(
            r#"protocol = "http"
port = {port}
[app.health_check]
interval = "200ms"
timeout = "200ms"
[subscriptions.rules]
pubsub_name = "ps"
topic = "{topic}-rules"
routes = {{ rules = [{{ match = 'event.data.kind == "big"', path = "/big" }}], default = "/rest" }}"#
        )
    })
    .await
    else {
        return;
    };
    wait_subscribed(&rt, 3).await;
    publish_kinds(&rt, &topic, &["small", "retry", "drop"]).await;
    publish_kinds(&rt, &format!("{topic}-rules"), &["big", "small"]).await;
    app.wait_for(&[
        ("orders", "small", 1),
        ("orders", "retry", 2),
        ("orders", "drop", 1),
        ("dead", "drop", 1),
        ("big", "big", 1),
        ("rest", "small", 1),
    ])
    .await;
    rt.shutdown().await;
}
