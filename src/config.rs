//! The sidecar's configuration: parse (TOML, YAML, JSON or Layotto's MOSN
//! `config.json`), overlay `LAYOTTO__...` environment variables, then
//! validate.
//!
//! Validation is pure (no I/O) and reports every problem at once, each with
//! its field path, so a broken file is fixed in one pass. Its output is the
//! typed [`Config`] the runtime starts from.

pub mod dapr_resources;
pub mod layotto_json;
mod subscriptions;
mod walk;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::components::secrets::refs::SecretRef;
use crate::components::sequencer::BIGGER_THAN;
use crate::components::{ComponentSpec, Kind};
pub use subscriptions::compile_rule;
pub(crate) use walk::kind_of;
use walk::{Problems, Section};

/// The configuration compiled into the binary: `config/default.toml`. It
/// needs no external service.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/default.toml");

/// The path `layotto start` reads when none is given.
pub const DEFAULT_PATH: &str = "config/default.toml";

/// Prefix of environment overrides: `LAYOTTO__SERVER__GRPC=0.0.0.0:34904`.
pub const ENV_PREFIX: &str = "LAYOTTO";

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub app: AppConfig,
    pub supervisor: SupervisorConfig,
    pub log: LogConfig,
    /// Configured component instances per building block, in name order.
    pub components: BTreeMap<Kind, Vec<ComponentSpec>>,
    /// Declarative subscriptions (`[subscriptions.<name>]`, or Dapr
    /// `Subscription` resources), delivered to the app beside those it
    /// asks for itself.
    pub subscriptions: Vec<SubscriptionConfig>,
    /// `[plugins.<name>]`: the API plugins to serve on the gRPC API
    /// listener (`api::plugins`), each with its settings table as written
    /// (checked by the plugin). Layotto's `config.json` gives them as
    /// `grpc_config.extends.<name>`. A registered plugin not listed here
    /// is not served. Default none.
    pub plugins: BTreeMap<String, Value>,
}

/// `[server]`: where the sidecar listens.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// The Layotto gRPC API (`spec.proto.runtime.v1.Runtime`), plus gRPC
    /// health and reflection. Default `127.0.0.1:34904`.
    pub grpc: SocketAddr,
    /// A unix socket the gRPC API listens on instead of `grpc`'s TCP
    /// address (Layotto's listener with `"network": "unix"`); a stale
    /// socket file left by an earlier run is replaced. Default none.
    pub grpc_socket: Option<std::path::PathBuf>,
    /// The actuator: health, info and Prometheus `/metrics`. Default
    /// `127.0.0.1:34999`.
    pub actuator: SocketAddr,
    /// Dapr's HTTP endpoints (`/v1.0/healthz`, ...) that Dapr SDKs wait on;
    /// `"disabled"` turns it off. Default `127.0.0.1:3500`.
    pub dapr_http: Option<SocketAddr>,
    /// How long in-flight requests may take to finish after SIGTERM; those
    /// still running then are answered UNAVAILABLE (HTTP 503) "the sidecar
    /// is stopping". Default `10s`.
    pub shutdown_grace_period: Duration,
    /// gRPC calls (streams included) the sidecar serves at once; more are
    /// answered RESOURCE_EXHAUSTED at once. Default 4096.
    pub max_calls_in_flight: usize,
    /// HTTP/2 streams one client connection may open at once (the
    /// connection's share of the above; its client queues the rest). Every
    /// stream a connection has held at once keeps its place in the
    /// connection's tables until the connection closes, and every stream
    /// accepted costs memory before admission can refuse it: 40 connections
    /// of 1,024 streams took the release build to 73 MiB, of 200 to 58 MiB.
    /// Default 200 (hyper's; Go's HTTP/2 server allows 250).
    pub max_streams_per_connection: u32,
    /// gRPC calls one connection may have in flight before more are
    /// answered RESOURCE_EXHAUSTED, so that one client cannot take every
    /// place `max_calls_in_flight` gives. Unset (the default), a
    /// connection's calls are bounded by `max_streams_per_connection` only,
    /// and its client queues beyond it instead of being refused.
    pub max_calls_per_connection: Option<usize>,
    /// A client connection that sends nothing (no HTTP/2 preface, no
    /// request line) this long after connecting is closed, on every
    /// listener. Default `10s`.
    pub handshake_timeout: Duration,
    /// A client connection with no request open and no byte sent either
    /// way for this long is closed, on every listener; clients reconnect
    /// when they next call. Default `5m`.
    pub idle_timeout: Duration,
    /// When set, every call on every API (Layotto gRPC, Dapr gRPC and
    /// HTTP) must carry it in `dapr-api-token`, except health endpoints.
    /// `DAPR_API_TOKEN` sets it too. Default: none.
    pub api_token: Option<String>,
    /// A listener of its own serving the Prometheus metrics (at any path,
    /// as daprd's `--metrics-port`); they are also on the actuator's
    /// `/metrics`. Default none.
    pub metrics: Option<SocketAddr>,
    /// The largest request body Dapr's HTTP API reads, in bytes; a number,
    /// or a quantity as daprd's `--max-body-size` takes it (`4Mi`,
    /// `512Ki`, `10M`). Default `4Mi`.
    pub max_body_size: usize,
    /// The internal listener: other sidecars' service invocations (Dapr's
    /// `dapr.proto.internals.v1.ServiceInvocation`) and proxied gRPC calls
    /// arrive here; daprd's `--dapr-internal-grpc-port`. No API token is
    /// asked on it. Off unless set, or unless a `name_resolution`
    /// component is configured, which turns it on at `127.0.0.1:50002`
    /// (daprd's port; loopback, since the traffic is plaintext).
    pub internal: Option<SocketAddr>,
    /// The WASM functions' HTTP ingress (Layotto's `wasm` listener, port
    /// 2045 in its demo): the `id` header picks the function. Off unless
    /// set (`"disabled"` also turns it off).
    pub wasm: Option<SocketAddr>,
    /// The WASM admin API (Layotto's `wasm_filter` listener, port 34998 in
    /// its demo): `/wasm/install`, `/wasm/uninstall`, `/wasm/update`. Off
    /// unless set; it changes what runs, so keep it on loopback.
    pub wasm_admin: Option<SocketAddr>,
    /// The host other sidecars reach the internal listener at, which name
    /// resolution registers: `DAPR_HOST_IP` when set, else this, else the
    /// internal listener's own address (`127.0.0.1` when it listens on
    /// every interface).
    pub advertise_host: Option<String>,
    /// Mutual TLS on the internal listener and on this sidecar's calls to
    /// other sidecars (`[server.mtls]`). Default none: plaintext, which
    /// is why the internal listener's default address is loopback.
    pub mtls: Option<MtlsConfig>,
    /// `[server.flow_control]`: rate limits per gRPC method on the API
    /// listener (Layotto's `flowControlFilter`). Default: none.
    pub flow_control: FlowControlConfig,
    /// `[server.tcp_copy]`: samples of the raw bytes the gRPC API listener
    /// receives, written to a dump file (Layotto's `tcpcopy` filter); see
    /// `docs/tcp-copy.md`. Default: off.
    pub tcp_copy: TcpCopyConfig,
}

