//! The `name_resolution` building block: where the sidecars of an app id
//! listen for service invocation (their internal listener, `host:port`).
//!
//! Registries (`sqlite`, `redis`, `postgresql`) are shared by many
//! sidecars: each registers its app id and internal address when it is
//! built, renews the entry in a linked background task (a heartbeat), and
//! removes it when it closes; an entry not renewed within its TTL no longer
//! resolves, so a sidecar that dies without deregistering drops out. Static
//! lists (`static`) and DNS (`dns`, `kubernetes`) register nothing.
//!
//! Dapr configures this as `spec.nameResolution` of a Configuration, with
//! types named `nameresolution.<type>`.

pub mod dns;
pub mod postgres;
pub mod redis;
pub mod sql;
pub mod sqlite;
pub mod static_list;

use super::{Component, ComponentError, ComponentSpec};

/// Resolves app ids to the internal addresses of their sidecars.
#[async_trait::async_trait]
pub trait NameResolver: Component {
    /// Every live address (`host:port`) of `app_id`'s sidecars; empty when
    /// none is known.
    async fn resolve(&self, app_id: &str, namespace: &str) -> Result<Vec<String>, ComponentError>;
}

/// What this sidecar registers, when it registers: its app id and the
/// address of its internal listener, from the component's spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub app_id: String,
    pub address: String,
    pub namespace: String,
}

impl Registration {
    /// `None` when the sidecar has no app id or no internal listener:
    /// nothing could reach it, so it only resolves.
    pub fn of(spec: &ComponentSpec) -> Option<Registration> {
        let address = spec.advertise.clone()?;
        if spec.app_id.is_empty() {
            return None;
        }
        Some(Registration {
            app_id: spec.app_id.clone(),
            address,
            namespace: namespace(),
        })
    }
}

/// The namespace of this sidecar (`NAMESPACE`), or `default` as in Dapr.
pub fn namespace() -> String {
    std::env::var("NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// `host:port`, with an IPv6 host in brackets.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
