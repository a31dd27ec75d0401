//! `postgresql`: locks as rows of a PostgreSQL table (`tableName`, default
//! `layotto_lock`), created on first start; see `lock::sql`.
//!
//! Metadata: `connectionString` (a `postgres://` URL or a key=value DSN),
//! `tableName`, `keyPrefix`.

use futures::FutureExt;

use super::LockStore;
use super::sql::{self, Dialect, SqlLocks};
use crate::components::{self, TypeEntry};

pub const TYPE: TypeEntry<dyn LockStore> = TypeEntry {
    name: "postgresql",
    validate: sql::validate,
    build: |crate::components::BuildContext { spec, .. }| {
        async move { SqlLocks::connect(&DIALECT, &spec).await }.boxed()
    },
};

static DIALECT: Dialect = Dialect {
    backend: &components::sql::POSTGRES,
    create: "CREATE TABLE IF NOT EXISTS {table} (resource TEXT NOT NULL PRIMARY KEY, owner TEXT NOT NULL, \
             expires_at BIGINT NOT NULL)",
    take: "INSERT INTO {table} AS held (resource, owner, expires_at) VALUES (?, ?, {now} + ?) \
           ON CONFLICT (resource) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
           WHERE held.expires_at <= {now}",
};