/// TCP copy (Layotto's `tcpcopy` strategy): during the first `duration`
/// of every `interval`, while the host's CPU and memory use are under
/// their ceilings, the bytes received on the gRPC API listener are copied
/// to `<dir>/dump_tcp_copy.log`. Traffic is never altered or slowed: when
/// the writer falls behind, samples are dropped and counted.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpCopyConfig {
    /// `switch`: `"ON"` samples, `"OFF"` (the default) does not.
    pub enabled: bool,
    /// Seconds between the starts of two sampling windows, the first at
    /// start-up; 30 to 3600. Default 30.
    pub interval: u64,
    /// Seconds each window lasts; above 0 and below `interval`. Default 1.
    pub duration: u64,
    /// No sample is taken while the host's CPU use (percent, all cores,
    /// over the last second) is at or above this; above 0 and below 100.
    /// Default 80.
    pub cpu_max_rate: f64,
    /// No sample is taken while the host's memory use (percent of
    /// `MemTotal` not `MemAvailable`) is at or above this; above 0 and
    /// below 100. Default 70.
    pub mem_max_rate: f64,
    /// The directory of the dump file `dump_tcp_copy.log`, made when
    /// missing. Default `$HOME/logs/mosn/dump` (Layotto's).
    pub dir: Option<PathBuf>,
    /// Samples held for the writer; when it falls behind (a slow or full
    /// disk) further samples are dropped. At least 1. Default 1024.
    pub queue: usize,
}

impl Default for TcpCopyConfig {
    fn default() -> TcpCopyConfig {
        TcpCopyConfig {
            enabled: false,
            interval: 30,
            duration: 1,
            cpu_max_rate: 80.0,
            mem_max_rate: 70.0,
            dir: None,
            queue: 1024,
        }
    }
}

impl TcpCopyConfig {
    /// The dump file's name in [`dump_dir`](Self::dump_dir).
    pub const FILE_NAME: &str = "dump_tcp_copy.log";

    /// `dir`, or Layotto's `$HOME/logs/mosn/dump` (`./logs/mosn/dump`
    /// without a home).
    pub fn dump_dir(&self) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join("logs/mosn/dump"),
        }
    }

    /// The dump file.
    pub fn dump_file(&self) -> PathBuf {
        self.dump_dir().join(Self::FILE_NAME)
    }
}

/// Flow control rules of the gRPC API listener.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowControlConfig {
    /// Whether the rules apply (Layotto's `global_switch`). Default true.
    pub enabled: bool,
    /// The message of a refused call's RESOURCE_EXHAUSTED (Layotto's
    /// `action.body`). Default `current request is limited`.
    pub message: String,
    /// `[[server.flow_control.rules]]`, one per method.
    pub rules: Vec<FlowRule>,
}

impl Default for FlowControlConfig {
    fn default() -> FlowControlConfig {
        FlowControlConfig {
            enabled: true,
            message: DEFAULT_FLOW_CONTROL_MESSAGE.to_owned(),
            rules: Vec::new(),
        }
    }
}

/// Layotto's default answer to a limited call.
pub const DEFAULT_FLOW_CONTROL_MESSAGE: &str = "current request is limited";

/// One flow rule (Sentinel's `flow.Rule`).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRule {
    /// The gRPC method path, `/spec.proto.runtime.v1.Runtime/SayHello`.
    /// Required.
    pub resource: String,
    /// Calls per `stat_interval`; at least 1. Required.
    pub threshold: u32,
    /// The window of `threshold`. Default `1s`.
    pub stat_interval: Duration,
    /// `reject` (the default) or `throttle` (queue, evenly spaced).
    pub behavior: ControlBehavior,
    /// How long a throttled call may wait for its turn. Default `500ms`.
    pub max_queueing_time: Duration,
    /// `direct` (the default) or `warm_up`.
    pub strategy: TokenStrategy,
    /// How long warm-up takes to reach `threshold`. Default `10s`.
    pub warm_up_period: Duration,
    /// Warm-up starts at `threshold / warm_up_cold_factor`. Default 3.
    pub warm_up_cold_factor: u32,
}

/// What a flow rule does with a call over its rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlBehavior {
    Reject,
    Throttle,
}

/// How a flow rule's rate is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStrategy {
    Direct,
    WarmUp,
}

/// The certificate authority, certificate and key of sidecar-to-sidecar
/// mutual TLS. Both ends present a certificate; one not issued by `ca` is
/// refused in the handshake. The files are checked every
/// `reload_interval` and re-read when they change (a renewed
/// certificate, a Kubernetes secret update); connections made after that
/// use them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtlsConfig {
    /// PEM file of the certificate authority (one or more certificates)
    /// whose certificates peers must present. Required.
    pub ca: PathBuf,
    /// PEM file of this sidecar's certificate chain, leaf first, issued by
    /// a certificate in `ca`. Required.
    pub cert: PathBuf,
    /// PEM file of the certificate's private key (PKCS#8, PKCS#1 or
    /// SEC1). Required.
    pub key: PathBuf,
    /// How often the three files are checked for changes. Default `1s`.
    pub reload_interval: Duration,
}

/// [`MtlsConfig::reload_interval`]'s default.
pub const DEFAULT_MTLS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// daprd's internal gRPC port, the internal listener's default.
pub const DEFAULT_INTERNAL_PORT: u16 = 50002;

/// daprd's default `--max-body-size`: 4 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 4 * 1024 * 1024;

/// A size as Kubernetes writes quantities: `4Mi`, `512Ki`, `1Gi`, `10M`,
/// `1000`.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let multiplier: u64 = match unit {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => {
            return Err(format!(
                "'{other}' is not a size unit; write e.g. 4Mi, 512Ki or a number of bytes"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{text}' is not a size above zero; write e.g. 4Mi, 512Ki or a number of bytes"))
}

/// `[app]`: the application this sidecar serves.
#[derive(Clone, Debug, PartialEq)]
pub struct AppConfig {
    /// The application's id; scopes keys (`keyPrefix = appid`) and names
    /// the event source. Default empty.
    pub app_id: String,
    /// Host of the application's callback server. Default `127.0.0.1`.
    pub grpc_callback_host: String,
    /// Port of the application's callback server; 0 means the application
    /// runs none. Default 0.
    pub grpc_callback_port: u16,
    /// Which callback protocol the application serves: `layotto`
    /// (Layotto's AppCallback), `dapr` (Dapr's AppCallback over gRPC) or
    /// `http` (Dapr's HTTP app channel). `app.protocol` is Dapr's
    /// spelling: `grpc` means `dapr`, `http` means `http`. Default
    /// `layotto`.
    pub callback_protocol: CallbackProtocol,
    /// `[app.health_check]`: probe the app and pause deliveries while it
    /// is unhealthy. Unset: the app counts as healthy.
    pub health_check: Option<AppHealthCheck>,
    /// Sent to the app as `dapr-api-token` on every callback (`api_token`,
    /// or the `APP_API_TOKEN` environment variable). Default none.
    pub api_token: Option<String>,
    /// Feature names reported as enabled in the metadata API (from a Dapr
    /// `Configuration`'s `features`). Default none.
    pub features: Vec<String>,
    /// Calls to the app at once, deliveries and configuration updates
    /// together (daprd's `--app-max-concurrency`); more wait. Default no
    /// limit.
    pub max_concurrency: Option<usize>,
}

/// `[app.health_check]`: Dapr's app health checks.
#[derive(Clone, Debug, PartialEq)]
pub struct AppHealthCheck {
    /// The HTTP path probed with GET (HTTP apps); gRPC apps are asked
    /// through `AppCallbackHealthCheck`. Default `/healthz`.
    pub path: String,
    /// Between probes. Default `5s`.
    pub interval: Duration,
    /// How long one probe may take. Default `500ms`.
    pub timeout: Duration,
    /// Consecutive failed probes that make the app unhealthy. Default 3.
    pub threshold: u32,
}

impl Default for AppHealthCheck {
    fn default() -> Self {
        AppHealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_millis(500),
            threshold: 3,
        }
    }
}

