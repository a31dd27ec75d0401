//! `postgresql`: configuration items as rows of a table (`tableName`,
//! default `layotto_configuration`), created on first start with a trigger
//! that `NOTIFY`s every insert, update and delete, from any writer. The
//! store `LISTEN`s: that is its change feed, delivered in commit order.
//! The listener is a task linked to the component: when its connection
//! drops the task fails, the component goes DOWN and is rebuilt, and
//! watchers, whose feed ended, read the current values from the new one. A
//! row read back that cannot be read is never passed on as a delete:
//! watchers are told to read the current values again.
//!
//! Metadata: `connectionString` (a `postgres://` URL or a key=value DSN),
//! `tableName`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row, SqlSafeStr, SqlStr};
use tokio::task::AbortHandle;
use tracing::warn;

use super::{ConfigEvent, ConfigEvents, ConfigStore, Feed, ItemId, ItemValue, Selector};
use crate::components::sql::{self, POSTGRES, SqlConnection};
use crate::components::tasks::Tasks;
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn ConfigStore> = TypeEntry::of::<PostgresType>();

pub struct PostgresType;

impl ComponentType<dyn ConfigStore> for PostgresType {
    const NAME: &'static str = "postgresql";
    type Metadata = SqlConnection;

    fn build(
        ctx: BuildContext,
        connection: SqlConnection,
    ) -> BoxFuture<'static, Result<Arc<dyn ConfigStore>, BuildError>> {
        async move {
            PgConfig::connect(&connection, &ctx.tasks)
                .await
                .map(|s| s as Arc<dyn ConfigStore>)
        }
        .boxed()
    }
}

const DEFAULT_TABLE: &str = "layotto_configuration";

struct Queries {
    get_keys: SqlStr,
    get_all: SqlStr,
    get_one: SqlStr,
    upsert: SqlStr,
    delete: SqlStr,
}

pub struct PgConfig {
    pool: PgPool,
    queries: Arc<Queries>,
    feed: Arc<Feed>,
    listener: AbortHandle,
}

fn statement(sql: String) -> SqlStr {
    // The table name pasted in passed `sql::TableName`: a plain identifier.
    AssertSqlSafe(sql).into_sql_str()
}

