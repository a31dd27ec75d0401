//! The `layotto` binary as users run it: exit codes, `validate` on every
//! example config, `start` on the default config, and SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::{self, eventually, http_get};

fn layotto() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_layotto"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    // The tests choose their own ports and config.
    for (key, _) in std::env::vars() {
        if key.starts_with("LAYOTTO__") || key == "RUNTIME_CONFIG" {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("layotto runs")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Every config shipped in `config/`.
fn example_configs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("toml" | "yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn version_is_printed() {
    let out = run(layotto().arg("--version"));
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("layotto {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn every_example_config_validates() {
    let configs = example_configs();
    assert!(configs.iter().any(|p| p.ends_with("default.toml")), "{configs:?}");
    for path in configs {
        let out = run(layotto().arg("validate").arg("-c").arg(&path));
        assert!(
            out.status.success(),
            "{} is invalid:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn broken_configs_exit_64_naming_each_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "unknown-type.toml",
            "[hellos.h]\ntype = \"nope\"\n",
            "hellos.h.type: unknown type 'nope' for hellos; known types: helloworld",
        ),
        (
            "missing-field.toml",
            "[hellos.h]\nhello = \"x\"\n",
            "hellos.h.type: is required",
        ),
        (
            "bad-address.toml",
            "[server]\ngrpc = \"localhost\"\n",
            "server.grpc: 'localhost' is not an address",
        ),
        (
            "bad-duration.toml",
            "[server]\nshutdown_grace_period = \"10 parsecs\"\n",
            "server.shutdown_grace_period: '10 parsecs' is not a duration",
        ),
        ("bad-syntax.yaml", "server: [\n", "cannot parse"),
    ];
    for (file, text, expected) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, text).expect("write config");
        let out = run(layotto().arg("validate").arg("--config").arg(&path));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{file}: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{file}: the file is not named: {stderr}"
        );
        assert!(stderr.contains(expected), "{file}: expected '{expected}' in: {stderr}");
    }

    // All problems of one file at once, and `start` refuses the same way.
    let path = dir.path().join("many.toml");
    std::fs::write(
        &path,
        "[server]\ngrpc = \"x\"\nactuator = \"y\"\n[hellos.h]\ntype = \"nope\"\n",
    )
    .expect("write");
    let out = run(layotto().arg("start").arg("-c").arg(&path));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("3 problems"), "{stderr}");
    for field in ["server.grpc", "server.actuator", "hellos.h.type"] {
        assert!(stderr.contains(field), "{field} missing from: {stderr}");
    }

    // RUNTIME_CONFIG names the file, as in Layotto.
    let out = run(layotto()
        .arg("validate")
        .env("RUNTIME_CONFIG", dir.path().join("missing-field.toml")));
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn a_port_in_use_is_a_runtime_failure_exit_1() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = run(layotto()
        .args(["start", "-c", "config/default.toml"])
        .env("LAYOTTO__SERVER__GRPC", format!("127.0.0.1:{port}"))
        .env("LAYOTTO__SERVER__ACTUATOR", "127.0.0.1:0")
        .env("LAYOTTO__SERVER__DAPR_HTTP", "disabled"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on the gRPC address 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_config_serves_and_sigterm_exits_0_within_the_grace_period() {
    let (grpc, actuator, dapr) = (free_port(), free_port(), free_port());
    let mut child = tokio::process::Command::from({
        let mut cmd = layotto();
        cmd.args(["start", "-c", "config/default.toml"])
            .env("LAYOTTO__SERVER__GRPC", format!("127.0.0.1:{grpc}"))
            .env("LAYOTTO__SERVER__ACTUATOR", format!("127.0.0.1:{actuator}"))
            .env("LAYOTTO__SERVER__DAPR_HTTP", format!("127.0.0.1:{dapr}"))
            .env("LAYOTTO__SERVER__SHUTDOWN_GRACE_PERIOD", "5s")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    })
    .kill_on_drop(true)
    .spawn()
    .expect("starts");

    let readiness = format!("http://127.0.0.1:{actuator}/actuator/health/readiness");
    let body = eventually("readiness 200", Duration::from_secs(20), || async {
        match reqwest::get(&readiness).await {
            Ok(r) if r.status() == 200 => r.text().await.ok(),
            _ => None,
        }
    })
    .await;
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["components"]["hellos/helloworld"]["status"], "UP", "{body}");

    let mut client = support::client_at(SocketAddr::from(([127, 0, 0, 1], grpc))).await;
    assert_eq!(
        support::say_hello(&mut client, "helloworld", "ci")
            .await
            .expect("hello"),
        "greeting, ci"
    );
    let (_, metrics) = http_get(&format!("http://127.0.0.1:{actuator}/metrics")).await;
    assert!(
        metrics.contains(r#"layotto_component_up{kind="hellos",name="helloworld",type="helloworld"} 1"#),
        "{metrics}"
    );

    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within the grace period")
        .expect("exit status");
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("Stopped"), "{stderr}");
}

/// A second SIGTERM during the drain exits at once (it once waited out the
/// whole grace period), with 128 + 15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_exits_at_once() {
    let (grpc, actuator, dapr) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("slow.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [server]
            grpc = "127.0.0.1:{grpc}"
            actuator = "127.0.0.1:{actuator}"
            dapr_http = "127.0.0.1:{dapr}"
            shutdown_grace_period = "60s"
            [hellos.slow]
            type = "faulty"
            metadata = {{ token = "second-sigterm-{}" }}
            "#,
            std::process::id()
        ),
    )
    .expect("write config");
    let mut child = tokio::process::Command::from({
        let mut cmd = layotto();
        cmd.args(["start", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    })
    .kill_on_drop(true)
    .spawn()
    .expect("starts");
    let readiness = format!("http://127.0.0.1:{actuator}/actuator/health/readiness");
    eventually("readiness 200", Duration::from_secs(20), || async {
        reqwest::get(&readiness)
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(drop)
    })
    .await;
    // A call that holds the drain open for 30 s.
    let mut client = support::client_at(SocketAddr::from(([127, 0, 0, 1], grpc))).await;
    let slow = tokio::spawn(async move { support::say_hello(&mut client, "slow", "sleep:30000").await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = child.id().expect("pid").to_string();
    let term = || Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(term().success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.try_wait().expect("status").is_none(), "the first SIGTERM drains");
    let second = std::time::Instant::now();
    assert!(term().success());
    let status = tokio::time::timeout(Duration::from_secs(3), child.wait())
        .await
        .expect("the second SIGTERM exits at once")
        .expect("exit status");
    assert!(second.elapsed() < Duration::from_secs(2), "{:?}", second.elapsed());
    assert_eq!(status.code(), Some(143));
    slow.abort();
}

/// Layotto's command line: its flags without a subcommand start the
/// sidecar (its Istio and MOSN flags accepted and logged as ignored),
/// `layotto stop` ends it through its pid file, `reload` makes it re-read
/// its config through the same file (and fails without a sidecar), and no
/// flags at all print the help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layottos_command_line_starts_without_a_subcommand_and_stop_ends_it_through_the_pid_file() {
    let help = run(&mut layotto());
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Usage") && text.contains("stop"), "{text}");
    let nobody = tempfile::tempdir().expect("tempdir");
    let no_sidecar = run(layotto()
        .arg("reload")
        .env("LAYOTTO_PID_FILE", nobody.path().join("none.pid")));
    assert!(!no_sidecar.status.success(), "reload succeeded without a sidecar");

    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("sidecar.pid");
    let (grpc, actuator) = (free_port(), free_port());
    let env = |cmd: &mut Command| {
        cmd.env("LAYOTTO__SERVER__GRPC", format!("127.0.0.1:{grpc}"))
            .env("LAYOTTO__SERVER__ACTUATOR", format!("127.0.0.1:{actuator}"))
            .env("LAYOTTO__SERVER__DAPR_HTTP", "disabled")
            .env("LAYOTTO_PID_FILE", &pid_file);
    };
    let mut child = tokio::process::Command::from({
        let mut cmd = layotto();
        cmd.args([
            "-c",
            "config/default.toml",
            "--service-cluster",
            "layotto",
            "-n",
            "node-1",
            "--feature-gates",
            "XdsMtlsEnable=true",
            "-ll",
            "info",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        env(&mut cmd);
        cmd
    })
    .kill_on_drop(true)
    .spawn()
    .expect("starts");
    let readiness = format!("http://127.0.0.1:{actuator}/actuator/health/readiness");
    eventually("readiness 200", Duration::from_secs(20), || async {
        matches!(reqwest::get(&readiness).await, Ok(r) if r.status() == 200).then_some(())
    })
    .await;
    let pid = std::fs::read_to_string(&pid_file).expect("the pid file");
    assert_eq!(pid.trim(), child.id().expect("pid").to_string());
    let mut reload = layotto();
    reload.args(["reload", "-c", "config/default.toml"]);
    env(&mut reload);
    let reloaded = run(&mut reload);
    assert!(
        reloaded.status.success(),
        "{}",
        String::from_utf8_lossy(&reloaded.stderr)
    );
    eventually("the reload to be reported", Duration::from_secs(20), || async {
        let body = reqwest::get(&readiness).await.ok()?.text().await.ok()?;
        body.contains("config_reload").then_some(())
    })
    .await;
    assert!(child.try_wait().expect("wait").is_none(), "SIGHUP ended the sidecar");

    let mut stop = layotto();
    stop.args(["stop", "-c", "config/default.toml"]);
    env(&mut stop);
    let stopping = tokio::task::spawn_blocking(move || (run(&mut stop), stop));
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exited")
        .expect("exit status");
    let (stopped, mut stop) = stopping.await.expect("stop ran");
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    assert_eq!(status.code(), Some(0));
    assert!(!pid_file.exists(), "the pid file is removed at exit");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = pipe.read_to_string(&mut stderr).await;
    }
    for flag in ["--service-cluster", "--service-node", "--feature-gates"] {
        assert!(stderr.contains(&format!("Ignored: {flag}")), "{flag} in {stderr}");
    }
    // Nothing runs any more: stop says so and fails.
    let again = run(&mut stop);
    assert!(!again.status.success());
}