/// A declarative subscription: `[subscriptions.<name>]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionConfig {
    /// The subscription's name (the table key, or the resource's
    /// `metadata.name`).
    pub name: String,
    /// The pub/sub component. Required.
    pub pubsub_name: String,
    /// The topic. Required.
    pub topic: String,
    /// Where events go: `route` (one path) or `routes = { rules = [{
    /// match = "<CEL>", path }], default }`. At least one path is
    /// required.
    pub routes: Routes,
    /// Events dropped by the app, or that match no route, are published
    /// to this topic on the same pub/sub. Default none.
    pub dead_letter_topic: Option<String>,
    /// Passed to the broker's subscribe (`rawPayload`, `consumerID`...).
    pub metadata: BTreeMap<String, String>,
}

/// Dapr's subscription routes: the first rule whose CEL `match` is true
/// over the CloudEvent (`event`) picks the path; else `default`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Routes {
    /// `(match, path)` in order.
    pub rules: Vec<(String, String)>,
    /// The path when no rule matches; empty: such events are dropped.
    pub default: String,
}

impl Routes {
    /// One path for every event.
    pub fn single(path: impl Into<String>) -> Routes {
        Routes {
            rules: Vec::new(),
            default: path.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.default.is_empty()
    }
}

/// The AppCallback flavour the application serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallbackProtocol {
    /// `spec.proto.runtime.v1.AppCallback`.
    Layotto,
    /// `dapr.proto.runtime.v1.AppCallback`.
    Dapr,
    /// Dapr's HTTP app channel: `GET /dapr/subscribe`, events POSTed to
    /// their route.
    Http,
}

/// `[supervisor]`: how components are restarted and watched.
#[derive(Clone, Debug, PartialEq)]
pub struct SupervisorConfig {
    /// First restart delay; it doubles with each restart inside the
    /// restart window. Default `200ms`.
    pub backoff_min: Duration,
    /// Longest restart delay. Default `30s`.
    pub backoff_max: Duration,
    /// Restarts allowed inside `restart_window` before the supervisor
    /// escalates (waits `backoff_max` between attempts, or exits the process
    /// under `fail_fast`). Default 10.
    pub max_restarts: u32,
    /// The window that `max_restarts` counts over. Default `60s`.
    pub restart_window: Duration,
    /// While a component cannot be built (its backend is down), it is
    /// tried again at most this far apart, however long the outage lasted,
    /// so it is UP soon after its backend returns. A component that fails
    /// because its backend is unreachable (a failed health check, a broken
    /// connection) is probed the same way; one that misbehaves by itself (a
    /// panic, an ended background task: a crash loop) still backs off up to
    /// `backoff_max`. Default `1s`.
    pub probe_interval: Duration,
    /// Time between health checks of each component: how soon a dead
    /// backend is noticed when no call hits it. A call that has waited on
    /// its backend for 50 ms has the backend checked at once (at most one
    /// such check per 200 ms), so one that died under waiting calls is
    /// noticed sooner. Default `1s`.
    pub health_interval: Duration,
    /// A health check that takes longer has failed. With `health_interval`
    /// it bounds how long a hung backend (one that stops answering without
    /// closing its connections) goes unnoticed: `1s` + `1s`. Default `1s`.
    pub health_timeout: Duration,
    /// Consecutive failed health checks that restart a component. Default 1.
    pub health_failure_threshold: u32,
    /// How long start-up waits for every component's first build before it
    /// serves anyway (components still starting show as INIT). Default `5s`.
    pub init_timeout: Duration,
    /// Requests one component may hold at once (queued plus running); more
    /// are refused with RESOURCE_EXHAUSTED. Default 1024.
    pub queue_capacity: usize,
    /// Exit at start-up if any component fails to start, and whenever a
    /// component exceeds its restart intensity (Layotto's behaviour).
    /// Default false: the sidecar comes up and keeps retrying.
    pub fail_fast: bool,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// A tracing filter (`info`, `layotto=debug,warn`, ...); `RUST_LOG`
    /// wins when set. Default `info`.
    pub level: String,
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig {
                grpc: SocketAddr::from(([127, 0, 0, 1], 34904)),
                grpc_socket: None,
                actuator: SocketAddr::from(([127, 0, 0, 1], 34999)),
                dapr_http: Some(SocketAddr::from(([127, 0, 0, 1], 3500))),
                shutdown_grace_period: Duration::from_secs(10),
                max_calls_in_flight: 4096,
                max_streams_per_connection: 200,
                max_calls_per_connection: None,
                handshake_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(300),
                api_token: None,
                metrics: None,
                max_body_size: DEFAULT_MAX_BODY_SIZE,
                internal: None,
                wasm: None,
                wasm_admin: None,
                advertise_host: None,
                mtls: None,
                flow_control: FlowControlConfig::default(),
                tcp_copy: TcpCopyConfig::default(),
            },
            app: AppConfig {
                app_id: String::new(),
                grpc_callback_host: "127.0.0.1".into(),
                grpc_callback_port: 0,
                callback_protocol: CallbackProtocol::Layotto,
                health_check: None,
                api_token: None,
                features: Vec::new(),
                max_concurrency: None,
            },
            supervisor: SupervisorConfig {
                backoff_min: Duration::from_millis(200),
                backoff_max: Duration::from_secs(30),
                max_restarts: 10,
                restart_window: Duration::from_secs(60),
                health_interval: Duration::from_secs(1),
                probe_interval: Duration::from_secs(1),
                health_timeout: Duration::from_secs(1),
                health_failure_threshold: 1,
                init_timeout: Duration::from_secs(5),
                queue_capacity: 1024,
                fail_fast: false,
            },
            log: LogConfig {
                level: "info".into(),
                format: LogFormat::Text,
            },
            components: BTreeMap::new(),
            subscriptions: Vec::new(),
            plugins: BTreeMap::new(),
        }
    }
}

impl Config {
    /// The configured instances of one building block.
    pub fn components_of(&self, kind: Kind) -> &[ComponentSpec] {
        self.components.get(&kind).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// One thing wrong with a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field, e.g. `state.orders.metadata.redisHost`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A config that cannot be used, with every problem found.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub struct ConfigError {
    /// The file read, or `<embedded default>`.
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid config {}: {n} problem{}",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// The file formats a config may be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
    /// Native JSON, or Layotto's MOSN `config.json` (told apart by its
    /// top-level `servers`).
    Json,
}

impl Format {
    fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Reads, overlays the process environment on, and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_launch(&Launch {
        config: Some(path.to_owned()),
        ..Launch::default()
    })
    .map(|loaded| loaded.config)
}

/// The flag path that sets `app.protocol` only when the config file sets
/// neither it nor `app.callback_protocol` (`--app-port` without
/// `--app-protocol`).
pub const DEFAULT_APP_PROTOCOL: &str = "app.protocol?";

/// How the sidecar was launched: a config file, Dapr resource folders and
/// settings given as daprd-style flags.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// The config file; `None` with no resources means the embedded
    /// default, `None` with resources means only those resources.
    pub config: Option<PathBuf>,
    /// Folders of Dapr `Component` and `Subscription` YAML.
    pub resources: Vec<PathBuf>,
    /// Dotted config paths set by flags (`app.app_id`, `server.grpc`...):
    /// over the file, under the `LAYOTTO__` environment overrides.
    pub flags: Vec<(String, Value)>,
}

/// A loaded launch.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// What was read, for the start-up log.
    pub source: String,
    /// What was read and not used (a Dapr Configuration's other fields,
    /// other kinds of resource), one line each, logged at start-up.
    pub ignored: Vec<String>,
}

