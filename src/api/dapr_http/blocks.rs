//! Dapr's HTTP routes for publish, secrets, configuration and locks, over
//! their block services, with daprd's bodies, status codes and error JSON.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::errors::DaprError;
use crate::api::ApiContext;
use crate::api::blocks::{BlockError, configuration, lock, pubsub, quote, secrets};

type Ctx = State<Arc<ApiContext>>;
type Params = Query<HashMap<String, String>>;

/// `metadata.<k>=<v>` query parameters: component metadata `<k>=<v>`.
pub fn query_metadata(params: &HashMap<String, String>) -> HashMap<String, String> {
    params
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("metadata.")?.to_owned(), v.clone())))
        .collect()
}

/// `POST|PUT /v1.0/publish/{pubsub}/{topic...}`: the body is the event.
pub async fn publish(
    State(ctx): Ctx,
    Path((name, topic)): Path<(String, String)>,
    headers: HeaderMap,
    Query(params): Params,
    body: Bytes,
) -> Response {
    let metadata = query_metadata(&params);
    if let Some(raw) = metadata.get(pubsub::RAW_PAYLOAD)
        && raw.parse::<bool>().is_err()
    {
        return DaprError::new(
            StatusCode::BAD_REQUEST,
            "ERR_PUBSUB_REQUEST_METADATA",
            format!(
                "failed deserializing metadata: rawPayload '{}' is not a boolean",
                quote(raw)
            ),
        )
        .into_response();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("text/plain")
        .to_owned();
    let event = pubsub::PublishEvent {
        pubsub: name.clone(),
        topic,
        data: body.to_vec(),
        content_type,
        metadata,
        api: pubsub::Api::Dapr,
    };
    match pubsub::publish(&ctx, event).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => publish_error(&name, e).into_response(),
    }
}

/// `POST|PUT /v1.0[-alpha1]/publish/bulk/{pubsub}/{topic...}`: a JSON
/// array of `{entryId, event, contentType, metadata}` (field names matched
/// without regard to case, as Go decodes them); `metadata.*` query
/// parameters apply to every entry, an entry's own metadata overrides
/// them. 204 when every entry is published; else 500 with the failed
/// entries.
pub async fn bulk_publish(
    State(ctx): Ctx,
    Path((name, topic)): Path<(String, String)>,
    Query(params): Params,
    body: Bytes,
) -> Response {
    let events_error = |message: String| DaprError::new(StatusCode::BAD_REQUEST, "ERR_PUBSUB_EVENTS_SER", message);
    let entries: Vec<serde_json::Map<String, serde_json::Value>> = match serde_json::from_slice(&body) {
        Ok(entries) => entries,
        Err(e) => {
            return events_error(format!(
                "error when unmarshaling the request for topic {}: {e}",
                quote(&topic)
            ))
            .into_response();
        }
    };
    let mut bulk = pubsub::BulkPublish {
        pubsub: name.clone(),
        topic: topic.clone(),
        entries: Vec::with_capacity(entries.len()),
        metadata: query_metadata(&params),
    };
    for (i, entry) in entries.iter().enumerate() {
        match bulk_entry(entry) {
            Ok(entry) => bulk.entries.push(entry),
            Err(problem) => return events_error(format!("entries[{i}]: {problem}")).into_response(),
        }
    }
    match pubsub::bulk_publish(&ctx, bulk).await {
        Ok(failed) if failed.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok(failed) => {
            let failed: Vec<_> = failed
                .into_iter()
                .map(|f| json!({ "entryId": f.entry_id, "error": f.error }))
                .collect();
            let body = json!({ "failedEntries": failed, "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE" });
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
        Err(BlockError::InvalidArgument(message)) if message.starts_with("entries[") => {
            events_error(message).into_response()
        }
        Err(e) => publish_error(&name, e).into_response(),
    }
}

/// A field of a JSON object, its name matched without regard to case.
fn field<'a>(object: &'a serde_json::Map<String, serde_json::Value>, name: &str) -> Option<&'a serde_json::Value> {
    object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

