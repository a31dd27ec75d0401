//! Dapr's HTTP State API: daprd's routes, bodies, status codes, ETag
//! headers and error JSON, over the same components as Layotto's gRPC API.

use layotto::proto::runtime::v1 as pb;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support;

const STORE: &str = r#"
[app]
app_id = "dapr-http"
[state.s]
type = "in-memory"
"#;

fn base(rt: &layotto::Runtime) -> String {
    format!("http://{}/v1.0", rt.dapr_http_addr().expect("dapr http"))
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("json error body");
    (
        status,
        body["errorCode"].as_str().unwrap_or_default().to_owned(),
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_over_http_matches_daprd() {
    let (rt, mut grpc) = support::start_ready(STORE).await;
    let http = reqwest::Client::new();
    let url = base(&rt);

    // Save: 204; values are stored as their JSON text.
    let saved = http
        .post(format!("{url}/state/s"))
        .json(&json!([{ "key": "a", "value": "bar" }, { "key": "b", "value": { "n": 1 } }]))
        .send()
        .await
        .expect("save");
    assert_eq!(saved.status(), StatusCode::NO_CONTENT);

    // Get: 200, the stored bytes, an ETag header.
    let got = http.get(format!("{url}/state/s/a")).send().await.expect("get");
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.headers()["content-type"], "application/json");
    let etag = got.headers()["etag"].to_str().expect("etag").to_owned();
    assert_eq!(got.text().await.expect("body"), "\"bar\"");

    // The same key and etag through Layotto's gRPC API.
    let from_grpc = grpc
        .get_state(pb::GetStateRequest {
            store_name: "s".into(),
            key: "a".into(),
            ..Default::default()
        })
        .await
        .expect("grpc get")
        .into_inner();
    assert_eq!(
        (from_grpc.data.as_slice(), from_grpc.etag.as_str()),
        (&b"\"bar\""[..], etag.as_str())
    );

    // Missing: 204 with no body.
    let missing = http.get(format!("{url}/state/s/nope")).send().await.expect("get");
    assert_eq!(missing.status(), StatusCode::NO_CONTENT);

    // A stale etag: 409 ERR_STATE_SAVE.
    let stale = http
        .post(format!("{url}/state/s"))
        .json(&json!([{ "key": "a", "value": 1, "etag": "999" }]))
        .send()
        .await
        .expect("save");
    let (status, code, _) = error_code(stale).await;
    assert_eq!((status, code.as_str()), (StatusCode::CONFLICT, "ERR_STATE_SAVE"));

    // Bulk: data embedded as JSON, missing keys with the key only.
    let bulk: Value = http
        .post(format!("{url}/state/s/bulk"))
        .json(&json!({ "keys": ["a", "b", "nope"] }))
        .send()
        .await
        .expect("bulk")
        .json()
        .await
        .expect("json");
    assert_eq!(bulk[0]["data"], "bar");
    assert_eq!(bulk[1]["data"], json!({ "n": 1 }));
    assert_eq!(bulk[2], json!({ "key": "nope" }));

    // Transaction: 204; then the delete took effect.
    let tx = http
        .post(format!("{url}/state/s/transaction"))
        .json(&json!({ "operations": [
            { "operation": "upsert", "request": { "key": "c", "value": 3 } },
            { "operation": "delete", "request": { "key": "b" } },
        ] }))
        .send()
        .await
        .expect("transaction");
    assert_eq!(tx.status(), StatusCode::NO_CONTENT);
    let b = http.get(format!("{url}/state/s/b")).send().await.expect("get");
    assert_eq!(b.status(), StatusCode::NO_CONTENT);
    let bad_op = http
        .post(format!("{url}/state/s/transaction"))
        .json(&json!({ "operations": [{ "operation": "merge", "request": { "key": "c" } }] }))
        .send()
        .await
        .expect("transaction");
    let (status, code, _) = error_code(bad_op).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ERR_NOT_SUPPORTED_STATE_OPERATION")
    );

    // Delete with a wrong If-Match: 409; with the right one: 204.
    let wrong = http
        .delete(format!("{url}/state/s/a"))
        .header("If-Match", "999")
        .send()
        .await
        .expect("delete");
    let (status, code, _) = error_code(wrong).await;
    assert_eq!((status, code.as_str()), (StatusCode::CONFLICT, "ERR_STATE_DELETE"));
    let deleted = http
        .delete(format!("{url}/state/s/a"))
        .header("If-Match", &etag)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    // Errors: an unknown store, a malformed body, a missing key.
    let unknown = http.get(format!("{url}/state/nope/a")).send().await.expect("get");
    let (status, code, message) = error_code(unknown).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ERR_STATE_STORE_NOT_FOUND")
    );
    assert_eq!(message, "state store nope is not found");
    let malformed = http
        .post(format!("{url}/state/s"))
        .body("[{not json")
        .send()
        .await
        .expect("save");
    let (status, code, _) = error_code(malformed).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST")
    );
    let keyless = http
        .post(format!("{url}/state/s"))
        .json(&json!([{ "value": 1 }]))
        .send()
        .await
        .expect("save");
    let (status, code, message) = error_code(keyless).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST")
    );
    assert_eq!(message, "\"key\" is a required field");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_secrets_and_locks_over_http_match_daprd() {
    let (rt, mut grpc) = support::start_ready(
        r#"
        [app]
        app_id = "dapr-http-blocks"
        [pub_subs.ps]
        type = "in-memory"
        [lock.locks]
        type = "in-memory"
        [secret_store.files]
        type = "local.file"
        metadata = { secretsFile = "config/secrets/example.json" }
        "#,
    )
    .await;
    let http = reqwest::Client::new();
    let url = base(&rt);

    // Publish: a stream subscriber gets the event wrapped as a CloudEvent.
    let (requests, requests_rx) = tokio::sync::mpsc::channel(4);
    requests
        .send(pb::SubscribeTopicEventsRequest {
            subscribe_topic_events_request_type: Some(
                pb::subscribe_topic_events_request::SubscribeTopicEventsRequestType::InitialRequest(
                    pb::SubscribeTopicEventsRequestInitial {
                        pubsub_name: "ps".into(),
                        topic: "orders/eu".into(),
                        ..Default::default()
                    },
                ),
            ),
        })
        .await
        .expect("send");
    let mut events = grpc
        .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
        .await
        .expect("subscribe")
        .into_inner();
    events.message().await.expect("stream").expect("initial response");
    let published = http
        .post(format!("{url}/publish/ps/orders/eu"))
        .header("content-type", "application/json")
        .body(r#"{"id":7}"#)
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), StatusCode::NO_CONTENT);
    let event = events.message().await.expect("stream").expect("an event");
    let Some(pb::subscribe_topic_events_response::SubscribeTopicEventsResponseType::EventMessage(event)) =
        event.subscribe_topic_events_response_type
    else {
        panic!("expected an event");
    };
    assert_eq!(event.topic, "orders/eu");
    assert_eq!(event.data, br#"{"id":7}"#);
    assert_eq!(event.data_content_type, "application/json");
    drop(requests);

    let unknown = http
        .post(format!("{url}/publish/nope/t"))
        .body("x")
        .send()
        .await
        .expect("publish");
    let (status, code, _) = error_code(unknown).await;
    assert_eq!((status, code.as_str()), (StatusCode::NOT_FOUND, "ERR_PUBSUB_NOT_FOUND"));
    let bad_raw = http
        .post(format!("{url}/publish/ps/t?metadata.rawPayload=maybe"))
        .body("x")
        .send()
        .await
        .expect("publish");
    let (status, code, _) = error_code(bad_raw).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ERR_PUBSUB_REQUEST_METADATA")
    );

    // Locks: a held lock is 200 {"success": false}; unlock statuses are numbers.
    let lock = |owner: &str| {
        http.post(format!("{url}-alpha1/lock/locks"))
            .json(&json!({ "resourceId": "r", "lockOwner": owner, "expiryInSeconds": 30 }))
            .send()
    };
    let first: Value = lock("a").await.expect("lock").json().await.expect("json");
    assert_eq!(first, json!({ "success": true }));
    let second: Value = lock("b").await.expect("lock").json().await.expect("json");
    assert_eq!(second, json!({ "success": false }));
    let unlock = |owner: &str| {
        http.post(format!("{url}-alpha1/unlock/locks"))
            .json(&json!({ "resourceId": "r", "lockOwner": owner }))
            .send()
    };
    let others: Value = unlock("b").await.expect("unlock").json().await.expect("json");
    assert_eq!(others, json!({ "status": 2 }));
    let mine: Value = unlock("a").await.expect("unlock").json().await.expect("json");
    assert_eq!(mine, json!({ "status": 0 }));
    let gone: Value = unlock("a").await.expect("unlock").json().await.expect("json");
    assert_eq!(gone, json!({ "status": 1 }));
    let no_expiry = http
        .post(format!("{url}-alpha1/lock/locks"))
        .json(&json!({ "resourceId": "r", "lockOwner": "a", "expiryInSeconds": 0 }))
        .send()
        .await
        .expect("lock");
    let (status, code, _) = error_code(no_expiry).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST")
    );

    // Secrets: unknown store is daprd's 401.
    let unknown = http.get(format!("{url}/secrets/nope/x")).send().await.expect("secret");
    let (status, code, _) = error_code(unknown).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "ERR_SECRET_STORE_NOT_FOUND")
    );
    let one: Value = http
        .get(format!("{url}/secrets/files/redis-password"))
        .send()
        .await
        .expect("secret")
        .json()
        .await
        .expect("json");
    assert_eq!(one, json!({ "redis-password": "change-me" }));
    let bulk = http
        .get(format!("{url}/secrets/files/bulk"))
        .send()
        .await
        .expect("bulk");
    assert_eq!(bulk.status(), StatusCode::OK);
    let bulk: Value = bulk.json().await.expect("json");
    assert!(bulk.is_object(), "{bulk}");
    rt.shutdown().await;
}

