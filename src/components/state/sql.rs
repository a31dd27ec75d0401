//! The engine shared by the SQL state stores (`sqlite`, `postgresql`,
//! `mysql`): one table, one code path, three dialects.
//!
//! Table: `id` (the key), `value` (bytes), `etag` (a random 53-bit integer,
//! new on every write) and `expires_at` (epoch milliseconds, NULL for
//! never). Time comes from the database's clock, so sidecars with skewed
//! clocks agree on expiry. Expired rows are invisible to every statement and
//! deleted by a periodic cleanup.
//!
//! A write that needs a check (an etag, or first-write) runs in a database
//! transaction that reads the current etag with a row lock (`FOR UPDATE`;
//! SQLite serialises writers with a single connection), checks it with
//! [`check_write`], then writes. A first-write inserts, so two sidecars
//! racing to create one key meet at the primary key: one wins, the other
//! gets a conflict. Plain last-write upserts skip the read.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, AnyPool, Row, SqlStr, Transaction};
use tokio::task::AbortHandle;
use tracing::warn;

use super::{
    Concurrency, Consistency, DeleteRequest, Etag, SetRequest, StateStore, StateValue, TransactionOp, already_exists,
    check_write, new_etag,
};
use crate::components::meta::Section;
use crate::components::sql::{Backend, Connections, HealthCheck, SqlConnection};
use crate::components::tasks::Tasks;
use crate::components::{BuildError, Component, ComponentError, KeyPrefixSection};

const DEFAULT_TABLE: &str = "state";

/// What every SQL state store reads from its metadata: the connection,
/// its own keys, and `keyPrefix`.
pub type SqlStateMetadata = (SqlConnection, Cleanup, KeyPrefixSection);

/// The state stores' own keys.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cleanup {
    /// Seconds between deletions of expired rows (Dapr's name); at least 1.
    #[serde(default = "default_cleanup_interval")]
    pub cleanup_interval_in_seconds: u64,
}

impl Section for Cleanup {}

fn default_cleanup_interval() -> u64 {
    3600
}

/// What differs between the SQL state stores.
pub(super) struct Dialect {
    pub backend: &'static Backend,
    /// `CREATE TABLE IF NOT EXISTS` and its indexes, for a table name.
    pub create: fn(&str) -> Vec<String>,
    /// The clause that turns an INSERT into an upsert of `value`, `etag`
    /// and `expires_at`.
    pub upsert_clause: &'static str,
    /// Appended to the check read: a row lock, where the backend has one.
    pub lock_clause: &'static str,
    /// The longest key the table holds, in characters.
    pub max_key_chars: Option<usize>,
}

/// The statements, built once per store.
struct Queries {
    get: SqlStr,
    current_etag: SqlStr,
    upsert: SqlStr,
    insert: SqlStr,
    purge_expired_key: SqlStr,
    delete: SqlStr,
    cleanup: SqlStr,
    scan: SqlStr,
}

impl Queries {
    fn new(d: &Dialect, table: &str) -> Queries {
        let now = d.backend.now_ms;
        let alive = format!("(expires_at IS NULL OR expires_at > {now})");
        let insert = format!("INSERT INTO {table} (id, value, etag, expires_at) VALUES (?, ?, ?, {now} + ?)");
        let q = |sql: String| d.backend.statement(sql);
        Queries {
            get: q(format!(
                "SELECT value, etag, expires_at, {now} AS now_ms FROM {table} WHERE id = ? AND {alive}"
            )),
            current_etag: q(format!(
                "SELECT etag FROM {table} WHERE id = ? AND {alive}{}",
                d.lock_clause
            )),
            upsert: q(format!("{insert} {}", d.upsert_clause)),
            insert: q(insert.clone()),
            purge_expired_key: q(format!(
                "DELETE FROM {table} WHERE id = ? AND expires_at IS NOT NULL AND expires_at <= {now}"
            )),
            delete: q(format!("DELETE FROM {table} WHERE id = ?")),
            cleanup: q(format!(
                "DELETE FROM {table} WHERE expires_at IS NOT NULL AND expires_at <= {now}"
            )),
            // `!` escapes LIKE's wildcards in the prefix; the caller
            // checks the prefix again (a case-blind collation matches
            // more).
            scan: q(format!(
                "SELECT id, value, etag FROM {table} WHERE id LIKE ? ESCAPE '!' AND {alive} ORDER BY id LIMIT ?"
            )),
        }
    }
}

