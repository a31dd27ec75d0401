//! `sqlite`: locks as rows of a table in a local SQLite file (`tableName`,
//! default `layotto_lock`); the embedded default's lock store. Meant for
//! the sidecars of one host sharing the file; see `lock::sql`.
//!
//! Metadata: `connectionString` (a file path, or a `sqlite:` URL),
//! `tableName`, `keyPrefix`.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::LockStore;
use super::sql::{Dialect, SqlLockMetadata, SqlLocks};
use crate::components::{self, BuildContext, BuildError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn LockStore> = TypeEntry::of::<SqliteType>();

pub struct SqliteType;

impl ComponentType<dyn LockStore> for SqliteType {
    const NAME: &'static str = "sqlite";
    type Metadata = SqlLockMetadata;

    fn build(
        _ctx: BuildContext,
        metadata: SqlLockMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn LockStore>, BuildError>> {
        async move { SqlLocks::connect(&DIALECT, metadata).await }.boxed()
    }
}

static DIALECT: Dialect = Dialect {
    backend: &components::sql::SQLITE,
    create: "CREATE TABLE IF NOT EXISTS {table} (resource TEXT NOT NULL PRIMARY KEY, owner TEXT NOT NULL, \
             expires_at INTEGER NOT NULL)",
    // In SQLite's upsert, unqualified columns of the DO UPDATE clause are
    // the existing row's.
    take: "INSERT INTO {table} (resource, owner, expires_at) VALUES (?, ?, {now} + ?) \
           ON CONFLICT (resource) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
           WHERE expires_at <= {now}",
};