/// One store through three front ends: Layotto's gRPC API, Dapr's gRPC API
/// and Dapr's HTTP API see the same keys and etags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_component_three_front_ends_see_the_same_keys_and_etags() {
    use layotto::proto::dapr::common::v1 as common;
    use layotto::proto::dapr::runtime::v1 as dapr;
    use layotto::proto::dapr::runtime::v1::dapr_client::DaprClient;

    let (rt, mut layotto) = support::start_ready(STORE).await;
    let mut daprc = DaprClient::connect(format!("http://{}", rt.grpc_addr()))
        .await
        .expect("dapr client");
    let http = reqwest::Client::new();
    let url = base(&rt);

    // Written through Dapr's gRPC API...
    daprc
        .save_state(dapr::SaveStateRequest {
            store_name: "s".into(),
            states: vec![common::StateItem {
                key: "k".into(),
                value: b"{\"v\":1}".to_vec(),
                ..Default::default()
            }],
        })
        .await
        .expect("dapr save");
    let via_dapr = daprc
        .get_state(dapr::GetStateRequest {
            store_name: "s".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect("dapr get")
        .into_inner();
    // ...read through Layotto's gRPC API and Dapr's HTTP API.
    let via_layotto = layotto
        .get_state(pb::GetStateRequest {
            store_name: "s".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect("layotto get")
        .into_inner();
    let via_http = http.get(format!("{url}/state/s/k")).send().await.expect("http get");
    let http_etag = via_http.headers()["etag"].to_str().expect("etag").to_owned();
    let http_data = via_http.bytes().await.expect("body");
    assert_eq!(via_dapr.data, b"{\"v\":1}");
    assert_eq!((&via_layotto.data, &via_layotto.etag), (&via_dapr.data, &via_dapr.etag));
    assert_eq!(
        (http_data.as_ref(), http_etag.as_str()),
        (via_dapr.data.as_slice(), via_dapr.etag.as_str())
    );

    // An etag from one front end guards a write through another.
    let stale = daprc
        .save_state(dapr::SaveStateRequest {
            store_name: "s".into(),
            states: vec![common::StateItem {
                key: "k".into(),
                value: b"2".to_vec(),
                etag: Some(common::Etag { value: "999".into() }),
                ..Default::default()
            }],
        })
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), tonic::Code::Aborted);
    let deleted = http
        .delete(format!("{url}/state/s/k"))
        .header("If-Match", &via_layotto.etag)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = daprc
        .get_state(dapr::GetStateRequest {
            store_name: "s".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect("dapr get")
        .into_inner();
    assert!(gone.data.is_empty() && gone.etag.is_empty());

    // Unknown store: INVALID_ARGUMENT, as daprd.
    let unknown = daprc
        .get_state(dapr::GetStateRequest {
            store_name: "nope".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown store");
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);

    // Metadata names components as Dapr does; SetMetadata shows up in it.
    daprc
        .set_metadata(dapr::SetMetadataRequest {
            key: "appCommand".into(),
            value: "python app.py".into(),
        })
        .await
        .expect("set metadata");
    let metadata = daprc
        .get_metadata(dapr::GetMetadataRequest {})
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(metadata.id, "dapr-http");
    assert!(
        metadata
            .registered_components
            .iter()
            .any(|c| c.name == "s" && c.r#type == "state.in-memory"),
        "{metadata:?}"
    );
    assert_eq!(metadata.extended_metadata["appCommand"], "python app.py");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_can_be_set_and_shutdown_is_requested_over_http() {
    let (mut rt, _grpc) = support::start_ready(STORE).await;
    let http = reqwest::Client::new();
    let url = base(&rt);
    let set = http
        .put(format!("{url}/metadata/appCommand"))
        .body("node app.js")
        .send()
        .await
        .expect("put metadata");
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let metadata: Value = http
        .get(format!("{url}/metadata"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(metadata["extended"]["appCommand"], "node app.js");
    assert_eq!(metadata["extended"]["daprRuntimeVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(metadata["components"][0]["type"], "state.in-memory");

    let shutdown = http.post(format!("{url}/shutdown")).send().await.expect("shutdown");
    assert_eq!(shutdown.status(), StatusCode::NO_CONTENT);
    let asked = tokio::time::timeout(std::time::Duration::from_secs(5), rt.failed())
        .await
        .expect("the runtime hears the request");
    assert!(matches!(asked, layotto::RuntimeError::ShutdownRequested), "{asked}");
    rt.shutdown().await;
}

/// With an API token configured, a call without it is refused on every
/// surface; health endpoints stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_api_token_every_surface_refuses_but_health() {
    use layotto::proto::dapr::runtime::v1 as dapr;
    use layotto::proto::dapr::runtime::v1::dapr_client::DaprClient;

    let rt = support::start(&format!("[server]\napi_token = \"t0ken\"\n{STORE}")).await;
    let addr = rt.grpc_addr();
    let http = reqwest::Client::new();
    let url = base(&rt);

    // gRPC health and the HTTP health endpoints need no token.
    let health = http
        .get(format!("{url}/healthz/outbound"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::NO_CONTENT);
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect("grpc health needs no token");

    // Layotto gRPC, Dapr gRPC, Dapr HTTP: refused without it.
    let mut layotto = layotto::proto::runtime::v1::runtime_client::RuntimeClient::new(channel.clone());
    let get = || pb::GetStateRequest {
        store_name: "s".into(),
        key: "k".into(),
        ..Default::default()
    };
    let err = layotto.get_state(get()).await.expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut daprc = DaprClient::new(channel.clone());
    let err = daprc
        .get_state(dapr::GetStateRequest {
            store_name: "s".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let refused = http.get(format!("{url}/state/s/k")).send().await.expect("get");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(refused.text().await.expect("body"), "invalid api token\n");
    let wrong = http
        .get(format!("{url}/state/s/k"))
        .header("dapr-api-token", "t0ken!")
        .send()
        .await
        .expect("get");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // With it, served.
    let mut request = tonic::Request::new(get());
    request
        .metadata_mut()
        .insert("dapr-api-token", "t0ken".parse().expect("ascii"));
    layotto.get_state(request).await.expect("with the token");
    let ok = http
        .get(format!("{url}/state/s/k"))
        .header("dapr-api-token", "t0ken")
        .send()
        .await
        .expect("get");
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    rt.shutdown().await;
}

/// Dapr rpcs not built yet answer UNIMPLEMENTED naming themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dapr_rpcs_not_built_are_unimplemented_naming_the_rpc() {
    let rt = support::start(STORE).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", rt.grpc_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    for rpc in ["InvokeActor", "StartWorkflowBeta1", "ScheduleJob", "ConverseAlpha1"] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("ready");
        let path = format!("/dapr.proto.runtime.v1.Dapr/{rpc}");
        let err = grpc
            .unary::<(), (), _>(
                tonic::Request::new(()),
                path.parse().expect("path"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("unimplemented");
        assert_eq!(err.code(), tonic::Code::Unimplemented, "{rpc}");
        assert!(
            err.message().contains(&format!("dapr.proto.runtime.v1.Dapr/{rpc}")),
            "{rpc}: {}",
            err.message()
        );
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_get_over_http_matches_daprd() {
    let (rt, mut grpc) = support::start_ready(
        r#"
        [app]
        app_id = "cfg-app"
        [config_store.cfg]
        type = "in-memory"
        "#,
    )
    .await;
    grpc.save_configuration(pb::SaveConfigurationRequest {
        store_name: "cfg".into(),
        app_id: "cfg-app".into(),
        items: vec![
            pb::ConfigurationItem {
                key: "a".into(),
                content: "1".into(),
                ..Default::default()
            },
            pb::ConfigurationItem {
                key: "b c".into(),
                content: "2".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    })
    .await
    .expect("saved");
    let http = reqwest::Client::new();
    let url = base(&rt);
    let got: Value = http
        .get(format!("{url}/configuration/cfg?key=a&key=b%20c"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(got, json!({ "a": { "value": "1" }, "b c": { "value": "2" } }));
    let none = http
        .get(format!("{url}/configuration/cfg?key=zz"))
        .send()
        .await
        .expect("get");
    assert_eq!(none.status(), StatusCode::NO_CONTENT);
    let unknown = http.get(format!("{url}/configuration/nope")).send().await.expect("get");
    let (status, code, _) = error_code(unknown).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ERR_CONFIGURATION_STORE_NOT_FOUND")
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_queries_over_http_match_daprd() {
    let rt = support::start(
        "[app]\napp_id = \"dapr-http\"\n[state.s]\ntype = \"in-memory\"\n[state.r]\ntype = \"redis\"\nmetadata = { redisHost = \"127.0.0.1:6379\" }\n",
    )
    .await;
    support::wait_ready(&rt).await;
    let http = reqwest::Client::new();
    let url = base(&rt);
    let saved = http
        .post(format!("{url}/state/s"))
        .json(&json!([
            { "key": "1", "value": { "city": "Seattle", "n": 3 } },
            { "key": "2", "value": { "city": "Portland", "n": 1 } },
            { "key": "3", "value": { "city": "Seattle", "n": 2 } },
        ]))
        .send()
        .await
        .expect("save");
    assert_eq!(saved.status(), StatusCode::NO_CONTENT);
    let query = format!("{}/v1.0-alpha1/state/s/query", base(&rt).trim_end_matches("/v1.0"));
    let answer: Value = http
        .post(&query)
        .body(r#"{"filter":{"EQ":{"city":"Seattle"}},"sort":[{"key":"n"}],"page":{"limit":1}}"#)
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["results"][0]["key"], "3");
    assert_eq!(answer["results"][0]["data"], json!({ "city": "Seattle", "n": 2 }));
    let token = answer["token"].as_str().expect("a next page").to_owned();
    let etag = http
        .get(format!("{url}/state/s/3"))
        .send()
        .await
        .expect("get")
        .headers()["etag"]
        .to_str()
        .expect("etag")
        .to_owned();
    assert_eq!(answer["results"][0]["etag"], etag);
    let next: Value = http
        .put(&query)
        .body(format!(
            r#"{{"filter":{{"EQ":{{"city":"Seattle"}}}},"sort":[{{"key":"n"}}],"page":{{"limit":1,"token":"{token}"}}}}"#
        ))
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    assert_eq!(next["results"][0]["key"], "1");
    assert!(next.get("token").is_none(), "the last page has no token: {next}");

    // A query that does not parse: daprd's 500 ERR_STATE_QUERY.
    let bad = http
        .post(&query)
        .body(r#"{"filter":{"LIKE":{}}}"#)
        .send()
        .await
        .expect("query");
    let (status, code, message) = error_code(bad).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "ERR_STATE_QUERY")
    );
    assert!(message.contains("LIKE"), "{message}");
    // A store that cannot run queries, and one that does not exist.
    if support::backend_available("Redis", "127.0.0.1:6379") {
        let redis = http
            .post(query.replace("/state/s/", "/state/r/"))
            .body("{}")
            .send()
            .await
            .expect("query");
        let (status, code, _) = error_code(redis).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, "ERR_STATE_STORE_NOT_SUPPORTED")
        );
    }
    let missing = http
        .post(query.replace("/state/s/", "/state/nope/"))
        .body("{}")
        .send()
        .await
        .expect("query");
    let (status, code, _) = error_code(missing).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "ERR_STATE_STORE_NOT_FOUND")
    );
    rt.shutdown().await;
}
