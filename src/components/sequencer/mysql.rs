//! `mysql`: counters in a MySQL or MariaDB table (`tableName`, default
//! `layotto_sequencer`), created on first start; see `sequencer::sql`.
//!
//! Metadata: `connectionString` (URL or Go-driver DSN), `tableName`,
//! `segmentSize`, `keyPrefix`.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::SequencerStore;
use super::sql::{Dialect, SqlCounters, SqlSequencerMetadata};
use crate::components::{self, BuildContext, BuildError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn SequencerStore> = TypeEntry::of::<MysqlType>();

pub struct MysqlType;

impl ComponentType<dyn SequencerStore> for MysqlType {
    const NAME: &'static str = "mysql";
    type Metadata = SqlSequencerMetadata;

    fn build(
        ctx: BuildContext,
        metadata: SqlSequencerMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn SequencerStore>, BuildError>> {
        async move { SqlCounters::connect(&DIALECT, metadata, ctx.tasks).await }.boxed()
    }
}

static DIALECT: Dialect = Dialect {
    backend: &components::sql::MYSQL,
    create: "CREATE TABLE IF NOT EXISTS {table} (id VARCHAR(512) NOT NULL PRIMARY KEY, value BIGINT NOT NULL) \
             CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    // LAST_INSERT_ID(expr) remembers the new value for this connection.
    reserve: "INSERT INTO {table} (id, value) VALUES (?, LAST_INSERT_ID(GREATEST(?, 0) + ?)) \
              ON DUPLICATE KEY UPDATE value = LAST_INSERT_ID(GREATEST(value, ?) + ?)",
    read_back: Some("SELECT CAST(LAST_INSERT_ID() AS SIGNED)"),
};