pub(super) struct SqlStore {
    dialect: &'static Dialect,
    pool: AnyPool,
    health: HealthCheck,
    queries: Queries,
    cleanup: AbortHandle,
}

impl SqlStore {
    /// Connects, creates the table if needed, and starts the cleanup.
    pub async fn connect(
        dialect: &'static Dialect,
        (connection, cleanup, _): SqlStateMetadata,
        tasks: &Tasks,
    ) -> Result<Arc<dyn StateStore>, BuildError> {
        let table = connection.table(DEFAULT_TABLE);
        let cleanup_every = Duration::from_secs(cleanup.cleanup_interval_in_seconds.max(1));
        let Connections { pool, health } = dialect.backend.connect(&connection).await?;
        dialect.backend.create(&pool, (dialect.create)(table), table).await?;
        let queries = Queries::new(dialect, table);
        let cleanup = tasks.spawn(
            "ttl cleanup",
            cleanup_loop(pool.clone(), queries.cleanup.clone(), cleanup_every),
        );
        Ok(Arc::new(SqlStore {
            dialect,
            pool,
            health,
            queries,
            cleanup,
        }))
    }

    fn error(&self, e: sqlx::Error) -> ComponentError {
        self.dialect.backend.error(e)
    }

    /// Refuses a key the table cannot hold, before the database does it
    /// with a less helpful message.
    fn check_key(&self, key: &str) -> Result<(), ComponentError> {
        match self.dialect.max_key_chars {
            Some(max) if key.chars().count() > max => Err(ComponentError::InvalidArgument(format!(
                "{} keys are at most {max} characters; this one has {}",
                self.dialect.backend.name,
                key.chars().count()
            ))),
            _ => Ok(()),
        }
    }

    /// Applies `ops` in one database transaction.
    async fn apply_all(&self, ops: Vec<TransactionOp>) -> Result<Vec<Etag>, ComponentError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.error(e))?;
        let mut etags = Vec::with_capacity(ops.len());
        for op in ops {
            etags.push(self.apply(&mut tx, op).await?);
        }
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(etags)
    }

    /// Checks and applies one operation inside `tx`; answers the new etag
    /// of an upsert (0 for a delete).
    async fn apply(&self, tx: &mut Transaction<'static, Any>, op: TransactionOp) -> Result<Etag, ComponentError> {
        let needs_check = match &op {
            TransactionOp::Upsert(r) => r.etag.is_some() || r.concurrency == Concurrency::FirstWrite,
            TransactionOp::Delete(r) => r.etag.is_some(),
        };
        let current = if needs_check {
            let row = sqlx::query(self.queries.current_etag.clone())
                .bind(op.key().to_owned())
                .fetch_optional(&mut **tx)
                .await
                .map_err(|e| self.error(e))?;
            row.map(|r| r.try_get::<i64, _>(0))
                .transpose()
                .map_err(|e| self.error(e))?
        } else {
            None
        };
        check_write(&op, current)?;
        match op {
            TransactionOp::Upsert(req) => {
                let etag = new_etag();
                let statement = if req.etag.is_none() && req.concurrency == Concurrency::FirstWrite {
                    // A value that expired still holds the key; clear it so
                    // the insert meets only live rows.
                    sqlx::query(self.queries.purge_expired_key.clone())
                        .bind(req.key.clone())
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| self.error(e))?;
                    self.queries.insert.clone()
                } else {
                    self.queries.upsert.clone()
                };
                let key = req.key.clone();
                let written = write_row(statement, req, etag).execute(&mut **tx).await;
                match written {
                    Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(already_exists(&key)),
                    Err(e) => Err(self.error(e)),
                    Ok(_) => Ok(etag),
                }
            }
            TransactionOp::Delete(req) => {
                sqlx::query(self.queries.delete.clone())
                    .bind(req.key)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| self.error(e))?;
                Ok(0)
            }
        }
    }
}

