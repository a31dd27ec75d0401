//! Benchmarks of the sidecar, written to `docs/benchmarks.md`.
//!
//! `cargo bench --bench runtime` runs every benchmark; name one to run only
//! it (`cargo bench --bench runtime -- actor-hop`). Each benchmark measures
//! the sidecar and a baseline in the same run, alternating rounds, and
//! reports the ratio of medians: the machine is small and noisy, so only
//! ratios from one run mean anything.
//!
//! Environment: `BENCH_ROUNDS` (default 5), `BENCH_SECONDS` per round
//! (default 3), `BENCH_CONCURRENCY` calls in flight (default 64),
//! `BENCH_WRITE=0` to print without touching docs/benchmarks.md.

#![allow(clippy::unwrap_used)]

mod coordination;
mod dapr;
mod harness;
mod invoke;
mod pubsub;
mod wasm;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context;
use harness::{Client, Load, Report};
use layotto::Runtime;
use layotto::api::grpc::GrpcMetricsLayer;
use layotto::components::ComponentSpec;
use layotto::components::hello::helloworld::HelloWorld;
use layotto::config::{self, Format};
use layotto::metrics::Metrics;
use layotto::proto::bench::RepeatRequest;
use layotto::proto::bench::echo_client::EchoClient;
use layotto::proto::bench::echo_server::{Echo, EchoServer};
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use layotto::proto::runtime::v1::{
    GetStateRequest, GetStateResponse, SaveStateRequest, SayHelloRequest, SayHelloResponse, StateItem,
};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

fn main() -> anyhow::Result<()> {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    // Log as `layotto start` does (the default config's level, to stderr).
    // Without a subscriber every span would fall back to the `log` crate
    // (sqlx turns on tracing's `log` feature), a cost no sidecar pays.
    layotto::telemetry::init(&layotto::Config::default().log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        if wanted("actor-hop") {
            actor_hop().await?;
        }
        if wanted("state-memory") {
            state_memory().await?;
        }
        if wanted("state-redis") {
            state_redis().await?;
        }
        if wanted("pubsub") {
            pubsub::run().await?;
        }
        if wanted("lock-redis") {
            coordination::lock_redis().await?;
        }
        if wanted("sequencer") {
            coordination::sequencer().await?;
        }
        if wanted("dapr-state") {
            dapr::run().await?;
        }
        if wanted("invoke") {
            invoke::run().await?;
        }
        if wanted("flow-control") {
            flow_control().await?;
        }
        for benchmark in ["wasm-ingress", "wasm-host-call", "wasm-start"] {
            if wanted(benchmark) {
                wasm::run(benchmark).await?;
            }
        }
        anyhow::Ok(())
    })
}

/// A sidecar on free ports with the given components.
pub(crate) async fn sidecar(components: &str) -> anyhow::Result<Runtime> {
    let mut config = config::load_str(components, Format::Toml, "bench", Some(BTreeMap::new()))?;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.grpc = any;
    config.server.actuator = any;
    config.server.dapr_http = None;
    Ok(Runtime::start(config).await?)
}

/// SayHello through the component actor, against the same answer given in
/// the gRPC handler on the same server stack.
async fn actor_hop() -> anyhow::Result<()> {
    let sidecar = sidecar("[hellos.helloworld]\ntype = \"helloworld\"\nhello = \"greeting\"\n").await?;
    let echo = serve_echo().await?;

    let load = Load::from_env();
    let client = Client::start()?;
    let sidecar_clients = client.channels(sidecar.grpc_addr(), load.connections).await?;
    let echo_clients = client.channels(echo, load.connections).await?;

    let mut report = Report::new(
        "actor-hop",
        "SayHello through the component actor vs answered in the handler",
    );
    for _ in 0..load.rounds {
        let via_actor = load
            .run(&client, &sidecar_clients, |channel| async move {
                RuntimeClient::new(channel).say_hello(request()).await.map(drop)
            })
            .await;
        report.add("via actor (sidecar)", via_actor);
        let direct = load
            .run(&client, &echo_clients, |channel| async move {
                EchoClient::new(channel).say_hello(request()).await.map(drop)
            })
            .await;
        report.add("in handler (baseline)", direct);
    }
    report.ratio(
        "via actor (sidecar)",
        "in handler (baseline)",
        "throughput of the actor path / baseline (target >= 0.90)",
    );
    report.finish(&load).context("writing docs/benchmarks.md")?;
    sidecar.shutdown().await;
    Ok(())
}

