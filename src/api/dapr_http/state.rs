//! Dapr's HTTP State API, over [`blocks::state`](crate::api::blocks::state):
//! `GET|DELETE /v1.0/state/{store}/{key}`, `POST|PUT /v1.0/state/{store}`,
//! `.../bulk` and `.../transaction`, with daprd's bodies, status codes,
//! `ETag` headers and error JSON.
//!
//! Values arrive as JSON and are stored as their JSON text (a string
//! `"bar"` is stored with its quotes, as daprd stores it); a read answers
//! the stored bytes as they are.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::blocks::query_metadata;
use super::errors::{self, DaprError, StateOp};
use crate::api::ApiContext;
use crate::api::blocks::state::{self, Concurrency, Consistency};

type Ctx = State<Arc<ApiContext>>;
type Params = Query<HashMap<String, String>>;

fn consistency(value: Option<&str>) -> Consistency {
    match value {
        Some("eventual") => Consistency::Eventual,
        Some("strong") => Consistency::Strong,
        _ => Consistency::Unspecified,
    }
}

fn concurrency(value: Option<&str>) -> Concurrency {
    match value {
        Some("first-write") => Concurrency::FirstWrite,
        _ => Concurrency::LastWrite,
    }
}

/// A field that may be `null` in the body, read as its default, as Go's
/// decoder reads it (the JavaScript SDK sends `"metadata": null`).
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Decodes a JSON body, or answers 400 `ERR_MALFORMED_REQUEST`.
fn decode<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, DaprError> {
    serde_json::from_slice(body).map_err(|e| DaprError::malformed(e.to_string()))
}

/// The bytes a JSON value is stored as: its JSON text.
fn stored(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

pub async fn get(State(ctx): Ctx, Path((store, key)): Path<(String, String)>, Query(params): Params) -> Response {
    let request = state::GetState {
        store: store.clone(),
        key,
        consistency: consistency(params.get("consistency").map(String::as_str)),
    };
    match state::get(&ctx, request).await {
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Ok(Some(value)) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Ok(etag) = HeaderValue::from_str(&value.etag.to_string()) {
                headers.insert(header::ETAG, etag);
            }
            for (k, v) in state::value_metadata(&value) {
                if let (Ok(name), Ok(v)) = (
                    header::HeaderName::try_from(format!("metadata.{k}")),
                    HeaderValue::from_str(&v),
                ) {
                    headers.insert(name, v);
                }
            }
            (StatusCode::OK, headers, value.data).into_response()
        }
        Err(e) => errors::state(StateOp::Get, &store, &ctx.app.app_id, e).into_response(),
    }
}

/// One item of a save, as daprd decodes it.
#[derive(Deserialize)]
struct SaveItem {
    #[serde(default, alias = "Key")]
    key: Option<String>,
    #[serde(default, alias = "Value")]
    value: Option<Value>,
    #[serde(default, alias = "Etag", alias = "ETag")]
    etag: Option<String>,
    #[serde(default, alias = "Metadata", deserialize_with = "nullable")]
    metadata: HashMap<String, String>,
    #[serde(default, alias = "Options")]
    options: Option<Options>,
}

#[derive(Deserialize, Default)]
struct Options {
    #[serde(default)]
    concurrency: Option<String>,
}

pub async fn save(State(ctx): Ctx, Path(store): Path<String>, Query(params): Params, body: Bytes) -> Response {
    let items: Vec<SaveItem> = match decode(&body) {
        Ok(items) => items,
        Err(e) => return e.into_response(),
    };
    let extra = query_metadata(&params);
    let mut converted = Vec::with_capacity(items.len());
    for item in items {
        let Some(key) = item.key.filter(|k| !k.is_empty()) else {
            return DaprError::malformed("\"key\" is a required field").into_response();
        };
        let mut metadata = item.metadata;
        metadata.extend(extra.clone());
        converted.push(state::StateItem {
            key,
            value: item.value.as_ref().map(stored).unwrap_or_default(),
            etag: item.etag,
            concurrency: concurrency(item.options.unwrap_or_default().concurrency.as_deref()),
            metadata,
        });
    }
    let request = state::SaveState {
        store: store.clone(),
        items: converted,
    };
    match state::save(&ctx, request).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => errors::state(StateOp::Save, &store, &ctx.app.app_id, e).into_response(),
    }
}

