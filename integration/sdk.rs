//! The official Dapr SDKs against this sidecar, as apps run them: the
//! Python SDK (installed by `integration/sdk/setup.sh` into a virtualenv
//! outside the checkout; `.ci/run` runs it first) drives Dapr's gRPC API.

use std::process::Command;

use crate::support;

/// The components the SDK scripts use.
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

/// The virtualenv's python, when the SDK is installed. Under `CI=true` a
/// missing SDK fails the test; elsewhere it skips with a reason.
fn sdk_python() -> Option<String> {
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
    let server = token
        .map(|t| format!("[server]\napi_token = \"{t}\"\n"))
        .unwrap_or_default();
    let rt = support::start(&format!("{server}{SDK_APP}")).await;
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
    let Some(dir) = sdk_node() else {
        return;
    };
    // ES modules resolve packages from their own folder: run a copy there.
    let script = dir.join("js_state.mjs");
    std::fs::copy("integration/sdk/js_state.mjs", &script).expect("copy the script");
    let (rt, _client) = support::start_ready(SDK_APP).await;
    let http_port = rt.dapr_http_addr().expect("dapr http").port().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .env("DAPR_HTTP_PORT", http_port)
            .output()
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
