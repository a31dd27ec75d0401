//! The Secrets API: GetSecret and GetBulkSecret, over
//! [`blocks::secrets`](crate::api::blocks::secrets).

use tonic::Status;

use crate::api::ApiContext;
use crate::api::blocks::secrets::{self, GetSecretRequest};
use crate::proto::runtime::v1 as pb;

pub async fn get_secret(ctx: &ApiContext, req: pb::GetSecretRequest) -> Result<pb::GetSecretResponse, Status> {
    let get = GetSecretRequest {
        store: req.store_name,
        key: req.key,
    };
    let secret = secrets::get(ctx, get).await?;
    Ok(pb::GetSecretResponse {
        data: secret.into_iter().collect(),
    })
}

pub async fn get_bulk_secret(
    ctx: &ApiContext,
    req: pb::GetBulkSecretRequest,
) -> Result<pb::GetBulkSecretResponse, Status> {
    let secrets = secrets::get_bulk(ctx, &req.store_name).await?;
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
