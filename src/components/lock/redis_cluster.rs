//! `redis_cluster`: Redlock over several independent Redis instances, as
//! Layotto's `redis_cluster` lock. Every instance holds the same layout as
//! the `redis` lock: a key per held lock whose value is its owner, with the
//! lease as the key's expiry. No instance knows about the others.
//!
//! - Taking sends `SET key owner NX PX ttl` to every instance at once. The
//!   lock is taken when a majority (`n/2 + 1`) set it within a tenth of the
//!   lease (Layotto's limit, so the holder keeps at least nine tenths of
//!   it); otherwise the owner-checked delete goes to every instance and the
//!   answer is `false`, or an error when too few instances answered to
//!   know.
//! - Releasing and extending run the owner-checked scripts of the `redis`
//!   lock on every instance: `Success` when a majority released (extended);
//!   otherwise `BelongsToOthers` when any instance holds it for another
//!   owner, else `Unexist`; an error when fewer than a majority answered.
//!   (Layotto leaves extending unimplemented.)
//!
//! A minority of instances down or hung changes nothing: their errors and
//! late answers count as refusals. The component is healthy while a
//! majority answers `PING`; it builds when a majority is reachable, and an
//! instance that was down reconnects on its first use after it is back.
//!
//! Redlock is as safe as its clocks: each instance expires keys on its own
//! clock, and an instance that restarts without persistence forgets the
//! locks it held (run them with `appendfsync always`, or keep a restarted
//! instance out for longer than the longest lease).
//!
//! Metadata: Layotto's (`redisHosts`, `redisPassword`, `db`, `enableTLS`,
//! `maxRetries`, `maxRetryBackoff`, `concurrency`), plus `redisUsername`,
//! `dialTimeout`, `readTimeout` and `keyPrefix`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use super::redis::{KEEP_ALIVE, UNLOCK, millis};
use super::{LockStatus, LockStore};
use crate::components::meta::{self, Seconds};
use crate::components::redis_client::{Database, RedisConnection};
use crate::components::{
    BuildContext, BuildError, Component, ComponentError, ComponentType, KeyPrefixSection, TypeEntry,
};

pub const TYPE: TypeEntry<dyn LockStore> = TypeEntry::of::<RedisClusterType>();

pub struct RedisClusterType;

impl ComponentType<dyn LockStore> for RedisClusterType {
    const NAME: &'static str = "redis_cluster";
    type Metadata = (RedisClusterMetadata, KeyPrefixSection);

    fn build(
        _ctx: BuildContext,
        (metadata, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn LockStore>, BuildError>> {
        async move { Ok(Arc::new(Redlock::connect(&metadata).await?) as Arc<dyn LockStore>) }.boxed()
    }
}

/// The keys of Layotto's `ParseRedisClusterMetadata`, and ours.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisClusterMetadata {
    /// `host:port` of every instance, comma-separated: independent Redis
    /// servers (not a Redis Cluster), at least three for a majority that
    /// survives the loss of one (Redlock advises five). No instance may be
    /// named twice.
    #[serde(deserialize_with = "hosts")]
    pub redis_hosts: Vec<String>,
    /// ACL user on every instance; none by default.
    #[serde(default)]
    pub redis_username: String,
    /// Password of every instance; none by default.
    #[serde(default)]
    pub redis_password: String,
    /// Database number on every instance (Layotto's `db`); 0 by default.
    #[serde(default)]
    pub db: Database,
    /// Connect with TLS (`rediss://`).
    #[serde(rename = "enableTLS", default)]
    pub enable_tls: bool,
    /// How long connecting to one instance may take.
    #[serde(default = "default_dial_timeout")]
    pub dial_timeout: Seconds,
    /// A command one instance takes longer to answer has failed on it.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Seconds,
    /// Layotto's command retries per instance. Accepted and ignored: a
    /// failed instance counts as a refusal, and the majority decides.
    #[serde(default)]
    pub max_retries: Option<i64>,
    /// Layotto's back-off between retries (nanoseconds). Accepted and
    /// ignored, as `maxRetries`.
    #[serde(default)]
    pub max_retry_backoff: Option<i64>,
    /// Layotto's worker pool size for the calls to the instances. Accepted
    /// and ignored: every instance is asked at once.
    #[serde(default)]
    pub concurrency: Option<i64>,
}

impl meta::Section for RedisClusterMetadata {}

fn default_dial_timeout() -> Seconds {
    Seconds::secs(5)
}

fn default_read_timeout() -> Seconds {
    Seconds::secs(3)
}

/// `redisHosts`: comma-separated `host:port`, none empty, none twice (an
/// instance named twice would vote twice).
fn hosts<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    parse_hosts(&text).map_err(serde::de::Error::custom)
}

