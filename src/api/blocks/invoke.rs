//! The Invoke block: service invocation, whatever front end the call came
//! in on (Layotto's InvokeService, Dapr's gRPC InvokeService, Dapr's HTTP
//! `/v1.0/invoke`).
//!
//! The caller's sidecar checks the request, finds the target's sidecars
//! through the `name_resolution` components (answers cached for
//! [`CACHE_TTL`]), spreads calls round-robin over them, skips an instance
//! that refused a connection for [`SKIP_FOR`] (trying the next one in the
//! same call), and sends the call to the chosen sidecar's internal
//! listener as Dapr's `ServiceInvocation/CallLocal`, carrying the caller's
//! app id, the deadline and the trace context. The target's sidecar
//! ([`serve_local`]) calls its app over the app channel. A call to this
//! sidecar's own app id goes straight to its own app.
//!
//! The app's answer comes back as it was: an HTTP status, headers and body,
//! or a gRPC status with its trailers; only failures to reach the target
//! are errors of this block.

pub mod trace;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use super::{BlockError, quote};
use crate::actors::name_resolution::Resolve;
use crate::api::ApiContext;
use crate::proto::dapr::common::v1 as common;
use crate::proto::dapr::internals::v1 as internals;
use internals::service_invocation_client::ServiceInvocationClient;

use crate::api::mtls::{Mtls, MtlsConnector};

/// An invocation without a deadline of its own gets this one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a resolution is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// How long an instance that refused a connection is left out.
pub const SKIP_FOR: Duration = Duration::from_secs(3);
/// Instances one call tries before it gives up.
const MAX_ATTEMPTS: usize = 3;

pub const CALLER_APP_ID: &str = "dapr-caller-app-id";
pub const CALLEE_APP_ID: &str = "dapr-callee-app-id";
pub const CALLER_NAMESPACE: &str = "dapr-caller-namespace";
/// The header (HTTP) or metadata (gRPC) that names the target app.
pub const APP_ID_HEADER: &str = "dapr-app-id";

/// Metadata never passed on: the transport's own, the caller's token, and
/// what each hop sets again.
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
    "content-length",
    "content-type",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "dapr-api-token",
    APP_ID_HEADER,
    "destination-app-id",
    CALLER_APP_ID,
    CALLEE_APP_ID,
    CALLER_NAMESPACE,
];

/// An invocation, as every front end hands it over.
#[derive(Clone, Debug, Default)]
pub struct InvokeRequest {
    /// The target app id (`app` or `app.namespace`).
    pub app_id: String,
    /// The method: a path for an HTTP app, the method name for a gRPC one.
    pub method: String,
    /// The HTTP verb (upper case); empty when the caller gave none.
    pub verb: String,
    /// The query string, without `?`.
    pub query: String,
    pub data: Vec<u8>,
    /// The `type_url` of the data's `Any`; empty for raw bytes.
    pub type_url: String,
    pub content_type: String,
    /// The caller's headers or gRPC metadata, keys in lower case.
    pub metadata: Vec<(String, String)>,
    /// The caller's deadline, when it set one.
    pub timeout: Option<Duration>,
}

/// The target app's answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InvokeResponse {
    /// An HTTP status (>= 100) from an HTTP app; a gRPC code (0..=16) from
    /// a gRPC app.
    pub code: i32,
    /// The gRPC status message of a gRPC app.
    pub message: String,
    pub headers: Vec<(String, String)>,
    pub trailers: Vec<(String, String)>,
    pub data: Vec<u8>,
    pub type_url: String,
    pub content_type: String,
}

impl InvokeResponse {
    /// Whether an HTTP app answered.
    pub fn is_http(&self) -> bool {
        self.code >= 100
    }

    /// The answer as an HTTP status (daprd's `HTTPStatusFromCode` for a
    /// gRPC app).
    pub fn http_status(&self) -> u16 {
        if self.is_http() {
            return u16::try_from(self.code).unwrap_or(500);
        }
        match self.code {
            0 => 200,
            1 => 408,
            3 | 9 | 11 => 400,
            4 => 504,
            5 => 404,
            6 | 10 => 409,
            7 => 403,
            8 => 429,
            12 => 501,
            14 => 503,
            16 => 401,
            _ => 500,
        }
    }

