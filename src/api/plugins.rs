//! API plugins: gRPC services of their own, compiled into the binary and
//! served on the sidecar's gRPC API listener beside Layotto's and Dapr's
//! APIs (Layotto's `GrpcAPI` extension point).
//!
//! A plugin reaches components only through the
//! [block services](super::blocks) (functions taking the [`ApiContext`]),
//! so everything a built-in API obeys holds for it too: key scoping
//! (`keyPrefix`), a DOWN component failing fast, each component's queue
//! and flow control, the per-component metrics. The listener's layers wrap
//! its calls like any other: the API token, admission, per-method flow
//! control, `layotto_grpc_*` metrics labelled with its methods, the
//! shutdown cut-off, a panic answered INTERNAL.
//!
//! Adding one takes a file beside this one implementing [`ApiPlugin`], its
//! proto compiled in `build.rs` with a descriptor set of its own, and one
//! line in [`PLUGINS`]. It is served only when the config has a
//! `[plugins.<name>]` table (Layotto's `grpc_config.extends.<name>`);
//! otherwise its calls are answered UNIMPLEMENTED like any unknown
//! service's. See `docs/plugins.md`.

pub mod counter;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tonic::service::RoutesBuilder;

use super::ApiContext;
use crate::components::{ComponentSpec, Kind};
use crate::config::Problem;

/// THE registry of API plugins: one line per plugin.
pub const PLUGINS: &[&dyn ApiPlugin] = &[&counter::CounterPlugin];

/// A gRPC API served by the sidecar when configured.
pub trait ApiPlugin: Send + Sync + 'static {
    /// The plugin's name: its config table is `[plugins.<name>]`, or
    /// `grpc_config.extends.<name>` in Layotto's `config.json`.
    fn name(&self) -> &'static str;

    /// The encoded `FileDescriptorSet` of every service the plugin adds:
    /// gRPC reflection lists them, and the metrics name their methods
    /// (calls to paths it does not describe are counted as `unknown`).
    fn file_descriptor_set(&self) -> &'static [u8];

    /// Checks the plugin's settings (its config table, as parsed) against
    /// the configured components; pure, no I/O. Each problem's path is
    /// relative to the table (`state_store`; empty for the table itself).
    /// Every problem is listed, not only the first.
    fn validate(&self, settings: &Value, components: &Components<'_>) -> Vec<Problem>;

    /// Adds the plugin's services to the API listener's routes. Called
    /// once at start-up, only with settings that [`validate`](Self::validate)
    /// accepted; `ctx` is what its handlers call the block services with.
    fn add_services(
        &self,
        ctx: Arc<ApiContext>,
        settings: &Value,
        routes: &mut RoutesBuilder,
    ) -> Result<(), PluginError>;
}

/// The registered plugin named `name`.
pub fn find(name: &str) -> Option<&'static dyn ApiPlugin> {
    PLUGINS.iter().copied().find(|p| p.name() == name)
}

/// The registered plugins' names, for messages.
pub fn names() -> Vec<&'static str> {
    PLUGINS.iter().map(|p| p.name()).collect()
}

/// Why the configured plugins cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("no API plugin is named '{0}'")]
    Unknown(String),
    #[error("API plugin '{plugin}': {message}")]
    Settings { plugin: &'static str, message: String },
    #[error("API plugin '{plugin}': its descriptor set does not decode: {source}")]
    Descriptors {
        plugin: &'static str,
        source: prost::DecodeError,
    },
    #[error("API plugin '{plugin}' serves {service}, which {other} serves already")]
    Clash {
        plugin: &'static str,
        service: String,
        other: String,
    },
}

/// The configured components, by building block, that a plugin's settings
/// may name.
#[derive(Clone, Copy)]
pub struct Components<'a>(&'a BTreeMap<Kind, Vec<ComponentSpec>>);

impl<'a> Components<'a> {
    pub fn new(components: &'a BTreeMap<Kind, Vec<ComponentSpec>>) -> Components<'a> {
        Components(components)
    }

    /// The names of the configured components of `kind`.
    pub fn names(&self, kind: Kind) -> Vec<&'a str> {
        self.0
            .get(&kind)
            .into_iter()
            .flatten()
            .map(|s| s.name.as_str())
            .collect()
    }

