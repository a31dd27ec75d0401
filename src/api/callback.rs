//! The sidecar as the client of the application's callback server:
//! Layotto's `spec.proto.runtime.v1.AppCallback`, Dapr's
//! `dapr.proto.runtime.v1.AppCallback`, or Dapr's HTTP app channel (GET
//! `/dapr/subscribe`, events POSTed to their route), chosen by
//! `app.callback_protocol`. `APP_API_TOKEN` travels on every call as
//! `dapr-api-token`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prost_types::value::Kind;
use serde_json::Value;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tracing::warn;

use super::blocks::invoke::{InvokeRequest, InvokeResponse};
use super::blocks::pubsub::Outcome;
use super::cloudevents::{self, CLOUDEVENT_CONTENT_TYPE, TopicEvent};
use crate::config::dapr_resources::{field, text};
use crate::config::{AppConfig, CallbackProtocol, Routes, compile_rule};
use crate::proto::dapr::runtime::v1 as dapr;
use crate::proto::dapr::runtime::v1::app_callback_client::AppCallbackClient as DaprClient;
use crate::proto::dapr::runtime::v1::app_callback_health_check_client::AppCallbackHealthCheckClient as DaprHealthClient;
use crate::proto::runtime::v1 as layotto;
use crate::proto::runtime::v1::app_callback_client::AppCallbackClient as LayottoClient;

/// A subscription to deliver to the app.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AppSubscription {
    pub pubsub_name: String,
    pub topic: String,
    pub metadata: Vec<(String, String)>,
    /// Dapr's routes; empty for Layotto (and a Dapr gRPC app that gives
    /// none: its events carry an empty path).
    pub routes: Routes,
    pub dead_letter_topic: Option<String>,
    /// From config or a resource file, not asked of the app.
    pub declarative: bool,
}

/// How long one callback may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The header that carries `APP_API_TOKEN` to the app.
const TOKEN_HEADER: &str = "dapr-api-token";

#[derive(Clone)]
enum Client {
    Layotto(LayottoClient<Channel>),
    Dapr(DaprClient<Channel>, DaprHealthClient<Channel>),
    Http { client: reqwest::Client, base: Arc<str> },
}

/// The app's callback server, whichever protocol it speaks.
#[derive(Clone)]
pub struct AppCallback {
    client: Client,
    token: Option<Arc<str>>,
    app_id: Arc<str>,
    /// `app.max_concurrency`: places for calls to the app.
    places: Option<Arc<tokio::sync::Semaphore>>,
    /// The connection to a gRPC app, for invocations (Dapr's
    /// `AppCallback.OnInvoke`) and proxied gRPC calls.
    grpc: Option<Channel>,
}

/// Why a call to the app failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CallbackError(String);

impl From<tonic::Status> for CallbackError {
    fn from(s: tonic::Status) -> Self {
        CallbackError(format!("{}: {}", s.code(), s.message()))
    }
}

impl From<reqwest::Error> for CallbackError {
    fn from(e: reqwest::Error) -> Self {
        CallbackError(e.to_string())
    }
}

