//! TCP copy: samples of the gRPC listener's inbound bytes in a dump file,
//! only inside the window, never slowing a call, read back into calls.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use layotto::api::tcp_copy::decode::{self, Message};
use layotto::config::{self, Format};
use tokio::time::Instant;

use crate::support::{client, eventually, layotto_bin, metric, metrics, say_hello, start_ready};

const SAY_HELLO: &str = "/spec.proto.runtime.v1.Runtime/SayHello";
const SAMPLES: &str = "layotto_tcp_copy_samples_total";

fn sidecar_config(dir: &Path, strategy: &str) -> String {
    format!(
        "[server.tcp_copy]\n{strategy}\ndir = \"{}\"\n\n[hellos.helloworld]\ntype = \"helloworld\"\nmetadata = {{ hello = \"greeting\" }}\n",
        dir.display()
    )
}

fn dump_file(dir: &Path) -> std::path::PathBuf {
    dir.join("dump_tcp_copy.log")
}

/// The SayHello names in a dump's calls, in order; every call it holds is
/// a SayHello with its message decoded.
fn dumped_names(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dump_file(dir)).unwrap_or_default();
    let decoded = decode::decode_dump(&text);
    let mut names = Vec::new();
    for call in &decoded.calls {
        assert_eq!(call.method.as_deref(), Some(SAY_HELLO), "{call:?}");
        for message in &call.messages {
            let Message::Json(json) = message else {
                panic!("not decoded: {message:?}");
            };
            assert_eq!(json["serviceName"], "helloworld", "{json}");
            names.push(json["name"].as_str().unwrap().to_owned());
        }
    }
    names
}

async fn samples(rt: &layotto::Runtime, outcome: &str) -> f64 {
    metric(&metrics(rt).await, SAMPLES, &[("outcome", outcome)]).unwrap_or(0.0)
}

