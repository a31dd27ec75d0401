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

mod harness;

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
use layotto::proto::bench::echo_client::EchoClient;
use layotto::proto::bench::echo_server::{Echo, EchoServer};
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use layotto::proto::runtime::v1::{SayHelloRequest, SayHelloResponse};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

fn main() -> anyhow::Result<()> {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        if wanted("actor-hop") {
            actor_hop().await?;
        }
        anyhow::Ok(())
    })
}

/// SayHello through the component actor, against the same answer given in
/// the gRPC handler on the same server stack.
async fn actor_hop() -> anyhow::Result<()> {
    let toml = "[hellos.helloworld]\ntype = \"helloworld\"\nhello = \"greeting\"\n[log]\nlevel = \"warn\"\n";
    let mut config = config::load_str(toml, Format::Toml, "bench", Some(BTreeMap::new()))?;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.grpc = any;
    config.server.actuator = any;
    config.server.dapr_http = None;
    let sidecar = Runtime::start(config).await?;
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

fn request() -> SayHelloRequest {
    SayHelloRequest {
        service_name: "helloworld".into(),
        name: "bench".into(),
        data: None,
    }
}

/// The baseline: the same answer (`HelloWorld::greet`) computed in the gRPC
/// handler, behind the same metrics layer, with no actor in between.
struct DirectHello(HelloWorld);

#[tonic::async_trait]
impl Echo for DirectHello {
    async fn say_hello(&self, req: Request<SayHelloRequest>) -> Result<Response<SayHelloResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(SayHelloResponse {
            hello: self.0.greet(&req.name),
            data: req.data,
        }))
    }
}

async fn serve_echo() -> anyhow::Result<SocketAddr> {
    let hello = HelloWorld::new(&ComponentSpec::new("helloworld", "helloworld").with_metadata("hello", "greeting"));
    let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?.with_nodelay(Some(true));
    let addr = incoming.local_addr()?;
    let layer = GrpcMetricsLayer::new(Metrics::new(), layotto::api::grpc::served_methods());
    tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(EchoServer::new(DirectHello(hello)))
            .serve_with_incoming(incoming),
    );
    Ok(addr)
}
