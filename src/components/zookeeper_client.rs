//! Connecting to ZooKeeper, shared by the zookeeper component types: the
//! connection keys of their metadata ([`ZookeeperConnection`], spelled as
//! Layotto's zookeeper components and Dapr's zookeeper state store spell
//! them), one session per component, node names for keys, and error
//! mapping.
//!
//! Every component holds one ZooKeeper session. Its ephemeral nodes (the
//! locks) live as long as the session: when the sidecar dies, ZooKeeper
//! removes them once the session timeout has passed. A session that
//! expires (a partition longer than the timeout) cannot be revived; its
//! calls fail as [`ComponentError::Fatal`] and the supervisor builds the
//! component again with a new session.
//!
//! Keys become node names under `keyPrefixPath`: every byte outside
//! `A-Z a-z 0-9 - _ . ~ |` is percent-encoded ([`node_name`]), so a key may
//! hold `/`, `%` or any Unicode, and the names `.`, `..` and a top-level
//! `zookeeper` (ZooKeeper's own) are escaped as well.

use std::time::Duration;

use ::zookeeper_client as zk;

use super::meta::{self, Seconds};
use super::{BuildError, ComponentError, MetadataError};

/// ZooKeeper's client port, for a server named without one.
pub const DEFAULT_PORT: u16 = 2181;

/// The connection keys, a section of every zookeeper component's metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZookeeperConnection {
    /// The servers, `host[:port]` (port 2181 when left out), separated by
    /// `;` as in Layotto or `,` as in ZooKeeper's connect strings.
    #[serde(default)]
    pub zookeeper_hosts: Option<String>,
    /// Dapr's name for `zookeeperHosts` (its zookeeper state store's key);
    /// give one or the other.
    #[serde(default)]
    pub servers: Option<String>,
    /// Credentials for ZooKeeper's `digest` authentication, written
    /// `user:password`; none by default. The session authenticates with
    /// them, so paths whose ACLs admit only that user can be used; the
    /// nodes the components create are open to anyone, as Layotto's are.
    #[serde(default)]
    pub zookeeper_password: String,
    /// The session timeout to ask the server for: seconds (`"5"`, as
    /// Layotto writes it) or a duration (`"3s"`, as Dapr writes it);
    /// default 5 s. The server bounds it (by default between 2 and 20
    /// ticks). Locks of a sidecar that dies vanish this long after; it is
    /// also how long connecting may take.
    #[serde(default = "default_session_timeout", alias = "SessionTimeout")]
    pub session_timeout: Seconds,
    /// Layotto's switch for its ZooKeeper client's logs: accepted and
    /// ignored (this client logs through the sidecar's own logging, under
    /// the component's module).
    #[serde(default, alias = "LogInfo")]
    pub log_info: Option<bool>,
    /// The node under which every key's node lives (created, with its
    /// parents, when missing). Default: `/` for locks and sequencers, as
    /// Layotto (which writes `/<key>`); `/layotto/state` for state. A
    /// leading `/` is added when missing; a trailing one is dropped.
    #[serde(default)]
    pub key_prefix_path: Option<String>,
}

fn default_session_timeout() -> Seconds {
    Seconds::secs(5)
}

impl meta::Section for ZookeeperConnection {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        match (&self.zookeeper_hosts, &self.servers) {
            (Some(_), Some(_)) => errors.push(MetadataError::new(
                "servers",
                "names the servers again: give zookeeperHosts or servers, not both",
            )),
            (None, None) => errors.push(MetadataError::new("zookeeperHosts", "is required")),
            _ => {}
        }
        if self.hosts().is_empty() {
            let key = if self.servers.is_some() {
                "servers"
            } else {
                "zookeeperHosts"
            };
            if self.zookeeper_hosts.is_some() || self.servers.is_some() {
                errors.push(MetadataError::new(key, "names no server"));
            }
        }
        for host in self.hosts() {
            if let Err(message) = check_host(&host) {
                let key = if self.servers.is_some() {
                    "servers"
                } else {
                    "zookeeperHosts"
                };
                errors.push(MetadataError::new(key, message));
            }
        }
        let password = self.zookeeper_password.trim();
        if !password.is_empty() && !password.contains(':') {
            errors.push(MetadataError::new(
                "zookeeperPassword",
                "is not 'user:password', the form of ZooKeeper's digest credentials",
            ));
        }
        if self.session_timeout.0.is_zero() {
            errors.push(MetadataError::new("sessionTimeout", "must be more than zero"));
        }
        if let Some(path) = &self.key_prefix_path
            && let Err(message) = check_base(&normalize_base(path))
        {
            errors.push(MetadataError::new("keyPrefixPath", message));
        }
    }
}

