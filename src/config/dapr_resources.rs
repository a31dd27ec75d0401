//! Dapr resource files (`--resources-path DIR`): `Component` and
//! `Subscription` YAML, read as daprd reads them, into the native config
//! tree; and a Dapr `Configuration` file given as `--config`.
//!
//! As in daprd: each folder is read without descending, only `.yaml` and
//! `.yml` files, each split into documents on `\n---`; a document counts
//! when its `apiVersion` and `kind` are Dapr's; field names match without
//! regard to case; `scopes` that leave this app out skip the resource;
//! two resources of one kind with one name are an error. Unlike daprd, a
//! document that does not parse, or names a type we do not implement, is
//! an error naming its file, never skipped in silence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::{Format, MAX_CONFIG_BYTES, Problem};
use crate::components::Kind;

/// What was read from the resource folders.
#[derive(Debug, Default)]
pub struct Resources {
    /// Native config sections: `{ "state": { name: {...} }, "subscriptions": ... }`.
    pub tree: Map<String, Value>,
    /// Resources read but not used (other kinds, other apps' scopes), one
    /// line each, for the start-up log.
    pub ignored: Vec<String>,
}

/// Reads every folder. `app_id` decides `scopes`.
pub fn load(dirs: &[PathBuf], app_id: &str) -> Result<Resources, Vec<Problem>> {
    let mut out = Resources::default();
    let mut problems = Vec::new();
    // kind section -> name -> the file that declared it.
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                problems.push(problem(
                    &dir.display().to_string(),
                    "",
                    format!("cannot read the folder: {e}"),
                ));
                continue;
            }
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files {
            let name = file.display().to_string();
            if !file.is_file() {
                continue;
            }
            if !matches!(file.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.ignored.push(format!("{name}: not a .yaml or .yml file"));
                continue;
            }
            let text = match read(&file) {
                Ok(text) => text,
                Err(message) => {
                    problems.push(problem(&name, "", message));
                    continue;
                }
            };
            file_into(&name, &text, app_id, &mut out, &mut seen, &mut problems);
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// The documents of one file's text, read as [`load`] reads each file
/// (for the fuzz targets).
pub fn load_text(name: &str, text: &str, app_id: &str) -> Result<Resources, Vec<Problem>> {
    let mut out = Resources::default();
    let mut problems = Vec::new();
    file_into(name, text, app_id, &mut out, &mut BTreeMap::new(), &mut problems);
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

fn file_into(
    name: &str,
    text: &str,
    app_id: &str,
    out: &mut Resources,
    seen: &mut BTreeMap<(String, String), String>,
    problems: &mut Vec<Problem>,
) {
    for (index, document) in text.split("\n---").enumerate() {
        let at = if index == 0 {
            name.to_owned()
        } else {
            format!("{name}#{}", index + 1)
        };
        let tree = match super::parse(document, Format::Yaml) {
            Ok(tree) => tree,
            Err(message) => {
                problems.push(problem(&at, "", message));
                continue;
            }
        };
        if tree.is_empty() {
            continue;
        }
        document_into(&at, tree, app_id, out, seen, problems);
    }
}

fn read(file: &Path) -> Result<String, String> {
    let size = std::fs::metadata(file).map_err(|e| format!("cannot read: {e}"))?.len();
    if size > MAX_CONFIG_BYTES as u64 {
        return Err(format!(
            "the file has {size} bytes; at most {MAX_CONFIG_BYTES} are read"
        ));
    }
    std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))
}

fn problem(file: &str, field: &str, message: impl Into<String>) -> Problem {
    Problem {
        path: if field.is_empty() {
            file.to_owned()
        } else {
            format!("{file}: {field}")
        },
        message: message.into(),
    }
}

/// A field, its name matched without regard to case (daprd decodes these
/// files with Go's JSON rules).
pub(crate) fn field<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name)
        .or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// A scalar field as text; empty when absent or not a scalar.