impl PgConfig {
    async fn connect(connection: &SqlConnection, tasks: &Tasks) -> Result<Arc<PgConfig>, BuildError> {
        let table = connection.table(DEFAULT_TABLE).to_owned();
        let url = sql::url(&POSTGRES, connection).map_err(BuildError)?;
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .map_err(|e| BuildError(format!("postgresql config store cannot connect: {e}")))?;
        let channel = table.replace('.', "_");
        let function = format!("{channel}_notify");
        let ddl = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (app_id TEXT NOT NULL, grp TEXT NOT NULL, label TEXT NOT NULL, \
                 key TEXT NOT NULL, content TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '{{}}', \
                 metadata TEXT NOT NULL DEFAULT '{{}}', PRIMARY KEY (app_id, grp, label, key))"
            ),
            format!(
                // The notice carries the row, so every intermediate value
                // reaches watchers; one too big for NOTIFY (8000 bytes)
                // carries only its identity, and is read back.
                "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger AS $$ \
                 DECLARE r RECORD; payload TEXT; BEGIN \
                 IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF; \
                 payload := json_build_object('op', TG_OP, 'app_id', r.app_id, 'grp', r.grp, 'label', r.label, \
                 'key', r.key, 'content', r.content, 'tags', r.tags, 'metadata', r.metadata)::text; \
                 IF octet_length(payload) > 7900 THEN \
                 payload := json_build_object('op', TG_OP, 'app_id', r.app_id, 'grp', r.grp, 'label', r.label, \
                 'key', r.key)::text; END IF; \
                 PERFORM pg_notify('{channel}', payload); \
                 RETURN r; END; $$ LANGUAGE plpgsql"
            ),
            format!(
                "CREATE OR REPLACE TRIGGER {function} AFTER INSERT OR UPDATE OR DELETE ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION {function}()"
            ),
        ];
        for statement in ddl {
            // Sidecars starting together may race on the catalog; the
            // supervisor retries a failed build.
            sqlx::query(AssertSqlSafe(statement))
                .execute(&pool)
                .await
                .map_err(|e| BuildError(format!("postgresql config store cannot prepare {table}: {e}")))?;
        }
        let columns = "app_id, grp, label, key, content, tags, metadata";
        let queries = Arc::new(Queries {
            get_keys: statement(format!(
                "SELECT {columns} FROM {table} WHERE app_id = $1 AND grp = $2 AND label = $3 AND key = ANY($4) ORDER BY key"
            )),
            get_all: statement(format!(
                "SELECT {columns} FROM {table} WHERE app_id = $1 AND grp = $2 AND label = $3 ORDER BY key"
            )),
            get_one: statement(format!(
                "SELECT {columns} FROM {table} WHERE app_id = $1 AND grp = $2 AND label = $3 AND key = $4"
            )),
            upsert: statement(format!(
                "INSERT INTO {table} ({columns}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (app_id, grp, label, key) DO UPDATE SET content = excluded.content, \
                 tags = excluded.tags, metadata = excluded.metadata"
            )),
            delete: statement(format!(
                "DELETE FROM {table} WHERE app_id = $1 AND grp = $2 AND label = $3 AND key = $4"
            )),
        });
        // Listen before serving, so no change after start-up is missed.
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(|e| BuildError(format!("postgresql config store cannot listen: {e}")))?;
        listener
            .listen(&channel)
            .await
            .map_err(|e| BuildError(format!("postgresql config store cannot listen on {channel}: {e}")))?;
        let feed = Arc::new(Feed::default());
        let follower = tasks.spawn(
            "change feed",
            follow(listener, pool.clone(), channel, queries.clone(), feed.clone()),
        );
        Ok(Arc::new(PgConfig {
            pool,
            queries,
            feed,
            listener: follower,
        }))
    }
}