/// Checks one `host[:port]`.
fn check_host(host: &str) -> Result<(), String> {
    let Some((name, port)) = host.rsplit_once(':') else {
        return Err(format!("'{host}' is not host[:port]"));
    };
    if name.is_empty() {
        return Err(format!("'{host}' names no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("'{port}' in '{host}' is not a port")),
    }
}

/// A base path as ZooKeeper writes paths: a leading `/`, no trailing one
/// (but `/` itself).
fn normalize_base(path: &str) -> String {
    let trimmed = path.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_owned();
    }
    if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// Refuses a base path ZooKeeper would refuse.
fn check_base(base: &str) -> Result<(), String> {
    if base == "/" {
        return Ok(());
    }
    for part in base.split('/').skip(1) {
        if part.is_empty() {
            return Err(format!("'{base}' has an empty path element"));
        }
        if part == "." || part == ".." {
            return Err(format!("'{base}' has a relative path element"));
        }
        if part.chars().any(|c| c.is_control()) {
            return Err(format!("'{base}' has a control character"));
        }
    }
    Ok(())
}

impl ZookeeperConnection {
    /// Every server named, as `host:port`.
    pub fn hosts(&self) -> Vec<String> {
        let list = self
            .zookeeper_hosts
            .as_deref()
            .or(self.servers.as_deref())
            .unwrap_or("");
        list.split([';', ','])
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| {
                // `host`, `1.2.3.4` or `[::1]`: no port yet.
                let bracketed_without_port = h.starts_with('[') && h.ends_with(']');
                if bracketed_without_port || (!h.contains(':')) {
                    format!("{h}:{DEFAULT_PORT}")
                } else {
                    h.to_owned()
                }
            })
            .collect()
    }

    /// The base node of the component's keys; `default` when none is set.
    pub fn base_or(&self, default: &str) -> String {
        normalize_base(self.key_prefix_path.as_deref().unwrap_or(default))
    }

    /// Opens a session (to any of the servers), authenticates when
    /// credentials are set, proves it with a read, and creates `base` (and
    /// its parents) when missing.
    pub async fn connect(&self, base: &str) -> Result<Zookeeper, BuildError> {
        let hosts = self.hosts().join(",");
        let fail = |e: String| BuildError(format!("zookeeper {hosts}: {e}"));
        let session: Duration = self.session_timeout.into();
        // At least a second to connect, however short the session asked.
        let patience = session.max(Duration::from_secs(1));
        let mut connector = zk::Client::connector()
            .with_session_timeout(session)
            .with_fail_eagerly();
        let password = self.zookeeper_password.trim();
        if !password.is_empty() {
            connector = connector.with_auth("digest", password.as_bytes());
        }
        let client = tokio::time::timeout(patience, connector.connect(&hosts))
            .await
            .map_err(|_| fail(format!("no session within {patience:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        let zookeeper = Zookeeper {
            client,
            base: base.to_owned(),
        };
        tokio::time::timeout(patience, zookeeper.ping())
            .await
            .map_err(|_| fail(format!("no answer within {patience:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        if base != "/" {
            let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            tokio::time::timeout(patience, zookeeper.client.mkdir(base, &options))
                .await
                .map_err(|_| fail(format!("creating {base}: no answer within {patience:?}")))?
                .map_err(|e| fail(format!("creating {base}: {e}")))?;
        }
        Ok(zookeeper)
    }
}

/// One component's ZooKeeper session and the base node of its keys.
#[derive(Clone)]
pub struct Zookeeper {
    pub client: zk::Client,
    base: String,
}

impl Zookeeper {
    /// A cheap read of the root: the health check of every zookeeper
    /// component.
    pub async fn ping(&self) -> Result<(), ComponentError> {
        self.client.check_stat("/").await.map(drop).map_err(map_error)
    }

    /// The base node of the component's keys.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The node of `key`: `<base>/<escaped key>`.
    pub fn path(&self, key: &str) -> String {
        let name = node_name(key, self.base == "/");
        if self.base == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.base)
        }
    }
}

/// Whether `b` stands for itself in a node name.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'|')
}

/// `key` as a node name: percent-encoded outside `A-Z a-z 0-9 - _ . ~ |`,
/// and never `.`, `..` (relative paths) or, at the root, `zookeeper`
/// (ZooKeeper's own node).
pub fn node_name(key: &str, at_root: bool) -> String {
    let mut name = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if plain(b) {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    if name == "." || name == ".." {
        return name.replace('.', "%2E");
    }
    if at_root && name == "zookeeper" {
        return "%7Aookeeper".to_owned();
    }
    name
}

/// The key a node name stands for (the inverse of [`node_name`]); `None`
/// for a name no key maps to.
pub fn key_of(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                key.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if plain(b) => {
                key.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(key).ok()
}

/// Maps a ZooKeeper error: a session that ended restarts the component.
pub fn map_error(e: zk::Error) -> ComponentError {
    use zk::Error as E;
    match e {
        E::SessionExpired | E::ClientClosed | E::AuthFailed | E::NoHosts | E::SessionMoved => {
            ComponentError::Fatal(format!("zookeeper session ended: {e}"))
        }
        E::ConnectionLoss | E::Timeout | E::Throttled | E::NotReadOnly => {
            ComponentError::Unavailable(format!("zookeeper: {e}"))
        }
        E::NoAuth => ComponentError::Internal(format!(
            "zookeeper: {e}: the node's ACL refuses this session (see zookeeperPassword)"
        )),
        other => ComponentError::Internal(format!("zookeeper: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<ZookeeperConnection, Vec<MetadataError>> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        meta::parse_map(&map)
    }

    #[test]
    fn zookeeper_hosts_read_as_layotto_and_dapr_write_them() {
        let c = parse(&[("zookeeperHosts", "a;b:2182, c")]).expect("parses");
        assert_eq!(c.hosts(), ["a:2181", "b:2182", "c:2181"]);
        let c = parse(&[("servers", "127.0.0.1:2181,[::1]")]).expect("parses");
        assert_eq!(c.hosts(), ["127.0.0.1:2181", "[::1]:2181"]);
        assert_eq!(c.base_or("/"), "/");
        assert_eq!(c.session_timeout, Seconds::secs(5));
    }

    #[test]
    fn zookeeper_session_timeouts_take_seconds_or_durations_under_both_spellings() {
        let c = parse(&[("zookeeperHosts", "a"), ("sessionTimeout", "3s"), ("logInfo", "true")]).expect("parses");
        assert_eq!(c.session_timeout, Seconds::secs(3));
        let c = parse(&[("zookeeperHosts", "a"), ("SessionTimeout", "7"), ("LogInfo", "false")]).expect("parses");
        assert_eq!(c.session_timeout, Seconds::secs(7));
    }

    #[test]
    fn zookeeper_bad_values_name_their_key() {
        let keys = |pairs: &[(&str, &str)]| -> Vec<String> {
            parse(pairs)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.key)
                .collect()
        };
        assert_eq!(keys(&[]), ["zookeeperHosts"]);
        assert_eq!(keys(&[("zookeeperHosts", " ; ")]), ["zookeeperHosts"]);
        assert_eq!(keys(&[("servers", "a:port")]), ["servers"]);
        assert_eq!(keys(&[("zookeeperHosts", "a"), ("servers", "b")]), ["servers"]);
        assert_eq!(
            keys(&[("zookeeperHosts", "a"), ("sessionTimeout", "soon")]),
            ["sessionTimeout"]
        );
        assert_eq!(
            keys(&[("zookeeperHosts", "a"), ("sessionTimeout", "0")]),
            ["sessionTimeout"]
        );
        assert_eq!(keys(&[("zookeeperHosts", "a"), ("logInfo", "maybe")]), ["logInfo"]);
        assert_eq!(
            keys(&[("zookeeperHosts", "a"), ("zookeeperPassword", "secret")]),
            ["zookeeperPassword"]
        );
        assert_eq!(
            keys(&[("zookeeperHosts", "a"), ("keyPrefixPath", "/a//b")]),
            ["keyPrefixPath"]
        );
        assert_eq!(
            keys(&[("zookeeperHosts", "a"), ("keyPrefixPath", "a/../b")]),
            ["keyPrefixPath"]
        );
        assert!(keys(&[("zookeeperHosts", "a"), ("zookeeperPassword", "user:secret")]).is_empty());
    }

    #[test]
    fn zookeeper_base_paths_are_normalized() {
        let c = parse(&[("zookeeperHosts", "a"), ("keyPrefixPath", "layotto/lock/")]).expect("parses");
        assert_eq!(c.base_or("/"), "/layotto/lock");
        let c = parse(&[("zookeeperHosts", "a"), ("keyPrefixPath", "/")]).expect("parses");
        assert_eq!(c.base_or("/layotto/state"), "/");
    }

    #[test]
    fn zookeeper_node_names_escape_what_paths_cannot_hold() {
        for key in [
            "a/b",
            "..",
            ".",
            "ключ-🔑",
            "100%",
            "lock|||app||res",
            "zookeeper",
            "a b\n",
        ] {
            let name = node_name(key, true);
            assert!(!name.contains('/') && name != "." && name != ".." && name != "zookeeper");
            assert!(name.is_ascii(), "{name}");
            assert_eq!(key_of(&name).as_deref(), Some(key), "{name}");
        }
        assert_eq!(node_name("lock|||app||res", true), "lock|||app||res");
        assert_eq!(node_name("zookeeper", false), "zookeeper");
        assert_eq!(key_of("%G0"), None);
        assert_eq!(key_of("%4"), None);
    }
}
