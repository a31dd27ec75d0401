//! `sqlite`: counters in a local SQLite file (`tableName`, default
//! `layotto_sequencer`); the embedded default's sequencer. Ids survive
//! restarts. See `sequencer::sql`.
//!
//! Metadata: `connectionString` (a file path), `tableName`, `segmentSize`,
//! `keyPrefix`.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::SequencerStore;
use super::sql::{Dialect, SqlCounters, SqlSequencerMetadata};
use crate::components::{self, BuildContext, BuildError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn SequencerStore> = TypeEntry::of::<SqliteType>();

pub struct SqliteType;

impl ComponentType<dyn SequencerStore> for SqliteType {
    const NAME: &'static str = "sqlite";
    type Metadata = SqlSequencerMetadata;

    fn build(
        ctx: BuildContext,
        metadata: SqlSequencerMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn SequencerStore>, BuildError>> {
        async move { SqlCounters::connect(&DIALECT, metadata, ctx.tasks).await }.boxed()
    }
}

static DIALECT: Dialect = Dialect {
    backend: &components::sql::SQLITE,
    create: "CREATE TABLE IF NOT EXISTS {table} (id TEXT NOT NULL PRIMARY KEY, value INTEGER NOT NULL)",
    reserve: "INSERT INTO {table} (id, value) VALUES (?, MAX(?, 0) + ?) \
              ON CONFLICT (id) DO UPDATE SET value = MAX(value, ?) + ? RETURNING value",
    read_back: None,
};
