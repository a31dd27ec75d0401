//! WASM functions: a trivial function through the ingress against a
//! native HTTP handler giving the same answer; the cost of a host call
//! (proxy_get_state); and the time to load a module from the in-memory
//! cache, from its artifact on disk, and by compiling it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use layotto::components::wasm::engine;

use crate::harness::{Client, Load, Report};

/// The answer of both the function and the native handler: 64 bytes.
const ANSWER: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// A guest announcing `id` whose request handling is `work` followed by
/// answering [`ANSWER`].
fn guest(id: &str, work: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_state" (func $get_state (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{id}")
  (data (i32.const 64) "store")
  (data (i32.const 80) "key")
  (data (i32.const 256) "{ANSWER}")
  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "malloc") (param $n i32) (result i32) (local $at i32)
    (local.set $at (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $at))
  (func (export "proxy_get_id")
    (drop (call $set_buffer (i32.const 8) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const {len}))))
  (func (export "proxy_on_context_create") (param i32 i32) (global.set $heap (i32.const 4096)))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $i i32)
    {work}
    (drop (call $set_buffer (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 256) (i32.const 64)))
    (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1)))"#,
        len = id.len(),
    );
    wat::parse_str(text).expect("the bench guest parses")
}

/// 100 host calls: reads "key" from store "store" a hundred times.
const HUNDRED_GETS: &str = "(block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (i32.const 100)))
      (drop (call $get_state (i32.const 64) (i32.const 5) (i32.const 80) (i32.const 3) (i32.const 32) (i32.const 36)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))";

pub async fn run(benchmark: &str) -> anyhow::Result<()> {
    match benchmark {
        "wasm-ingress" => ingress().await,
        "wasm-host-call" => host_call().await,
        _ => start(),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn sidecar_with(functions: &[(&str, Vec<u8>)], dir: &std::path::Path) -> anyhow::Result<(layotto::Runtime, u16)> {
    let port = free_port()?;
    let mut config = format!("[server]\nwasm = \"127.0.0.1:{port}\"\n[state.store]\ntype = \"in-memory\"\n");
    for (id, wasm) in functions {
        let path = dir.join(format!("{id}.wasm"));
        std::fs::write(&path, wasm)?;
        config.push_str(&format!(
            "[wasm.{id}]\ntype = \"wasmer\"\nmetadata = {{ path = \"{}\", instanceNum = \"2\", watch = \"false\", cacheDir = \"{}\" }}\n",
            path.display(),
            dir.join("cache").display()
        ));
    }
    let sidecar = crate::sidecar(&config).await?;
    // Until the functions are up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sidecar.status().ready() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((sidecar, port))
}

/// A native handler answering what the function answers.
async fn native_server() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(axum::routing::any(|| async { ANSWER }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

fn http_call(
    url: Arc<str>,
    id: Option<&'static str>,
) -> impl Fn(reqwest::Client) -> futures::future::BoxFuture<'static, Result<(), reqwest::Error>> + Clone + Send + 'static
{
    move |c: reqwest::Client| {
        let url = url.clone();
        Box::pin(async move {
            let mut request = c.post(&*url);
            if let Some(id) = id {
                request = request.header("id", id);
            }
            let response = request.send().await?.error_for_status()?;
            response.bytes().await.map(drop)
        })
    }
}

async fn ingress() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (sidecar, port) = sidecar_with(&[("trivial", guest("trivial", ""))], dir.path()).await?;
    let native = native_server().await?;
    let load = Load::from_env();
    let client = Client::start()?;
    let http = client
        .spawn(async { reqwest::Client::builder().pool_max_idle_per_host(256).build() })
        .await??;
    let function_url: Arc<str> = format!("http://127.0.0.1:{port}/").into();
    let native_url: Arc<str> = format!("http://{native}/").into();
    let mut reports = [
        (
            Report::new(
                "wasm-ingress-1",
                "A trivial WASM function (answers 64 bytes) through the ingress against a native axum handler answering the same, one call in flight",
            )
            .run_by("wasm-ingress"),
            load.sequential(),
        ),
        (
            Report::new(
                "wasm-ingress-64",
                "A trivial WASM function (answers 64 bytes) through the ingress against a native axum handler answering the same, 64 calls in flight (2 instances)",
            )
            .run_by("wasm-ingress"),
            load.clone(),
        ),
    ];
    for _ in 0..load.rounds {
        for (report, load) in &mut reports {
            let sample = load
                .run(
                    &client,
                    std::slice::from_ref(&http),
                    http_call(function_url.clone(), Some("trivial")),
                )
                .await;
            report.add("function via the ingress", sample);
            let sample = load
                .run(
                    &client,
                    std::slice::from_ref(&http),
                    http_call(native_url.clone(), None),
                )
                .await;
            report.add("native handler (baseline)", sample);
        }
    }
    for (report, load) in &mut reports {
        report.added(
            "function via the ingress",
            "native handler (baseline)",
            "the function over the native handler",
        );
        report.finish(load).context("writing docs/benchmarks.md")?;
    }
    sidecar.shutdown().await;
    Ok(())
}

async fn host_call() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (sidecar, port) = sidecar_with(
        &[
            ("plain", guest("plain", "")),
            ("hundred", guest("hundred", HUNDRED_GETS)),
        ],
        dir.path(),
    )
    .await?;
    let load = Load::from_env().sequential();
    let client = Client::start()?;
    let http = client.spawn(async { reqwest::Client::builder().build() }).await??;
    let url: Arc<str> = format!("http://127.0.0.1:{port}/").into();
    let mut report = Report::new(
        "wasm-host-call",
        "The cost of a host call: a function making 100 proxy_get_state calls (in-memory store) against the same function making none, one call in flight",
    );
    for _ in 0..load.rounds {
        let sample = load
            .run(
                &client,
                std::slice::from_ref(&http),
                http_call(url.clone(), Some("hundred")),
            )
            .await;
        report.add("100 host calls", sample);
        let sample = load
            .run(
                &client,
                std::slice::from_ref(&http),
                http_call(url.clone(), Some("plain")),
            )
            .await;
        report.add("no host call (baseline)", sample);
    }
    let (with, _) = report.latency("100 host calls");
    let (without, _) = report.latency("no host call (baseline)");
    report.note(format!(
        "one proxy_get_state from the guest (through the state block and the store's actor): **{:.1} µs** (difference of median p50 / 100)",
        (with - without) / 100.0
    ));
    report.finish(&load).context("writing docs/benchmarks.md")?;
    sidecar.shutdown().await;
    Ok(())
}

/// A module of `n` functions, each with some arithmetic: enough code for
/// compiling to take measurable time.
fn big_module(n: usize) -> Vec<u8> {
    let mut text = String::from("(module (memory (export \"memory\") 1)\n");
    for i in 0..n {
        text.push_str(&format!(
            "(func (export \"f{i}\") (param $x i32) (result i32) (local $i i32)
               (block $d (loop $l (br_if $d (i32.ge_u (local.get $i) (i32.const {i})))
                 (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 31)) (local.get $i)))
                 (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $l)))
               (local.get $x))\n"
        ));
    }
    text.push(')');
    wat::parse_str(text).expect("the big module parses")
}

