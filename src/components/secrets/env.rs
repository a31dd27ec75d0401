//! `local.env`: secrets from the sidecar's environment variables. A
//! secret's name is the variable's name (without `prefix`, when one is
//! set); its value is `{ name: value }`.
//!
//! Metadata: `prefix` (only variables starting with it are secrets; the
//! prefix is not part of the secret's name).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Secret, SecretStore};
use crate::components::meta::Section;
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn SecretStore> = TypeEntry::of::<EnvType>();

pub struct EnvType;

impl ComponentType<dyn SecretStore> for EnvType {
    const NAME: &'static str = "local.env";
    type Metadata = EnvKeys;

    fn build(_ctx: BuildContext, keys: EnvKeys) -> BoxFuture<'static, Result<Arc<dyn SecretStore>, BuildError>> {
        async move { Ok(Arc::new(EnvSecrets { prefix: keys.prefix }) as Arc<dyn SecretStore>) }.boxed()
    }
}

/// What `local.env` reads from its metadata.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct EnvKeys {
    /// Only variables starting with it are secrets; it is not part of the
    /// secret's name. Default: none (every variable).
    #[serde(default)]
    pub prefix: String,
}

impl Section for EnvKeys {}

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
