//! gRPC proxying: a call for a service this sidecar does not serve,
//! carrying `dapr-app-id` (or `dapr-callee-app-id`) metadata, is forwarded
//! as it is (frames, metadata, status and trailers; unary or streaming) to
//! the target app's sidecar, which hands it to its app's gRPC server.
//! Installed as the fallback of the API listener and of the internal one.

use std::sync::Arc;

use axum::body::Body as AxumBody;
use http::{HeaderValue, Request, Response};
use tonic::Status;
use tonic::body::Body;
use tower::{Service, ServiceExt};

use crate::api::ApiContext;
use crate::api::blocks::invoke::{self, ProxyRoute};

/// Serves one unknown-service call.
pub async fn proxy(ctx: Arc<ApiContext>, mut req: Request<AxumBody>) -> Response<Body> {
    let target = {
        let headers = req.headers();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        header(invoke::CALLEE_APP_ID).or_else(|| header(invoke::APP_ID_HEADER))
    };
    let Some(target) = target else {
        let path = req.uri().path().trim_start_matches('/').to_owned();
        let message = format!(
            "{} is not implemented by this version of layotto-rs; to proxy it to an app, send dapr-app-id metadata",
            crate::api::blocks::quote(&path)
        );
        return Status::unimplemented(message).into_http();
    };
    let route = match invoke::route_proxy(&ctx, &target).await {
        Ok(route) => route,
        Err(e) => return Status::from(e).into_http(),
    };
    let headers = req.headers_mut();
    headers.remove("dapr-api-token");
    let (mut channel, remote, _place) = match route {
        ProxyRoute::Local(channel) => {
            headers.remove(invoke::APP_ID_HEADER);
            headers.remove(invoke::CALLEE_APP_ID);
            let app = ctx.app_channel.as_ref();
            if let Some(token) = ctx.app.api_token.as_deref()
                && let Ok(value) = HeaderValue::from_str(token)
            {
                headers.insert("dapr-api-token", value);
            }
            let place = match app {
                Some(app) => app.take_place().await,
                None => None,
            };
            (channel, None, place)
        }
        ProxyRoute::Remote {
            app_id,
            address,
            channel,
        } => {
            if let Ok(value) = HeaderValue::from_str(ctx.invoker.app_id()) {
                headers.insert(invoke::CALLER_APP_ID, value);
            }
            if let Ok(value) = HeaderValue::from_str(&app_id) {
                headers.insert(invoke::CALLEE_APP_ID, value);
            }
            (channel, Some((app_id, address)), None)
        }
    };
    let (parts, body) = req.into_parts();
    let forwarded = Request::from_parts(parts, Body::new(body));
    let ready = match channel.ready().await {
        Ok(ready) => ready,
        Err(e) => return unreachable_target(&ctx, remote, e.to_string()).await,
    };
    match ready.call(forwarded).await {
        Ok(response) => response,
        Err(e) => unreachable_target(&ctx, remote, e.to_string()).await,
    }
}

async fn unreachable_target(ctx: &ApiContext, remote: Option<(String, String)>, error: String) -> Response<Body> {
    let message = match &remote {
        Some((app_id, address)) => {
            invoke::proxy_failed(ctx, app_id, address).await;
            format!("failed to proxy to app '{app_id}' at {address}: {error}")
        }
        None => format!("failed to proxy to the app: {error}"),
    };
    Status::unavailable(message).into_http()
}