fn read_config_file(path: &Path) -> Result<(String, Format), String> {
    let format =
        Format::from_path(path).ok_or_else(|| "unknown file type: use .toml, .yaml, .yml or .json".to_owned())?;
    let size = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?.len();
    if size > MAX_CONFIG_BYTES as u64 {
        return Err(format!(
            "the file has {size} bytes; a config file may have at most {MAX_CONFIG_BYTES}"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    Ok((text, format))
}

/// Loads a launch: the file (or the embedded default), the resources, the
/// flags, then the environment overrides, and validates the result.
pub fn load_launch(launch: &Launch) -> Result<Loaded, ConfigError> {
    let mut source = match &launch.config {
        Some(path) => path.display().to_string(),
        None if launch.resources.is_empty() => "<embedded default>".to_owned(),
        None => String::new(),
    };
    let one = |source: &str, message: String| ConfigError {
        source_name: source.to_owned(),
        problems: vec![Problem {
            path: String::new(),
            message,
        }],
    };
    let mut ignored = Vec::new();
    let mut from_layotto = false;
    let mut tree = match &launch.config {
        Some(path) => {
            let (text, format) = read_config_file(path).map_err(|m| one(&source, m))?;
            let mut tree = parse(&text, format).map_err(|m| one(&source, m))?;
            if format == Format::Json && tree.get("servers").is_some() {
                let translated = layotto_json::translate(&tree).map_err(|problems| ConfigError {
                    source_name: source.clone(),
                    problems,
                })?;
                ignored.extend(
                    translated
                        .ignored
                        .into_iter()
                        .map(|p| format!("{source}: {p} is ignored")),
                );
                tree = translated.tree;
                from_layotto = true;
            } else if format == Format::Yaml && dapr_resources::is_dapr_configuration(&tree) {
                let (native, unused) = dapr_resources::configuration(&tree);
                ignored.extend(
                    unused
                        .into_iter()
                        .map(|p| format!("{source}: {p} is not used by this sidecar")),
                );
                tree = native;
            }
            tree
        }
        None if launch.resources.is_empty() => parse(EMBEDDED_DEFAULT, Format::Toml).map_err(|m| one(&source, m))?,
        None => Map::new(),
    };
    apply_flags(&mut tree, &launch.flags);
    if !launch.resources.is_empty() {
        let dirs: Vec<String> = launch.resources.iter().map(|d| d.display().to_string()).collect();
        source = if source.is_empty() {
            format!("resources {}", dirs.join(", "))
        } else {
            format!("{source} + resources {}", dirs.join(", "))
        };
        let app_id = tree
            .get("app")
            .and_then(|a| a.get("app_id"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let resources = dapr_resources::load(&launch.resources, &app_id).map_err(|problems| ConfigError {
            source_name: source.clone(),
            problems,
        })?;
        ignored.extend(resources.ignored);
        let mut clashes = Vec::new();
        for (section, instances) in resources.tree {
            let Value::Object(instances) = instances else { continue };
            let target = tree.entry(section.clone()).or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(target) = target else {
                clashes.push(Problem {
                    path: section,
                    message: "the config file's section is not a table".into(),
                });
                continue;
            };
            for (name, entry) in instances {
                if target.contains_key(&name) {
                    clashes.push(Problem {
                        path: format!("{section}.{name}"),
                        message: "declared both in the config file and in a resource file".into(),
                    });
                } else {
                    target.insert(name, entry);
                }
            }
        }
        if !clashes.is_empty() {
            return Err(ConfigError {
                source_name: source,
                problems: clashes,
            });
        }
    }
    overlay_env(&mut tree, None).map_err(|m| one(&source, m))?;
    // Flags win over the environment, as a command line does (they were
    // set before the resources too, for the app id their scopes need).
    apply_flags(&mut tree, &launch.flags);
    let config = validate(tree).map_err(|problems| ConfigError {
        source_name: source.clone(),
        problems: if from_layotto {
            layotto_json::plugin_paths(problems)
        } else {
            problems
        },
    })?;
    Ok(Loaded {
        config,
        source,
        ignored,
    })
}

/// The embedded default config, with the process environment overlaid.
pub fn load_embedded_default() -> Result<Config, ConfigError> {
    load_str(EMBEDDED_DEFAULT, Format::Toml, "<embedded default>", None)
}

/// Parses and validates config text. `env` replaces the process environment
/// for overrides (tests); `None` reads the real one.
pub fn load_str(
    text: &str,
    format: Format,
    source_name: &str,
    env: Option<BTreeMap<String, String>>,
) -> Result<Config, ConfigError> {
    let error = |problems| ConfigError {
        source_name: source_name.to_owned(),
        problems,
    };
    let mut tree = parse(text, format).map_err(|message| {
        error(vec![Problem {
            path: String::new(),
            message,
        }])
    })?;
    let from_layotto = format == Format::Json && tree.get("servers").is_some();
    if from_layotto {
        tree = layotto_json::translate(&tree).map_err(error)?.tree;
    }
    overlay_env(&mut tree, env).map_err(|message| {
        error(vec![Problem {
            path: String::new(),
            message,
        }])
    })?;
    validate(tree).map_err(|problems| {
        error(if from_layotto {
            layotto_json::plugin_paths(problems)
        } else {
            problems
        })
    })
}

/// The longest log filter accepted.
const MAX_LOG_FILTER_BYTES: usize = 1024;

/// A tracing filter (`info`, `layotto=debug,warn`, ...) from config or
/// `RUST_LOG`. Found by the fuzz targets: tracing-subscriber's parser
/// slices the untrimmed text at offsets into the trimmed one, and panicked
/// on `" ज[..."` (so what is not ASCII is refused first); and it compiles
/// span field values (`[span{field=value}]`) as regular expressions, where
/// one 300-byte value took 4 minutes and 2 GB (so they match literally).
pub fn log_filter(text: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    if !text.is_ascii() {
        return Err("a log filter is ASCII (targets, levels, span and field names)".into());
    }
    if text.len() > MAX_LOG_FILTER_BYTES {
        return Err(format!(
            "a log filter has at most {MAX_LOG_FILTER_BYTES} bytes, this one {}",
            text.len()
        ));
    }
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(text.trim())
        .map_err(|e| e.to_string())
}

/// The largest config file read: far above any real one, far below what
/// would strain the parser.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// Refuses YAML aliases (`*name`) before the tree is built: the parser
/// copies the anchored node for each alias, so a few hundred bytes of
/// nested aliases ("billion laughs") expand to gigabytes. Read event by
/// event, in memory linear in the text.
fn refuse_yaml_aliases(text: &str) -> Result<(), String> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => return Ok(()),
            Ok((Event::Alias(_), mark)) => {
                return Err(format!(
                    "YAML aliases (*name) are not supported in config files (line {}); write the value out",
                    mark.line()
                ));
            }
            Ok(_) => {}
            // The full parse below reports syntax errors with its own words.
            Err(_) => return Ok(()),
        }
    }
}

fn parse(text: &str, format: Format) -> Result<Map<String, Value>, String> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "the file has {} bytes; a config file may have at most {MAX_CONFIG_BYTES}",
            text.len()
        ));
    }
    if format == Format::Yaml {
        refuse_yaml_aliases(text)?;
    }
    let file_format = match format {
        Format::Toml => config::FileFormat::Toml,
        Format::Yaml => config::FileFormat::Yaml,
        Format::Json => config::FileFormat::Json,
    };
    // The source's own table, not `Config::builder().build()`: the builder
    // reads every top-level key as a path, so a key such as
    // `'a[33333333392845]'` made it allocate an array of that length and
    // abort the process (found by the `config_toml` fuzz target).
    use config::Source;
    let table = config::File::from_str(text, file_format)
        .collect()
        .map_err(|e| format!("cannot parse: {e}"))?;
    let value: Value = config::Value::new(None, config::ValueKind::Table(table))
        .try_deserialize()
        .map_err(|e| format!("cannot parse: {e}"))?;
    match value {
        Value::Object(map) => Ok(map),
        // An empty file parses as nothing at all: every default applies.
        Value::Null => Ok(Map::new()),
        other => Err(format!(
            "expected a table at the top level, found {}",
            walk::kind_of(&other)
        )),
    }
}