impl Drop for PgConfig {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

#[derive(serde::Deserialize)]
struct Notice {
    op: String,
    app_id: String,
    grp: String,
    label: String,
    key: String,
    /// Absent when the row was too big for the notice.
    content: Option<String>,
    tags: Option<String>,
    metadata: Option<String>,
}

async fn follow(
    mut listener: PgListener,
    pool: PgPool,
    channel: String,
    queries: Arc<Queries>,
    feed: Arc<Feed>,
) -> Result<(), String> {
    loop {
        // `recv` would reconnect on its own, losing what was notified in
        // between; `try_recv` says the connection is gone.
        let notification = match listener.try_recv().await {
            Ok(Some(notification)) => notification,
            Ok(None) => return Err(format!("the connection listening on {channel} was lost")),
            Err(error) => return Err(format!("listening on {channel} failed: {error}")),
        };
        let Ok(notice) = serde_json::from_str::<Notice>(notification.payload()) else {
            continue;
        };
        let id = ItemId {
            app_id: notice.app_id,
            group: notice.grp,
            label: notice.label,
            key: notice.key,
        };
        let json = |text: Option<String>| {
            text.and_then(|t| serde_json::from_str::<BTreeMap<String, String>>(&t).ok())
                .unwrap_or_default()
        };
        let event = match (notice.op.as_str(), notice.content) {
            ("DELETE", _) => ConfigEvent::Changed(id, None),
            (_, Some(content)) => ConfigEvent::Changed(
                id,
                Some(ItemValue {
                    content,
                    tags: json(notice.tags),
                    metadata: json(notice.metadata),
                }),
            ),
            (_, None) => read_back(&pool, &queries, id).await,
        };
        feed.publish(event);
    }
}

/// The change of a row too big for its notice, read back. A read that
/// fails is no delete: watchers are told to read the current values, and
/// retry until that works.
async fn read_back(pool: &PgPool, queries: &Queries, id: ItemId) -> ConfigEvent {
    match read_one(pool, queries, &id).await {
        Ok(value) => ConfigEvent::Changed(id, value),
        Err(error) => {
            warn!(%error, key = %id.key, "Cannot read back a changed configuration item; watchers resync");
            ConfigEvent::Resync
        }
    }
}

fn row_item(row: &sqlx::postgres::PgRow) -> Result<(ItemId, ItemValue), sqlx::Error> {
    let json = |text: String| serde_json::from_str::<BTreeMap<String, String>>(&text).unwrap_or_default();
    Ok((
        ItemId {
            app_id: row.try_get(0)?,
            group: row.try_get(1)?,
            label: row.try_get(2)?,
            key: row.try_get(3)?,
        },
        ItemValue {
            content: row.try_get(4)?,
            tags: json(row.try_get(5)?),
            metadata: json(row.try_get(6)?),
        },
    ))
}

async fn read_one(pool: &PgPool, queries: &Queries, id: &ItemId) -> Result<Option<ItemValue>, sqlx::Error> {
    let row = sqlx::query(queries.get_one.clone())
        .bind(&id.app_id)
        .bind(&id.group)
        .bind(&id.label)
        .bind(&id.key)
        .fetch_optional(pool)
        .await?;
    row.map(|r| row_item(&r).map(|(_, v)| v)).transpose()
}

#[async_trait::async_trait]
impl Component for PgConfig {
    async fn health_check(&self) -> Result<(), ComponentError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|e| POSTGRES.error(e))
    }

    async fn close(&self) {
        self.listener.abort();
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl ConfigStore for PgConfig {
    async fn get(&self, selector: &Selector) -> Result<Vec<(ItemId, ItemValue)>, ComponentError> {
        let query = if selector.keys.is_empty() {
            sqlx::query(self.queries.get_all.clone())
                .bind(&selector.app_id)
                .bind(&selector.group)
                .bind(&selector.label)
        } else {
            sqlx::query(self.queries.get_keys.clone())
                .bind(&selector.app_id)
                .bind(&selector.group)
                .bind(&selector.label)
                .bind(&selector.keys)
        };
        let rows = query.fetch_all(&self.pool).await.map_err(|e| POSTGRES.error(e))?;
        rows.iter()
            .map(row_item)
            .collect::<Result<_, _>>()
            .map_err(|e| POSTGRES.error(e))
    }

    async fn save(&self, items: Vec<(ItemId, ItemValue)>) -> Result<(), ComponentError> {
        let mut tx = self.pool.begin().await.map_err(|e| POSTGRES.error(e))?;
        for (id, value) in items {
            let tags = serde_json::to_string(&value.tags).unwrap_or_default();
            let metadata = serde_json::to_string(&value.metadata).unwrap_or_default();
            sqlx::query(self.queries.upsert.clone())
                .bind(id.app_id)
                .bind(id.group)
                .bind(id.label)
                .bind(id.key)
                .bind(value.content)
                .bind(tags)
                .bind(metadata)
                .execute(&mut *tx)
                .await
                .map_err(|e| POSTGRES.error(e))?;
        }
        tx.commit().await.map_err(|e| POSTGRES.error(e))
    }

    async fn delete(&self, ids: Vec<ItemId>) -> Result<(), ComponentError> {
        let mut tx = self.pool.begin().await.map_err(|e| POSTGRES.error(e))?;
        for id in ids {
            sqlx::query(self.queries.delete.clone())
                .bind(id.app_id)
                .bind(id.group)
                .bind(id.label)
                .bind(id.key)
                .execute(&mut *tx)
                .await
                .map_err(|e| POSTGRES.error(e))?;
        }
        tx.commit().await.map_err(|e| POSTGRES.error(e))
    }

    async fn watch(&self) -> Result<ConfigEvents, ComponentError> {
        Ok(self.feed.watch())
    }
}
