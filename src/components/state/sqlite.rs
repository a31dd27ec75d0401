//! `sqlite`: state in a local SQLite file; survives sidecar restarts. The
//! embedded default's state store.
//!
//! Metadata: `connectionString` (a file path, or a `sqlite:` URL; required),
//! `tableName` (default `state`), `cleanupIntervalInSeconds`,
//! `keyPrefix`. One connection: SQLite takes one writer at a time anyway,
//! and this makes every check-then-write atomic.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::StateStore;
use super::sql::{Dialect, SqlStateMetadata, SqlStore};
use crate::components::{self, BuildContext, BuildError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn StateStore> = TypeEntry::of::<SqliteType>();

pub struct SqliteType;

impl ComponentType<dyn StateStore> for SqliteType {
    const NAME: &'static str = "sqlite";
    type Metadata = SqlStateMetadata;

    fn build(
        ctx: BuildContext,
        metadata: SqlStateMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn StateStore>, BuildError>> {
        async move { SqlStore::connect(&DIALECT, metadata, &ctx.tasks).await }.boxed()
    }
}

static DIALECT: Dialect = Dialect {
    backend: &components::sql::SQLITE,
    create: |table| {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (id TEXT NOT NULL PRIMARY KEY, value BLOB NOT NULL, \
                 etag INTEGER NOT NULL, expires_at INTEGER)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {}_expires_at ON {table} (expires_at)",
                table.replace('.', "_")
            ),
        ]
    },
    upsert_clause: "ON CONFLICT (id) DO UPDATE SET value = excluded.value, etag = excluded.etag, \
                    expires_at = excluded.expires_at",
    lock_clause: "",
    max_key_chars: None,
};
