//! Dapr's HTTP API: the State API (`state`, over the same block service as
//! every other front end; `errors` maps block errors to daprd's status
//! codes and error JSON), and the health and metadata endpoints Dapr SDKs
//! call before they use the gRPC API (the Python SDK waits on
//! `/v1.0/healthz/outbound` in every client constructor).
//!
//! - `GET /v1.0/healthz`: 204 when ready (runtime serving, every component
//!   UP), else 500 with Dapr's `ERR_HEALTH_NOT_READY` naming what is not.
//! - `GET /v1.0/healthz/outbound`: 204 once the runtime serves, whatever
//!   its components' health, as Dapr's outbound check does.
//! - `GET /v1.0/metadata`: the app id, version, components and extended
//!   attributes (`PUT /v1.0/metadata/{key}` sets one); `POST
//!   /v1.0/shutdown` stops the sidecar gracefully.
//! - State (`state`), publish, secrets and lock/unlock (`blocks`), each a
//!   thin adapter over its block service; errors become daprd's status
//!   codes and JSON in `errors`.

use std::future::Future;
use std::sync::Arc;

mod bindings;
mod blocks;
mod errors;
mod invoke;
mod state;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;
use tokio::net::TcpListener;

use super::ApiContext;
use super::blocks::metadata;
use super::conn::ConnLimits;
use crate::supervisor::Health;

/// Dapr's HTTP API; request bodies above `max_body_bytes` are refused
/// (413) before any handler reads them.
pub fn router(ctx: Arc<ApiContext>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(outbound))
        .route("/v1.0/metadata", get(metadata))
        .route("/v1.0/metadata/{key}", put(set_metadata))
        .route("/v1.0/shutdown", post(shutdown))
        .route("/v1.0/state/{store}", post(state::save).put(state::save))
        .route("/v1.0/state/{store}/bulk", post(state::bulk).put(state::bulk))
        .route(
            "/v1.0/state/{store}/transaction",
            post(state::transaction).put(state::transaction),
        )
        .route("/v1.0/state/{store}/{key}", get(state::get).delete(state::delete))
        .route("/v1.0-alpha1/state/{store}/query", post(state::query).put(state::query))
        .route(
            "/v1.0/publish/{pubsub}/{*topic}",
            post(blocks::publish).put(blocks::publish),
        )
        .route(
            "/v1.0/publish/bulk/{pubsub}/{*topic}",
            post(blocks::bulk_publish).put(blocks::bulk_publish),
        )
        .route(
            "/v1.0-alpha1/publish/bulk/{pubsub}/{*topic}",
            post(blocks::bulk_publish).put(blocks::bulk_publish),
        )
        .route("/v1.0/secrets/{store}/{key}", get(blocks::secret))
        .route("/v1.0/configuration/{store}", get(blocks::get_configuration))
        .route("/v1.0-alpha1/configuration/{store}", get(blocks::get_configuration))
        .route(
            "/v1.0/configuration/{store}/subscribe",
            get(blocks::subscribe_configuration),
        )
        .route(
            "/v1.0-alpha1/configuration/{store}/subscribe",
            get(blocks::subscribe_configuration),
        )
        .route(
            "/v1.0/configuration/{store}/{id}/unsubscribe",
            get(blocks::unsubscribe_configuration),
        )
        .route(
            "/v1.0-alpha1/configuration/{store}/{id}/unsubscribe",
            get(blocks::unsubscribe_configuration),
        )
        .route("/v1.0-alpha1/lock/{store}", post(blocks::try_lock))
        .route("/v1.0-alpha1/unlock/{store}", post(blocks::unlock))
        .route("/v1.0/invoke/{*rest}", axum::routing::any(invoke::invoke))
        .route("/v1.0/bindings/{name}", post(bindings::invoke).put(bindings::invoke))
        // As in daprd, every other path and verb lands in invocation,
        // which needs a dapr-app-id header there.
        .fallback(invoke::invoke)
        .method_not_allowed_fallback(invoke::invoke)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), require_token))
        .layer(axum::middleware::from_fn_with_state(ctx.cut_off.clone(), guard))
        .with_state(ctx)
}

