//! Dapr's front ends against Layotto's, on one in-memory store: Dapr gRPC
//! GetState vs Layotto GetState (the same block service, so the ratio is
//! the cost of the front end), and Dapr HTTP GetState against the bare
//! gRPC echo server (the floor of any call on this machine).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context;
use layotto::config::{self, Format};
use layotto::proto::bench::echo_client::EchoClient;
use layotto::proto::dapr::runtime::v1 as dapr;
use layotto::proto::dapr::runtime::v1::dapr_client::DaprClient;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;

use crate::harness::{Client, Load, Report};
use crate::{BENCH_KEY, get_request, save_request, serve_echo};

pub async fn run() -> anyhow::Result<()> {
    let mut config = config::load_str(
        "[state.s]\ntype = \"in-memory\"\n",
        Format::Toml,
        "bench",
        Some(BTreeMap::new()),
    )?;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.grpc = any;
    config.server.actuator = any;
    config.server.dapr_http = Some(any);
    let sidecar = layotto::Runtime::start(config).await?;
    let echo = serve_echo().await?;
    let load = Load::from_env();
    let client = Client::start()?;
    let grpc = client.channels(sidecar.grpc_addr(), load.connections).await?;
    let echo_clients = client.channels(echo, load.connections).await?;
    let http_addr = sidecar.dapr_http_addr().context("the Dapr HTTP listener")?;
    let url = format!("http://{http_addr}/v1.0/state/s/{BENCH_KEY}");
    let http: Vec<(reqwest::Client, String)> = (0..load.connections)
        .map(|_| {
            reqwest::Client::builder()
                .tcp_nodelay(true)
                .http1_only()
                .build()
                .map(|c| (c, url.clone()))
        })
        .collect::<Result<_, _>>()?;
    RuntimeClient::new(grpc[0].clone()).save_state(save_request()).await?;

    let mut report = Report::new(
        "dapr-state",
        "GetState of a 64-byte value on the in-memory store through Dapr's gRPC API vs Layotto's (one sidecar, one block service), and through Dapr's HTTP API vs a bare gRPC echo server",
    );
    for _ in 0..load.rounds {
        let layotto = |c| async move { RuntimeClient::new(c).get_state(get_request()).await.map(drop) };
        report.add("GetState, Layotto gRPC", load.run(&client, &grpc, layotto).await);
        let dapr_get = |c| async move { DaprClient::new(c).get_state(dapr_request()).await.map(drop) };
        report.add("GetState, Dapr gRPC", load.run(&client, &grpc, dapr_get).await);
        let over_http = |(c, url): (reqwest::Client, String)| async move {
            let response = c.get(url).send().await?;
            response.bytes().await.map(drop)
        };
        report.add("GetState, Dapr HTTP", load.run(&client, &http, over_http).await);
        let echo_get = |c| async move { EchoClient::new(c).get_state(get_request()).await.map(drop) };
        report.add(
            "GetState, echo server",
            load.run(&client, &echo_clients, echo_get).await,
        );
    }
    report.ratio(
        "GetState, Dapr gRPC",
        "GetState, Layotto gRPC",
        "throughput, Dapr gRPC / Layotto gRPC (target >= 0.95)",
    );
    report.ratio(
        "GetState, Dapr HTTP",
        "GetState, echo server",
        "throughput, Dapr HTTP / bare gRPC echo",
    );
    report.finish(&load).context("writing docs/benchmarks.md")?;
    sidecar.shutdown().await;
    Ok(())
}

fn dapr_request() -> dapr::GetStateRequest {
    dapr::GetStateRequest {
        store_name: "s".into(),
        key: BENCH_KEY.into(),
        ..Default::default()
    }
}