fn parse_hosts(text: &str) -> Result<Vec<String>, String> {
    if text.trim().is_empty() {
        return Err("is required".into());
    }
    let mut seen = BTreeSet::new();
    let mut hosts = Vec::new();
    for host in text.split(',').map(str::trim) {
        let port = host.rsplit_once(':').map(|(name, port)| (name, port.parse::<u16>()));
        match port {
            Some((name, Ok(_))) if !name.is_empty() => {}
            _ => {
                return Err(format!(
                    "'{}' is not host:port (list instances as host:port,host:port,...)",
                    crate::components::quote(host)
                ));
            }
        }
        if !seen.insert(host.to_ascii_lowercase()) {
            return Err(format!(
                "'{host}' is listed twice: it would count twice towards a majority"
            ));
        }
        hosts.push(host.to_owned());
    }
    Ok(hosts)
}

/// One Redis instance, connected on first use.
struct Instance {
    connection: RedisConnection,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
}

impl Instance {
    fn host(&self) -> &str {
        &self.connection.redis_host
    }

    /// The instance's connection; connects when there is none yet (an
    /// instance that was down at start-up).
    async fn conn(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.connection.manager().await.map_err(|e| e.0)?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `op` here: 1 done, 0 refused (`SET NX` on a held key), or the
    /// owner scripts' -1 (nobody holds it) and -2 (someone else does).
    async fn run(&self, op: &Op<'_>) -> Result<i64, String> {
        let fail = |e: redis::RedisError| format!("redis {}: {e}", self.host());
        let mut conn = self.conn().await?;
        match *op {
            Op::Take { key, owner, ms } => {
                let set: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut conn)
                    .await
                    .map_err(fail)?;
                Ok(i64::from(set.is_some()))
            }
            Op::Release { key, owner } => UNLOCK.key(key).arg(owner).invoke_async(&mut conn).await.map_err(fail),
            Op::Extend { key, owner, ms } => KEEP_ALIVE
                .key(key)
                .arg(owner)
                .arg(ms)
                .invoke_async(&mut conn)
                .await
                .map_err(fail),
            Op::Ping => redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| 1)
                .map_err(fail),
        }
    }
}

/// What is asked of every instance.
enum Op<'a> {
    Take { key: &'a str, owner: &'a str, ms: u64 },
    Release { key: &'a str, owner: &'a str },
    Extend { key: &'a str, owner: &'a str, ms: u64 },
    Ping,
}

/// The instances' answers to one op.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    /// Done: set, released, extended, pinged.
    done: usize,
    /// `SET NX` found the key held.
    refused: usize,
    /// Nobody holds the key there.
    unexist: usize,
    /// Someone else holds it there.
    others: usize,
    /// Failed or too late, with why.
    errors: Vec<String>,
}

impl Tally {
    fn count(&mut self, answer: Result<i64, String>) {
        match answer {
            Ok(1) => self.done += 1,
            Ok(0) => self.refused += 1,
            Ok(-1) => self.unexist += 1,
            Ok(-2) => self.others += 1,
            Ok(other) => self.errors.push(format!("unexpected answer {other}")),
            Err(e) => self.errors.push(e),
        }
    }

    fn answered(&self) -> usize {
        self.done + self.refused + self.unexist + self.others
    }

    /// Too few answers to decide, as an error.
    fn unavailable(&self, quorum: usize, n: usize) -> ComponentError {
        ComponentError::Unavailable(format!(
            "redis_cluster: {} of {n} instances answered, {quorum} needed: {}",
            self.answered(),
            self.errors.join("; ")
        ))
    }

    /// The status of an unlock or a keep-alive: done on a majority is
    /// `Success`; otherwise, when a majority answered, whoever holds the
    /// key anywhere (or nobody) says why not.
    fn status(&self, quorum: usize, n: usize) -> Result<LockStatus, ComponentError> {
        if self.done >= quorum {
            Ok(LockStatus::Success)
        } else if self.answered() < quorum {
            Err(self.unavailable(quorum, n))
        } else if self.others > 0 {
            Ok(LockStatus::BelongsToOthers)
        } else {
            Ok(LockStatus::Unexist)
        }
    }
}

pub struct Redlock {
    instances: Vec<Instance>,
}

impl Redlock {
    async fn connect(metadata: &RedisClusterMetadata) -> Result<Redlock, BuildError> {
        let instances = metadata
            .redis_hosts
            .iter()
            .map(|host| Instance {
                connection: RedisConnection {
                    redis_host: host.clone(),
                    redis_username: metadata.redis_username.clone(),
                    redis_password: metadata.redis_password.clone(),
                    redis_db: metadata.db,
                    enable_tls: metadata.enable_tls,
                    dial_timeout: metadata.dial_timeout,
                    read_timeout: metadata.read_timeout,
                },
                conn: tokio::sync::Mutex::new(None),
            })
            .collect();
        let redlock = Redlock { instances };
        // A majority must answer now; the others connect when they can.
        let tally = redlock.everywhere(&Op::Ping).await;
        if tally.done < redlock.quorum() {
            return Err(BuildError(redlock.unavailable_message(&tally)));
        }
        for error in &tally.errors {
            tracing::warn!("redis_cluster: starting without an instance: {error}");
        }
        Ok(redlock)
    }

    fn quorum(&self) -> usize {
        self.instances.len() / 2 + 1
    }

    fn unavailable_message(&self, tally: &Tally) -> String {
        tally.unavailable(self.quorum(), self.instances.len()).to_string()
    }