#[tokio::test]
async fn tcp_copy_dumps_the_calls_of_its_window_and_reads_them_back() {
    layotto::api::tcp_copy::pretend_host_is_idle();
    let dir = tempfile::tempdir().unwrap();
    let strategy = "switch = \"ON\"\ninterval = 30\nduration = 2";
    // The window opens when the listener starts serving: between these.
    let before = Instant::now();
    let (rt, mut client_a) = start_ready(&sidecar_config(dir.path(), strategy)).await;
    let started = Instant::now();

    let mut early = Vec::new();
    let mut surely_in = Vec::new();
    for i in 0..5 {
        let name = format!("early-{i}");
        say_hello(&mut client_a, "helloworld", &name).await.unwrap();
        if before.elapsed() < Duration::from_millis(1800) {
            surely_in.push(name.clone());
        }
        early.push(name);
    }
    assert!(
        !surely_in.is_empty(),
        "the machine is too slow for this test: no call done within 1.8 s"
    );

    // After the window: the same connection, and a new one.
    tokio::time::sleep_until(started + Duration::from_secs(3)).await;
    let mut client_b = client(&rt).await;
    for i in 0..3 {
        say_hello(&mut client_a, "helloworld", &format!("late-a-{i}"))
            .await
            .unwrap();
        say_hello(&mut client_b, "helloworld", &format!("late-b-{i}"))
            .await
            .unwrap();
    }

    let names = eventually("the window's calls in the dump", Duration::from_secs(10), || {
        let names = dumped_names(dir.path());
        let all_in = surely_in.iter().all(|n| names.contains(n));
        async move { all_in.then_some(names) }
    })
    .await;
    // Nothing after the window, in the order the calls were made.
    let expected: Vec<&String> = early.iter().filter(|n| names.contains(n)).collect();
    assert_eq!(names.iter().collect::<Vec<_>>(), expected, "dumped {names:?}");
    // Once everything queued is written, still nothing late.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let names = dumped_names(dir.path());
    assert!(names.iter().all(|n| n.starts_with("early-")), "{names:?}");
    assert!(samples(&rt, "written").await >= 1.0);
    assert_eq!(samples(&rt, "dropped").await, 0.0);

    // The command reads the same dump.
    let out = tokio::process::Command::new(layotto_bin())
        .arg("tcpcopy-decode")
        .arg(dump_file(dir.path()))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("stream 1 {SAY_HELLO}")), "{text}");
    for name in &surely_in {
        assert!(text.contains(&format!(r#""name":"{name}""#)), "{name} not in {text}");
    }
    assert!(!text.contains("late-"), "{text}");
    rt.shutdown().await;
}

#[tokio::test]
async fn tcp_copy_on_a_full_disk_drops_samples_and_no_call() {
    layotto::api::tcp_copy::pretend_host_is_idle();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", dump_file(dir.path())).unwrap();
    let strategy = "switch = \"ON\"\ninterval = 30\nduration = 29";
    let (rt, mut client) = start_ready(&sidecar_config(dir.path(), strategy)).await;
    for i in 0..20 {
        say_hello(&mut client, "helloworld", &format!("full-{i}"))
            .await
            .unwrap();
    }
    eventually("dropped samples", Duration::from_secs(10), || async {
        (samples(&rt, "dropped").await > 0.0).then_some(())
    })
    .await;
    assert_eq!(samples(&rt, "written").await, 0.0);
    rt.shutdown().await;
}

#[tokio::test]
async fn tcp_copy_never_delays_a_call_when_the_dump_blocks() {
    layotto::api::tcp_copy::pretend_host_is_idle();
    let dir = tempfile::tempdir().unwrap();
    // A FIFO nobody reads: the writer blocks opening it.
    let fifo = dump_file(dir.path());
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let strategy = "switch = \"ON\"\ninterval = 30\nduration = 29\nqueue = 4";
    let (rt, mut client) = start_ready(&sidecar_config(dir.path(), strategy)).await;
    // A guard against a hang, not a timing assertion.
    tokio::time::timeout(Duration::from_secs(120), async {
        for i in 0..200 {
            say_hello(&mut client, "helloworld", &format!("slow-{i}"))
                .await
                .unwrap();
        }
    })
    .await
    .expect("200 calls complete while the dump blocks");
    eventually("dropped samples", Duration::from_secs(10), || async {
        (samples(&rt, "dropped").await > 0.0).then_some(())
    })
    .await;
    assert_eq!(samples(&rt, "written").await, 0.0);
    rt.shutdown().await;
    // A reader for a moment lets the blocked writer go.
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new().read(true).custom_flags(0o4000).open(&fifo);
}

#[tokio::test]
async fn tcp_copy_switched_off_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let strategy = "switch = \"OFF\"\ninterval = 30\nduration = 29";
    let (rt, mut client) = start_ready(&sidecar_config(dir.path(), strategy)).await;
    for i in 0..5 {
        say_hello(&mut client, "helloworld", &format!("off-{i}")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!dump_file(dir.path()).exists());
    assert_eq!(metric(&metrics(&rt).await, SAMPLES, &[]), None);
    rt.shutdown().await;
}

#[test]
fn tcp_copy_config_errors_name_the_field() {
    let text = "[server.tcp_copy]\nswitch = \"on-ish\"\ninterval = 20\nduration = 0\ncpu_max_rate = 120\nmem_max_rate = -1\nqueue = 0\n";
    let e = config::load_str(text, Format::Toml, "t.toml", Some(BTreeMap::new())).expect_err("invalid");
    let found: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
    for field in [
        "switch",
        "interval",
        "duration",
        "cpu_max_rate",
        "mem_max_rate",
        "queue",
    ] {
        let path = format!("server.tcp_copy.{field}");
        assert!(found.iter().any(|p| p.contains(&path)), "{path} not in {found:?}");
    }
}

#[test]
fn tcp_copy_comes_from_layottos_tcpcopy_filter() {
    let json = r#"{"servers":[{"listeners":[{"name":"grpc","address":"127.0.0.1:34904","bind_port":true,
        "filter_chains":[{"filters":[
            {"type":"tcpcopy","config":{"strategy":{"switch":"ON","interval":30,"duration":10,"cpu_max_rate":80,"mem_max_rate":80}}},
            {"type":"grpc","config":{"server_name":"runtime","grpc_config":{"hellos":{"helloworld":{"type":"helloworld","hello":"greeting"}}}}}
        ]}]}]}]}"#;
    let config = config::load_str(json, Format::Json, "config.json", Some(BTreeMap::new())).expect("valid");
    let t = &config.server.tcp_copy;
    assert!(t.enabled);
    assert_eq!((t.interval, t.duration), (30, 10));
    assert_eq!((t.cpu_max_rate, t.mem_max_rate), (80.0, 80.0));
    assert!(t.dump_file().ends_with("logs/mosn/dump/dump_tcp_copy.log"));
}
