//! `postgresql`: counters in a PostgreSQL table (`tableName`, default
//! `layotto_sequencer`), created on first start; see `sequencer::sql`.
//!
//! Metadata: `connectionString`, `tableName`, `segmentSize`, `keyPrefix`.

use futures::FutureExt;

use super::SequencerStore;
use super::sql::{self, Dialect, SqlCounters};
use crate::components::{self, TypeEntry};

pub const TYPE: TypeEntry<dyn SequencerStore> = TypeEntry {
    name: "postgresql",
    validate: sql::validate,
    build: |crate::components::BuildContext { spec, .. }| {
        async move { SqlCounters::connect(&DIALECT, &spec).await }.boxed()
    },
};

static DIALECT: Dialect = Dialect {
    backend: &components::sql::POSTGRES,
    create: "CREATE TABLE IF NOT EXISTS {table} (id TEXT NOT NULL PRIMARY KEY, value BIGINT NOT NULL)",
    reserve: "INSERT INTO {table} AS c (id, value) VALUES (?, GREATEST(?, 0) + ?) \
              ON CONFLICT (id) DO UPDATE SET value = GREATEST(c.value, ?) + ? RETURNING value",
    read_back: None,
};
