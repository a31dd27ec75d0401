//! `sqlite`: sidecars of one host register in a shared SQLite file, in the
//! table layout of Dapr's `nameresolution.sqlite` (see
//! [`sql`](super::sql)).
//!
//! Metadata: `connectionString` (a file path or `sqlite:` URL), `tableName`
//! (default `hosts`, Dapr's), `timeout`, `updateInterval`,
//! `cleanupInterval`.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::NameResolver;
use super::sql::{Dialect, SqlRegistry, SqlRegistryMetadata};
use crate::components::{self, BuildContext, BuildError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn NameResolver> = TypeEntry::of::<SqliteType>();

pub struct SqliteType;

impl ComponentType<dyn NameResolver> for SqliteType {
    const NAME: &'static str = "sqlite";
    type Metadata = SqlRegistryMetadata;

    fn build(
        ctx: BuildContext,
        metadata: SqlRegistryMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn NameResolver>, BuildError>> {
        async move { SqlRegistry::connect(&DIALECT, ctx, metadata).await }.boxed()
    }
}

static DIALECT: Dialect = Dialect {
    backend: &components::sql::SQLITE,
    table: "hosts",
    create: "CREATE TABLE IF NOT EXISTS {table} (registration_id TEXT NOT NULL PRIMARY KEY, \
             address TEXT NOT NULL UNIQUE, app_id TEXT NOT NULL, namespace TEXT NOT NULL, \
             last_update INTEGER)",
};
