//! A tower layer that counts and times every gRPC call by service, method
//! and status code, bounds the calls in flight across the process, and
//! cuts off calls still running when the shutdown's grace period ends.
//!
//! Admission: beyond `server.max_calls_in_flight` calls (streams included)
//! at once, a call is answered `RESOURCE_EXHAUSTED` at once instead of
//! queueing, so a flood of calls cannot grow memory without bound.
//!
//! A handler that panics is answered `INTERNAL`; its connection and the
//! other calls on it go on.
//!
//! Cut-off: when the runtime's cut-off switch turns (the grace period is
//! over), a call whose handler has not answered yet is answered
//! `UNAVAILABLE` ("the sidecar is stopping"), a code clients retry
//! elsewhere; it never ends CANCELLED, INTERNAL, or OK with part of its
//! work done. Its handler is dropped before any component stops.
//!
//! The code comes from the response headers for a trailers-only answer (how
//! errors usually travel) and from the trailers otherwise; a call whose
//! response is dropped before its end counts as CANCELLED. Paths outside
//! the served services are counted as `unknown`, so a client cannot grow the
//! label set.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use futures::FutureExt;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tokio::sync::watch;
use tonic::Code;
use tower::{Layer, Service};

use super::status::code_name;
use crate::api::conn::{Activity, OpenRequest};
use crate::api::{STOPPING, cut};
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
    known: Arc<HashSet<String>>,
    admission: Option<Admission>,
    per_connection: Option<usize>,
    cut_off: Option<watch::Receiver<bool>>,
}

/// The process-wide bound on calls in flight.
#[derive(Clone)]
struct Admission {
    in_flight: Arc<AtomicUsize>,
    max: usize,
}

impl Admission {
    /// A place for one call, or `None` when all `max` are taken.
    fn enter(&self) -> Option<InFlightCall> {
        let previous = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let call = InFlightCall(self.in_flight.clone());
        (previous < self.max).then_some(call)
    }
}

/// One admitted call; its place is given back when its response ends.
struct InFlightCall(Arc<AtomicUsize>);

impl Drop for InFlightCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl GrpcMetricsLayer {
    /// `known` holds the served `"package.Service/Method"` paths.
    pub fn new(metrics: Arc<Metrics>, known: HashSet<String>) -> Self {
        GrpcMetricsLayer {
            metrics,
            known: Arc::new(known),
            admission: None,
            per_connection: None,
            cut_off: None,
        }
    }

    /// Answers `RESOURCE_EXHAUSTED` to calls beyond `max` in flight on one
    /// connection, before they take a place among the process's; `None`
    /// leaves connections unbounded here.
    pub fn limit_per_connection(mut self, max: Option<usize>) -> Self {
        self.per_connection = max;
        self
    }

    /// Answers `UNAVAILABLE` to calls still running once `cut_off` turns
    /// true.
    pub fn cut_off_on(mut self, cut_off: watch::Receiver<bool>) -> Self {
        self.cut_off = Some(cut_off);
        self
    }

    /// Answers `RESOURCE_EXHAUSTED` to calls beyond `max` in flight.
    pub fn limit_in_flight(mut self, max: usize) -> Self {
        self.admission = Some(Admission {
            in_flight: Arc::new(AtomicUsize::new(0)),
            max,
        });
        self
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
            known: self.known.clone(),
            admission: self.admission.clone(),
            per_connection: self.per_connection,
            cut_off: self.cut_off.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
    known: Arc<HashSet<String>>,
    admission: Option<Admission>,
    per_connection: Option<usize>,
    cut_off: Option<watch::Receiver<bool>>,
}

/// What a call is answered with, boxed.
type Answer<B, E> = Pin<Box<dyn Future<Output = Result<Response<MeteredBody<B>>, E>> + Send>>;

/// A call refused before it ran, answered `RESOURCE_EXHAUSTED`.
fn refuse<B, E>(mut recorder: Recorder, message: String) -> Answer<B, E>
where
    B: Default + Send + 'static,
    E: Send + 'static,
{
    recorder.finish(Code::ResourceExhausted);
    let refused = tonic::Status::resource_exhausted(message).into_http::<B>();
    let response = refused.map(|inner| MeteredBody {
        inner,
        recorder,
        _admitted: None,
        _open: None,
    });
    Box::pin(std::future::ready(Ok(response)))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Answer<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let path = req.uri().path().trim_start_matches('/');
        // An rpc no service declares: tonic answers it with a bare
        // UNIMPLEMENTED, which is given its name below. Only such calls
        // pay for the copy.
        let (path, undeclared) = if self.known.contains(path) {
            (path, None)
        } else {
            ("unknown/unknown", Some(path.to_owned()))
        };
        let mut recorder = Recorder::new(self.metrics.clone(), path);
        // The call keeps its connection from the idle timeout until its
        // response ends (a quiet subscription stream included).
        let open = req.extensions().get::<Activity>().map(Activity::open);
        let open = match (open, self.per_connection) {
            (Some((_, on_connection)), Some(max)) if on_connection > max => {
                return refuse(
                    recorder,
                    format!("this connection is at its limit of {max} calls in flight; retry later"),
                );
            }
            (open, _) => open.map(|(open, _)| open),
        };
        let admitted = match &self.admission {
            None => None,
            Some(admission) => match admission.enter() {
                Some(call) => Some(call),
                None => {
                    return refuse(
                        recorder,
                        format!(
                            "the sidecar is at its limit of {} calls in flight; retry later",
                            admission.max
                        ),
                    );
                }
            },
        };
        // A handler that panics is answered INTERNAL instead of taking its
        // connection, and every other call on it, down as CANCELLED.
        let response = AssertUnwindSafe(self.inner.call(req)).catch_unwind();
        let cut_off = self.cut_off.clone();
        Box::pin(async move {
            let answered = match cut_off {
                None => response.await,
                Some(mut cut_off) => {
                    tokio::select! {
                        biased;
                        response = response => response,
                        () = cut(&mut cut_off) => Ok(Ok(tonic::Status::unavailable(STOPPING).into_http::<ResBody>())),
                    }
                }
            };
            let mut response = match answered {
                Ok(response) => response?,
                Err(_panic) => {
                    tracing::error!(rpc = %recorder.path(), "A gRPC handler panicked");
                    tonic::Status::internal("the sidecar failed while handling this call").into_http::<ResBody>()
                }
            };
            if let Some(code) = grpc_code(response.headers()) {
                recorder.finish(code);
                if let Some(rpc) = undeclared.filter(|_| code == Code::Unimplemented)
                    && !response.headers().contains_key("grpc-message")
                {
                    name_unimplemented(response.headers_mut(), &rpc);
                }
            }
            Ok(response.map(|inner| MeteredBody {
                inner,
                recorder,
                _admitted: admitted,
                _open: open,
            }))
        })
    }
}