    /// `op` on every instance at once, answers in the order they come.
    fn fan_out<'a>(&'a self, op: &'a Op<'a>) -> FuturesUnordered<impl Future<Output = Result<i64, String>> + 'a> {
        self.instances.iter().map(|instance| instance.run(op)).collect()
    }

    /// `op` on every instance, every answer awaited (each instance's own
    /// timeouts bound the wait).
    async fn everywhere(&self, op: &Op<'_>) -> Tally {
        let mut tally = Tally::default();
        let mut answers = self.fan_out(op);
        while let Some(answer) = answers.next().await {
            tally.count(answer);
        }
        tally
    }
}

#[async_trait::async_trait]
impl Component for Redlock {
    async fn health_check(&self) -> Result<(), ComponentError> {
        let tally = self.everywhere(&Op::Ping).await;
        if tally.done >= self.quorum() {
            Ok(())
        } else {
            Err(tally.unavailable(self.quorum(), self.instances.len()))
        }
    }
}

#[async_trait::async_trait]
impl LockStore for Redlock {
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, ComponentError> {
        let (n, quorum) = (self.instances.len(), self.quorum());
        // Layotto's limit: the round ends within a tenth of the lease.
        let limit = ttl / 10;
        let deadline = Instant::now() + limit;
        let take = Op::Take {
            key,
            owner,
            ms: millis(ttl),
        };
        let mut tally = Tally::default();
        let mut answers = self.fan_out(&take);
        // Until a majority took it, every instance answered, or time is up
        // (the instances still to answer count as failed).
        while tally.done < quorum {
            match tokio::time::timeout_at(deadline, answers.next()).await {
                Ok(Some(answer)) => tally.count(answer),
                Ok(None) => break,
                Err(_) => {
                    tally
                        .errors
                        .push(format!("no majority within a tenth of the lease ({limit:?})"));
                    break;
                }
            }
        }
        drop(answers);
        if tally.done >= quorum && Instant::now() <= deadline {
            return Ok(true);
        }
        // Not taken: release what was, wherever it was.
        let release = self.everywhere(&Op::Release { key, owner }).await;
        for error in &release.errors {
            tracing::debug!("redis_cluster: releasing a lock not taken: {error}");
        }
        if tally.answered() < quorum {
            return Err(tally.unavailable(quorum, n));
        }
        for error in &tally.errors {
            tracing::debug!("redis_cluster: taking a lock: {error}");
        }
        Ok(false)
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<LockStatus, ComponentError> {
        let tally = self.everywhere(&Op::Release { key, owner }).await;
        tally.status(self.quorum(), self.instances.len())
    }

    async fn keep_alive(&self, key: &str, owner: &str, ttl: Duration) -> Result<LockStatus, ComponentError> {
        let extend = Op::Extend {
            key,
            owner,
            ms: millis(ttl),
        };
        let tally = self.everywhere(&extend).await;
        tally.status(self.quorum(), self.instances.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<RedisClusterMetadata, Vec<crate::components::MetadataError>> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        meta::parse_map(&map)
    }

    #[test]
    fn layottos_metadata_is_read() {
        let m = parse(&[
            ("redisHosts", "a:6379, b:6380,c:6381"),
            ("redisPassword", "pw"),
            ("db", "2"),
            ("concurrency", "8"),
            ("maxRetries", "3"),
            ("maxRetryBackoff", "2000000000"),
            ("enableTLS", "false"),
        ])
        .expect("parses");
        assert_eq!(m.redis_hosts, ["a:6379", "b:6380", "c:6381"]);
        assert_eq!(m.db, Database(2));
        assert_eq!(m.redis_password, "pw");
    }

    #[test]
    fn bad_hosts_are_refused_naming_the_key() {
        for bad in ["", "a:6379,,b:6379", "a", "a:port", "a:1,A:1", ":6379"] {
            let errors = parse(&[("redisHosts", bad)]).expect_err(bad);
            assert_eq!(errors[0].key, "redisHosts", "{bad}: {errors:?}");
        }
        let errors = parse(&[("redisHosts", "a:1"), ("concurrency", "many")]).expect_err("bad number");
        assert_eq!(errors[0].key, "concurrency");
    }

    fn tally(answers: &[Result<i64, &str>]) -> Tally {
        let mut tally = Tally::default();
        for answer in answers {
            tally.count(answer.map_err(str::to_owned));
        }
        tally
    }

    #[test]
    fn a_majority_decides_releases() {
        let ok = tally(&[Ok(1), Ok(1), Err("down")]);
        assert_eq!(ok.status(2, 3), Ok(LockStatus::Success));
        let others = tally(&[Ok(1), Ok(-2), Ok(-2)]);
        assert_eq!(others.status(2, 3), Ok(LockStatus::BelongsToOthers));
        let gone = tally(&[Ok(1), Ok(-1), Ok(-1)]);
        assert_eq!(gone.status(2, 3), Ok(LockStatus::Unexist));
        let unknown = tally(&[Ok(-1), Err("down"), Err("down")]);
        assert!(matches!(unknown.status(2, 3), Err(ComponentError::Unavailable(_))));
    }
}