    /// A problem at `field` unless `name` is a configured component of
    /// `kind`.
    pub fn check(&self, kind: Kind, field: &str, name: &str) -> Option<Problem> {
        let known = self.names(kind);
        if known.contains(&name) {
            return None;
        }
        let listed = if known.is_empty() {
            format!("no {kind} component is configured")
        } else {
            format!("configured: {}", known.join(", "))
        };
        Some(Problem {
            path: field.to_owned(),
            message: format!(
                "names {kind} component '{}', which is not configured; {listed}",
                crate::components::quote(name)
            ),
        })
    }
}

/// Checks the `plugins` section: each name is a registered plugin, whose
/// own checks pass. Problems carry their full path (`plugins.<name>...`).
pub(crate) fn validate(configured: &BTreeMap<String, Value>, components: &Components<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (name, settings) in configured {
        let at = format!("plugins.{name}");
        let Some(plugin) = find(name) else {
            problems.push(Problem {
                path: at,
                message: format!(
                    "unknown API plugin '{}'; registered plugins: {}",
                    crate::components::quote(name),
                    names().join(", ")
                ),
            });
            continue;
        };
        for p in plugin.validate(settings, components) {
            problems.push(Problem {
                path: if p.path.is_empty() {
                    at.clone()
                } else {
                    format!("{at}.{}", p.path)
                },
                message: p.message,
            });
        }
    }
    problems
}

/// A plugin's settings table as a map; `None` (with a problem at the
/// table) when it is something else.
pub fn table<'v>(settings: &'v Value, problems: &mut Vec<Problem>) -> Option<&'v serde_json::Map<String, Value>> {
    match settings {
        Value::Object(map) => Some(map),
        other => {
            problems.push(Problem {
                path: String::new(),
                message: format!("expected a table of settings, found {}", crate::config::kind_of(other)),
            });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_and_lock() -> BTreeMap<Kind, Vec<ComponentSpec>> {
        BTreeMap::from([
            (Kind::State, vec![ComponentSpec::new("mem", "in-memory")]),
            (Kind::Lock, vec![ComponentSpec::new("locks", "in-memory")]),
        ])
    }

    #[test]
    fn plugin_names_are_unique() {
        let mut seen = names();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), PLUGINS.len(), "{:?}", names());
    }

    #[test]
    fn every_plugins_descriptors_decode_and_describe_a_service() {
        use prost::Message;
        for plugin in PLUGINS {
            let set = prost_types::FileDescriptorSet::decode(plugin.file_descriptor_set()).expect("decodes");
            assert!(
                set.file.iter().any(|f| !f.service.is_empty()),
                "{} describes no service",
                plugin.name()
            );
        }
    }

    #[test]
    fn an_unknown_plugin_is_named_with_the_known_ones() {
        let components = state_and_lock();
        let configured = BTreeMap::from([("nope".to_owned(), serde_json::json!({}))]);
        let problems = validate(&configured, &Components::new(&components));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "plugins.nope");
        assert!(
            problems[0].message.contains("registered plugins: counter"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_plugins_own_problems_carry_the_full_path() {
        let components = state_and_lock();
        let configured = BTreeMap::from([("counter".to_owned(), serde_json::json!({"state_store": "other"}))]);
        let problems = validate(&configured, &Components::new(&components));
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["plugins.counter.lock_store", "plugins.counter.state_store"],
            "{problems:?}"
        );
        assert!(problems[1].message.contains("configured: mem"), "{problems:?}");
    }

    #[test]
    fn components_name_what_is_configured() {
        let components = state_and_lock();
        let components = Components::new(&components);
        assert!(components.check(Kind::State, "s", "mem").is_none());
        let missing = components.check(Kind::PubSubs, "p", "bus").expect("a problem");
        assert_eq!(missing.path, "p");
        assert!(
            missing.message.contains("no pub_subs component is configured"),
            "{missing:?}"
        );
    }
}