pin_project! {
    /// The response body, watched for the trailers that carry the code.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        recorder: Recorder,
        // The call's place among those in flight, until the body is gone.
        _admitted: Option<InFlightCall>,
        // The call's mark on its connection, until the body is gone.
        _open: Option<OpenRequest>,
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

    fn path(&self) -> String {
        format!("{}/{}", self.service, self.method)
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

/// tonic answers an rpc no service declares with a bare UNIMPLEMENTED; say
/// which rpc, as for the ones declared but not built.
fn name_unimplemented(headers: &mut HeaderMap, rpc: &str) {
    let rpc = crate::api::blocks::quote(rpc);
    let message = format!("{rpc} is not implemented by this version of layotto-rs");
    // grpc-message is percent-encoded; spaces and ASCII punctuation pass.
    let encoded: String = message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '%' || c == ' ' {
                c.to_string()
            } else {
                let mut buf = [0u8; 4];
                c.encode_utf8(&mut buf).bytes().map(|b| format!("%{b:02X}")).collect()
            }
        })
        .collect();
    if let Ok(value) = http::HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", value);
    }
}

fn grpc_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    let n: i32 = value.to_str().ok()?.parse().ok()?;
    Some(Code::from(n))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use super::*;

    fn layered<F>(
        cut_off: watch::Receiver<bool>,
        handler: impl Fn() -> F + Clone + Send + 'static,
    ) -> GrpcMetrics<impl Service<Request<()>, Response = Response<String>, Error = Infallible, Future: Send + 'static>>
    where
        F: Future<Output = Result<Response<String>, Infallible>> + Send + 'static,
    {
        let layer = GrpcMetricsLayer::new(Metrics::new(), HashSet::from(["a.B/C".to_owned()])).cut_off_on(cut_off);
        layer.layer(tower::service_fn(move |_: Request<()>| handler()))
    }

    fn request() -> Request<()> {
        let mut request = Request::new(());
        *request.uri_mut() = http::Uri::from_static("/a.B/C");
        request
    }

    #[tokio::test]
    async fn a_handler_that_panics_is_answered_internal() {
        let (_cut, cut_off) = watch::channel(false);
        let mut service = layered(cut_off, || async {
            if request().uri().path().len() > 1 {
                panic!("a handler bug");
            }
            Ok(Response::new(String::new()))
        });
        let Ok(response) = service.call(request()).await;
        assert_eq!(grpc_code(response.headers()), Some(Code::Internal));
    }

    #[tokio::test]
    async fn a_call_running_at_the_cut_off_is_answered_unavailable() {
        let (cut, cut_off) = watch::channel(false);
        let mut service = layered(cut_off, || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Response::new(String::new()))
        });
        let call = tokio::spawn(service.call(request()));
        tokio::task::yield_now().await;
        cut.send(true).expect("the layer listens");
        let Ok(response) = call.await.expect("the call ends");
        assert_eq!(grpc_code(response.headers()), Some(Code::Unavailable));
        let message = response.headers().get("grpc-message").and_then(|m| m.to_str().ok());
        assert!(message.is_some_and(|m| m.contains("stopping")), "{message:?}");
    }
}
