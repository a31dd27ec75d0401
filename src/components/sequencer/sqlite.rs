//! `sqlite`: counters in a local SQLite file (`tableName`, default
//! `layotto_sequencer`); the embedded default's sequencer. Ids survive
//! restarts. See `sequencer::sql`.
//!
//! Metadata: `connectionString` (a file path), `tableName`, `segmentSize`,
//! `keyPrefix`.

use futures::FutureExt;

use super::SequencerStore;
use super::sql::{self, Dialect, SqlCounters};
use crate::components::{self, TypeEntry};

pub const TYPE: TypeEntry<dyn SequencerStore> = TypeEntry {
    name: "sqlite",
    validate: sql::validate,
    build: |crate::components::BuildContext { spec, .. }| {
        async move { SqlCounters::connect(&DIALECT, &spec).await }.boxed()
    },
};

static DIALECT: Dialect = Dialect {
    backend: &components::sql::SQLITE,
    create: "CREATE TABLE IF NOT EXISTS {table} (id TEXT NOT NULL PRIMARY KEY, value INTEGER NOT NULL)",
    reserve: "INSERT INTO {table} (id, value) VALUES (?, MAX(?, 0) + ?) \
              ON CONFLICT (id) DO UPDATE SET value = MAX(value, ?) + ? RETURNING value",
    read_back: None,
};
