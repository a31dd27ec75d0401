//! `mysql`: state in a MySQL or MariaDB table, created on first start.
//!
//! Metadata: `connectionString` (a `mysql://user:pass@host:3306/db` URL, or
//! Dapr's Go-driver DSN `user:pass@tcp(host:3306)/db`; required),
//! `tableName` (default `state`), `cleanupIntervalInSeconds` (default 3600),
//! `keyPrefix`. Keys are case-sensitive (binary collation) and at most 512
//! characters. Row locks make etag checks hold across sidecars.

use futures::FutureExt;

use super::StateStore;
use super::sql::{self, Dialect, SqlSettings, SqlStore};
use crate::components::{BuildError, ComponentSpec, MetadataError, TypeEntry, require, url_encode};

pub const TYPE: TypeEntry<dyn StateStore> = TypeEntry {
    name: "mysql",
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
    name: "mysql",
    now_ms: "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
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
    numbered_params: false,
    max_connections: 10,
    max_key_chars: Some(512),
};

fn validate(spec: &ComponentSpec) -> Vec<MetadataError> {
    let mut errors = Vec::new();
    require(spec, CONNECTION_STRING, &mut errors);
    sql::validate_settings(spec, &mut errors);
    super::check_key_prefix(spec, &mut errors);
    errors
}

/// A `mysql://` URL from either connection string form.
fn url(spec: &ComponentSpec) -> Result<String, BuildError> {
    let dsn = spec.meta(CONNECTION_STRING).unwrap_or_default().trim();
    if dsn.contains("://") {
        return Ok(dsn.to_owned());
    }
    // Go driver form: [user[:password]@][tcp(host:port)]/dbname[?params]
    let (auth, rest) = match dsn.rsplit_once('@') {
        Some((auth, rest)) => (Some(auth), rest),
        None => (None, dsn),
    };
    let (address, path) = rest
        .split_once('/')
        .ok_or_else(|| BuildError(format!("mysql: connectionString: '{dsn}' has no /database")))?;
    let host = address
        .strip_prefix("tcp(")
        .and_then(|a| a.strip_suffix(')'))
        .unwrap_or(address);
    let host = if host.is_empty() { "127.0.0.1:3306" } else { host };
    let auth = match auth.map(|a| a.split_once(':').unwrap_or((a, ""))) {
        None => String::new(),
        Some((user, "")) => format!("{}@", url_encode(user)),
        Some((user, password)) => format!("{}:{}@", url_encode(user), url_encode(password)),
    };
    // Go-driver parameters (parseTime, ...) mean nothing to this client.
    let database = path.split('?').next().unwrap_or_default();
    Ok(format!("mysql://{auth}{host}/{database}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_driver_dsns_become_urls() {
        let spec = |dsn: &str| ComponentSpec::new("s", "mysql").with_metadata(CONNECTION_STRING, dsn);
        assert_eq!(
            url(&spec("root:pw@tcp(db:3307)/test?parseTime=true")).expect("url"),
            "mysql://root:pw@db:3307/test"
        );
        assert_eq!(
            url(&spec("root@tcp(127.0.0.1:3306)/test")).expect("url"),
            "mysql://root@127.0.0.1:3306/test"
        );
        assert_eq!(
            url(&spec("mysql://root@127.0.0.1:3306/test")).expect("url"),
            "mysql://root@127.0.0.1:3306/test"
        );
        assert!(url(&spec("nonsense")).is_err());
    }
}
