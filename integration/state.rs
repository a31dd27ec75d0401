//! The State API conformance suite: every rule of the API, through the gRPC
//! API of a running sidecar, against every store type. A new store joins by
//! adding a `Backend` variant and one line to `conformance!` at the bottom.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use layotto::Runtime;
use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use layotto::proto::runtime::v1::state_options::StateConcurrency;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::support::{self, BackendType, Service};

/// A state store type under test, on the machine's services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    Redis,
    Postgres,
    Mysql,
    Zookeeper,
    /// A Python process serving Dapr's pluggable state protocol
    /// (`integration/pluggable/components.py`).
    Pluggable,
}

/// The table the SQL stores use in the suite.
const TABLE: &str = "layotto_state_conformance";

impl Backend {
    /// A component entry for an instance called `name`.
    pub fn entry(self, name: &str, dir: &Path, metadata: &str) -> String {
        let (ty, meta) = match self {
            Backend::Memory => ("in-memory", String::new()),
            Backend::Sqlite => (
                "sqlite",
                format!(r#"connectionString = "{}", "#, dir.join("state.db").display()),
            ),
            Backend::Redis => ("redis", r#"redisHost = "127.0.0.1:6379", "#.to_owned()),
            Backend::Postgres => (
                "postgresql",
                format!(r#"connectionString = "postgres://postgres@127.0.0.1:5432/test", tableName = "{TABLE}", "#),
            ),
            Backend::Mysql => (
                "mysql",
                format!(r#"connectionString = "mysql://root@127.0.0.1:3306/test", tableName = "{TABLE}", "#),
            ),
            // Nodes under a path of this fixture's own (its temp dir's
            // name, the same across a restart), so runs never share keys.
            Backend::Zookeeper => (
                "zookeeper",
                format!(
                    r#"servers = "127.0.0.1:2181", keyPrefixPath = "/layotto-conformance/state/{}", "#,
                    dir.file_name().and_then(|n| n.to_str()).unwrap_or("default")
                ),
            ),
            Backend::Pluggable => ("", String::new()),
        };
        let ty = match self {
            Backend::Pluggable => crate::pluggable::shared_name(),
            _ => ty.to_owned(),
        };
        format!("[state.{name}]\ntype = \"{ty}\"\nmetadata = {{ {meta}{metadata} }}\n")
    }

    /// Whether two instances configured alike see the same data.
    pub fn shared(self) -> bool {
        self != Backend::Memory
    }
}

impl BackendType for Backend {
    /// The service it needs: (name, address).
    fn service(self) -> Option<Service> {
        match self {
            Backend::Memory | Backend::Sqlite | Backend::Pluggable => None,
            Backend::Redis => Some(Service::Redis),
            Backend::Postgres => Some(Service::Postgres),
            Backend::Mysql => Some(Service::Mariadb),
            Backend::Zookeeper => Some(Service::Zookeeper),
        }
    }
}

/// A running sidecar with the backend configured four times: `s` (no key
/// prefix, Layotto's default), `s_appid`, `s_name` and `s_literal`.
pub struct Fixture {
    pub backend: Backend,
    pub rt: Runtime,
    pub client: RuntimeClient<Channel>,
    prefix: String,
    dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn start(backend: Backend) -> Option<Fixture> {
        if !backend.available() {
            return None;
        }
        if backend == Backend::Pluggable {
            // Its process, started once and discovered, or a skip.
            crate::pluggable::shared().await?;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let (rt, client) = support::start_ready(&Self::config(backend, dir.path())).await;
        Some(Fixture {
            backend,
            rt,
            client,
            prefix: support::unique("st"),
            dir,
        })
    }

    fn config(backend: Backend, dir: &Path) -> String {
        let mut config = "[app]\napp_id = \"conformance\"\n".to_owned();
        config.push_str(&backend.entry("s", dir, ""));
        config.push_str(&backend.entry("s_appid", dir, r#"keyPrefix = "appid""#));
        config.push_str(&backend.entry("s_name", dir, r#"keyPrefix = "name""#));
        config.push_str(&backend.entry("s_literal", dir, r#"keyPrefix = "shop""#));
        config
    }

    /// Stops the sidecar and starts a new one on the same backend.
    pub async fn restart(self) -> Fixture {
        let Fixture {
            backend,
            rt,
            prefix,
            dir,
            ..
        } = self;
        rt.shutdown().await;
        let (rt, client) = support::start_ready(&Self::config(backend, dir.path())).await;
        Fixture {
            backend,
            rt,
            client,
            prefix,
            dir,
        }
    }

    /// A key no other test uses.
    pub fn key(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    pub fn client(&self) -> RuntimeClient<Channel> {
        self.client.clone()
    }

    pub async fn get_from(&self, store: &str, key: &str) -> Result<(Vec<u8>, String), Status> {
        let r = self
            .client()
            .get_state(pb::GetStateRequest {
                store_name: store.into(),
                key: key.into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok((r.data, r.etag))
    }

    pub async fn get(&self, key: &str) -> (Vec<u8>, String) {
        self.get_from("s", key).await.expect("GetState")
    }

    pub async fn save_items(&self, store: &str, states: Vec<pb::StateItem>) -> Result<(), Status> {
        self.client()
            .save_state(pb::SaveStateRequest {
                store_name: store.into(),
                states,
            })
            .await
            .map(drop)
    }

    pub async fn save(&self, key: &str, value: &[u8]) -> String {
        self.save_items("s", vec![item(key, value)]).await.expect("SaveState");
        let (_, etag) = self.get(key).await;
        etag
    }

    pub async fn delete(&self, key: &str, etag: Option<&str>) -> Result<(), Status> {
        self.client()
            .delete_state(pb::DeleteStateRequest {
                store_name: "s".into(),
                key: key.into(),
                etag: etag.map(|e| pb::Etag { value: e.into() }),
                ..Default::default()
            })
            .await
            .map(drop)
    }

    pub async fn transact(&self, operations: Vec<pb::TransactionalStateOperation>) -> Result<(), Status> {
        self.client()
            .execute_state_transaction(pb::ExecuteStateTransactionRequest {
                store_name: "s".into(),
                operations,
                metadata: HashMap::new(),
            })
            .await
            .map(drop)
    }
}

pub fn item(key: &str, value: &[u8]) -> pb::StateItem {
    pb::StateItem {
        key: key.into(),
        value: value.to_vec(),
        ..Default::default()
    }
}

fn with_etag(mut item: pb::StateItem, etag: &str) -> pb::StateItem {
    item.etag = Some(pb::Etag { value: etag.into() });
    item
}

fn first_write(mut item: pb::StateItem) -> pb::StateItem {
    item.options = Some(pb::StateOptions {
        concurrency: StateConcurrency::ConcurrencyFirstWrite as i32,
        consistency: 0,
    });
    item
}

fn with_ttl(mut item: pb::StateItem, ttl: &str) -> pb::StateItem {
    item.metadata.insert("ttlInSeconds".into(), ttl.into());
    item
}

fn upsert(item: pb::StateItem) -> pb::TransactionalStateOperation {
    pb::TransactionalStateOperation {
        operation_type: "upsert".into(),
        request: Some(item),
    }
}

fn delete_op(key: &str, etag: Option<&str>) -> pb::TransactionalStateOperation {
    let mut request = item(key, b"");
    request.etag = etag.map(|e| pb::Etag { value: e.into() });
    pb::TransactionalStateOperation {
        operation_type: "delete".into(),
        request: Some(request),
    }
}

fn assert_code(result: Result<impl std::fmt::Debug, Status>, code: Code, what: &str) -> Status {
    match result {
        Ok(v) => panic!("{what}: expected {code:?}, got Ok({v:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: {status:?}");
            status
        }
    }
}

// ---- The cases: each takes a fresh fixture.

pub async fn a_missing_key_reads_empty(f: &Fixture) {
    let (data, etag) = f.get(&f.key("missing")).await;
    assert!(data.is_empty());
    assert_eq!(etag, "");
}

pub async fn a_saved_value_reads_back_with_an_etag(f: &Fixture) {
    let key = f.key("k");
    let etag = f.save(&key, b"hello").await;
    let (data, read_etag) = f.get(&key).await;
    assert_eq!(data, b"hello");
    assert!(!etag.is_empty());
    assert_eq!(read_etag, etag);
}

pub async fn binary_large_and_unicode_values_round_trip(f: &Fixture) {
    let key = f.key("ключ-🔑");
    let value: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
    if f.backend == Backend::Zookeeper {
        // ZooKeeper takes requests up to its jute.maxbuffer, 1 MiB less
        // one byte by default, and drops the connection that sends a
        // bigger one: a 1 MiB value cannot be written. The store refuses
        // it up front, saying why, and takes a value just under the limit.
        let status = assert_code(
            f.save_items("s", vec![item(&key, &value)]).await,
            Code::InvalidArgument,
            "1 MiB value on zookeeper",
        );
        assert!(status.message().contains("jute.maxbuffer"), "{}", status.message());
        assert!(f.get(&key).await.0.is_empty());
        let value = &value[..1_000_000];
        f.save(&key, value).await;
        assert_eq!(f.get(&key).await.0, value);
    } else {
        f.save(&key, &value).await;
        assert_eq!(f.get(&key).await.0, value);
    }
    let empty = f.key("empty-value");
    f.save(&empty, b"").await;
    let (data, etag) = f.get(&empty).await;
    assert!(data.is_empty());
    assert!(!etag.is_empty(), "an empty value still exists and has an etag");
}

pub async fn every_write_gets_a_new_etag(f: &Fixture) {
    let key = f.key("k");
    let first = f.save(&key, b"1").await;
    let second = f.save(&key, b"2").await;
    assert_ne!(first, second);
    assert_eq!(f.get(&key).await, (b"2".to_vec(), second));
}

pub async fn a_write_with_the_current_etag_succeeds_and_a_stale_one_aborts(f: &Fixture) {
    let key = f.key("k");
    let etag = f.save(&key, b"v1").await;
    f.save_items("s", vec![with_etag(item(&key, b"v2"), &etag)])
        .await
        .expect("current etag");
    let status = assert_code(
        f.save_items("s", vec![with_etag(item(&key, b"v3"), &etag)]).await,
        Code::Aborted,
        "stale etag",
    );
    assert!(status.message().contains(&key), "{}", status.message());
    assert_eq!(f.get(&key).await.0, b"v2");
    // An etag on a key that does not exist cannot match.
    let absent = f.key("absent");
    assert_code(
        f.save_items("s", vec![with_etag(item(&absent, b"x"), "12345")]).await,
        Code::Aborted,
        "absent",
    );
    assert!(f.get(&absent).await.0.is_empty());
}

pub async fn of_two_writers_with_one_etag_exactly_one_wins(f: &Fixture) {
    for round in 0..10 {
        let key = f.key(&format!("race-{round}"));
        let etag = f.save(&key, b"start").await;
        let write = |value: &'static [u8]| {
            let (f_client, key, etag) = (f.client(), key.clone(), etag.clone());
            tokio::spawn(async move {
                let mut client = f_client;
                client
                    .save_state(pb::SaveStateRequest {
                        store_name: "s".into(),
                        states: vec![with_etag(item(&key, value), &etag)],
                    })
                    .await
            })
        };
        let (a, b) = (write(b"a"), write(b"b"));
        let results = [a.await.expect("task"), b.await.expect("task")];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        for r in &results {
            if let Err(status) = r {
                assert_eq!(status.code(), Code::Aborted, "round {round}: {status:?}");
            }
        }
        let winner: &[u8] = if results[0].is_ok() { b"a" } else { b"b" };
        assert_eq!(f.get(&key).await.0, winner, "round {round}");
    }
}

pub async fn first_write_refuses_an_existing_key(f: &Fixture) {
    let key = f.key("k");
    f.save_items("s", vec![first_write(item(&key, b"first"))])
        .await
        .expect("new key");
    assert_code(
        f.save_items("s", vec![first_write(item(&key, b"second"))]).await,
        Code::Aborted,
        "first-write on an existing key",
    );
    assert_eq!(f.get(&key).await.0, b"first");
    let etag = f.get(&key).await.1;
    f.save_items("s", vec![first_write(with_etag(item(&key, b"third"), &etag))])
        .await
        .expect("first-write with the current etag");
    assert_eq!(f.get(&key).await.0, b"third");
    // Last-write (the default) overwrites.
    f.save(&key, b"fourth").await;
    assert_eq!(f.get(&key).await.0, b"fourth");
}

pub async fn deletes_honour_etags(f: &Fixture) {
    let key = f.key("k");
    let etag = f.save(&key, b"v").await;
    assert_code(
        f.delete(&key, Some("1")).await,
        Code::Aborted,
        "delete with a wrong etag",
    );
    assert_eq!(f.get(&key).await.0, b"v");
    f.delete(&key, Some(&etag)).await.expect("delete with the etag");
    assert!(f.get(&key).await.0.is_empty());
    f.delete(&key, None).await.expect("deleting a missing key succeeds");
    assert_code(
        f.delete(&key, Some(&etag)).await,
        Code::Aborted,
        "etag of a deleted key",
    );
}

pub async fn bad_input_is_invalid_and_changes_nothing(f: &Fixture) {
    let key = f.key("k");
    f.save(&key, b"kept").await;
    let bad = [
        ("malformed etag", with_etag(item(&key, b"x"), "not-an-etag")),
        ("ttl not a number", with_ttl(item(&key, b"x"), "soon")),
        ("ttl zero", with_ttl(item(&key, b"x"), "0")),
        // Once panicked the in-memory store (losing every key), wrote the
        // whole batch on Redis while answering INTERNAL, and made the key
        // unreadable on SQLite.
        ("ttl i64::MAX", with_ttl(item(&key, b"x"), "9223372036854775807")),
        ("ttl 2^31", with_ttl(item(&key, b"x"), "2147483648")),
        ("ttl below -1", with_ttl(item(&key, b"x"), "-2")),
        ("empty key", item("", b"x")),
    ];
    for (what, bad_item) in bad {
        // In a batch with a good item: nothing of the batch is written.
        let good = item(&f.key("batch-mate"), b"x");
        let status = assert_code(
            f.save_items("s", vec![good, bad_item]).await,
            Code::InvalidArgument,
            what,
        );
        assert!(!status.message().is_empty());
    }
    assert_eq!(f.get(&key).await.0, b"kept");
    assert!(f.get(&f.key("batch-mate")).await.0.is_empty());
    assert_code(
        f.get_from("s", "").await,
        Code::InvalidArgument,
        "GetState of an empty key",
    );
    let status = assert_code(f.get_from("nope", &key).await, Code::InvalidArgument, "unknown store");
    assert!(
        status.message().contains("s, s_appid, s_literal, s_name"),
        "{}",
        status.message()
    );
    for ttl in ["9223372036854775807", "2147483648", "-2"] {
        let good = upsert(item(&f.key("tx-mate"), b"x"));
        assert_code(
            f.transact(vec![good, upsert(with_ttl(item(&key, b"x"), ttl))]).await,
            Code::InvalidArgument,
            &format!("transaction item ttl {ttl}"),
        );
    }
    assert_eq!(f.get(&key).await.0, b"kept");
    assert!(f.get(&f.key("tx-mate")).await.0.is_empty());
    let op = pb::TransactionalStateOperation {
        operation_type: "merge".into(),
        request: Some(item(&key, b"x")),
    };
    assert_code(
        f.transact(vec![op]).await,
        Code::InvalidArgument,
        "unknown operation type",
    );
}

pub async fn a_ttl_expires_the_key(f: &Fixture) {
    let short = f.key("short");
    let forever = f.key("forever");
    f.save_items("s", vec![with_ttl(item(&short, b"v"), "1")])
        .await
        .expect("save with ttl");
    // A TTL, then an overwrite without one: the value no longer expires.
    f.save_items("s", vec![with_ttl(item(&forever, b"v"), "1")])
        .await
        .expect("save with ttl");
    f.save_items("s", vec![with_ttl(item(&forever, b"kept"), "-1")])
        .await
        .expect("save without ttl");
    assert_eq!(f.get(&short).await.0, b"v");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(f.get(&short).await, (Vec::new(), String::new()), "expired after 2 s");
    assert_eq!(f.get(&forever).await.0, b"kept");
    // An expired key can be written with first-write again.
    f.save_items("s", vec![first_write(item(&short, b"again"))])
        .await
        .expect("first-write after expiry");
}

pub async fn a_bulk_get_answers_every_key(f: &Fixture) {
    let keys: Vec<String> = (0..100).map(|i| f.key(&format!("bulk-{i}"))).collect();
    let saved: Vec<pb::StateItem> = keys.iter().step_by(2).map(|k| item(k, k.as_bytes())).collect();
    f.save_items("s", saved).await.expect("bulk save");
    let mut client = f.client();
    let items = client
        .get_bulk_state(pb::GetBulkStateRequest {
            store_name: "s".into(),
            keys: keys.clone(),
            parallelism: 8,
            metadata: HashMap::new(),
        })
        .await
        .expect("GetBulkState")
        .into_inner()
        .items;
    assert_eq!(items.len(), 100);
    for (i, (item, key)) in items.iter().zip(&keys).enumerate() {
        assert_eq!(&item.key, key);
        assert_eq!(item.error, "");
        if i % 2 == 0 {
            assert_eq!(item.data, key.as_bytes());
            assert!(!item.etag.is_empty());
        } else {
            assert!(item.data.is_empty() && item.etag.is_empty(), "{key} should be missing");
        }
    }
    // A bad key fails its own item only.
    let items = client
        .get_bulk_state(pb::GetBulkStateRequest {
            store_name: "s".into(),
            keys: vec![keys[0].clone(), String::new()],
            parallelism: 0,
            metadata: HashMap::new(),
        })
        .await
        .expect("GetBulkState")
        .into_inner()
        .items;
    assert_eq!(items[0].data, keys[0].as_bytes());
    assert!(!items[1].error.is_empty());
}

pub async fn bulk_saves_and_deletes_take_many_items(f: &Fixture) {
    let keys: Vec<String> = (0..50).map(|i| f.key(&format!("many-{i}"))).collect();
    f.save_items("s", keys.iter().map(|k| item(k, b"v")).collect())
        .await
        .expect("save 50");
    for k in &keys {
        assert_eq!(f.get(k).await.0, b"v");
    }
    f.client()
        .delete_bulk_state(pb::DeleteBulkStateRequest {
            store_name: "s".into(),
            states: keys.iter().map(|k| item(k, b"")).collect(),
        })
        .await
        .expect("delete 50");
    for k in &keys {
        assert!(f.get(k).await.0.is_empty());
    }
}

pub async fn a_save_of_many_items_is_all_or_nothing(f: &Fixture) {
    let (a, b) = (f.key("a"), f.key("b"));
    let etag_b = f.save(&b, b"b0").await;
    let stale = with_etag(item(&b, b"b1"), "1");
    assert_code(
        f.save_items("s", vec![item(&a, b"a1"), stale]).await,
        Code::Aborted,
        "one stale etag",
    );
    assert!(f.get(&a).await.0.is_empty(), "the good item was not written");
    f.save_items("s", vec![item(&a, b"a1"), with_etag(item(&b, b"b1"), &etag_b)])
        .await
        .expect("all good");
    assert_eq!(f.get(&a).await.0, b"a1");
    assert_eq!(f.get(&b).await.0, b"b1");
}

pub async fn a_transaction_applies_every_operation(f: &Fixture) {
    let (a, b, c) = (f.key("a"), f.key("b"), f.key("c"));
    let etag_b = f.save(&b, b"b0").await;
    f.save(&c, b"c0").await;
    f.transact(vec![
        upsert(item(&a, b"a1")),
        upsert(with_etag(item(&b, b"b1"), &etag_b)),
        delete_op(&c, None),
    ])
    .await
    .expect("transaction");
    assert_eq!(f.get(&a).await.0, b"a1");
    assert_eq!(f.get(&b).await.0, b"b1");
    assert!(f.get(&c).await.0.is_empty());
    // Later operations see earlier ones: write then delete one key.
    f.transact(vec![upsert(item(&c, b"c1")), delete_op(&c, None)])
        .await
        .expect("write then delete");
    assert!(f.get(&c).await.0.is_empty());
    f.transact(vec![]).await.expect("an empty transaction is a no-op");
}

pub async fn a_transaction_with_a_failing_etag_applies_nothing(f: &Fixture) {
    let (a, b, c) = (f.key("a"), f.key("b"), f.key("c"));
    f.save(&b, b"b0").await;
    let etag_c = f.save(&c, b"c0").await;
    let status = assert_code(
        f.transact(vec![
            upsert(item(&a, b"a1")),
            upsert(with_etag(item(&b, b"b1"), "1")),
            delete_op(&c, Some(&etag_c)),
        ])
        .await,
        Code::Aborted,
        "second operation's etag",
    );
    assert!(status.message().contains(&b), "{}", status.message());
    assert!(f.get(&a).await.0.is_empty(), "the first operation was not applied");
    assert_eq!(f.get(&b).await.0, b"b0");
    assert_eq!(f.get(&c).await.0, b"c0");
    assert_code(
        f.transact(vec![upsert(item(&a, b"a1")), upsert(first_write(item(&b, b"b2")))])
            .await,
        Code::Aborted,
        "first-write inside a transaction",
    );
    assert!(f.get(&a).await.0.is_empty());
}

pub async fn key_prefixes_scope_keys_as_layotto_does(f: &Fixture) {
    let key = f.key("scoped");
    f.save_items("s_appid", vec![item(&key, b"by app")])
        .await
        .expect("appid");
    f.save_items("s_name", vec![item(&key, b"by name")])
        .await
        .expect("name");
    f.save_items("s_literal", vec![item(&key, b"by literal")])
        .await
        .expect("literal");
    assert_eq!(f.get_from("s_appid", &key).await.expect("get").0, b"by app");
    assert_eq!(f.get_from("s_name", &key).await.expect("get").0, b"by name");
    assert_eq!(f.get_from("s_literal", &key).await.expect("get").0, b"by literal");
    assert_code(
        f.save_items("s_appid", vec![item("a||b", b"x")]).await,
        Code::InvalidArgument,
        "'||' in a prefixed key",
    );
    if f.backend.shared() {
        // The store without a prefix sees the backend's real keys.
        assert_eq!(f.get(&format!("conformance||{key}")).await.0, b"by app");
        assert_eq!(f.get(&format!("s_name||{key}")).await.0, b"by name");
        assert_eq!(f.get(&format!("shop||{key}")).await.0, b"by literal");
        assert!(f.get(&key).await.0.is_empty());
    }
}

pub async fn values_survive_a_sidecar_restart(f: Fixture) {
    if !f.backend.shared() {
        f.rt.shutdown().await;
        return;
    }
    let key = f.key("durable");
    let etag = f.save(&key, b"still here").await;
    let f = f.restart().await;
    assert_eq!(f.get(&key).await, (b"still here".to_vec(), etag));
    f.rt.shutdown().await;
}

/// Dapr's query language over the store (QueryStateAlpha1 on the Dapr
/// gRPC API, on the same listener): filters, sort and pages over this
/// run's keys only; Redis says it cannot, naming the store.
pub async fn queries_filter_sort_and_page(f: &Fixture) {
    use layotto::proto::dapr::runtime::v1 as dapr;
    let mut client = dapr::dapr_client::DaprClient::connect(format!("http://{}", f.rt.grpc_addr()))
        .await
        .expect("connect");
    let run = f.key("q");
    let people = [
        ("a", "Dev Ops", 1036, "WA"),
        ("b", "Hardware", 1028, "OR"),
        ("c", "Finance", 1071, "CA"),
        ("d", "Dev Ops", 1042, "WA"),
    ];
    let items = people
        .iter()
        .map(|(k, org, id, state)| {
            let value = serde_json::json!({ "run": run, "person": { "org": org, "id": id }, "state": state });
            item(&f.key(k), value.to_string().as_bytes())
        })
        .collect();
    f.save_items("s", items).await.expect("save");
    let query = |filter: serde_json::Value, extra: &str| dapr::QueryStateRequest {
        store_name: "s".into(),
        query: format!(r#"{{"filter":{{"AND":[{{"EQ":{{"run":"{run}"}}}},{filter}]}}{extra}}}"#),
        metadata: HashMap::new(),
    };
    let answer = client
        .query_state_alpha1(query(
            serde_json::json!({"EQ": {"person.org": "Dev Ops"}}),
            r#","sort":[{"key":"person.id","order":"DESC"}]"#,
        ))
        .await;
    // Stores that cannot list their keys say so, naming the store and type.
    let cannot = match f.backend {
        Backend::Redis => Some("redis".to_owned()),
        Backend::Pluggable => Some(crate::pluggable::shared_name()),
        _ => None,
    };
    if let Some(ty) = cannot {
        let status = assert_code(answer, Code::Unimplemented, "query on a store that cannot list keys");
        assert!(
            status.message().contains("'s'") && status.message().contains(&ty),
            "{}",
            status.message()
        );
        return;
    }
    let answer = answer.expect("query").into_inner();
    let keys: Vec<String> = answer.results.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys, [f.key("d"), f.key("a")]);
    let (_, etag) = f.get(&f.key("d")).await;
    assert_eq!(answer.results[0].etag, etag, "the etag GetState gives");
    // IN and GT, then pages of one.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = if token.is_empty() {
            String::new()
        } else {
            format!(r#","token":"{token}""#)
        };
        let answer = client
            .query_state_alpha1(query(
                serde_json::json!({"OR": [{"IN": {"state": ["CA", "OR"]}}, {"GT": {"person.id": 1040}}]}),
                &format!(r#","sort":[{{"key":"person.id"}}],"page":{{"limit":1{page}}}"#),
            ))
            .await
            .expect("page")
            .into_inner();
        seen.extend(answer.results.into_iter().map(|r| r.key));
        if answer.token.is_empty() {
            break;
        }
        token = answer.token;
        assert!(seen.len() <= 3, "pages end");
    }
    assert_eq!(seen, [f.key("b"), f.key("d"), f.key("c")]);
    // A query that does not parse never reaches the store.
    let bad = client
        .query_state_alpha1(dapr::QueryStateRequest {
            store_name: "s".into(),
            query: r#"{"filter":{"LIKE":{"a":1}}}"#.into(),
            metadata: HashMap::new(),
        })
        .await;
    let status = assert_code(bad, Code::Internal, "bad query");
    assert!(
        status.message().contains("unknown filter operator 'LIKE'"),
        "{}",
        status.message()
    );
}

/// One test per (store, case).
macro_rules! conformance {
    ($($store:ident => $backend:expr),* $(,)?) => {
        $(
            mod $store {
                use super::*;
                crate::conformance_cases!($backend;
                    a_missing_key_reads_empty,
                    a_saved_value_reads_back_with_an_etag,
                    binary_large_and_unicode_values_round_trip,
                    every_write_gets_a_new_etag,
                    a_write_with_the_current_etag_succeeds_and_a_stale_one_aborts,
                    of_two_writers_with_one_etag_exactly_one_wins,
                    first_write_refuses_an_existing_key,
                    deletes_honour_etags,
                    bad_input_is_invalid_and_changes_nothing,
                    a_ttl_expires_the_key,
                    a_bulk_get_answers_every_key,
                    bulk_saves_and_deletes_take_many_items,
                    a_save_of_many_items_is_all_or_nothing,
                    a_transaction_applies_every_operation,
                    a_transaction_with_a_failing_etag_applies_nothing,
                    key_prefixes_scope_keys_as_layotto_does,
                    queries_filter_sort_and_page,
                );

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn values_survive_a_sidecar_restart() {
                    if let Some(f) = Fixture::start($backend).await {
                        super::values_survive_a_sidecar_restart(f).await;
                    }
                }
            }
        )*
    };
}

conformance! {
    memory => Backend::Memory,
    sqlite => Backend::Sqlite,
    redis => Backend::Redis,
    postgresql => Backend::Postgres,
    mysql => Backend::Mysql,
    zookeeper => Backend::Zookeeper,
    pluggable => Backend::Pluggable,
}
