//! `snowflake`: ids made in the sidecar, as Layotto's `snowflake`
//! sequencer, from the clock, a worker id that MySQL hands out, and a
//! sequence. An id is 63 bits (the sign bit stays 0):
//!
//! ```text
//! | time: timeBits (28) | worker: workerBits (22) | sequence: seqBits (13) |
//! ```
//!
//! - time: whole seconds since `startTime` (seconds, as Layotto: 28 bits of
//!   milliseconds would last three days; 28 bits of seconds last eight and
//!   a half years).
//! - worker: the `ID` (`AUTO_INCREMENT`) of a row this sidecar inserts in
//!   the table `tableName` (Layotto's layout: `ID`, `HOST_NAME`, `PORT`,
//!   `CREATED`) when it starts. `HOST_NAME` is the sidecar's host name and
//!   `PORT` its gRPC port and start time (`<port>-<unix seconds>`). Every
//!   start inserts a row of its own, as Layotto's does: two sidecars never
//!   share a worker id, nor does a sidecar share its earlier runs' (so a
//!   clock set back across a restart cannot repeat their ids). A table
//!   that has handed out every worker id (2^workerBits - 1 starts) fails
//!   the build: empty it, or widen `workerBits`.
//! - sequence: the ids of one key within one second.
//!
//! Each key keeps its next (time, sequence) in memory. An id takes the
//! greater of that and the clock's (now, 0), so a key's ids strictly
//! increase even when the clock goes back (ids then run ahead of the
//! clock until it catches up); when a second's sequence is used up, the
//! key borrows the next second instead of waiting, as Layotto does. Ids
//! of different sidecars differ in their worker bits, so they never
//! collide, but only increase per sidecar: `STRONG` is served as `WEAK`
//! (as in Layotto). A key's `biggerThan` floor moves its ids past it
//! (Layotto ignores it); a floor past the last second the time bits hold
//! fails the request with `FAILED_PRECONDITION`.
//!
//! A key unused for `keyTimeout` hours is forgotten; a key seen again
//! starts no lower than any forgotten key had reached, so it cannot repeat
//! its own earlier ids. Layotto writes forgotten keys to `keyTableName`
//! instead; here nothing outlives the process, and the next start has a
//! new worker id. After a restart, a key's ids are above its earlier ones
//! unless the earlier run had borrowed seconds ahead of the clock (more
//! than 2^seqBits ids a second on the key) or the clock went back.
//!
//! MySQL is needed only to start: the connection closes once the worker id
//! is known.
//!
//! Metadata: Layotto's (`mysqlHost`, `databaseName`, `userName`,
//! `password`, `tableName`, `keyTableName`, `timeBits`, `workerBits`,
//! `seqBits`, `startTime`, `reqTimeout`, `keyTimeout`), the segment keys
//! (accepted, unused: ids never come from a store) and `keyPrefix`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::{AnyConnection, Connection, Row};
use tokio::time::Instant;

use super::{SequencerStore, Sequencing};
use crate::components::meta::{self, Section};
use crate::components::sql::{MYSQL, TableName};
use crate::components::{
    BuildContext, BuildError, Component, ComponentError, ComponentType, MetadataError, TypeEntry, url_encode,
};

pub const TYPE: TypeEntry<dyn SequencerStore> = TypeEntry::of::<SnowflakeType>();

pub struct SnowflakeType;

impl ComponentType<dyn SequencerStore> for SnowflakeType {
    const NAME: &'static str = "snowflake";
    type Metadata = (SnowflakeMetadata, Sequencing);

