//! Service invocation: app -> sidecar -> sidecar -> app, against the same
//! call made by the app to the other app directly, for Dapr's HTTP invoke
//! (to an HTTP app), Dapr's gRPC InvokeService (to a gRPC app's OnInvoke)
//! and gRPC proxying (a plain gRPC call with `dapr-app-id`), one call in
//! flight and 64.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use layotto::Runtime;
use layotto::components::ComponentSpec;
use layotto::components::hello::helloworld::HelloWorld;
use layotto::config::{self, Format};
use layotto::proto::bench::echo_client::EchoClient;
use layotto::proto::bench::echo_server::EchoServer;
use layotto::proto::dapr::common::v1 as common;
use layotto::proto::dapr::runtime::v1 as dapr;
use layotto::proto::dapr::runtime::v1::app_callback_client::AppCallbackClient;
use layotto::proto::dapr::runtime::v1::app_callback_server::{AppCallback, AppCallbackServer};
use layotto::proto::dapr::runtime::v1::dapr_client::DaprClient;
use layotto::proto::runtime::v1::SayHelloRequest;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::DirectHello;
use crate::harness::{Client, Load, Report};

/// The answer both apps give: 64 bytes.
const ANSWER: &[u8; 64] = &[b'x'; 64];

pub async fn run() -> anyhow::Result<()> {
    let (http_app, grpc_app) = serve_apps()?;
    let http_target = sidecar(&format!(
        "[server]\ninternal = \"127.0.0.1:0\"\n[app]\napp_id = \"bench-http\"\nport = {}\nprotocol = \"http\"\n",
        http_app.port()
    ))
    .await?;
    let grpc_target = sidecar(&format!(
        "[server]\ninternal = \"127.0.0.1:0\"\n[app]\napp_id = \"bench-grpc\"\nport = {}\nprotocol = \"grpc\"\n",
        grpc_app.port()
    ))
    .await?;
    let caller = sidecar(&format!(
        "[server]\ninternal = \"disabled\"\n[app]\napp_id = \"bench-caller\"\n[name_resolution.apps]\ntype = \"static\"\nmetadata = {{ bench-http = \"{}\", bench-grpc = \"{}\" }}\n",
        http_target.internal_addr().context("internal listener")?,
        grpc_target.internal_addr().context("internal listener")?,
    ))
    .await?;
    let caller_http = caller.dapr_http_addr().context("Dapr HTTP listener")?;

    let load = Load::from_env();
    let client = Client::start()?;
    let http = client
        .spawn(async { reqwest::Client::builder().pool_max_idle_per_host(256).build() })
        .await??;
    let via_sidecars_url: Arc<str> = format!("http://{caller_http}/v1.0/invoke/bench-http/method/ping").into();
    let direct_url: Arc<str> = format!("http://{http_app}/ping").into();
    let caller_channels = client.channels(caller.grpc_addr(), load.connections).await?;
    let app_channels = client.channels(grpc_app, load.connections).await?;

    let title = |n| {
        format!(
            "Service invocation, {n}: app -> sidecar -> sidecar -> app against app -> app directly (each app answers 64 bytes; \
             both sidecars, both apps and the client share the machine)"
        )
    };
    let mut reports = [
        (
            Report::new("invoke-1", title("one call in flight").leak()).run_by("invoke"),
            load.sequential(),
        ),
        (
            Report::new("invoke-64", title("64 calls in flight").leak()).run_by("invoke"),
            load.clone(),
        ),
    ];
    for _ in 0..load.rounds {
        for (report, load) in &mut reports {
            let http_call = |url: Arc<str>| {
                move |c: reqwest::Client| {
                    let url = url.clone();
                    async move {
                        let response = c.get(&*url).send().await?.error_for_status()?;
                        response.bytes().await.map(drop)
                    }
                }
            };
            let via = load
                .run(
                    &client,
                    std::slice::from_ref(&http),
                    http_call(via_sidecars_url.clone()),
                )
                .await;
            report.add("HTTP via two sidecars", via);
            let direct = load
                .run(&client, std::slice::from_ref(&http), http_call(direct_url.clone()))
                .await;
            report.add("HTTP direct", direct);

            let via = load
                .run(&client, &caller_channels, |channel| async move {
                    DaprClient::new(channel)
                        .invoke_service(dapr::InvokeServiceRequest {
                            id: "bench-grpc".into(),
                            message: Some(invoke_request()),
                        })
                        .await
                        .map(drop)
                })
                .await;
            report.add("InvokeService via two sidecars", via);
            let direct = load
                .run(&client, &app_channels, |channel| async move {
                    AppCallbackClient::new(channel)
                        .on_invoke(invoke_request())
                        .await
                        .map(drop)
                })
                .await;
            report.add("OnInvoke direct", direct);

            let via = load
                .run(&client, &caller_channels, |channel| async move {
                    let mut request = Request::new(hello());
                    request
                        .metadata_mut()
                        .insert("dapr-app-id", tonic::metadata::MetadataValue::from_static("bench-grpc"));
                    EchoClient::new(channel).say_hello(request).await.map(drop)
                })
                .await;
            report.add("gRPC proxied via two sidecars", via);
            let direct = load
                .run(&client, &app_channels, |channel| async move {
                    EchoClient::new(channel).say_hello(hello()).await.map(drop)
                })
                .await;
            report.add("gRPC direct", direct);
        }
    }
    for (report, load) in &mut reports {
        report.added("HTTP via two sidecars", "HTTP direct", "HTTP invoke");
        report.added(
            "InvokeService via two sidecars",
            "OnInvoke direct",
            "gRPC InvokeService",
        );
        report.added("gRPC proxied via two sidecars", "gRPC direct", "gRPC proxying");
        report.finish(load).context("writing docs/benchmarks.md")?;
    }
    caller.shutdown().await;
    http_target.shutdown().await;
    grpc_target.shutdown().await;
    Ok(())
}

