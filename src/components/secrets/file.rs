//! `local.file`: secrets from a JSON file, read when the component starts
//! (a restart reads it again). Nested objects are flattened into names
//! joined by `nestedSeparator`: `{"db": {"password": "x"}}` holds the
//! secret `db:password`. A secret's value is `{ name: value }`.
//!
//! Metadata: `secretsFile` (required), `nestedSeparator` (default `:`).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use serde_json::Value;

use super::{Secret, SecretStore};
use crate::components::{BuildError, Component, ComponentError, ComponentSpec, MetadataError, TypeEntry, require};

pub const TYPE: TypeEntry<dyn SecretStore> = TypeEntry {
    name: "local.file",
    validate,
    build: |crate::components::BuildContext { spec, .. }| {
        async move { FileSecrets::load(&spec).map(|s| Arc::new(s) as Arc<dyn SecretStore>) }.boxed()
    },
};

const SECRETS_FILE: &str = "secretsFile";
const SEPARATOR: &str = "nestedSeparator";

fn validate(spec: &ComponentSpec) -> Vec<MetadataError> {
    let mut errors = Vec::new();
    require(spec, SECRETS_FILE, &mut errors);
    errors
}

pub struct FileSecrets {
    secrets: BTreeMap<String, String>,
}

impl FileSecrets {
    fn load(spec: &ComponentSpec) -> Result<FileSecrets, BuildError> {
        let path = spec.meta(SECRETS_FILE).unwrap_or_default();
        let separator = spec.meta(SEPARATOR).unwrap_or(":");
        let text =
            std::fs::read_to_string(path).map_err(|e| BuildError(format!("local.file: cannot read {path}: {e}")))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| BuildError(format!("local.file: {path} is not JSON: {e}")))?;
        let Value::Object(_) = json else {
            return Err(BuildError(format!("local.file: {path} must hold a JSON object")));
        };
        let mut secrets = BTreeMap::new();
        flatten(&json, "", separator, &mut secrets);
        Ok(FileSecrets { secrets })
    }
}

fn flatten(value: &Value, name: &str, separator: &str, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let child = if name.is_empty() {
                    k.clone()
                } else {
                    format!("{name}{separator}{k}")
                };
                flatten(v, &child, separator, out);
            }
        }
        Value::String(s) => {
            out.insert(name.to_owned(), s.clone());
        }
        other => {
            out.insert(name.to_owned(), other.to_string());
        }
    }
}

#[async_trait::async_trait]
impl Component for FileSecrets {
    async fn health_check(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl SecretStore for FileSecrets {
    async fn get(&self, key: &str) -> Result<Option<Secret>, ComponentError> {
        Ok(self
            .secrets
            .get(key)
            .map(|v| BTreeMap::from([(key.to_owned(), v.clone())])))
    }

    async fn bulk(&self) -> Result<BTreeMap<String, Secret>, ComponentError> {
        Ok(self
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), BTreeMap::from([(k.clone(), v.clone())])))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_objects_flatten_with_the_separator() {
        let json: Value = serde_json::from_str(r#"{"a": "1", "db": {"user": "u", "pw": {"v": 2}}}"#).expect("json");
        let mut out = BTreeMap::new();
        flatten(&json, "", "::", &mut out);
        assert_eq!(out.get("a").map(String::as_str), Some("1"));
        assert_eq!(out.get("db::user").map(String::as_str), Some("u"));
        assert_eq!(out.get("db::pw::v").map(String::as_str), Some("2"));
    }
}