/// Merges `LAYOTTO__A__B=value` into the tree. Environment keys arrive
/// lower-cased, so each segment reuses the spelling of an existing key that
/// matches it case-insensitively (`...__METADATA__REDISHOST` overrides
/// `redisHost`).
fn overlay_env(tree: &mut Map<String, Value>, env: Option<BTreeMap<String, String>>) -> Result<(), String> {
    use config::Source;
    let source = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .source(env.map(|vars| vars.into_iter().collect()));
    let vars = source
        .collect()
        .map_err(|e| format!("cannot read environment overrides: {e}"))?;
    for (key, value) in vars {
        let text = value
            .into_string()
            .map_err(|e| format!("environment override {key}: {e}"))?;
        let segments: Vec<&str> = key.split('.').collect();
        set_path(tree, &segments, Value::String(text));
    }
    Ok(())
}

fn set_path(tree: &mut Map<String, Value>, segments: &[&str], value: Value) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    let key = tree
        .keys()
        .find(|k| k.eq_ignore_ascii_case(first))
        .cloned()
        .unwrap_or_else(|| (*first).to_owned());
    if rest.is_empty() {
        tree.insert(key, value);
        return;
    }
    let child = tree.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    if let Value::Object(map) = child {
        set_path(map, rest, value);
    }
}

/// Sets each flag's config path in the tree.
fn apply_flags(tree: &mut Map<String, Value>, flags: &[(String, Value)]) {
    for (path, value) in flags {
        if path == DEFAULT_APP_PROTOCOL {
            let app = tree.get("app").and_then(Value::as_object);
            if app.is_some_and(|a| a.contains_key("protocol") || a.contains_key("callback_protocol")) {
                continue;
            }
        }
        let path = path.trim_end_matches('?');
        let segments: Vec<&str> = path.split('.').collect();
        set_path(tree, &segments, value.clone());
    }
}

