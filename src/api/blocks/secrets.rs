//! The Secrets block: one secret, or every secret of a store.

use std::collections::BTreeMap;

use super::{BlockError, quote, required};
use crate::actors::secrets::{GetBulkSecret, GetSecret};
use crate::api::ApiContext;
pub use crate::components::secrets::Secret;

/// The field that names the store, in routing errors.
const STORE_NAME: &str = "store_name";

/// One secret of a store.
#[derive(Clone, Debug, Default)]
pub struct GetSecretRequest {
    pub store: String,
    pub key: String,
}

/// The secret `key`; NOT_FOUND when the store has none by that name.
pub async fn get(ctx: &ApiContext, req: GetSecretRequest) -> Result<Secret, BlockError> {
    let store = ctx.router.secret_stores.get(STORE_NAME, &req.store)?;
    required(&req.key, "key")?;
    store.call(GetSecret { key: req.key.clone() }).await?.ok_or_else(|| {
        BlockError::NotFound(format!(
            "secret '{}' is not in secret store '{}'",
            quote(&req.key),
            req.store
        ))
    })
}

/// Every secret of the store `store`, by name.
pub async fn get_bulk(ctx: &ApiContext, store: &str) -> Result<BTreeMap<String, Secret>, BlockError> {
    let store = ctx.router.secret_stores.get(STORE_NAME, store)?;
    Ok(store.call(GetBulkSecret).await?)
}
