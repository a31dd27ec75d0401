//! Registries in a SQL table, shared by `sqlite` and `postgresql`, with
//! the columns of Dapr's SQLite resolver (`registration_id`, `address`,
//! `app_id`, `namespace`, `last_update` in Unix seconds), so a daprd using
//! the same SQLite file finds these sidecars and the other way round.
//!
//! A sidecar upserts its row by address when it is built, renews
//! `last_update` every `updateInterval - timeout` (re-inserting the row if
//! someone removed it, where daprd would exit), and deletes it when it
//! closes. A lookup returns the rows of the app id renewed within
//! `updateInterval`; rows older than that are deleted every
//! `cleanupInterval`. Time is the database's clock.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyPool, SqlStr};

use super::{NameResolver, Registration};
use crate::components::meta::{self, Seconds};
use crate::components::sql::{Backend, Connections, HealthCheck, SqlConnection, TableName};
use crate::components::{BuildContext, BuildError, Component, ComponentError, MetadataError};

/// The registry's own keys, beside [`SqlConnection`]'s.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryMetadata {
    /// How long one registry statement may take. Default 1s.
    #[serde(default = "default_timeout")]
    pub timeout: Seconds,
    /// An entry not renewed for this long no longer resolves; renewed every
    /// `updateInterval - timeout`. Whole seconds, at least `timeout` + 1s.
    /// Default 5s.
    #[serde(default = "default_update")]
    pub update_interval: Seconds,
    /// How often stale entries are deleted; `0` never. Default 1h.
    #[serde(default = "default_cleanup")]
    pub cleanup_interval: Seconds,
    /// Accepted for Dapr compatibility (its migrations table); not used.
    #[serde(default)]
    pub metadata_table_name: Option<TableName>,
    /// Accepted for Dapr compatibility (SQLite's busy timeout); not used.
    #[serde(default)]
    pub busy_timeout: Option<Seconds>,
    /// Accepted for Dapr compatibility (SQLite's journal); not used.
    #[serde(rename = "disableWAL", default)]
    pub disable_wal: Option<bool>,
}

impl meta::Section for RegistryMetadata {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        let (update, timeout) = (self.update_interval.0, self.timeout.0);
        if update.subsec_nanos() != 0 {
            errors.push(MetadataError::new("updateInterval", "must be whole seconds"));
        }
        if timeout.is_zero() {
            errors.push(MetadataError::new("timeout", "must be above zero"));
        }
        if update < timeout + Duration::from_secs(1) {
            errors.push(MetadataError::new(
                "updateInterval",
                format!("must be at least timeout + 1s ({:?})", timeout + Duration::from_secs(1)),
            ));
        }
    }
}

fn default_timeout() -> Seconds {
    Seconds::secs(1)
}

fn default_update() -> Seconds {
    Seconds::secs(5)
}

fn default_cleanup() -> Seconds {
    Seconds::secs(3600)
}

/// What every SQL registry reads from its metadata.
pub type SqlRegistryMetadata = (SqlConnection, RegistryMetadata);

/// One backend's spelling of the registry.
pub struct Dialect {
    pub backend: &'static Backend,
    /// The default `tableName`.
    pub table: &'static str,
    pub create: &'static str,
}

struct Queries {
    register: SqlStr,
    renew: SqlStr,
    deregister: SqlStr,
    lookup: SqlStr,
    cleanup: SqlStr,
}

pub struct SqlRegistry {
    backend: &'static Backend,
    pool: AnyPool,
    health: HealthCheck,
    queries: Arc<Queries>,
    timeout: Duration,
    ttl_secs: i64,
    registration: Option<(String, Registration)>,
}

