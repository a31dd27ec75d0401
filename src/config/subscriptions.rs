//! `[subscriptions.<name>]`: declarative subscriptions, in the shape of
//! Dapr's `Subscription` resource (v2alpha1 routes, or a v1alpha1 `route`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::walk::{self, Problems, Section};
use super::{Routes, SubscriptionConfig};

/// Compiles one routing rule's CEL expression, so that a bad one is a
/// config error rather than a delivery failure.
pub fn compile_rule(expression: &str) -> Result<cel::Program, String> {
    cel::Program::compile(expression).map_err(|e| format!("'{expression}' is not a CEL expression: {e}"))
}

/// Reads the section; subscriptions scoped to other apps are left out, as
/// daprd leaves them out.
pub(super) fn section(value: Value, app_id: &str, problems: &mut Problems) -> Vec<SubscriptionConfig> {
    let Value::Object(entries) = value else {
        problems.push(
            "subscriptions",
            format!(
                "expected a table of name -> {{ pubsub_name, topic, route }}, found {}",
                walk::kind_of(&value)
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, entry) in entries {
        let path = format!("subscriptions.{name}");
        let Value::Object(entry) = entry else {
            problems.push(&path, format!("expected a table, found {}", walk::kind_of(&entry)));
            continue;
        };
        let mut s = Section::new(path.clone(), entry);
        if let Some(sub) = one(&name, &mut s, problems) {
            let scopes = s.string_list("scopes", problems).unwrap_or_default();
            s.finish(problems);
            if scopes.is_empty() || scopes.iter().any(|id| id == app_id) {
                out.push(sub);
            }
        } else {
            s.finish(problems);
        }
    }
    out
}

fn one(name: &str, s: &mut Section, problems: &mut Problems) -> Option<SubscriptionConfig> {
    let path = s.path().to_owned();
    let pubsub_name = s.string("pubsub_name", problems);
    let topic = s.string("topic", problems);
    let route = s.string("route", problems).unwrap_or_default();
    let mut routes = Routes::default();
    if let Some(value) = s.take("routes") {
        let Value::Object(map) = value else {
            problems.push(
                format!("{path}.routes"),
                format!("expected a table {{ rules, default }}, found {}", walk::kind_of(&value)),
            );
            return None;
        };
        let mut r = Section::new(format!("{path}.routes"), map);
        routes.default = r.string("default", problems).unwrap_or_default();
        if let Some(rules) = r.take("rules") {
            let Value::Array(rules) = rules else {
                problems.push(format!("{path}.routes.rules"), "expected a list of { match, path }");
                return None;
            };
            for (i, rule) in rules.into_iter().enumerate() {
                let at = format!("{path}.routes.rules[{i}]");
                let Value::Object(rule) = rule else {
                    problems.push(&at, "expected a table { match, path }");
                    continue;
                };
                let mut rule = Section::new(at.clone(), rule);
                let matcher = rule.string("match", problems).unwrap_or_default();
                let rule_path = rule.string("path", problems).unwrap_or_default();
                rule.finish(problems);
                if rule_path.is_empty() {
                    problems.push(format!("{at}.path"), "is required");
                }
                if let Err(e) = compile_rule(&matcher) {
                    problems.push(format!("{at}.match"), e);
                }
                routes.rules.push((matcher, normalize_path(&rule_path)));
            }
        }
        r.finish(problems);
    }
    // v1alpha1's `route` is the default when `routes` gives none.
    if routes.default.is_empty() {
        routes.default = route;
    }
    routes.default = if routes.default.is_empty() {
        String::new()
    } else {
        normalize_path(&routes.default)
    };
    let dead_letter_topic = s
        .string("dead_letter_topic", problems)
        .or_else(|| s.string("deadLetterTopic", problems))
        .filter(|t| !t.is_empty());
    let metadata: BTreeMap<String, String> = s.string_map("metadata", problems).unwrap_or_default();
    let (Some(pubsub_name), Some(topic)) = (pubsub_name, topic) else {
        problems.push(&path, "pubsub_name and topic are required");
        return None;
    };
    if pubsub_name.is_empty() || topic.is_empty() {
        problems.push(&path, "pubsub_name and topic must not be empty");
        return None;
    }
    if routes.is_empty() {
        problems.push(
            format!("{path}.route"),
            "a subscription needs a route, or routes with a default or rules",
        );
        return None;
    }
    Some(SubscriptionConfig {
        name: name.to_owned(),
        pubsub_name,
        topic,
        routes,
        dead_letter_topic,
        metadata,
    })
}

/// Route paths may be written with or without their leading `/`.
pub fn normalize_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}
