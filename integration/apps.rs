//! Test applications: AppCallback servers that record what the sidecar
//! delivers and answer as a test tells them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use layotto::proto::dapr::runtime::v1 as dapr;
use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::app_callback_server::{AppCallback, AppCallbackServer};
use layotto::proto::runtime::v1::topic_event_response::TopicEventResponseStatus;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::support::eventually;

/// How the app answers an event, by its data.
pub type Answer = Arc<dyn Fn(&pb::TopicEventRequest, usize) -> TopicEventResponseStatus + Send + Sync>;

/// Everything the app received, in order.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<pb::TopicEventRequest>>>);

impl Received {
    pub fn events(&self) -> Vec<pb::TopicEventRequest> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn push(&self, event: pb::TopicEventRequest) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// How many deliveries carried `data`.
    pub fn count(&self, data: &[u8]) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|e| e.data == data)
            .count()
    }

    /// The distinct payloads received.
    pub fn distinct(&self) -> std::collections::HashSet<Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|e| e.data.clone())
            .collect()
    }

    /// Waits until `n` distinct payloads arrived.
    pub async fn wait_distinct(&self, n: usize, timeout: Duration) {
        eventually(&format!("{n} distinct events"), timeout, || async {
            (self.distinct().len() >= n).then_some(())
        })
        .await;
    }

    pub async fn wait_for(&self, data: &[u8], timeout: Duration) {
        let what = format!("event {}", String::from_utf8_lossy(data));
        eventually(&what, timeout, || async { (self.count(data) > 0).then_some(()) }).await;
    }
}

struct LayottoApp {
    subscriptions: Vec<pb::TopicSubscription>,
    received: Received,
    answer: Answer,
    delay: Duration,
}

#[tonic::async_trait]
impl AppCallback for LayottoApp {
    async fn list_topic_subscriptions(
        &self,
        _: Request<()>,
    ) -> Result<Response<pb::ListTopicSubscriptionsResponse>, Status> {
        Ok(Response::new(pb::ListTopicSubscriptionsResponse {
            subscriptions: self.subscriptions.clone(),
        }))
    }

    async fn on_topic_event(
        &self,
        req: Request<pb::TopicEventRequest>,
    ) -> Result<Response<pb::TopicEventResponse>, Status> {
        let event = req.into_inner();
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let seen = {
            let mut all = self.received.0.lock().unwrap_or_else(|p| p.into_inner());
            let seen = all.iter().filter(|e| e.data == event.data).count();
            all.push(event.clone());
            seen
        };
        let status = (self.answer)(&event, seen);
        Ok(Response::new(pb::TopicEventResponse { status: status as i32 }))
    }
}

/// A running test app on a port of its own.
pub struct TestApp {
    pub port: u16,
    pub received: Received,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    subscriptions: Vec<pb::TopicSubscription>,
    answer: Answer,
    delay: Duration,
}

/// Answers SUCCESS to everything.
pub fn always_success() -> Answer {
    Arc::new(|_, _| TopicEventResponseStatus::Success)
}

pub fn subscription(pubsub: &str, topic: &str) -> pb::TopicSubscription {
    pb::TopicSubscription {
        pubsub_name: pubsub.into(),
        topic: topic.into(),
        metadata: HashMap::new(),
    }
}

impl TestApp {
    pub async fn start(subscriptions: Vec<pb::TopicSubscription>, answer: Answer) -> TestApp {
        Self::start_slow(subscriptions, answer, Duration::ZERO).await
    }

    /// An app that takes `delay` over every event.
    pub async fn start_slow(subscriptions: Vec<pb::TopicSubscription>, answer: Answer, delay: Duration) -> TestApp {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut app = TestApp {
            port,
            received: Received::default(),
            stop: None,
            task: None,
            subscriptions,
            answer,
            delay,
        };
        app.serve().await;
        app
    }

    async fn serve(&mut self) {
        let service = LayottoApp {
            subscriptions: self.subscriptions.clone(),
            received: self.received.clone(),
            answer: self.answer.clone(),
            delay: self.delay,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let listener = eventually("the app's port to be free", Duration::from_secs(10), || async {
            tokio::net::TcpListener::bind(addr).await.ok()
        })
        .await;
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        self.task = Some(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AppCallbackServer::new(service))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        }));
        self.stop = Some(stop);
    }

    /// Stops serving (the app is down).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Serves again on the same port, keeping what it received.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.serve().await;
    }
}

/// An app built on a Dapr SDK: Dapr's AppCallback, routes included.
pub struct DaprApp {
    pub port: u16,
    pub received: Arc<Mutex<Vec<dapr::TopicEventRequest>>>,
    _stop: oneshot::Sender<()>,
}

struct DaprService {
    subscriptions: Vec<dapr::TopicSubscription>,
    received: Arc<Mutex<Vec<dapr::TopicEventRequest>>>,
}

#[tonic::async_trait]
impl dapr::app_callback_server::AppCallback for DaprService {
    async fn on_invoke(
        &self,
        _: Request<layotto::proto::dapr::common::v1::InvokeRequest>,
    ) -> Result<Response<layotto::proto::dapr::common::v1::InvokeResponse>, Status> {
        Err(Status::unimplemented("no methods"))
    }

