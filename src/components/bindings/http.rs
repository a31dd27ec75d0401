//! `http`: Dapr's HTTP output binding. The operation is the verb (`get`,
//! `head`, `post`, `put`, `patch`, `delete`, `options`, `trace`; `create`
//! is a POST); request metadata `path` is appended to the component's
//! `url`, and every request metadata key starting with a capital letter is
//! sent as a header. The answer's body is the response's data, and its
//! metadata `statusCode`, `status` and the response headers. A status
//! outside 2xx is an error (`received status code N`) unless
//! `errorIfNot2XX` is `false` (per component or per request).
//!
//! Metadata: [`HttpKeys`].

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Binding, BindingCommon, BindingRequest, BindingResponse, ops};
use crate::components::meta::{self, Section};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn Binding> = TypeEntry::of::<HttpType>();

/// Dapr's default `maxResponseBodySize`: 100 MiB.
pub const DEFAULT_MAX_RESPONSE_BODY: u64 = 100 << 20;

pub struct HttpType;

impl ComponentType<dyn Binding> for HttpType {
    const NAME: &'static str = "http";
    type Metadata = (HttpKeys, BindingCommon);

    fn build(
        ctx: BuildContext,
        (keys, _): (HttpKeys, BindingCommon),
    ) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
        async move {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(15))
                .redirect(reqwest::redirect::Policy::limited(10));
            if let Some(timeout) = keys.response_timeout {
                builder = builder.timeout(timeout.into());
            }
            let client = builder
                .build()
                .map_err(|e| BuildError(format!("binding '{}': {e}", ctx.spec.name)))?;
            Ok(Arc::new(HttpBinding { keys, client }) as Arc<dyn Binding>)
        }
        .boxed()
    }
}

/// What `http` reads from its metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpKeys {
    /// The base URL; a request's `path` is appended. Required.
    #[serde(deserialize_with = "meta::non_empty")]
    pub url: String,
    /// How long a request may take, response included. Default: no limit.
    #[serde(default)]
    pub response_timeout: Option<meta::Seconds>,
    /// The most of a response body kept, in bytes; the rest is dropped.
    /// 0 or less: no limit. Default 100 MiB.
    #[serde(default)]
    pub max_response_body_size: Option<String>,
    /// Whether a status outside 2xx is an error. Default true.
    #[serde(default = "default_true", rename = "errorIfNot2XX")]
    pub error_if_not_2xx: bool,
    /// A token sent on every request, in `securityTokenHeader`.
    #[serde(default)]
    pub security_token: Option<String>,
    /// The header carrying `securityToken`.
    #[serde(default)]
    pub security_token_header: Option<String>,
}

fn default_true() -> bool {
    true
}

impl Section for HttpKeys {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        if let Err(e) = reqwest::Url::parse(&self.url) {
            errors.push(MetadataError::new("url", format!("'{}' is not a URL: {e}", self.url)));
        }
        if let Some(size) = &self.max_response_body_size
            && parse_size(size).is_none()
        {
            errors.push(MetadataError::new(
                "maxResponseBodySize",
                format!("invalid value for maxResponseBodySize: '{size}'"),
            ));
        }
    }
}

/// A byte size: a number, or a quantity (`100Mi`, `512Ki`, `10M`).
fn parse_size(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().ok()?;
    let factor: i64 = match unit {
        "" => 1,
        "k" | "K" => 1000,
        "Ki" => 1 << 10,
        "M" => 1_000_000,
        "Mi" => 1 << 20,
        "G" => 1_000_000_000,
        "Gi" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

pub struct HttpBinding {
    keys: HttpKeys,
    client: reqwest::Client,
}

/// Dapr's reading of a yes/no string.
fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "y" | "on"
    )
}

/// Go's canonical form of a header name, as Dapr reports them:
/// `content-type` becomes `Content-Type`.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

