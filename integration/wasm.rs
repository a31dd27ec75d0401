//! WASM functions: Layotto's FaaS demo pair in WebAssembly text and in
//! AssemblyScript (built here, with the `wat` crate and `asc`), its
//! config.json, the admin API, reloading a changed file, and the limits
//! (budget, memory, traps) while other functions keep answering.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use layotto::proto::runtime::v1::{SaveStateRequest, StateItem};

use crate::support;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/integration/wasm");

/// A guest written in WebAssembly text under integration/wasm.
fn wat_file(name: &str) -> Vec<u8> {
    wat::parse_file(Path::new(DIR).join(format!("{name}.wat"))).expect("the WAT guest parses")
}

/// The AssemblyScript compiler installed by integration/wasm/setup.sh;
/// `None` (the test skips) outside CI when it is missing.
fn asc() -> Option<PathBuf> {
    let dir = std::env::var_os("LAYOTTO_WASM_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/layotto-wasm-node")
        });
    let asc = dir.join("node_modules/.bin/asc");
    if asc.is_file() {
        return Some(asc);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the AssemblyScript compiler is missing at {}: run integration/wasm/setup.sh",
        asc.display()
    );
    eprintln!(
        "skipping: no AssemblyScript compiler at {} (integration/wasm/setup.sh)",
        asc.display()
    );
    None
}

/// Compiles integration/wasm/<name>.ts into `out`.
fn assemblyscript(asc: &Path, name: &str, out: &Path) {
    let status = std::process::Command::new(asc)
        .arg(Path::new(DIR).join(format!("{name}.ts")))
        .args(["-O2", "-o"])
        .arg(out)
        .status()
        .expect("asc runs");
    assert!(status.success(), "asc failed on {name}.ts");
}

/// A small guest announcing `id`, whose request handling is `body` (a
/// function `(param $ctx i32) (result i32)` run at the request headers),
/// on ABI 0.1.0 (two-argument proxy_on_request_headers) or 0.2.0.
fn small_guest(id: &str, abi: &str, body: &str) -> Vec<u8> {
    let headers_params = if abi == "0_1_0" {
        "(param $ctx i32) (param i32)"
    } else {
        "(param $ctx i32) (param i32) (param i32)"
    };
    let text = format!(
        r#"(module
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_state" (func $set_state (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_publish_event" (func $publish (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_some_call_the_host_lacks" (func $lacking (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{id}")
  (data (i32.const 256) "hello from {id}\n")
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_abi_version_{abi}"))
  (func (export "malloc") (param $n i32) (result i32) (local $at i32)
    (local.set $at (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $at))
  (func (export "proxy_get_id")
    (drop (call $set_buffer (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const {len}))))
  (func (export "proxy_on_context_create") (param i32 i32) (global.set $heap (i32.const 4096)))
  (func $handle (param $ctx i32) (result i32) {body})
  (func (export "proxy_on_request_headers") {headers_params} (result i32)
    (call $handle (local.get $ctx)))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1)))"#,
        len = id.len(),
    );
    wat::parse_str(text).expect("the small guest parses")
}

/// Answers "hello from <id>".
fn hello(id: &str) -> Vec<u8> {
    small_guest(
        id,
        "0_1_0",
        &format!(
            "(drop (call $set_buffer (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 256) (i32.const {})))
             (i32.const 0)",
            "hello from \n".len() + id.len()
        ),
    )
}

fn write(dir: &Path, name: &str, wasm: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, wasm).expect("write the module");
    path
}

fn function(name: &str, path: &Path, extra: &str) -> String {
    format!(
        "[wasm.{name}]\ntype = \"wasmer\"\nmetadata = {{ path = \"{}\", instanceNum = \"1\"{extra} }}\n",
        path.display()
    )
}

