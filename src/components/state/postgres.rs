//! `postgresql`: state in a PostgreSQL table, created on first start.
//!
//! Metadata: `connectionString` (a `postgres://` URL or a key=value DSN such
//! as `host=localhost user=postgres dbname=test`; required), `tableName`
//! (default `state`), `cleanupIntervalInSeconds`,
//! `keyPrefix`. Row locks (`SELECT ... FOR UPDATE`) make etag checks hold
//! across sidecars; expiry uses the server's clock.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::StateStore;
use super::sql::{Dialect, SqlStateMetadata, SqlStore};
use crate::components::{self, BuildContext, BuildError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn StateStore> = TypeEntry::of::<PostgresType>();

pub struct PostgresType;

impl ComponentType<dyn StateStore> for PostgresType {
    const NAME: &'static str = "postgresql";
    type Metadata = SqlStateMetadata;

    fn build(
        ctx: BuildContext,
        metadata: SqlStateMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn StateStore>, BuildError>> {
        async move { SqlStore::connect(&DIALECT, metadata, &ctx.tasks).await }.boxed()
    }
}

static DIALECT: Dialect = Dialect {
    backend: &components::sql::POSTGRES,
    create: |table| {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (id TEXT NOT NULL PRIMARY KEY, value BYTEA NOT NULL, \
                 etag BIGINT NOT NULL, expires_at BIGINT)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {}_expires_at ON {table} (expires_at) WHERE expires_at IS NOT NULL",
                table.replace('.', "_")
            ),
        ]
    },
    upsert_clause: "ON CONFLICT (id) DO UPDATE SET value = excluded.value, etag = excluded.etag, \
                    expires_at = excluded.expires_at",
    lock_clause: " FOR UPDATE",
    max_key_chars: None,
};