    async fn list_topic_subscriptions(
        &self,
        _: Request<()>,
    ) -> Result<Response<dapr::ListTopicSubscriptionsResponse>, Status> {
        Ok(Response::new(dapr::ListTopicSubscriptionsResponse {
            subscriptions: self.subscriptions.clone(),
        }))
    }

    async fn on_topic_event(
        &self,
        req: Request<dapr::TopicEventRequest>,
    ) -> Result<Response<dapr::TopicEventResponse>, Status> {
        let event = req.into_inner();
        // As the Python SDK does: an event for an unknown route is not ours.
        if event.path != "/orders" {
            return Err(Status::unimplemented(format!("no handler for path {}", event.path)));
        }
        self.received.lock().unwrap_or_else(|p| p.into_inner()).push(event);
        Ok(Response::new(dapr::TopicEventResponse { status: 0 }))
    }

    async fn list_input_bindings(&self, _: Request<()>) -> Result<Response<dapr::ListInputBindingsResponse>, Status> {
        Ok(Response::new(dapr::ListInputBindingsResponse::default()))
    }

    async fn on_binding_event(
        &self,
        _: Request<dapr::BindingEventRequest>,
    ) -> Result<Response<dapr::BindingEventResponse>, Status> {
        Err(Status::unimplemented("no bindings"))
    }
}

impl DaprApp {
    pub async fn start(pubsub: &str, topic: &str) -> DaprApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let service = DaprService {
            subscriptions: vec![dapr::TopicSubscription {
                pubsub_name: pubsub.into(),
                topic: topic.into(),
                routes: Some(dapr::TopicRoutes {
                    rules: Vec::new(),
                    default: "/orders".into(),
                }),
                ..Default::default()
            }],
            received: received.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(dapr::app_callback_server::AppCallbackServer::new(service))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        DaprApp {
            port,
            received,
            _stop: stop,
        }
    }
}

/// One POST an HTTP app received: its path, JSON body and headers.
#[derive(Clone, Debug)]
pub struct HttpDelivery {
    pub path: String,
    pub body: serde_json::Value,
    pub headers: HashMap<String, String>,
}

/// How an HTTP app answers a POST: by path, body, and how many times this
/// event id came before. Answers (HTTP status, body).
pub type HttpAnswer = Arc<dyn Fn(&str, &serde_json::Value, usize) -> (u16, String) + Send + Sync>;

/// An app behind Dapr's HTTP app channel: serves `GET /dapr/subscribe`
/// (404 when `subscribe` is null), `GET /healthz` (200 while healthy,
/// 503 otherwise), and records every POST.
pub struct HttpApp {
    pub port: u16,
    received: Arc<Mutex<Vec<HttpDelivery>>>,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    _stop: oneshot::Sender<()>,
}

#[derive(Clone)]
struct HttpAppState {
    subscribe: serde_json::Value,
    answer: HttpAnswer,
    received: Arc<Mutex<Vec<HttpDelivery>>>,
    healthy: Arc<std::sync::atomic::AtomicBool>,
}

pub fn http_success() -> HttpAnswer {
    Arc::new(|_, _, _| (200, r#"{"status":"SUCCESS"}"#.to_owned()))
}

impl HttpApp {
    pub async fn start(subscribe: serde_json::Value, answer: HttpAnswer) -> HttpApp {
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode, Uri};
        use axum::response::IntoResponse;
        use std::sync::atomic::Ordering;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = HttpAppState {
            subscribe,
            answer,
            received: Arc::new(Mutex::new(Vec::new())),
            healthy: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        };
        let (received, healthy) = (state.received.clone(), state.healthy.clone());
        async fn list_subscriptions(State(s): State<HttpAppState>) -> axum::response::Response {
            if s.subscribe.is_null() {
                StatusCode::NOT_FOUND.into_response()
            } else {
                axum::Json(s.subscribe.clone()).into_response()
            }
        }
        async fn health(State(s): State<HttpAppState>) -> StatusCode {
            if s.healthy.load(Ordering::SeqCst) {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
        async fn post(
            State(s): State<HttpAppState>,
            uri: Uri,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::response::Response {
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let headers = headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            let path = uri.path().to_owned();
            let before = {
                let mut received = s.received.lock().unwrap_or_else(|p| p.into_inner());
                let id = body["id"].clone();
                let before = received.iter().filter(|d| d.body["id"] == id && !id.is_null()).count();
                received.push(HttpDelivery {
                    path: path.clone(),
                    body: body.clone(),
                    headers,
                });
                before
            };
            let (status, text) = (s.answer)(&path, &body, before);
            (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), text).into_response()
        }
        let router = axum::Router::new()
            .route("/dapr/subscribe", axum::routing::get(list_subscriptions))
            .route("/healthz", axum::routing::get(health))
            .fallback(axum::routing::post(post))
            .with_state(state);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        HttpApp {
            port,
            received,
            healthy,
            _stop: stop,
        }
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<HttpDelivery> {
        self.received.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The `data` of each event POSTed to `path`.
    pub fn data_at(&self, path: &str) -> Vec<serde_json::Value> {
        self.received()
            .into_iter()
            .filter(|d| d.path == path)
            .map(|d| d.body["data"].clone())
            .collect()
    }

    /// Waits until `n` events reached `path`.
    pub async fn wait_at(&self, path: &str, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        eventually(&format!("{n} events at {path}"), timeout, || async {
            let data = self.data_at(path);
            (data.len() >= n).then_some(data)
        })
        .await
    }
}
