//! `sqlite`: state in a local SQLite file; survives sidecar restarts. The
//! embedded default's state store.
//!
//! Metadata: `connectionString` (a file path, or a `sqlite:` URL; required),
//! `tableName` (default `state`), `cleanupIntervalInSeconds` (default 3600),
//! `keyPrefix`. One connection: SQLite takes one writer at a time anyway,
//! and this makes every check-then-write atomic.

use futures::FutureExt;

use super::StateStore;
use super::sql::{self, Dialect, SqlSettings, SqlStore};
use crate::components::{BuildError, ComponentSpec, MetadataError, TypeEntry, require};

pub const TYPE: TypeEntry<dyn StateStore> = TypeEntry {
    name: "sqlite",
    validate,
    build: |spec| {
        async move {
            let url = url(&spec)?;
            SqlStore::connect(&DIALECT, &url, SqlSettings::from_spec(&spec))
                .await
                .map(sql::boxed)
        }
        .boxed()
    },
};

const CONNECTION_STRING: &str = "connectionString";

static DIALECT: Dialect = Dialect {
    name: "sqlite",
    now_ms: "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    create: |table| {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (id TEXT NOT NULL PRIMARY KEY, value BLOB NOT NULL, \
                 etag INTEGER NOT NULL, expires_at INTEGER)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {}_expires_at ON {table} (expires_at)",
                table.replace('.', "_")
            ),
        ]
    },
    upsert_clause: "ON CONFLICT (id) DO UPDATE SET value = excluded.value, etag = excluded.etag, \
                    expires_at = excluded.expires_at",
    lock_clause: "",
    numbered_params: false,
    max_connections: 1,
    max_key_chars: None,
};

fn validate(spec: &ComponentSpec) -> Vec<MetadataError> {
    let mut errors = Vec::new();
    require(spec, CONNECTION_STRING, &mut errors);
    sql::validate_settings(spec, &mut errors);
    super::check_key_prefix(spec, &mut errors);
    errors
}

/// A `sqlite:` URL that creates the file (and its directory) if missing.
fn url(spec: &ComponentSpec) -> Result<String, BuildError> {
    let target = spec.meta(CONNECTION_STRING).unwrap_or_default().trim();
    if target.starts_with("sqlite:") {
        return Ok(target.to_owned());
    }
    let path = std::path::Path::new(target);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| BuildError(format!("sqlite: cannot create directory {}: {e}", dir.display())))?;
    }
    Ok(format!("sqlite://{target}?mode=rwc"))
}