fn invoke_request() -> common::InvokeRequest {
    common::InvokeRequest {
        method: "ping".into(),
        data: Some(prost_types::Any {
            type_url: String::new(),
            value: b"ping".to_vec(),
        }),
        content_type: "text/plain".into(),
        http_extension: None,
    }
}

fn hello() -> SayHelloRequest {
    SayHelloRequest {
        service_name: "helloworld".into(),
        name: "bench".into(),
        data: None,
    }
}

/// A sidecar on free ports (its Dapr HTTP API included).
async fn sidecar(toml: &str) -> anyhow::Result<Runtime> {
    let mut config = config::load_str(toml, Format::Toml, "bench", Some(Default::default()))?;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.grpc = any;
    config.server.actuator = any;
    config.server.dapr_http = Some(any);
    Ok(Runtime::start(config).await?)
}

/// The gRPC app's OnInvoke: the 64-byte answer.
struct App;

#[tonic::async_trait]
impl AppCallback for App {
    async fn on_invoke(&self, _: Request<common::InvokeRequest>) -> Result<Response<common::InvokeResponse>, Status> {
        Ok(Response::new(common::InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: ANSWER.to_vec(),
            }),
            content_type: "text/plain".into(),
        }))
    }

    async fn list_topic_subscriptions(
        &self,
        _: Request<()>,
    ) -> Result<Response<dapr::ListTopicSubscriptionsResponse>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn on_topic_event(
        &self,
        _: Request<dapr::TopicEventRequest>,
    ) -> Result<Response<dapr::TopicEventResponse>, Status> {
        Err(Status::unimplemented("no topics"))
    }

    async fn list_input_bindings(&self, _: Request<()>) -> Result<Response<dapr::ListInputBindingsResponse>, Status> {
        Ok(Response::new(Default::default()))
    }

    async fn on_binding_event(
        &self,
        _: Request<dapr::BindingEventRequest>,
    ) -> Result<Response<dapr::BindingEventResponse>, Status> {
        Err(Status::unimplemented("no bindings"))
    }
}

/// The HTTP app and the gRPC app (OnInvoke and the Echo service), on a
/// single-threaded runtime of their own, as an app beside its sidecar.
fn serve_apps() -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let http = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let grpc = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    http.set_nonblocking(true)?;
    grpc.set_nonblocking(true)?;
    let addrs = (http.local_addr()?, grpc.local_addr()?);
    let hello = HelloWorld::new(&ComponentSpec::new("helloworld", "helloworld").with_metadata("hello", "greeting"));
    std::thread::Builder::new().name("bench-apps".into()).spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("apps runtime");
        rt.block_on(async move {
            let http = tokio::net::TcpListener::from_std(http).expect("http app listener");
            let app = axum::Router::new().fallback(|| async { &ANSWER[..] });
            let http = http.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move { axum::serve(http, app).await });
            let grpc = tokio::net::TcpListener::from_std(grpc).expect("grpc app listener");
            let incoming = TcpIncoming::from(grpc).with_nodelay(Some(true));
            let _ = Server::builder()
                .add_service(AppCallbackServer::new(App))
                .add_service(EchoServer::new(DirectHello(hello)))
                .serve_with_incoming(incoming)
                .await;
        });
    })?;
    Ok(addrs)
}
