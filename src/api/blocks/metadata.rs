//! The Metadata block: what the sidecar says about itself (app id,
//! version, components named as Dapr names them, attributes an app set),
//! and the request to shut down gracefully, for every front end.

use crate::api::ApiContext;
use crate::components::Kind;

/// One configured component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentInfo {
    pub name: String,
    /// As Dapr names types: `state.redis`, `pubsub.rabbitmq`, ...
    pub dapr_type: String,
    pub version: String,
    pub capabilities: Vec<String>,
}

/// The sidecar's description of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub app_id: String,
    pub runtime_version: String,
    pub components: Vec<ComponentInfo>,
    pub extended: std::collections::BTreeMap<String, String>,
}

/// Dapr's name for a component type: `state.redis`, `pubsub.rabbitmq`,
/// `secretstores.local.file`, ...
pub fn dapr_type(kind: Kind, type_name: &str) -> String {
    let prefix = match kind {
        Kind::State => "state",
        Kind::PubSubs => "pubsub",
        Kind::Lock => "lock",
        Kind::SecretStore => "secretstores",
        Kind::ConfigStore => "configuration",
        Kind::Bindings => "bindings",
        other => other.as_str(),
    };
    let type_name = match (kind, type_name) {
        (Kind::PubSubs, "nats") => "jetstream",
        (Kind::PubSubs, "mqtt") => "mqtt3",
        (_, other) => other,
    };
    format!("{prefix}.{type_name}")
}

fn capabilities(kind: Kind) -> Vec<String> {
    match kind {
        Kind::State => vec!["ETAG".into(), "TRANSACTIONAL".into(), "TTL".into()],
        _ => Vec::new(),
    }
}

pub fn get(ctx: &ApiContext) -> Metadata {
    let components = ctx
        .status
        .components()
        .into_iter()
        .map(|(id, _)| ComponentInfo {
            dapr_type: dapr_type(id.kind, &id.type_name),
            capabilities: capabilities(id.kind),
            name: id.name,
            version: "v1".into(),
        })
        .collect();
    Metadata {
        app_id: ctx.app.app_id.clone(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        components,
        extended: ctx.extended_metadata.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    }
}

/// Sets an attribute shown in the metadata from now on.
pub fn set(ctx: &ApiContext, key: String, value: String) {
    ctx.extended_metadata
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, value);
}

/// Asks the runtime to shut down gracefully, as SIGTERM does.
pub fn shutdown(ctx: &ApiContext) {
    tracing::info!("Shutdown requested through the API");
    ctx.shutdown_requested.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_types_are_named_as_dapr_names_them() {
        assert_eq!(dapr_type(Kind::State, "redis"), "state.redis");
        assert_eq!(dapr_type(Kind::PubSubs, "rabbitmq"), "pubsub.rabbitmq");
        assert_eq!(dapr_type(Kind::PubSubs, "nats"), "pubsub.jetstream");
        assert_eq!(dapr_type(Kind::SecretStore, "local.file"), "secretstores.local.file");
        assert_eq!(dapr_type(Kind::Lock, "redis"), "lock.redis");
    }
}
