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