/// SayHello through a sidecar whose flow control has rules for other
/// methods (every call looks its path up and finds no rule), against a
/// sidecar with no rules at all.
async fn flow_control() -> anyhow::Result<()> {
    const HELLO: &str = "[hellos.helloworld]\ntype = \"helloworld\"\nhello = \"greeting\"\n";
    let mut rules = String::new();
    for method in ["GetState", "SaveState", "PublishEvent", "GetNextId"] {
        rules.push_str(&format!(
            "[[server.flow_control.rules]]\nresource = \"/spec.proto.runtime.v1.Runtime/{method}\"\nthreshold = 1000\n"
        ));
    }
    let with_rules = sidecar(&format!("{rules}{HELLO}")).await?;
    let without = sidecar(HELLO).await?;
    let load = Load::from_env();
    let client = Client::start()?;
    let with_clients = client.channels(with_rules.grpc_addr(), load.connections).await?;
    let without_clients = client.channels(without.grpc_addr(), load.connections).await?;
    let mut report = Report::new(
        "flow-control",
        "SayHello through the flow control layer when no rule matches (rules on four other methods) vs no rules",
    );
    for _ in 0..load.rounds {
        let sample = load
            .run(&client, &with_clients, |channel| async move {
                RuntimeClient::new(channel).say_hello(request()).await.map(drop)
            })
            .await;
        report.add("rules on other methods", sample);
        let sample = load
            .run(&client, &without_clients, |channel| async move {
                RuntimeClient::new(channel).say_hello(request()).await.map(drop)
            })
            .await;
        report.add("no rules (baseline)", sample);
    }
    report.ratio(
        "rules on other methods",
        "no rules (baseline)",
        "throughput with the layer looking up a method it has no rule for / without rules (target >= 0.97)",
    );
    report.finish(&load).context("writing docs/benchmarks.md")?;
    with_rules.shutdown().await;
    without.shutdown().await;
    Ok(())
}

fn request() -> SayHelloRequest {
    SayHelloRequest {
        service_name: "helloworld".into(),
        name: "bench".into(),
        data: None,
    }
}

/// GetState and SaveState on the in-memory store through the sidecar,
/// against a bare gRPC server on the same stack that answers them in the
/// handler with a fixed value (no routing, no actor, no store).
async fn state_memory() -> anyhow::Result<()> {
    let sidecar = sidecar("[state.s]\ntype = \"in-memory\"\n").await?;
    let echo = serve_echo().await?;
    let load = Load::from_env();
    let client = Client::start()?;
    let sidecar_clients = client.channels(sidecar.grpc_addr(), load.connections).await?;
    let echo_clients = client.channels(echo, load.connections).await?;
    RuntimeClient::new(sidecar_clients[0].clone())
        .save_state(save_request())
        .await?;

    let mut report = Report::new(
        "state-memory",
        "GetState and SaveState of a 64-byte value on the in-memory store, through the sidecar vs a bare gRPC echo server",
    );
    for _ in 0..load.rounds {
        let get = |c| async move { RuntimeClient::new(c).get_state(get_request()).await.map(drop) };
        report.add("GetState, sidecar", load.run(&client, &sidecar_clients, get).await);
        let get = |c| async move { EchoClient::new(c).get_state(get_request()).await.map(drop) };
        report.add("GetState, echo server", load.run(&client, &echo_clients, get).await);
        let save = |c| async move { RuntimeClient::new(c).save_state(save_request()).await.map(drop) };
        report.add("SaveState, sidecar", load.run(&client, &sidecar_clients, save).await);
        let save = |c| async move { EchoClient::new(c).save_state(save_request()).await.map(drop) };
        report.add("SaveState, echo server", load.run(&client, &echo_clients, save).await);
    }
    report.ratio(
        "GetState, sidecar",
        "GetState, echo server",
        "GetState throughput, sidecar / echo (target >= 0.80)",
    );
    report.ratio(
        "SaveState, sidecar",
        "SaveState, echo server",
        "SaveState throughput, sidecar / echo (target >= 0.80)",
    );
    report.finish(&load).context("writing docs/benchmarks.md")?;
    sidecar.shutdown().await;
    Ok(())
}

