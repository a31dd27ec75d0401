//! The gRPC server: Layotto's `spec.proto.runtime.v1.Runtime`, plus
//! `grpc.health.v1.Health` fed by the status registry, server reflection,
//! and the configured [API plugins](super::plugins). Every call is counted
//! and timed by [`metrics_layer`].
//!
//! The Runtime handlers are thin adapters over the
//! [block services](super::blocks): decode the proto into a block request,
//! call the block, encode its answer; [`status`] maps a block's error to a
//! gRPC status.

mod auth;
mod bindings;
pub(crate) mod codec;
mod configuration;
mod dapr;
mod file;
mod flow_control;
mod health;
mod hello;
pub(crate) mod invoke;
mod lock;
mod metrics_layer;
mod proxy;
mod pubsub;
pub use metrics_layer::GrpcMetricsLayer;
mod lifecycle;
mod runtime;
mod secrets;
mod sequencer;
mod state;
pub mod status;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use prost::Message;
use tokio::net::TcpListener;
use tonic::transport::Server;

use super::ApiContext;
use super::plugins::PluginError;
use crate::config::ServerConfig;
use crate::proto::dapr::internals::v1::service_invocation_server::ServiceInvocationServer;
use crate::proto::dapr::runtime::v1::dapr_server::DaprServer;
use crate::proto::runtime::v1::runtime_server::RuntimeServer;
use tonic::service::{Routes, RoutesBuilder};

/// Largest message accepted or sent: 16 MiB, above gRPC's 4 MiB default so
/// that bulk state and file chunks fit.
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The descriptors of the services served whatever the config: Layotto's
/// API, Dapr's, gRPC health.
const BUILT_IN_DESCRIPTORS: [&[u8]; 3] = [
    crate::proto::FILE_DESCRIPTOR_SET,
    crate::proto::DAPR_FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
];

/// Every `"package.Service/Method"` this server answers without plugins.
pub fn served_methods() -> HashSet<String> {
    let mut methods: HashSet<String> = ["grpc.reflection.v1.ServerReflection/ServerReflectionInfo".to_owned()].into();
    for encoded in BUILT_IN_DESCRIPTORS {
        if let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) {
            methods.extend(methods_of(&set));
        }
    }
    methods
}

/// The `"package.Service/Method"` paths a descriptor set describes.
fn methods_of(set: &prost_types::FileDescriptorSet) -> impl Iterator<Item = String> + '_ {
    set.file.iter().flat_map(|file| {
        file.service.iter().flat_map(move |service| {
            service
                .method
                .iter()
                .map(move |method| format!("{}.{}/{}", file.package(), service.name(), method.name()))
        })
    })
}

/// The `"package.Service"` names a descriptor set describes.
fn services_of(set: &prost_types::FileDescriptorSet) -> impl Iterator<Item = String> + '_ {
    set.file.iter().flat_map(|file| {
        file.service
            .iter()
            .map(move |s| format!("{}.{}", file.package(), s.name()))
    })
}

/// What the API listener serves, built before it listens: the routes of
/// every service (Layotto's and Dapr's APIs, health, reflection and the
/// configured API plugins) and the methods the metrics name.
pub struct ApiServices {
    routes: Routes,
    methods: HashSet<String>,
    health_reporter: tonic_health::server::HealthReporter,
}

impl ApiServices {
    /// Builds the services; `plugins` is the validated `plugins` section.
    /// Fails when a plugin cannot be set up (its settings, or a service
    /// name another service has).
    pub fn build(ctx: &Arc<ApiContext>, plugins: &BTreeMap<String, serde_json::Value>) -> Result<Self, PluginError> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let mut methods = served_methods();