    fn build(
        ctx: BuildContext,
        (metadata, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn SequencerStore>, BuildError>> {
        async move {
            let snowflake = Snowflake::start(&metadata, &ctx.spec.instance_id).await?;
            Ok(Arc::new(snowflake) as Arc<dyn SequencerStore>)
        }
        .boxed()
    }
}

const DEFAULT_TABLE: &str = "layotto_sequencer_snowflake";

/// Layotto's snowflake keys.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnowflakeMetadata {
    /// `host:port` of the MySQL (or MariaDB) server that hands out worker
    /// ids.
    #[serde(deserialize_with = "mysql_host")]
    pub mysql_host: String,
    /// The database of the worker table; it must exist.
    #[serde(deserialize_with = "meta::non_empty")]
    pub database_name: String,
    /// The MySQL user.
    #[serde(deserialize_with = "meta::non_empty")]
    pub user_name: String,
    /// The user's password; none by default (Layotto requires one).
    #[serde(default)]
    pub password: String,
    /// The worker table, created if missing; default
    /// `layotto_sequencer_snowflake`, Layotto's table, which Layotto
    /// sidecars may share.
    #[serde(default)]
    pub table_name: Option<TableName>,
    /// Layotto's table of forgotten keys. Accepted and unused: a key's
    /// state never leaves the process (see the module documentation).
    #[serde(default)]
    pub key_table_name: Option<TableName>,
    /// Bits of the time (seconds since `startTime`); 28 by default.
    /// `timeBits + workerBits + seqBits` must be 63.
    #[serde(default = "default_time_bits")]
    pub time_bits: u32,
    /// Bits of the worker id; 22 by default.
    #[serde(default = "default_worker_bits")]
    pub worker_bits: u32,
    /// Bits of the sequence within a second; 13 by default.
    #[serde(default = "default_seq_bits")]
    pub seq_bits: u32,
    /// The epoch of the time bits, `YYYY-MM-DD` at 00:00 UTC (Layotto
    /// reads it in the host's time zone); `2022-01-01` by default. Not in
    /// the future.
    #[serde(default)]
    pub start_time: StartTime,
    /// Layotto's wait for an id, in milliseconds. Accepted and unused:
    /// an id never waits (a used-up second borrows the next).
    #[serde(default = "default_req_timeout")]
    pub req_timeout: u64,
    /// Hours after which an unused key is forgotten; 24 by default, at
    /// least 1.
    #[serde(default = "default_key_timeout")]
    pub key_timeout: u64,
}

fn default_time_bits() -> u32 {
    28
}

fn default_worker_bits() -> u32 {
    22
}

fn default_seq_bits() -> u32 {
    13
}

fn default_req_timeout() -> u64 {
    500
}

fn default_key_timeout() -> u64 {
    24
}

impl Section for SnowflakeMetadata {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        for (key, bits) in [
            ("timeBits", self.time_bits),
            ("workerBits", self.worker_bits),
            ("seqBits", self.seq_bits),
        ] {
            if bits == 0 {
                errors.push(MetadataError::new(key, "'0': at least one bit"));
            }
        }
        let total = u64::from(self.time_bits) + u64::from(self.worker_bits) + u64::from(self.seq_bits);
        if total != 63 {
            errors.push(MetadataError::new(
                "timeBits",
                format!(
                    "timeBits + workerBits + seqBits is {total}; it must be 63 (64 bits, less the sign): {} + {} + {}",
                    self.time_bits, self.worker_bits, self.seq_bits
                ),
            ));
        }
        if self.key_timeout == 0 {
            errors.push(MetadataError::new("keyTimeout", "'0': at least one hour"));
        }
    }
}

impl SnowflakeMetadata {
    fn layout(&self) -> Layout {
        Layout {
            time_bits: self.time_bits,
            worker_bits: self.worker_bits,
            seq_bits: self.seq_bits,
        }
    }

    fn table(&self) -> &str {
        self.table_name.as_ref().map_or(DEFAULT_TABLE, TableName::as_str)
    }

    fn url(&self) -> String {
        let auth = if self.password.is_empty() {
            url_encode(&self.user_name)
        } else {
            format!("{}:{}", url_encode(&self.user_name), url_encode(&self.password))
        };
        format!(
            "mysql://{auth}@{}/{}",
            self.mysql_host.trim(),
            url_encode(self.database_name.trim())
        )
    }
}

/// `mysqlHost`: `host:port` (or a bare host), pasted into a URL, so no
/// `/`, `@`, `?` or spaces.
fn mysql_host<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let text = meta::non_empty(deserializer)?;
    let host = text.trim();
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'))
    {
        return Err(serde::de::Error::custom(format!(
            "'{}' is not host:port",
            crate::components::quote(host)
        )));
    }
    Ok(host.to_owned())
}

/// `startTime`: unix seconds of a date's midnight, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartTime(pub i64);

impl Default for StartTime {
    /// 2022-01-01, Layotto's default.
    fn default() -> StartTime {
        StartTime(1_640_995_200)
    }
}

impl std::str::FromStr for StartTime {
    type Err = String;

