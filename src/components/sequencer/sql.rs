//! Counters in a SQL table `(id, value)`, shared by `postgresql`, `mysql`
//! and `sqlite`: each reservation is one atomic upsert that sets
//! `max(value, floor) + size` and reads the result back, so concurrent
//! sidecars never overlap.

use std::sync::Arc;

use sqlx::{AnyPool, Row, SqlStr};

use super::{SequencerStore, Sequencing, segmented};
use crate::components::sql::{Backend, Connections, HealthCheck, SqlConnection};
use crate::components::tasks::Tasks;
use crate::components::{BuildError, Component, ComponentError};

const DEFAULT_TABLE: &str = "layotto_sequencer";

/// How one backend reserves. `{table}` is filled in; the binds are
/// `(key, floor, size, floor, size)`.
pub(super) struct Dialect {
    pub backend: &'static Backend,
    pub create: &'static str,
    pub reserve: &'static str,
    /// A statement that reads the new value on the same connection, for
    /// backends whose upsert cannot return it (MySQL's `LAST_INSERT_ID`).
    pub read_back: Option<&'static str>,
}

/// What every SQL sequencer reads from its metadata.
pub(super) type SqlSequencerMetadata = (SqlConnection, Sequencing);

pub(super) struct SqlCounters {
    backend: &'static Backend,
    pool: AnyPool,
    health: HealthCheck,
    reserve: SqlStr,
    read_back: Option<SqlStr>,
}

impl SqlCounters {
    pub async fn connect(
        dialect: &'static Dialect,
        (connection, sequencing): SqlSequencerMetadata,
        tasks: Tasks,
    ) -> Result<Arc<dyn SequencerStore>, BuildError> {
        let table = connection.table(DEFAULT_TABLE);
        let Connections { pool, health } = dialect.backend.connect(&connection).await?;
        let fill = |s: &str| s.replace("{table}", table);
        dialect.backend.create(&pool, vec![fill(dialect.create)], table).await?;
        let counters = SqlCounters {
            backend: dialect.backend,
            pool,
            health,
            reserve: dialect.backend.statement(fill(dialect.reserve)),
            read_back: dialect.read_back.map(|s| dialect.backend.statement(s.to_owned())),
        };
        Ok(segmented(Arc::new(counters), &sequencing, tasks))
    }

    fn error(&self, e: sqlx::Error) -> ComponentError {
        self.backend.error(e)
    }
}

#[async_trait::async_trait]
impl Component for SqlCounters {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.health.ping().await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl SequencerStore for SqlCounters {
    async fn reserve(&self, key: &str, size: u64, floor: i64) -> Result<i64, ComponentError> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        let upsert = sqlx::query(self.reserve.clone())
            .bind(key.to_owned())
            .bind(floor)
            .bind(size)
            .bind(floor)
            .bind(size);
        let Some(read_back) = &self.read_back else {
            let row = upsert.fetch_one(&self.pool).await.map_err(|e| self.error(e))?;
            return row.try_get::<i64, _>(0).map_err(|e| self.error(e));
        };
        // LAST_INSERT_ID is per connection: both statements on one.
        let mut conn = self.pool.acquire().await.map_err(|e| self.error(e))?;
        upsert.execute(&mut *conn).await.map_err(|e| self.error(e))?;
        let row = sqlx::query(read_back.clone())
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| self.error(e))?;
        row.try_get::<i64, _>(0).map_err(|e| self.error(e))
    }
}
