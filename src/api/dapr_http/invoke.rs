//! Service invocation on Dapr's HTTP API: `/v1.0/invoke/{app-id}/method/
//! {method...}` with any verb, and any path that is not a Dapr route when
//! the request carries `dapr-app-id` (or basic auth as `dapr-app-id`), as
//! daprd routes them. The verb, query string, headers and body reach the
//! app; its status, headers and body come back as it sent them.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::errors::{DaprError, invoke_error};
use crate::api::ApiContext;
use crate::api::blocks::invoke::{self, APP_ID_HEADER, InvokeRequest};

/// Finds the target and the method, in daprd's order: the `dapr-app-id`
/// header, basic auth `dapr-app-id:<target>`, the URL form.
pub fn target_and_method(path: &str, headers: &axum::http::HeaderMap) -> Option<(String, String)> {
    let whole_path = || path.trim_start_matches('/').to_owned();
    if let Some(id) = headers
        .get(APP_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        return Some((id.to_owned(), whole_path()));
    }
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok())
        && let Some(encoded) = auth.strip_prefix("Basic ")
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim())
        && let Ok(text) = String::from_utf8(decoded)
        && let Some(id) = text.strip_prefix("dapr-app-id:")
        && !id.is_empty()
    {
        return Some((id.to_owned(), whole_path()));
    }
    let rest = path.strip_prefix("/v1.0/invoke/")?;
    let (id, method) = rest.split_once("/method/").or_else(|| {
        // `/v1.0/invoke/app/method/` has an empty method; without the
        // slash there is none.
        rest.strip_suffix("/method/").map(|id| (id, ""))
    })?;
    if id.is_empty() {
        return None;
    }
    Some((unescape(id), method.to_owned()))
}

/// Percent-decoding of an app id in the path.
fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves an invocation, or 404 `ERR_DIRECT_INVOKE` without a target.
pub async fn invoke(
    State(ctx): State<Arc<ApiContext>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    data: Bytes,
) -> Response {
    let Some((app_id, path)) = target_and_method(uri.path(), &headers) else {
        return DaprError::new(
            StatusCode::NOT_FOUND,
            "ERR_DIRECT_INVOKE",
            "failed getting app id either from the URL path or the header dapr-app-id",
        )
        .into_response();
    };
    let mut metadata = Vec::with_capacity(headers.len());
    let mut content_type = String::new();
    for (name, value) in &headers {
        let Ok(value) = value.to_str() else { continue };
        if name == "content-type" {
            content_type = value.to_owned();
        } else if name != "authorization" || !value.starts_with("Basic ") {
            metadata.push((name.as_str().to_owned(), value.to_owned()));
        }
    }
    let request = InvokeRequest {
        app_id: app_id.clone(),
        method: path,
        verb: method.as_str().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        data: data.to_vec(),
        type_url: String::new(),
        content_type,
        metadata,
        timeout: None,
    };
    let answer = match invoke::invoke(&ctx, request).await {
        Ok(answer) => answer,
        Err(e) => return invoke_error(e).into_response(),
    };
    let status = StatusCode::from_u16(answer.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (body, content_type) = if !answer.is_http() && !answer.is_ok() {
        // A gRPC app's error, as daprd relays it: the status as JSON.
        let status = serde_json::json!({ "code": answer.code, "message": answer.message, "details": [] });
        (status.to_string().into_bytes(), "application/json".to_owned())
    } else {
        (answer.data, answer.content_type)
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in answer.headers.iter().chain(answer.trailers.iter()) {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.append(name, value);
        }
    }
    if !content_type.is_empty()
        && let Ok(value) = HeaderValue::from_str(&content_type)
    {
        headers.insert("content-type", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(path: &str, header: Option<&str>) -> Option<(String, String)> {
        let mut headers = HeaderMap::new();
        if let Some(h) = header {
            headers.insert(APP_ID_HEADER, h.parse().expect("ascii"));
        }
        target_and_method(path, &headers)
    }

    #[test]
    fn targets_are_found_as_daprd_finds_them() {
        assert_eq!(
            find("///foo//bar", Some("app")),
            Some(("app".into(), "foo//bar".into()))
        );
        assert_eq!(
            find("/v1.0/invoke/app/method/a/b", None),
            Some(("app".into(), "a/b".into()))
        );
        assert_eq!(
            find("/v1.0/invoke/app/method/", None),
            Some(("app".into(), String::new()))
        );
        assert_eq!(find("/v1.0/invoke/app/method", None), None);
        assert_eq!(
            find("/v1.0/invoke/x/method/y", Some("other")),
            Some(("other".into(), "v1.0/invoke/x/method/y".into()))
        );
        assert_eq!(
            find("/v1.0/invoke/http%3A%2F%2Fexample.com/method/m", None),
            Some(("http://example.com".into(), "m".into()))
        );
        let mut headers = HeaderMap::new();
        let auth = base64::engine::general_purpose::STANDARD.encode("dapr-app-id:app2");
        headers.insert("authorization", format!("Basic {auth}").parse().expect("ascii"));
        assert_eq!(
            target_and_method("/v1.0/invoke/x/method/y", &headers),
            Some(("app2".into(), "v1.0/invoke/x/method/y".into()))
        );
    }
}
