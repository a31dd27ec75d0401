//! `dapr.proto.runtime.v1.Dapr` on the same listener as Layotto's API:
//! thin adapters from Dapr's messages to the block services, so a
//! component answers the same through either API. RPCs not declared in our
//! `dapr.proto` answer UNIMPLEMENTED.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::ApiContext;
use crate::api::blocks::metadata::SubscriptionType;
use crate::api::blocks::{configuration, lock, metadata, pubsub, secrets, state};
use crate::proto::dapr::common::v1 as common;
use crate::proto::dapr::runtime::v1 as pb;
use crate::proto::dapr::runtime::v1::dapr_server::Dapr;

pub struct DaprService {
    ctx: Arc<ApiContext>,
}

impl DaprService {
    pub fn new(ctx: Arc<ApiContext>) -> Self {
        DaprService { ctx }
    }
}

fn consistency(c: i32) -> state::Consistency {
    match common::state_options::StateConsistency::try_from(c) {
        Ok(common::state_options::StateConsistency::ConsistencyEventual) => state::Consistency::Eventual,
        Ok(common::state_options::StateConsistency::ConsistencyStrong) => state::Consistency::Strong,
        _ => state::Consistency::Unspecified,
    }
}

fn concurrency(options: Option<&common::StateOptions>) -> state::Concurrency {
    match options.map(|o| o.concurrency()) {
        Some(common::state_options::StateConcurrency::ConcurrencyFirstWrite) => state::Concurrency::FirstWrite,
        _ => state::Concurrency::LastWrite,
    }
}

fn item(item: common::StateItem) -> state::StateItem {
    state::StateItem {
        concurrency: concurrency(item.options.as_ref()),
        etag: item.etag.map(|e| e.value),
        key: item.key,
        value: item.value,
        metadata: item.metadata,
    }
}

/// An item as Dapr shows it: key -> value, version, metadata.
fn dapr_item(item: configuration::ConfigurationItem) -> (String, common::ConfigurationItem) {
    let value = common::ConfigurationItem {
        value: item.content,
        version: String::new(),
        metadata: item.metadata,
    };
    (item.key, value)
}

type TopicEventStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<pb::SubscribeTopicEventsResponseAlpha1, Status>> + Send + 'static>,
>;

type ConfigurationStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SubscribeConfigurationResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Dapr for DaprService {
    async fn invoke_service(
        &self,
        req: Request<pb::InvokeServiceRequest>,
    ) -> Result<Response<common::InvokeResponse>, Status> {
        super::invoke::dapr_invoke(&self.ctx, req).await
    }

    async fn get_state(&self, req: Request<pb::GetStateRequest>) -> Result<Response<pb::GetStateResponse>, Status> {
        let req = req.into_inner();
        let get = state::GetState {
            consistency: consistency(req.consistency),
            store: req.store_name,
            key: req.key,
        };
        Ok(Response::new(match state::get(&self.ctx, get).await? {
            None => pb::GetStateResponse::default(),
            Some(value) => pb::GetStateResponse {
                metadata: state::value_metadata(&value),
                etag: value.etag.to_string(),
                data: value.data,
            },
        }))
    }

    async fn get_bulk_state(
        &self,
        req: Request<pb::GetBulkStateRequest>,
    ) -> Result<Response<pb::GetBulkStateResponse>, Status> {
        let req = req.into_inner();
        let bulk = state::GetBulkState {
            store: req.store_name,
            keys: req.keys,
            parallelism: usize::try_from(req.parallelism).unwrap_or(0),
        };
        let items = state::get_bulk(&self.ctx, bulk)
            .await?
            .into_iter()
            .map(|bulk| match bulk.value {
                Ok(None) => pb::BulkStateItem {
                    key: bulk.key,
                    ..Default::default()
                },
                Ok(Some(value)) => pb::BulkStateItem {
                    key: bulk.key,
                    metadata: state::value_metadata(&value),
                    etag: value.etag.to_string(),
                    data: value.data,
                    error: String::new(),
                },
                Err(error) => pb::BulkStateItem {
                    key: bulk.key,
                    error,
                    ..Default::default()
                },
            })
            .collect();
        Ok(Response::new(pb::GetBulkStateResponse { items }))
    }

    async fn save_state(&self, req: Request<pb::SaveStateRequest>) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        let save = state::SaveState {
            store: req.store_name,
            items: req.states.into_iter().map(item).collect(),
        };
        state::save(&self.ctx, save).await?;
        Ok(Response::new(()))
    }

    async fn delete_state(&self, req: Request<pb::DeleteStateRequest>) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        let delete = state::DeleteState {
            store: req.store_name,
            item: state::DeleteItem {
                key: req.key,
                etag: req.etag.map(|e| e.value),
            },
        };
        state::delete(&self.ctx, delete).await?;
        Ok(Response::new(()))
    }

    async fn delete_bulk_state(&self, req: Request<pb::DeleteBulkStateRequest>) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        let delete = state::DeleteBulkState {
            store: req.store_name,
            items: req
                .states
                .into_iter()
                .map(|s| state::DeleteItem {
                    key: s.key,
                    etag: s.etag.map(|e| e.value),
                })
                .collect(),
        };
        state::delete_bulk(&self.ctx, delete).await?;
        Ok(Response::new(()))
    }

    async fn execute_state_transaction(
        &self,
        req: Request<pb::ExecuteStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        let transaction = state::Transaction {
            store: req.store_name,
            operations: req
                .operations
                .into_iter()
                .map(|op| state::TransactionOperation {
                    operation: op.operation_type,
                    item: op.request.map(item),
                })
                .collect(),
            metadata: req.metadata,
        };
        state::transact(&self.ctx, transaction).await?;
        Ok(Response::new(()))
    }

    async fn publish_event(&self, req: Request<pb::PublishEventRequest>) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        let event = pubsub::PublishEvent {
            pubsub: req.pubsub_name,
            topic: req.topic,
            data: req.data,
            content_type: req.data_content_type,
            metadata: req.metadata,
            api: pubsub::Api::Dapr,
        };
        pubsub::publish(&self.ctx, event).await?;
        Ok(Response::new(()))
    }

    /// The answer's metadata also goes out as `metadata.<key>` headers, as
    /// daprd sends it.
    async fn invoke_binding(
        &self,
        req: Request<pb::InvokeBindingRequest>,
    ) -> Result<Response<pb::InvokeBindingResponse>, Status> {
        let req = req.into_inner();
        let answer = crate::api::blocks::bindings::invoke(
            &self.ctx,
            &req.name,
            crate::api::blocks::bindings::BindingRequest {
                operation: req.operation,
                data: req.data,
                metadata: req.metadata.into_iter().collect(),
                ..Default::default()
            },
        )
        .await?;
        let mut response = Response::new(pb::InvokeBindingResponse {
            data: answer.data.unwrap_or_default(),
            metadata: answer.metadata.clone().into_iter().collect(),
        });
        for (key, value) in &answer.metadata {
            let name = format!("metadata.{}", key.to_ascii_lowercase());
            if let (Ok(name), Ok(value)) = (
                tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(name.as_bytes()),
                value.parse(),
            ) {
                response.metadata_mut().insert(name, value);
            }
        }
        Ok(response)
    }

    async fn bulk_publish_event_alpha1(
        &self,
        req: Request<pb::BulkPublishRequest>,
    ) -> Result<Response<pb::BulkPublishResponse>, Status> {
        self.bulk_publish_event(req).await
    }

    /// Entries the broker refused are answered in `failedEntries` with an
    /// OK status, as daprd answers them.
    async fn bulk_publish_event(
        &self,
        req: Request<pb::BulkPublishRequest>,
    ) -> Result<Response<pb::BulkPublishResponse>, Status> {
        let req = req.into_inner();
        let bulk = pubsub::BulkPublish {
            pubsub: req.pubsub_name,
            topic: req.topic,
            entries: req
                .entries
                .into_iter()
                .map(|e| pubsub::BulkEntry {
                    entry_id: e.entry_id,
                    event: e.event,
                    content_type: e.content_type,
                    metadata: e.metadata,
                })
                .collect(),
            metadata: req.metadata,
        };
        let failed = pubsub::bulk_publish(&self.ctx, bulk).await?;
        Ok(Response::new(pb::BulkPublishResponse {
            failed_entries: failed
                .into_iter()
                .map(|f| pb::BulkPublishResponseFailedEntry {
                    entry_id: f.entry_id,
                    error: f.error,
                })
                .collect(),
        }))
    }

    async fn get_secret(&self, req: Request<pb::GetSecretRequest>) -> Result<Response<pb::GetSecretResponse>, Status> {
        let req = req.into_inner();
        let get = secrets::GetSecretRequest {
            store: req.store_name,
            key: req.key,
        };
        let secret = secrets::get(&self.ctx, get).await?;
        Ok(Response::new(pb::GetSecretResponse {
            data: secret.into_iter().collect(),
        }))
    }

    async fn get_bulk_secret(
        &self,
        req: Request<pb::GetBulkSecretRequest>,
    ) -> Result<Response<pb::GetBulkSecretResponse>, Status> {
        let req = req.into_inner();
        let all = secrets::get_bulk(&self.ctx, &req.store_name).await?;
        Ok(Response::new(pb::GetBulkSecretResponse {
            data: all
                .into_iter()
                .map(|(name, values)| {
                    let secrets = values.into_iter().collect();
                    (name, pb::SecretResponse { secrets })
                })
                .collect(),
        }))
    }

    async fn get_configuration_alpha1(
        &self,
        req: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        self.get_configuration(req).await
    }

    async fn get_configuration(
        &self,
        req: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        let req = req.into_inner();
        let query = configuration::ConfigurationQuery {
            store: req.store_name,
            keys: req.keys,
            ..Default::default()
        };
        let items = configuration::get(&self.ctx, query).await?;
        let items: HashMap<String, common::ConfigurationItem> = items.into_iter().map(dapr_item).collect();
        Ok(Response::new(pb::GetConfigurationResponse { items }))
    }

    type SubscribeConfigurationAlpha1Stream = ConfigurationStream;

    async fn subscribe_configuration_alpha1(
        &self,
        req: Request<pb::SubscribeConfigurationRequest>,
    ) -> Result<Response<ConfigurationStream>, Status> {
        self.subscribe_configuration(req).await
    }

    type SubscribeConfigurationStream = ConfigurationStream;

    /// The first message carries only the subscription's id (the SDKs
    /// wait for it); then the current values of the keys, then each change.
    async fn subscribe_configuration(
        &self,
        req: Request<pb::SubscribeConfigurationRequest>,
    ) -> Result<Response<ConfigurationStream>, Status> {
        let req = req.into_inner();
        let query = configuration::ConfigurationQuery {
            store: req.store_name,
            keys: req.keys,
            ..Default::default()
        };
        configuration::check(&self.ctx, &query)?;
        let (id, unsubscribed) = self.ctx.config_subscriptions.open(&query.store);
        // One query, and the subscription lasts until it is ended.
        let queries = futures::stream::iter([query]).chain(futures::stream::pending());
        let mut changes = configuration::subscribe(self.ctx.clone(), queries);
        let (out, responses) = tokio::sync::mpsc::channel(4);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let first = pb::SubscribeConfigurationResponse {
                id: id.clone(),
                items: HashMap::new(),
            };
            if out.send(Ok(first)).await.is_ok() {
                let mut unsubscribed = std::pin::pin!(unsubscribed);
                loop {
                    let next = tokio::select! {
                        next = changes.recv() => next,
                        _ = &mut unsubscribed => break,
                        () = out.closed() => break,
                    };
                    let Some(next) = next else { break };
                    let message = next
                        .map_err(Status::from)
                        .map(|changes| pb::SubscribeConfigurationResponse {
                            id: id.clone(),
                            items: changes.items.into_iter().map(dapr_item).collect(),
                        });
                    let failed = message.is_err();
                    if out.send(message).await.is_err() || failed {
                        break;
                    }
                }
            }
            ctx.config_subscriptions.close(&id);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }

    async fn unsubscribe_configuration_alpha1(
        &self,
        req: Request<pb::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<pb::UnsubscribeConfigurationResponse>, Status> {
        self.unsubscribe_configuration(req).await
    }

    async fn unsubscribe_configuration(
        &self,
        req: Request<pb::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<pb::UnsubscribeConfigurationResponse>, Status> {
        let req = req.into_inner();
        let ok = configuration::unsubscribe(&self.ctx, &req.store_name, &req.id)?;
        let message = if ok {
            String::new()
        } else {
            format!(
                "failed to unsubscribe to configuration request {}: subscription does not exist",
                crate::api::blocks::quote(&req.id)
            )
        };
        Ok(Response::new(pb::UnsubscribeConfigurationResponse { ok, message }))
    }

    async fn try_lock_alpha1(&self, req: Request<pb::TryLockRequest>) -> Result<Response<pb::TryLockResponse>, Status> {
        let req = req.into_inner();
        let lease = lock::LeaseRequest {
            store: req.store_name,
            resource_id: req.resource_id,
            owner: req.lock_owner,
            expire: req.expiry_in_seconds,
        };
        let success = lock::try_lock(&self.ctx, lease).await?;
        Ok(Response::new(pb::TryLockResponse { success }))
    }

    async fn unlock_alpha1(&self, req: Request<pb::UnlockRequest>) -> Result<Response<pb::UnlockResponse>, Status> {
        let req = req.into_inner();
        let unlock = lock::UnlockRequest {
            store: req.store_name,
            resource_id: req.resource_id,
            owner: req.lock_owner,
        };
        let status = match lock::unlock(&self.ctx, unlock).await? {
            lock::LockStatus::Success => pb::unlock_response::Status::Success,
            lock::LockStatus::Unexist => pb::unlock_response::Status::LockDoesNotExist,
            lock::LockStatus::BelongsToOthers => pb::unlock_response::Status::LockBelongsToOthers,
        };
        Ok(Response::new(pb::UnlockResponse { status: status as i32 }))
    }

    async fn get_metadata(
        &self,
        _req: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let metadata = metadata::get(&self.ctx);
        Ok(Response::new(pb::GetMetadataResponse {
            id: metadata.app_id,
            registered_components: metadata
                .components
                .into_iter()
                .map(|c| pb::RegisteredComponents {
                    name: c.name,
                    r#type: c.dapr_type,
                    version: c.version,
                    capabilities: c.capabilities,
                })
                .collect(),
            extended_metadata: metadata.extended.into_iter().collect(),
            runtime_version: metadata.runtime_version,
            enabled_features: metadata.enabled_features,
            subscriptions: metadata
                .subscriptions
                .into_iter()
                .map(|s| pb::PubsubSubscription {
                    pubsub_name: s.pubsub_name,
                    topic: s.topic,
                    metadata: s.metadata.into_iter().collect(),
                    rules: Some(pb::PubsubSubscriptionRules {
                        rules: s
                            .rules
                            .into_iter()
                            .map(|(r#match, path)| pb::PubsubSubscriptionRule { r#match, path })
                            .collect(),
                    }),
                    dead_letter_topic: s.dead_letter_topic,
                    r#type: match s.kind {
                        SubscriptionType::Declarative => pb::PubsubSubscriptionType::Declarative,
                        SubscriptionType::Programmatic => pb::PubsubSubscriptionType::Programmatic,
                        SubscriptionType::Streaming => pb::PubsubSubscriptionType::Streaming,
                    } as i32,
                })
                .collect(),
            app_connection_properties: metadata.app_connection.map(|a| pb::AppConnectionProperties {
                port: i32::from(a.port),
                protocol: a.protocol,
                channel_address: a.channel_address,
                max_concurrency: i32::try_from(a.max_concurrency).unwrap_or(i32::MAX),
                health: a.health.map(
                    |(path, interval, timeout, threshold)| pb::AppConnectionHealthProperties {
                        health_check_path: path,
                        health_probe_interval: interval,
                        health_probe_timeout: timeout,
                        health_threshold: i32::try_from(threshold).unwrap_or(i32::MAX),
                    },
                ),
            }),
            actor_runtime: Some(pb::ActorRuntime {
                runtime_status: pb::actor_runtime::ActorRuntimeStatus::Disabled as i32,
                host_ready: false,
                placement: "placement: disconnected".into(),
            }),
        }))
    }

    async fn set_metadata(&self, req: Request<pb::SetMetadataRequest>) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        metadata::set(&self.ctx, req.key, req.value);
        Ok(Response::new(()))
    }

    /// Dapr's query language over the store's entries; a query that does
    /// not parse is INTERNAL, as from daprd, with the reason.
    async fn query_state_alpha1(
        &self,
        req: Request<pb::QueryStateRequest>,
    ) -> Result<Response<pb::QueryStateResponse>, Status> {
        let req = req.into_inner();
        let result = state::query(&self.ctx, &req.store_name, &req.query)
            .await
            .map_err(|e| match e {
                crate::api::blocks::BlockError::InvalidArgument(message) => Status::internal(format!(
                    "failed query in state store {}: {message}",
                    crate::api::blocks::quote(&req.store_name)
                )),
                other => Status::from(other),
            })?;
        Ok(Response::new(pb::QueryStateResponse {
            results: result
                .items
                .into_iter()
                .map(|item| pb::QueryStateItem {
                    key: item.key,
                    data: item.data,
                    etag: item.etag.to_string(),
                    error: String::new(),
                })
                .collect(),
            token: result.token.unwrap_or_default(),
            metadata: HashMap::new(),
        }))
    }

    type SubscribeTopicEventsAlpha1Stream = TopicEventStream;

    /// A subscription on a stream, as Layotto's SubscribeTopicEvents: the
    /// first message names it, the initial response says it stands, events
    /// follow, and `event_processed` messages settle them.
    async fn subscribe_topic_events_alpha1(
        &self,
        req: Request<tonic::Streaming<pb::SubscribeTopicEventsRequestAlpha1>>,
    ) -> Result<Response<TopicEventStream>, Status> {
        use pb::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as RequestType;
        use pb::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as ResponseType;
        use pb::topic_event_response::TopicEventResponseStatus as AppStatus;
        let mut requests = req.into_inner();
        let initial = match requests.message().await? {
            Some(pb::SubscribeTopicEventsRequestAlpha1 {
                subscribe_topic_events_request_type: Some(RequestType::InitialRequest(initial)),
            }) => initial,
            Some(_) => return Err(Status::invalid_argument("the first message must be an initial_request")),
            None => return Err(Status::invalid_argument("the stream closed before its initial_request")),
        };
        let spec = pubsub::SubscriptionSpec {
            pubsub: initial.pubsub_name,
            topic: initial.topic,
            metadata: initial.metadata,
            dead_letter_topic: initial.dead_letter_topic.filter(|t| !t.is_empty()),
        };
        let events = crate::api::grpc::pubsub::open_stream(self.ctx.clone(), spec, requests, |message| {
            match message.subscribe_topic_events_request_type {
                Some(RequestType::EventProcessed(done)) => Some((
                    done.id,
                    // An unknown status is a retry, as in Dapr.
                    match done.status.map(|s| AppStatus::try_from(s.status)) {
                        Some(Ok(AppStatus::Success)) | None => pubsub::Outcome::Success,
                        Some(Ok(AppStatus::Drop)) => pubsub::Outcome::Drop,
                        _ => pubsub::Outcome::Retry,
                    },
                )),
                _ => None,
            }
        })
        .await?;
        let initial_response = pb::SubscribeTopicEventsResponseAlpha1 {
            subscribe_topic_events_response_type: Some(ResponseType::InitialResponse(
                pb::SubscribeTopicEventsResponseInitialAlpha1 {},
            )),
        };
        let events = events.map(|event| {
            Ok(pb::SubscribeTopicEventsResponseAlpha1 {
                subscribe_topic_events_response_type: Some(ResponseType::EventMessage(
                    crate::api::callback::dapr_event(&event, ""),
                )),
            })
        });
        Ok(Response::new(Box::pin(
            futures::stream::once(async { Ok(initial_response) }).chain(events),
        )))
    }

    async fn shutdown(&self, _req: Request<pb::ShutdownRequest>) -> Result<Response<()>, Status> {
        metadata::shutdown(&self.ctx);
        Ok(Response::new(()))
    }
}
