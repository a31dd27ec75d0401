//! Secret references in component metadata, so passwords stay out of
//! config files. Two spellings, both resolved before any other component
//! starts:
//!
//! - Layotto's `secret_ref = [{ store_name, key, sub_key, inject_as }]`
//!   beside `metadata`: the secret `key` of store `store_name`, its value
//!   `sub_key` (default `key`), becomes metadata `inject_as`;
//! - a `secretKeyRef` in place of a metadata value, as in Dapr component
//!   files: `redisPassword = { secretKeyRef = { name = "redis", key =
//!   "password", store = "secrets" } }` (`key` defaults to `name`; `store`
//!   defaults to the component's `auth = { secretStore = "..." }`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::SecretStore;
use crate::components::{BuildingBlock, ComponentSpec, Kind, SecretStores, find};
use crate::config::Config;

/// One metadata value that comes from a secret store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// The secret store instance.
    pub store: String,
    /// The secret's name in that store.
    pub secret: String,
    /// Which value of the secret; `None` means the one named like it.
    pub key: Option<String>,
    /// The metadata key that receives the value.
    pub inject_as: String,
}

/// Replaces every secret reference in `config` by the secret's value.
/// Every reference that cannot be resolved is reported, with its path.
pub async fn resolve(config: &mut Config) -> Result<(), Vec<String>> {
    let wanted: Vec<String> = config
        .components
        .values()
        .flatten()
        .flat_map(|spec| spec.secret_refs.iter().map(|r| r.store.clone()))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut stores: BTreeMap<String, Result<Arc<dyn SecretStore>, String>> = BTreeMap::new();
    for name in wanted {
        if stores.contains_key(&name) {
            continue;
        }
        let opened = open(config.components_of(Kind::SecretStore), &name).await;
        stores.insert(name, opened);
    }
    let mut problems = Vec::new();
    for (kind, specs) in config.components.iter_mut() {
        for spec in specs.iter_mut() {
            let refs = std::mem::take(&mut spec.secret_refs);
            for r in refs {
                let at = format!("{kind}.{}.metadata.{}", spec.name, r.inject_as);
                match lookup(&stores, &r).await {
                    Ok(value) => {
                        spec.metadata.insert(r.inject_as.clone(), value);
                    }
                    Err(e) => problems.push(format!("{at}: {e}")),
                }
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

async fn open(specs: &[ComponentSpec], name: &str) -> Result<Arc<dyn SecretStore>, String> {
    let spec = specs
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("secret store '{name}' is not configured"))?;
    let entry = find(SecretStores::TYPES, &spec.type_name)
        .ok_or_else(|| format!("secret store '{name}' has an unknown type"))?;
    let (tasks, _ended) = crate::components::Tasks::new();
    (entry.build)(crate::components::BuildContext {
        spec: spec.clone(),
        tasks,
    })
    .await
    .map_err(|e| format!("secret store '{name}' cannot start: {e}"))
}

async fn lookup(
    stores: &BTreeMap<String, Result<Arc<dyn SecretStore>, String>>,
    r: &SecretRef,
) -> Result<String, String> {
    let store = match stores.get(&r.store) {
        Some(Ok(store)) => store,
        Some(Err(e)) => return Err(e.clone()),
        None => return Err(format!("secret store '{}' is not configured", r.store)),
    };
    let secret = store
        .get(&r.secret)
        .await
        .map_err(|e| format!("secret store '{}': {e}", r.store))?
        .ok_or_else(|| format!("secret '{}' is not in secret store '{}'", r.secret, r.store))?;
    let key = r.key.as_deref().unwrap_or(&r.secret);
    secret.get(key).cloned().ok_or_else(|| {
        format!(
            "secret '{}' in secret store '{}' has no value '{key}'",
            r.secret, r.store
        )
    })
}
