//! A tower layer that counts and times every gRPC call by service, method
//! and status code.
//!
//! The code comes from the response headers for a trailers-only answer (how
//! errors usually travel) and from the trailers otherwise; a call whose
//! response is dropped before its end counts as CANCELLED. Paths outside
//! the served services are counted as `unknown`, so a client cannot grow the
//! label set.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tonic::Code;
use tower::{Layer, Service};

use super::status::code_name;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
    known: Arc<HashSet<String>>,
}

impl GrpcMetricsLayer {
    /// `known` holds the served `"package.Service/Method"` paths.
    pub fn new(metrics: Arc<Metrics>, known: HashSet<String>) -> Self {
        GrpcMetricsLayer {
            metrics,
            known: Arc::new(known),
        }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
            known: self.known.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
    known: Arc<HashSet<String>>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let path = req.uri().path().trim_start_matches('/');
        let path = if self.known.contains(path) {
            path
        } else {
            "unknown/unknown"
        };
        let mut recorder = Recorder::new(self.metrics.clone(), path);
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            if let Some(code) = grpc_code(response.headers()) {
                recorder.finish(code);
            }
            Ok(response.map(|inner| MeteredBody { inner, recorder }))
        })
    }
}

pin_project! {
    /// The response body, watched for the trailers that carry the code.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        recorder: Recorder,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                    this.recorder.finish(code);
                }
            }
            Some(Err(_)) => this.recorder.finish(Code::Unknown),
            // A stream that ends without a code is a success (grpc-status
            // 0 may be left out).
            None => this.recorder.finish(Code::Ok),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Records one call exactly once.
struct Recorder {
    metrics: Arc<Metrics>,
    service: String,
    method: String,
    started: Instant,
    done: bool,
}

impl Recorder {
    fn new(metrics: Arc<Metrics>, path: &str) -> Self {
        // gRPC paths are "/package.Service/Method".
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        Recorder {
            metrics,
            service: service.to_owned(),
            method: method.to_owned(),
            started: Instant::now(),
            done: false,
        }
    }

    fn finish(&mut self, code: Code) {
        if self.done {
            return;
        }
        self.done = true;
        self.metrics.observe_grpc(
            &self.service,
            &self.method,
            code_name(code),
            self.started.elapsed().as_secs_f64(),
        );
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

fn grpc_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    let n: i32 = value.to_str().ok()?.parse().ok()?;
    Some(Code::from(n))
}
