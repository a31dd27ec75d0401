//! The `secret_store` building block: named secrets, each a small map of
//! values (a password, or a user and a password), for the app through the
//! Secrets API and for other components' metadata through secret
//! references.

pub mod env;
pub mod file;
pub mod pluggable;
pub mod refs;

use std::collections::BTreeMap;

use super::{Component, ComponentError};

/// One secret's values.
pub type Secret = BTreeMap<String, String>;

/// A secret store.
#[async_trait::async_trait]
pub trait SecretStore: Component {
    /// The secret named `key`, if there is one.
    async fn get(&self, key: &str) -> Result<Option<Secret>, ComponentError>;

    /// Every secret the store holds.
    async fn bulk(&self) -> Result<BTreeMap<String, Secret>, ComponentError>;
}
