//! `local.file`: secrets from a JSON file, read when the component starts
//! (a restart reads it again). Nested objects are flattened into names
//! joined by `nestedSeparator`: `{"db": {"password": "x"}}` holds the
//! secret `db:password`. A secret's value is `{ name: value }`.
//!
//! Metadata: [`FileKeys`].

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::{Secret, SecretStore};
use crate::components::meta::{self, Section};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn SecretStore> = TypeEntry::of::<FileType>();

pub struct FileType;

impl ComponentType<dyn SecretStore> for FileType {
    const NAME: &'static str = "local.file";
    type Metadata = FileKeys;

    fn build(_ctx: BuildContext, keys: FileKeys) -> BoxFuture<'static, Result<Arc<dyn SecretStore>, BuildError>> {
        async move { FileSecrets::load(&keys).map(|s| Arc::new(s) as Arc<dyn SecretStore>) }.boxed()
    }
}

/// What `local.file` reads from its metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileKeys {
    /// The JSON file.
    #[serde(deserialize_with = "meta::non_empty")]
    pub secrets_file: String,
    /// Joins the names of nested objects.
    #[serde(default = "default_separator")]
    pub nested_separator: String,
}

fn default_separator() -> String {
    ":".to_owned()
}

impl Section for FileKeys {}

pub struct FileSecrets {
    secrets: BTreeMap<String, String>,
}

impl FileSecrets {
    fn load(keys: &FileKeys) -> Result<FileSecrets, BuildError> {
        let path = keys.secrets_file.as_str();
        let separator = keys.nested_separator.as_str();
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
