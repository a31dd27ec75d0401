//! The actuator: Layotto's health and info endpoints, and Prometheus
//! `/metrics`, on one HTTP listener.
//!
//! - `/actuator/health/readiness`: `runtime_startup` plus every component,
//!   keyed `"<kind>/<name>"`; 200 when all are UP, 503 otherwise.
//! - `/actuator/health/liveness`: `runtime_startup` plus `supervisor` (the
//!   actor system answers). Backend health is left out on purpose:
//!   restarting the sidecar does not fix a backend, and the supervisor is
//!   already reconnecting.
//! - `/actuator/info`: name, version and build time.
//!
//! As in Layotto, the HTTP method is not checked.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use super::ApiContext;
use super::conn::ConnLimits;
use crate::supervisor::{Health, Snapshot};

/// How long the liveness probe waits for the actor system.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);

pub fn router(ctx: Arc<ApiContext>) -> Router {
    Router::new()
        .route("/actuator/health/liveness", any(liveness))
        .route("/actuator/health/readiness", any(readiness))
        .route("/actuator/info", any(info))
        .route("/actuator/logger", any(logger))
        // Layotto answers any other health endpoint 500 `{}`.
        .route("/actuator/health", any(|| async { other_health() }))
        .route("/actuator/health/{other}", any(|| async { other_health() }))
        .route("/metrics", any(metrics))
        .with_state(ctx)
}

/// The metrics listener of its own (`server.metrics`, daprd's
/// `--metrics-port`): the Prometheus text at any path.
pub async fn serve_metrics(
    ctx: Arc<ApiContext>,
    listener: TcpListener,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new().fallback(any(metrics)).with_state(ctx);
    super::conn::serve_http(listener, limits, router, shutdown).await
}

pub async fn serve(
    ctx: Arc<ApiContext>,
    listener: TcpListener,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    super::conn::serve_http(listener, limits, router(ctx), shutdown).await
}

async fn readiness(State(ctx): State<Arc<ApiContext>>) -> Response {
    let mut components = Map::new();
    components.insert("runtime_startup".into(), runtime_entry(&ctx.status.runtime()));
    if let Some(healthy) = *ctx.app_health.borrow() {
        let (status, reason) = if healthy {
            ("UP", "")
        } else {
            ("DOWN", "the app's health checks fail; deliveries to it are paused")
        };
        components.insert(
            "app".into(),
            json!({ "status": status, "details": { "reason": reason } }),
        );
    }
    for (name, note) in ctx.status.notes() {
        components.insert(
            name.into(),
            json!({ "status": "UP", "details": { "reason": note.reason, "since": rfc3339(note.since) } }),
        );
    }
    for (id, snapshot) in ctx.status.components() {
        components.insert(
            id.key(),
            json!({
                "status": snapshot.health.as_str(),
                "details": {
                    "type": id.type_name,
                    "restarts": snapshot.restarts,
                    "reason": snapshot.reason,
                    "since": rfc3339(snapshot.since),
                },
            }),
        );
    }
    health_response(components)
}

async fn liveness(State(ctx): State<Arc<ApiContext>>) -> Response {
    let mut components = Map::new();
    components.insert("runtime_startup".into(), runtime_entry(&ctx.status.runtime()));
    let alive = ctx.supervisor.alive(LIVENESS_TIMEOUT).await;
    let supervisor = if alive {
        json!({ "status": "UP", "details": { "reason": "" } })
    } else {
        json!({ "status": "DOWN", "details": { "reason": "the actor system does not answer" } })
    };
    components.insert("supervisor".into(), supervisor);
    health_response(components)
}

fn runtime_entry(snapshot: &Snapshot) -> Value {
    json!({
        "status": snapshot.health.as_str(),
        "details": { "reason": snapshot.reason, "since": rfc3339(snapshot.since) },
    })
}

/// Layotto's aggregation: DOWN beats INIT beats UP.
fn health_response(components: Map<String, Value>) -> Response {
    let worst = components
        .values()
        .map(|c| match c["status"].as_str() {
            Some("UP") => Health::Up,
            Some("INIT") => Health::Init,
            _ => Health::Down,
        })
        .max()
        .unwrap_or(Health::Up);
    let code = if worst == Health::Up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "status": worst.as_str(), "components": components });
    (code, axum::Json(body)).into_response()
}

async fn info() -> Response {
    axum::Json(json!({
        "app": {
            "name": "Layotto",
            "runtime": "layotto-rs",
            "version": env!("CARGO_PKG_VERSION"),
            "compiled": env!("LAYOTTO_BUILD_TIME"),
        }
    }))
    .into_response()
}

fn other_health() -> Response {
    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({}))).into_response()
}

/// Layotto's `/actuator/logger`: `{"component":"lock/redis","level":"debug"}`
/// sets that component's log level from now on and answers `{}`; a
/// missing or bad body is 500.
async fn logger(body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Request {
        component: String,
        level: String,
    }
    let outcome = serde_json::from_slice::<Request>(&body)
        .map_err(|e| format!("the body must be {{\"component\": \"<kind>/<name>\", \"level\": \"debug\"}}: {e}"))
        .and_then(|r| crate::telemetry::set_component_level(&r.component, &r.level).map_err(|e| e.to_string()));
    match outcome {
        Ok(()) => axum::Json(json!({})).into_response(),
        Err(message) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({ "error": message })),
        )
            .into_response(),
    }
}

async fn metrics(State(ctx): State<Arc<ApiContext>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        ctx.metrics.render(),
    )
        .into_response()
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