impl SqlRegistry {
    pub async fn connect(
        dialect: &'static Dialect,
        ctx: BuildContext,
        (connection, registry): SqlRegistryMetadata,
    ) -> Result<Arc<dyn NameResolver>, BuildError> {
        let backend = dialect.backend;
        let table = connection.table(dialect.table);
        let Connections { pool, health } = backend.connect(&connection).await?;
        let now = format!("({} / 1000)", backend.now_ms);
        backend
            .create(&pool, vec![dialect.create.replace("{table}", table)], table)
            .await?;
        let q = |s: String| backend.statement(s);
        let ttl_secs = i64::try_from(registry.update_interval.0.as_secs()).unwrap_or(i64::MAX);
        let queries = Arc::new(Queries {
            register: q(format!(
                "INSERT INTO {table} (registration_id, address, app_id, namespace, last_update) \
                 VALUES (?, ?, ?, '', {now}) ON CONFLICT (address) DO UPDATE SET \
                 registration_id = excluded.registration_id, app_id = excluded.app_id, \
                 namespace = excluded.namespace, last_update = excluded.last_update"
            )),
            renew: q(format!(
                "UPDATE {table} SET last_update = {now} WHERE registration_id = ?"
            )),
            deregister: q(format!("DELETE FROM {table} WHERE registration_id = ?")),
            lookup: q(format!(
                "SELECT address FROM {table} WHERE app_id = ? AND {now} - last_update < ?"
            )),
            cleanup: q(format!("DELETE FROM {table} WHERE {now} - last_update >= ?")),
        });
        let registration = Registration::of(&ctx.spec).map(|r| (uuid::Uuid::new_v4().to_string(), r));
        let store = SqlRegistry {
            backend,
            pool,
            health,
            queries,
            timeout: registry.timeout.0,
            ttl_secs,
            registration,
        };
        if let Some((id, reg)) = &store.registration {
            store.register(id, reg).await.map_err(|e| BuildError(e.to_string()))?;
            let renew_every = registry
                .update_interval
                .0
                .saturating_sub(registry.timeout.0)
                .max(Duration::from_millis(200));
            let (pool, queries, id, reg, timeout) = (
                store.pool.clone(),
                store.queries.clone(),
                id.clone(),
                reg.clone(),
                store.timeout,
            );
            ctx.tasks.spawn("heartbeat", async move {
                let mut tick = tokio::time::interval(renew_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let renewed = tokio::time::timeout(
                        timeout,
                        sqlx::query(queries.renew.clone()).bind(id.clone()).execute(&pool),
                    )
                    .await;
                    match renewed {
                        Ok(Ok(done)) if done.rows_affected() == 1 => {}
                        // Removed by someone (a daprd's cleanup): register again.
                        Ok(Ok(_)) => {
                            register(&pool, &queries, &id, &reg, timeout)
                                .await
                                .map_err(|e| format!("cannot register again: {e}"))?;
                        }
                        Ok(Err(e)) => return Err(format!("{}: cannot renew the registration: {e}", backend.name)),
                        Err(_) => return Err(format!("{}: renewing the registration timed out", backend.name)),
                    }
                }
            });
        }
        if !registry.cleanup_interval.0.is_zero() {
            let (pool, queries, ttl) = (store.pool.clone(), store.queries.clone(), ttl_secs);
            let every = registry.cleanup_interval.0;
            ctx.tasks.spawn("cleanup", async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    // A failed cleanup is tried again next time; lookups
                    // ignore stale rows anyway.
                    let _ = sqlx::query(queries.cleanup.clone()).bind(ttl).execute(&pool).await;
                }
            });
        }
        Ok(Arc::new(store))
    }

    async fn register(&self, id: &str, reg: &Registration) -> Result<(), ComponentError> {
        register(&self.pool, &self.queries, id, reg, self.timeout)
            .await
            .map_err(|e| self.backend.error(e))
    }
}

async fn register(
    pool: &AnyPool,
    queries: &Queries,
    id: &str,
    reg: &Registration,
    timeout: Duration,
) -> Result<(), sqlx::Error> {
    let insert = sqlx::query(queries.register.clone())
        .bind(id.to_owned())
        .bind(reg.address.clone())
        .bind(reg.app_id.clone())
        .execute(pool);
    match tokio::time::timeout(timeout.max(Duration::from_secs(1)), insert).await {
        Ok(done) => done.map(drop),
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

#[async_trait::async_trait]
impl Component for SqlRegistry {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.health.ping().await
    }

    async fn close(&self) {
        if let Some((id, _)) = &self.registration {
            let delete = sqlx::query(self.queries.deregister.clone())
                .bind(id.clone())
                .execute(&self.pool);
            let _ = tokio::time::timeout(self.timeout, delete).await;
        }
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl NameResolver for SqlRegistry {
    async fn resolve(&self, app_id: &str, _namespace: &str) -> Result<Vec<String>, ComponentError> {
        use sqlx::Row;
        let rows = sqlx::query(self.queries.lookup.clone())
            .bind(app_id.to_owned())
            .bind(self.ttl_secs)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.backend.error(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(row.try_get::<String, _>(0).map_err(|e| self.backend.error(e))?);
        }
        out.sort();
        Ok(out)
    }
}
