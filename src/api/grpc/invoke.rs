//! `InvokeService` on Layotto's and Dapr's gRPC APIs, and the internal
//! listener's `ServiceInvocation` (Dapr's sidecar-to-sidecar service), over
//! [`blocks::invoke`](crate::api::blocks::invoke).

use std::time::Duration;

use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use crate::api::ApiContext;
use crate::api::blocks::invoke::{self, InvokeRequest, InvokeResponse, verb_name};
use crate::proto::dapr::common::v1 as common;
use crate::proto::dapr::internals::v1 as internals;
use crate::proto::dapr::runtime::v1 as dapr;
use crate::proto::runtime::v1 as pb;

/// Layotto's default invocation timeout, and the header that overrides it
/// (milliseconds).
const LAYOTTO_TIMEOUT: Duration = Duration::from_millis(3000);
const LAYOTTO_TIMEOUT_HEADER: &str = "rpc_request_timeout";

/// A request's ASCII metadata as pairs.
pub fn metadata_pairs(map: &MetadataMap) -> Vec<(String, String)> {
    map.iter()
        .filter_map(|entry| match entry {
            KeyAndValueRef::Ascii(k, v) => v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())),
            KeyAndValueRef::Binary(k, v) if k.as_str() == invoke::trace::GRPC_TRACE_BIN => {
                use base64::Engine;
                v.to_bytes().ok().map(|b| {
                    (
                        k.as_str().to_owned(),
                        base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
                    )
                })
            }
            KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}

/// The caller's gRPC deadline (`grpc-timeout`).
pub fn grpc_timeout(map: &MetadataMap) -> Option<Duration> {
    let text = map.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn append(map: &mut MetadataMap, pairs: &[(String, String)]) {
    for (k, v) in pairs {
        if k == "content-length" || k == "content-type" || k.starts_with("grpc-") || k.ends_with("-bin") {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(k.as_bytes()),
            MetadataValue::try_from(v.as_str()),
        ) {
            map.append(k, v);
        }
    }
}

/// The app's answer to a gRPC caller: its data with the headers as
/// response metadata, or its error as a status (an HTTP app's body as the
/// message, a gRPC app's status and trailers as they were).
fn answer(resp: InvokeResponse) -> Result<(MetadataMap, prost_types::Any, String), Status> {
    if !resp.is_ok() {
        let message = if resp.is_http() {
            let body = String::from_utf8_lossy(&resp.data);
            if body.is_empty() {
                format!("the app answered HTTP {}", resp.code)
            } else {
                body.into_owned()
            }
        } else {
            resp.message.clone()
        };
        let mut trailers = MetadataMap::new();
        append(&mut trailers, &resp.headers);
        append(&mut trailers, &resp.trailers);
        return Err(Status::with_metadata(resp.grpc_code(), message, trailers));
    }
    let mut headers = MetadataMap::new();
    append(&mut headers, &resp.headers);
    let data = prost_types::Any {
        type_url: resp.type_url,
        value: resp.data,
    };
    Ok((headers, data, resp.content_type))
}

fn block_request(
    app_id: String,
    message: Option<impl Into<common::InvokeRequest>>,
    metadata: &MetadataMap,
    timeout: Option<Duration>,
) -> InvokeRequest {
    let message: common::InvokeRequest = message.map(Into::into).unwrap_or_default();
    let data = message.data.unwrap_or_default();
    let extension = message.http_extension.unwrap_or_default();
    InvokeRequest {
        app_id,
        method: message.method,
        verb: verb_name(extension.verb).to_owned(),
        query: extension.querystring,
        data: data.value,
        type_url: data.type_url,
        content_type: message.content_type,
        metadata: metadata_pairs(metadata),
        timeout,
    }
}

impl From<pb::CommonInvokeRequest> for common::InvokeRequest {
    fn from(m: pb::CommonInvokeRequest) -> common::InvokeRequest {
        common::InvokeRequest {
            method: m.method,
            data: m.data,
            content_type: m.content_type,
            http_extension: m.http_extension.map(|e| common::HttpExtension {
                verb: e.verb,
                querystring: e.querystring,
            }),
        }
    }
}

/// Layotto's `InvokeService`: the deadline is the client's, else the
/// `rpc_request_timeout` header (ms), else 3 s.
pub async fn layotto_invoke(
    ctx: &ApiContext,
    req: Request<pb::InvokeServiceRequest>,
) -> Result<Response<pb::InvokeResponse>, Status> {
    let header_timeout = req
        .metadata()
        .get(LAYOTTO_TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    let timeout = grpc_timeout(req.metadata())
        .or(header_timeout)
        .unwrap_or(LAYOTTO_TIMEOUT);
    let (metadata, _, body) = req.into_parts();
    let request = block_request(body.id, body.message, &metadata, Some(timeout));
    let (headers, data, content_type) = answer(invoke::invoke(ctx, request).await?)?;
    let mut response = Response::new(pb::InvokeResponse {
        data: Some(data),
        content_type,
    });
    *response.metadata_mut() = headers;
    Ok(response)
}

/// Dapr's `InvokeService`.
pub async fn dapr_invoke(
    ctx: &ApiContext,
    req: Request<dapr::InvokeServiceRequest>,
) -> Result<Response<common::InvokeResponse>, Status> {
    let timeout = grpc_timeout(req.metadata());
    let (metadata, _, body) = req.into_parts();
    let request = block_request(body.id, body.message, &metadata, timeout);
    let (headers, data, content_type) = answer(invoke::invoke(ctx, request).await?)?;
    let mut response = Response::new(common::InvokeResponse {
        data: Some(data),
        content_type,
    });
    *response.metadata_mut() = headers;
    Ok(response)
}

/// The internal listener's `ServiceInvocation`: calls from other sidecars
/// for this sidecar's app.
pub struct InternalService {
    pub ctx: std::sync::Arc<ApiContext>,
}

type CallLocalStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<internals::InternalInvokeResponseStream, Status>> + Send>>;

#[tonic::async_trait]
impl internals::service_invocation_server::ServiceInvocation for InternalService {
    async fn call_local(
        &self,
        req: Request<internals::InternalInvokeRequest>,
    ) -> Result<Response<internals::InternalInvokeResponse>, Status> {
        let timeout = grpc_timeout(req.metadata());
        let answer = invoke::serve_local(&self.ctx, req.into_inner(), timeout).await?;
        Ok(Response::new(answer))
    }

    type CallLocalStreamStream = CallLocalStream;

    /// Not served: daprd falls back to `CallLocal` on UNIMPLEMENTED.
    async fn call_local_stream(
        &self,
        _req: Request<tonic::Streaming<internals::InternalInvokeRequestStream>>,
    ) -> Result<Response<CallLocalStream>, Status> {
        Err(Status::unimplemented(
            "dapr.proto.internals.v1.ServiceInvocation/CallLocalStream is not served; use CallLocal",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        let mut map = MetadataMap::new();
        for (text, want) in [
            ("3S", Duration::from_secs(3)),
            ("250m", Duration::from_millis(250)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
            ("5u", Duration::from_micros(5)),
            ("7n", Duration::from_nanos(7)),
        ] {
            map.insert("grpc-timeout", text.parse().expect("ascii"));
            assert_eq!(grpc_timeout(&map), Some(want), "{text}");
        }
        map.insert("grpc-timeout", "x".parse().expect("ascii"));
        assert_eq!(grpc_timeout(&map), None);
    }
}
