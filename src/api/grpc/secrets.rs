//! The Secrets API: GetSecret and GetBulkSecret.

use tonic::Status;

use crate::actors::secrets::{GetBulkSecret, GetSecret};
use crate::api::ApiContext;
use crate::proto::runtime::v1 as pb;

pub async fn get_secret(ctx: &ApiContext, req: pb::GetSecretRequest) -> Result<pb::GetSecretResponse, Status> {
    let store = ctx.router.secret_stores.get("store_name", &req.store_name)?;
    if req.key.is_empty() {
        return Err(Status::invalid_argument("key is empty"));
    }
    let secret = store.call(GetSecret { key: req.key.clone() }).await?.ok_or_else(|| {
        Status::not_found(format!(
            "secret '{}' is not in secret store '{}'",
            req.key, req.store_name
        ))
    })?;
    Ok(pb::GetSecretResponse {
        data: secret.into_iter().collect(),
    })
}

pub async fn get_bulk_secret(
    ctx: &ApiContext,
    req: pb::GetBulkSecretRequest,
) -> Result<pb::GetBulkSecretResponse, Status> {
    let store = ctx.router.secret_stores.get("store_name", &req.store_name)?;
    let secrets = store.call(GetBulkSecret).await?;
    Ok(pb::GetBulkSecretResponse {
        data: secrets
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    pb::SecretResponse {
                        secrets: v.into_iter().collect(),
                    },
                )
            })
            .collect(),
    })
}