impl AppCallback {
    /// A client that connects on first use and reconnects after failures,
    /// or `None` when the app runs no callback server.
    pub fn for_app(app: &AppConfig) -> Option<AppCallback> {
        if app.grpc_callback_port == 0 {
            return None;
        }
        let host = &app.grpc_callback_host;
        let port = app.grpc_callback_port;
        let mut grpc = None;
        let client = match app.callback_protocol {
            CallbackProtocol::Http => {
                let client = reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(CALL_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .tcp_nodelay(true)
                    .build()
                    .ok()?;
                Client::Http {
                    client,
                    base: format!("http://{host}:{port}").into(),
                }
            }
            protocol => {
                let endpoint = Endpoint::from_shared(format!("http://{host}:{port}"))
                    .ok()?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(CALL_TIMEOUT)
                    .tcp_nodelay(true);
                let channel = endpoint.connect_lazy();
                grpc = Some(channel.clone());
                if protocol == CallbackProtocol::Layotto {
                    Client::Layotto(LayottoClient::new(channel))
                } else {
                    Client::Dapr(DaprClient::new(channel.clone()), DaprHealthClient::new(channel))
                }
            }
        };
        Some(AppCallback {
            client,
            token: app.api_token.as_deref().map(Arc::from),
            app_id: Arc::from(app.app_id.as_str()),
            places: app.max_concurrency.map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
            grpc,
        })
    }

    /// Waits for a place under `app.max_concurrency`, when it is set.
    async fn place(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match &self.places {
            Some(places) => places.clone().acquire_owned().await.ok(),
            None => None,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token
            && let Ok(value) = token.parse()
        {
            request.metadata_mut().insert(TOKEN_HEADER, value);
        }
        request
    }

    fn http(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => builder.header(TOKEN_HEADER, token.as_ref()),
            None => builder,
        }
    }

    /// The application's subscriptions; UNIMPLEMENTED (gRPC) or 404 (HTTP)
    /// means none.
    pub async fn subscriptions(&self) -> Result<Vec<AppSubscription>, CallbackError> {
        let listed: Result<Vec<AppSubscription>, tonic::Status> = match self.client.clone() {
            Client::Layotto(mut client) => client.list_topic_subscriptions(self.request(())).await.map(|r| {
                r.into_inner()
                    .subscriptions
                    .into_iter()
                    .map(|s| AppSubscription {
                        pubsub_name: s.pubsub_name,
                        topic: s.topic,
                        metadata: sorted(s.metadata),
                        routes: Routes::default(),
                        dead_letter_topic: None,
                        declarative: false,
                    })
                    .collect()
            }),
            Client::Dapr(mut client, _) => client.list_topic_subscriptions(self.request(())).await.map(|r| {
                r.into_inner()
                    .subscriptions
                    .into_iter()
                    .filter_map(|s| {
                        let routes = s
                            .routes
                            .map(|r| Routes {
                                rules: r.rules.into_iter().map(|rule| (rule.r#match, rule.path)).collect(),
                                default: r.default,
                            })
                            .unwrap_or_default();
                        checked(AppSubscription {
                            pubsub_name: s.pubsub_name,
                            topic: s.topic,
                            metadata: sorted(s.metadata),
                            routes,
                            dead_letter_topic: Some(s.dead_letter_topic).filter(|t| !t.is_empty()),
                            declarative: false,
                        })
                    })
                    .collect()
            }),
            Client::Http { client, base } => return self.http_subscriptions(&client, &base).await,
        };
        match listed {
            Err(status) if status.code() == Code::Unimplemented => Ok(Vec::new()),
            other => Ok(other?),
        }
    }

    async fn http_subscriptions(
        &self,
        client: &reqwest::Client,
        base: &str,
    ) -> Result<Vec<AppSubscription>, CallbackError> {
        let response = self
            .http(client.get(format!("{base}/dapr/subscribe")))
            .header("dapr-app-id", self.app_id.as_ref())
            .header("content-type", "application/json")
            .send()
            .await?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if status != reqwest::StatusCode::OK {
            warn!(%status, "The app answered GET /dapr/subscribe with an error; no programmatic subscriptions");
            return Ok(Vec::new());
        }
        parse_subscribe(&response.bytes().await?)
    }

    /// Delivers one event to `route`. A gRPC error is a retry, except
    /// UNIMPLEMENTED, which drops (Dapr's rule); over HTTP the app's
    /// status and `{"status"}` answer decide, as in daprd.
    pub async fn deliver(&self, event: &TopicEvent, route: &str) -> Result<Outcome, CallbackError> {
        let _place = self.place().await;
        let answer = match self.client.clone() {
            Client::Layotto(mut client) => client
                .on_topic_event(self.request(layotto_event(event)))
                .await
                .map(|r| match r.into_inner().status() {
                    layotto::topic_event_response::TopicEventResponseStatus::Success => Outcome::Success,
                    layotto::topic_event_response::TopicEventResponseStatus::Retry => Outcome::Retry,
                    layotto::topic_event_response::TopicEventResponseStatus::Drop => Outcome::Drop,
                }),
            Client::Dapr(mut client, _) => {
                client
                    .on_topic_event(self.request(dapr_event(event, route)))
                    .await
                    .map(|r| {
                        // An unknown status is a retry, as in Dapr.
                        match dapr::topic_event_response::TopicEventResponseStatus::try_from(r.into_inner().status) {
                            Ok(dapr::topic_event_response::TopicEventResponseStatus::Success) => Outcome::Success,
                            Ok(dapr::topic_event_response::TopicEventResponseStatus::Drop) => Outcome::Drop,
                            _ => Outcome::Retry,
                        }
                    })
            }
            Client::Http { client, base } => return self.http_deliver(&client, &base, event, route).await,
        };
        match answer {
            Err(status) if status.code() == Code::Unimplemented => Ok(Outcome::Drop),
            other => Ok(other?),
        }
    }

    async fn http_deliver(
        &self,
        client: &reqwest::Client,
        base: &str,
        event: &TopicEvent,
        route: &str,
    ) -> Result<Outcome, CallbackError> {
        let path = if route.starts_with('/') {
            route.to_owned()
        } else {
            format!("/{route}")
        };
        let body = serde_json::to_vec(&cloudevents::to_json(event)).map_err(|e| CallbackError(e.to_string()))?;
        let mut request = self.http(client.post(format!("{base}{path}")));
        // Broker metadata travels as headers, as daprd sends it.
        for (key, value) in &event.metadata {
            let lower = key.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "content-length" | "content-type" | "host" | "transfer-encoding" | TOKEN_HEADER
            ) {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(key.as_bytes()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                request = request.header(name, value);
            }
        }
        let response = request
            .header("pubsubName", event.pubsub_name.as_str())
            .header("content-type", CLOUDEVENT_CONTENT_TYPE)
            .body(body)
            .send()
            .await?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Outcome::Drop);
        }
        if !status.is_success() {
            return Err(CallbackError(format!("the app answered {status}")));
        }
        let body = response.bytes().await.unwrap_or_default();
        Ok(http_outcome(&body))
    }

    /// The connection to a gRPC app (`None` for an HTTP app), for proxied
    /// gRPC calls; `max_concurrency` is the caller's to take.
    pub fn grpc_channel(&self) -> Option<Channel> {
        self.grpc.clone()
    }

    /// A place under `app.max_concurrency`, held for as long as the
    /// returned permit lives.
    pub async fn take_place(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.place().await
    }

    /// Calls a method of the app: over HTTP the method is the path, with
    /// the verb (POST when none), query string and headers; over gRPC it is
    /// Dapr's `AppCallback.OnInvoke`. The app's answer comes back as it
    /// was, error statuses included; only a failure to reach the app is an
    /// error.
    pub async fn invoke(&self, req: &InvokeRequest) -> Result<InvokeResponse, CallbackError> {
        let _place = self.place().await;
        let timeout = req.timeout.unwrap_or(CALL_TIMEOUT);
        match &self.client {
            Client::Http { client, base } => self.http_invoke(client, base, req, timeout).await,
            _ => {
                let Some(channel) = self.grpc.clone() else {
                    return Err(CallbackError("the app has no gRPC channel".into()));
                };
                let mut client = DaprClient::new(channel)
                    .max_decoding_message_size(crate::api::grpc::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(crate::api::grpc::MAX_MESSAGE_BYTES);
                let message = crate::proto::dapr::common::v1::InvokeRequest {
                    method: req.method.clone(),
                    data: Some(prost_types::Any {
                        type_url: req.type_url.clone(),
                        value: req.data.clone(),
                    }),
                    content_type: req.content_type.clone(),
                    http_extension: Some(crate::proto::dapr::common::v1::HttpExtension {
                        verb: dapr_verb(&req.verb),
                        querystring: req.query.clone(),
                    }),
                };
                let mut request = self.request(message);
                request.set_timeout(timeout);
                grpc_metadata(request.metadata_mut(), &req.metadata);
                match client.on_invoke(request).await {
                    Ok(response) => {
                        let headers = metadata_pairs(response.metadata());
                        let answer = response.into_inner();
                        let data = answer.data.unwrap_or_default();
                        Ok(InvokeResponse {
                            code: 0,
                            headers,
                            data: data.value,
                            type_url: data.type_url,
                            content_type: answer.content_type,
                            ..Default::default()
                        })
                    }
                    Err(status) if is_transport_failure(&status) => Err(status.into()),
                    Err(status) => Ok(InvokeResponse {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                        trailers: metadata_pairs(status.metadata()),
                        ..Default::default()
                    }),
                }
            }
        }
    }

    async fn http_invoke(
        &self,
        client: &reqwest::Client,
        base: &str,
        req: &InvokeRequest,
        timeout: Duration,
    ) -> Result<InvokeResponse, CallbackError> {
        let verb = if req.verb.is_empty() { "POST" } else { req.verb.as_str() };
        let method = reqwest::Method::from_bytes(verb.as_bytes())
            .map_err(|_| CallbackError(format!("'{verb}' is not an HTTP verb")))?;
        let mut url = format!("{base}/{}", req.method);
        if !req.query.is_empty() {
            url.push('?');
            url.push_str(&req.query);
        }
        let mut request = self.http(client.request(method, url)).timeout(timeout);
        for (key, value) in &req.metadata {
            let Some(name) = http_header_name(key) else { continue };
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                request = request.header(name, value);
            }
        }
        if !req.content_type.is_empty() {
            request = request.header("content-type", req.content_type.as_str());
        }
        let response = request.body(req.data.clone()).send().await?;
        let code = i32::from(response.status().as_u16());
        let mut content_type = String::new();
        let mut headers = Vec::new();
        for (name, value) in response.headers() {
            let Ok(value) = value.to_str() else { continue };
            match name.as_str() {
                "content-type" => content_type = value.to_owned(),
                "content-length" | "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "date" => {}
                other => headers.push((other.to_owned(), value.to_owned())),
            }
        }
        let data = response.bytes().await?.to_vec();
        Ok(InvokeResponse {
            code,
            headers,
            data,
            content_type,
            ..Default::default()
        })
    }

    /// Whether the app takes the input binding `name`: over HTTP, daprd's
    /// probe, `OPTIONS /<route>` answered 2xx or 405; over Dapr's gRPC,
    /// its `ListInputBindings` names it. A Layotto app has no input
    /// bindings. An app that cannot be reached is an error (ask again).
    pub async fn takes_binding(&self, name: &str, route: &str) -> Result<bool, CallbackError> {
        match self.client.clone() {
            Client::Http { client, base } => {
                let path = route.trim_start_matches('/');
                let response = self
                    .http(client.request(reqwest::Method::OPTIONS, format!("{base}/{path}")))
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await?;
                let status = response.status();
                Ok(status.is_success() || status == reqwest::StatusCode::METHOD_NOT_ALLOWED)
            }
            Client::Dapr(mut client, _) => match client.list_input_bindings(self.request(())).await {
                Ok(list) => Ok(list.into_inner().bindings.iter().any(|b| b == name)),
                Err(status) if status.code() == Code::Unimplemented => Ok(false),
                Err(status) => Err(status.into()),
            },
            Client::Layotto(_) => Ok(false),
        }
    }

    /// Delivers one input binding event; Ok once the app accepted it (HTTP
    /// 2xx, or a gRPC answer without error). Over HTTP: `POST /<route>`
    /// with the data as the body and the metadata as headers, as daprd.
    pub async fn binding_event(
        &self,
        name: &str,
        route: &str,
        data: &[u8],
        metadata: &std::collections::HashMap<String, String>,
    ) -> Result<(), CallbackError> {
        let _place = self.place().await;
        match self.client.clone() {
            Client::Http { client, base } => {
                let path = route.trim_start_matches('/');
                let mut request = self
                    .http(client.post(format!("{base}/{path}")))
                    .header("content-type", "application/json")
                    .body(data.to_vec());
                for (key, value) in metadata {
                    let lower = key.to_ascii_lowercase();
                    let Some(header) = http_header_name(&lower) else {
                        continue;
                    };
                    if let (Ok(name), Ok(value)) = (
                        reqwest::header::HeaderName::from_bytes(header.as_bytes()),
                        reqwest::header::HeaderValue::from_str(value),
                    ) {
                        request = request.header(name, value);
                    }
                }
                let response = request.send().await?;
                let status = response.status();
                if status.is_success() {
                    Ok(())
                } else {
                    let body = response.text().await.unwrap_or_default();
                    Err(CallbackError(format!(
                        "fails to send binding event to http app channel, status code: {} body: {body}",
                        status.as_u16()
                    )))
                }
            }
            Client::Dapr(mut client, _) => client
                .on_binding_event(self.request(dapr::BindingEventRequest {
                    name: name.to_owned(),
                    data: data.to_vec(),
                    metadata: metadata.clone(),
                }))
                .await
                .map(drop)
                .map_err(CallbackError::from),
            Client::Layotto(_) => Err(CallbackError("a Layotto app takes no input bindings".into())),
        }
    }

    /// Whether this is Dapr's HTTP app channel.
    pub fn is_http(&self) -> bool {
        matches!(self.client, Client::Http { .. })
    }

    /// POSTs a configuration update to an HTTP app at
    /// `/configuration/{store}/{key}`; the app must answer 200.
    pub async fn configuration_update(&self, store: &str, key: &str, body: &Value) -> Result<(), CallbackError> {
        let Client::Http { client, base } = &self.client else {
            return Err(CallbackError("configuration updates go to HTTP apps only".into()));
        };
        let _place = self.place().await;
        let response = self
            .http(client.post(format!("{base}/configuration/{store}/{key}")))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::OK {
            Ok(())
        } else {
            Err(CallbackError(format!("the app answered {}", response.status())))
        }
    }

    /// One health probe: `path` over HTTP, `AppCallbackHealthCheck` over
    /// Dapr's gRPC, `ListTopicSubscriptions` for a Layotto app (it has no
    /// health service).
    pub async fn probe(&self, path: &str, timeout: Duration) -> bool {
        let probe = async {
            match self.client.clone() {
                Client::Http { client, base } => client
                    .get(format!("{base}{path}"))
                    .timeout(timeout)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                Client::Dapr(_, mut health) => health.health_check(()).await.is_ok(),
                Client::Layotto(mut client) => client.list_topic_subscriptions(()).await.is_ok_or_unimplemented(),
            }
        };
        tokio::time::timeout(timeout, probe).await.unwrap_or(false)
    }
}

/// The verb as Dapr's enum; an unknown one is sent as POST, as daprd
/// calls gRPC apps.
fn dapr_verb(verb: &str) -> i32 {
    use crate::proto::dapr::common::v1::http_extension::Verb;
    match super::blocks::invoke::verb_number(verb) {
        n if n == Verb::None as i32 && !verb.is_empty() => Verb::Post as i32,
        n => n,
    }
}

/// Whether a gRPC call failed to reach the app at all.
fn is_transport_failure(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable && status.metadata().is_empty() && status.message().contains("transport")
        || status.code() == Code::Unavailable && status.message().contains("connect")
}

/// Headers never sent to an HTTP app: the transport's own, binary values,
/// and what is set separately (daprd's `InternalMetadataToHTTPHeader`).
fn http_header_name(key: &str) -> Option<std::borrow::Cow<'_, str>> {
    if key.ends_with("-bin")
        || matches!(
            key,
            "content-type"
                | "content-length"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "transfer-encoding"
                | "upgrade"
                | "te"
                | "host"
                | "destination-app-id"
                | TOKEN_HEADER
        )
    {
        return None;
    }
    if key.starts_with(':') || key.starts_with("grpc-") {
        return Some(format!("dapr-{}", key.trim_start_matches(':')).into());
    }
    Some(key.into())
}

