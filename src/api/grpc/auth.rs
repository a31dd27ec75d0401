//! Refuses gRPC calls without the API token (UNAUTHENTICATED), except
//! `grpc.health.v1.Health`; see [`crate::api::auth`].

use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use crate::api::auth::{ApiToken, TOKEN_HEADER};

#[derive(Clone)]
pub struct ApiTokenLayer(pub Option<ApiToken>);

impl<S> Layer<S> for ApiTokenLayer {
    type Service = ApiTokenCheck<S>;

    fn layer(&self, inner: S) -> ApiTokenCheck<S> {
        ApiTokenCheck {
            inner,
            token: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ApiTokenCheck<S> {
    inner: S,
    token: Option<ApiToken>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ApiTokenCheck<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if let Some(token) = &self.token {
            let health = req.uri().path().starts_with("/grpc.health.v1.Health/");
            let given = req.headers().get(TOKEN_HEADER).map(|v| v.as_bytes());
            if !health && !token.accepts(given) {
                let refused =
                    tonic::Status::unauthenticated("missing or invalid dapr-api-token").into_http::<ResBody>();
                return Box::pin(std::future::ready(Ok(refused)));
            }
        }
        Box::pin(self.inner.call(req))
    }
}