/// Turns a parsed tree into a [`Config`], or lists everything wrong with it.
pub fn validate(tree: Map<String, Value>) -> Result<Config, Vec<Problem>> {
    let defaults = Config::default();
    let mut problems = Problems::default();
    let mut root = Section::new(String::new(), tree);

    let internal_given;
    let mut server = {
        let d = &defaults.server;
        let mut s = root.section("server", &mut problems);
        internal_given = s.optional_addr("internal", &mut problems);
        let server = ServerConfig {
            grpc: s.addr("grpc", &mut problems).unwrap_or(d.grpc),
            grpc_socket: s
                .string("grpc_socket", &mut problems)
                .filter(|p| !p.is_empty())
                .map(std::path::PathBuf::from),
            actuator: s.addr("actuator", &mut problems).unwrap_or(d.actuator),
            dapr_http: s.optional_addr("dapr_http", &mut problems).unwrap_or(d.dapr_http),
            shutdown_grace_period: s
                .duration("shutdown_grace_period", &mut problems)
                .unwrap_or(d.shutdown_grace_period),
            max_calls_in_flight: s
                .integer("max_calls_in_flight", &mut problems)
                .unwrap_or(d.max_calls_in_flight),
            max_streams_per_connection: s
                .integer("max_streams_per_connection", &mut problems)
                .unwrap_or(d.max_streams_per_connection),
            max_calls_per_connection: s
                .integer("max_calls_per_connection", &mut problems)
                .or(d.max_calls_per_connection),
            handshake_timeout: s
                .duration("handshake_timeout", &mut problems)
                .unwrap_or(d.handshake_timeout),
            idle_timeout: s.duration("idle_timeout", &mut problems).unwrap_or(d.idle_timeout),
            api_token: s.string("api_token", &mut problems).filter(|t| !t.is_empty()),
            metrics: s.optional_addr("metrics", &mut problems).unwrap_or(d.metrics),
            max_body_size: match s.string("max_body_size", &mut problems) {
                None => d.max_body_size,
                Some(text) => parse_size(&text).unwrap_or_else(|e| {
                    problems.push("server.max_body_size", e);
                    d.max_body_size
                }),
            },
            internal: internal_given.unwrap_or(d.internal),
            wasm: s.optional_addr("wasm", &mut problems).unwrap_or(d.wasm),
            wasm_admin: s.optional_addr("wasm_admin", &mut problems).unwrap_or(d.wasm_admin),
            advertise_host: s
                .string("advertise_host", &mut problems)
                .filter(|h| !h.trim().is_empty()),
            mtls: if s.has("mtls") {
                let mut m = s.section("mtls", &mut problems);
                let mut file = |key: &str, problems: &mut Problems| match m.string(key, problems) {
                    Some(path) if !path.trim().is_empty() => PathBuf::from(path),
                    _ => {
                        problems.push(format!("server.mtls.{key}"), "required: the path of a PEM file");
                        PathBuf::new()
                    }
                };
                let ca = file("ca", &mut problems);
                let cert = file("cert", &mut problems);
                let key = file("key", &mut problems);
                let reload_interval = m
                    .duration("reload_interval", &mut problems)
                    .unwrap_or(DEFAULT_MTLS_RELOAD_INTERVAL);
                if reload_interval.is_zero() {
                    problems.push("server.mtls.reload_interval", "must be longer than zero");
                }
                m.finish(&mut problems);
                Some(MtlsConfig {
                    ca,
                    cert,
                    key,
                    reload_interval,
                })
            } else {
                None
            },
            flow_control: {
                let mut f = s.section("flow_control", &mut problems);
                let config = flow_control(&mut f, &mut problems);
                f.finish(&mut problems);
                config
            },
            tcp_copy: {
                let mut t = s.section("tcp_copy", &mut problems);
                let config = tcp_copy(&mut t, &mut problems);
                t.finish(&mut problems);
                config
            },
        };
        s.finish(&mut problems);
        if server.max_calls_in_flight == 0 {
            problems.push("server.max_calls_in_flight", "must be at least 1");
        }
        if server.max_streams_per_connection == 0 {
            problems.push("server.max_streams_per_connection", "must be at least 1");
        }
        if server.max_calls_per_connection == Some(0) {
            problems.push("server.max_calls_per_connection", "must be at least 1");
        }
        if server.handshake_timeout.is_zero() {
            problems.push("server.handshake_timeout", "must be longer than zero");
        }
        if server.idle_timeout.is_zero() {
            problems.push("server.idle_timeout", "must be longer than zero");
        }
        server
    };

    let app = {
        let d = &defaults.app;
        let mut s = root.section("app", &mut problems);
        let callback_protocol = s.string("callback_protocol", &mut problems);
        let protocol = s.string("protocol", &mut problems);
        let callback_port = s.integer::<u16>("grpc_callback_port", &mut problems);
        let port = s.integer::<u16>("port", &mut problems);
        let callback_protocol = match (protocol.as_deref(), callback_protocol.as_deref()) {
            (None, None) => d.callback_protocol,
            (None, Some("layotto")) => CallbackProtocol::Layotto,
            (None, Some("dapr")) | (Some("grpc"), None | Some("dapr")) => CallbackProtocol::Dapr,
            (None, Some("http")) | (Some("http"), None | Some("http")) => CallbackProtocol::Http,
            (None, Some(other)) => {
                problems.push(
                    "app.callback_protocol",
                    format!("'{other}' is not a callback protocol; use \"layotto\", \"dapr\" or \"http\""),
                );
                d.callback_protocol
            }
            (Some(p @ ("grpc" | "http")), Some(other)) => {
                problems.push(
                    "app.protocol",
                    format!("'{p}' contradicts app.callback_protocol '{other}'; set one of them"),
                );
                d.callback_protocol
            }
            (Some(other), _) => {
                problems.push(
                    "app.protocol",
                    format!("'{other}' is not an app protocol; use \"grpc\" or \"http\""),
                );
                d.callback_protocol
            }
        };
        if let (Some(a), Some(b)) = (port, callback_port)
            && a != b
        {
            problems.push("app.port", "differs from app.grpc_callback_port; set one of them");
        }
        let health_check = {
            let present = s.take("health_check");
            match present {
                None => None,
                Some(value) => {
                    let mut h = Section::new("app.health_check".into(), Map::new());
                    match value {
                        Value::Object(map) => h = Section::new("app.health_check".into(), map),
                        other => problems.push(
                            "app.health_check",
                            format!("expected a table, found {}", walk::kind_of(&other)),
                        ),
                    }
                    let hd = AppHealthCheck::default();
                    let enabled = h.boolean("enabled", &mut problems).unwrap_or(true);
                    let check = AppHealthCheck {
                        path: h.string("path", &mut problems).unwrap_or(hd.path),
                        interval: h.duration("interval", &mut problems).unwrap_or(hd.interval),
                        timeout: h.duration("timeout", &mut problems).unwrap_or(hd.timeout),
                        threshold: h.integer("threshold", &mut problems).unwrap_or(hd.threshold),
                    };
                    h.finish(&mut problems);
                    if check.interval.is_zero() {
                        problems.push("app.health_check.interval", "must be above zero");
                    }
                    if check.timeout.is_zero() || check.timeout > check.interval {
                        problems.push(
                            "app.health_check.timeout",
                            "must be above zero and not longer than app.health_check.interval",
                        );
                    }
                    if check.threshold == 0 {
                        problems.push("app.health_check.threshold", "must be at least 1");
                    }
                    if !check.path.starts_with('/') {
                        problems.push("app.health_check.path", "must start with '/'");
                    }
                    enabled.then_some(check)
                }
            }
        };
        let app = AppConfig {
            app_id: s.string("app_id", &mut problems).unwrap_or_default(),
            grpc_callback_host: s
                .string("grpc_callback_host", &mut problems)
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| d.grpc_callback_host.clone()),
            grpc_callback_port: port.or(callback_port).unwrap_or(d.grpc_callback_port),
            callback_protocol,
            health_check,
            api_token: s.string("api_token", &mut problems).filter(|t| !t.is_empty()),
            features: s.string_list("features", &mut problems).unwrap_or_default(),
            max_concurrency: s.integer::<usize>("max_concurrency", &mut problems).filter(|n| *n > 0),
        };
        s.finish(&mut problems);
        if app.app_id.contains('.') {
            problems.push(
                "app.app_id",
                "must not contain '.' (Dapr addresses apps as <app-id>.<namespace>)",
            );
        }
        app
    };

    let supervisor = {
        let d = &defaults.supervisor;
        let mut s = root.section("supervisor", &mut problems);
        let sup = SupervisorConfig {
            backoff_min: s.duration("backoff_min", &mut problems).unwrap_or(d.backoff_min),
            backoff_max: s.duration("backoff_max", &mut problems).unwrap_or(d.backoff_max),
            max_restarts: s.integer("max_restarts", &mut problems).unwrap_or(d.max_restarts),
            restart_window: s.duration("restart_window", &mut problems).unwrap_or(d.restart_window),
            probe_interval: s.duration("probe_interval", &mut problems).unwrap_or(d.probe_interval),
            health_interval: s
                .duration("health_interval", &mut problems)
                .unwrap_or(d.health_interval),
            health_timeout: s.duration("health_timeout", &mut problems).unwrap_or(d.health_timeout),
            health_failure_threshold: s
                .integer("health_failure_threshold", &mut problems)
                .unwrap_or(d.health_failure_threshold),
            init_timeout: s.duration("init_timeout", &mut problems).unwrap_or(d.init_timeout),
            queue_capacity: s.integer("queue_capacity", &mut problems).unwrap_or(d.queue_capacity),
            fail_fast: s.boolean("fail_fast", &mut problems).unwrap_or(d.fail_fast),
        };
        s.finish(&mut problems);
        if sup.backoff_min.is_zero() {
            problems.push("supervisor.backoff_min", "must be above zero");
        }
        if sup.backoff_max < sup.backoff_min {
            problems.push("supervisor.backoff_max", "must not be below supervisor.backoff_min");
        }
        for (field, value) in [
            ("restart_window", sup.restart_window),
            ("probe_interval", sup.probe_interval),
            ("health_interval", sup.health_interval),
            ("health_timeout", sup.health_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("supervisor.{field}"), "must be above zero");
            }
        }
        if sup.health_failure_threshold == 0 {
            problems.push("supervisor.health_failure_threshold", "must be at least 1");
        }
        if sup.queue_capacity == 0 {
            problems.push("supervisor.queue_capacity", "must be at least 1");
        }
        sup
    };

    let log = {
        let d = &defaults.log;
        let mut s = root.section("log", &mut problems);
        let format = s.string("format", &mut problems);
        let log = LogConfig {
            level: s.string("level", &mut problems).unwrap_or_else(|| d.level.clone()),
            format: match format.as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    problems.push(
                        "log.format",
                        format!("'{other}' is not a log format; use \"text\" or \"json\""),
                    );
                    d.format
                }
            },
        };
        s.finish(&mut problems);
        if let Err(e) = log_filter(&log.level) {
            problems.push(
                "log.level",
                format!("'{}' is not a log filter: {e}", crate::components::quote(&log.level)),
            );
        }
        log
    };

    let mut components = BTreeMap::new();
    for &kind in Kind::ALL {
        let Some(value) = root.take(kind.as_str()) else {
            continue;
        };
        let mut specs = component_section(kind, value, &mut problems);
        for spec in &mut specs {
            spec.app_id = app.app_id.clone();
        }
        if !specs.is_empty() {
            components.insert(kind, specs);
        }
    }
    let subscriptions = match root.take("subscriptions") {
        None => Vec::new(),
        Some(value) => subscriptions::section(value, &app.app_id, &mut problems),
    };
    for sub in &subscriptions {
        let known = components
            .get(&Kind::PubSubs)
            .is_some_and(|specs: &Vec<ComponentSpec>| specs.iter().any(|s| s.name == sub.pubsub_name));
        if !known {
            problems.push(
                format!("subscriptions.{}.pubsub_name", sub.name),
                format!("names pub/sub '{}', which is not configured", sub.pubsub_name),
            );
        }
    }
    let plugins = match root.take("plugins") {
        None => BTreeMap::new(),
        Some(Value::Object(map)) => map.into_iter().collect(),
        Some(other) => {
            problems.push(
                "plugins",
                format!(
                    "expected a table of plugin name -> settings, found {}",
                    walk::kind_of(&other)
                ),
            );
            BTreeMap::new()
        }
    };
    for p in crate::api::plugins::validate(&plugins, &crate::api::plugins::Components::new(&components)) {
        problems.push(p.path, p.message);
    }
    root.finish(&mut problems);

    // Secret references must name a configured secret store.
    let secret_stores: Vec<&str> = components
        .get(&Kind::SecretStore)
        .map(|specs: &Vec<ComponentSpec>| specs.iter().map(|s| s.name.as_str()).collect())
        .unwrap_or_default();
    for (kind, specs) in &components {
        for spec in specs {
            for r in &spec.secret_refs {
                if !secret_stores.contains(&r.store.as_str()) {
                    problems.push(
                        format!("{kind}.{}.metadata.{}", spec.name, r.inject_as),
                        format!("refers to secret store '{}', which is not configured", r.store),
                    );
                }
            }
        }
    }

    if internal_given.is_none() && components.get(&Kind::NameResolution).is_some_and(|c| !c.is_empty()) {
        server.internal = Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_INTERNAL_PORT)));
    }

    let problems = problems.into_vec();
    if problems.is_empty() {
        Ok(Config {
            server,
            app,
            supervisor,
            log,
            components,
            subscriptions,
            plugins,
        })
    } else {
        Err(problems)
    }
}

