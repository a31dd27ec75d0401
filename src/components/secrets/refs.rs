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

use std::future::Future;

use super::Secret;
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

/// Replaces every secret reference in `config` by the secret's value,
/// read with `lookup(store, secret)` (the runtime reads it through the
/// secret store's supervised component, started before any component that
/// refers to it). Every reference that cannot be resolved is reported,
/// with its path.
pub async fn resolve<F, Fut>(config: &mut Config, lookup: F) -> Result<(), Vec<String>>
where
    F: Fn(String, String) -> Fut,
    Fut: Future<Output = Result<Option<Secret>, String>>,
{
    let mut problems = Vec::new();
    for (kind, specs) in config.components.iter_mut() {
        for spec in specs.iter_mut() {
            let refs = std::mem::take(&mut spec.secret_refs);
            for r in refs {
                let at = format!("{kind}.{}.metadata.{}", spec.name, r.inject_as);
                match value(&lookup, &r).await {
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

/// Whether any component refers to a secret.
pub fn any(config: &Config) -> bool {
    config
        .components
        .values()
        .flatten()
        .any(|spec| !spec.secret_refs.is_empty())
}

async fn value<F, Fut>(lookup: &F, r: &SecretRef) -> Result<String, String>
where
    F: Fn(String, String) -> Fut,
    Fut: Future<Output = Result<Option<Secret>, String>>,
{
    let secret = lookup(r.store.clone(), r.secret.clone())
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
