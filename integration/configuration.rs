//! The Configuration API conformance suite against every store, changes
//! seen across sidecars, and a subscription that outlives its backend's
//! restart.

use std::collections::HashMap;
use std::time::Duration;

use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use tokio::sync::mpsc;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{self, BackendType, PrivateRedis, Service, eventually};

const WAIT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Memory,
    File,
    Redis,
    Postgres,
    Etcd,
}

impl Store {
    fn config(self, app: &str, dir: &std::path::Path) -> String {
        let (ty, meta) = match self {
            Store::Memory => ("in-memory", String::new()),
            Store::File => (
                "file",
                format!(r#"path = "{}", pollInterval = "100ms""#, dir.join("config.yaml").display()),
            ),
            Store::Redis => ("redis", r#"redisHost = "127.0.0.1:6379""#.to_owned()),
            Store::Postgres => (
                "postgresql",
                r#"connectionString = "postgres://postgres@127.0.0.1:5432/test", tableName = "layotto_config_conformance""#
                    .to_owned(),
            ),
            Store::Etcd => ("etcd", r#"endpoints = "127.0.0.1:2379""#.to_owned()),
        };
        format!("[app]\napp_id = \"{app}\"\n[config_store.c]\ntype = \"{ty}\"\nmetadata = {{ {meta} }}\n")
    }
}

impl BackendType for Store {
    fn service(self) -> Option<Service> {
        match self {
            Store::Memory | Store::File => None,
            Store::Redis => Some(Service::Redis),
            Store::Postgres => Some(Service::Postgres),
            Store::Etcd => Some(Service::Etcd),
        }
    }
}

pub fn item(key: &str, content: &str) -> pb::ConfigurationItem {
    pb::ConfigurationItem {
        key: key.into(),
        content: content.into(),
        ..Default::default()
    }
}

pub async fn save(client: &mut RuntimeClient<Channel>, items: Vec<pb::ConfigurationItem>) -> Result<(), tonic::Status> {
    client
        .save_configuration(pb::SaveConfigurationRequest {
            store_name: "c".into(),
            items,
            ..Default::default()
        })
        .await
        .map(drop)
}

pub async fn get(client: &mut RuntimeClient<Channel>, keys: &[&str]) -> Vec<pb::ConfigurationItem> {
    client
        .get_configuration(pb::GetConfigurationRequest {
            store_name: "c".into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("GetConfiguration")
        .into_inner()
        .items
}

pub async fn delete(client: &mut RuntimeClient<Channel>, keys: &[&str]) -> Result<(), tonic::Status> {
    client
        .delete_configuration(pb::DeleteConfigurationRequest {
            store_name: "c".into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            ..Default::default()
        })
        .await
        .map(drop)
}

/// A SubscribeConfiguration stream: the items it delivers, one by one.
pub struct Subscriber {
    items: mpsc::UnboundedReceiver<pb::ConfigurationItem>,
    _requests: mpsc::Sender<pb::SubscribeConfigurationRequest>,
}

impl Subscriber {
    pub async fn open(client: &mut RuntimeClient<Channel>, keys: &[&str]) -> Subscriber {
        let (requests, requests_rx) = mpsc::channel(4);
        requests
            .send(pb::SubscribeConfigurationRequest {
                store_name: "c".into(),
                keys: keys.iter().map(|k| k.to_string()).collect(),
                ..Default::default()
            })
            .await
            .expect("send");
        let mut responses = client
            .subscribe_configuration(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
            .await
            .expect("SubscribeConfiguration")
            .into_inner();
        let (tx, items) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(response)) = responses.message().await {
                for item in response.items {
                    if tx.send(item).is_err() {
                        return;
                    }
                }
            }
        });
        Subscriber {
            items,
            _requests: requests,
        }
    }

    /// The next item, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> pb::ConfigurationItem {
        tokio::time::timeout(timeout, self.items.recv())
            .await
            .expect("an item within the time")
            .expect("the stream is open")
    }

    /// Items until one matches `want`, returning it.
    pub async fn until(
        &mut self,
        timeout: Duration,
        want: impl Fn(&pb::ConfigurationItem) -> bool,
    ) -> pb::ConfigurationItem {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let item = self.next(left).await;
            if want(&item) {
                return item;
            }
        }
    }

    /// Nothing more arrives within `quiet`.
    pub async fn silent(&mut self, quiet: Duration) {
        if let Ok(Some(item)) = tokio::time::timeout(quiet, self.items.recv()).await {
            panic!("unexpected item {item:?}");
        }
    }
}

pub fn is_deleted(item: &pb::ConfigurationItem) -> bool {
    item.metadata.get("deleted").map(String::as_str) == Some("true")
}

struct Fixture {
    rt: layotto::Runtime,
    client: RuntimeClient<Channel>,
    dir: tempfile::TempDir,
    key: String,
}

impl Fixture {
    async fn start(store: Store) -> Option<Fixture> {
        if !store.available() {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let (rt, client) = support::start_ready(&store.config(&support::unique("cfg-app"), dir.path())).await;
        Some(Fixture {
            rt,
            client,
            dir,
            key: support::unique("k"),
        })
    }

    fn k(&self, n: &str) -> String {
        format!("{}-{n}", self.key)
    }
}

// ---- The cases.

async fn saved_items_read_back_with_defaults(f: &Fixture) {
    let mut c = f.client.clone();
    let (a, b) = (f.k("a"), f.k("b"));
    let mut tagged = item(&b, "two");
    tagged.tags = HashMap::from([("owner".into(), "payments".into())]);
    save(&mut c, vec![item(&a, "one"), tagged]).await.expect("save");
    let got = get(&mut c, &[&a, &b]).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let b_item = got.iter().find(|i| i.key == b).expect("b");
    assert_eq!(b_item.content, "two");
    assert_eq!(b_item.group, "default");
    assert_eq!(b_item.label, "default");
    assert_eq!(b_item.tags.get("owner").map(String::as_str), Some("payments"));
    // No keys: every key of the app, group and label.
    let all = get(&mut c, &[]).await;
    assert!(
        all.iter().any(|i| i.key == a) && all.iter().any(|i| i.key == b),
        "{all:?}"
    );
    // Another group does not see them.
    let other = c
        .get_configuration(pb::GetConfigurationRequest {
            store_name: "c".into(),
            group: "other".into(),
            keys: vec![a.clone()],
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner()
        .items;
    assert!(other.is_empty());
}

async fn deleted_items_are_gone(f: &Fixture) {
    let mut c = f.client.clone();
    let a = f.k("a");
    save(&mut c, vec![item(&a, "one")]).await.expect("save");
    delete(&mut c, &[&a]).await.expect("delete");
    assert!(get(&mut c, &[&a]).await.is_empty());
    delete(&mut c, &[&a]).await.expect("deleting a missing key succeeds");
}

async fn a_subscriber_sees_current_values_then_every_change_in_order(f: &Fixture) {
    let mut c = f.client.clone();
    let (a, b, other) = (f.k("a"), f.k("b"), f.k("other"));
    save(&mut c, vec![item(&a, "v0")]).await.expect("save");
    let mut sub = Subscriber::open(&mut c, &[&a, &b]).await;
    let first = sub.next(WAIT).await;
    assert_eq!((first.key.as_str(), first.content.as_str()), (a.as_str(), "v0"));
    for v in ["v1", "v2", "v3"] {
        save(&mut c, vec![item(&a, v)]).await.expect("save");
    }
    save(&mut c, vec![item(&b, "b1")]).await.expect("save");
    save(&mut c, vec![item(&other, "not watched")]).await.expect("save");
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let it = sub.next(WAIT).await;
        assert_ne!(it.key, other, "a key not subscribed to");
        seen.push(format!("{}={}", it.key, it.content));
    }
    assert_eq!(
        seen,
        vec![
            format!("{a}=v1"),
            format!("{a}=v2"),
            format!("{a}=v3"),
            format!("{b}=b1")
        ]
    );
    delete(&mut c, &[&b]).await.expect("delete");
    let gone = sub.until(WAIT, |i| i.key == b).await;
    assert!(is_deleted(&gone), "a delete arrives as a delete: {gone:?}");
    sub.silent(Duration::from_millis(300)).await;
}

async fn bad_requests_are_invalid_arguments(f: &Fixture) {
    let mut c = f.client.clone();
    assert_eq!(
        save(&mut c, vec![]).await.expect_err("no items").code(),
        Code::InvalidArgument
    );
    assert_eq!(
        save(&mut c, vec![item("", "x")]).await.expect_err("empty key").code(),
        Code::InvalidArgument
    );
    assert_eq!(
        delete(&mut c, &[]).await.expect_err("no keys").code(),
        Code::InvalidArgument
    );
    let err = c
        .get_configuration(pb::GetConfigurationRequest {
            store_name: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown store");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .get_configuration(pb::GetConfigurationRequest {
            store_name: "c".into(),
            group: "a||b".into(),
            ..Default::default()
        })
        .await
        .expect_err("separator in group");
    assert_eq!(err.code(), Code::InvalidArgument);
}

macro_rules! conformance {
    ($($name:ident => $store:expr),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                crate::conformance_cases!($store;
                    saved_items_read_back_with_defaults,
                    deleted_items_are_gone,
                    a_subscriber_sees_current_values_then_every_change_in_order,
                    bad_requests_are_invalid_arguments,
                );
            }
        )*
    };
}

conformance! {
    memory => Store::Memory,
    file => Store::File,
    redis => Store::Redis,
    postgresql => Store::Postgres,
    etcd => Store::Etcd,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_to_the_file_reach_subscribers() {
    let Some(f) = Fixture::start(Store::File).await else {
        return;
    };
    let mut c = f.client.clone();
    let a = f.k("a");
    save(&mut c, vec![item(&a, "from the api")]).await.expect("save");
    let mut sub = Subscriber::open(&mut c, &[&a]).await;
    assert_eq!(sub.next(WAIT).await.content, "from the api");
    // Edit the file as a person would: rewrite it with a new value.
    let path = f.dir.path().join("config.yaml");
    let text = std::fs::read_to_string(&path).expect("the store wrote the file");
    std::fs::write(&path, text.replace("from the api", "edited by hand")).expect("edit");
    let edited = sub.next(WAIT).await;
    assert_eq!(edited.content, "edited by hand");
    f.rt.shutdown().await;
}

/// A subscriber on sidecar A sees what sidecar B saves, within a second.
async fn changes_cross_sidecars(store: Store) {
    if !store.available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let app = support::unique("cfg-shared");
    let a = support::start(&store.config(&app, dir.path())).await;
    let b = support::start(&store.config(&app, dir.path())).await;
    support::wait_ready(&a).await;
    support::wait_ready(&b).await;
    let (mut client_a, mut client_b) = (support::client(&a).await, support::client(&b).await);
    let key = support::unique("shared-key");
    let mut sub = Subscriber::open(&mut client_a, &[&key]).await;
    // Subscribed when its (empty) current values are in; give the stream
    // a moment to stand.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let saved_at = std::time::Instant::now();
    save(&mut client_b, vec![item(&key, "from b")])
        .await
        .expect("save on b");
    let seen = sub.next(Duration::from_secs(1)).await;
    assert_eq!(seen.content, "from b");
    eprintln!(
        "{store:?}: a change saved on sidecar B reached A's subscriber in {:?}",
        saved_at.elapsed()
    );
    delete(&mut client_b, &[&key]).await.expect("delete on b");
    let gone = sub.next(Duration::from_secs(1)).await;
    assert!(is_deleted(&gone), "{gone:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_changes_reach_other_sidecars_within_a_second() {
    changes_cross_sidecars(Store::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_changes_reach_other_sidecars_within_a_second() {
    changes_cross_sidecars(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_changes_reach_other_sidecars_within_a_second() {
    changes_cross_sidecars(Store::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_outlives_a_restart_of_its_redis() {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(mut redis) = PrivateRedis::start_persistent(dir.path()) else {
        return;
    };
    let (rt, mut c) = support::start_ready(&format!(
        r#"
        [app]
        app_id = "outlive"
        [supervisor]
        backoff_min = "100ms"
        backoff_max = "500ms"
        health_interval = "200ms"
        [config_store.c]
        type = "redis"
        metadata = {{ redisHost = "{}", readTimeout = "500ms", dialTimeout = "500ms" }}
        "#,
        redis.addr()
    ))
    .await;
    save(&mut c, vec![item("k", "before")]).await.expect("save");
    let mut sub = Subscriber::open(&mut c, &["k"]).await;
    assert_eq!(sub.next(WAIT).await.content, "before");

    redis.restart();
    // After the reconnect: the current values again (Redis kept them).
    let again = sub.next(WAIT).await;
    assert_eq!((again.key.as_str(), again.content.as_str()), ("k", "before"));
    // Then later changes, on the same stream.
    eventually("a save after the restart", WAIT, || {
        let mut c = c.clone();
        async move { save(&mut c, vec![item("k", "after")]).await.ok() }
    })
    .await;
    let after = sub.until(WAIT, |i| i.content == "after").await;
    assert_eq!(after.key, "k");
    rt.shutdown().await;
}

/// A write by another tool, straight to the backend, reaches subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_by_other_tools_reach_subscribers() {
    for store in [Store::Redis, Store::Postgres, Store::Etcd] {
        if !store.available() {
            continue;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let app = support::unique("cfg-foreign");
        let (rt, mut c) = support::start_ready(&store.config(&app, dir.path())).await;
        let mut sub = Subscriber::open(&mut c, &["foreign"]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        match store {
            Store::Redis => {
                let client = ::redis::Client::open("redis://127.0.0.1:6379/0").expect("client");
                let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
                ::redis::cmd("SET")
                    .arg(format!("layotto||config||{app}||default||default||foreign"))
                    .arg("written by redis-cli")
                    .query_async::<()>(&mut conn)
                    .await
                    .expect("SET");
            }
            Store::Etcd => {
                // As an operator would, with etcdctl: Layotto's key layout.
                let out = std::process::Command::new("etcdctl")
                    .args(["--endpoints", "127.0.0.1:2379", "put"])
                    .arg(format!("/{app}/default/default/foreign"))
                    .arg("written by etcdctl")
                    .output()
                    .expect("etcdctl (integration/services/setup.sh installs it)");
                assert!(out.status.success(), "etcdctl put: {out:?}");
            }
            _ => {
                let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/test")
                    .await
                    .expect("connect");
                sqlx::query(
                    "INSERT INTO layotto_config_conformance (app_id, grp, label, key, content) \
                     VALUES ($1, 'default', 'default', 'foreign', 'written by psql')",
                )
                .bind(&app)
                .execute(&pool)
                .await
                .expect("INSERT");
            }
        }
        let seen = sub.next(WAIT).await;
        assert_eq!(seen.key, "foreign", "{store:?}");
        assert!(seen.content.starts_with("written by"), "{store:?}: {seen:?}");
        rt.shutdown().await;
    }
}