fn component_section(kind: Kind, value: Value, problems: &mut Problems) -> Vec<ComponentSpec> {
    let section = kind.as_str();
    let Value::Object(instances) = value else {
        problems.push(
            section,
            format!(
                "expected a table of instance name -> {{ type, metadata }}, found {}",
                walk::kind_of(&value)
            ),
        );
        return Vec::new();
    };
    let mut specs = Vec::new();
    for (name, entry) in instances {
        let path = format!("{section}.{name}");
        if name.trim().is_empty() || name.contains(char::is_whitespace) {
            problems.push(&path, "instance names must be non-empty and contain no whitespace");
        }
        let Value::Object(entry) = entry else {
            problems.push(
                &path,
                format!("expected a table {{ type, metadata }}, found {}", walk::kind_of(&entry)),
            );
            continue;
        };
        let mut s = Section::new(path.clone(), entry);
        let type_name = s.string("type", problems);
        let auth_store = {
            let mut auth = s.section("auth", problems);
            let store = auth.string("secretStore", problems);
            auth.finish(problems);
            store
        };
        let (mut metadata, mut secret_refs) = match s.take("metadata") {
            None => (BTreeMap::new(), Vec::new()),
            Some(value) => metadata_values(value, &format!("{path}.metadata"), auth_store.as_deref(), problems),
        };
        if let Some(value) = s.take("secret_ref") {
            secret_refs.extend(layotto_secret_refs(value, &format!("{path}.secret_ref"), problems));
        }
        // Layotto writes a hello component's greeting beside `type`.
        if kind == Kind::Hellos
            && let Some(hello) = s.string("hello", problems)
        {
            metadata.entry("hello".into()).or_insert(hello);
        }
        // Layotto writes a configuration store's servers and timeout
        // beside `type` (`address`, `timeout`); its etcd store reads them as
        // `endpoints` and `dialTimeout`.
        if kind == Kind::ConfigStore {
            if let Some(servers) = s.string_list("address", problems) {
                metadata.entry("endpoints".into()).or_insert(servers.join(";"));
            }
            if let Some(timeout) = s.string("timeout", problems) {
                metadata.entry("dialTimeout".into()).or_insert(timeout);
            }
        }
        // Layotto writes a sequencer's floors beside `type`; the sequencer
        // types read them from their metadata.
        if kind == Kind::Sequencer
            && let Some(floors) = s.integer_map("biggerThan", problems)
        {
            for (key, floor) in floors {
                metadata.insert(format!("{BIGGER_THAN}{key}"), floor.to_string());
            }
        }
        let queue_capacity = s.integer::<usize>("queue_capacity", problems);
        if queue_capacity == Some(0) {
            problems.push(format!("{path}.queue_capacity"), "must be at least 1");
        }
        let flow_control = match s.take("flow_control") {
            None => None,
            Some(Value::Object(map)) => {
                let at = format!("{path}.flow_control");
                let mut r = Section::new(at.clone(), map);
                let rule = flow_rule(&mut r, &at, path.clone(), problems);
                r.finish(problems);
                Some(rule)
            }
            Some(other) => {
                problems.push(
                    format!("{path}.flow_control"),
                    format!("expected a table {{ threshold, ... }}, found {}", walk::kind_of(&other)),
                );
                None
            }
        };
        // Dapr component files carry a version; every type here is v1.
        let _ = s.string("version", problems);
        s.finish(problems);

        let Some(type_name) = type_name else {
            problems.push(format!("{path}.type"), "is required");
            continue;
        };
        let spec = ComponentSpec {
            name,
            type_name,
            metadata,
            queue_capacity,
            flow_control,
            app_id: String::new(),
            instance_id: String::new(),
            secret_refs,
            advertise: None,
        };
        // A secret reference may stand for any key, required ones
        // included: its value is checked once resolved, at start.
        // (Errors about the stand-in, under its key or another the type
        // reads it as, are left to then.)
        const STAND_IN: &str = "${secretKeyRef}";
        let mut probe = spec.clone();
        for r in &spec.secret_refs {
            probe
                .metadata
                .entry(r.inject_as.clone())
                .or_insert_with(|| STAND_IN.to_owned());
        }
        match kind.validate(&probe) {
            Some(errors) => {
                for e in errors {
                    if spec.secret_refs.iter().any(|r| r.inject_as == e.key) || e.message.contains(STAND_IN) {
                        continue;
                    }
                    problems.push(format!("{path}.metadata.{}", e.key), e.message);
                }
            }
            None => {
                let known = kind.known_types();
                let hint = if known.is_empty() {
                    format!("no {section} component types are implemented yet")
                } else {
                    format!("known types: {}", known.join(", "))
                };
                problems.push(
                    format!("{path}.type"),
                    format!("unknown type '{}' for {section}; {hint}", spec.type_name),
                );
            }
        }
        specs.push(spec);
    }
    specs
}

/// One flow rule's keys but `resource` (read by the caller), at `at`.
fn flow_rule(r: &mut Section, at: &str, resource: String, problems: &mut Problems) -> FlowRule {
    let threshold = r.integer::<u32>("threshold", problems).unwrap_or(0);
    if threshold == 0 {
        problems.push(
            format!("{at}.threshold"),
            "required: calls per stat_interval, at least 1",
        );
    }
    let stat_interval = r.duration("stat_interval", problems).unwrap_or(Duration::from_secs(1));
    if stat_interval.is_zero() {
        problems.push(format!("{at}.stat_interval"), "must be longer than zero");
    }
    let behavior = match r.string("control_behavior", problems).as_deref() {
        None | Some("reject") => ControlBehavior::Reject,
        Some("throttle") => ControlBehavior::Throttle,
        Some(other) => {
            problems.push(
                format!("{at}.control_behavior"),
                format!("'{other}' is not reject or throttle"),
            );
            ControlBehavior::Reject
        }
    };
    let strategy = match r.string("token_calculate_strategy", problems).as_deref() {
        None | Some("direct") => TokenStrategy::Direct,
        Some("warm_up") => TokenStrategy::WarmUp,
        Some(other) => {
            problems.push(
                format!("{at}.token_calculate_strategy"),
                format!("'{other}' is not direct or warm_up"),
            );
            TokenStrategy::Direct
        }
    };
    if strategy == TokenStrategy::WarmUp && behavior == ControlBehavior::Throttle {
        problems.push(
            format!("{at}.token_calculate_strategy"),
            "warm_up goes with control_behavior reject",
        );
    }
    FlowRule {
        resource,
        threshold,
        stat_interval,
        behavior,
        max_queueing_time: r
            .duration("max_queueing_time", problems)
            .unwrap_or(Duration::from_millis(500)),
        strategy,
        warm_up_period: r
            .duration("warm_up_period", problems)
            .unwrap_or(Duration::from_secs(10)),
        warm_up_cold_factor: r.integer::<u32>("warm_up_cold_factor", problems).unwrap_or(3).max(1),
    }
}