        // The services already served, to refuse a plugin that would
        // shadow one (the router cannot hold two services of one name).
        let mut owners: BTreeMap<String, String> = BTreeMap::new();
        for encoded in BUILT_IN_DESCRIPTORS {
            if let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) {
                owners.extend(services_of(&set).map(|s| (s, "the sidecar".to_owned())));
            }
        }
        for reflection in [
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            owners.insert(reflection.to_owned(), "the sidecar".to_owned());
        }
        let mut served = Vec::new();
        for (name, settings) in plugins {
            let plugin = super::plugins::find(name).ok_or_else(|| PluginError::Unknown(name.clone()))?;
            let set = prost_types::FileDescriptorSet::decode(plugin.file_descriptor_set()).map_err(|source| {
                PluginError::Descriptors {
                    plugin: plugin.name(),
                    source,
                }
            })?;
            for service in services_of(&set) {
                if let Some(other) = owners.get(&service) {
                    return Err(PluginError::Clash {
                        plugin: plugin.name(),
                        service,
                        other: other.clone(),
                    });
                }
                owners.insert(service, format!("API plugin '{}'", plugin.name()));
            }
            methods.extend(methods_of(&set));
            served.push((plugin, settings));
        }

        // Both reflection versions: grpcurl and older tools ask v1alpha.
        let reflection = || {
            let sets = BUILT_IN_DESCRIPTORS
                .into_iter()
                .chain(served.iter().map(|(p, _)| p.file_descriptor_set()));
            sets.fold(tonic_reflection::server::Builder::configure(), |b, set| {
                b.register_encoded_file_descriptor_set(set)
            })
        };
        let reflection_off = |e: tonic_reflection::server::Error| {
            tracing::error!(error = %e, "gRPC reflection is off: cannot load descriptors");
        };
        let reflection_v1 = reflection().build_v1().map_err(reflection_off).ok();
        let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_off).ok();

        let runtime = RuntimeServer::new(runtime::RuntimeService::new(ctx.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);

        let dapr_api = DaprServer::new(dapr::DaprService::new(ctx.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);

        let lifecycle = crate::proto::runtime::v1::lifecycle_server::LifecycleServer::new(
            lifecycle::LifecycleService::new(ctx.clone()),
        );
        let mut routes = Routes::new(runtime)
            .add_service(lifecycle)
            .add_service(dapr_api)
            .add_service(health_service);
        if let Some(reflection) = reflection_v1 {
            routes = routes.add_service(reflection);
        }
        if let Some(reflection) = reflection_v1alpha {
            routes = routes.add_service(reflection);
        }
        let mut builder = RoutesBuilder::from(routes);
        for (plugin, settings) in served {
            plugin.add_services(ctx.clone(), settings, &mut builder)?;
            tracing::info!(plugin = plugin.name(), "Serving API plugin");
        }
        Ok(ApiServices {
            routes: builder.routes(),
            methods,
            health_reporter,
        })
    }
}

/// Where the Layotto and Dapr gRPC APIs listen.
pub enum GrpcListener {
    Tcp(TcpListener),
    /// A unix socket (Layotto's `"network": "unix"`): local clients only,
    /// so the connection time limits that guard TCP clients are not
    /// applied.
    Unix(tokio::net::UnixListener),
}