#[async_trait::async_trait]
impl Component for HttpBinding {
    async fn health_check(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl Binding for HttpBinding {
    fn operations(&self) -> Vec<&str> {
        vec![
            ops::CREATE,
            ops::GET,
            "head",
            "post",
            "put",
            "patch",
            ops::DELETE,
            "options",
            "trace",
        ]
    }

    async fn invoke(&self, request: BindingRequest) -> Result<BindingResponse, ComponentError> {
        let method = match request.operation.as_str() {
            ops::CREATE | "post" => reqwest::Method::POST,
            ops::GET => reqwest::Method::GET,
            "head" => reqwest::Method::HEAD,
            "put" => reqwest::Method::PUT,
            "patch" => reqwest::Method::PATCH,
            ops::DELETE => reqwest::Method::DELETE,
            "options" => reqwest::Method::OPTIONS,
            "trace" => reqwest::Method::TRACE,
            other => return Err(ComponentError::InvalidArgument(format!("invalid operation: {other}"))),
        };
        let mut url = self.keys.url.trim_end_matches('/').to_owned();
        if let Some(path) = request.metadata.get("path").filter(|p| !p.is_empty()) {
            url.push('/');
            url.push_str(path.trim_start_matches('/'));
        }
        let with_body = matches!(
            method,
            reqwest::Method::POST | reqwest::Method::PUT | reqwest::Method::PATCH
        );
        let mut builder = self.client.request(method, &url);
        let has = |name: &str| request.metadata.keys().any(|k| k.eq_ignore_ascii_case(name));
        if with_body && !has("Content-Type") {
            builder = builder.header("Content-Type", "application/json; charset=utf-8");
        }
        if !has("Accept") {
            builder = builder.header("Accept", "application/json; charset=utf-8");
        }
        for (key, value) in &request.metadata {
            if key.starts_with(|c: char| c.is_ascii_uppercase())
                || matches!(key.as_str(), "traceparent" | "tracestate" | "baggage")
            {
                let name = reqwest::header::HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                    ComponentError::InvalidArgument(format!("metadata key '{key}' is not a header name"))
                })?;
                let value = reqwest::header::HeaderValue::from_str(value)
                    .map_err(|_| ComponentError::InvalidArgument(format!("metadata '{key}' is not a header value")))?;
                builder = builder.header(name, value);
            }
        }
        if let (Some(token), Some(header)) = (&self.keys.security_token, &self.keys.security_token_header) {
            builder = builder.header(header.as_str(), token.as_str());
        }
        if with_body {
            builder = builder.body(request.data.clone());
        }
        let mut response = builder.send().await.map_err(|e| {
            if e.is_timeout() || e.is_connect() {
                ComponentError::Unavailable(format!("{url}: {e}"))
            } else {
                ComponentError::Internal(format!("{url}: {e}"))
            }
        })?;
        let status = response.status();
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert("statusCode".to_owned(), status.as_u16().to_string());
        metadata.insert(
            "status".to_owned(),
            format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or_default())
                .trim_end()
                .to_owned(),
        );
        for name in response.headers().keys() {
            let values: Vec<&str> = response
                .headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            metadata.insert(canonical(name.as_str()), values.join(", "));
        }
        let limit = self
            .keys
            .max_response_body_size
            .as_deref()
            .and_then(parse_size)
            .unwrap_or(DEFAULT_MAX_RESPONSE_BODY as i64);
        let mut data = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ComponentError::Unavailable(format!("{url}: reading the response: {e}")))?
        {
            if limit > 0 {
                let room = usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(data.len());
                data.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if data.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
                    break;
                }
            } else {
                data.extend_from_slice(&chunk);
            }
        }
        let error_if_not_2xx = request
            .metadata
            .get("errorIfNot2XX")
            .map(|v| truthy(v))
            .unwrap_or(self.keys.error_if_not_2xx);
        if error_if_not_2xx && !status.is_success() {
            return Err(ComponentError::Internal(format!(
                "received status code {}",
                status.as_u16()
            )));
        }
        Ok(BindingResponse {
            data: Some(data),
            metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_reported_as_go_writes_them() {
        assert_eq!(canonical("content-type"), "Content-Type");
        assert_eq!(canonical("x-request-id"), "X-Request-Id");
    }

    #[test]
    fn sizes_take_quantities() {
        assert_eq!(parse_size("100Mi"), Some(100 << 20));
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("-1"), Some(-1));
        assert_eq!(parse_size("ten"), None);
    }
}