/// GetState on Redis through the sidecar, against the same read (`HMGET key
/// data version`) sent straight to the same Redis with the `redis` crate,
/// one call at a time: the difference is the latency the sidecar adds.
async fn state_redis() -> anyhow::Result<()> {
    if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
        eprintln!("state-redis: skipped, no Redis on 127.0.0.1:6379");
        return Ok(());
    }
    let sidecar = sidecar("[state.s]\ntype = \"redis\"\nmetadata = { redisHost = \"127.0.0.1:6379\" }\n").await?;
    let load = Load::from_env();
    let sequential = load.sequential();
    let client = Client::start()?;
    let sidecar_clients = client.channels(sidecar.grpc_addr(), 1).await?;
    let echo = serve_echo().await?;
    let echo_clients = client.channels(echo, 1).await?;
    RuntimeClient::new(sidecar_clients[0].clone())
        .save_state(save_request())
        .await?;
    let direct = client
        .spawn(async {
            let redis = redis::Client::open("redis://127.0.0.1:6379/0")?;
            redis.get_connection_manager().await
        })
        .await??;
    let directs = vec![direct];

    let mut report = Report::new(
        "state-redis",
        "GetState of a 64-byte value on Redis through the sidecar vs the same HMGET sent directly with the redis crate, \
         one call in flight; with a bare gRPC echo and the in-memory store as reference points",
    );
    // The same read on the in-memory store: the sidecar's own overhead.
    let mem = crate::sidecar("[state.s]\ntype = \"in-memory\"\n").await?;
    let mem_clients = client.channels(mem.grpc_addr(), 1).await?;
    RuntimeClient::new(mem_clients[0].clone())
        .save_state(save_request())
        .await?;
    for _ in 0..load.rounds {
        let get = |c| async move { RuntimeClient::new(c).get_state(get_request()).await.map(drop) };
        report.add(
            "GetState in-memory via sidecar",
            sequential.run(&client, &mem_clients, get).await,
        );
        let get = |c| async move { RuntimeClient::new(c).get_state(get_request()).await.map(drop) };
        report.add(
            "GetState via sidecar",
            sequential.run(&client, &sidecar_clients, get).await,
        );
        let hmget = |mut c: redis::aio::ConnectionManager| async move {
            redis::cmd("HMGET")
                .arg(BENCH_KEY)
                .arg("data")
                .arg("version")
                .query_async::<(Option<Vec<u8>>, Option<String>)>(&mut c)
                .await
                .map(drop)
        };
        report.add("HMGET direct", sequential.run(&client, &directs, hmget).await);
        let get = |c| async move { EchoClient::new(c).get_state(get_request()).await.map(drop) };
        report.add(
            "GetState, echo server (gRPC floor)",
            sequential.run(&client, &echo_clients, get).await,
        );
    }
    let (sidecar_p50, sidecar_p99) = report.latency("GetState via sidecar");
    let (direct_p50, direct_p99) = report.latency("HMGET direct");
    let (floor_p50, _) = report.latency("GetState, echo server (gRPC floor)");
    report.note(format!(
        "**{:.0} µs** p50 added by the sidecar (target <= 100 µs); p99 added {:.0} µs",
        sidecar_p50 - direct_p50,
        sidecar_p99 - direct_p99
    ));
    let (memory_p50, _) = report.latency("GetState in-memory via sidecar");
    report.note(format!(
        "of the p50 added, {floor_p50:.0} µs is a bare gRPC round trip on this machine (the echo server); \
         the sidecar's routing and actor hop add {:.0} µs to that (in-memory store vs echo), and the rest, {:.0} µs, \
         is the Redis call made from the sidecar's event loop rather than from a client of its own",
        memory_p50 - floor_p50,
        sidecar_p50 - memory_p50 - direct_p50
    ));
    report.finish(&sequential).context("writing docs/benchmarks.md")?;
    sidecar.shutdown().await;
    mem.shutdown().await;
    Ok(())
}