/// `[server.tcp_copy]`, with Layotto's bounds; unlike Layotto, which logs
/// and ignores a bad strategy, each bad value is a problem naming it.
fn tcp_copy(t: &mut Section, problems: &mut Problems) -> TcpCopyConfig {
    let d = TcpCopyConfig::default();
    let enabled = match t.string("switch", problems).as_deref() {
        None => d.enabled,
        Some(s) if s.eq_ignore_ascii_case("ON") => true,
        Some(s) if s.eq_ignore_ascii_case("OFF") => false,
        Some(other) => {
            problems.push("server.tcp_copy.switch", format!("'{other}' is not ON or OFF"));
            d.enabled
        }
    };
    let interval = t.integer::<u64>("interval", problems).unwrap_or(d.interval);
    if !(30..=3600).contains(&interval) {
        problems.push(
            "server.tcp_copy.interval",
            format!("{interval} is not between 30 and 3600 (seconds)"),
        );
    }
    let duration = t.integer::<u64>("duration", problems).unwrap_or(d.duration);
    if duration == 0 || duration >= interval {
        problems.push(
            "server.tcp_copy.duration",
            format!("{duration} must be above 0 and below the interval ({interval} seconds)"),
        );
    }
    let mut rate = |key: &str, default: f64, problems: &mut Problems| -> f64 {
        let at = format!("server.tcp_copy.{key}");
        let value = match t.take(key) {
            None => return default,
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(other) => {
                problems.push(at, format!("expected a percentage, found {}", walk::kind_of(&other)));
                return default;
            }
        };
        match value {
            Some(v) if v > 0.0 && v < 100.0 => v,
            _ => {
                problems.push(at, "must be a percentage above 0 and below 100");
                default
            }
        }
    };
    let cpu_max_rate = rate("cpu_max_rate", d.cpu_max_rate, problems);
    let mem_max_rate = rate("mem_max_rate", d.mem_max_rate, problems);
    let dir = match t.string("dir", problems) {
        None => d.dir,
        Some(dir) if dir.trim().is_empty() => {
            problems.push(
                "server.tcp_copy.dir",
                "must not be empty (leave it out for the default)",
            );
            d.dir
        }
        Some(dir) => Some(PathBuf::from(dir)),
    };
    let queue = t.integer::<usize>("queue", problems).unwrap_or(d.queue);
    if queue == 0 {
        problems.push("server.tcp_copy.queue", "must be at least 1");
    }
    TcpCopyConfig {
        enabled,
        interval,
        duration,
        cpu_max_rate,
        mem_max_rate,
        dir,
        queue,
    }
}

/// `[server.flow_control]`.
fn flow_control(f: &mut Section, problems: &mut Problems) -> FlowControlConfig {
    let d = FlowControlConfig::default();
    let enabled = f.boolean("enabled", problems).unwrap_or(d.enabled);
    let message = f.string("message", problems).unwrap_or(d.message);
    let mut rules = Vec::new();
    match f.take("rules") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let at = format!("server.flow_control.rules[{i}]");
                let Value::Object(map) = item else {
                    problems.push(at, "expected a table { resource, threshold, ... }");
                    continue;
                };
                let mut r = Section::new(at.clone(), map);
                let resource = r.string("resource", problems).unwrap_or_default();
                if !resource.starts_with('/') {
                    problems.push(
                        format!("{at}.resource"),
                        "required: a gRPC method path, /package.Service/Method",
                    );
                }
                let rule = flow_rule(&mut r, &at, resource, problems);
                r.finish(problems);
                if rules.iter().any(|x: &FlowRule| x.resource == rule.resource) {
                    problems.push(
                        format!("{at}.resource"),
                        format!("'{}' has a rule already", rule.resource),
                    );
                }
                rules.push(rule);
            }
        }
        Some(other) => problems.push(
            "server.flow_control.rules",
            format!("expected a list of tables, found {}", walk::kind_of(&other)),
        ),
    }
    FlowControlConfig {
        enabled,
        message,
        rules,
    }
}

/// A component's metadata: scalars become strings; a table
/// `{ secretKeyRef = { name, key, store } }` becomes a secret reference.
fn metadata_values(
    value: Value,
    path: &str,
    auth_store: Option<&str>,
    problems: &mut Problems,
) -> (BTreeMap<String, String>, Vec<SecretRef>) {
    let mut metadata = BTreeMap::new();
    let mut refs = Vec::new();
    // Layotto's file stores take an array of endpoint settings; one entry
    // is read as the metadata.
    let value = match value {
        Value::Array(mut items) if items.len() <= 1 => items.pop().unwrap_or_else(|| Value::Object(Map::new())),
        Value::Array(items) => {
            problems.push(
                path,
                format!(
                    "{} entries; one component takes one set of settings (configure a component per endpoint)",
                    items.len()
                ),
            );
            return (metadata, refs);
        }
        other => other,
    };
    let Value::Object(map) = value else {
        problems.push(
            path,
            format!("expected a table of metadata, found {}", walk::kind_of(&value)),
        );
        return (metadata, refs);
    };
    for (key, v) in map {
        let at = format!("{path}.{key}");
        match v {
            Value::String(s) => {
                metadata.insert(key, s);
            }
            Value::Number(n) => {
                metadata.insert(key, n.to_string());
            }
            Value::Bool(b) => {
                metadata.insert(key, b.to_string());
            }
            Value::Object(mut table) => {
                let Some(Value::Object(reference)) = table.remove("secretKeyRef") else {
                    problems.push(at, "a table here must be { secretKeyRef = { name, key, store } }");
                    continue;
                };
                let mut r = Section::new(format!("{at}.secretKeyRef"), reference);
                let name = r.string("name", problems);
                let sub_key = r.string("key", problems);
                let store = r.string("store", problems).or(auth_store.map(str::to_owned));
                r.finish(problems);
                if !table.is_empty() {
                    problems.push(&at, "only secretKeyRef may appear beside a secret reference");
                }
                match (name, store) {
                    (Some(secret), Some(store)) => refs.push(SecretRef {
                        store,
                        secret,
                        key: sub_key,
                        inject_as: key,
                    }),
                    (None, _) => problems.push(format!("{at}.secretKeyRef.name"), "is required"),
                    (_, None) => problems.push(
                        format!("{at}.secretKeyRef.store"),
                        "is required (or set the component's auth.secretStore)",
                    ),
                }
            }
            other => problems.push(at, format!("expected a string, found {}", walk::kind_of(&other))),
        }
    }
    (metadata, refs)
}

/// Layotto's `secret_ref = [{ store_name, key, sub_key, inject_as }]`.
fn layotto_secret_refs(value: Value, path: &str, problems: &mut Problems) -> Vec<SecretRef> {
    let Value::Array(items) = value else {
        problems.push(path, format!("expected a list, found {}", walk::kind_of(&value)));
        return Vec::new();
    };
    let mut refs = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Value::Object(item) = item else {
            problems.push(at, "expected { store_name, key, sub_key, inject_as }");
            continue;
        };
        let mut r = Section::new(at.clone(), item);
        let store = r.string("store_name", problems);
        let secret = r.string("key", problems);
        let sub_key = r.string("sub_key", problems).filter(|k| !k.is_empty());
        let inject_as = r.string("inject_as", problems);
        r.finish(problems);
        match (store, secret, inject_as) {
            (Some(store), Some(secret), Some(inject_as)) => refs.push(SecretRef {
                store,
                secret,
                key: sub_key,
                inject_as,
            }),
            _ => problems.push(at, "store_name, key and inject_as are required"),
        }
    }
    refs
}

/// Which file `layotto start` reads: the given path, else the default path
/// when it exists, else the embedded default.
pub fn resolve(path: Option<&Path>) -> Option<PathBuf> {
    match path {
        Some(p) => Some(p.to_path_buf()),
        None => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()),
    }
}

#[cfg(test)]
mod tests;