    fn from_str(text: &str) -> Result<StartTime, String> {
        chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
            .ok()
            .and_then(|date| date.and_hms_opt(0, 0, 0))
            .map(|midnight| StartTime(midnight.and_utc().timestamp()))
            .ok_or_else(|| format!("'{}' is not a date such as 2022-01-01", crate::components::quote(text)))
    }
}

impl<'de> serde::Deserialize<'de> for StartTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<StartTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where the bits of an id go. The sizes sum to 63 (checked with the
/// metadata), so every shift below is under 63.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    time_bits: u32,
    worker_bits: u32,
    seq_bits: u32,
}

/// A place in a worker's ids: (time, sequence), ordered as the ids.
type Position = (i64, i64);

impl Layout {
    fn max_time(self) -> i64 {
        (1i64 << self.time_bits) - 1
    }

    fn max_worker(self) -> i64 {
        (1i64 << self.worker_bits) - 1
    }

    fn max_seq(self) -> i64 {
        (1i64 << self.seq_bits) - 1
    }

    /// The id of `worker` at `time` and `seq`, each within its bits.
    fn id(self, time: i64, worker: i64, seq: i64) -> i64 {
        (time << (self.worker_bits + self.seq_bits)) | (worker << self.seq_bits) | seq
    }

    /// An id's (time, worker, seq); a negative id is below every id.
    fn split(self, id: i64) -> (i64, i64, i64) {
        (
            id >> (self.worker_bits + self.seq_bits),
            (id >> self.seq_bits) & self.max_worker(),
            id & self.max_seq(),
        )
    }

    /// The first position of `worker` whose id is above `floor` (its time
    /// may be past [`Layout::max_time`]).
    fn first_above(self, worker: i64, floor: i64) -> Position {
        if floor < 0 {
            return (0, 0);
        }
        let (time, floor_worker, seq) = self.split(floor);
        if floor_worker < worker {
            (time, 0)
        } else if floor_worker == worker && seq < self.max_seq() {
            (time, seq + 1)
        } else {
            // `time` is under 2^62: no overflow.
            (time + 1, 0)
        }
    }
}

/// Where one key's ids are.
struct KeyState {
    /// Its next id's position.
    next: Position,
    used: Instant,
}

/// Every key's state.
struct Keys {
    map: HashMap<String, KeyState>,
    /// The highest `next` of the keys forgotten so far: where a key starts.
    retired: Position,
    /// When forgotten keys were last looked for.
    swept: Instant,
}

/// How often keys unused for `keyTimeout` are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The ids of one worker: everything but the clock and MySQL, so that it
/// can be tested with a clock of the test's own.
struct Ids {
    layout: Layout,
    worker: i64,
    key_timeout: Duration,
    keys: Mutex<Keys>,
}

impl Ids {
    fn new(layout: Layout, worker: i64, key_timeout: Duration, now: Instant) -> Ids {
        Ids {
            layout,
            worker,
            key_timeout,
            keys: Mutex::new(Keys {
                map: HashMap::new(),
                retired: (0, 0),
                swept: now,
            }),
        }
    }

    /// Reserves `size` consecutive ids of `key` above `floor`, at `time`
    /// seconds after the start time (`at` on the monotonic clock); answers
    /// the last.
    fn reserve(&self, key: &str, size: u64, floor: i64, time: i64, at: Instant) -> Result<i64, ComponentError> {
        let layout = self.layout;
        let size = i64::try_from(size)
            .ok()
            .filter(|size| (1..=layout.max_seq().saturating_add(1)).contains(size))
            .ok_or_else(|| {
                ComponentError::InvalidArgument(format!(
                    "snowflake: {size} ids at once; one second of one key holds {}",
                    layout.max_seq().saturating_add(1)
                ))
            })?;
        let floor_position = layout.first_above(self.worker, floor);
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if at.saturating_duration_since(keys.swept) >= SWEEP_EVERY {
            keys.swept = at;
            let timeout = self.key_timeout;
            let mut retired = keys.retired;
            keys.map.retain(|_, state| {
                let keep = at.saturating_duration_since(state.used) < timeout;
                if !keep {
                    retired = retired.max(state.next);
                }
                keep
            });
            keys.retired = retired;
        }
        let retired = keys.retired;
        let state = keys.map.entry(key.to_owned()).or_insert(KeyState {
            next: retired,
            used: at,
        });
        state.used = at;
        let mut position = state.next.max((time.max(0), 0)).max(floor_position);
        // The whole range within one second.
        if position.1 + size - 1 > layout.max_seq() {
            position = (position.0 + 1, 0);
        }
        if position.0 > layout.max_time() {
            return Err(if floor_position.0 > layout.max_time() {
                ComponentError::FailedPrecondition(format!(
                    "snowflake: biggerThan {floor} is above every id worker {} can make with timeBits {}",
                    self.worker, layout.time_bits
                ))
            } else {
                ComponentError::FailedPrecondition(format!(
                    "snowflake: the {} time bits are used up (2^{} seconds after startTime): \
                     set a later startTime or more timeBits",
                    layout.time_bits, layout.time_bits
                ))
            });
        }
        let last = position.1 + size - 1;
        state.next = if last == layout.max_seq() {
            (position.0 + 1, 0)
        } else {
            (position.0, last + 1)
        };
        Ok(layout.id(position.0, self.worker, last))
    }
}