pub(crate) fn text(map: &Map<String, Value>, name: &str) -> String {
    match field(map, name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn object<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Map<String, Value>> {
    match field(map, name) {
        Some(Value::Object(o)) => Some(o),
        _ => None,
    }
}

fn strings(map: &Map<String, Value>, name: &str) -> Vec<String> {
    match field(map, name) {
        Some(Value::Array(items)) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

fn document_into(
    at: &str,
    doc: Map<String, Value>,
    app_id: &str,
    out: &mut Resources,
    seen: &mut BTreeMap<(String, String), String>,
    problems: &mut Vec<Problem>,
) {
    let api_version = text(&doc, "apiVersion");
    let kind = text(&doc, "kind");
    let name = object(&doc, "metadata").map(|m| text(m, "name")).unwrap_or_default();
    let dapr_kind = match (api_version.as_str(), kind.as_str()) {
        ("dapr.io/v1alpha1", "Component") => "Component",
        ("dapr.io/v1alpha1" | "dapr.io/v2alpha1", "Subscription") => "Subscription",
        ("dapr.io/v1alpha1", other) => {
            out.ignored
                .push(format!("{at}: {other} '{name}' (not used by this sidecar)"));
            return;
        }
        _ => {
            out.ignored.push(format!(
                "{at}: not a Dapr resource (apiVersion '{api_version}', kind '{kind}')"
            ));
            return;
        }
    };
    if name.is_empty() || name.contains(['/', '\\', ' ']) {
        problems.push(problem(at, "metadata.name", "is required and must be one path segment"));
        return;
    }
    if let Some(namespace) = object(&doc, "metadata").map(|m| text(m, "namespace"))
        && !namespace.is_empty()
        && let Ok(ours) = std::env::var("NAMESPACE")
        && ours != namespace
    {
        out.ignored
            .push(format!("{at}: {dapr_kind} '{name}' is for namespace '{namespace}'"));
        return;
    }
    let scopes = strings(&doc, "scopes");
    if !scopes.is_empty() && !scopes.iter().any(|s| s == app_id) {
        out.ignored
            .push(format!("{at}: {dapr_kind} '{name}' is scoped to other apps"));
        return;
    }
    let spec = object(&doc, "spec").cloned().unwrap_or_default();
    let (section, entry) = match dapr_kind {
        "Component" => match component(at, &name, &spec, &doc, &mut out.ignored) {
            Ok(pair) => pair,
            Err(p) => {
                problems.push(p);
                return;
            }
        },
        _ => ("subscriptions".to_owned(), subscription(&spec)),
    };
    if let Some(first) = seen.insert((section.clone(), name.clone()), at.to_owned()) {
        problems.push(problem(
            at,
            "metadata.name",
            format!("'{name}' is declared twice (also in {first})"),
        ));
        return;
    }
    let table = out.tree.entry(section).or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(table) = table {
        table.insert(name, entry);
    }
}

/// Dapr's category -> our config section, and Dapr's type names that
/// differ from ours.
fn kind_of(dapr_type: &str) -> Option<(Kind, String)> {
    let lower = dapr_type.to_ascii_lowercase();
    let (category, rest) = lower.split_once('.')?;
    let kind = match category {
        "state" => Kind::State,
        "pubsub" => Kind::PubSubs,
        "lock" => Kind::Lock,
        "secretstores" => Kind::SecretStore,
        "configuration" => Kind::ConfigStore,
        "bindings" => Kind::Bindings,
        _ => return None,
    };
    let ours = match (kind, rest) {
        (Kind::PubSubs, "jetstream") => "nats",
        (Kind::PubSubs, "mqtt3" | "mqtt") => "mqtt",
        (_, other) => other,
    };
    Some((kind, ours.to_owned()))
}

fn component(
    at: &str,
    name: &str,
    spec: &Map<String, Value>,
    doc: &Map<String, Value>,
    ignored: &mut Vec<String>,
) -> Result<(String, Value), Problem> {
    let dapr_type = text(spec, "type");
    let Some((kind, type_name)) = kind_of(&dapr_type) else {
        return Err(problem(
            at,
            "spec.type",
            format!(
                "'{dapr_type}' of component '{name}' is not a component type this sidecar implements (categories: state, pubsub, lock, secretstores, configuration, bindings)"
            ),
        ));
    };
    if !kind.has_type(&type_name) {
        let known: Vec<String> = kind
            .known_types()
            .iter()
            .map(|t| crate::components::dapr_type(kind, t))
            .collect();
        let hint = if known.is_empty() {
            "none of this category is implemented yet".to_owned()
        } else {
            format!("known: {}", known.join(", "))
        };
        return Err(problem(
            at,
            "spec.type",
            format!("'{dapr_type}' of component '{name}' is not implemented; {hint}"),
        ));
    }
    let version = text(spec, "version");
    if !matches!(version.as_str(), "" | "v0" | "v1") {
        return Err(problem(
            at,
            "spec.version",
            format!("'{version}' of {dapr_type}: only v1 exists here"),
        ));
    }
    let auth_store = object(doc, "auth").map(|a| text(a, "secretStore")).unwrap_or_default();
    let mut metadata = Map::new();
    if let Some(Value::Array(items)) = field(spec, "metadata") {
        for (i, item) in items.iter().enumerate() {
            let Value::Object(item) = item else {
                return Err(problem(at, &format!("spec.metadata[{i}]"), "expected { name, value }"));
            };
            let key = text(item, "name");
            if key.is_empty() {
                return Err(problem(at, &format!("spec.metadata[{i}].name"), "is required"));
            }
            let value = if let Some(Value::Object(r)) = field(item, "secretKeyRef") {
                let secret = text(r, "name");
                let sub = text(r, "key");
                let mut reference = Map::new();
                reference.insert("name".into(), Value::String(secret));
                if !sub.is_empty() {
                    reference.insert("key".into(), Value::String(sub));
                }
                json!({ "secretKeyRef": reference })
            } else {
                match field(item, "value") {
                    Some(Value::String(s)) if !s.is_empty() => Value::String(s.clone()),
                    Some(Value::Null) | None | Some(Value::String(_)) => match env_ref(item) {
                        Ok(Some(v)) => Value::String(v),
                        Ok(None) => Value::String(String::new()),
                        Err(message) => return Err(problem(at, &format!("spec.metadata[{i}].envRef"), message)),
                    },
                    // Numbers, booleans and objects keep their JSON text.
                    Some(other) => Value::String(other.to_string()),
                }
            };
            metadata.insert(key, value);
        }
    }
    // Dapr scopes state keys by app id unless told otherwise.
    if matches!(kind, Kind::State | Kind::Lock) && !metadata.keys().any(|k| k.eq_ignore_ascii_case("keyPrefix")) {
        metadata.insert("keyPrefix".into(), Value::String("appid".into()));
    }
    // Dapr's components ignore metadata they do not read (and daprd reads
    // some itself: `actorStateStore`...): keys our type does not know are
    // left out, each noted, so a file written for daprd starts unchanged.
    let mut probe = crate::components::ComponentSpec::new(name, type_name.clone());
    for (key, value) in &metadata {
        probe
            .metadata
            .insert(key.clone(), value.as_str().unwrap_or_default().to_owned());
    }
    for error in kind.validate(&probe).unwrap_or_default() {
        if error.message.starts_with(crate::components::meta::UNKNOWN_KEY) {
            metadata.remove(&error.key);
            ignored.push(format!(
                "{at}: metadata '{}' of {dapr_type} '{name}' (not used here)",
                error.key
            ));
        }
    }
    let mut entry = Map::new();
    entry.insert("type".into(), Value::String(type_name));
    entry.insert("metadata".into(), Value::Object(metadata));
    if !auth_store.is_empty() {
        entry.insert("auth".into(), json!({ "secretStore": auth_store }));
    }
    Ok((kind.as_str().to_owned(), Value::Object(entry)))
}

/// `envRef`: the value of an environment variable, except the ones daprd
/// refuses to hand to components.
fn env_ref(item: &Map<String, Value>) -> Result<Option<String>, String> {
    let var = text(item, "envRef");
    if var.is_empty() {
        return Ok(None);
    }
    if var == "APP_API_TOKEN" || var.starts_with("DAPR_") || var.contains(' ') {
        return Err(format!("'{var}' may not be read by a component"));
    }
    Ok(std::env::var(&var).ok())
}

fn subscription(spec: &Map<String, Value>) -> Value {
    let mut entry = Map::new();
    entry.insert("pubsub_name".into(), Value::String(text(spec, "pubsubname")));
    entry.insert("topic".into(), Value::String(text(spec, "topic")));
    let route = text(spec, "route");
    if !route.is_empty() {
        entry.insert("route".into(), Value::String(route));
    }
    if let Some(routes) = object(spec, "routes") {
        let rules: Vec<Value> = match field(routes, "rules") {
            Some(Value::Array(rules)) => rules
                .iter()
                .filter_map(Value::as_object)
                .map(|r| json!({ "match": text(r, "match"), "path": text(r, "path") }))
                .collect(),
            _ => Vec::new(),
        };
        entry.insert(
            "routes".into(),
            json!({ "rules": rules, "default": text(routes, "default") }),
        );
    }
    let dead_letter = text(spec, "deadLetterTopic");
    if !dead_letter.is_empty() {
        entry.insert("dead_letter_topic".into(), Value::String(dead_letter));
    }
    if let Some(metadata) = object(spec, "metadata") {
        let metadata: Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), Value::String(v))
            })
            .collect();
        entry.insert("metadata".into(), Value::Object(metadata));
    }
    Value::Object(entry)
}

