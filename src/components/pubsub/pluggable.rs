//! A pluggable pub/sub: a process serving Dapr's
//! `dapr.proto.components.v1.PubSub` on a unix socket (see
//! [`crate::components::pluggable`] for discovery). Its type is the socket's
//! name; its metadata goes to the process's `Init`, with `consumerID`
//! defaulting to the app id as daprd sets it.
//!
//! A subscription is one `PullMessages` stream: the topic first (its
//! metadata carries the consumer group as `consumerID`), then an
//! ack per message by its id (with an error when the app did not take it,
//! so the process redelivers), as daprd sends them.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::{Acker, CONSUMER_ID, Deliveries, Delivery, Message, PubSub, PublishRequest, SubscribeRequest};
use crate::components::pluggable::{self, Connection};
use crate::components::{BuildContext, BuildError, Component, ComponentError, Kind, TypeEntry};
use crate::proto::dapr::components::v1 as pb;
use pb::pub_sub_client::PubSubClient;

/// The entry every discovered pub/sub type builds with.
pub const TYPE: TypeEntry<dyn PubSub> = TypeEntry {
    name: "pluggable",
    rust_type: std::any::type_name::<PluggablePubSub>,
    validate: pluggable::any_metadata,
    build,
};

fn build(ctx: BuildContext) -> BoxFuture<'static, Result<Arc<dyn PubSub>, BuildError>> {
    async move {
        let (conn, _) = pluggable::connect(Kind::PubSubs, &ctx.spec).await?;
        let mut client = PubSubClient::new(conn);
        let mut properties: HashMap<String, String> = ctx.spec.metadata.clone().into_iter().collect();
        if !ctx.spec.app_id.is_empty() {
            properties
                .entry(CONSUMER_ID.to_owned())
                .or_insert_with(|| ctx.spec.app_id.clone());
        }
        client
            .init(pb::PubSubInitRequest {
                metadata: Some(pb::MetadataRequest { properties }),
            })
            .await
            .map_err(pluggable::init_failed)?;
        Ok(Arc::new(PluggablePubSub {
            client,
            name: ctx.spec.name.clone(),
        }) as Arc<dyn PubSub>)
    }
    .boxed()
}

pub struct PluggablePubSub {
    client: PubSubClient<Connection>,
    /// The component's name, sent with each publish as daprd does.
    name: String,
}

#[async_trait::async_trait]
impl Component for PluggablePubSub {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.client
            .clone()
            .ping(pb::PingRequest {})
            .await
            .map(drop)
            .map_err(pluggable::error)
    }
}

#[async_trait::async_trait]
impl PubSub for PluggablePubSub {
    async fn publish(&self, req: PublishRequest) -> Result<(), ComponentError> {
        let mut metadata = req.metadata;
        if let Some(ttl) = req.ttl {
            metadata.insert("ttlInSeconds".to_owned(), ttl.as_secs().max(1).to_string());
        }
        self.client
            .clone()
            .publish(pb::PublishRequest {
                data: req.data,
                pubsub_name: self.name.clone(),
                topic: req.topic,
                metadata,
                content_type: req.content_type,
            })
            .await
            .map(drop)
            .map_err(pluggable::error)
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<Deliveries, ComponentError> {
        // Room for every ack that can be outstanding, plus the topic.
        let (requests, outgoing) = mpsc::channel(req.max_in_flight.max(1).saturating_add(1));
        // The group goes with the topic too: one process may serve several
        // sidecars' instances of one name, each Init'ed with its own.
        let mut metadata = req.metadata;
        metadata.entry(CONSUMER_ID.to_owned()).or_insert(req.group);
        let topic = pb::PullMessagesRequest {
            topic: Some(pb::Topic {
                name: req.topic.clone(),
                metadata,
            }),
            ack_message_id: String::new(),
            ack_error: None,
        };
        requests
            .send(topic)
            .await
            .map_err(|_| ComponentError::Internal("the subscription closed before it opened".into()))?;
        // The stream opens when the consumer first polls: a process may
        // send its response headers only with its first message (grpcio
        // does), and a subscription must not wait for one.
        let mut client = self.client.clone();
        let opened = async move {
            client
                .pull_messages(tokio_stream::wrappers::ReceiverStream::new(outgoing))
                .await
        };
        let topic = req.topic;
        let deliveries = futures::stream::once(opened).flat_map(move |opened| {
            let incoming = match opened {
                Ok(answer) => answer.into_inner(),
                Err(status) => return futures::stream::once(async move { Err(pluggable::error(status)) }).boxed(),
            };
            let (topic, requests) = (topic.clone(), requests.clone());
            incoming
                .map(move |answer| {
                    let answer = answer.map_err(pluggable::error)?;
                    Ok(Delivery {
                        message: Message {
                            topic: if answer.topic_name.is_empty() {
                                topic.clone()
                            } else {
                                answer.topic_name
                            },
                            data: answer.data,
                            metadata: answer.metadata,
                        },
                        // Each acker holds a sender, so the stream of acks
                        // stays open while a message is unsettled; the last
                        // one lives in this closure, for the subscription's
                        // life.
                        acker: Box::new(PullAck {
                            requests: requests.clone(),
                            id: answer.id,
                        }) as Box<dyn Acker>,
                    })
                })
                .boxed()
        });
        Ok(deliveries.boxed())
    }
}

/// Settles one pulled message by its id.
struct PullAck {
    requests: mpsc::Sender<pb::PullMessagesRequest>,
    id: String,
}

impl PullAck {
    async fn send(self, error: Option<String>) -> Result<(), ComponentError> {
        self.requests
            .send(pb::PullMessagesRequest {
                topic: None,
                ack_message_id: self.id,
                ack_error: error.map(|message| pb::AckMessageError { message }),
            })
            .await
            .map_err(|_| ComponentError::Unavailable("the pluggable pub/sub closed the subscription".into()))
    }
}

#[async_trait::async_trait]
impl Acker for PullAck {
    async fn ack(self: Box<Self>) -> Result<(), ComponentError> {
        self.send(None).await
    }

    async fn nack(self: Box<Self>) {
        let _ = self.send(Some("the app did not take the message".into())).await;
    }
}