/// Binds a row's columns to an INSERT or upsert.
fn write_row(sql: SqlStr, req: SetRequest, etag: Etag) -> sqlx::query::Query<'static, Any, AnyArguments> {
    let ttl_ms = req.ttl.map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
    sqlx::query(sql).bind(req.key).bind(req.value).bind(etag).bind(ttl_ms)
}

impl Drop for SqlStore {
    fn drop(&mut self) {
        self.cleanup.abort();
    }
}

/// Runs until the component stops; a failed sweep waits for the next one
/// (the health check is what notices a dead database).
async fn cleanup_loop(pool: AnyPool, sql: SqlStr, every: Duration) -> Result<(), String> {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(error) = sqlx::query(sql.clone()).execute(&pool).await {
            warn!(%error, "Cannot delete expired state rows");
        }
    }
}

#[async_trait::async_trait]
impl Component for SqlStore {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.health.ping().await
    }

    async fn close(&self) {
        self.cleanup.abort();
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl StateStore for SqlStore {
    async fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, StateValue)>, ComponentError> {
        let mut pattern = String::with_capacity(prefix.len() + 1);
        for c in prefix.chars() {
            if matches!(c, '!' | '%' | '_') {
                pattern.push('!');
            }
            pattern.push(c);
        }
        pattern.push('%');
        let rows: Vec<AnyRow> = sqlx::query(self.queries.scan.clone())
            .bind(pattern)
            .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        if rows.len() > limit {
            return Err(super::too_many(limit));
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let decoded = (|| -> Result<(String, StateValue), sqlx::Error> {
                Ok((
                    row.try_get(0)?,
                    StateValue {
                        data: row.try_get(1)?,
                        etag: row.try_get(2)?,
                        expires_at: None,
                    },
                ))
            })()
            .map_err(|e| self.error(e))?;
            if decoded.0.starts_with(prefix) {
                out.push(decoded);
            }
        }
        Ok(out)
    }

    async fn get(&self, key: &str, _consistency: Consistency) -> Result<Option<StateValue>, ComponentError> {
        self.check_key(key)?;
        let row: Option<AnyRow> = sqlx::query(self.queries.get.clone())
            .bind(key.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let decode = |row: &AnyRow| -> Result<StateValue, sqlx::Error> {
            let expires_at: Option<i64> = row.try_get(2)?;
            let now_ms: i64 = row.try_get(3)?;
            Ok(StateValue {
                data: row.try_get(0)?,
                etag: row.try_get(1)?,
                // Reported on the sidecar's clock, offset as the database
                // sees it.
                expires_at: expires_at.map(|at| {
                    let left = Duration::from_millis(u64::try_from(at - now_ms).unwrap_or(0));
                    SystemTime::now() + left
                }),
            })
        };
        decode(&row).map(Some).map_err(|e| self.error(e))
    }

    async fn set(&self, req: SetRequest) -> Result<Etag, ComponentError> {
        self.check_key(&req.key)?;
        if req.etag.is_none() && req.concurrency == Concurrency::LastWrite {
            // Nothing to check: one statement, no transaction.
            let etag = new_etag();
            write_row(self.queries.upsert.clone(), req, etag)
                .execute(&self.pool)
                .await
                .map_err(|e| self.error(e))?;
            return Ok(etag);
        }
        let etags = self.apply_all(vec![TransactionOp::Upsert(req)]).await?;
        Ok(etags.first().copied().unwrap_or_default())
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), ComponentError> {
        self.check_key(&req.key)?;
        if req.etag.is_none() {
            sqlx::query(self.queries.delete.clone())
                .bind(req.key)
                .execute(&self.pool)
                .await
                .map_err(|e| self.error(e))?;
            return Ok(());
        }
        self.apply_all(vec![TransactionOp::Delete(req)]).await.map(drop)
    }

    async fn transact(&self, ops: Vec<TransactionOp>) -> Result<(), ComponentError> {
        if ops.is_empty() {
            return Ok(());
        }
        for op in &ops {
            self.check_key(op.key())?;
        }
        self.apply_all(ops).await.map(drop)
    }
}
