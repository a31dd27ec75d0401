//! The Secrets API conformance suite against both stores, and secret
//! references in other components' metadata.

use std::collections::HashMap;

use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{self, PrivateRedis, Sidecar};

const SECRETS_JSON: &str = r#"{"redis-password": "s3cret", "db": {"user": "app", "password": "pw"}, "port": 5432}"#;

async fn get_secret(
    client: &mut RuntimeClient<Channel>,
    store: &str,
    key: &str,
) -> Result<HashMap<String, String>, tonic::Status> {
    client
        .get_secret(pb::GetSecretRequest {
            store_name: store.into(),
            key: key.into(),
            metadata: HashMap::new(),
        })
        .await
        .map(|r| r.into_inner().data)
}

async fn get_bulk(client: &mut RuntimeClient<Channel>, store: &str) -> HashMap<String, pb::SecretResponse> {
    client
        .get_bulk_secret(pb::GetBulkSecretRequest {
            store_name: store.into(),
            metadata: HashMap::new(),
        })
        .await
        .expect("GetBulkSecret")
        .into_inner()
        .data
}

/// The conformance cases, for a store `s` holding `db:password` = `pw`.
async fn a_store_answers_secrets_and_refuses_bad_requests(client: &mut RuntimeClient<Channel>, key: &str, value: &str) {
    let secret = get_secret(client, "s", key).await.expect("GetSecret");
    assert_eq!(secret.get(key).map(String::as_str), Some(value), "{secret:?}");
    let all = get_bulk(client, "s").await;
    assert_eq!(
        all.get(key).and_then(|s| s.secrets.get(key)).map(String::as_str),
        Some(value)
    );
    let missing = get_secret(client, "s", "no-such-secret").await.expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound);
    assert!(missing.message().contains("no-such-secret"), "{}", missing.message());
    assert_eq!(
        get_secret(client, "s", "").await.expect_err("empty key").code(),
        Code::InvalidArgument
    );
    assert_eq!(
        get_secret(client, "nope", key).await.expect_err("unknown store").code(),
        Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_file_flattens_nested_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("secrets.json");
    std::fs::write(&file, SECRETS_JSON).expect("write");
    let rt = support::start(&format!(
        "[secret_store.s]\ntype = \"local.file\"\nmetadata = {{ secretsFile = \"{}\" }}\n\
         [secret_store.dotted]\ntype = \"local.file\"\nmetadata = {{ secretsFile = \"{}\", nestedSeparator = \".\" }}\n",
        file.display(),
        file.display()
    ))
    .await;
    let mut client = support::client(&rt).await;
    a_store_answers_secrets_and_refuses_bad_requests(&mut client, "db:password", "pw").await;
    let dotted = get_secret(&mut client, "dotted", "db.user").await.expect("GetSecret");
    assert_eq!(dotted.get("db.user").map(String::as_str), Some("app"));
    let port = get_secret(&mut client, "s", "port")
        .await
        .expect("a number is a secret too");
    assert_eq!(port.get("port").map(String::as_str), Some("5432"));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_env_reads_prefixed_variables() {
    // The environment is the process's, so this store runs in a sidecar
    // process of its own with the variables set.
    let dir = tempfile::tempdir().expect("temp dir");
    let config = "[secret_store.s]\ntype = \"local.env\"\nmetadata = { prefix = \"LAYOTTO_TEST_\" }\n";
    let path = dir.path().join("env.toml");
    std::fs::write(&path, config).expect("write");
    let mut sidecar = Sidecar::start_env(path, &[("LAYOTTO_TEST_db:password", "pw"), ("UNPREFIXED", "hidden")]).await;
    let mut client = support::client_at(sidecar.grpc_addr()).await;
    a_store_answers_secrets_and_refuses_bad_requests(&mut client, "db:password", "pw").await;
    let all = get_bulk(&mut client, "s").await;
    assert!(!all.contains_key("UNPREFIXED"), "only prefixed variables are secrets");
    sidecar.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_state_store_takes_its_password_from_a_secret() {
    let Some(redis) = PrivateRedis::start_with(&["--requirepass", "s3cret"]) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("secrets.json");
    std::fs::write(&file, SECRETS_JSON).expect("write");
    // Dapr's spelling in one store, Layotto's in the other.
    let (rt, mut client) = support::start_ready(&format!(
        r#"
        [secret_store.local]
        type = "local.file"
        metadata = {{ secretsFile = "{file}" }}
        [state.dapr_style]
        type = "redis"
        auth = {{ secretStore = "local" }}
        metadata = {{ redisHost = "{addr}", redisPassword = {{ secretKeyRef = {{ name = "redis-password" }} }} }}
        [state.layotto_style]
        type = "redis"
        metadata = {{ redisHost = "{addr}" }}
        secret_ref = [{{ store_name = "local", key = "redis-password", inject_as = "redisPassword" }}]
        "#,
        file = file.display(),
        addr = redis.addr()
    ))
    .await;
    for store in ["dapr_style", "layotto_style"] {
        client
            .save_state(pb::SaveStateRequest {
                store_name: store.into(),
                states: vec![pb::StateItem {
                    key: "k".into(),
                    value: b"served".to_vec(),
                    ..Default::default()
                }],
            })
            .await
            .expect("a store with a password from a secret serves");
        let got = client
            .get_state(pb::GetStateRequest {
                store_name: store.into(),
                key: "k".into(),
                ..Default::default()
            })
            .await
            .expect("GetState")
            .into_inner();
        assert_eq!(got.data, b"served");
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("secrets.json");
    std::fs::write(&file, SECRETS_JSON).expect("write");
    let config = format!(
        "[secret_store.local]\ntype = \"local.file\"\nmetadata = {{ secretsFile = \"{}\" }}\n\
         [state.s]\ntype = \"in-memory\"\nmetadata = {{ password = {{ secretKeyRef = {{ name = \"absent\", store = \"local\" }} }} }}\n",
        file.display()
    );
    let path = dir.path().join("missing.toml");
    std::fs::write(&path, &config).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_layotto"))
        .args(["start", "-c"])
        .arg(&path)
        .env("LAYOTTO__SERVER__GRPC", "127.0.0.1:0")
        .env("LAYOTTO__SERVER__ACTUATOR", "127.0.0.1:0")
        .env("LAYOTTO__SERVER__DAPR_HTTP", "disabled")
        .output()
        .expect("layotto runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("state.s.metadata.password"), "{stderr}");
    assert!(
        stderr.contains("secret 'absent' is not in secret store 'local'"),
        "{stderr}"
    );

    // A reference to a store that is not configured fails validation.
    let bad = config.replace("store = \"local\"", "store = \"elsewhere\"");
    std::fs::write(&path, bad).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_layotto"))
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .expect("layotto runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("secret store 'elsewhere', which is not configured"),
        "{stderr}"
    );
}