/// HTTP headers that gRPC apps get prefixed with `dapr-` (daprd's
/// `isPermanentHTTPHeader` list).
const PERMANENT_HTTP_HEADERS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "authorization",
    "cache-control",
    "cookie",
    "date",
    "expect",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "max-forwards",
    "origin",
    "pragma",
    "referer",
    "user-agent",
    "via",
    "warning",
];

/// Writes invocation metadata as a gRPC app's request metadata.
fn grpc_metadata(map: &mut tonic::metadata::MetadataMap, pairs: &[(String, String)]) {
    use tonic::metadata::{BinaryMetadataValue, MetadataKey, MetadataValue};
    for (key, value) in pairs {
        if key == "grpc-trace-bin" {
            use base64::Engine;
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(value.trim_end_matches('='))
                && let Ok(k) = MetadataKey::from_bytes(key.as_bytes())
            {
                map.append_bin(k, BinaryMetadataValue::from_bytes(&bytes));
            }
            continue;
        }
        if key.ends_with("-bin")
            || key.starts_with("grpc-")
            || key.starts_with(':')
            || matches!(
                key.as_str(),
                "content-type" | "content-length" | "te" | "connection" | TOKEN_HEADER
            )
        {
            continue;
        }
        let name = if PERMANENT_HTTP_HEADERS.contains(&key.as_str()) {
            format!("dapr-{key}")
        } else {
            key.clone()
        };
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(name.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            map.append(k, v);
        }
    }
}

