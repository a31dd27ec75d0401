//! What the SQL-backed components (state, lock, sequencer) share: the three
//! backends reached through sqlx's Any driver, their connection string
//! forms, statement building, table creation and error mapping.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Connection, SqlSafeStr, SqlStr};

use super::meta;
use super::{BuildError, ComponentError, url_encode};

/// The connection keys, a section of every SQL component's metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqlConnection {
    /// How to reach the database: a file path or `sqlite:` URL (SQLite), a
    /// `postgres://` URL or key=value DSN (PostgreSQL), a `mysql://` URL or
    /// Go-driver DSN (MySQL).
    #[serde(deserialize_with = "meta::non_empty")]
    pub connection_string: String,
    /// The table to use, created if missing; each component type has its
    /// own default.
    #[serde(default)]
    pub table_name: Option<TableName>,
}

impl meta::Section for SqlConnection {}

impl SqlConnection {
    /// The `tableName`, or `default`.
    pub fn table<'a>(&'a self, default: &'a str) -> &'a str {
        self.table_name.as_ref().map_or(default, |t| t.0.as_str())
    }
}

/// A table name: a plain SQL identifier, optionally qualified once. Table
/// names are pasted into statements, so nothing else may pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableName(String);

impl<'de> serde::Deserialize<'de> for TableName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<TableName, D::Error> {
        let table = String::deserialize(deserializer)?;
        if !is_identifier(&table) {
            return Err(serde::de::Error::custom(format!(
                "'{table}' is not a table name: use letters, digits and _ (optionally schema.table)"
            )));
        }
        Ok(TableName(table))
    }
}

impl TableName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One SQL backend.
pub struct Backend {
    /// The component type, for messages.
    pub name: &'static str,
    /// An SQL expression for the current time in epoch milliseconds, on
    /// the database's clock (so sidecars with skewed clocks agree).
    pub now_ms: &'static str,
    /// `$1, $2, ...` placeholders instead of `?`.
    numbered_params: bool,
    /// Connections in the pool.
    max_connections: u32,
    url: fn(&str) -> Result<String, String>,
}

/// One connection: SQLite has one writer at a time anyway, and a single
/// connection makes every check-then-write atomic.
pub static SQLITE: Backend = Backend {
    name: "sqlite",
    now_ms: "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    numbered_params: false,
    max_connections: 1,
    url: sqlite_url,
};

pub static POSTGRES: Backend = Backend {
    name: "postgresql",
    now_ms: "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
    numbered_params: true,
    max_connections: 10,
    url: postgres_url,
};

pub static MYSQL: Backend = Backend {
    name: "mysql",
    now_ms: "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
    numbered_params: false,
    max_connections: 10,
    url: mysql_url,
};

impl Backend {
    /// A statement: `?` placeholders renumbered where the backend wants
    /// `$n`. The only text ever pasted into these statements is a table
    /// name that [`TableName`] allowed: the audit `AssertSqlSafe` asks for.
    pub fn statement(&self, sql: String) -> SqlStr {
        let sql = if self.numbered_params { number_params(&sql) } else { sql };
        AssertSqlSafe(sql).into_sql_str()
    }

    /// Connects with the component's `connectionString`: the health
    /// check's own connection first, then the pool.
    pub async fn connect(&'static self, connection: &SqlConnection) -> Result<Connections, BuildError> {
        let url = url(self, connection).map_err(BuildError)?;
        let cannot = |e: sqlx::Error| BuildError(format!("{} cannot connect: {e}", self.name));
        sqlx::any::install_default_drivers();
        // One attempt, which fails at once while the database is down (the
        // pool would retry a refused connection until its acquire timeout):
        // the supervisor probes again at its own short interval.
        let health = AnyConnection::connect(&url).await.map_err(cannot)?;
        let pool = AnyPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // An idle connection is not pinged before use: when the database
            // dies, the next call on it fails at once with a connection
            // error, which restarts the component and answers the calls
            // still waiting, instead of each call re-dialling a dead server
            // until the acquire timeout. A connection the server closed
            // while idle costs one failed call and a rebuild.
            .test_before_acquire(false)
            .connect(&url)
            .await
            .map_err(cannot)?;
        Ok(Connections {
            pool,
            health: HealthCheck {
                backend: self,
                connection: tokio::sync::Mutex::new(health),
            },
        })
    }

    /// Runs `CREATE ... IF NOT EXISTS` statements.
    pub async fn create(&self, pool: &AnyPool, ddl: Vec<String>, table: &str) -> Result<(), BuildError> {
        for statement in ddl {
            match sqlx::query(AssertSqlSafe(statement)).execute(pool).await {
                Ok(_) => {}
                // Sidecars starting together race to create the table; in
                // PostgreSQL `IF NOT EXISTS` does not stop the loser from
                // failing (42P07, or 23505 on the catalog). The table is there.
                Err(sqlx::Error::Database(db)) if matches!(db.code().as_deref(), Some("42P07" | "23505")) => {}
                Err(e) => return Err(BuildError(format!("{} cannot create table {table}: {e}", self.name))),
            }
        }
        Ok(())
    }