    /// The answer as a gRPC code (daprd's `CodeFromHTTPStatus` for an
    /// HTTP app).
    pub fn grpc_code(&self) -> tonic::Code {
        if !self.is_http() {
            return tonic::Code::from_i32(self.code);
        }
        match self.code {
            200..=299 => tonic::Code::Ok,
            400 => tonic::Code::InvalidArgument,
            401 => tonic::Code::Unauthenticated,
            403 => tonic::Code::PermissionDenied,
            404 => tonic::Code::NotFound,
            409 => tonic::Code::Aborted,
            412 => tonic::Code::FailedPrecondition,
            416 => tonic::Code::OutOfRange,
            429 => tonic::Code::ResourceExhausted,
            499 => tonic::Code::Cancelled,
            500 => tonic::Code::Internal,
            501 => tonic::Code::Unimplemented,
            503 => tonic::Code::Unavailable,
            504 => tonic::Code::DeadlineExceeded,
            _ => tonic::Code::Unknown,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.grpc_code() == tonic::Code::Ok
    }
}

/// The method class of the metrics: the HTTP verb, or `grpc`.
fn method_class(verb: &str) -> &'static str {
    match verb {
        "" => "grpc",
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// The caller side's state: the resolution cache, round-robin position,
/// instances left out, and one client per target sidecar.
pub struct Invoker {
    app_id: String,
    namespace: String,
    cache: moka::future::Cache<String, Arc<[String]>>,
    next: AtomicUsize,
    skipped: Mutex<HashMap<String, Instant>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Connections to other sidecars use mutual TLS when set.
    mtls: Option<Arc<Mtls>>,
}

impl Invoker {
    pub fn new(app_id: &str, mtls: Option<Arc<Mtls>>) -> Invoker {
        Invoker {
            app_id: app_id.to_owned(),
            namespace: crate::components::name_resolution::namespace(),
            cache: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(CACHE_TTL)
                .build(),
            next: AtomicUsize::new(0),
            skipped: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            mtls,
        }
    }

    /// Drops the connections to other sidecars, so that the next calls
    /// connect afresh (after the mTLS certificates changed).
    pub fn forget_connections(&self) {
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The connection to the sidecar at `address`, made on first use.
    fn channel(&self, address: &str) -> Result<Channel, BlockError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| BlockError::Internal(format!("bad address {}: {e}", quote(address))))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        let channel = match &self.mtls {
            Some(mtls) => endpoint.connect_with_connector_lazy(MtlsConnector(mtls.clone())),
            None => endpoint.connect_lazy(),
        };
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    fn client(&self, address: &str) -> Result<ServiceInvocationClient<Channel>, BlockError> {
        Ok(ServiceInvocationClient::new(self.channel(address)?)
            .max_decoding_message_size(crate::api::grpc::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::api::grpc::MAX_MESSAGE_BYTES))
    }

    /// This sidecar's app id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    fn skip(&self, address: &str) {
        let mut skipped = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        skipped.insert(address.to_owned(), Instant::now() + SKIP_FOR);
        // A refused connection also drops the channel: the next call dials
        // afresh rather than waiting out the channel's reconnect backoff.
        self.channels.lock().unwrap_or_else(|p| p.into_inner()).remove(address);
    }

    /// The instances to try, in order: round-robin over those not left
    /// out (all of them, when every one is left out).
    fn order(&self, addresses: &[String]) -> Vec<String> {
        let now = Instant::now();
        let skipped = {
            let mut skipped = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
            skipped.retain(|_, until| *until > now);
            addresses
                .iter()
                .filter(|a| skipped.contains_key(*a))
                .cloned()
                .collect::<Vec<_>>()
        };
        let live: Vec<&String> = addresses.iter().filter(|a| !skipped.contains(a)).collect();
        let pool: Vec<&String> = if live.is_empty() {
            addresses.iter().collect()
        } else {
            live
        };
        if pool.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % pool.len();
        let mut out: Vec<String> = pool[start..]
            .iter()
            .chain(pool[..start].iter())
            .map(|a| (*a).clone())
            .collect();
        // Left-out instances last, as a last resort.
        let rest: Vec<String> = skipped.into_iter().filter(|a| !out.contains(a)).collect();
        out.extend(rest);
        out
    }
}

/// Splits `app.namespace`.
fn split_target(target: &str) -> Result<(&str, Option<&str>), BlockError> {
    match target.split_once('.') {
        None => Ok((target, None)),
        Some((app, ns)) if !app.is_empty() && !ns.is_empty() && !ns.contains('.') => Ok((app, Some(ns))),
        _ => Err(BlockError::invalid(format!(
            "app id '{}' is not valid: use <app-id> or <app-id>.<namespace>",
            quote(target)
        ))),
    }
}

/// Cleans a method as daprd does: refuses `#`, `?` and control characters,
/// collapses `//`, `.` and `..` segments (never above the root).
pub fn normalize_method(method: &str) -> Result<String, BlockError> {
    if method.chars().any(|c| c == '#' || c == '?' || c.is_control()) {
        return Err(BlockError::invalid(format!(
            "method '{}' contains a character that is not allowed ('#', '?' or a control character)",
            quote(method)
        )));
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in method.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    Ok(segments.join("/"))
}

/// Resolves `app_id` through the configured resolvers, in name order; the
/// first that knows it wins.
async fn resolve(ctx: &ApiContext, app_id: &str, namespace: &str) -> Result<Arc<[String]>, BlockError> {
    let invoker = &ctx.invoker;
    let key = format!("{app_id}.{namespace}");
    if let Some(found) = invoker.cache.get(&key).await {
        ctx.metrics.count_resolution(true);
        return Ok(found);
    }
    ctx.metrics.count_resolution(false);
    let resolvers: Vec<_> = ctx.router.name_resolvers.handles();
    if resolvers.is_empty() {
        return Err(BlockError::NotFound(format!(
            "app id '{}' cannot be resolved: no name resolution is configured (list the app under a \
             name_resolution component of type static, or configure a registry)",
            quote(app_id)
        )));
    }
    let mut failures = Vec::new();
    for resolver in resolvers {
        let asked = resolver
            .call(Resolve {
                app_id: app_id.to_owned(),
                namespace: namespace.to_owned(),
            })
            .await;
        match asked {
            Ok(addresses) if !addresses.is_empty() => {
                let found: Arc<[String]> = addresses.into();
                invoker.cache.insert(key, found.clone()).await;
                return Ok(found);
            }
            Ok(_) => {}
            Err(e) => failures.push(e.to_string()),
        }
    }
    if failures.is_empty() {
        Err(BlockError::NotFound(format!(
            "app id '{}' not found: no sidecar of it is registered with name resolution",
            quote(app_id)
        )))
    } else {
        Err(BlockError::Unavailable(format!(
            "cannot resolve app id '{}': {}",
            quote(app_id),
            failures.join("; ")
        )))
    }
}

/// The metadata sent on: the caller's, minus what must not travel, plus
/// who calls whom and this hop's trace context.
fn forwarded_metadata(ctx: &ApiContext, req: &InvokeRequest, callee: &str) -> Vec<(String, String)> {
    let mut metadata: Vec<(String, String)> = req
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with(':') && !DROPPED.contains(&k.as_str()))
        .cloned()
        .collect();
    trace::next_hop(&mut metadata);
    metadata.push((CALLER_APP_ID.to_owned(), ctx.invoker.app_id.clone()));
    metadata.push((CALLEE_APP_ID.to_owned(), callee.to_owned()));
    metadata.push((CALLER_NAMESPACE.to_owned(), ctx.invoker.namespace.clone()));
    metadata
}

/// Invokes a method of another app (or this sidecar's own).
pub async fn invoke(ctx: &ApiContext, mut req: InvokeRequest) -> Result<InvokeResponse, BlockError> {
    let started = Instant::now();
    let target = std::mem::take(&mut req.app_id);
    super::required(&target, "app id")?;
    // A loaded WASM function's id is served here, as Layotto's `mosn`
    // channel hands InvokeService to its WASM ingress.
    if ctx.functions.by_id(&target).is_some() {
        return super::wasm::invoke_function(ctx, &target, req).await;
    }
    let (app_id, namespace) = split_target(&target)?;
    req.method = normalize_method(&req.method)?;
    req.verb = req.verb.to_ascii_uppercase();
    let class = method_class(&req.verb);
    let timeout = req.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let deadline = started + timeout;
    let namespace = namespace.unwrap_or(&ctx.invoker.namespace).to_owned();
    req.metadata = forwarded_metadata(ctx, &req, app_id);
    let local = app_id == ctx.invoker.app_id && namespace == ctx.invoker.namespace;
    let answer = if local {
        req.app_id = app_id.to_owned();
        match tokio::time::timeout_at(deadline.into(), call_app(ctx, req)).await {
            Ok(answer) => answer,
            Err(_) => Err(deadline_passed(app_id, timeout)),
        }
    } else {
        remote(ctx, app_id, &namespace, req, deadline, timeout).await
    };
    let outcome = match &answer {
        Ok(r) if r.is_ok() => "ok",
        Ok(_) => "app_error",
        Err(_) => "failed",
    };
    ctx.metrics
        .observe_invoke(app_id, class, outcome, started.elapsed().as_secs_f64());
    answer
}

fn deadline_passed(app_id: &str, timeout: Duration) -> BlockError {
    BlockError::DeadlineExceeded(format!(
        "failed to invoke, id: {}: no answer within {timeout:?}",
        quote(app_id)
    ))
}

async fn remote(
    ctx: &ApiContext,
    app_id: &str,
    namespace: &str,
    req: InvokeRequest,
    deadline: Instant,
    timeout: Duration,
) -> Result<InvokeResponse, BlockError> {
    let addresses = resolve(ctx, app_id, namespace).await?;
    let order = ctx.invoker.order(&addresses);
    let message = internal_request(&req);
    let mut last_error = None;
    for (attempt, address) in order.iter().take(MAX_ATTEMPTS).enumerate() {
        if attempt > 0 {
            ctx.metrics.count_invoke_retry(app_id);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(deadline_passed(app_id, timeout));
        }
        let mut client = ctx.invoker.client(address)?;
        let mut request = tonic::Request::new(message.clone());
        request.set_timeout(remaining);
        let call = client.call_local(request);
        let answer = match tokio::time::timeout(remaining, call).await {
            Ok(answer) => answer,
            Err(_) => return Err(deadline_passed(app_id, timeout)),
        };
        match answer {
            Ok(response) => return Ok(from_internal(response.into_inner())),
            Err(status) if is_connection_failure(&status) => {
                // Another instance may answer; this one sits out a while
                // and the resolution is asked again.
                ctx.invoker.skip(address);
                ctx.invoker.cache.invalidate(&format!("{app_id}.{namespace}")).await;
                last_error = Some(format!("{address}: {}", status.message()));
            }
            Err(status) => return Err(from_remote_status(app_id, status)),
        }
    }
    Err(BlockError::Unavailable(format!(
        "failed to invoke, id: {}: no instance could be reached ({})",
        quote(app_id),
        last_error.unwrap_or_else(|| "none resolved".into())
    )))
}

/// Where a proxied gRPC call goes.
pub enum ProxyRoute {
    /// This sidecar's own app, over its gRPC channel.
    Local(Channel),
    /// Another sidecar's internal listener.
    Remote {
        app_id: String,
        address: String,
        channel: Channel,
    },
}

/// Picks the destination of a gRPC call proxied to `target` (the value of
/// `dapr-callee-app-id` or `dapr-app-id`).
pub async fn route_proxy(ctx: &ApiContext, target: &str) -> Result<ProxyRoute, BlockError> {
    let (app_id, namespace) = split_target(target)?;
    let namespace = namespace.unwrap_or(&ctx.invoker.namespace).to_owned();
    if app_id == ctx.invoker.app_id && namespace == ctx.invoker.namespace {
        let channel = ctx.app_channel.as_ref().and_then(|app| app.grpc_channel());
        return channel.map(ProxyRoute::Local).ok_or_else(|| {
            BlockError::Unavailable("gRPC proxying to this app needs a gRPC app channel (app.protocol grpc)".into())
        });
    }
    let addresses = resolve(ctx, app_id, &namespace).await?;
    let address = ctx
        .invoker
        .order(&addresses)
        .into_iter()
        .next()
        .ok_or_else(|| BlockError::NotFound(format!("app id '{}' not found", quote(app_id))))?;
    let channel = ctx.invoker.channel(&address)?;
    Ok(ProxyRoute::Remote {
        app_id: app_id.to_owned(),
        address,
        channel,
    })
}

/// A proxied call could not reach `address`: later calls go elsewhere.
pub async fn proxy_failed(ctx: &ApiContext, app_id: &str, address: &str) {
    ctx.invoker.skip(address);
    ctx.invoker
        .cache
        .invalidate(&format!("{app_id}.{}", ctx.invoker.namespace))
        .await;
}

/// Whether a call failed before the target sidecar had it: a refused or
/// reset connection, which is safe to send to another instance.
fn is_connection_failure(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let source = std::error::Error::source(status)
        .map(|e| format!("{e:?}"))
        .unwrap_or_default();
    let text = format!("{} {source}", status.message());
    [
        "connect",
        "transport error",
        "Connection refused",
        "connection reset",
        "broken pipe",
        "error trying",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// A failure of the target sidecar (not of its app) keeps its kind.
fn from_remote_status(app_id: &str, status: tonic::Status) -> BlockError {
    let message = format!("failed to invoke, id: {}: {}", quote(app_id), status.message());
    match status.code() {
        tonic::Code::DeadlineExceeded => BlockError::DeadlineExceeded(message),
        tonic::Code::Unavailable => BlockError::Unavailable(message),
        tonic::Code::PermissionDenied => BlockError::PermissionDenied(message),
        tonic::Code::InvalidArgument => BlockError::InvalidArgument(message),
        tonic::Code::NotFound => BlockError::NotFound(message),
        _ => BlockError::Internal(message),
    }
}

fn to_lists(pairs: &[(String, String)]) -> HashMap<String, internals::ListStringValue> {
    let mut map: HashMap<String, internals::ListStringValue> = HashMap::new();
    for (k, v) in pairs {
        map.entry(k.clone()).or_default().values.push(v.clone());
    }
    map
}

fn from_lists(map: HashMap<String, internals::ListStringValue>) -> Vec<(String, String)> {
    let sorted: BTreeMap<String, internals::ListStringValue> = map.into_iter().collect();
    sorted
        .into_iter()
        .flat_map(|(k, list)| list.values.into_iter().map(move |v| (k.clone(), v)))
        .collect()
}

/// The HTTP verb as Dapr's enum; NONE for none or an unknown one.
pub fn verb_number(verb: &str) -> i32 {
    use common::http_extension::Verb;
    let verb = match verb {
        "GET" => Verb::Get,
        "HEAD" => Verb::Head,
        "POST" => Verb::Post,
        "PUT" => Verb::Put,
        "DELETE" => Verb::Delete,
        "CONNECT" => Verb::Connect,
        "OPTIONS" => Verb::Options,
        "TRACE" => Verb::Trace,
        "PATCH" => Verb::Patch,
        _ => Verb::None,
    };
    verb as i32
}

/// Dapr's verb enum as a verb; empty for NONE.
pub fn verb_name(number: i32) -> &'static str {
    use common::http_extension::Verb;
    match Verb::try_from(number).unwrap_or(Verb::None) {
        Verb::None => "",
        Verb::Get => "GET",
        Verb::Head => "HEAD",
        Verb::Post => "POST",
        Verb::Put => "PUT",
        Verb::Delete => "DELETE",
        Verb::Connect => "CONNECT",
        Verb::Options => "OPTIONS",
        Verb::Trace => "TRACE",
        Verb::Patch => "PATCH",
    }
}

fn internal_request(req: &InvokeRequest) -> internals::InternalInvokeRequest {
    let http_extension = (!req.verb.is_empty() || !req.query.is_empty()).then(|| common::HttpExtension {
        verb: verb_number(&req.verb),
        querystring: req.query.clone(),
    });
    internals::InternalInvokeRequest {
        ver: internals::ApiVersion::V1 as i32,
        metadata: to_lists(&req.metadata),
        message: Some(common::InvokeRequest {
            method: req.method.clone(),
            data: Some(prost_types::Any {
                type_url: req.type_url.clone(),
                value: req.data.clone(),
            }),
            content_type: req.content_type.clone(),
            http_extension,
        }),
        actor: None,
    }
}

fn from_internal(response: internals::InternalInvokeResponse) -> InvokeResponse {
    let status = response.status.unwrap_or_default();
    let message = response.message.unwrap_or_default();
    let data = message.data.unwrap_or_default();
    InvokeResponse {
        code: status.code,
        message: status.message,
        headers: from_lists(response.headers),
        trailers: from_lists(response.trailers),
        data: data.value,
        type_url: data.type_url,
        content_type: message.content_type,
    }
}

fn to_internal(response: InvokeResponse) -> internals::InternalInvokeResponse {
    internals::InternalInvokeResponse {
        status: Some(internals::Status {
            code: response.code,
            message: response.message,
            details: Vec::new(),
        }),
        headers: to_lists(&response.headers),
        trailers: to_lists(&response.trailers),
        message: Some(common::InvokeResponse {
            data: Some(prost_types::Any {
                type_url: response.type_url,
                value: response.data,
            }),
            content_type: response.content_type,
        }),
    }
}

/// Calls this sidecar's app: the end of every invocation's path.
async fn call_app(ctx: &ApiContext, mut req: InvokeRequest) -> Result<InvokeResponse, BlockError> {
    let Some(app) = &ctx.app_channel else {
        return Err(BlockError::Internal("app channel is not initialized".into()));
    };
    if *ctx.app_health.borrow() == Some(false) {
        return Err(BlockError::Internal(
            "error invoking app channel: app is not in a healthy state".into(),
        ));
    }
    // The sidecar's own span, between the caller's and the app's.
    trace::next_hop(&mut req.metadata);
    app.invoke(&req)
        .await
        .map_err(|e| BlockError::Internal(format!("error invoking app channel: {e}")))
}

/// The target side: a call that another sidecar sent to this one's
/// internal listener (Dapr's `CallLocal`), for this sidecar's app.
pub async fn serve_local(
    ctx: &ApiContext,
    request: internals::InternalInvokeRequest,
    timeout: Option<Duration>,
) -> Result<internals::InternalInvokeResponse, BlockError> {
    if request.ver != internals::ApiVersion::V1 as i32 {
        return Err(BlockError::invalid(format!(
            "unsupported internal API version {}; only V1 is served",
            request.ver
        )));
    }
    let Some(message) = request.message else {
        return Err(BlockError::invalid("the invocation carries no message"));
    };
    let data = message.data.unwrap_or_default();
    let extension = message.http_extension.unwrap_or_default();
    let metadata = from_lists(request.metadata);
    let caller = metadata
        .iter()
        .find(|(k, _)| k == CALLER_APP_ID)
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let req = InvokeRequest {
        app_id: ctx.invoker.app_id.clone(),
        method: normalize_method(&message.method)?,
        verb: verb_name(extension.verb).to_owned(),
        query: extension.querystring,
        data: data.value,
        type_url: data.type_url,
        content_type: message.content_type,
        metadata,
        timeout,
    };
    let work = call_app(ctx, req);
    let answer = match timeout {
        Some(limit) => tokio::time::timeout(limit, work)
            .await
            .map_err(|_| BlockError::DeadlineExceeded(format!("the app did not answer within {limit:?}")))?,
        None => work.await,
    };
    tracing::trace!(caller = %caller, ok = answer.is_ok(), "Served an invocation");
    answer.map(to_internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_cleaned_as_daprd_cleans_them() {
        assert_eq!(normalize_method("///foo//bar").expect("ok"), "foo/bar");
        assert_eq!(normalize_method("a/./b/../c").expect("ok"), "a/c");
        assert_eq!(normalize_method("../../etc/passwd").expect("ok"), "etc/passwd");
        assert_eq!(normalize_method("").expect("ok"), "");
        for bad in ["a#b", "a?b", "a\u{0}b", "a\nb"] {
            assert!(normalize_method(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn targets_may_name_a_namespace() {
        assert_eq!(split_target("app").expect("ok"), ("app", None));
        assert_eq!(split_target("app.ns").expect("ok"), ("app", Some("ns")));
        assert!(split_target("a.b.c").is_err());
        assert!(split_target(".b").is_err());
    }

    #[test]
    fn statuses_map_between_http_and_grpc_as_daprd_maps_them() {
        let http = |code| InvokeResponse {
            code,
            ..Default::default()
        };
        assert_eq!(http(200).grpc_code(), tonic::Code::Ok);
        assert_eq!(http(404).grpc_code(), tonic::Code::NotFound);
        assert_eq!(http(418).grpc_code(), tonic::Code::Unknown);
        assert_eq!(http(418).http_status(), 418);
        let grpc = |code| InvokeResponse {
            code,
            ..Default::default()
        };
        assert_eq!(grpc(5).http_status(), 404);
        assert_eq!(grpc(8).http_status(), 429);
        assert_eq!(grpc(0).http_status(), 200);
        assert!(grpc(0).is_ok() && !grpc(3).is_ok());
    }

    #[test]
    fn round_robin_skips_instances_left_out() {
        let invoker = Invoker::new("me", None);
        let all = vec!["a:1".to_owned(), "b:1".to_owned(), "c:1".to_owned()];
        let firsts: Vec<String> = (0..3).map(|_| invoker.order(&all)[0].clone()).collect();
        assert_eq!(firsts, ["a:1", "b:1", "c:1"]);
        invoker.skip("b:1");
        for _ in 0..4 {
            let order = invoker.order(&all);
            assert_ne!(order[0], "b:1");
            assert_eq!(order.last().map(String::as_str), Some("b:1"), "a last resort");
        }
    }
}