pub struct Snowflake {
    ids: Ids,
    /// Unix seconds of `startTime`.
    start: i64,
}

/// Unix seconds now; 0 for a clock before 1970.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The `HOST_NAME` and `PORT` of this start's row: the host name and gRPC
/// port of the sidecar's instance id (`<host>-<port>`), and the start
/// time; 64 characters at most each (the columns' size).
fn worker_row(instance_id: &str, now: i64) -> (String, String) {
    let (host, port) = instance_id.rsplit_once('-').unwrap_or((instance_id, ""));
    let host = if host.is_empty() { "unknown" } else { host };
    let cut = |s: String| s.chars().take(64).collect::<String>();
    (cut(host.to_owned()), cut(format!("{port}-{now}")))
}

/// A row id as a worker id, when it fits the worker bits.
fn worker_id(row: i64, layout: Layout, table: &str) -> Result<i64, BuildError> {
    if (1..=layout.max_worker()).contains(&row) {
        Ok(row)
    } else {
        Err(BuildError(format!(
            "snowflake: table {table} handed out worker id {row}, beyond the {} workerBits hold ({}): \
             empty the table, or widen workerBits",
            layout.worker_bits,
            layout.max_worker()
        )))
    }
}

impl Snowflake {
    async fn start(metadata: &SnowflakeMetadata, instance_id: &str) -> Result<Snowflake, BuildError> {
        let layout = metadata.layout();
        let start = metadata.start_time.0;
        let now = unix_now();
        let elapsed = now
            .checked_sub(start)
            .filter(|elapsed| *elapsed >= 0)
            .ok_or_else(|| BuildError("snowflake: startTime is in the future".into()))?;
        if elapsed > layout.max_time() {
            return Err(BuildError(format!(
                "snowflake: the {} time bits ran out {} seconds after startTime: \
                 set a later startTime or more timeBits",
                layout.time_bits,
                layout.max_time()
            )));
        }
        let worker = allocate(metadata, instance_id, now).await?;
        tracing::info!(worker, "snowflake: worker id from {}", metadata.table());
        let key_timeout = Duration::from_secs(metadata.key_timeout.saturating_mul(3600));
        Ok(Snowflake {
            ids: Ids::new(layout, worker, key_timeout, Instant::now()),
            start,
        })
    }

    /// Seconds since `startTime` on the clock now.
    fn time(&self) -> i64 {
        unix_now().saturating_sub(self.start)
    }
}

