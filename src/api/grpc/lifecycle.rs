//! `spec.proto.runtime.v1.Lifecycle`, over
//! [`blocks::lifecycle`](crate::api::blocks::lifecycle).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::ApiContext;
use crate::api::blocks::lifecycle;
use crate::proto::runtime::v1 as pb;
use crate::proto::runtime::v1::lifecycle_server::Lifecycle;

pub struct LifecycleService {
    ctx: Arc<ApiContext>,
}

impl LifecycleService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        LifecycleService { ctx }
    }
}

#[tonic::async_trait]
impl Lifecycle for LifecycleService {
    async fn apply_configuration(
        &self,
        req: Request<pb::DynamicConfiguration>,
    ) -> Result<Response<pb::ApplyConfigurationResponse>, Status> {
        let config = req.into_inner().component_config.unwrap_or_default();
        lifecycle::apply_configuration(
            &self.ctx,
            &config.kind,
            &config.name,
            config.metadata.into_iter().collect(),
        )
        .await?;
        Ok(Response::new(pb::ApplyConfigurationResponse {}))
    }
}
