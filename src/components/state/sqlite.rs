//! `sqlite`: state in a local SQLite file; survives sidecar restarts. The
//! embedded default's state store.
//!
//! Metadata: `connectionString` (a file path, or a `sqlite:` URL; required),
//! `tableName` (default `state`), `cleanupIntervalInSeconds` (default 3600),
//! `keyPrefix`. One connection: SQLite takes one writer at a time anyway,
//! and this makes every check-then-write atomic.

use futures::FutureExt;

use super::StateStore;
use super::sql::{self, Dialect, SqlStore};
use crate::components::{self, TypeEntry};

pub const TYPE: TypeEntry<dyn StateStore> = TypeEntry {
    name: "sqlite",
    validate: sql::validate,
    build: |crate::components::BuildContext { spec, tasks }| {
        async move { SqlStore::connect(&DIALECT, &spec, &tasks).await }.boxed()
    },
};

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