/// Whether a YAML config file is a Dapr `Configuration` resource.
pub fn is_dapr_configuration(tree: &Map<String, Value>) -> bool {
    text(tree, "kind") == "Configuration" && text(tree, "apiVersion").starts_with("dapr.io/")
}

/// Reads a Dapr `Configuration`: the settings we implement become native
/// config (enabled features), every other spec field is listed as ignored
/// by its path.
pub fn configuration(tree: &Map<String, Value>) -> (Map<String, Value>, Vec<String>) {
    let mut native = Map::new();
    let mut ignored = Vec::new();
    let Some(spec) = tree.get("spec").and_then(Value::as_object) else {
        return (native, ignored);
    };
    for (key, value) in spec {
        match key.as_str() {
            "features" => {
                let enabled: Vec<Value> = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                    .filter(|f| f.get("enabled").and_then(Value::as_bool).unwrap_or(false))
                    .filter_map(|f| f.get("name").cloned())
                    .collect();
                native.insert("app".into(), json!({ "features": enabled }));
            }
            "nameResolution" => match name_resolution(value) {
                Ok(section) => {
                    native.insert("name_resolution".into(), section);
                }
                Err(e) => ignored.push(format!("spec.nameResolution ({e})")),
            },
            other => ignored.push(format!("spec.{other}")),
        }
    }
    (native, ignored)
}

/// Dapr's `spec.nameResolution` (`component`, `version`, `configuration`)
/// as the native `name_resolution` section: one component named after its
/// type, the configuration flattened into metadata (nested keys joined by
/// `.`, lists by `,`).
fn name_resolution(value: &Value) -> Result<Value, String> {
    let spec = value.as_object().ok_or("expected a mapping")?;
    let component = text(spec, "component");
    if component.is_empty() {
        return Err("component is empty".into());
    }
    let mut metadata = Map::new();
    if let Some(configuration) = spec.get("configuration").and_then(Value::as_object) {
        flatten("", configuration, &mut metadata);
    }
    Ok(json!({ component.to_owned(): { "type": component, "metadata": metadata } }))
}

fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut Map<String, Value>) {
    for (key, value) in map {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(inner) => flatten(&path, inner, out),
            Value::Array(items) => {
                let joined: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                out.insert(path, Value::String(joined.join(",")));
            }
            Value::String(s) => {
                out.insert(path, Value::String(s.clone()));
            }
            Value::Null => {}
            other => {
                out.insert(path, Value::String(other.to_string()));
            }
        }
    }
}