/// With an API token configured, a call without it is refused as daprd
/// refuses it: 401, `text/plain`, `invalid api token`. The health
/// endpoints are exempt.
async fn require_token(
    State(ctx): State<Arc<ApiContext>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &ctx.api_token {
        let path = request.uri().path();
        let health = path == "/v1.0/healthz" || path == "/v1.0/healthz/outbound";
        let given = request
            .headers()
            .get(crate::api::auth::TOKEN_HEADER)
            .map(|v| v.as_bytes());
        if !health && !token.accepts(given) {
            return (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::CONTENT_TYPE, "text/plain")],
                "invalid api token\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Around every call: a call still running when the shutdown's grace
/// period ends is answered 503 "the sidecar is stopping" (its handler
/// dropped before any component stops), never a partial answer; a handler
/// that panics is answered 500 instead of dropping its connection.
async fn guard(
    State(mut cut_off): State<tokio::sync::watch::Receiver<bool>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use futures::FutureExt;
    let path = request.uri().path().to_owned();
    let handled = std::panic::AssertUnwindSafe(next.run(request)).catch_unwind();
    tokio::select! {
        biased;
        handled = handled => handled.unwrap_or_else(|_panic| {
            tracing::error!(path = %crate::api::blocks::quote(&path), "A Dapr HTTP handler panicked");
            errors::DaprError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_INTERNAL",
                "the sidecar failed while handling this call",
            )
            .into_response()
        }),
        () = super::cut(&mut cut_off) => errors::DaprError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ERR_SIDECAR_STOPPING",
            super::STOPPING,
        )
        .into_response(),
    }
}

pub async fn serve(
    ctx: Arc<ApiContext>,
    listener: TcpListener,
    limits: ConnLimits,
    max_body_bytes: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    super::conn::serve_http(listener, limits, router(ctx, max_body_bytes), shutdown).await
}

async fn healthz(State(ctx): State<Arc<ApiContext>>) -> Response {
    let mut not_ready: Vec<String> = Vec::new();
    let runtime = ctx.status.runtime();
    if runtime.health != Health::Up {
        not_ready.push(format!("runtime: {}", runtime.reason));
    }
    for (id, snapshot) in ctx.status.components() {
        if snapshot.health != Health::Up {
            not_ready.push(format!("{}: {}", id.key(), snapshot.reason));
        }
    }
    if not_ready.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let body = json!({
        "errorCode": "ERR_HEALTH_NOT_READY",
        "message": format!("dapr is not ready: {}", not_ready.join("; ")),
    });
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}

async fn outbound(State(ctx): State<Arc<ApiContext>>) -> Response {
    if ctx.status.runtime().health == Health::Up {
        return StatusCode::NO_CONTENT.into_response();
    }
    let body = json!({
        "errorCode": "ERR_OUTBOUND_HEALTH_NOT_READY",
        "message": "dapr outbound is not ready",
    });
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}