async fn ingress(port: u16, id: &str, query: &str, body: &str) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut request = client.post(format!("http://127.0.0.1:{port}/{query}"));
    if !id.is_empty() {
        request = request.header("id", id);
    }
    let response = request.body(body.to_owned()).send().await.expect("the ingress answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn admin(port: u16, endpoint: &str, body: serde_json::Value) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/wasm/{endpoint}"))
        .body(body.to_string())
        .send()
        .await
        .expect("the admin API answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn save_stock(
    client: &mut layotto::proto::runtime::v1::runtime_client::RuntimeClient<tonic::transport::Channel>,
) {
    client
        .save_state(SaveStateRequest {
            store_name: "state_demo".into(),
            states: vec![StateItem {
                key: "book1".into(),
                value: b"100".to_vec(),
                ..Default::default()
            }],
        })
        .await
        .expect("save the stock");
}

/// The demo pair on the native config: `curl -H 'id: id_1'
/// 'localhost:PORT?name=book1'` answers from state through function 2.
async fn demo_pair(function_1: &Path, function_2: &Path) {
    let port = support::free_port();
    let (rt, mut client) = support::start_ready(&format!(
        "[server]\nwasm = \"127.0.0.1:{port}\"\n[state.state_demo]\ntype = \"in-memory\"\n{}{}",
        function("function1", function_1, ""),
        function("function2", function_2, ""),
    ))
    .await;
    save_stock(&mut client).await;
    // No body: the query string is the body, as in Layotto.
    let (status, body) = ingress(port, "id_1", "?name=book1", "").await;
    assert_eq!((status, body.as_str()), (200, "There are 100 inventories for book1.\n"));
    // A body is passed as it is.
    let (status, body) = ingress(port, "id_1", "", "x=1&name=book1").await;
    assert_eq!((status, body.as_str()), (200, "There are 100 inventories for book1.\n"));
    let (status, body) = ingress(port, "id_2", "", "book2").await;
    assert_eq!((status, body.as_str()), (200, "no such book"));
    // Layotto's InvokeService reaches a function by its id, as its `mosn`
    // channel hands the call to the WASM ingress.
    let answer = client
        .invoke_service(layotto::proto::runtime::v1::InvokeServiceRequest {
            id: "id_1".into(),
            message: Some(layotto::proto::runtime::v1::CommonInvokeRequest {
                method: "inventory".into(),
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: b"name=book1".to_vec(),
                }),
                content_type: "text/plain".into(),
                http_extension: None,
            }),
        })
        .await
        .expect("InvokeService to a function")
        .into_inner();
    assert_eq!(
        answer.data.map(|d| d.value).unwrap_or_default(),
        b"There are 100 inventories for book1.\n"
    );
    let (status, body) = ingress(port, "id_1", "?title=x", "").await;
    assert_eq!((status, body.as_str()), (200, "Param 'name' not found\n"));
    let (status, body) = ingress(port, "id_9", "?name=book1", "").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("id_9") && body.contains("id_1"), "{body}");
    let (status, body) = ingress(port, "", "?name=book1", "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("id header"), "{body}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_pair_in_webassembly_text_answers_from_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f1 = write(dir.path(), "function_1.wasm", &wat_file("function_1"));
    let f2 = write(dir.path(), "function_2.wasm", &wat_file("function_2"));
    demo_pair(&f1, &f2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_pair_in_assemblyscript_answers_from_state() {
    let Some(asc) = asc() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (f1, f2) = (dir.path().join("function_1.wasm"), dir.path().join("function_2.wasm"));
    assemblyscript(&asc, "function_1", &f1);
    assemblyscript(&asc, "function_2", &f2);
    demo_pair(&f1, &f2).await;
}

/// Layotto's own demo config.json (its FaaS demo's shape: the `wasm`
/// listener with the `Layotto` stream filter, the `wasm_filter` admin
/// listener, the `mosn` rpc channel, a state store) on the binary, with
/// the AssemblyScript pair when the compiler is here, else the WAT one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layottos_faas_config_json_runs_the_demo_on_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (f1, f2) = (dir.path().join("function_1.wasm"), dir.path().join("function_2.wasm"));
    match asc() {
        Some(asc) => {
            assemblyscript(&asc, "function_1", &f1);
            assemblyscript(&asc, "function_2", &f2);
        }
        None => {
            std::fs::write(&f1, wat_file("function_1")).expect("write");
            std::fs::write(&f2, wat_file("function_2")).expect("write");
        }
    }
    let (wasm_port, admin_port) = (support::free_port(), support::free_port());
    let config = serde_json::json!({
        "servers": [{
            "default_log_path": "stdout",
            "listeners": [
                {
                    "name": "grpc", "address": "127.0.0.1:34904", "bind_port": true,
                    "filter_chains": [{"filters": [{"type": "grpc", "config": {
                        "server_name": "runtime",
                        "grpc_config": {
                            "rpcs": {"mosn": {"config": {"channel": [{"size": 16, "protocol": "http", "listener": "wasm"}]}}},
                            "state": {"state_demo": {"type": "in-memory", "metadata": {}}}
                        }
                    }}]}]
                },
                {
                    "name": "wasm", "address": format!("127.0.0.1:{wasm_port}"), "bind_port": true,
                    "filter_chains": [{"filters": [{"type": "proxy", "config": {
                        "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "function_router"}}]}],
                    "stream_filters": [{"type": "Layotto", "config": {
                        "function1": {"name": "function1", "instance_num": 1,
                                      "vm_config": {"engine": "wasmtime", "path": f1.display().to_string()}},
                        "function2": {"name": "function2", "instance_num": 1,
                                      "vm_config": {"engine": "wasmtime", "path": f2.display().to_string()}}
                    }}]
                },
                {
                    "name": "wasm_filter", "address": format!("127.0.0.1:{admin_port}"), "bind_port": true,
                    "filter_chains": [{"filters": [{"type": "proxy", "config": {
                        "downstream_protocol": "Http1", "upstream_protocol": "Http1", "router_config_name": "wasm_router"}}]}],
                    "stream_filters": [{"type": "wasm_filter"}]
                }
            ]
        }]
    });
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).expect("write config.json");
    let sidecar = support::Sidecar::start(path, support::free_port(), support::free_port()).await;
    let mut client = support::client_at(sidecar.grpc_addr()).await;
    save_stock(&mut client).await;
    let (status, body) = ingress(wasm_port, "id_1", "?name=book1", "").await;
    assert_eq!((status, body.as_str()), (200, "There are 100 inventories for book1.\n"));
    // The admin listener is Layotto's: an unknown endpoint is an empty 404.
    let (status, body) = admin(admin_port, "nothing", serde_json::json!({})).await;
    assert_eq!((status, body.as_str()), (404, ""));
    let (status, body) = admin(
        admin_port,
        "update",
        serde_json::json!({"name": "id_1", "instance_num": 2}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, body) = ingress(wasm_port, "id_1", "?name=book1", "").await;
    assert_eq!((status, body.as_str()), (200, "There are 100 inventories for book1.\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_installs_updates_and_uninstalls_and_a_broken_module_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = write(dir.path(), "first.wasm", &hello("first"));
    let second = write(dir.path(), "second.wasm", &hello("second"));
    let broken = write(dir.path(), "broken.wasm", b"\0asm but not really");
    let (port, admin_port) = (support::free_port(), support::free_port());
    let (rt, _client) = support::start_ready(&format!(
        "[server]\nwasm = \"127.0.0.1:{port}\"\nwasm_admin = \"127.0.0.1:{admin_port}\"\n{}",
        function("first", &first, "")
    ))
    .await;
    assert_eq!(ingress(port, "first", "", "").await, (200, "hello from first\n".into()));
    assert_eq!(ingress(port, "second", "", "").await.0, 404);

    // Layotto's answers: an empty 200, or 500 {"error": ...}.
    let install = |name: &str, path: &Path| serde_json::json!({"name": name, "instance_num": 1, "vm_config": {"engine": "wasmer", "path": path.display().to_string()}});
    assert_eq!(
        admin(admin_port, "install", install("second", &second)).await,
        (200, String::new())
    );
    assert_eq!(
        ingress(port, "second", "", "").await,
        (200, "hello from second\n".into())
    );
    let (status, body) = admin(admin_port, "install", install("second", &second)).await;
    assert_eq!(
        (status, body.as_str()),
        (500, r#"{"error":"second is already registered"}"#)
    );
    let (status, body) = admin(admin_port, "install", serde_json::json!({"vm_config": {"path": "x"}})).await;
    assert_eq!((status, body.as_str()), (500, r#"{"error":"can't get name property"}"#));
    // A module that does not compile is refused and nothing changes.
    let (status, body) = admin(admin_port, "install", install("third", &broken)).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("compile"), "{body}");
    assert_eq!(
        ingress(port, "second", "", "").await,
        (200, "hello from second\n".into())
    );
    let (_, readiness) = support::readiness(&rt).await;
    assert!(readiness.pointer("/components/wasm~1third").is_none(), "{readiness}");
    assert_eq!(
        readiness
            .pointer("/components/wasm~1second/status")
            .and_then(|s| s.as_str()),
        Some("UP"),
        "{readiness}"
    );

    let (status, body) = admin(
        admin_port,
        "update",
        serde_json::json!({"name": "second", "instance_num": 3}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, body) = admin(
        admin_port,
        "update",
        serde_json::json!({"name": "second", "instance_num": 0}),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (500, r#"{"error":"instance_num should be greater than 0"}"#)
    );
    let (status, body) = admin(admin_port, "update", serde_json::json!({"name": "second"})).await;
    assert_eq!(
        (status, body.as_str()),
        (500, r#"{"error":"can't get instance_num property"}"#)
    );
    // Three instances serve calls side by side.
    let calls: Vec<_> = (0..6).map(|_| ingress(port, "second", "", "")).collect();
    for answer in futures::future::join_all(calls).await {
        assert_eq!(answer, (200, "hello from second\n".into()));
    }

    assert_eq!(
        admin(admin_port, "uninstall", serde_json::json!({"name": "second"})).await,
        (200, String::new())
    );
    assert_eq!(ingress(port, "second", "", "").await.0, 404);
    let (status, body) = admin(admin_port, "uninstall", serde_json::json!({"name": "second"})).await;
    assert_eq!(
        (status, body.as_str()),
        (500, r#"{"error":"second is not registered"}"#)
    );
    let (_, readiness) = support::readiness(&rt).await;
    assert!(readiness.pointer("/components/wasm~1second").is_none(), "{readiness}");
    // The configured one was never touched.
    assert_eq!(ingress(port, "first", "", "").await, (200, "hello from first\n".into()));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_module_file_is_reloaded_and_a_broken_one_leaves_the_old_version_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "fn.wasm", &hello("v1"));
    let port = support::free_port();
    let (rt, _client) = support::start_ready(&format!(
        "[server]\nwasm = \"127.0.0.1:{port}\"\n{}",
        function("changing", &path, "")
    ))
    .await;
    assert_eq!(ingress(port, "v1", "", "").await, (200, "hello from v1\n".into()));
    // The new version announces a new id.
    std::fs::write(&path, hello("v2")).expect("write v2");
    support::eventually("the new version to serve", Duration::from_secs(20), || async {
        (ingress(port, "v2", "", "").await == (200, "hello from v2\n".into())).then_some(())
    })
    .await;
    assert_eq!(ingress(port, "v1", "", "").await.0, 404);
    // A broken file: the loaded version keeps serving.
    std::fs::write(&path, b"not wasm at all").expect("write garbage");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ingress(port, "v2", "", "").await, (200, "hello from v2\n".into()));
    let (_, readiness) = support::readiness(&rt).await;
    assert_eq!(
        readiness
            .pointer("/components/wasm~1changing/status")
            .and_then(|s| s.as_str()),
        Some("UP"),
        "{readiness}"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_stop_a_looping_guest_and_a_memory_hog_and_replace_a_trapping_one_while_others_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let looping = write(
        dir.path(),
        "loop.wasm",
        &small_guest("loop", "0_2_0", "(loop $l (br $l)) (i32.const 0)"),
    );
    let hog = write(
        dir.path(),
        "hog.wasm",
        &small_guest(
            "hog",
            "0_2_0",
            "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable",
        ),
    );
    let trapping = write(dir.path(), "trap.wasm", &small_guest("trap", "0_2_0", "unreachable"));
    let other = write(dir.path(), "other.wasm", &hello("other"));
    let port = support::free_port();
    let (rt, _client) = support::start_ready(&format!(
        "[server]\nwasm = \"127.0.0.1:{port}\"\n{}{}{}{}",
        function("looping", &looping, ", timeout = \"100ms\""),
        function("hog", &hog, ", maxMemoryMb = \"4\""),
        function("trapping", &trapping, ""),
        function("other", &other, ", instanceNum = \"2\"").replace("instanceNum = \"1\", ", ""),
    ))
    .await;

    // Another function answers all along, with no errors.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut answered = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(ingress(port, "other", "", "").await, (200, "hello from other\n".into()));
                answered += 1;
            }
            answered
        }
    });

    // A loop is stopped within its budget (100 ms; checked under 1 s).
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = ingress(port, "loop", "", "").await;
        let took = started.elapsed();
        assert_eq!(status, 504, "{body}");
        assert!(body.contains("budget"), "{body}");
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
    // A guest growing its memory without end traps at its limit.
    let (status, body) = ingress(port, "hog", "", "").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("trapped"), "{body}");
    // A trapping guest: each call fails, its instance is replaced, and the
    // replacement serves the next call (which traps again).
    for _ in 0..3 {
        let (status, body) = ingress(port, "trap", "", "").await;
        assert_eq!(status, 500, "{body}");
        assert!(body.contains("unreachable"), "{body}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = watcher.await.expect("the other function answered every call");
    assert!(answered > 0);

    // Readiness and /metrics show status, restarts and calls.
    let (_, readiness) = support::readiness(&rt).await;
    let restarts = |name: &str| {
        readiness
            .pointer(&format!("/components/wasm~1{name}/details/restarts"))
            .and_then(|r| r.as_u64())
    };
    assert!(restarts("trapping") >= Some(3), "{readiness}");
    assert!(restarts("looping") >= Some(3), "{readiness}");
    assert_eq!(restarts("other"), Some(0), "{readiness}");
    assert_eq!(
        readiness
            .pointer("/components/wasm~1other/status")
            .and_then(|s| s.as_str()),
        Some("UP"),
        "{readiness}"
    );
    let metrics = support::metrics(&rt).await;
    let calls = |function: &str, outcome: &str| {
        support::metric(
            &metrics,
            "layotto_wasm_calls_total",
            &[("function", function), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("looping", "budget"), Some(3.0), "{metrics}");
    assert_eq!(calls("trapping", "trap"), Some(3.0), "{metrics}");
    assert_eq!(calls("other", "ok"), Some(answered as f64), "{metrics}");
    assert!(
        support::metric(
            &metrics,
            "layotto_component_restarts_total",
            &[("name", "trapping"), ("reason", "trap")]
        ) >= Some(3.0),
        "{metrics}"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_save_state_and_publish_through_the_sidecar() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Saves its request body under "written" in state_demo, publishes it
    // to topic "fromwasm" of pubsub "bus", answers "ok" or "failed".
    let writer = small_guest(
        "writer",
        "0_2_0",
        r#"(local $body i32) (local $len i32)
           (drop (call $get_buffer (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 64) (i32.const 68)))
           (local.set $body (i32.load (i32.const 64)))
           (local.set $len (i32.load (i32.const 68)))
           (i32.store (i32.const 100) (i32.const 0x74617473)) ;; "stat"
           (i32.store (i32.const 104) (i32.const 0x65645f65)) ;; "e_de"
           (i32.store16 (i32.const 108) (i32.const 0x6f6d))   ;; "mo"
           (i32.store (i32.const 112) (i32.const 0x74697277)) ;; "writ"
           (i32.store (i32.const 116) (i32.const 0x006e6574)) ;; "ten"
           (i32.store (i32.const 120) (i32.const 0x00737562)) ;; "bus"
           (i32.store (i32.const 124) (i32.const 0x6d6f7266)) ;; "from"
           (i32.store (i32.const 128) (i32.const 0x6d736177)) ;; "wasm"
           (i32.store16 (i32.const 132) (i32.const 0x6b6f))   ;; "ok"
           (if (i32.and
                 (i32.eqz (call $set_state (i32.const 100) (i32.const 10) (i32.const 112) (i32.const 7) (local.get $body) (local.get $len)))
                 (i32.eqz (call $publish (i32.const 120) (i32.const 3) (i32.const 124) (i32.const 8) (local.get $body) (local.get $len))))
             (then (drop (call $set_buffer (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 132) (i32.const 2))))
             (else (drop (call $set_buffer (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 120) (i32.const 3)))))
           ;; an import the host does not serve answers "unimplemented" (12)
           (if (i32.ne (call $lacking (i32.const 0)) (i32.const 12)) (then unreachable))
           (i32.const 0)"#,
    );
    let path = write(dir.path(), "writer.wasm", &writer);
    let port = support::free_port();
    let (rt, mut client) = support::start_ready(&format!(
        "[server]\nwasm = \"127.0.0.1:{port}\"\n[state.state_demo]\ntype = \"in-memory\"\n[pub_subs.bus]\ntype = \"in-memory\"\n{}",
        function("writer", &path, "")
    ))
    .await;
    let mut events = client
        .subscribe_topic_events(futures::StreamExt::chain(futures::stream::iter(vec![
            layotto::proto::runtime::v1::SubscribeTopicEventsRequest {
                subscribe_topic_events_request_type: Some(
                    layotto::proto::runtime::v1::subscribe_topic_events_request::SubscribeTopicEventsRequestType::InitialRequest(
                        layotto::proto::runtime::v1::SubscribeTopicEventsRequestInitial {
                            pubsub_name: "bus".into(),
                            topic: "fromwasm".into(),
                            ..Default::default()
                        },
                    ),
                ),
            },
        ]), futures::stream::pending()))
        .await
        .expect("subscribe")
        .into_inner();
    // The subscription's first message confirms it.
    let _ = tokio::time::timeout(Duration::from_secs(5), events.message()).await;
    assert_eq!(ingress(port, "writer", "", "hello state").await, (200, "ok".into()));
    let saved = client
        .get_state(layotto::proto::runtime::v1::GetStateRequest {
            store_name: "state_demo".into(),
            key: "written".into(),
            ..Default::default()
        })
        .await
        .expect("get state")
        .into_inner();
    assert_eq!(saved.data, b"hello state");
    let event = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("an event in time")
        .expect("the stream")
        .expect("an event");
    use layotto::proto::runtime::v1::subscribe_topic_events_response::SubscribeTopicEventsResponseType as Type;
    let Some(Type::EventMessage(event)) = event.subscribe_topic_events_response_type else {
        panic!("not an event: {event:?}");
    };
    assert_eq!(
        (event.topic.as_str(), event.data.as_slice()),
        ("fromwasm", b"hello state".as_slice())
    );
    // Published through Layotto's API: Layotto's CloudEvent type and source.
    assert_eq!(
        (event.r#type.as_str(), event.source.as_str()),
        ("com.runtime.event.sent", "runtime")
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wasm_output_binding_runs_a_function_from_layottos_and_daprs_apis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "bound.wasm", &hello("bound"));
    let (rt, mut client) = support::start_ready(&format!(
        "{}[bindings.runner]\ntype = \"wasm\"\nmetadata = {{ function = \"bound\" }}\n[bindings.nowhere]\ntype = \"wasm\"\nmetadata = {{ function = \"missing\" }}\n",
        function("bound", &path, "")
    ))
    .await;
    let answer = client
        .invoke_binding(layotto::proto::runtime::v1::InvokeBindingRequest {
            name: "runner".into(),
            operation: "execute".into(),
            data: b"ignored".to_vec(),
            ..Default::default()
        })
        .await
        .expect("the binding runs the function")
        .into_inner();
    assert_eq!(answer.data, b"hello from bound\n");
    let dapr = reqwest::Client::new()
        .post(format!(
            "http://{}/v1.0/bindings/runner",
            rt.dapr_http_addr().expect("dapr http")
        ))
        .json(&serde_json::json!({"operation": "execute", "data": "x"}))
        .send()
        .await
        .expect("dapr http");
    assert_eq!(dapr.status(), 200);
    assert_eq!(dapr.text().await.expect("body"), "hello from bound\n");
    let missing = client
        .invoke_binding(layotto::proto::runtime::v1::InvokeBindingRequest {
            name: "nowhere".into(),
            operation: "execute".into(),
            ..Default::default()
        })
        .await
        .expect_err("no such function");
    assert!(missing.message().contains("'missing' is not registered"), "{missing:?}");
    let wrong = client
        .invoke_binding(layotto::proto::runtime::v1::InvokeBindingRequest {
            name: "runner".into(),
            operation: "create".into(),
            ..Default::default()
        })
        .await
        .expect_err("not an operation of it");
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument, "{wrong:?}");
    rt.shutdown().await;
}

/// Layotto's `/actuator/logger` turns a component type's logs up at run
/// time: a guest's debug log appears once `wasm/wasmer` is set to debug.
/// Other health endpoints are answered 500 `{}`, as Layotto answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actuator_logger_turns_a_functions_logs_up_at_run_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chatty = small_guest(
        "chatty",
        "0_2_0",
        "(drop (call $log (i32.const 1) (i32.const 256) (i32.const 16))) (i32.const 0)",
    );
    let path = write(dir.path(), "chatty.wasm", &chatty);
    let port = support::free_port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nwasm = \"127.0.0.1:{port}\"\n{}",
            function("chatty", &path, "")
        ),
    )
    .expect("config");
    let log = dir.path().join("sidecar.log");
    let sidecar = support::Sidecar::start_logged(config, log.clone()).await;
    let actuator = sidecar.actuator_addr();
    // "hello from chatty" is at 256 (16 bytes).
    assert_eq!(ingress(port, "chatty", "", "").await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains("hello from chatt"), "debug is off at first: {text}");

    let client = reqwest::Client::new();
    let set = client
        .post(format!("http://{actuator}/actuator/logger"))
        .body(r#"{"component":"wasm/wasmer","level":"debug"}"#)
        .send()
        .await
        .expect("logger");
    assert_eq!(set.status(), 200);
    assert_eq!(set.text().await.expect("body"), "{}");
    assert_eq!(ingress(port, "chatty", "", "").await.0, 200);
    support::eventually("the guest's debug log", Duration::from_secs(5), || async {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("hello from chatt")
            .then_some(())
    })
    .await;

    for bad in [
        "",
        "{}",
        r#"{"component":"wasm","level":"debug"}"#,
        r#"{"component":"wasm/wasmer","level":"loud"}"#,
    ] {
        let answer = client
            .put(format!("http://{actuator}/actuator/logger"))
            .body(bad)
            .send()
            .await
            .expect("logger");
        assert_eq!(answer.status(), 500, "{bad}");
    }
    let other = client
        .get(format!("http://{actuator}/actuator/health/other"))
        .send()
        .await
        .expect("health/other");
    assert_eq!(other.status(), 500);
    assert_eq!(other.text().await.expect("body"), "{}");
}