pub(crate) const BENCH_KEY: &str = "layotto-bench-key";

pub(crate) fn get_request() -> GetStateRequest {
    GetStateRequest {
        store_name: "s".into(),
        key: BENCH_KEY.into(),
        ..Default::default()
    }
}

pub(crate) fn save_request() -> SaveStateRequest {
    SaveStateRequest {
        store_name: "s".into(),
        states: vec![StateItem {
            key: BENCH_KEY.into(),
            value: vec![b'x'; 64],
            ..Default::default()
        }],
    }
}

/// The baseline: the same answers computed in the gRPC handler, behind the
/// same metrics layer, with no actor in between: SayHello greets with
/// `HelloWorld::greet`; GetState answers a fixed 64-byte value, SaveState
/// nothing.
pub(crate) struct DirectHello(pub(crate) HelloWorld);

#[tonic::async_trait]
impl Echo for DirectHello {
    async fn say_hello(&self, req: Request<SayHelloRequest>) -> Result<Response<SayHelloResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(SayHelloResponse {
            hello: self.0.greet(&req.name),
            data: req.data,
        }))
    }

    async fn get_state(&self, _req: Request<GetStateRequest>) -> Result<Response<GetStateResponse>, Status> {
        Ok(Response::new(GetStateResponse {
            data: vec![b'x'; 64],
            etag: "1".into(),
            metadata: Default::default(),
        }))
    }

    async fn save_state(&self, _req: Request<SaveStateRequest>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }

    type RepeatStream = futures::stream::Iter<std::vec::IntoIter<Result<SayHelloResponse, Status>>>;

    async fn repeat(&self, req: Request<RepeatRequest>) -> Result<Response<Self::RepeatStream>, Status> {
        let req = req.into_inner();
        let answers: Vec<_> = (0..req.count.min(1000))
            .map(|_| {
                Ok(SayHelloResponse {
                    hello: req.text.clone(),
                    data: None,
                })
            })
            .collect();
        Ok(Response::new(futures::stream::iter(answers)))
    }
}

/// Serves the baseline on a single-threaded runtime of its own, as the
/// sidecar serves on its event loop: the same stack, the same threads.
pub(crate) async fn serve_echo() -> anyhow::Result<SocketAddr> {
    let hello = HelloWorld::new(&ComponentSpec::new("helloworld", "helloworld").with_metadata("hello", "greeting"));
    let incoming = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    incoming.set_nonblocking(true)?;
    let addr = incoming.local_addr()?;
    std::thread::Builder::new().name("bench-echo".into()).spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("echo runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(incoming).expect("echo listener");
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let layer = GrpcMetricsLayer::new(Metrics::new(), layotto::api::grpc::served_methods());
            let _ = Server::builder()
                .layer(layer)
                .add_service(EchoServer::new(DirectHello(hello)))
                .serve_with_incoming(incoming)
                .await;
        });
    })?;
    Ok(addr)
}
