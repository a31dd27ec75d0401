//! Connecting to Redis, shared by every Redis-backed component: the
//! connection keys of their metadata ([`RedisConnection`], spelled as in
//! Dapr's Redis components), the client, and error mapping.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::meta::{self, Seconds};
use super::{BuildError, ComponentError, url_encode};

/// The connection keys, a section of every Redis component's metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisConnection {
    /// `host:port` of the server.
    #[serde(deserialize_with = "meta::non_empty")]
    pub redis_host: String,
    /// ACL user; none by default.
    #[serde(default)]
    pub redis_username: String,
    /// Password; none by default.
    #[serde(default)]
    pub redis_password: String,
    /// Database number.
    #[serde(rename = "redisDB", default)]
    pub redis_db: Database,
    /// Connect with TLS (`rediss://`).
    #[serde(rename = "enableTLS", default)]
    pub enable_tls: bool,
    /// How long connecting may take.
    #[serde(default = "default_dial_timeout")]
    pub dial_timeout: Seconds,
    /// A command that takes longer has failed.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Seconds,
}

impl meta::Section for RedisConnection {}

fn default_dial_timeout() -> Seconds {
    Seconds::secs(5)
}

fn default_read_timeout() -> Seconds {
    Seconds::secs(3)
}

/// A Redis database number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Database(pub i64);

impl<'de> serde::Deserialize<'de> for Database {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Database, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.trim()
            .parse()
            .map(Database)
            .map_err(|_| serde::de::Error::custom(format!("'{text}' is not a database number")))
    }
}

impl RedisConnection {
    /// The `redis://` (or `rediss://`) URL the metadata describes.
    pub fn url(&self) -> String {
        let host = self.redis_host.trim();
        let scheme = if self.enable_tls { "rediss" } else { "redis" };
        let (user, password) = (&self.redis_username, &self.redis_password);
        let auth = match (user.is_empty(), password.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!(":{}@", url_encode(password)),
            (false, true) => format!("{}@", url_encode(user)),
            (false, false) => format!("{}:{}@", url_encode(user), url_encode(password)),
        };
        format!("{scheme}://{auth}{host}/{}", self.redis_db.0)
    }

    /// Connects and proves the connection with a `PING`.
    pub async fn connect(&self) -> Result<ConnectionManager, BuildError> {
        let mut conn = self.manager().await?;
        ping(&mut conn).await.map_err(|e| BuildError(e.to_string()))?;
        Ok(conn)
    }

    /// Connects, with the dial and read timeouts of the metadata, without
    /// proving the connection.
    pub async fn manager(&self) -> Result<ConnectionManager, BuildError> {
        let host = &self.redis_host;
        let fail = |e: redis::RedisError| BuildError(format!("redis {host}: {e}"));
        let client = redis::Client::open(self.url()).map_err(fail)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.dial_timeout.into()))
            .set_response_timeout(Some(self.read_timeout.into()))
            // Reconnects are the supervisor's job: fail fast, let it restart.
            .set_number_of_retries(1);
        client.get_connection_manager_with_config(config).await.map_err(fail)
    }
}

/// A `PING`: what the health check of every Redis component does.
pub async fn ping(conn: &mut ConnectionManager) -> Result<(), ComponentError> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(drop)
        .map_err(map_error)
}

/// Maps a Redis error: a lost connection restarts the component.
pub fn map_error(e: redis::RedisError) -> ComponentError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        ComponentError::Fatal(format!("redis connection failed: {e}"))
    } else {
        ComponentError::Internal(format!("redis: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn connection(pairs: &[(&str, &str)]) -> RedisConnection {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        meta::parse_map(&map).expect("parses")
    }

    #[test]
    fn metadata_becomes_a_url() {
        let host = ("redisHost", "localhost:6380");
        assert_eq!(connection(&[host]).url(), "redis://localhost:6380/0");
        let secured = [host, ("redisPassword", "p@ss"), ("redisDB", "2"), ("enableTLS", "true")];
        assert_eq!(connection(&secured).url(), "rediss://:p%40ss@localhost:6380/2");
        let mut with_user = secured.to_vec();
        with_user.push(("redisUsername", "app"));
        assert_eq!(connection(&with_user).url(), "rediss://app:p%40ss@localhost:6380/2");
    }
}
