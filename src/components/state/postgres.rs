//! `postgresql`: state in a PostgreSQL table, created on first start.
//!
//! Metadata: `connectionString` (a `postgres://` URL or a key=value DSN such
//! as `host=localhost user=postgres dbname=test`; required), `tableName`
//! (default `state`), `cleanupIntervalInSeconds` (default 3600),
//! `keyPrefix`. Row locks (`SELECT ... FOR UPDATE`) make etag checks hold
//! across sidecars; expiry uses the server's clock.

use futures::FutureExt;

use super::StateStore;
use super::sql::{self, Dialect, SqlSettings, SqlStore};
use crate::components::{BuildError, ComponentSpec, MetadataError, TypeEntry, require, url_encode};

pub const TYPE: TypeEntry<dyn StateStore> = TypeEntry {
    name: "postgresql",
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
    name: "postgresql",
    now_ms: "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
    create: |table| {
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {table} (id TEXT NOT NULL PRIMARY KEY, value BYTEA NOT NULL, \
                 etag BIGINT NOT NULL, expires_at BIGINT)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {}_expires_at ON {table} (expires_at) WHERE expires_at IS NOT NULL",
                table.replace('.', "_")
            ),
        ]
    },
    upsert_clause: "ON CONFLICT (id) DO UPDATE SET value = excluded.value, etag = excluded.etag, \
                    expires_at = excluded.expires_at",
    lock_clause: " FOR UPDATE",
    numbered_params: true,
    max_connections: 10,
    max_key_chars: None,
};

fn validate(spec: &ComponentSpec) -> Vec<MetadataError> {
    let mut errors = Vec::new();
    require(spec, CONNECTION_STRING, &mut errors);
    sql::validate_settings(spec, &mut errors);
    super::check_key_prefix(spec, &mut errors);
    errors
}

/// A `postgres://` URL from either connection string form.
fn url(spec: &ComponentSpec) -> Result<String, BuildError> {
    let dsn = spec.meta(CONNECTION_STRING).unwrap_or_default().trim();
    if dsn.contains("://") {
        return Ok(dsn.to_owned());
    }
    let mut host = "localhost".to_owned();
    let mut port = "5432".to_owned();
    let (mut user, mut password, mut database) = (String::new(), String::new(), String::new());
    let mut params = Vec::new();
    for pair in dsn.split_whitespace() {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(BuildError(format!(
                "postgresql: connectionString: '{pair}' is not key=value"
            )));
        };
        let v = v.trim_matches('\'').to_owned();
        match k {
            "host" => host = v,
            "port" => port = v,
            "user" => user = v,
            "password" => password = v,
            "dbname" | "database" => database = v,
            other => params.push(format!("{other}={v}")),
        }
    }
    let auth = match (user.is_empty(), password.is_empty()) {
        (true, _) => String::new(),
        (false, true) => format!("{}@", url_encode(&user)),
        (false, false) => format!("{}:{}@", url_encode(&user), url_encode(&password)),
    };
    let query = if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    };
    Ok(format!("postgres://{auth}{host}:{port}/{database}{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_dsns_become_urls() {
        let spec = ComponentSpec::new("s", "postgresql").with_metadata(
            CONNECTION_STRING,
            "host=db port=5433 user=app password=p@ss dbname=orders sslmode=disable",
        );
        assert_eq!(
            url(&spec).expect("url"),
            "postgres://app:p%40ss@db:5433/orders?sslmode=disable"
        );
        let spec = ComponentSpec::new("s", "postgresql").with_metadata(CONNECTION_STRING, "postgres://u@h/d");
        assert_eq!(url(&spec).expect("url"), "postgres://u@h/d");
    }
}
