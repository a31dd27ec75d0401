//! The WASM front ends: Layotto's function ingress and its admin API.
//!
//! **Ingress** (`server.wasm`): any method and path; the `id` header picks
//! the function; a request without a body passes its query string as the
//! body (`curl -H 'id: id_1' 'localhost:2045?name=book1'`); the answer is
//! 200 with what the guest wrote to the response body (as
//! `text/plain; charset=utf-8` unless the guest set a content type) and
//! the headers it set. A missing id is 400, an unknown one 404 naming it, a trap 500, a
//! blown execution budget 504, all instances busy 503; the body of an
//! error is the message.
//!
//! **Admin** (`server.wasm_admin`): `/wasm/install`, `/wasm/uninstall`,
//! `/wasm/update`, any method, a JSON body, as Layotto: 200 with an empty
//! body on success, 500 `{"error":"..."}` on failure, 404 with an empty
//! body for another endpoint.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use super::ApiContext;
use super::blocks::{BlockError, wasm};
use super::conn::ConnLimits;
use crate::components::wasm::FunctionRequest;

pub async fn serve_ingress(
    ctx: Arc<ApiContext>,
    listener: TcpListener,
    limits: ConnLimits,
    max_body_size: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .fallback(any(ingress))
        .layer(DefaultBodyLimit::max(max_body_size))
        .with_state(ctx);
    super::conn::serve_http(listener, limits, router, shutdown).await
}

pub async fn serve_admin(
    ctx: Arc<ApiContext>,
    listener: TcpListener,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/wasm/{endpoint}", any(admin))
        .fallback(any(|| async { not_found() }))
        .with_state(ctx);
    super::conn::serve_http(listener, limits, router, shutdown).await
}

async fn ingress(
    State(ctx): State<Arc<ApiContext>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(id) = headers
        .get("id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    else {
        return (
            StatusCode::BAD_REQUEST,
            "the id header is missing: it names the function to run\n",
        )
            .into_response();
    };
    let body = if body.is_empty() {
        query.unwrap_or_default().into_bytes()
    } else {
        body.to_vec()
    };
    let request = FunctionRequest {
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    match wasm::call(&ctx, &id, request).await {
        Ok(answer) => {
            let mut response = answer.body.into_response();
            // Plain text unless the guest says otherwise.
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            for (name, value) in answer.headers {
                if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
        Err(e) => {
            let status = match &e {
                BlockError::NotFound(_) => StatusCode::NOT_FOUND,
                BlockError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
                BlockError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
                BlockError::ResourceExhausted(_) | BlockError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, format!("{e}\n")).into_response()
        }
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/json")], "").into_response()
}

fn failed(message: String) -> Response {
    tracing::warn!(error = %message, "WASM admin request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": message }).to_string(),
    )
        .into_response()
}

async fn admin(State(ctx): State<Arc<ApiContext>>, Path(endpoint): Path<String>, body: Bytes) -> Response {
    if !matches!(endpoint.as_str(), "install" | "uninstall" | "update") {
        return not_found();
    }
    let conf: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(conf)) => conf,
        Ok(_) => return failed("the request body is not a JSON object".into()),
        Err(e) => return failed(format!("invalid request body: {e}")),
    };
    let name = || match conf.get("name") {
        Some(Value::String(name)) => Ok(name.clone()),
        _ => Err("can't get name property".to_owned()),
    };
    let outcome = match endpoint.as_str() {
        "install" => wasm::install(&ctx, &conf).await,
        "uninstall" => match name() {
            Ok(name) => wasm::uninstall(&ctx, &name).await,
            Err(e) => Err(e),
        },
        _ => match (name(), conf.get("instance_num")) {
            (Err(e), _) => Err(e),
            (Ok(_), None) => Err("can't get instance_num property".into()),
            (Ok(name), Some(n)) => match n.as_f64() {
                Some(n) if n >= 1.0 => wasm::update(&ctx, &name, n as usize).await,
                Some(_) => Err("instance_num should be greater than 0".into()),
                None => Err("instance_num must be a number".into()),
            },
        },
    };
    match outcome {
        Ok(()) => {
            tracing::info!(endpoint, "WASM admin request done");
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "").into_response()
        }
        Err(message) => failed(message),
    }
}