pub async fn delete(
    State(ctx): Ctx,
    Path((store, key)): Path<(String, String)>,
    headers: HeaderMap,
    Query(_params): Params,
) -> Response {
    // A present If-Match, even empty, is the etag.
    let etag = headers
        .get(header::IF_MATCH)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let request = state::DeleteState {
        store: store.clone(),
        item: state::DeleteItem { key, etag },
    };
    match state::delete(&ctx, request).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => errors::state(StateOp::Delete, &store, &ctx.app.app_id, e).into_response(),
    }
}

#[derive(Deserialize)]
struct BulkRequest {
    #[serde(default, alias = "Keys", deserialize_with = "nullable")]
    keys: Vec<String>,
    #[serde(default, alias = "Parallelism", deserialize_with = "nullable")]
    parallelism: i64,
}

/// A stored value inside a JSON answer: as JSON where it is JSON (daprd
/// embeds it raw), else as a string.
fn embedded(data: &[u8]) -> Value {
    serde_json::from_slice(data).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()))
}

pub async fn bulk(State(ctx): Ctx, Path(store): Path<String>, body: Bytes) -> Response {
    let request: BulkRequest = match decode(&body) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    let request = state::GetBulkState {
        store: store.clone(),
        keys: request.keys,
        parallelism: usize::try_from(request.parallelism).unwrap_or(0),
    };
    match state::get_bulk(&ctx, request).await {
        Ok(items) => {
            let items: Vec<Value> = items
                .into_iter()
                .map(|item| match item.value {
                    Ok(None) => json!({ "key": item.key }),
                    Ok(Some(value)) => {
                        let mut out = json!({
                            "key": item.key,
                            "data": embedded(&value.data),
                            "etag": value.etag.to_string(),
                        });
                        let metadata = state::value_metadata(&value);
                        if !metadata.is_empty() {
                            out["metadata"] = json!(metadata);
                        }
                        out
                    }
                    Err(error) => json!({ "key": item.key, "error": error }),
                })
                .collect();
            axum::Json(items).into_response()
        }
        Err(e) => errors::state(StateOp::BulkGet, &store, &ctx.app.app_id, e).into_response(),
    }
}

/// `POST|PUT /v1.0-alpha1/state/{store}/query`: the body is the query;
/// 200 `{"results":[{"key","data","etag"}],"token"}`.
pub async fn query(State(ctx): Ctx, Path(store): Path<String>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    match state::query(&ctx, &store, &text).await {
        Ok(result) => {
            let results: Vec<Value> = result
                .items
                .into_iter()
                .map(|item| json!({ "key": item.key, "data": embedded(&item.data), "etag": item.etag.to_string() }))
                .collect();
            let mut out = json!({ "results": results });
            if let Some(token) = result.token {
                out["token"] = json!(token);
            }
            axum::Json(out).into_response()
        }
        Err(e) => errors::state(StateOp::Query, &store, &ctx.app.app_id, e).into_response(),
    }
}

#[derive(Deserialize)]
struct TransactionRequest {
    #[serde(default, alias = "Operations", deserialize_with = "nullable")]
    operations: Vec<TransactionOperation>,
    #[serde(default, alias = "Metadata", deserialize_with = "nullable")]
    metadata: HashMap<String, String>,
}

#[derive(Deserialize)]
struct TransactionOperation {
    #[serde(default, alias = "Operation")]
    operation: String,
    #[serde(default, alias = "Request")]
    request: Option<SaveItem>,
}

pub async fn transaction(State(ctx): Ctx, Path(store): Path<String>, body: Bytes) -> Response {
    let request: TransactionRequest = match decode(&body) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    let mut operations = Vec::with_capacity(request.operations.len());
    for op in request.operations {
        if op.operation != "upsert" && op.operation != "delete" {
            return DaprError::new(
                StatusCode::BAD_REQUEST,
                "ERR_NOT_SUPPORTED_STATE_OPERATION",
                format!(
                    "operation type {} not supported",
                    crate::api::blocks::quote(&op.operation)
                ),
            )
            .into_response();
        }
        let item = op.request.map(|item| state::StateItem {
            key: item.key.unwrap_or_default(),
            value: item.value.as_ref().map(stored).unwrap_or_default(),
            etag: item.etag,
            concurrency: concurrency(item.options.unwrap_or_default().concurrency.as_deref()),
            metadata: item.metadata,
        });
        operations.push(state::TransactionOperation {
            operation: op.operation,
            item,
        });
    }
    let request = state::Transaction {
        store: store.clone(),
        operations,
        metadata: request.metadata,
    };
    match state::transact(&ctx, request).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => errors::state(StateOp::Transaction, &store, &ctx.app.app_id, e).into_response(),
    }
}