/// One entry of a bulk publish body; its event's bytes as daprd makes
/// them from its content type.
fn bulk_entry(entry: &serde_json::Map<String, serde_json::Value>) -> Result<pubsub::BulkEntry, String> {
    use base64::Engine;
    use serde_json::Value;

    let text = |name: &str| match field(entry, name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{name} is not a string")),
    };
    let entry_id = text("entryId")?;
    let content_type = text("contentType")?;
    let metadata = match field(entry, "metadata") {
        None => HashMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(format!("metadata.{} is not a string", quote(k))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("metadata is not an object".to_owned()),
    };
    let event = field(entry, "event").cloned().unwrap_or(Value::Null);
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let bytes = match (essence.as_str(), &event) {
        ("application/octet-stream", Value::String(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("event is not base64: {e}"))?,
        ("application/octet-stream", _) => return Err("event must be a base64 string".to_owned()),
        (t, Value::String(s)) if t.starts_with("text/") || t == "application/xml" => s.clone().into_bytes(),
        (t, _) if t.starts_with("text/") || t == "application/xml" => {
            return Err(format!(
                "event must be a string for content type {}",
                quote(&content_type)
            ));
        }
        ("application/json" | "application/cloudevents+json", event) => {
            serde_json::to_vec(event).map_err(|e| e.to_string())?
        }
        _ => {
            return Err(format!(
                "content type {} is not supported; use application/json, application/cloudevents+json, \
                 application/octet-stream, application/xml or text/*",
                quote(&content_type)
            ));
        }
    };
    Ok(pubsub::BulkEntry {
        entry_id,
        event: bytes,
        content_type,
        metadata,
    })
}

fn publish_error(name: &str, error: BlockError) -> DaprError {
    match error {
        BlockError::FailedPrecondition(message) => {
            DaprError::new(StatusCode::BAD_REQUEST, "ERR_PUBSUB_NOT_CONFIGURED", message)
        }
        BlockError::UnknownComponent(_) => DaprError::new(
            StatusCode::NOT_FOUND,
            "ERR_PUBSUB_NOT_FOUND",
            format!("pubsub {} is not found", quote(name)),
        ),
        BlockError::InvalidArgument(message) => {
            DaprError::new(StatusCode::BAD_REQUEST, "ERR_PUBSUB_REQUEST_METADATA", message)
        }
        other => DaprError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_PUBSUB_PUBLISH_MESSAGE",
            format!("error when publishing to topic in pubsub {name}: {other}"),
        ),
    }
}

fn secret_error(store: &str, error: BlockError) -> DaprError {
    match error {
        BlockError::FailedPrecondition(message) => DaprError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_SECRET_STORES_NOT_CONFIGURED",
            message,
        ),
        // 401, as daprd answers it.
        BlockError::UnknownComponent(_) => DaprError::new(
            StatusCode::UNAUTHORIZED,
            "ERR_SECRET_STORE_NOT_FOUND",
            format!("failed finding secret store with key {}", quote(store)),
        ),
        other => DaprError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_SECRET_GET",
            format!("failed getting secret from secret store {store}: {other}"),
        ),
    }
}

/// `GET /v1.0/secrets/{store}/{key}`: `{"<k>": "<v>", ...}`.
pub async fn secret(State(ctx): Ctx, Path((store, key)): Path<(String, String)>) -> Response {
    if key == "bulk" {
        return bulk_secrets(&ctx, &store).await;
    }
    let request = secrets::GetSecretRequest {
        store: store.clone(),
        key,
    };
    match secrets::get(&ctx, request).await {
        Ok(secret) if secret.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok(secret) => Json(secret).into_response(),
        Err(e) => secret_error(&store, e).into_response(),
    }
}

/// `GET /v1.0/secrets/{store}/bulk`: `{"<name>": {"<k>": "<v>"}}`.
async fn bulk_secrets(ctx: &ApiContext, store: &str) -> Response {
    match secrets::get_bulk(ctx, store).await {
        Ok(all) => Json(all).into_response(),
        Err(e) => secret_error(store, e).into_response(),
    }
}

