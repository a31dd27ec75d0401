//! Locks in a SQL table, shared by `postgresql` and `sqlite`: one row per
//! held resource, `(resource, owner, expires_at)`, each operation a single
//! statement, so concurrent sidecars meet at the row.
//!
//! Taking a lock inserts the row, or overwrites it only when its lease has
//! expired (an upsert whose update is conditional); releasing deletes it,
//! and extending updates it, only when the owner matches and the lease is
//! live. Time is the database's clock.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyPool, SqlStr};

use super::{LockStatus, LockStore};
use crate::components::sql::{Backend, Connections, HealthCheck, SqlConnection};
use crate::components::{BuildError, Component, ComponentError, KeyPrefixSection};

const DEFAULT_TABLE: &str = "layotto_lock";

/// How one backend takes a lock: an upsert whose update only happens when
/// the existing lease has expired. `{table}` and `{now}` are filled in.
pub(super) struct Dialect {
    pub backend: &'static Backend,
    pub create: &'static str,
    pub take: &'static str,
}

/// What every SQL lock store reads from its metadata.
pub(super) type SqlLockMetadata = (SqlConnection, KeyPrefixSection);

struct Queries {
    take: SqlStr,
    release: SqlStr,
    extend: SqlStr,
    holder: SqlStr,
}

pub(super) struct SqlLocks {
    backend: &'static Backend,
    pool: AnyPool,
    health: HealthCheck,
    queries: Queries,
}

impl SqlLocks {
    pub async fn connect(
        dialect: &'static Dialect,
        (connection, _): SqlLockMetadata,
    ) -> Result<Arc<dyn LockStore>, BuildError> {
        let table = connection.table(DEFAULT_TABLE);
        let Connections { pool, health } = dialect.backend.connect(&connection).await?;
        let fill = |s: &str| s.replace("{table}", table).replace("{now}", dialect.backend.now_ms);
        dialect.backend.create(&pool, vec![fill(dialect.create)], table).await?;
        let alive = format!("expires_at > {}", dialect.backend.now_ms);
        let q = |s: String| dialect.backend.statement(s);
        let queries = Queries {
            take: q(fill(dialect.take)),
            release: q(format!(
                "DELETE FROM {table} WHERE resource = ? AND owner = ? AND {alive}"
            )),
            extend: q(format!(
                "UPDATE {table} SET expires_at = {} + ? WHERE resource = ? AND owner = ? AND {alive}",
                dialect.backend.now_ms
            )),
            holder: q(format!("SELECT owner FROM {table} WHERE resource = ? AND {alive}")),
        };
        Ok(Arc::new(SqlLocks {
            backend: dialect.backend,
            pool,
            health,
            queries,
        }))
    }

    fn error(&self, e: sqlx::Error) -> ComponentError {
        self.backend.error(e)
    }

    /// Why an owner's release or extension matched no row.
    async fn miss(&self, key: &str) -> Result<LockStatus, ComponentError> {
        let holder = sqlx::query(self.queries.holder.clone())
            .bind(key.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(match holder {
            None => LockStatus::Unexist,
            Some(_) => LockStatus::BelongsToOthers,
        })
    }
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

#[async_trait::async_trait]
impl Component for SqlLocks {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.health.ping().await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl LockStore for SqlLocks {
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, ComponentError> {
        let done = sqlx::query(self.queries.take.clone())
            .bind(key.to_owned())
            .bind(owner.to_owned())
            .bind(millis(ttl))
            .execute(&self.pool)
            .await;
        match done {
            Ok(r) => Ok(r.rows_affected() == 1),
            // Two takers of a free resource meet at the primary key.
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<LockStatus, ComponentError> {
        let done = sqlx::query(self.queries.release.clone())
            .bind(key.to_owned())
            .bind(owner.to_owned())
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        if done.rows_affected() == 1 {
            return Ok(LockStatus::Success);
        }
        self.miss(key).await
    }

    async fn keep_alive(&self, key: &str, owner: &str, ttl: Duration) -> Result<LockStatus, ComponentError> {
        let done = sqlx::query(self.queries.extend.clone())
            .bind(millis(ttl))
            .bind(key.to_owned())
            .bind(owner.to_owned())
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        if done.rows_affected() == 1 {
            return Ok(LockStatus::Success);
        }
        self.miss(key).await
    }
}
