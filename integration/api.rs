//! The API surface of a running sidecar: SayHello and its errors,
//! rpcs not built yet, gRPC health and reflection, the actuator and the
//! Dapr HTTP endpoints.

use futures::StreamExt;
use layotto::proto::runtime::v1::{
    GetStateRequest, InvokeBindingRequest, InvokeServiceRequest, ListFileRequest, SayHelloRequest,
};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::{self, http_get, say_hello};

const TWO_HELLOS: &str = r#"
[app]
app_id = "app1"
[hellos.helloworld]
type = "helloworld"
hello = "greeting"
[hellos.other]
type = "helloworld"
metadata = { hello = "hey" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn say_hello_answers_the_configured_greeting_and_echoes_data() {
    let rt = support::start(TWO_HELLOS).await;
    let mut client = support::client(&rt).await;
    assert_eq!(say_hello(&mut client, "helloworld", "").await.expect("ok"), "greeting");
    assert_eq!(
        say_hello(&mut client, "helloworld", "layotto").await.expect("ok"),
        "greeting, layotto"
    );
    assert_eq!(say_hello(&mut client, "other", "you").await.expect("ok"), "hey, you");

    let data = prost_types::Any {
        type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
        value: b"\n\x03abc".to_vec(),
    };
    let reply = client
        .say_hello(SayHelloRequest {
            service_name: "helloworld".into(),
            name: String::new(),
            data: Some(data.clone()),
        })
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(reply.data, Some(data));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_component_names_are_invalid_arguments_naming_the_known_ones() {
    let rt = support::start(TWO_HELLOS).await;
    let mut client = support::client(&rt).await;
    let err = say_hello(&mut client, "nope", "x").await.expect_err("unknown");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "hellos component 'nope' is not configured; configured: helloworld, other"
    );
    let err = say_hello(&mut client, "", "x").await.expect_err("empty");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("service_name is empty"), "{}", err.message());
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_with_no_components_is_a_failed_precondition() {
    let rt = support::start("").await;
    let mut client = support::client(&rt).await;
    let err = say_hello(&mut client, "helloworld", "x").await.expect_err("none");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "no hellos component is configured");
    let err = client
        .get_state(GetStateRequest {
            store_name: "s".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect_err("no state store");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "no state component is configured");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_services_are_unimplemented_and_unconfigured_blocks_say_so() {
    let rt = support::start(TWO_HELLOS).await;
    let mut client = support::client(&rt).await;
    // A service the sidecar does not serve, without dapr-app-id to proxy it.
    let mut echo = layotto::proto::bench::echo_client::EchoClient::new(support::channel(&rt).await);
    let err = echo
        .say_hello(SayHelloRequest::default())
        .await
        .expect_err("not served");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("layotto.bench.v1.Echo/SayHello"),
        "{}",
        err.message()
    );
    // Built blocks with nothing configured say so.
    let err = client
        .invoke_binding(InvokeBindingRequest {
            name: "b".into(),
            operation: "create".into(),
            ..Default::default()
        })
        .await
        .expect_err("no bindings");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("no bindings component"), "{}", err.message());
    let err = client
        .list_file(ListFileRequest::default())
        .await
        .expect_err("no request");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // Invocation is built: without name resolution another app id is not
    // found, and the answer says why.
    let err = client
        .invoke_service(InvokeServiceRequest {
            id: "other-app".into(),
            ..Default::default()
        })
        .await
        .expect_err("nothing resolves other-app");
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("no name resolution is configured"),
        "{}",
        err.message()
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_follows_the_status_registry() {
    let token = support::unique("grpc-health");
    let rt = support::start(&format!(
        r#"
        [hellos.good]
        type = "helloworld"
        [hellos.bad]
        type = "faulty"
        metadata = {{ token = "{token}", failBuilds = "1000000" }}
        "#
    ))
    .await;
    let mut health = HealthClient::new(support::channel(&rt).await);
    let check = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let status = |r: tonic::Response<tonic_health::pb::HealthCheckResponse>| r.into_inner().status;
    assert_eq!(
        status(health.check(check("")).await.expect("ok")),
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        status(health.check(check("hellos/good")).await.expect("ok")),
        ServingStatus::Serving as i32
    );
    assert_eq!(
        status(health.check(check("hellos/bad")).await.expect("ok")),
        ServingStatus::NotServing as i32
    );
    rt.shutdown().await;

    let rt = support::start("[hellos.good]\ntype = \"helloworld\"\n").await;
    let mut health = HealthClient::new(support::channel(&rt).await);
    for service in ["", "spec.proto.runtime.v1.Runtime", "hellos/good"] {
        assert_eq!(
            status(health.check(check(service)).await.expect("ok")),
            ServingStatus::Serving as i32
        );
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_runtime_service() {
    let rt = support::start(TWO_HELLOS).await;
    let mut reflection = ServerReflectionClient::new(support::channel(&rt).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let reply = replies.next().await.expect("one reply").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"spec.proto.runtime.v1.Runtime".to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actuator_speaks_layottos_shapes() {
    let rt = support::start(TWO_HELLOS).await;
    let (code, body) = support::readiness(&rt).await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "UP");
    assert_eq!(body["components"]["runtime_startup"]["status"], "UP");
    let hw = &body["components"]["hellos/helloworld"];
    assert_eq!(hw["status"], "UP");
    assert_eq!(hw["details"]["type"], "helloworld");
    assert_eq!(hw["details"]["restarts"], 0);
    assert_eq!(hw["details"]["reason"], "");
    assert!(
        hw["details"]["since"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{hw}"
    );

    let base = format!("http://{}", rt.actuator_addr());
    let (code, body) = http_get(&format!("{base}/actuator/health/liveness")).await;
    assert_eq!(code, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["components"]["supervisor"]["status"], "UP");

    let (code, body) = http_get(&format!("{base}/actuator/info")).await;
    assert_eq!(code, 200);
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["app"]["version"], env!("CARGO_PKG_VERSION"));

    let (code, _) = http_get(&format!("{base}/actuator/nothing")).await;
    assert_eq!(code, 404);

    let text = support::metrics(&rt).await;
    for name in [
        "layotto_component_up",
        "layotto_component_restarts_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_counted_by_method_and_code_with_bounded_labels() {
    let rt = support::start(TWO_HELLOS).await;
    let mut client = support::client(&rt).await;
    say_hello(&mut client, "helloworld", "a").await.expect("ok");
    say_hello(&mut client, "nope", "a").await.expect_err("unknown");
    // A path outside the served services must not become a label value.
    let mut raw = tonic::client::Grpc::new(support::channel(&rt).await);
    raw.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/made.up.Service/Random123");
    let codec = tonic_prost::ProstCodec::<SayHelloRequest, layotto::proto::runtime::v1::SayHelloResponse>::default();
    let err = raw
        .unary(tonic::Request::new(SayHelloRequest::default()), path, codec)
        .await
        .expect_err("no such service");
    assert_eq!(err.code(), Code::Unimplemented);

    let text = support::metrics(&rt).await;
    let requests = |code| {
        support::metric(
            &text,
            "layotto_grpc_requests_total",
            &support::rpc_labels("SayHello", code),
        )
    };
    assert_eq!(requests("OK"), Some(1.0), "{text}");
    assert_eq!(requests("INVALID_ARGUMENT"), Some(1.0), "{text}");
    assert!(!text.contains("Random123"), "{text}");
    assert!(text.contains(r#"service="unknown""#), "{text}");
    assert!(text.contains("layotto_grpc_request_duration_seconds_bucket"), "{text}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dapr_sdks_find_the_health_endpoints_they_wait_on() {
    let rt = support::start(TWO_HELLOS).await;
    let base = format!("http://{}", rt.dapr_http_addr().expect("dapr http is on"));
    assert_eq!(http_get(&format!("{base}/v1.0/healthz/outbound")).await.0, 204);
    assert_eq!(http_get(&format!("{base}/v1.0/healthz")).await.0, 204);
    let (code, body) = http_get(&format!("{base}/v1.0/metadata")).await;
    assert_eq!(code, 200);
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["id"], "app1");
    assert_eq!(body["components"][0]["type"], "hellos.helloworld");
    rt.shutdown().await;
}
