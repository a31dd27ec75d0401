//! `postgresql`: locks as rows of a PostgreSQL table (`tableName`, default
//! `layotto_lock`), created on first start; see `lock::sql`.
//!
//! Metadata: `connectionString` (a `postgres://` URL or a key=value DSN),
//! `tableName`, `keyPrefix`.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::LockStore;
use super::sql::{Dialect, SqlLockMetadata, SqlLocks};
use crate::components::{self, BuildContext, BuildError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn LockStore> = TypeEntry::of::<PostgresType>();

pub struct PostgresType;

impl ComponentType<dyn LockStore> for PostgresType {
    const NAME: &'static str = "postgresql";
    type Metadata = SqlLockMetadata;

    fn build(
        _ctx: BuildContext,
        metadata: SqlLockMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn LockStore>, BuildError>> {
        async move { SqlLocks::connect(&DIALECT, metadata).await }.boxed()
    }
}

static DIALECT: Dialect = Dialect {
    backend: &components::sql::POSTGRES,
    create: "CREATE TABLE IF NOT EXISTS {table} (resource TEXT NOT NULL PRIMARY KEY, owner TEXT NOT NULL, \
             expires_at BIGINT NOT NULL)",
    take: "INSERT INTO {table} AS held (resource, owner, expires_at) VALUES (?, ?, {now} + ?) \
           ON CONFLICT (resource) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
           WHERE held.expires_at <= {now}",
};