/// A lock request as daprd decodes it (protojson: both spellings).
#[derive(Deserialize, Default)]
struct LockBody {
    #[serde(default, alias = "resource_id", rename = "resourceId")]
    resource_id: String,
    #[serde(default, alias = "lock_owner", rename = "lockOwner")]
    lock_owner: String,
    #[serde(default, alias = "expiry_in_seconds", rename = "expiryInSeconds")]
    expiry_in_seconds: i32,
}

fn lock_error(store: &str, code: &'static str, error: BlockError) -> DaprError {
    match error {
        BlockError::FailedPrecondition(message) => DaprError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_LOCK_STORE_NOT_CONFIGURED",
            message,
        ),
        BlockError::UnknownComponent(_) => DaprError::new(
            StatusCode::BAD_REQUEST,
            "ERR_LOCK_STORE_NOT_FOUND",
            format!("lock store {} is not found", quote(store)),
        ),
        BlockError::InvalidArgument(message) => DaprError::malformed(message),
        other => DaprError::new(StatusCode::INTERNAL_SERVER_ERROR, code, other.to_string()),
    }
}

fn decode_lock(body: &Bytes) -> Result<LockBody, DaprError> {
    serde_json::from_slice(body).map_err(|e| DaprError::malformed(e.to_string()))
}

/// `POST /v1.0-alpha1/lock/{store}`: `{"success": bool}`, a held lock
/// included.
pub async fn try_lock(State(ctx): Ctx, Path(store): Path<String>, body: Bytes) -> Response {
    let body = match decode_lock(&body) {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    if body.expiry_in_seconds <= 0 {
        return DaprError::malformed("ExpiryInSeconds is not positive number").into_response();
    }
    let request = lock::LeaseRequest {
        store: store.clone(),
        resource_id: body.resource_id,
        owner: body.lock_owner,
        expire: body.expiry_in_seconds,
    };
    match lock::try_lock(&ctx, request).await {
        Ok(success) => Json(json!({ "success": success })).into_response(),
        Err(e) => lock_error(&store, "ERR_TRY_LOCK", e).into_response(),
    }
}

/// `POST /v1.0-alpha1/unlock/{store}`: `{"status": 0|1|2|3}`.
pub async fn unlock(State(ctx): Ctx, Path(store): Path<String>, body: Bytes) -> Response {
    let body = match decode_lock(&body) {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let request = lock::UnlockRequest {
        store: store.clone(),
        resource_id: body.resource_id,
        owner: body.lock_owner,
    };
    match lock::unlock(&ctx, request).await {
        Ok(status) => {
            let status = match status {
                lock::LockStatus::Success => 0,
                lock::LockStatus::Unexist => 1,
                lock::LockStatus::BelongsToOthers => 2,
            };
            Json(json!({ "status": status })).into_response()
        }
        Err(e) => lock_error(&store, "ERR_UNLOCK", e).into_response(),
    }
}

/// `GET /v1.0/configuration/{store}?key=a&key=b`: 200
/// `{"<key>": {"value", "version", "metadata"}}`, or 204 when none.
pub async fn get_configuration(
    State(ctx): Ctx,
    Path(store): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let keys = query_keys(query.as_deref());
    let request = configuration::ConfigurationQuery {
        store: store.clone(),
        keys,
        ..Default::default()
    };
    match configuration::get(&ctx, request).await {
        Ok(items) if items.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok(items) => {
            let mut out = serde_json::Map::new();
            for item in items {
                let mut value = json!({ "value": item.content });
                if !item.metadata.is_empty() {
                    value["metadata"] = json!(item.metadata);
                }
                out.insert(item.key, value);
            }
            Json(out).into_response()
        }
        Err(BlockError::FailedPrecondition(message)) => DaprError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_CONFIGURATION_STORE_NOT_CONFIGURED",
            message,
        )
        .into_response(),
        Err(BlockError::UnknownComponent(_)) => DaprError::new(
            StatusCode::BAD_REQUEST,
            "ERR_CONFIGURATION_STORE_NOT_FOUND",
            format!("configuration store {} not found", quote(&store)),
        )
        .into_response(),
        Err(other) => DaprError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_CONFIGURATION_GET",
            format!("failed to get {store} from Configuration store {store}: {other}"),
        )
        .into_response(),
    }
}

