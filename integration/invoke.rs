//! Service invocation end to end: an app calls another app by its id
//! through its sidecar, the target's sidecar and the target app, on
//! Layotto's InvokeService, Dapr's gRPC InvokeService and Dapr's HTTP
//! invoke; instances behind a shared registry (redis, sqlite, postgresql)
//! share the calls and one killed with SIGKILL costs at most one failure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use layotto::proto::bench::RepeatRequest;
use layotto::proto::bench::echo_client::EchoClient;
use layotto::proto::bench::echo_server::{Echo, EchoServer};
use layotto::proto::dapr::common::v1 as common;
use layotto::proto::dapr::runtime::v1 as dapr;
use layotto::proto::dapr::runtime::v1::dapr_client::DaprClient;
use layotto::proto::runtime::v1 as pb;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::support::{self, Service, Sidecar, backend_available, eventually, free_port, unique};

/// An HTTP app that answers every request with what it got, as JSON, and
/// its name; `teapot` answers 418 with a body of its own.
struct EchoApp {
    port: u16,
    _stop: oneshot::Sender<()>,
}

impl EchoApp {
    async fn start(name: &str) -> EchoApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let name: Arc<str> = name.into();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let name = name.clone();
            async move {
                if uri.path() == "/teapot" {
                    return (
                        StatusCode::IM_A_TEAPOT,
                        [("content-type", "text/plain"), ("x-why", "tea")],
                        "short and stout",
                    )
                        .into_response();
                }
                let headers: HashMap<String, String> = headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect();
                let echo = json!({
                    "name": &*name,
                    "verb": method.as_str(),
                    "path": uri.path(),
                    "query": uri.query().unwrap_or_default(),
                    "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                });
                (
                    [("content-type", "application/json"), ("x-echo", "yes")],
                    echo.to_string(),
                )
                    .into_response()
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        EchoApp { port, _stop: stop }
    }
}

fn http_app(port: u16) -> String {
    format!("[app]\napp_id = \"{{}}\"\nport = {port}\nprotocol = \"http\"\n")
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn echo_of(data: &[u8]) -> Value {
    serde_json::from_slice(data).unwrap_or_else(|e| panic!("not an echo ({e}): {}", String::from_utf8_lossy(data)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_front_ends_reach_the_target_app_with_everything_intact() {
    let target_app = EchoApp::start("orders").await;
    let mut callee_config = support::config(&http_app(target_app.port).replace("{}", "orders"));
    callee_config.server.internal = Some("127.0.0.1:0".parse().expect("addr"));
    let callee = layotto::Runtime::start(callee_config).await.expect("callee starts");
    let internal = callee.internal_addr().expect("internal listener");

    let caller = support::start(&format!(
        "[app]\napp_id = \"checkout\"\n[name_resolution.apps]\ntype = \"static\"\nmetadata = {{ orders = \"{internal}\" }}\n"
    ))
    .await;
    support::wait_ready(&caller).await;

    // Layotto's InvokeService: method, verb, query, body, content type and
    // headers reach the app; its content type comes back.
    let mut layotto = support::client(&caller).await;
    let mut request = tonic::Request::new(pb::InvokeServiceRequest {
        id: "orders".into(),
        message: Some(pb::CommonInvokeRequest {
            method: "/orders/42".into(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: b"{\"qty\":1}".to_vec(),
            }),
            content_type: "application/json".into(),
            http_extension: Some(pb::HttpExtension {
                verb: pb::http_extension::Verb::Put as i32,
                querystring: "a=1&b=2".into(),
            }),
        }),
    });
    request
        .metadata_mut()
        .insert("x-tenant", "acme".parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().expect("ascii"));
    let response = layotto.invoke_service(request).await.expect("Layotto InvokeService");
    assert_eq!(
        response.metadata().get("x-echo").and_then(|v| v.to_str().ok()),
        Some("yes")
    );
    let answer = response.into_inner();
    assert_eq!(answer.content_type, "application/json");
    let echo = echo_of(&answer.data.expect("data").value);
    assert_eq!(echo["verb"], "PUT");
    assert_eq!(echo["path"], "/orders/42");
    assert_eq!(echo["query"], "a=1&b=2");
    assert_eq!(echo["body"], "{\"qty\":1}");
    assert_eq!(echo["headers"]["content-type"], "application/json");
    assert_eq!(echo["headers"]["x-tenant"], "acme");
    assert_eq!(echo["headers"]["dapr-caller-app-id"], "checkout");
    assert_eq!(echo["headers"]["dapr-callee-app-id"], "orders");
    let traceparent = echo["headers"]["traceparent"]
        .as_str()
        .expect("a traceparent reaches the app");
    assert!(traceparent.contains(TRACE_ID), "{traceparent}");
    assert_ne!(traceparent, TRACEPARENT, "the sidecars' spans are children");
    assert!(echo["headers"].get("dapr-api-token").is_none());

    // The app's error comes back as it sent it: 418 is no gRPC code, so
    // UNKNOWN with the app's body.
    let teapot = layotto
        .invoke_service(pb::InvokeServiceRequest {
            id: "orders".into(),
            message: Some(pb::CommonInvokeRequest {
                method: "teapot".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("418");
    assert_eq!(teapot.code(), tonic::Code::Unknown);
    assert_eq!(teapot.message(), "short and stout");

    // Dapr's gRPC InvokeService.
    let mut dapr = DaprClient::connect(format!("http://{}", caller.grpc_addr()))
        .await
        .expect("connect");
    let answer = dapr
        .invoke_service(dapr::InvokeServiceRequest {
            id: "orders".into(),
            message: Some(common::InvokeRequest {
                method: "ping".into(),
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: b"hi".to_vec(),
                }),
                content_type: "text/plain".into(),
                http_extension: Some(common::HttpExtension {
                    verb: common::http_extension::Verb::Post as i32,
                    querystring: String::new(),
                }),
            }),
        })
        .await
        .expect("Dapr InvokeService")
        .into_inner();
    let echo = echo_of(&answer.data.expect("data").value);
    assert_eq!(
        (echo["verb"].as_str(), echo["path"].as_str(), echo["body"].as_str()),
        (Some("POST"), Some("/ping"), Some("hi"))
    );

    // Dapr's HTTP invoke, in both forms.
    let http = reqwest::Client::new();
    let base = format!("http://{}", caller.dapr_http_addr().expect("dapr http"));
    let response = http
        .patch(format!("{base}/v1.0/invoke/orders/method/items/7?x=y"))
        .header("x-tenant", "acme")
        .header("traceparent", TRACEPARENT)
        .body("patched")
        .send()
        .await
        .expect("HTTP invoke");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("x-echo").and_then(|v| v.to_str().ok()),
        Some("yes")
    );
    let echo: Value = response.json().await.expect("json");
    assert_eq!(echo["verb"], "PATCH");
    assert_eq!(echo["path"], "/items/7");
    assert_eq!(echo["query"], "x=y");
    assert_eq!(echo["body"], "patched");
    assert!(
        echo["headers"]["traceparent"]
            .as_str()
            .is_some_and(|t| t.contains(TRACE_ID))
    );
    let response = http
        .delete(format!("{base}/carts/9"))
        .header("dapr-app-id", "orders")
        .send()
        .await
        .expect("dapr-app-id form");
    let echo: Value = response.json().await.expect("json");
    assert_eq!(
        (echo["verb"].as_str(), echo["path"].as_str()),
        (Some("DELETE"), Some("/carts/9"))
    );
    assert!(
        echo["headers"].get("dapr-app-id").is_none(),
        "the header is not passed on"
    );
    let teapot = http
        .get(format!("{base}/v1.0/invoke/orders/method/teapot"))
        .send()
        .await
        .expect("teapot");
    assert_eq!(teapot.status(), 418);
    assert_eq!(teapot.headers().get("x-why").and_then(|v| v.to_str().ok()), Some("tea"));
    assert_eq!(teapot.text().await.expect("body"), "short and stout");
    let no_target = http.get(format!("{base}/not/a/route")).send().await.expect("no target");
    assert_eq!(no_target.status(), 404);
    assert_eq!(
        no_target.json::<Value>().await.expect("json")["errorCode"],
        "ERR_DIRECT_INVOKE"
    );

    // An app id nobody serves: NOT_FOUND naming it, at once.
    let started = std::time::Instant::now();
    let missing = layotto
        .invoke_service(pb::InvokeServiceRequest {
            id: "nobody".into(),
            message: Some(pb::CommonInvokeRequest::default()),
        })
        .await
        .expect_err("unknown app id");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    assert!(missing.message().contains("nobody"), "{}", missing.message());
    println!("unknown app id answered in {:?}", started.elapsed());

    // A target whose sidecar is gone: UNAVAILABLE, not a hang.
    callee.shutdown().await;
    let gone = layotto
        .invoke_service(pb::InvokeServiceRequest {
            id: "orders".into(),
            message: Some(pb::CommonInvokeRequest::default()),
        })
        .await
        .expect_err("sidecar down");
    assert_eq!(gone.code(), tonic::Code::Unavailable, "{gone:?}");

    let metrics = support::metrics(&caller).await;
    assert!(
        metrics.contains("layotto_invoke_requests_total{app_id=\"orders\""),
        "{metrics}"
    );
    assert!(metrics.contains("layotto_name_resolution_cache_total{result=\"hit\"}"));
    caller.shutdown().await;
}

/// Which app answered a Layotto InvokeService through `sidecar`.
async fn who_answers(
    client: &mut layotto::proto::runtime::v1::runtime_client::RuntimeClient<tonic::transport::Channel>,
    app_id: &str,
) -> Result<String, tonic::Status> {
    let answer = client
        .invoke_service(pb::InvokeServiceRequest {
            id: app_id.into(),
            message: Some(pb::CommonInvokeRequest {
                method: "who".into(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    Ok(echo_of(&answer.data.unwrap_or_default().value)["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Two instances of one app id behind `resolution` (a TOML table body),
/// one caller: both get calls; after one is killed with SIGKILL at most one
/// call fails, then all succeed; when it returns it gets calls again.
async fn failover(resolution: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let app_id = unique("inv");
    let apps = [EchoApp::start("one").await, EchoApp::start("two").await];
    let mut instances = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        let config = format!(
            "[server]\ninternal = \"127.0.0.1:{}\"\n[app]\napp_id = \"{app_id}\"\nport = {}\nprotocol = \"http\"\n[name_resolution.registry]\n{resolution}\n",
            free_port(),
            app.port
        );
        instances.push(Sidecar::start_with(dir.path(), &format!("instance{i}"), &config).await);
    }
    let caller_config = format!(
        "[server]\ninternal = \"127.0.0.1:{}\"\n[app]\napp_id = \"caller-{app_id}\"\n[name_resolution.registry]\n{resolution}\n",
        free_port()
    );
    let caller = Sidecar::start_with(dir.path(), "caller", &caller_config).await;
    let mut client = support::client_at(caller.grpc_addr()).await;

    let seen = Arc::new(std::sync::Mutex::new(HashMap::new()));
    eventually("calls to reach both instances", Duration::from_secs(20), || {
        let mut client = client.clone();
        let app_id = app_id.clone();
        let seen = seen.clone();
        async move {
            for _ in 0..4 {
                if let Ok(name) = who_answers(&mut client, &app_id).await {
                    *seen.lock().expect("lock").entry(name).or_insert(0) += 1;
                }
            }
            (seen.lock().expect("lock").len() == 2).then_some(())
        }
    })
    .await;
    println!("calls before the kill: {:?}", seen.lock().expect("lock"));

    instances[0].kill().await;
    let mut failures = 0;
    for _ in 0..20 {
        match who_answers(&mut client, &app_id).await {
            Ok(name) => assert_eq!(name, "two", "only the live instance answers"),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                failures += 1;
            }
        }
    }
    assert!(failures <= 1, "{failures} calls failed after the kill");

    instances[0].spawn().await;
    eventually(
        "the returned instance to get calls again",
        Duration::from_secs(30),
        || {
            let mut client = client.clone();
            let app_id = app_id.clone();
            async move {
                for _ in 0..4 {
                    if who_answers(&mut client, &app_id).await.ok().as_deref() == Some("one") {
                        return Some(());
                    }
                }
                None
            }
        },
    )
    .await;
    drop(caller);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_resolution_fails_over_and_back() {
    if !backend_available(Service::Redis.name(), Service::Redis.addr()) {
        return;
    }
    let prefix = unique("nr");
    failover(&format!(
        "type = \"redis\"\nmetadata = {{ redisHost = \"{}\", keyPrefix = \"{prefix}||\", updateInterval = \"2s\" }}",
        Service::Redis.addr()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_resolution_fails_over_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("hosts.db");
    failover(&format!(
        "type = \"sqlite\"\nmetadata = {{ connectionString = \"{}\", updateInterval = \"2s\" }}",
        file.display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_resolution_fails_over_and_back() {
    if !backend_available(Service::Postgres.name(), Service::Postgres.addr()) {
        return;
    }
    let table = unique("hosts").replace('-', "_");
    failover(&format!(
        "type = \"postgresql\"\nmetadata = {{ connectionString = \"{}\", tableName = \"{table}\", updateInterval = \"2s\" }}",
        "postgres://postgres@127.0.0.1:5432/test"
    ))
    .await;
}

/// A certificate authority made for one test.
struct TestCa {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("CA").pem();
        TestCa {
            pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` of a sidecar certificate
    /// under `dir` (a name other than the loopback address, as peers are
    /// known by their CA, not their names).
    fn issue_into(&self, dir: &std::path::Path) {
        let mut params = rcgen::CertificateParams::new(vec!["sidecar.example".to_owned()]).expect("params");
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        std::fs::create_dir_all(dir).expect("dir");
        // Written to the side and renamed over, as a secret update does.
        for (name, text) in [
            ("ca.pem", self.pem.clone()),
            ("cert.pem", cert.pem()),
            ("key.pem", key.serialize_pem()),
        ] {
            let staged = dir.join(format!(".{name}.new"));
            std::fs::write(&staged, text).expect("write");
            std::fs::rename(&staged, dir.join(name)).expect("rename");
        }
    }
}

fn mtls_section(dir: &std::path::Path) -> String {
    format!(
        "[server.mtls]\nca = \"{0}/ca.pem\"\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\nreload_interval = \"100ms\"\n",
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_a_sidecar_from_another_ca_and_follows_certificate_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ours, theirs) = (TestCa::new("ours"), TestCa::new("theirs"));
    for (who, ca) in [("callee", &ours), ("friend", &ours), ("stranger", &theirs)] {
        ca.issue_into(&dir.path().join(who));
    }
    let target_app = EchoApp::start("orders").await;
    let callee = support::start(&format!(
        "[server]\ninternal = \"127.0.0.1:0\"\n{}{}",
        mtls_section(&dir.path().join("callee")),
        http_app(target_app.port).replace("{}", "orders")
    ))
    .await;
    let internal = callee.internal_addr().expect("internal listener");
    let caller = |who: &str| {
        format!(
            "{}[app]\napp_id = \"{who}\"\n[name_resolution.apps]\ntype = \"static\"\nmetadata = {{ orders = \"{internal}\" }}\n",
            mtls_section(&dir.path().join(who))
        )
    };
    let friend = support::start(&caller("friend")).await;
    let stranger = support::start(&caller("stranger")).await;
    let call = |sidecar: &layotto::Runtime| {
        let addr = sidecar.grpc_addr();
        async move {
            let mut client = support::client_at(addr).await;
            who_answers(&mut client, "orders").await
        }
    };

    // Same CA: the call goes through, TLS both ways.
    assert_eq!(call(&friend).await.expect("same CA"), "orders");
    // Another CA: refused, and said so.
    let refused = call(&stranger).await.expect_err("another CA");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    // No certificate at all (a plaintext client): refused too.
    let mut plain = layotto::proto::dapr::internals::v1::service_invocation_client::ServiceInvocationClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{internal}"))
            .expect("endpoint")
            .connect_lazy(),
    );
    let plaintext = plain
        .call_local(layotto::proto::dapr::internals::v1::InternalInvokeRequest::default())
        .await
        .expect_err("plaintext on an mTLS listener");
    // The client reads the TLS alert as a broken HTTP/2 frame.
    println!("a plaintext client gets: {plaintext:?}");

    // The stranger's files are replaced by ones from our CA: it is let in
    // once it has re-read them, without a restart.
    ours.issue_into(&dir.path().join("stranger"));
    eventually("the renewed certificate to be used", Duration::from_secs(10), || {
        let call = call(&stranger);
        async move { call.await.ok() }
    })
    .await;
    // And the other way: the friend's files now hold the other CA's.
    theirs.issue_into(&dir.path().join("friend"));
    eventually("the foreign certificate to be refused", Duration::from_secs(10), || {
        let call = call(&friend);
        async move { call.await.err() }
    })
    .await;
    for sidecar in [friend, stranger, callee] {
        sidecar.shutdown().await;
    }
}

/// A gRPC app: Dapr's AppCallback.OnInvoke answers with what it got, as
/// JSON; a plain gRPC service (layotto.bench.v1.Echo), reached only by
/// gRPC proxying, greets with the metadata it got, streams on `Repeat`,
/// and fails `SayHello` for the name `fail` with a status and a trailer.
struct GrpcApp {
    port: u16,
    _stop: oneshot::Sender<()>,
}

#[derive(Clone)]
struct GrpcAppService {
    name: Arc<str>,
}

fn metadata_json(metadata: &tonic::metadata::MetadataMap) -> Value {
    let map: serde_json::Map<String, Value> = metadata
        .iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                Some((k.as_str().to_owned(), Value::String(v.to_str().ok()?.to_owned())))
            }
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect();
    Value::Object(map)
}

#[tonic::async_trait]
impl dapr::app_callback_server::AppCallback for GrpcAppService {
    async fn on_invoke(
        &self,
        request: tonic::Request<common::InvokeRequest>,
    ) -> Result<tonic::Response<common::InvokeResponse>, tonic::Status> {
        let metadata = metadata_json(request.metadata());
        let request = request.into_inner();
        let extension = request.http_extension.unwrap_or_default();
        let verb = common::http_extension::Verb::try_from(extension.verb)
            .map(|v| v.as_str_name())
            .unwrap_or("?");
        let echo = json!({
            "name": &*self.name,
            "method": request.method,
            "data": String::from_utf8_lossy(&request.data.unwrap_or_default().value),
            "content_type": request.content_type,
            "verb": verb,
            "querystring": extension.querystring,
            "metadata": metadata,
        });
        Ok(tonic::Response::new(common::InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: echo.to_string().into_bytes(),
            }),
            content_type: "application/json".into(),
        }))
    }

    async fn list_topic_subscriptions(
        &self,
        _: tonic::Request<()>,
    ) -> Result<tonic::Response<dapr::ListTopicSubscriptionsResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }

    async fn on_topic_event(
        &self,
        _: tonic::Request<dapr::TopicEventRequest>,
    ) -> Result<tonic::Response<dapr::TopicEventResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("no topics"))
    }

    async fn list_input_bindings(
        &self,
        _: tonic::Request<()>,
    ) -> Result<tonic::Response<dapr::ListInputBindingsResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }

    async fn on_binding_event(
        &self,
        _: tonic::Request<dapr::BindingEventRequest>,
    ) -> Result<tonic::Response<dapr::BindingEventResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("no bindings"))
    }
}

#[tonic::async_trait]
impl Echo for GrpcAppService {
    async fn say_hello(
        &self,
        request: tonic::Request<pb::SayHelloRequest>,
    ) -> Result<tonic::Response<pb::SayHelloResponse>, tonic::Status> {
        let metadata = metadata_json(request.metadata());
        let request = request.into_inner();
        if request.name == "fail" {
            let mut trailers = tonic::metadata::MetadataMap::new();
            trailers.insert("x-app-trailer", "kept".parse().expect("ascii"));
            return Err(tonic::Status::with_metadata(
                tonic::Code::FailedPrecondition,
                "out of stock",
                trailers,
            ));
        }
        let mut response = tonic::Response::new(pb::SayHelloResponse {
            hello: json!({ "name": &*self.name, "to": request.name, "metadata": metadata }).to_string(),
            data: request.data,
        });
        response
            .metadata_mut()
            .insert("x-app-header", "sent".parse().expect("ascii"));
        Ok(response)
    }

    async fn get_state(
        &self,
        _: tonic::Request<pb::GetStateRequest>,
    ) -> Result<tonic::Response<pb::GetStateResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("no state here"))
    }

    async fn save_state(&self, _: tonic::Request<pb::SaveStateRequest>) -> Result<tonic::Response<()>, tonic::Status> {
        Err(tonic::Status::unimplemented("no state here"))
    }

    type RepeatStream = futures::stream::Iter<std::vec::IntoIter<Result<pb::SayHelloResponse, tonic::Status>>>;

    async fn repeat(
        &self,
        request: tonic::Request<RepeatRequest>,
    ) -> Result<tonic::Response<Self::RepeatStream>, tonic::Status> {
        let request = request.into_inner();
        let answers: Vec<_> = (0..request.count.min(100))
            .map(|i| {
                Ok(pb::SayHelloResponse {
                    hello: format!("{} {i}", request.text),
                    data: None,
                })
            })
            .collect();
        Ok(tonic::Response::new(futures::stream::iter(answers)))
    }
}

impl GrpcApp {
    async fn start(name: &str) -> GrpcApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let service = GrpcAppService { name: name.into() };
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(dapr::app_callback_server::AppCallbackServer::new(service.clone()))
                .add_service(EchoServer::new(service))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        GrpcApp { port, _stop: stop }
    }
}

/// A request for the stock app by gRPC proxying, with a header of its own.
fn with_target<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("dapr-app-id", "stock".parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("x-custom", "carried".parse().expect("ascii"));
    request
}

/// What the gRPC app's OnInvoke echoed.
fn check_on_invoke(echo: &Value, caller: &str) {
    assert_eq!(echo["name"], "stock", "{echo}");
    assert_eq!(echo["method"], "reserve", "{echo}");
    assert_eq!(echo["data"], "5 units", "{echo}");
    assert_eq!(echo["content_type"], "text/plain", "{echo}");
    assert_eq!(echo["verb"], "POST", "{echo}");
    assert_eq!(echo["querystring"], "sku=42", "{echo}");
    assert_eq!(echo["metadata"]["dapr-caller-app-id"], caller, "{echo}");
    assert_eq!(echo["metadata"]["dapr-callee-app-id"], "stock", "{echo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sidecars_and_three_apps_over_every_front_end_proxying_and_the_python_sdk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = format!(
        "[name_resolution.registry]\ntype = \"sqlite\"\nmetadata = {{ connectionString = \"{}\" }}\n",
        dir.path().join("hosts.db").display()
    );
    let internal = "[server]\ninternal = \"127.0.0.1:0\"\n";
    let orders_app = EchoApp::start("orders").await;
    let stock_app = GrpcApp::start("stock").await;
    let orders = support::start(&format!(
        "{internal}[app]\napp_id = \"orders\"\nport = {}\nprotocol = \"http\"\n{registry}",
        orders_app.port
    ))
    .await;
    let stock = support::start(&format!(
        "{internal}[app]\napp_id = \"stock\"\nport = {}\nprotocol = \"grpc\"\n{registry}",
        stock_app.port
    ))
    .await;
    // The third app is this test (and the Python script) behind `checkout`.
    let checkout = support::start(&format!("{internal}[app]\napp_id = \"checkout\"\n{registry}")).await;
    for sidecar in [&orders, &stock, &checkout] {
        support::wait_ready(sidecar).await;
    }

    // Layotto's InvokeService to the gRPC app.
    let mut layotto = support::client(&checkout).await;
    let reserve = |ext_querystring: &str| pb::CommonInvokeRequest {
        method: "reserve".into(),
        data: Some(prost_types::Any {
            type_url: String::new(),
            value: b"5 units".to_vec(),
        }),
        content_type: "text/plain".into(),
        http_extension: Some(pb::HttpExtension {
            verb: pb::http_extension::Verb::Post as i32,
            querystring: ext_querystring.into(),
        }),
    };
    let answer = layotto
        .invoke_service(pb::InvokeServiceRequest {
            id: "stock".into(),
            message: Some(reserve("sku=42")),
        })
        .await
        .expect("Layotto InvokeService to a gRPC app")
        .into_inner();
    assert_eq!(answer.content_type, "application/json");
    check_on_invoke(&echo_of(&answer.data.expect("data").value), "checkout");

    // Dapr's gRPC InvokeService, from the orders sidecar this time.
    let mut dapr = DaprClient::connect(format!("http://{}", orders.grpc_addr()))
        .await
        .expect("connect");
    let answer = dapr
        .invoke_service(dapr::InvokeServiceRequest {
            id: "stock".into(),
            message: Some(common::InvokeRequest {
                method: "reserve".into(),
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: b"5 units".to_vec(),
                }),
                content_type: "text/plain".into(),
                http_extension: Some(common::HttpExtension {
                    verb: common::http_extension::Verb::Post as i32,
                    querystring: "sku=42".into(),
                }),
            }),
        })
        .await
        .expect("Dapr InvokeService")
        .into_inner();
    check_on_invoke(&echo_of(&answer.data.expect("data").value), "orders");

    // Dapr's HTTP invoke to the gRPC app: the verb and query string become
    // its HTTP extension.
    let http = reqwest::Client::new();
    let base = format!("http://{}", checkout.dapr_http_addr().expect("dapr http"));
    let response = http
        .post(format!("{base}/v1.0/invoke/stock/method/reserve?sku=42"))
        .header("content-type", "text/plain")
        .body("5 units")
        .send()
        .await
        .expect("HTTP invoke");
    assert_eq!(response.status(), 200);
    check_on_invoke(&response.json().await.expect("json"), "checkout");
    // And to the HTTP app, from the stock sidecar.
    let stock_base = format!("http://{}", stock.dapr_http_addr().expect("dapr http"));
    let echo: Value = http
        .get(format!("{stock_base}/v1.0/invoke/orders/method/shelves?floor=2"))
        .header("x-tenant", "acme")
        .send()
        .await
        .expect("HTTP invoke")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            echo["name"].as_str(),
            echo["verb"].as_str(),
            echo["path"].as_str(),
            echo["query"].as_str()
        ),
        (Some("orders"), Some("GET"), Some("/shelves"), Some("floor=2"))
    );
    assert_eq!(echo["headers"]["x-tenant"], "acme");
    assert_eq!(echo["headers"]["dapr-caller-app-id"], "stock");

    // gRPC proxying: a plain client of the app's own service, pointed at
    // its sidecar with dapr-app-id; unary, server streaming, errors.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", checkout.grpc_addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut echo_client = EchoClient::new(channel);
    let response = echo_client
        .say_hello(with_target(pb::SayHelloRequest {
            service_name: String::new(),
            name: "proxy".into(),
            data: None,
        }))
        .await
        .expect("proxied unary call");
    assert_eq!(
        response.metadata().get("x-app-header").and_then(|v| v.to_str().ok()),
        Some("sent")
    );
    let hello: Value = serde_json::from_str(&response.into_inner().hello).expect("json");
    assert_eq!(
        (hello["name"].as_str(), hello["to"].as_str()),
        (Some("stock"), Some("proxy"))
    );
    assert_eq!(hello["metadata"]["x-custom"], "carried");
    assert_eq!(hello["metadata"]["dapr-caller-app-id"], "checkout");
    let mut stream = echo_client
        .repeat(with_target(RepeatRequest {
            text: "tick".into(),
            count: 5,
        }))
        .await
        .expect("proxied server stream")
        .into_inner();
    let mut ticks = Vec::new();
    while let Some(item) = stream.message().await.expect("stream item") {
        ticks.push(item.hello);
    }
    assert_eq!(ticks, ["tick 0", "tick 1", "tick 2", "tick 3", "tick 4"]);
    let failed = echo_client
        .say_hello(with_target(pb::SayHelloRequest {
            service_name: String::new(),
            name: "fail".into(),
            data: None,
        }))
        .await
        .expect_err("the app's error");
    assert_eq!(failed.code(), tonic::Code::FailedPrecondition);
    assert_eq!(failed.message(), "out of stock");
    assert_eq!(
        failed.metadata().get("x-app-trailer").and_then(|v| v.to_str().ok()),
        Some("kept")
    );

    // The Dapr Python SDK's invoke_method from the checkout app, over
    // HTTP and over gRPC.
    if let Some(python) = crate::sdk::sdk_python() {
        for protocol in ["http", "grpc"] {
            let (grpc_port, http_port) = (
                checkout.grpc_addr().port().to_string(),
                checkout.dapr_http_addr().expect("dapr http").port().to_string(),
            );
            let python = python.clone();
            let output = tokio::task::spawn_blocking(move || {
                std::process::Command::new(python)
                    .arg("integration/sdk/python_invoke.py")
                    .env("DAPR_RUNTIME_HOST", "127.0.0.1")
                    .env("DAPR_GRPC_PORT", grpc_port)
                    .env("DAPR_HTTP_PORT", http_port)
                    .env("DAPR_HEALTH_TIMEOUT", "10")
                    .env("DAPR_API_METHOD_INVOCATION_PROTOCOL", protocol)
                    .env("ORDERS_APP", "orders")
                    .env("STOCK_APP", "stock")
                    .env("CALLER_APP", "checkout")
                    .env_remove("DAPR_API_TOKEN")
                    .output()
            })
            .await
            .expect("joined")
            .expect("python runs");
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success() && stdout.contains("all checks passed"),
                "python sdk over {protocol}:\n{stdout}\n{stderr}"
            );
            println!("the Python SDK's invoke_method over {protocol}: {}", stdout.trim());
        }
    }
    for sidecar in [checkout, orders, stock] {
        sidecar.shutdown().await;
    }
}
