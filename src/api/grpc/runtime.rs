//! `spec.proto.runtime.v1.Runtime`: routes each rpc to the file of its
//! building block. An rpc whose building block has not landed answers
//! UNIMPLEMENTED, naming itself.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::{bindings, configuration, file, hello, invoke, lock, pubsub, secrets, sequencer, state};
use crate::api::ApiContext;
use crate::proto::runtime::v1 as pb;
use crate::proto::runtime::v1::runtime_server::Runtime;

pub struct RuntimeService {
    ctx: Arc<ApiContext>,
}

impl RuntimeService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        RuntimeService { ctx }
    }
}

pub(super) type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Runtime for RuntimeService {
    async fn invoke_service(
        &self,
        req: Request<pb::InvokeServiceRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        invoke::layotto_invoke(&self.ctx, req).await
    }

    async fn say_hello(&self, req: Request<pb::SayHelloRequest>) -> Result<Response<pb::SayHelloResponse>, Status> {
        hello::say_hello(&self.ctx, req.into_inner()).await.map(Response::new)
    }

    async fn get_state(&self, req: Request<pb::GetStateRequest>) -> Result<Response<pb::GetStateResponse>, Status> {
        state::get_state(&self.ctx, req.into_inner()).await.map(Response::new)
    }

    async fn get_bulk_state(
        &self,
        req: Request<pb::GetBulkStateRequest>,
    ) -> Result<Response<pb::GetBulkStateResponse>, Status> {
        state::get_bulk_state(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn save_state(&self, req: Request<pb::SaveStateRequest>) -> Result<Response<()>, Status> {
        state::save_state(&self.ctx, req.into_inner()).await.map(Response::new)
    }

    async fn delete_state(&self, req: Request<pb::DeleteStateRequest>) -> Result<Response<()>, Status> {
        state::delete_state(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_bulk_state(&self, req: Request<pb::DeleteBulkStateRequest>) -> Result<Response<()>, Status> {
        state::delete_bulk_state(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn execute_state_transaction(
        &self,
        req: Request<pb::ExecuteStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        state::execute_state_transaction(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn try_lock(&self, req: Request<pb::TryLockRequest>) -> Result<Response<pb::TryLockResponse>, Status> {
        lock::try_lock(&self.ctx, req.into_inner()).await.map(Response::new)
    }

    async fn unlock(&self, req: Request<pb::UnlockRequest>) -> Result<Response<pb::UnlockResponse>, Status> {
        lock::unlock(&self.ctx, req.into_inner()).await.map(Response::new)
    }

    async fn lock_keep_alive(
        &self,
        req: Request<pb::LockKeepAliveRequest>,
    ) -> Result<Response<pb::LockKeepAliveResponse>, Status> {
        lock::lock_keep_alive(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_next_id(&self, req: Request<pb::GetNextIdRequest>) -> Result<Response<pb::GetNextIdResponse>, Status> {
        sequencer::get_next_id(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_secret(&self, req: Request<pb::GetSecretRequest>) -> Result<Response<pb::GetSecretResponse>, Status> {
        secrets::get_secret(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_bulk_secret(
        &self,
        req: Request<pb::GetBulkSecretRequest>,
    ) -> Result<Response<pb::GetBulkSecretResponse>, Status> {
        secrets::get_bulk_secret(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_file(&self, req: Request<pb::ListFileRequest>) -> Result<Response<pb::ListFileResp>, Status> {
        file::list_file(&self.ctx, req.into_inner()).await.map(Response::new)
    }

    async fn del_file(&self, req: Request<pb::DelFileRequest>) -> Result<Response<()>, Status> {
        file::del_file(&self.ctx, req.into_inner()).await.map(Response::new)
    }

    async fn get_file_meta(
        &self,
        req: Request<pb::GetFileMetaRequest>,
    ) -> Result<Response<pb::GetFileMetaResponse>, Status> {
        file::get_file_meta(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn invoke_binding(
        &self,
        req: Request<pb::InvokeBindingRequest>,
    ) -> Result<Response<pb::InvokeBindingResponse>, Status> {
        bindings::invoke_binding(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_configuration(
        &self,
        req: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        configuration::get_configuration(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn save_configuration(&self, req: Request<pb::SaveConfigurationRequest>) -> Result<Response<()>, Status> {
        configuration::save_configuration(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_configuration(&self, req: Request<pb::DeleteConfigurationRequest>) -> Result<Response<()>, Status> {
        configuration::delete_configuration(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    type SubscribeConfigurationStream = ResponseStream<pb::SubscribeConfigurationResponse>;

    async fn subscribe_configuration(
        &self,
        req: Request<Streaming<pb::SubscribeConfigurationRequest>>,
    ) -> Result<Response<Self::SubscribeConfigurationStream>, Status> {
        configuration::subscribe_configuration(self.ctx.clone(), req.into_inner())
            .await
            .map(Response::new)
    }

    async fn publish_event(&self, req: Request<pb::PublishEventRequest>) -> Result<Response<()>, Status> {
        pubsub::publish_event(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    type SubscribeTopicEventsStream = ResponseStream<pb::SubscribeTopicEventsResponse>;

    async fn subscribe_topic_events(
        &self,
        req: Request<Streaming<pb::SubscribeTopicEventsRequest>>,
    ) -> Result<Response<Self::SubscribeTopicEventsStream>, Status> {
        pubsub::subscribe_topic_events(self.ctx.clone(), req.into_inner())
            .await
            .map(Response::new)
    }

    type GetFileStream = ResponseStream<pb::GetFileResponse>;

    async fn get_file(&self, req: Request<pb::GetFileRequest>) -> Result<Response<Self::GetFileStream>, Status> {
        file::get_file(&self.ctx, req.into_inner()).await.map(Response::new)
    }

    async fn put_file(&self, req: Request<Streaming<pb::PutFileRequest>>) -> Result<Response<()>, Status> {
        file::put_file(&self.ctx, req.into_inner()).await.map(Response::new)
    }
}
