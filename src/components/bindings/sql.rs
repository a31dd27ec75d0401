//! `postgresql` (also `postgres`) and `mysql`: Dapr's SQL output bindings.
//! `exec` runs the request's `sql` and answers `rows-affected`; `query`
//! answers its rows as JSON (PostgreSQL: an array of arrays, one per row;
//! MySQL: an array of objects by column name, NULL columns left out, and
//! `null` when there is no row, as Dapr's two bindings differ); `close`
//! closes the pool, after which calls are refused. `params` is a JSON
//! array of positional parameters (`$1`... in PostgreSQL, `?` in MySQL).
//! Every answer carries `operation`, `sql`, `start-time`, `end-time` and
//! `duration`.
//!
//! `postgresql` is also an input binding when `channel` is set: it
//! `LISTEN`s on that channel and each `NOTIFY` payload is an event for the
//! app (metadata `channel`).
//!
//! Column values come back as numbers, booleans, strings or bytes (as
//! base64); a column of another type (a timestamp, JSON, a decimal) is to
//! be cast to text in the query.
//!
//! Metadata: [`SqlBindingKeys`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use base64::Engine;
use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Column, Row};

use super::{Binding, BindingCommon, BindingRequest, BindingResponse, Deliveries, Delivery, Message, NoAck, required};
use crate::components::meta::{self, Section};
use crate::components::sql::{Backend, HealthCheck, MYSQL, POSTGRES, SqlConnection};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, MetadataError, TypeEntry};

pub const POSTGRESQL: TypeEntry<dyn Binding> = TypeEntry::of::<PostgresType>();
pub const POSTGRES_ALIAS: TypeEntry<dyn Binding> = TypeEntry::of::<PostgresAliasType>();
pub const MYSQL_TYPE: TypeEntry<dyn Binding> = TypeEntry::of::<MysqlType>();

pub const EXEC: &str = "exec";
pub const QUERY: &str = "query";
pub const CLOSE: &str = "close";

pub struct PostgresType;
pub struct PostgresAliasType;
pub struct MysqlType;

fn build(backend: &'static Backend, keys: SqlBindingKeys) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
    async move {
        let connection = SqlConnection {
            connection_string: keys.connection().to_owned(),
            table_name: None,
        };
        let url = crate::components::sql::url(backend, &connection).map_err(BuildError)?;
        let connections = backend.connect(&connection).await?;
        Ok(Arc::new(SqlBinding {
            backend,
            pool: connections.pool,
            health: connections.health,
            closed: AtomicBool::new(false),
            url,
            channel: keys.channel.filter(|c| !c.is_empty()),
        }) as Arc<dyn Binding>)
    }
    .boxed()
}

impl ComponentType<dyn Binding> for PostgresType {
    const NAME: &'static str = "postgresql";
    type Metadata = (SqlBindingKeys, BindingCommon);

    fn build(
        _ctx: BuildContext,
        (keys, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
        build(&POSTGRES, keys)
    }
}

impl ComponentType<dyn Binding> for PostgresAliasType {
    const NAME: &'static str = "postgres";
    type Metadata = (SqlBindingKeys, BindingCommon);

    fn build(
        _ctx: BuildContext,
        (keys, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
        build(&POSTGRES, keys)
    }
}

impl ComponentType<dyn Binding> for MysqlType {
    const NAME: &'static str = "mysql";
    type Metadata = (SqlBindingKeys, BindingCommon);

    fn build(
        _ctx: BuildContext,
        (keys, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
        build(&MYSQL, keys)
    }
}

/// What the SQL bindings read from their metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqlBindingKeys {
    /// How to reach the database: a URL or DSN, as for the SQL state
    /// stores. PostgreSQL's binding calls it `connectionString`, MySQL's
    /// `url`; either is read.
    #[serde(default)]
    pub connection_string: Option<String>,
    /// `connectionString`'s other name.
    #[serde(default)]
    pub url: Option<String>,
    /// Dapr's query timeout; read, and the pool's own timeouts apply.
    #[serde(default)]
    pub timeout: Option<meta::Seconds>,
    /// PostgreSQL only: the channel to `LISTEN` on, which makes the
    /// component an input binding. Default none.
    #[serde(default)]
    pub channel: Option<String>,
}

impl SqlBindingKeys {
    fn connection(&self) -> &str {
        self.connection_string
            .as_deref()
            .or(self.url.as_deref())
            .unwrap_or_default()
    }
}

impl Section for SqlBindingKeys {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        if self.connection().trim().is_empty() {
            errors.push(MetadataError::new(
                "connectionString",
                "required: the database's URL or DSN (or `url`)",
            ));
        }
    }
}

pub struct SqlBinding {
    backend: &'static Backend,
    pool: AnyPool,
    health: HealthCheck,
    closed: AtomicBool,
    url: String,
    channel: Option<String>,
}

impl SqlBinding {
    /// A failed statement: a lost connection restarts the component.
    fn failed(&self, e: sqlx::Error) -> ComponentError {
        match self.backend.error(e) {
            ComponentError::Fatal(message) => ComponentError::Fatal(message),
            other => ComponentError::Internal(format!("error executing query: {other}")),
        }
    }
}

/// A duration as Go's `Duration.String()` writes it: `1.5ms`, `2s`.
fn go_duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    let (value, unit) = match nanos {
        0..1_000 => return format!("{nanos}ns"),
        1_000..1_000_000 => (nanos as f64 / 1e3, "µs"),
        1_000_000..1_000_000_000 => (nanos as f64 / 1e6, "ms"),
        _ => (nanos as f64 / 1e9, "s"),
    };
    let text = format!("{value:.6}");
    format!("{}{unit}", text.trim_end_matches('0').trim_end_matches('.'))
}

