//! `postgresql`: sidecars register in a PostgreSQL table shared by any
//! number of hosts, with the columns of Dapr's SQLite resolver (see
//! [`sql`](super::sql)).
//!
//! Metadata: `connectionString` (a `postgres://` URL or DSN), `tableName`
//! (default `layotto_hosts`), `timeout`, `updateInterval`,
//! `cleanupInterval`.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::NameResolver;
use super::sql::{Dialect, SqlRegistry, SqlRegistryMetadata};
use crate::components::{self, BuildContext, BuildError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn NameResolver> = TypeEntry::of::<PostgresType>();

pub struct PostgresType;

impl ComponentType<dyn NameResolver> for PostgresType {
    const NAME: &'static str = "postgresql";
    type Metadata = SqlRegistryMetadata;

    fn build(
        ctx: BuildContext,
        metadata: SqlRegistryMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn NameResolver>, BuildError>> {
        async move { SqlRegistry::connect(&DIALECT, ctx, metadata).await }.boxed()
    }
}

static DIALECT: Dialect = Dialect {
    backend: &components::sql::POSTGRES,
    table: "layotto_hosts",
    create: "CREATE TABLE IF NOT EXISTS {table} (registration_id TEXT NOT NULL PRIMARY KEY, \
             address TEXT NOT NULL UNIQUE, app_id TEXT NOT NULL, namespace TEXT NOT NULL, \
             last_update BIGINT)",
};
