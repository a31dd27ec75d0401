//! Connecting to Redis, shared by every Redis-backed component. Metadata
//! keys follow Dapr's Redis components:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `redisHost` | required | `host:port` |
//! | `redisUsername` | | ACL user |
//! | `redisPassword` | | password |
//! | `redisDB` | `0` | database number |
//! | `enableTLS` | `false` | connect with TLS (`rediss://`) |
//! | `dialTimeout` | `5s` | connection timeout |
//! | `readTimeout` | `3s` | a command that takes longer has failed |

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{BuildError, ComponentError, ComponentSpec, MetadataError, require, url_encode};

pub const REDIS_HOST: &str = "redisHost";
const USERNAME: &str = "redisUsername";
const PASSWORD: &str = "redisPassword";
const DB: &str = "redisDB";
const ENABLE_TLS: &str = "enableTLS";
const DIAL_TIMEOUT: &str = "dialTimeout";
const READ_TIMEOUT: &str = "readTimeout";

/// Checks the connection metadata.
pub fn validate(spec: &ComponentSpec, errors: &mut Vec<MetadataError>) {
    require(spec, REDIS_HOST, errors);
    if let Some(db) = spec.meta(DB)
        && db.trim().parse::<i64>().is_err()
    {
        errors.push(MetadataError::new(DB, format!("'{db}' is not a database number")));
    }
    if let Some(tls) = spec.meta(ENABLE_TLS)
        && tls.parse::<bool>().is_err()
    {
        errors.push(MetadataError::new(ENABLE_TLS, format!("'{tls}' is not true or false")));
    }
    for key in [DIAL_TIMEOUT, READ_TIMEOUT] {
        if let Some(v) = spec.meta(key)
            && humantime::parse_duration(v).is_err()
        {
            errors.push(MetadataError::new(
                key,
                format!("'{v}' is not a duration such as \"5s\""),
            ));
        }
    }
}

/// The `redis://` (or `rediss://`) URL the metadata describes.
pub fn url(spec: &ComponentSpec) -> String {
    let host = spec.meta(REDIS_HOST).unwrap_or("127.0.0.1:6379").trim();
    let scheme = if spec.meta(ENABLE_TLS) == Some("true") {
        "rediss"
    } else {
        "redis"
    };
    let user = spec.meta(USERNAME).unwrap_or_default();
    let password = spec.meta(PASSWORD).unwrap_or_default();
    let auth = match (user.is_empty(), password.is_empty()) {
        (true, true) => String::new(),
        (true, false) => format!(":{}@", url_encode(password)),
        (false, true) => format!("{}@", url_encode(user)),
        (false, false) => format!("{}:{}@", url_encode(user), url_encode(password)),
    };
    let db = spec.meta(DB).map(str::trim).unwrap_or("0");
    format!("{scheme}://{auth}{host}/{db}")
}

fn duration(spec: &ComponentSpec, key: &str, default: Duration) -> Duration {
    spec.meta(key)
        .and_then(|v| humantime::parse_duration(v).ok())
        .unwrap_or(default)
}

/// Connects and proves the connection with a `PING`.
pub async fn connect(spec: &ComponentSpec) -> Result<ConnectionManager, BuildError> {
    let host = spec.meta(REDIS_HOST).unwrap_or_default();
    let fail = |e: redis::RedisError| BuildError(format!("redis {host}: {e}"));
    let client = redis::Client::open(url(spec)).map_err(fail)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(duration(spec, DIAL_TIMEOUT, Duration::from_secs(5))))
        .set_response_timeout(Some(duration(spec, READ_TIMEOUT, Duration::from_secs(3))))
        // Reconnects are the supervisor's job: fail fast, let it restart.
        .set_number_of_retries(1);
    let mut conn = client.get_connection_manager_with_config(config).await.map_err(fail)?;
    ping(&mut conn).await.map_err(|e| BuildError(e.to_string()))?;
    Ok(conn)
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
    use super::*;

    #[test]
    fn metadata_becomes_a_url() {
        let spec = ComponentSpec::new("r", "redis").with_metadata(REDIS_HOST, "localhost:6380");
        assert_eq!(url(&spec), "redis://localhost:6380/0");
        let spec = spec
            .with_metadata(PASSWORD, "p@ss")
            .with_metadata(DB, "2")
            .with_metadata(ENABLE_TLS, "true");
        assert_eq!(url(&spec), "rediss://:p%40ss@localhost:6380/2");
        let spec = spec.with_metadata(USERNAME, "app");
        assert_eq!(url(&spec), "rediss://app:p%40ss@localhost:6380/2");
    }
}
