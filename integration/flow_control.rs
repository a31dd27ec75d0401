//! Flow control on the gRPC API: Layotto's `flowControlFilter` rules,
//! from the native config and from Layotto's config.json.

use layotto::proto::runtime::v1::SayHelloRequest;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::support;

const HELLO: &str = "[hellos.helloworld]\ntype = \"helloworld\"\nmetadata = { hello = \"greeting\" }\n";

async fn hello(client: &mut RuntimeClient<Channel>) -> Result<(), tonic::Status> {
    client
        .say_hello(SayHelloRequest {
            service_name: "helloworld".into(),
            name: "flow".into(),
            data: None,
        })
        .await
        .map(drop)
}

// The rules here allow 5 calls per 10 s rather than per second, so that a
// loaded machine taking longer than 200 ms over 20 calls does not refill
// the bucket in the middle (the per-second arithmetic has a unit test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_rule_lets_its_threshold_through_and_leaves_other_methods_alone() {
    let (rt, mut client) = support::start_ready(&format!(
        "[server.flow_control]\nmessage = \"slow down\"\n[[server.flow_control.rules]]\nresource = \"/spec.proto.runtime.v1.Runtime/SayHello\"\nthreshold = 5\nstat_interval = \"10s\"\n{HELLO}"
    ))
    .await;
    let mut passed = 0;
    let mut rejected = Vec::new();
    for _ in 0..20 {
        match hello(&mut client).await {
            Ok(()) => passed += 1,
            Err(status) => rejected.push(status),
        }
    }
    assert_eq!(passed, 5, "{rejected:?}");
    assert_eq!(rejected.len(), 15);
    assert!(
        rejected
            .iter()
            .all(|s| s.code() == Code::ResourceExhausted && s.message() == "slow down"),
        "{rejected:?}"
    );
    // Another method has no rule.
    let mut dapr = layotto::proto::dapr::runtime::v1::dapr_client::DaprClient::new(support::channel(&rt).await);
    for _ in 0..20 {
        dapr.get_metadata(layotto::proto::dapr::runtime::v1::GetMetadataRequest::default())
            .await
            .expect("unlimited");
    }
    let metrics = support::metrics(&rt).await;
    assert!(
        metrics.contains("layotto_flow_control_rejected_total{method=\"/spec.proto.runtime.v1.Runtime/SayHello\"} 15"),
        "{metrics}"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_rule_queues_calls_instead_of_rejecting_them() {
    let (rt, client) = support::start_ready(&format!(
        "[[server.flow_control.rules]]\nresource = \"/spec.proto.runtime.v1.Runtime/SayHello\"\nthreshold = 20\ncontrol_behavior = \"throttle\"\nmax_queueing_time = \"2s\"\n{HELLO}"
    ))
    .await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move { hello(&mut client).await })
        })
        .collect();
    for call in calls {
        call.await.expect("joined").expect("queued, not rejected");
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layottos_flow_control_filter_is_read_from_its_config_json() {
    let json = r#"{"servers": [{"listeners": [{"name": "grpc", "address": "127.0.0.1:0",
        "filter_chains": [{"filters": [{"type": "grpc", "config": {"server_name": "runtime", "grpc_config": {
            "hellos": {"helloworld": {"type": "helloworld", "hello": "greeting"}}}}}]}],
        "stream_filters": [{"type": "flowControlFilter", "config": {"global_switch": true, "limit_key_type": "PATH",
            "rules": [{"resource": "/spec.proto.runtime.v1.Runtime/SayHello", "grade": 1, "threshold": 5, "statIntervalInMs": 10000}]}}]}]}]}"#;
    let mut config = layotto::config::load_str(
        json,
        layotto::config::Format::Json,
        "config.json",
        Some(Default::default()),
    )
    .expect("Layotto's runtime_config shape");
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.grpc = any;
    config.server.actuator = any;
    config.server.dapr_http = None;
    let rt = layotto::Runtime::start(config).await.expect("starts");
    support::wait_ready(&rt).await;
    let mut client = support::client(&rt).await;
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        outcomes.push(hello(&mut client).await.map_err(|s| (s.code(), s.message().to_owned())));
    }
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 5, "{outcomes:?}");
    assert!(outcomes.iter().any(|o| o
        == &Err((
            Code::ResourceExhausted,
            layotto::config::DEFAULT_FLOW_CONTROL_MESSAGE.to_owned()
        ))));
    rt.shutdown().await;
}

/// A component's own `flow_control` limits every call to it, from every
/// API, and leaves the other components alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_limit_applies_to_that_component_from_every_api() {
    use layotto::proto::runtime::v1 as pb;
    let (rt, mut client) = support::start_ready(
        "[state.limited]\ntype = \"in-memory\"\nflow_control = { threshold = 5, stat_interval = \"10s\" }\n[state.free]\ntype = \"in-memory\"\n",
    )
    .await;
    let get = |store: &str| pb::GetStateRequest {
        store_name: store.into(),
        key: "k".into(),
        ..Default::default()
    };
    let mut passed = 0;
    let mut rejected = Vec::new();
    for _ in 0..20 {
        match client.get_state(get("limited")).await {
            Ok(_) => passed += 1,
            Err(status) => rejected.push(status),
        }
    }
    assert_eq!(passed, 5, "{rejected:?}");
    assert!(
        rejected.iter().all(|s| s.code() == Code::ResourceExhausted
            && s.message().contains("state/limited")
            && s.message().contains("flow control limit of 5")),
        "{rejected:?}"
    );
    for _ in 0..20 {
        client
            .get_state(get("free"))
            .await
            .expect("the other store has no limit");
    }
    // Dapr's gRPC API reaches the same component through the same limit.
    let mut dapr = layotto::proto::dapr::runtime::v1::dapr_client::DaprClient::new(support::channel(&rt).await);
    let status = dapr
        .get_state(layotto::proto::dapr::runtime::v1::GetStateRequest {
            store_name: "limited".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect_err("still over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_throttle_queues_calls() {
    use layotto::proto::runtime::v1 as pb;
    let (rt, client) = support::start_ready(
        "[state.limited]\ntype = \"in-memory\"\nflow_control = { threshold = 20, control_behavior = \"throttle\", max_queueing_time = \"2s\" }\n",
    )
    .await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .get_state(pb::GetStateRequest {
                        store_name: "limited".into(),
                        key: "k".into(),
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.expect("joined").expect("queued, not rejected");
    }
    rt.shutdown().await;
}

#[test]
fn a_bad_component_limit_fails_validation_naming_the_field() {
    let err = layotto::config::load_str(
        "[state.limited]\ntype = \"in-memory\"\nflow_control = { threshold = 0, control_behavior = \"later\" }\n",
        layotto::config::Format::Toml,
        "test",
        Some(Default::default()),
    )
    .expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("state.limited.flow_control.threshold"), "{text}");
    assert!(text.contains("state.limited.flow_control.control_behavior"), "{text}");
}