/// Inserts this start's row in the worker table (created if missing) and
/// answers its id.
async fn allocate(metadata: &SnowflakeMetadata, instance_id: &str, now: i64) -> Result<i64, BuildError> {
    let table = metadata.table();
    let fail = |what: &str, e: sqlx::Error| BuildError(format!("snowflake: {what} ({}): {e}", metadata.mysql_host));
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(&metadata.url())
        .await
        .map_err(|e| fail("cannot connect to MySQL", e))?;
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {table} (\
           ID BIGINT NOT NULL AUTO_INCREMENT COMMENT 'auto increment id', \
           HOST_NAME VARCHAR(64) NOT NULL COMMENT 'host name', \
           PORT VARCHAR(64) NOT NULL COMMENT 'port', \
           CREATED TIMESTAMP NOT NULL COMMENT 'created time', \
           PRIMARY KEY(ID))"
    );
    sqlx::query(MYSQL.statement(create))
        .execute(&mut conn)
        .await
        .map_err(|e| fail(&format!("cannot create table {table}"), e))?;
    let (host, port) = worker_row(instance_id, now);
    let insert = format!("INSERT INTO {table} (HOST_NAME, PORT, CREATED) VALUES (?, ?, CURRENT_TIMESTAMP)");
    sqlx::query(MYSQL.statement(insert))
        .bind(host)
        .bind(port)
        .execute(&mut conn)
        .await
        .map_err(|e| fail(&format!("cannot insert a worker in {table}"), e))?;
    // LAST_INSERT_ID is this connection's own insert.
    let row = sqlx::query("SELECT CAST(LAST_INSERT_ID() AS SIGNED)")
        .fetch_one(&mut conn)
        .await
        .and_then(|row| row.try_get::<i64, _>(0))
        .map_err(|e| fail("cannot read the worker id", e))?;
    let _ = conn.close().await;
    worker_id(row, metadata.layout(), table)
}