fn rfc3339_nanos(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// A column's value as JSON.
fn value(row: &AnyRow, index: usize) -> Value {
    if let Ok(v) = row.try_get::<Option<i64>, _>(index) {
        return v.map_or(Value::Null, Value::from);
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(index) {
        return v.map_or(Value::Null, Value::from);
    }
    if let Ok(v) = row.try_get::<Option<bool>, _>(index) {
        return v.map_or(Value::Null, Value::from);
    }
    if let Ok(v) = row.try_get::<Option<String>, _>(index) {
        return v.map_or(Value::Null, Value::from);
    }
    if let Ok(v) = row.try_get::<Option<Vec<u8>>, _>(index) {
        return v.map_or(Value::Null, |b| match String::from_utf8(b) {
            Ok(text) => Value::from(text),
            Err(e) => Value::from(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
        });
    }
    Value::Null
}

#[async_trait::async_trait]
impl Component for SqlBinding {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.health.ping().await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl Binding for SqlBinding {
    fn operations(&self) -> Vec<&str> {
        vec![EXEC, QUERY, CLOSE]
    }

    async fn invoke(&self, request: BindingRequest) -> Result<BindingResponse, ComponentError> {
        if request.operation == CLOSE {
            self.closed.store(true, Ordering::Release);
            self.pool.close().await;
            return Ok(BindingResponse::none());
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(ComponentError::InvalidArgument("component is closed".into()));
        }
        let sql = required(&request, "sql")?.to_owned();
        let params: Vec<Value> = match request.metadata.get("params").filter(|p| !p.trim().is_empty()) {
            None => Vec::new(),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                ComponentError::InvalidArgument(format!(
                    "invalid metadata property params: failed to unserialize into an array: {e}"
                ))
            })?,
        };
        let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
        for param in params {
            query = match param {
                Value::Null => query.bind(Option::<String>::None),
                Value::Bool(b) => query.bind(b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => query.bind(i),
                    None => query.bind(n.as_f64().unwrap_or_default()),
                },
                Value::String(s) => query.bind(s),
                other => query.bind(other.to_string()),
            };
        }
        let (started_at, started) = (SystemTime::now(), Instant::now());
        let mut metadata = BTreeMap::from([
            ("operation".to_owned(), request.operation.clone()),
            ("sql".to_owned(), sql),
        ]);
        let data = match request.operation.as_str() {
            EXEC => {
                let done = query.execute(&self.pool).await.map_err(|e| self.failed(e))?;
                metadata.insert("rows-affected".to_owned(), done.rows_affected().to_string());
                None
            }
            QUERY => {
                let rows = query.fetch_all(&self.pool).await.map_err(|e| self.failed(e))?;
                let json = if std::ptr::eq(self.backend, &MYSQL) {
                    if rows.is_empty() {
                        Value::Null
                    } else {
                        Value::Array(
                            rows.iter()
                                .map(|row| {
                                    let object: serde_json::Map<String, Value> = row
                                        .columns()
                                        .iter()
                                        .enumerate()
                                        .map(|(i, c)| (c.name().to_owned(), value(row, i)))
                                        .filter(|(_, v)| !v.is_null())
                                        .collect();
                                    Value::Object(object)
                                })
                                .collect(),
                        )
                    }
                } else {
                    Value::Array(
                        rows.iter()
                            .map(|row| Value::Array((0..row.len()).map(|i| value(row, i)).collect()))
                            .collect(),
                    )
                };
                Some(json.to_string().into_bytes())
            }
            other => {
                return Err(ComponentError::InvalidArgument(format!(
                    "invalid operation type: {other}. Expected exec, query, or close"
                )));
            }
        };
        metadata.insert("start-time".to_owned(), rfc3339_nanos(started_at));
        metadata.insert("end-time".to_owned(), rfc3339_nanos(SystemTime::now()));
        metadata.insert("duration".to_owned(), go_duration(started.elapsed()));
        Ok(BindingResponse { data, metadata })
    }

    fn is_input(&self) -> bool {
        self.channel.is_some() && std::ptr::eq(self.backend, &POSTGRES)
    }

    async fn read(&self) -> Result<Deliveries, ComponentError> {
        let (Some(channel), true) = (&self.channel, std::ptr::eq(self.backend, &POSTGRES)) else {
            return Err(ComponentError::Unsupported("no channel to LISTEN on".into()));
        };
        let mut listener = sqlx::postgres::PgListener::connect(&self.url)
            .await
            .map_err(|e| ComponentError::Fatal(format!("postgresql LISTEN connection: {e}")))?;
        listener
            .listen(channel)
            .await
            .map_err(|e| ComponentError::Fatal(format!("postgresql LISTEN {channel}: {e}")))?;
        let channel = channel.clone();
        Ok(listener
            .into_stream()
            .map(move |notification| {
                let notification =
                    notification.map_err(|e| ComponentError::Fatal(format!("postgresql LISTEN {channel}: {e}")))?;
                Ok(Delivery {
                    message: Message {
                        topic: channel.clone(),
                        data: notification.payload().as_bytes().to_vec(),
                        metadata: [("channel".to_owned(), notification.channel().to_owned())].into(),
                    },
                    acker: Box::new(NoAck),
                })
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(go_duration(Duration::from_nanos(500)), "500ns");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
    }
}