async fn metadata(State(ctx): State<Arc<ApiContext>>) -> Response {
    let metadata = metadata::get(&ctx);
    let components: Vec<_> = metadata
        .components
        .into_iter()
        .map(|c| {
            let mut component = json!({ "name": c.name, "type": c.dapr_type, "version": c.version });
            if !c.capabilities.is_empty() {
                component["capabilities"] = json!(c.capabilities);
            }
            component
        })
        .collect();
    let mut extended = metadata.extended;
    extended.insert("daprRuntimeVersion".into(), metadata.runtime_version.clone());
    let mut body = serde_json::Map::new();
    if !metadata.app_id.is_empty() {
        body.insert("id".into(), json!(metadata.app_id));
    }
    body.insert("runtimeVersion".into(), json!(metadata.runtime_version));
    if !metadata.enabled_features.is_empty() {
        body.insert("enabledFeatures".into(), json!(metadata.enabled_features));
    }
    if !components.is_empty() {
        body.insert("components".into(), json!(components));
    }
    body.insert("extended".into(), json!(extended));
    let subscriptions: Vec<_> = metadata
        .subscriptions
        .iter()
        .map(|s| {
            let mut sub = json!({ "pubsubname": s.pubsub_name, "topic": s.topic });
            if !s.metadata.is_empty() {
                sub["metadata"] = json!(s.metadata);
            }
            if !s.rules.is_empty() {
                let rules: Vec<_> = s
                    .rules
                    .iter()
                    .map(|(m, p)| {
                        let mut rule = serde_json::Map::new();
                        if !m.is_empty() {
                            rule.insert("match".into(), json!(m));
                        }
                        if !p.is_empty() {
                            rule.insert("path".into(), json!(p));
                        }
                        serde_json::Value::Object(rule)
                    })
                    .collect();
                sub["rules"] = json!(rules);
            }
            sub["deadLetterTopic"] = json!(s.dead_letter_topic);
            sub["type"] = json!(s.kind.as_str());
            sub
        })
        .collect();
    if !subscriptions.is_empty() {
        body.insert("subscriptions".into(), json!(subscriptions));
    }
    if let Some(app) = &metadata.app_connection {
        let mut props = json!({ "port": app.port, "protocol": app.protocol, "channelAddress": app.channel_address });
        if app.max_concurrency > 0 {
            props["maxConcurrency"] = json!(app.max_concurrency);
        }
        if let Some((path, interval, timeout, threshold)) = &app.health {
            let mut health =
                json!({ "healthProbeInterval": interval, "healthProbeTimeout": timeout, "healthThreshold": threshold });
            if !path.is_empty() {
                health["healthCheckPath"] = json!(path);
            }
            props["health"] = health;
        }
        body.insert("appConnectionProperties".into(), props);
    }
    body.insert(
        "actorRuntime".into(),
        json!({
            "runtimeStatus": "DISABLED",
            "hostReady": false,
            "placement": "placement: disconnected",
        }),
    );
    axum::Json(serde_json::Value::Object(body)).into_response()
}

/// `PUT /v1.0/metadata/{key}`: the raw body becomes an extended attribute.
async fn set_metadata(State(ctx): State<Arc<ApiContext>>, Path(key): Path<String>, body: Bytes) -> Response {
    metadata::set(&ctx, key, String::from_utf8_lossy(&body).into_owned());
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /v1.0/shutdown`: 204 at once, then a graceful shutdown.
async fn shutdown(State(ctx): State<Arc<ApiContext>>) -> Response {
    metadata::shutdown(&ctx);
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::routing::get;
    use tokio::sync::watch;
    use tower::ServiceExt;

    use super::*;

    fn guarded(cut_off: watch::Receiver<bool>) -> Router {
        Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "done"
                }),
            )
            .route(
                "/bug",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("a handler bug");
                    }
                    "unreachable"
                }),
            )
            .layer(axum::middleware::from_fn_with_state(cut_off, guard))
    }

    fn request(path: &str) -> axum::http::Request<Body> {
        axum::http::Request::get(path).body(Body::empty()).expect("request")
    }

    async fn error_code(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("error json");
        (status, json["errorCode"].as_str().unwrap_or_default().to_owned())
    }

    #[tokio::test]
    async fn a_call_running_at_the_cut_off_is_answered_503() {
        let (cut, cut_off) = watch::channel(false);
        let call = tokio::spawn(guarded(cut_off).oneshot(request("/slow")));
        tokio::task::yield_now().await;
        cut.send(true).expect("the guard listens");
        let response = call.await.expect("the call ends").expect("infallible");
        assert_eq!(
            error_code(response).await,
            (StatusCode::SERVICE_UNAVAILABLE, "ERR_SIDECAR_STOPPING".to_owned())
        );
    }

    #[tokio::test]
    async fn a_handler_that_panics_is_answered_500() {
        let (_cut, cut_off) = watch::channel(false);
        let response = guarded(cut_off).oneshot(request("/bug")).await.expect("infallible");
        assert_eq!(
            error_code(response).await,
            (StatusCode::INTERNAL_SERVER_ERROR, "ERR_INTERNAL".to_owned())
        );
    }
}
