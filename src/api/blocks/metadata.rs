//! The Metadata block: what the sidecar says about itself (app id,
//! version, components named as Dapr names them, attributes an app set),
//! and the request to shut down gracefully, for every front end.

use crate::api::ApiContext;
use crate::components::Kind;
use crate::config::CallbackProtocol;

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
    pub enabled_features: Vec<String>,
    pub subscriptions: Vec<SubscriptionInfo>,
    /// How the sidecar reaches the app; `None` without an app channel.
    pub app_connection: Option<AppConnection>,
}

/// How a subscription came to be, as Dapr names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionType {
    Declarative,
    Programmatic,
    Streaming,
}

impl SubscriptionType {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionType::Declarative => "DECLARATIVE",
            SubscriptionType::Programmatic => "PROGRAMMATIC",
            SubscriptionType::Streaming => "STREAMING",
        }
    }
}

/// One subscription delivered to the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionInfo {
    pub pubsub_name: String,
    pub topic: String,
    pub metadata: std::collections::BTreeMap<String, String>,
    /// `(match, path)`; the default route is a rule with an empty match.
    pub rules: Vec<(String, String)>,
    pub dead_letter_topic: String,
    pub kind: SubscriptionType,
}

/// `appConnectionProperties`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppConnection {
    pub port: u16,
    /// `http` or `grpc`.
    pub protocol: String,
    pub channel_address: String,
    /// `app.max_concurrency`; 0 for no limit.
    pub max_concurrency: usize,
    /// `(path, interval, timeout, threshold)`, when health checks run;
    /// durations as Go writes them (`5s`, `500ms`).
    pub health: Option<(String, String, String, u32)>,
}

pub use crate::components::dapr_type;

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
    let mut extended = ctx.extended_metadata.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(healthy) = *ctx.app_health.borrow() {
        extended.insert("appHealth".into(), if healthy { "HEALTHY" } else { "UNHEALTHY" }.into());
    }
    let mut subscriptions: Vec<SubscriptionInfo> = ctx
        .active_subscriptions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|s| {
            let mut rules = s.routes.rules.clone();
            if !s.routes.default.is_empty() {
                rules.push((String::new(), s.routes.default.clone()));
            }
            SubscriptionInfo {
                pubsub_name: s.pubsub_name.clone(),
                topic: s.topic.clone(),
                metadata: s.metadata.iter().cloned().collect(),
                rules,
                dead_letter_topic: s.dead_letter_topic.clone().unwrap_or_default(),
                kind: if s.declarative {
                    SubscriptionType::Declarative
                } else {
                    SubscriptionType::Programmatic
                },
            }
        })
        .collect();
    for stream in ctx.topic_streams.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let (pubsub, topic) = stream.split_once('/').unwrap_or((stream.as_str(), ""));
        subscriptions.push(SubscriptionInfo {
            pubsub_name: pubsub.to_owned(),
            topic: topic.to_owned(),
            metadata: Default::default(),
            rules: Vec::new(),
            dead_letter_topic: String::new(),
            kind: SubscriptionType::Streaming,
        });
    }
    subscriptions.sort_by(|a, b| (&a.pubsub_name, &a.topic).cmp(&(&b.pubsub_name, &b.topic)));
    let app = &ctx.app;
    let app_connection = (app.grpc_callback_port != 0).then(|| AppConnection {
        port: app.grpc_callback_port,
        protocol: match app.callback_protocol {
            CallbackProtocol::Http => "http",
            CallbackProtocol::Dapr | CallbackProtocol::Layotto => "grpc",
        }
        .into(),
        channel_address: app.grpc_callback_host.clone(),
        max_concurrency: app.max_concurrency.unwrap_or(0),
        health: app.health_check.as_ref().map(|h| {
            let path = if app.callback_protocol == CallbackProtocol::Http {
                h.path.clone()
            } else {
                String::new()
            };
            (path, go_duration(h.interval), go_duration(h.timeout), h.threshold)
        }),
    });
    Metadata {
        app_id: ctx.app.app_id.clone(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        components,
        extended,
        enabled_features: app.features.clone(),
        subscriptions,
        app_connection,
    }
}

/// A duration as Go prints it: `5s`, `500ms`, `1m30s`.
fn go_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
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
