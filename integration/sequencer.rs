//! The Sequencer API conformance suite against every store, and the
//! guarantees across two sidecars sharing one store.

use std::collections::HashSet;

use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use layotto::proto::runtime::v1::sequencer_options::AutoIncrement;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{self, BackendType, Service};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Memory,
    Sqlite,
    Redis,
    Postgres,
    Mysql,
    Etcd,
    Zookeeper,
    /// Worker ids from MariaDB's `test` database, in a table of the app's.
    Snowflake,
}

impl Store {
    /// `[sequencer.s]`, with small segments so tests cross many.
    fn config(self, app: &str, dir: &std::path::Path) -> String {
        let (ty, meta) = match self {
            Store::Memory => ("in-memory", String::new()),
            Store::Sqlite => ("sqlite", format!(r#"connectionString = "{}", "#, dir.join("seq.db").display())),
            Store::Redis => ("redis", r#"redisHost = "127.0.0.1:6379", "#.to_owned()),
            Store::Postgres => (
                "postgresql",
                r#"connectionString = "postgres://postgres@127.0.0.1:5432/test", tableName = "layotto_seq_conformance", "#
                    .to_owned(),
            ),
            Store::Mysql => (
                "mysql",
                r#"connectionString = "mysql://root@127.0.0.1:3306/test", tableName = "layotto_seq_conformance", "#
                    .to_owned(),
            ),
            Store::Etcd => ("etcd", r#"endpoints = "127.0.0.1:2379", keyPrefixPath = "/layotto-conformance/seq", "#.to_owned()),
            Store::Zookeeper => (
                "zookeeper",
                r#"zookeeperHosts = "127.0.0.1:2181", keyPrefixPath = "/layotto-conformance/seq", "#.to_owned(),
            ),
            // A worker table per test run, shared by its sidecars (as it
            // must be for them to get different worker ids).
            Store::Snowflake => (
                "snowflake",
                format!(
                    r#"mysqlHost = "127.0.0.1:3306", databaseName = "test", userName = "root", tableName = "layotto_snowflake_{}", "#,
                    std::process::id()
                ),
            ),
        };
        format!(
            "[app]\napp_id = \"{app}\"\n[sequencer.s]\ntype = \"{ty}\"\nmetadata = {{ {meta}segmentSize = \"50\" }}\n\
             biggerThan = {{ floored = 1000 }}\n"
        )
    }

    fn shared(self) -> bool {
        self != Store::Memory
    }

    /// STRONG ids increase across sidecars. Not snowflake's: each sidecar
    /// makes its own ids (its worker id in the middle bits), so they are
    /// unique everywhere but increase per sidecar only, as in Layotto.
    fn strong_across_sidecars(self) -> bool {
        self != Store::Snowflake
    }
}

impl BackendType for Store {
    fn service(self) -> Option<Service> {
        match self {
            Store::Memory | Store::Sqlite => None,
            Store::Redis => Some(Service::Redis),
            Store::Postgres => Some(Service::Postgres),
            Store::Mysql | Store::Snowflake => Some(Service::Mariadb),
            Store::Etcd => Some(Service::Etcd),
            Store::Zookeeper => Some(Service::Zookeeper),
        }
    }
}

pub async fn next_id(
    client: &mut RuntimeClient<Channel>,
    key: &str,
    increment: AutoIncrement,
) -> Result<i64, tonic::Status> {
    client
        .get_next_id(pb::GetNextIdRequest {
            store_name: "s".into(),
            key: key.into(),
            options: Some(pb::SequencerOptions {
                increment: increment as i32,
            }),
            metadata: Default::default(),
        })
        .await
        .map(|r| r.into_inner().next_id)
}

fn strictly_increasing(ids: &[i64]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

struct Fixture {
    rt: layotto::Runtime,
    client: RuntimeClient<Channel>,
    store: Store,
    app: String,
    key: String,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(store: Store) -> Option<Fixture> {
        if !store.available() {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let app = support::unique("seq-app");
        let (rt, client) = support::start_ready(&store.config(&app, dir.path())).await;
        Some(Fixture {
            rt,
            client,
            store,
            app,
            key: support::unique("k"),
            dir,
        })
    }

    async fn ids(&self, key: &str, n: usize, increment: AutoIncrement) -> Vec<i64> {
        let mut client = self.client.clone();
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(next_id(&mut client, key, increment).await.expect("GetNextId"));
        }
        ids
    }
}

// ---- The cases.

async fn weak_ids_increase_and_never_repeat(f: &Fixture) {
    let ids = f.ids(&f.key, 300, AutoIncrement::Weak).await;
    assert!(strictly_increasing(&ids), "{ids:?}");
    assert!(ids[0] >= 1);
}

async fn strong_ids_increase_in_the_order_they_return(f: &Fixture) {
    let ids = f.ids(&f.key, 100, AutoIncrement::Strong).await;
    assert!(strictly_increasing(&ids), "{ids:?}");
}

async fn concurrent_callers_get_unique_increasing_ids(f: &Fixture) {
    let all = unique_ids_from_callers(std::slice::from_ref(&f.client), &f.key, 8, 200).await;
    assert_eq!(all.len(), 1600);
}

/// `callers` concurrent callers spread over `clients`, `per_caller` WEAK
/// ids each from one key: each caller's ids strictly increase and no id is
/// handed out twice. Returns them all.
async fn unique_ids_from_callers(
    clients: &[RuntimeClient<Channel>],
    key: &str,
    callers: usize,
    per_caller: usize,
) -> HashSet<i64> {
    let callers: Vec<_> = (0..callers)
        .map(|i| {
            let (mut client, key) = (clients[i % clients.len()].clone(), key.to_owned());
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(per_caller);
                for _ in 0..per_caller {
                    ids.push(
                        next_id(&mut client, &key, AutoIncrement::Weak)
                            .await
                            .expect("GetNextId"),
                    );
                }
                ids
            })
        })
        .collect();
    let mut all = HashSet::new();
    for caller in callers {
        let ids = caller.await.expect("caller");
        assert!(strictly_increasing(&ids), "a caller's ids went back: {ids:?}");
        for id in ids {
            assert!(all.insert(id), "id {id} handed out twice");
        }
    }
    all
}

async fn bigger_than_is_a_floor_for_every_id(f: &Fixture) {
    let weak = f.ids("floored", 60, AutoIncrement::Weak).await;
    let strong = f.ids("floored", 10, AutoIncrement::Strong).await;
    for id in weak.iter().chain(&strong) {
        assert!(*id > 1000, "id {id} is not above biggerThan");
    }
}

async fn bad_requests_are_invalid_arguments(f: &Fixture) {
    let mut client = f.client.clone();
    for (what, key) in [("empty key", ""), ("'||' in the key", "a||b")] {
        let err = next_id(&mut client, key, AutoIncrement::Weak).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
    let err = client
        .get_next_id(pb::GetNextIdRequest {
            store_name: "nope".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown store");
    assert_eq!(err.code(), Code::InvalidArgument);
}

async fn no_id_repeats_after_a_restart(f: Fixture) {
    let before = f.ids(&f.key, 75, AutoIncrement::Weak).await;
    let Fixture {
        rt,
        store,
        app,
        key,
        dir,
        ..
    } = f;
    rt.shutdown().await;
    if !store.shared() {
        return;
    }
    let (rt, mut client) = support::start_ready(&store.config(&app, dir.path())).await;
    let after = next_id(&mut client, &key, AutoIncrement::Weak)
        .await
        .expect("GetNextId");
    let last = *before.last().expect("ids");
    assert!(after > last, "after a restart {after} is not above {last}");
    rt.shutdown().await;
}

macro_rules! conformance {
    ($($name:ident => $store:expr),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                crate::conformance_cases!($store;
                    weak_ids_increase_and_never_repeat,
                    strong_ids_increase_in_the_order_they_return,
                    concurrent_callers_get_unique_increasing_ids,
                    bigger_than_is_a_floor_for_every_id,
                    bad_requests_are_invalid_arguments,
                );

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn no_id_repeats_after_a_restart() {
                    if let Some(f) = Fixture::start($store).await {
                        super::no_id_repeats_after_a_restart(f).await;
                    }
                }
            }
        )*
    };
}

conformance! {
    memory => Store::Memory,
    sqlite => Store::Sqlite,
    redis => Store::Redis,
    postgresql => Store::Postgres,
    mysql => Store::Mysql,
    etcd => Store::Etcd,
    zookeeper => Store::Zookeeper,
    snowflake => Store::Snowflake,
}

/// Two sidecars sharing a store, 8 callers each, 1000 ids per caller.
async fn two_sidecars_share_a_store(store: Store) {
    if !store.available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let app = support::unique("seq-shared");
    let a = support::start(&store.config(&app, dir.path())).await;
    let b = support::start(&store.config(&app, dir.path())).await;
    support::wait_ready(&a).await;
    support::wait_ready(&b).await;
    let key = support::unique("shared");
    let clients = [support::client(&a).await, support::client(&b).await];
    let all = unique_ids_from_callers(&clients, &key, 16, 1000).await;
    assert_eq!(all.len(), 16_000);

    // STRONG, alternating between the sidecars: increasing in the order
    // returned, across both.
    let strong_key = support::unique("strong");
    let mut strong = Vec::new();
    for i in 0..200 {
        let mut client = clients[i % 2].clone();
        strong.push(
            next_id(&mut client, &strong_key, AutoIncrement::Strong)
                .await
                .expect("GetNextId"),
        );
    }
    if store.strong_across_sidecars() {
        assert!(strictly_increasing(&strong), "STRONG ids went back across sidecars");
    } else {
        // Each sidecar's own STRONG ids increase, and none repeats.
        for sidecar in 0..2 {
            let own: Vec<i64> = strong.iter().skip(sidecar).step_by(2).copied().collect();
            assert!(strictly_increasing(&own), "a sidecar's STRONG ids went back: {own:?}");
        }
        assert_eq!(
            strong.iter().collect::<HashSet<_>>().len(),
            strong.len(),
            "a STRONG id repeated"
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_ids_stay_unique_across_two_sidecars() {
    two_sidecars_share_a_store(Store::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_ids_stay_unique_across_two_sidecars() {
    two_sidecars_share_a_store(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_ids_stay_unique_across_two_sidecars() {
    two_sidecars_share_a_store(Store::Mysql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_ids_stay_unique_across_two_sidecars() {
    two_sidecars_share_a_store(Store::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_ids_stay_unique_across_two_sidecars() {
    two_sidecars_share_a_store(Store::Zookeeper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snowflake_ids_stay_unique_across_two_sidecars() {
    two_sidecars_share_a_store(Store::Snowflake).await;
}