/// Repeated `key` parameters, which a map extractor would fold into one.
fn query_keys(query: Option<&str>) -> Vec<String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('=').filter(|(k, _)| *k == "key").map(|(_, v)| v))
        .map(percent_decode)
        .filter(|k| !k.is_empty())
        .collect()
}

/// `GET /v1.0/configuration/{store}/subscribe?key=a`: 200 `{"id"}`; each
/// change is then POSTed to the app at `/configuration/{store}/{key}`.
pub async fn subscribe_configuration(
    State(ctx): Ctx,
    Path(store): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let Some(app) = ctx.app_channel.clone().filter(|a| a.is_http()) else {
        return DaprError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_APP_CHANNEL_NIL",
            "app channel is not initialized: configuration updates are POSTed to an HTTP app (app.protocol = \"http\" and app.port)",
        )
        .into_response();
    };
    let request = configuration::ConfigurationQuery {
        store: store.clone(),
        keys: query_keys(query.as_deref()),
        ..Default::default()
    };
    match configuration::check(&ctx, &request) {
        Ok(()) => {}
        Err(BlockError::UnknownComponent(_)) => {
            return DaprError::new(
                StatusCode::BAD_REQUEST,
                "ERR_CONFIGURATION_STORE_NOT_FOUND",
                format!("configuration store {} not found", quote(&store)),
            )
            .into_response();
        }
        Err(other) => {
            return DaprError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_CONFIGURATION_SUBSCRIBE",
                format!("failed to subscribe {store} from Configuration store {store}: {other}"),
            )
            .into_response();
        }
    }
    let (id, unsubscribed) = ctx.config_subscriptions.open(&store);
    let queries = futures::stream::iter([request]).chain(futures::stream::pending());
    let mut changes = configuration::subscribe(ctx.clone(), queries);
    let (task_ctx, task_id) = (ctx.clone(), id.clone());
    tokio::spawn(async move {
        let mut unsubscribed = std::pin::pin!(unsubscribed);
        let mut stopping = task_ctx.stopping.clone();
        loop {
            let next = tokio::select! {
                next = changes.recv() => next,
                _ = &mut unsubscribed => break,
                _ = stopping.wait_for(|s| *s) => break,
            };
            match next {
                Some(Ok(update)) => {
                    for item in update.items {
                        let body = json!({
                            "id": task_id,
                            "items": { item.key.clone(): { "value": item.content, "version": "", "metadata": item.metadata } },
                        });
                        if let Err(error) = app.configuration_update(&store, &item.key, &body).await {
                            tracing::warn!(%store, key = %item.key, %error, "The app did not take a configuration update");
                        }
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%store, %error, "Configuration subscription failed");
                    break;
                }
                None => break,
            }
        }
        task_ctx.config_subscriptions.close(&task_id);
    });
    Json(json!({ "id": id })).into_response()
}

/// `GET /v1.0/configuration/{store}/{id}/unsubscribe`: 200 `{"ok":true}`,
/// or 500 `{"ok":false,"message"}` (no `errorCode`, as from daprd).
pub async fn unsubscribe_configuration(State(ctx): Ctx, Path((store, id)): Path<(String, String)>) -> Response {
    let failed = |why: String| {
        let message = format!("failed to unsubscribe to configuration request {}: {why}", quote(&id));
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "ok": false, "message": message })),
        )
            .into_response()
    };
    match configuration::unsubscribe(&ctx, &store, &id) {
        Ok(true) => Json(json!({ "ok": true })).into_response(),
        Ok(false) => failed("subscription does not exist".into()),
        Err(error) => failed(error.to_string()),
    }
}

/// Decodes `%XX` escapes and `+` in a query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
