//! `postgresql`: counters in a PostgreSQL table (`tableName`, default
//! `layotto_sequencer`), created on first start; see `sequencer::sql`.
//!
//! Metadata: `connectionString`, `tableName`, `segmentSize`, `keyPrefix`.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::SequencerStore;
use super::sql::{Dialect, SqlCounters, SqlSequencerMetadata};
use crate::components::{self, BuildContext, BuildError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn SequencerStore> = TypeEntry::of::<PostgresType>();

pub struct PostgresType;

impl ComponentType<dyn SequencerStore> for PostgresType {
    const NAME: &'static str = "postgresql";
    type Metadata = SqlSequencerMetadata;

    fn build(
        ctx: BuildContext,
        metadata: SqlSequencerMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn SequencerStore>, BuildError>> {
        async move { SqlCounters::connect(&DIALECT, metadata, ctx.tasks).await }.boxed()
    }
}

static DIALECT: Dialect = Dialect {
    backend: &components::sql::POSTGRES,
    create: "CREATE TABLE IF NOT EXISTS {table} (id TEXT NOT NULL PRIMARY KEY, value BIGINT NOT NULL)",
    reserve: "INSERT INTO {table} AS c (id, value) VALUES (?, GREATEST(?, 0) + ?) \
              ON CONFLICT (id) DO UPDATE SET value = GREATEST(c.value, ?) + ? RETURNING value",
    read_back: None,
};
