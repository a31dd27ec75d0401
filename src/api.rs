//! Where the application meets the sidecar: the gRPC APIs (Layotto's and
//! Dapr's), Dapr's HTTP API, the actuator, and the other direction,
//! delivering events to the app's callback server.
//!
//! A request walks front end -> block service -> actor message ->
//! component. The [`blocks`] hold each building block's rules once, over
//! plain Rust types: they validate, scope keys, find the component through
//! the [`Router`] and send it a message, failing with one
//! [`BlockError`](blocks::BlockError). The front ends ([`grpc`]) only decode
//! their wire format, call a block, and encode the answer (or map the
//! error). [`plugins`] are front ends too: gRPC services compiled in and
//! served when configured, calling the same blocks. Nothing here talks to
//! a backend.

pub mod actuator;
pub mod auth;
pub mod blocks;
pub mod callback;
pub mod cloudevents;
pub mod conn;
pub mod dapr_http;
pub mod delivery;
pub mod grpc;
pub mod input;
pub mod linger;
pub mod mtls;
pub mod plugins;
pub mod tcp_copy;
pub mod wasm;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::actors::Router;
use crate::config::AppConfig;
use crate::metrics::Metrics;
use crate::supervisor::{StatusRegistry, SupervisorProbe};

/// What a call cut off by shutdown is told, whatever its protocol.
pub const STOPPING: &str = "the sidecar is stopping; retry on another instance";

/// Resolves when the cut-off switch ([`ApiContext::cut_off`]) turns;
/// never, if its sender is gone without turning it.
pub async fn cut(cut_off: &mut watch::Receiver<bool>) {
    if cut_off.wait_for(|cut| *cut).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What every handler may use.
pub struct ApiContext {
    pub router: Router,
    pub app: AppConfig,
    pub status: Arc<StatusRegistry>,
    pub metrics: Arc<Metrics>,
    pub supervisor: SupervisorProbe,
    /// `"<pubsub>/<topic>"` of each open SubscribeTopicEvents stream.
    pub topic_streams: Mutex<HashSet<String>>,
    /// Turns true when the sidecar shuts down: streams end then, so that
    /// draining does not wait on subscriptions that never finish.
    pub stopping: watch::Receiver<bool>,
    /// Turns true when the shutdown's grace period is over: calls still
    /// running are answered "the sidecar is stopping" (gRPC UNAVAILABLE,
    /// HTTP 503) before any component stops.
    pub cut_off: watch::Receiver<bool>,
    /// Connections closing after their last answer (see [`linger`]);
    /// shutdown waits for them.
    pub lingering: tokio_util::task::TaskTracker,
    /// Configuration subscriptions opened by id (Dapr's API).
    pub config_subscriptions: blocks::configuration::SubscriptionIds,
    /// Attributes set with Dapr's SetMetadata, shown by GetMetadata.
    pub extended_metadata: Mutex<std::collections::BTreeMap<String, String>>,
    /// Notified when a client asks the sidecar to shut down (Dapr's
    /// Shutdown): the runtime then stops as on SIGTERM.
    pub shutdown_requested: Arc<tokio::sync::Notify>,
    /// The API token every call must carry, when one is configured.
    pub api_token: Option<auth::ApiToken>,
    /// The app's health as its health checks last found it; `None` when
    /// it is not checked (then it counts as healthy).
    pub app_health: watch::Sender<Option<bool>>,
    /// Service invocation's caller side: resolution cache, balancing,
    /// clients of other sidecars.
    pub invoker: blocks::invoke::Invoker,
    /// Sidecar-to-sidecar mutual TLS, when configured: the internal
    /// listener's handshakes (the invoker's clients hold it too).
    pub mtls: Option<Arc<mtls::Mtls>>,
    /// The app's callback server, when it runs one.
    pub app_channel: Option<callback::AppCallback>,
    /// Declarative subscriptions, from config or resource files.
    pub declared_subscriptions: Vec<crate::config::SubscriptionConfig>,
    /// The subscriptions delivered to the app now (metadata API).
    pub active_subscriptions: Mutex<Vec<callback::AppSubscription>>,
    /// The WASM functions, configured and installed.
    pub functions: blocks::wasm::FunctionTable,
    /// Where Lifecycle's ApplyConfiguration sends its changes: the
    /// reloader, once it runs.
    pub lifecycle: std::sync::OnceLock<blocks::lifecycle::ApplySender>,
    /// This context, for what must outlive a borrowed call (a guest's
    /// host calls). Set by `Arc::new_cyclic`.
    pub this: std::sync::Weak<ApiContext>,
}
