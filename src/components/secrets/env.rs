//! `local.env`: secrets from the sidecar's environment variables. A
//! secret's name is the variable's name (without `prefix`, when one is
//! set); its value is `{ name: value }`.
//!
//! Metadata: `prefix` (only variables starting with it are secrets; the
//! prefix is not part of the secret's name).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;

use super::{Secret, SecretStore};
use crate::components::{Component, ComponentError, ComponentSpec, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn SecretStore> = TypeEntry {
    name: "local.env",
    validate,
    build: |crate::components::BuildContext { spec, .. }| {
        async move {
            Ok(Arc::new(EnvSecrets {
                prefix: spec.meta(PREFIX).unwrap_or_default().to_owned(),
            }) as Arc<dyn SecretStore>)
        }
        .boxed()
    },
};

const PREFIX: &str = "prefix";

fn validate(_spec: &ComponentSpec) -> Vec<MetadataError> {
    Vec::new()
}

pub struct EnvSecrets {
    prefix: String,
}

#[async_trait::async_trait]
impl Component for EnvSecrets {
    async fn health_check(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl SecretStore for EnvSecrets {
    async fn get(&self, key: &str) -> Result<Option<Secret>, ComponentError> {
        let value = std::env::var(format!("{}{key}", self.prefix)).ok();
        Ok(value.map(|v| BTreeMap::from([(key.to_owned(), v)])))
    }

    async fn bulk(&self) -> Result<BTreeMap<String, Secret>, ComponentError> {
        Ok(std::env::vars()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(&self.prefix)?.to_owned();
                (!name.is_empty()).then(|| (name.clone(), BTreeMap::from([(name, v)])))
            })
            .collect())
    }
}