/// A gRPC answer's ASCII metadata as pairs.
fn metadata_pairs(map: &tonic::metadata::MetadataMap) -> Vec<(String, String)> {
    map.iter()
        .filter_map(|entry| match entry {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                let key = k.as_str();
                if key.starts_with("grpc-") || key == "content-type" || key == "date" {
                    return None;
                }
                v.to_str().ok().map(|v| (key.to_owned(), v.to_owned()))
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}

trait OkOrUnimplemented {
    fn is_ok_or_unimplemented(&self) -> bool;
}

impl<T> OkOrUnimplemented for Result<T, tonic::Status> {
    fn is_ok_or_unimplemented(&self) -> bool {
        match self {
            Ok(_) => true,
            Err(status) => status.code() == Code::Unimplemented,
        }
    }
}

/// daprd's reading of a 2xx answer: no body, a body that is not JSON, or
/// no `status` is SUCCESS; `SUCCESS`, `RETRY`, `DROP` (exactly so) say
/// what they mean; any other status is a retry.
pub(crate) fn http_outcome(body: &[u8]) -> Outcome {
    let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(body) else {
        return Outcome::Success;
    };
    match answer.get("status") {
        None | Some(Value::Null) => Outcome::Success,
        Some(Value::String(s)) => match s.as_str() {
            "" | "SUCCESS" => Outcome::Success,
            "DROP" => Outcome::Drop,
            _ => Outcome::Retry,
        },
        Some(_) => Outcome::Retry,
    }
}

/// The subscriptions in a `GET /dapr/subscribe` answer: a JSON array (an
/// empty body is none).
pub(crate) fn parse_subscribe(body: &[u8]) -> Result<Vec<AppSubscription>, CallbackError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let listed: Value = serde_json::from_slice(body)
        .map_err(|e| CallbackError(format!("GET /dapr/subscribe answered a body that is not JSON: {e}")))?;
    let Value::Array(items) = listed else {
        return Err(CallbackError("GET /dapr/subscribe must answer a JSON array".into()));
    };
    Ok(items
        .iter()
        .filter_map(Value::as_object)
        .filter_map(from_json)
        .collect())
}

/// One element of `/dapr/subscribe`.
fn from_json(item: &serde_json::Map<String, Value>) -> Option<AppSubscription> {
    let mut routes = Routes::default();
    if let Some(Value::Object(r)) = field(item, "routes") {
        routes.default = text(r, "default");
        if let Some(Value::Array(rules)) = field(r, "rules") {
            routes.rules = rules
                .iter()
                .filter_map(Value::as_object)
                .map(|rule| (text(rule, "match"), text(rule, "path")))
                .collect();
        }
    }
    if routes.default.is_empty() {
        routes.default = text(item, "route");
    }
    // Paths may come without their leading `/`; daprd adds it.
    for path in routes.rules.iter_mut().map(|(_, p)| p).chain([&mut routes.default]) {
        if !path.is_empty() && !path.starts_with('/') {
            path.insert(0, '/');
        }
    }
    let metadata = match field(item, "metadata") {
        Some(Value::Object(m)) => {
            let mut pairs: Vec<(String, String)> = m
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect();
            pairs.sort();
            pairs
        }
        _ => Vec::new(),
    };
    let sub = AppSubscription {
        pubsub_name: text(item, "pubsubname"),
        topic: text(item, "topic"),
        metadata,
        routes,
        dead_letter_topic: Some(text(item, "deadLetterTopic")).filter(|t| !t.is_empty()),
        declarative: false,
    };
    if sub.routes.is_empty() {
        warn!(pubsub = %sub.pubsub_name, topic = %sub.topic, "The app listed a subscription without a route; ignoring it");
        return None;
    }
    checked(sub)
}

/// Leaves out a subscription the app listed with a bad routing rule (daprd
/// refuses the whole list).
fn checked(sub: AppSubscription) -> Option<AppSubscription> {
    if sub.pubsub_name.is_empty() || sub.topic.is_empty() {
        warn!("The app listed a subscription without pubsubname or topic; ignoring it");
        return None;
    }
    for (expression, _) in &sub.routes.rules {
        if let Err(error) = compile_rule(expression) {
            warn!(pubsub = %sub.pubsub_name, topic = %sub.topic, %error, "The app listed a routing rule that does not compile; ignoring the subscription");
            return None;
        }
    }
    Some(sub)
}

fn sorted(map: HashMap<String, String>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = map.into_iter().collect();
    pairs.sort();
    pairs
}

pub fn layotto_event(e: &TopicEvent) -> layotto::TopicEventRequest {
    layotto::TopicEventRequest {
        id: e.id.clone(),
        source: e.source.clone(),
        r#type: e.event_type.clone(),
        spec_version: e.spec_version.clone(),
        data_content_type: e.data_content_type.clone(),
        topic: e.topic.clone(),
        data: e.data.clone(),
        pubsub_name: e.pubsub_name.clone(),
        metadata: e.metadata.clone(),
    }
}

pub fn dapr_event(e: &TopicEvent, route: &str) -> dapr::TopicEventRequest {
    dapr::TopicEventRequest {
        id: e.id.clone(),
        source: e.source.clone(),
        r#type: e.event_type.clone(),
        spec_version: e.spec_version.clone(),
        data_content_type: e.data_content_type.clone(),
        data: e.data.clone(),
        topic: e.topic.clone(),
        pubsub_name: e.pubsub_name.clone(),
        path: route.to_owned(),
        extensions: Some(prost_types::Struct {
            fields: e.extensions.iter().map(|(k, v)| (k.clone(), to_prost(v))).collect(),
        }),
    }
}

fn to_prost(v: &serde_json::Value) -> prost_types::Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_prost).collect(),
        }),
        J::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), to_prost(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_are_read_as_daprd_reads_them() {
        for (body, outcome) in [
            ("", Outcome::Success),
            ("not json", Outcome::Success),
            ("{}", Outcome::Success),
            (r#"{"status":""}"#, Outcome::Success),
            (r#"{"status":"SUCCESS"}"#, Outcome::Success),
            (r#"{"status":"RETRY"}"#, Outcome::Retry),
            (r#"{"status":"DROP"}"#, Outcome::Drop),
            (r#"{"status":"success"}"#, Outcome::Retry),
            (r#"{"status":1}"#, Outcome::Retry),
        ] {
            assert_eq!(http_outcome(body.as_bytes()), outcome, "{body}");
        }
    }

    #[test]
    fn dapr_subscribe_entries_are_read_without_regard_to_case() {
        let listed: Value = serde_json::from_str(
            r#"[
                {"pubsubName": "ps", "Topic": "a", "route": "orders", "deadLetterTopic": "dead", "metadata": {"rawPayload": "true"}},
                {"pubsubname": "ps", "topic": "b", "routes": {"rules": [{"match": "event.type == \"x\"", "path": "x"}], "default": "/d"}},
                {"pubsubname": "ps", "topic": "no-route"},
                {"pubsubname": "ps", "topic": "bad", "routes": {"rules": [{"match": "event.type ==", "path": "/x"}]}}
            ]"#,
        )
        .expect("json");
        let subs: Vec<AppSubscription> = listed
            .as_array()
            .expect("array")
            .iter()
            .filter_map(Value::as_object)
            .filter_map(from_json)
            .collect();
        assert_eq!(subs.len(), 2, "{subs:?}");
        assert_eq!(
            (subs[0].topic.as_str(), subs[0].routes.default.as_str()),
            ("a", "/orders")
        );
        assert_eq!(subs[0].dead_letter_topic.as_deref(), Some("dead"));
        assert_eq!(subs[0].metadata, [("rawPayload".to_owned(), "true".to_owned())]);
        assert_eq!(
            subs[1].routes.rules,
            [("event.type == \"x\"".to_owned(), "/x".to_owned())]
        );
        assert_eq!(subs[1].routes.default, "/d");
    }
}