fn start() -> anyhow::Result<()> {
    let wasm = big_module(400);
    let rounds = 7;
    let dir = tempfile::tempdir()?;
    let mut cold = Vec::new();
    let mut disk = Vec::new();
    let mut memory = Vec::new();
    for round in 0..rounds {
        let cache = dir.path().join(format!("round{round}"));
        engine::clear_memory_cache();
        let t = Instant::now();
        let (_, source) = engine::load(&wasm, 1024, Some(&cache)).map_err(anyhow::Error::msg)?;
        cold.push(t.elapsed());
        anyhow::ensure!(source == engine::Source::Compiled, "expected a compile, got {source:?}");
        engine::clear_memory_cache();
        let t = Instant::now();
        let (_, source) = engine::load(&wasm, 1024, Some(&cache)).map_err(anyhow::Error::msg)?;
        disk.push(t.elapsed());
        anyhow::ensure!(source == engine::Source::Disk, "expected the artifact, got {source:?}");
        let t = Instant::now();
        let (_, source) = engine::load(&wasm, 1024, Some(&cache)).map_err(anyhow::Error::msg)?;
        memory.push(t.elapsed());
        anyhow::ensure!(
            source == engine::Source::Memory,
            "expected the memory cache, got {source:?}"
        );
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (cold, disk, memory) = (median(cold), median(disk), median(memory));
    let mut report = Report::new(
        "wasm-start",
        "Loading a function's module (400 functions, 1 MiB of code or so once compiled): compiled by cranelift, from wasmer's serialized artifact on disk, and from the in-memory cache",
    );
    report.note(format!(
        "module of {} bytes; medians of {rounds} loads each: cold compile **{:.1} ms**, from the disk artifact **{:.2} ms** ({:.0}x faster), from memory **{:.1} µs**",
        wasm.len(),
        cold.as_secs_f64() * 1e3,
        disk.as_secs_f64() * 1e3,
        cold.as_secs_f64() / disk.as_secs_f64().max(1e-9),
        memory.as_secs_f64() * 1e6,
    ));
    report.finish(&Load {
        rounds,
        seconds: 0.0,
        concurrency: 1,
        connections: 0,
    })?;
    Ok(())
}