/// Serves until `shutdown` resolves, then stops accepting and lets calls in
/// flight finish (the caller bounds that wait).
pub async fn serve(
    ctx: Arc<ApiContext>,
    listener: GrpcListener,
    limits: &ServerConfig,
    services: ApiServices,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let ApiServices {
        routes,
        methods,
        health_reporter,
    } = services;
    let feeder = tokio::spawn(health::feed(ctx.status.clone(), health_reporter));

    // TCP keep-alive finds a peer that vanished without a FIN; the
    // handshake and idle timeouts close connections that carry nothing;
    // a closed connection lingers so that no reset loses its last answers.
    // (HTTP/2 PING keep-alive is left off: hyper then time-stamps every
    // frame, a cost measured on the actor-hop and state benchmarks.)
    let router = Server::builder()
        .max_concurrent_streams(Some(limits.max_streams_per_connection))
        .layer(
            metrics_layer::GrpcMetricsLayer::new(ctx.metrics.clone(), methods)
                .limit_in_flight(limits.max_calls_in_flight)
                .limit_per_connection(limits.max_calls_per_connection)
                .cut_off_on(ctx.cut_off.clone()),
        )
        .layer(auth::ApiTokenLayer(
            limits.api_token.as_deref().map(crate::api::auth::ApiToken::new),
        ))
        .layer(flow_control::FlowControlLayer::new(
            &limits.flow_control,
            ctx.metrics.clone(),
        ))
        .add_routes(with_proxy(ctx.clone(), routes));
    let served = match listener {
        GrpcListener::Tcp(listener) => {
            // TCP copy samples what this listener receives (off by default).
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            let tcp_copy = super::tcp_copy::TcpCopy::start(&limits.tcp_copy, port, &ctx.metrics);
            let incoming = super::conn::incoming(
                listener,
                super::conn::ConnLimits::of(limits),
                ctx.lingering.clone(),
                tcp_copy,
            );
            router.serve_with_incoming_shutdown(incoming, shutdown).await
        }
        GrpcListener::Unix(listener) => {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            router.serve_with_incoming_shutdown(incoming, shutdown).await
        }
    };
    feeder.abort();
    served
}

/// Routes whose unknown services go to the gRPC proxy.
fn with_proxy(ctx: Arc<ApiContext>, routes: Routes) -> Routes {
    let proxy = tower::service_fn(move |req: axum::extract::Request| {
        let ctx = ctx.clone();
        let answer: futures::future::BoxFuture<'static, Result<_, std::convert::Infallible>> =
            Box::pin(async move { Ok(proxy::proxy(ctx, req).await) });
        answer
    });
    let router = routes.into_axum_router().fallback_service(proxy);
    Routes::from(router)
}

/// Serves the internal listener: other sidecars' invocations (Dapr's
/// `ServiceInvocation`) and proxied gRPC calls for this sidecar's app. No
/// API token is asked here, as in daprd.
pub async fn serve_internal(
    ctx: Arc<ApiContext>,
    listener: TcpListener,
    limits: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let internal = ServiceInvocationServer::new(invoke::InternalService { ctx: ctx.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let conn_limits = super::conn::ConnLimits::of(limits);
    let incoming = super::conn::incoming(listener, conn_limits, ctx.lingering.clone(), None);
    let router = Server::builder()
        .max_concurrent_streams(Some(limits.max_streams_per_connection))
        .layer(
            metrics_layer::GrpcMetricsLayer::new(ctx.metrics.clone(), served_methods())
                .limit_in_flight(limits.max_calls_in_flight)
                .cut_off_on(ctx.cut_off.clone()),
        )
        .add_routes(with_proxy(ctx.clone(), Routes::new(internal)));
    match ctx.mtls.clone() {
        None => router.serve_with_incoming_shutdown(incoming, shutdown).await,
        Some(mtls) => {
            // Handshakes run side by side; one that fails (no certificate,
            // another CA) or stalls past the handshake timeout is dropped
            // without holding up the others.
            let handshakes = incoming
                .map(move |conn| {
                    let acceptor = mtls.acceptor();
                    async move {
                        let conn = conn.ok()?;
                        match tokio::time::timeout(conn_limits.handshake_timeout, acceptor.accept(conn)).await {
                            Ok(Ok(tls)) => Some(Ok::<_, std::io::Error>(super::mtls::TlsConn(tls))),
                            Ok(Err(e)) => {
                                tracing::info!(error = %e, "Refused a connection to the internal listener: TLS handshake failed");
                                None
                            }
                            Err(_) => None,
                        }
                    }
                })
                .buffer_unordered(MAX_CONCURRENT_HANDSHAKES)
                .filter_map(std::future::ready);
            router.serve_with_incoming_shutdown(handshakes, shutdown).await
        }
    }
}

/// TLS handshakes the internal listener runs at once.
const MAX_CONCURRENT_HANDSHAKES: usize = 256;
