//! `mqtt` (also `mqtt3`): Dapr's MQTT output binding. `create` publishes
//! the data at QoS 1 to the request's `topic`, or the component's, and
//! returns once the broker acknowledged it (PUBACK).
//!
//! As an input binding it subscribes (QoS 1, a persistent session named by
//! `consumerID`) to the component's `topic`, wildcards included, and
//! acknowledges a message once the app took it; an event's metadata is
//! `{"topic": <the message's topic>}`.
//!
//! Metadata: [`MqttBindingKeys`].

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;

use super::{Binding, BindingCommon, BindingRequest, BindingResponse, Deliveries, ops};
use crate::components::meta::{self, Section};
use crate::components::pubsub::mqtt::{MqttBroker, MqttKeys};
use crate::components::pubsub::{PubSub, PublishRequest, SubscribeRequest};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn Binding> = TypeEntry::of::<MqttType>();
pub const MQTT3: TypeEntry<dyn Binding> = TypeEntry::of::<Mqtt3Type>();

pub struct MqttType;
pub struct Mqtt3Type;

fn build(
    ctx: BuildContext,
    broker: MqttKeys,
    keys: MqttBindingKeys,
) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
    async move {
        let publisher = keys.consumer_id.clone().unwrap_or_else(|| ctx.spec.name.clone());
        let broker = MqttBroker::connect(broker, publisher.clone(), &ctx.spec.instance_id, ctx.tasks).await?;
        Ok(Arc::new(MqttBinding {
            broker,
            topic: keys.topic,
            group: publisher,
        }) as Arc<dyn Binding>)
    }
    .boxed()
}

impl ComponentType<dyn Binding> for MqttType {
    const NAME: &'static str = "mqtt";
    type Metadata = (MqttKeys, MqttBindingKeys, BindingCommon);

    fn build(
        ctx: BuildContext,
        (broker, keys, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
        build(ctx, broker, keys)
    }
}

impl ComponentType<dyn Binding> for Mqtt3Type {
    const NAME: &'static str = "mqtt3";
    type Metadata = (MqttKeys, MqttBindingKeys, BindingCommon);

    fn build(
        ctx: BuildContext,
        (broker, keys, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
        build(ctx, broker, keys)
    }
}

/// What `mqtt` reads from its metadata besides the broker's keys (`url`,
/// `username`, `password`, `keepAlive`: [`MqttKeys`]).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttBindingKeys {
    /// The topic published to when the request names none. Required.
    #[serde(deserialize_with = "meta::non_empty")]
    pub topic: String,
    /// Names this client at the broker. Default: the component's name.
    #[serde(default, rename = "consumerID")]
    pub consumer_id: Option<String>,
    /// Publish retained. Only `false` (the default) is supported.
    #[serde(default)]
    pub retain: bool,
    /// Dapr's deprecated `qos`: read, QoS is always 1.
    #[serde(default)]
    pub qos: Option<String>,
    /// Dapr's `cleanSession`: read; the publisher's session is clean.
    #[serde(default)]
    pub clean_session: Option<bool>,
}

impl Section for MqttBindingKeys {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        if self.retain {
            errors.push(MetadataError::new(
                "retain",
                "retained publishing is not supported; remove it or set false",
            ));
        }
    }
}

pub struct MqttBinding {
    broker: MqttBroker,
    topic: String,
    group: String,
}

#[async_trait::async_trait]
impl Component for MqttBinding {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.broker.health_check().await
    }

    async fn close(&self) {
        self.broker.close().await;
    }
}

#[async_trait::async_trait]
impl Binding for MqttBinding {
    fn operations(&self) -> Vec<&str> {
        vec![ops::CREATE]
    }

    async fn invoke(&self, request: BindingRequest) -> Result<BindingResponse, ComponentError> {
        let topic = request
            .metadata
            .get("topic")
            .filter(|t| !t.is_empty())
            .cloned()
            .unwrap_or_else(|| self.topic.clone());
        self.broker
            .publish(PublishRequest {
                topic,
                data: request.data,
                content_type: String::new(),
                metadata: HashMap::new(),
                ttl: None,
            })
            .await?;
        Ok(BindingResponse::none())
    }

    fn is_input(&self) -> bool {
        true
    }

    async fn read(&self) -> Result<Deliveries, ComponentError> {
        let deliveries = self
            .broker
            .subscribe(SubscribeRequest {
                topic: self.topic.clone(),
                group: self.group.clone(),
                max_in_flight: 1,
                metadata: HashMap::new(),
            })
            .await?;
        Ok(deliveries
            .map(|delivery| {
                delivery.map(|mut d| {
                    d.message.metadata = HashMap::from([("topic".to_owned(), d.message.topic.clone())]);
                    d
                })
            })
            .boxed())
    }
}