#[async_trait::async_trait]
impl Component for Snowflake {
    /// Healthy while the time bits last: MySQL is not needed after start.
    async fn health_check(&self) -> Result<(), ComponentError> {
        let layout = self.ids.layout;
        if self.time() > layout.max_time() {
            return Err(ComponentError::FailedPrecondition(format!(
                "snowflake: the {} time bits are used up",
                layout.time_bits
            )));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl SequencerStore for Snowflake {
    async fn reserve(&self, key: &str, size: u64, floor: i64) -> Result<i64, ComponentError> {
        self.ids.reserve(key, size, floor, self.time(), Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const LAYOUT: Layout = Layout {
        time_bits: 28,
        worker_bits: 22,
        seq_bits: 13,
    };

    fn parse(pairs: &[(&str, &str)]) -> Result<SnowflakeMetadata, Vec<MetadataError>> {
        let mut map: BTreeMap<String, String> = [
            ("mysqlHost", "127.0.0.1:3306"),
            ("databaseName", "test"),
            ("userName", "root"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        map.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        meta::parse_map(&map)
    }

    #[test]
    fn layottos_defaults() {
        let m = parse(&[]).expect("parses");
        assert_eq!(m.layout(), LAYOUT);
        assert_eq!(m.start_time, "2022-01-01".parse().expect("date"));
        assert_eq!(m.table(), "layotto_sequencer_snowflake");
        assert_eq!(m.url(), "mysql://root@127.0.0.1:3306/test");
        let m = parse(&[("password", "p@ss"), ("tableName", "workers")]).expect("parses");
        assert_eq!(m.url(), "mysql://root:p%40ss@127.0.0.1:3306/test");
        assert_eq!(m.table(), "workers");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value) in [
            ("timeBits", "30"),
            ("timeBits", "x"),
            ("seqBits", "-1"),
            ("startTime", "2022/01/01"),
            ("keyTimeout", "0"),
            ("mysqlHost", "db/x"),
            ("tableName", "a;b"),
        ] {
            let errors = parse(&[(key, value)]).expect_err(value);
            assert_eq!(errors[0].key, key, "{errors:?}");
        }
        let errors = parse(&[("workerBits", "0"), ("timeBits", "50")]).expect_err("zero bits");
        assert!(errors.iter().any(|e| e.key == "workerBits"), "{errors:?}");
    }

    #[test]
    fn ids_are_time_worker_sequence() {
        let id = LAYOUT.id(5, 3, 7);
        assert_eq!(id, (5 << 35) | (3 << 13) | 7);
        assert_eq!(LAYOUT.split(id), (5, 3, 7));
        let max = LAYOUT.id(LAYOUT.max_time(), LAYOUT.max_worker(), LAYOUT.max_seq());
        assert_eq!(max, i64::MAX);
    }

    #[test]
    fn the_first_id_above_a_floor() {
        let worker = 3;
        assert_eq!(LAYOUT.first_above(worker, -5), (0, 0));
        assert_eq!(LAYOUT.first_above(worker, 1000), (0, 0));
        assert_eq!(LAYOUT.first_above(worker, LAYOUT.id(9, 2, 100)), (9, 0));
        assert_eq!(LAYOUT.first_above(worker, LAYOUT.id(9, 3, 100)), (9, 101));
        assert_eq!(LAYOUT.first_above(worker, LAYOUT.id(9, 3, LAYOUT.max_seq())), (10, 0));
        assert_eq!(LAYOUT.first_above(worker, LAYOUT.id(9, 4, 0)), (10, 0));
        for floor in [0, 1000, LAYOUT.id(9, 3, 100), LAYOUT.id(9, 4, 0)] {
            let (time, seq) = LAYOUT.first_above(worker, floor);
            assert!(LAYOUT.id(time, worker, seq) > floor);
        }
    }

    fn ids(worker: i64) -> (Ids, Instant) {
        let now = Instant::now();
        (Ids::new(LAYOUT, worker, Duration::from_secs(3600), now), now)
    }

    #[test]
    fn ids_increase_per_key_and_borrow_the_next_second() {
        let (ids, at) = ids(7);
        let mut last = 0;
        // Three seconds' worth of sequence in one second.
        for _ in 0..3 * 8192 {
            let id = ids.reserve("k", 1, 0, 100, at).expect("id");
            assert!(id > last, "{id} after {last}");
            assert_eq!(LAYOUT.split(id).1, 7);
            last = id;
        }
        assert_eq!(LAYOUT.split(last), (102, 7, 8191));
        // Another key starts at the clock.
        assert_eq!(ids.reserve("other", 1, 0, 100, at), Ok(LAYOUT.id(100, 7, 0)));
    }

    #[test]
    fn a_clock_going_back_repeats_nothing() {
        let (ids, at) = ids(1);
        let before = ids.reserve("k", 1, 0, 500, at).expect("id");
        let after = ids.reserve("k", 1, 0, 400, at).expect("id");
        assert!(after > before);
        assert_eq!(LAYOUT.split(after), (500, 1, 1));
    }

    #[test]
    fn ranges_stay_within_a_second() {
        let (ids, at) = ids(1);
        ids.reserve("k", 8000, 0, 10, at).expect("range");
        let last = ids.reserve("k", 500, 0, 10, at).expect("range");
        assert_eq!(LAYOUT.split(last), (11, 1, 499));
        assert!(matches!(
            ids.reserve("k", 8193, 0, 10, at),
            Err(ComponentError::InvalidArgument(_))
        ));
        assert!(matches!(
            ids.reserve("k", 0, 0, 10, at),
            Err(ComponentError::InvalidArgument(_))
        ));
    }

    #[test]
    fn floors_move_ids_past_them_or_fail_cleanly() {
        let (ids, at) = ids(2);
        let floor = LAYOUT.id(1000, 9, 5);
        assert!(ids.reserve("k", 1, floor, 10, at).expect("id") > floor);
        let unreachable = LAYOUT.id(LAYOUT.max_time(), 9, 0);
        assert!(matches!(
            ids.reserve("k", 1, unreachable, 10, at),
            Err(ComponentError::FailedPrecondition(_))
        ));
        assert!(matches!(
            ids.reserve("k", 1, i64::MAX, 10, at),
            Err(ComponentError::FailedPrecondition(_))
        ));
    }

    #[test]
    fn forgotten_keys_do_not_repeat_ids() {
        let now = Instant::now();
        let ids = Ids::new(LAYOUT, 1, Duration::from_secs(60), now);
        // Ahead of the clock by a burst.
        let mut last = 0;
        for _ in 0..9000 {
            last = ids.reserve("k", 1, 0, 10, now).expect("id");
        }
        let later = now + Duration::from_secs(120);
        // Forgotten on the sweep of this call (another key's).
        ids.reserve("other", 1, 0, 10, later).expect("id");
        assert!(!ids.keys.lock().expect("keys").map.contains_key("k"));
        let again = ids.reserve("k", 1, 0, 10, later).expect("id");
        assert!(again > last, "{again} after {last}");
    }

    #[test]
    fn worker_rows_and_ids() {
        assert_eq!(worker_row("host-a-34904", 99), ("host-a".into(), "34904-99".into()));
        assert_eq!(worker_row("", 99), ("unknown".into(), "-99".into()));
        assert_eq!(worker_row(&"h".repeat(100), 1).0.len(), 64);
        assert_eq!(worker_id(1, LAYOUT, "t").expect("fits"), 1);
        assert!(worker_id(LAYOUT.max_worker() + 1, LAYOUT, "t").is_err());
        assert!(worker_id(0, LAYOUT, "t").is_err());
    }
}