    /// Maps a database error: lost connections restart the component, lost
    /// races are conflicts the caller may retry.
    pub fn error(&self, e: sqlx::Error) -> ComponentError {
        let store = self.name;
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => ComponentError::Fatal(format!("{store} connection failed: {e}")),
            sqlx::Error::Database(db) => {
                // Serialization failure, deadlock (PostgreSQL); deadlock,
                // lock wait timeout (MySQL): another transaction won.
                let code = db.code().unwrap_or_default();
                // The server closing the session: a connection exception
                // (class 08), PostgreSQL terminating it (57P01 shutdown or
                // postmaster exit, 57P02 crash of another backend, 57P03
                // not accepting connections), MySQL shutting down (1053).
                // The first call to see it restarts the component, rather
                // than every call failing one by one until the health check.
                if code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "1053") {
                    return ComponentError::Fatal(format!("{store} connection failed: {e}"));
                }
                if matches!(code.as_ref(), "40001" | "40P01" | "1213" | "1205") || db.is_unique_violation() {
                    ComponentError::Conflict(format!("{store}: a concurrent write won, retry: {e}"))
                } else {
                    ComponentError::Internal(format!("{store}: {e}"))
                }
            }
            _ => ComponentError::Internal(format!("{store}: {e}")),
        }
    }
}

/// What a SQL component connects: the pool its calls share, and its health
/// check.
pub struct Connections {
    pub pool: AnyPool,
    pub health: HealthCheck,
}

/// `SELECT 1`, the health check of every SQL component, on a connection of
/// its own: queued behind the calls in the pool, it would time out when
/// the component is busiest (a 50,000-item write holding SQLite's one
/// connection for 4 s got a healthy store restarted), and it does not wait
/// out the pool's timeouts when the database is gone.
pub struct HealthCheck {
    backend: &'static Backend,
    connection: tokio::sync::Mutex<AnyConnection>,
}

impl HealthCheck {
    pub async fn ping(&self) -> Result<(), ComponentError> {
        let mut connection = self.connection.lock().await;
        sqlx::query("SELECT 1")
            .execute(&mut *connection)
            .await
            .map(drop)
            .map_err(|e| self.backend.error(e))
    }
}

/// The component's `connectionString` as a URL for `backend`.
pub fn url(backend: &Backend, connection: &SqlConnection) -> Result<String, String> {
    (backend.url)(connection.connection_string.trim()).map_err(|e| format!("{}: connectionString: {e}", backend.name))
}

/// A plain SQL identifier, optionally qualified once: table names are
/// pasted into statements, so nothing else may pass.
fn is_identifier(name: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| part(p))
}

/// Rewrites `?` placeholders as `$1, $2, ...` (no statement here has a `?`
/// inside a literal).
fn number_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// A file path (created with its directory), or a `sqlite:` URL.
fn sqlite_url(target: &str) -> Result<String, String> {
    if target.starts_with("sqlite:") {
        return Ok(target.to_owned());
    }
    let path = std::path::Path::new(target);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    Ok(format!("sqlite://{target}?mode=rwc"))
}

/// A `postgres://` URL, or a key=value DSN (`host=... user=... dbname=...`).
fn postgres_url(dsn: &str) -> Result<String, String> {
    if dsn.contains("://") {
        return Ok(dsn.to_owned());
    }
    let mut host = "localhost".to_owned();
    let mut port = "5432".to_owned();
    let (mut user, mut password, mut database) = (String::new(), String::new(), String::new());
    let mut params = Vec::new();
    for pair in dsn.split_whitespace() {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("'{pair}' is not key=value"));
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

/// A `mysql://` URL, or Dapr's Go-driver DSN
/// `[user[:password]@][tcp(host:port)]/dbname[?params]`.
fn mysql_url(dsn: &str) -> Result<String, String> {
    if dsn.contains("://") {
        return Ok(dsn.to_owned());
    }
    let (auth, rest) = match dsn.rsplit_once('@') {
        Some((auth, rest)) => (Some(auth), rest),
        None => (None, dsn),
    };
    let (address, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("'{dsn}' has no /database"))?;
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
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(number_params("a = ? AND b = ?"), "a = $1 AND b = $2");
    }

    #[test]
    fn only_plain_identifiers_are_table_names() {
        for ok in ["state", "layotto_state", "public.state", "_t1"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "1state", "state; DROP TABLE x", "a.b.c", "st-ate", "\"x\""] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn key_value_dsns_become_postgres_urls() {
        assert_eq!(
            postgres_url("host=db port=5433 user=app password=p@ss dbname=orders sslmode=disable").expect("url"),
            "postgres://app:p%40ss@db:5433/orders?sslmode=disable"
        );
        assert_eq!(postgres_url("postgres://u@h/d").expect("url"), "postgres://u@h/d");
        assert!(postgres_url("host").is_err());
    }

    #[test]
    fn go_driver_dsns_become_mysql_urls() {
        assert_eq!(
            mysql_url("root:pw@tcp(db:3307)/test?parseTime=true").expect("url"),
            "mysql://root:pw@db:3307/test"
        );
        assert_eq!(
            mysql_url("root@tcp(127.0.0.1:3306)/test").expect("url"),
            "mysql://root@127.0.0.1:3306/test"
        );
        assert_eq!(
            mysql_url("mysql://root@127.0.0.1:3306/test").expect("url"),
            "mysql://root@127.0.0.1:3306/test"
        );
        assert!(mysql_url("nonsense").is_err());
    }
}
