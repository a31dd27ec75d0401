//! `mysql`: state in a MySQL or MariaDB table, created on first start.
//!
//! Metadata: `connectionString` (a `mysql://user:pass@host:3306/db` URL, or
//! Dapr's Go-driver DSN `user:pass@tcp(host:3306)/db`; required),
//! `tableName` (default `state`), `cleanupIntervalInSeconds`,
//! `keyPrefix`. Keys are case-sensitive (binary collation) and at most 512
//! characters. Row locks make etag checks hold across sidecars.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::StateStore;
use super::sql::{Dialect, SqlStateMetadata, SqlStore};
use crate::components::{self, BuildContext, BuildError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn StateStore> = TypeEntry::of::<MysqlType>();

pub struct MysqlType;

impl ComponentType<dyn StateStore> for MysqlType {
    const NAME: &'static str = "mysql";
    type Metadata = SqlStateMetadata;

    fn build(
        ctx: BuildContext,
        metadata: SqlStateMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn StateStore>, BuildError>> {
        async move { SqlStore::connect(&DIALECT, metadata, &ctx.tasks).await }.boxed()
    }
}

static DIALECT: Dialect = Dialect {
    backend: &components::sql::MYSQL,
    create: |table| {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (id VARCHAR(512) NOT NULL PRIMARY KEY, value LONGBLOB NOT NULL, \
             etag BIGINT NOT NULL, expires_at BIGINT NULL, INDEX expires_at_idx (expires_at)) \
             CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        )]
    },
    upsert_clause: "ON DUPLICATE KEY UPDATE value = VALUES(value), etag = VALUES(etag), \
                    expires_at = VALUES(expires_at)",
    lock_clause: " FOR UPDATE",
    max_key_chars: Some(512),
};
