//! `POST`/`PUT /v1.0/bindings/{name}`: Dapr's HTTP output binding call,
//! body `{"data": <any JSON>, "metadata": {..}, "operation": ".."}`. As in
//! daprd, `data` reaches the binding JSON-encoded (a string with its
//! quotes; none as `null`); the answer is 200 with the binding's data, or
//! 204 when it answers none, with its metadata as `metadata.<key>` headers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::errors::{DaprError, binding_error};
use crate::api::ApiContext;
use crate::api::blocks::bindings::{self, BindingRequest};

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    operation: String,
}

pub async fn invoke(State(ctx): State<Arc<ApiContext>>, Path(name): Path<String>, body: Bytes) -> Response {
    let body: Body = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return DaprError::malformed(format!("failed deserializing HTTP body: {e}")).into_response(),
    };
    let data = match serde_json::to_vec(&body.data) {
        Ok(data) => data,
        Err(e) => {
            return DaprError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_MALFORMED_REQUEST_DATA",
                format!("can't serialize request data field: {e}"),
            )
            .into_response();
        }
    };
    let request = BindingRequest {
        operation: body.operation,
        data,
        metadata: body.metadata,
        ..Default::default()
    };
    match bindings::invoke(&ctx, &name, request).await {
        Ok(answer) => {
            let mut response = match answer.data {
                Some(data) => {
                    let mut response = (StatusCode::OK, data).into_response();
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    response
                }
                None => StatusCode::NO_CONTENT.into_response(),
            };
            let headers = response.headers_mut();
            for (key, value) in answer.metadata {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(format!("metadata.{key}").as_bytes()),
                    HeaderValue::from_str(&value),
                ) {
                    headers.insert(name, value);
                }
            }
            response
        }
        Err(e) => binding_error(&name, e).into_response(),
    }
}
