//! The Lock API conformance suite, against every lock store, and mutual
//! exclusion across two sidecar processes sharing a backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use layotto::proto::runtime::v1 as pb;
use layotto::proto::runtime::v1::lock_keep_alive_response::Status as KeepAliveStatus;
use layotto::proto::runtime::v1::runtime_client::RuntimeClient;
use layotto::proto::runtime::v1::unlock_response::Status as UnlockStatus;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{self, BackendType, PrivateRedis, Service, Sidecar, eventually};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Memory,
    Sqlite,
    Redis,
    Postgres,
    Etcd,
    Zookeeper,
    /// Redlock over three private Redis instances.
    RedisCluster,
}

/// The servers a store's tests run of their own, stopped when dropped: the
/// three Redis instances of `redis_cluster`.
#[derive(Default)]
struct Backends {
    redis: Vec<PrivateRedis>,
}

impl Store {
    /// The servers of the store's own, or `None` to skip (outside CI,
    /// without `redis-server`).
    fn backends(self) -> Option<Backends> {
        let redis = match self {
            Store::RedisCluster => (0..3).map(|_| PrivateRedis::start()).collect::<Option<Vec<_>>>()?,
            _ => Vec::new(),
        };
        Some(Backends { redis })
    }

    /// `[lock.<name>]` for this store, with extra metadata.
    fn entry(self, name: &str, dir: &std::path::Path, backends: &Backends, extra: &str) -> String {
        let (ty, meta) = match self {
            Store::Memory => ("in-memory", String::new()),
            Store::Sqlite => ("sqlite", format!(r#"connectionString = "{}", "#, dir.join("locks.db").display())),
            Store::Redis => ("redis", r#"redisHost = "127.0.0.1:6379", "#.to_owned()),
            Store::Postgres => (
                "postgresql",
                r#"connectionString = "postgres://postgres@127.0.0.1:5432/test", tableName = "layotto_lock_conformance", "#
                    .to_owned(),
            ),
            Store::Etcd => ("etcd", r#"endpoints = "127.0.0.1:2379", keyPrefixPath = "/layotto-conformance/lock", "#.to_owned()),
            Store::Zookeeper => (
                "zookeeper",
                r#"zookeeperHosts = "127.0.0.1:2181", keyPrefixPath = "/layotto-conformance/lock", "#.to_owned(),
            ),
            Store::RedisCluster => {
                let hosts: Vec<String> = backends.redis.iter().map(PrivateRedis::addr).collect();
                ("redis_cluster", format!(r#"redisHosts = "{}", "#, hosts.join(",")))
            }
        };
        format!("[lock.{name}]\ntype = \"{ty}\"\nmetadata = {{ {meta}{extra} }}\n")
    }

    fn shared(self) -> bool {
        self != Store::Memory
    }
}

impl BackendType for Store {
    fn service(self) -> Option<Service> {
        match self {
            // redis_cluster's instances are the test's own.
            Store::Memory | Store::Sqlite | Store::RedisCluster => None,
            Store::Redis => Some(Service::Redis),
            Store::Postgres => Some(Service::Postgres),
            Store::Etcd => Some(Service::Etcd),
            Store::Zookeeper => Some(Service::Zookeeper),
        }
    }
}

struct Fixture {
    rt: layotto::Runtime,
    client: RuntimeClient<Channel>,
    store: Store,
    resource: String,
    backends: Backends,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(store: Store) -> Option<Fixture> {
        if !store.available() {
            return None;
        }
        let backends = store.backends()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let app = support::unique("lock-app");
        let config = format!(
            "[app]\napp_id = \"{app}\"\n{}{}{}",
            store.entry("l", dir.path(), &backends, ""),
            store.entry("l_none", dir.path(), &backends, r#"keyPrefix = "none""#),
            store.entry("l_same", dir.path(), &backends, &format!(r#"keyPrefix = "{app}""#)),
        );
        let (rt, client) = support::start_ready(&config).await;
        Some(Fixture {
            rt,
            client,
            store,
            resource: support::unique("res"),
            backends,
            _dir: dir,
        })
    }

    async fn try_lock(&self, store: &str, owner: &str, expire: i32) -> Result<bool, tonic::Status> {
        try_lock(&mut self.client.clone(), store, &self.resource, owner, expire).await
    }

    async fn unlock(&self, owner: &str) -> UnlockStatus {
        unlock(&mut self.client.clone(), &self.resource, owner).await
    }

    async fn keep_alive(&self, owner: &str, expire: i32) -> KeepAliveStatus {
        let r = self
            .client
            .clone()
            .lock_keep_alive(pb::LockKeepAliveRequest {
                store_name: "l".into(),
                resource_id: self.resource.clone(),
                lock_owner: owner.into(),
                expire,
            })
            .await
            .expect("LockKeepAlive")
            .into_inner();
        r.status()
    }
}

async fn try_lock(
    client: &mut RuntimeClient<Channel>,
    store: &str,
    resource: &str,
    owner: &str,
    expire: i32,
) -> Result<bool, tonic::Status> {
    client
        .try_lock(pb::TryLockRequest {
            store_name: store.into(),
            resource_id: resource.into(),
            lock_owner: owner.into(),
            expire,
        })
        .await
        .map(|r| r.into_inner().success)
}

async fn unlock(client: &mut RuntimeClient<Channel>, resource: &str, owner: &str) -> UnlockStatus {
    client
        .unlock(pb::UnlockRequest {
            store_name: "l".into(),
            resource_id: resource.into(),
            lock_owner: owner.into(),
        })
        .await
        .expect("Unlock")
        .into_inner()
        .status()
}

// ---- The cases.

async fn one_owner_at_a_time_and_no_reentry(f: &Fixture) {
    assert!(f.try_lock("l", "alice", 30).await.expect("TryLock"));
    assert!(
        !f.try_lock("l", "bob", 30).await.expect("TryLock"),
        "bob took a held lock"
    );
    assert!(
        !f.try_lock("l", "alice", 30).await.expect("TryLock"),
        "locks are not reentrant"
    );
}

async fn only_the_owner_releases(f: &Fixture) {
    assert_eq!(f.unlock("alice").await, UnlockStatus::LockUnexist);
    assert!(f.try_lock("l", "alice", 30).await.expect("TryLock"));
    assert_eq!(f.unlock("bob").await, UnlockStatus::LockBelongToOthers);
    assert!(
        !f.try_lock("l", "bob", 30).await.expect("TryLock"),
        "a refused unlock released it"
    );
    assert_eq!(f.unlock("alice").await, UnlockStatus::Success);
    assert_eq!(f.unlock("alice").await, UnlockStatus::LockUnexist);
    assert!(
        f.try_lock("l", "bob", 30).await.expect("TryLock"),
        "released locks can be taken"
    );
}

async fn an_expired_lock_can_be_taken_by_another_owner(f: &Fixture) {
    assert!(f.try_lock("l", "alice", 1).await.expect("TryLock"));
    assert!(!f.try_lock("l", "bob", 1).await.expect("TryLock"));
    eventually("the lease to expire", Duration::from_secs(10), || async {
        f.try_lock("l", "bob", 30).await.expect("TryLock").then_some(())
    })
    .await;
    assert_eq!(
        f.unlock("alice").await,
        UnlockStatus::LockBelongToOthers,
        "alice's lease is over"
    );
}

async fn keep_alive_holds_a_lock_past_its_first_expiry(f: &Fixture) {
    assert_eq!(f.keep_alive("alice", 5).await, KeepAliveStatus::LockUnexist);
    assert!(f.try_lock("l", "alice", 2).await.expect("TryLock"));
    assert_eq!(f.keep_alive("bob", 5).await, KeepAliveStatus::LockBelongToOthers);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(f.keep_alive("alice", 2).await, KeepAliveStatus::Success);
    }
    // Three seconds in, past the first two-second lease: still alice's.
    assert!(
        !f.try_lock("l", "bob", 5).await.expect("TryLock"),
        "the lease was not extended"
    );
    assert_eq!(f.unlock("alice").await, UnlockStatus::Success);
    assert_eq!(f.keep_alive("alice", 5).await, KeepAliveStatus::LockUnexist);
}

async fn bad_requests_are_invalid_arguments(f: &Fixture) {
    let mut client = f.client.clone();
    let cases = [
        ("empty resource", "l", "", "o", 10),
        ("empty owner", "l", "r", "", 10),
        ("zero expire", "l", "r", "o", 0),
        ("negative expire", "l", "r", "o", -5),
        ("'||' in the resource", "l", "a||b", "o", 10),
        ("unknown store", "nope", "r", "o", 10),
    ];
    for (what, store, resource, owner, expire) in cases {
        let err = try_lock(&mut client, store, resource, owner, expire)
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
}

async fn keys_follow_layottos_prefix_scheme(f: &Fixture) {
    assert!(f.try_lock("l", "alice", 30).await.expect("TryLock"));
    if f.store.shared() {
        // `none` scopes the same resource differently: no conflict.
        assert!(f.try_lock("l_none", "bob", 30).await.expect("TryLock"));
        // A literal prefix equal to the app id is the default scheme:
        // the same backend key, so the same lock.
        assert!(!f.try_lock("l_same", "bob", 30).await.expect("TryLock"));
    }
}

macro_rules! conformance {
    ($($name:ident => $store:expr),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                crate::conformance_cases!($store;
                    one_owner_at_a_time_and_no_reentry,
                    only_the_owner_releases,
                    an_expired_lock_can_be_taken_by_another_owner,
                    keep_alive_holds_a_lock_past_its_first_expiry,
                    bad_requests_are_invalid_arguments,
                    keys_follow_layottos_prefix_scheme,
                );
            }
        )*
    };
}

conformance! {
    memory => Store::Memory,
    sqlite => Store::Sqlite,
    redis => Store::Redis,
    postgresql => Store::Postgres,
    etcd => Store::Etcd,
    zookeeper => Store::Zookeeper,
    redis_cluster => Store::RedisCluster,
}

/// 16 contenders over two sidecar processes sharing one backend: whoever
/// holds the lock bumps a shared counter in and out; it never exceeds one.
async fn sixteen_contenders_over_two_processes_never_overlap(store: Store) {
    if !store.available() {
        return;
    }
    let Some(backends) = store.backends() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "[app]\napp_id = \"contention\"\n{}",
        store.entry("l", dir.path(), &backends, "")
    );
    let mut a = Sidecar::start_with(dir.path(), "a", &config).await;
    let mut b = Sidecar::start_with(dir.path(), "b", &config).await;
    let clients = [
        support::client_at(a.grpc_addr()).await,
        support::client_at(b.grpc_addr()).await,
    ];
    let resource = support::unique("contended");
    let holders = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let acquired = Arc::new(AtomicUsize::new(0));
    let contenders: Vec<_> = (0..16)
        .map(|i| {
            let mut client = clients[i % 2].clone();
            let (resource, holders, most, acquired) =
                (resource.clone(), holders.clone(), most.clone(), acquired.clone());
            tokio::spawn(async move {
                let owner = format!("owner-{i}");
                let mut mine = 0;
                while mine < 10 {
                    if try_lock(&mut client, "l", &resource, &owner, 10)
                        .await
                        .expect("TryLock")
                    {
                        let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(3)).await;
                        holders.fetch_sub(1, Ordering::SeqCst);
                        assert_eq!(unlock(&mut client, &resource, &owner).await, UnlockStatus::Success);
                        mine += 1;
                        acquired.fetch_add(1, Ordering::SeqCst);
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            })
        })
        .collect();
    for c in contenders {
        c.await.expect("contender");
    }
    assert_eq!(acquired.load(Ordering::SeqCst), 160);
    assert_eq!(most.load(Ordering::SeqCst), 1, "two holders at once");
    a.kill().await;
    b.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_locks_exclude_across_two_processes() {
    sixteen_contenders_over_two_processes_never_overlap(Store::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_locks_exclude_across_two_processes() {
    sixteen_contenders_over_two_processes_never_overlap(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_locks_exclude_across_two_processes() {
    sixteen_contenders_over_two_processes_never_overlap(Store::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_locks_exclude_across_two_processes() {
    sixteen_contenders_over_two_processes_never_overlap(Store::Zookeeper).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_locks_exclude_across_two_processes() {
    sixteen_contenders_over_two_processes_never_overlap(Store::RedisCluster).await;
}

/// Redlock over three instances, one of them killed: the other two are a
/// majority, so locks are still taken, refused, extended and released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_locks_work_with_one_instance_of_three_down() {
    let Some(mut f) = Fixture::start(Store::RedisCluster).await else {
        return;
    };
    assert!(f.try_lock("l", "alice", 30).await.expect("TryLock"));
    f.backends.redis[0].kill();
    assert!(
        !f.try_lock("l", "bob", 30).await.expect("TryLock"),
        "bob took alice's lock from the majority left"
    );
    assert_eq!(f.keep_alive("alice", 30).await, KeepAliveStatus::Success);
    assert_eq!(f.unlock("bob").await, UnlockStatus::LockBelongToOthers);
    assert_eq!(f.unlock("alice").await, UnlockStatus::Success);
    assert_eq!(f.unlock("alice").await, UnlockStatus::LockUnexist);
    assert!(
        f.try_lock("l", "bob", 30).await.expect("TryLock"),
        "released, on two of three"
    );
    assert!(!f.try_lock("l", "alice", 30).await.expect("TryLock"));
    assert_eq!(f.unlock("bob").await, UnlockStatus::Success);
    f.rt.shutdown().await;
}

/// Two of three instances down: no majority, so no lock, answered as an
/// error (UNAVAILABLE) or a refusal, never a panic; back, locks work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_without_a_majority_takes_no_lock() {
    let Some(mut f) = Fixture::start(Store::RedisCluster).await else {
        return;
    };
    f.backends.redis[0].kill();
    f.backends.redis[1].kill();
    for owner in ["alice", "bob"] {
        match f.try_lock("l", owner, 30).await {
            Ok(taken) => assert!(!taken, "{owner} took a lock from one instance of three"),
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
    }
    f.backends.redis[0].restart();
    f.backends.redis[1].restart();
    eventually(
        "a majority of instances to take locks again",
        Duration::from_secs(30),
        || async { f.try_lock("l", "carol", 30).await.ok().filter(|taken| *taken) },
    )
    .await;
    assert!(!f.try_lock("l", "dave", 30).await.expect("TryLock"));
    assert_eq!(f.unlock("carol").await, UnlockStatus::Success);
    f.rt.shutdown().await;
}
