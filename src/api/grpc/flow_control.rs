//! Flow control on the gRPC API listener: Layotto's `flowControlFilter`
//! (Sentinel flow rules keyed by the gRPC method path), applied before a
//! call reaches its handler. A call over its rule's rate is answered
//! `RESOURCE_EXHAUSTED` with the configured message and counted in
//! `layotto_flow_control_rejected_total{method}`; a path no rule names
//! passes with one map lookup. The limiters are `crate::flow_control`'s.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use tower::{Layer, Service};

use crate::config::FlowControlConfig;
use crate::flow_control::{Limiter, Verdict};
use crate::metrics::Metrics;

/// The configured rules, by method path.
#[derive(Clone)]
pub struct FlowControlLayer {
    rules: Arc<HashMap<String, Limiter>>,
    message: Arc<str>,
    metrics: Arc<Metrics>,
}

impl FlowControlLayer {
    pub fn new(config: &FlowControlConfig, metrics: Arc<Metrics>) -> FlowControlLayer {
        let rules = if config.enabled {
            config
                .rules
                .iter()
                .map(|rule| (rule.resource.clone(), Limiter::of(rule)))
                .collect()
        } else {
            HashMap::new()
        };
        FlowControlLayer {
            rules: Arc::new(rules),
            message: config.message.as_str().into(),
            metrics,
        }
    }
}

impl<S> Layer<S> for FlowControlLayer {
    type Service = FlowControl<S>;

    fn layer(&self, inner: S) -> FlowControl<S> {
        FlowControl {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct FlowControl<S> {
    inner: S,
    layer: FlowControlLayer,
}

impl<S, ReqBody> Service<Request<ReqBody>> for FlowControl<S>
where
    S: Service<Request<ReqBody>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(limiter) = self.layer.rules.get(req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        let verdict = limiter.verdict();
        match verdict {
            Verdict::Pass => Box::pin(self.inner.call(req)),
            Verdict::Reject => {
                self.layer.metrics.flow_control_rejected(req.uri().path());
                let status = tonic::Status::resource_exhausted(self.layer.message.to_string());
                Box::pin(async move { Ok(status.into_http()) })
            }
            Verdict::Wait(wait) => {
                // The ready inner service serves this call; a fresh clone
                // takes its place for the next.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let queued: BoxFuture<'static, _> = Box::pin(async move {
                    tokio::time::sleep(wait).await;
                    inner.call(req).await
                });
                queued
            }
        }
    }
}
