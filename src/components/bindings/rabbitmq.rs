//! `rabbitmq`: Dapr's RabbitMQ output binding. `create` publishes the data
//! to the component's queue (declared at start) through the default
//! exchange, persistent, with publisher confirms; request metadata
//! `ttlInSeconds` sets the message's expiry and `priority` (0-255) its
//! priority, `contentType`, `messageID`, `correlationID` and `type` its
//! properties, and every request metadata entry rides along as a header.
//!
//! As an input binding it consumes the queue (`prefetchCount` messages
//! unacknowledged at most) and acknowledges a message once the app took
//! it; one the app refused goes back to the queue for redelivery. An
//! event's metadata is the message's string headers.
//!
//! Metadata: [`RabbitBindingKeys`].

use std::sync::Arc;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::{Binding, BindingCommon, BindingRequest, BindingResponse, Deliveries, Delivery, Message, ops, ttl};
use crate::components::meta::{self, Section};
use crate::components::pubsub::rabbitmq::{RabbitAcker, amqp_error, open_a_channel, string_headers};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn Binding> = TypeEntry::of::<RabbitType>();

pub struct RabbitType;

impl ComponentType<dyn Binding> for RabbitType {
    const NAME: &'static str = "rabbitmq";
    type Metadata = (RabbitBindingKeys, BindingCommon);

    fn build(
        _ctx: BuildContext,
        (keys, _): (RabbitBindingKeys, BindingCommon),
    ) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
        async move {
            RabbitBinding::connect(keys)
                .await
                .map(|b| Arc::new(b) as Arc<dyn Binding>)
        }
        .boxed()
    }
}

/// What `rabbitmq` reads from its metadata (Dapr's keys).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RabbitBindingKeys {
    /// The broker's `amqp://` URL. Required.
    #[serde(deserialize_with = "meta::non_empty")]
    pub host: String,
    /// The queue messages go to (and, as an input binding, come from).
    /// Required.
    #[serde(deserialize_with = "meta::non_empty")]
    pub queue_name: String,
    /// Declare the queue durable. Default false.
    #[serde(default)]
    pub durable: bool,
    /// Declare the queue auto-deleted. Default false.
    #[serde(default)]
    pub delete_when_unused: bool,
    /// Declare the queue exclusive. Default false.
    #[serde(default)]
    pub exclusive: bool,
    /// The queue's `x-max-priority`, at most 255. Default none.
    #[serde(default)]
    pub max_priority: Option<u8>,
    /// The queue's default message TTL (`x-message-ttl`), in seconds.
    #[serde(default)]
    pub ttl_in_seconds: Option<meta::Seconds>,
    /// Messages the consumer holds unacknowledged (input). Default 0: no
    /// limit.
    #[serde(default)]
    pub prefetch_count: Option<u16>,
}

impl Section for RabbitBindingKeys {}

pub struct RabbitBinding {
    connection: Connection,
    channel: Channel,
    queue: String,
    keys: RabbitBindingKeys,
}

impl RabbitBinding {
    async fn connect(keys: RabbitBindingKeys) -> Result<RabbitBinding, BuildError> {
        let fail = |what: &str, e: lapin::Error| BuildError(format!("rabbitmq {what}: {e}"));
        let connection = Connection::connect(&keys.host, ConnectionProperties::default())
            .await
            .map_err(|e| fail("cannot connect", e))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| fail("cannot open a channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| fail("cannot turn on publisher confirms", e))?;
        declare(&channel, &keys).await.map_err(|e| BuildError(e.to_string()))?;
        Ok(RabbitBinding {
            connection,
            channel,
            queue: keys.queue_name.clone(),
            keys,
        })
    }
}

/// Declares the component's queue with its arguments.
pub async fn declare(channel: &Channel, keys: &RabbitBindingKeys) -> Result<(), ComponentError> {
    let mut arguments = FieldTable::default();
    if let Some(priority) = keys.max_priority {
        arguments.insert(ShortString::from("x-max-priority"), AMQPValue::ShortShortUInt(priority));
    }
    if let Some(ttl) = keys.ttl_in_seconds {
        let ms = i64::try_from(ttl.0.as_millis()).unwrap_or(i64::MAX);
        arguments.insert(ShortString::from("x-message-ttl"), AMQPValue::LongLongInt(ms));
    }
    channel
        .queue_declare(
            ShortString::from(keys.queue_name.as_str()),
            QueueDeclareOptions {
                durable: keys.durable,
                auto_delete: keys.delete_when_unused,
                exclusive: keys.exclusive,
                ..Default::default()
            },
            arguments,
        )
        .await
        .map(drop)
        .map_err(|e| amqp_error(&format!("cannot declare queue {}", keys.queue_name), e))
}

#[async_trait::async_trait]
impl Component for RabbitBinding {
    async fn health_check(&self) -> Result<(), ComponentError> {
        open_a_channel(&self.connection).await
    }

    async fn close(&self) {
        let _ = self.connection.close(200, "closing".into()).await;
    }
}

#[async_trait::async_trait]
impl Binding for RabbitBinding {
    fn operations(&self) -> Vec<&str> {
        vec![ops::CREATE]
    }

    async fn invoke(&self, request: BindingRequest) -> Result<BindingResponse, ComponentError> {
        let mut headers = FieldTable::default();
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("text/plain"));
        for (key, value) in &request.metadata {
            headers.insert(
                ShortString::from(key.as_str()),
                AMQPValue::LongString(value.as_str().into()),
            );
            match key.to_ascii_lowercase().as_str() {
                "contenttype" => properties = properties.with_content_type(ShortString::from(value.as_str())),
                "messageid" => properties = properties.with_message_id(ShortString::from(value.as_str())),
                "correlationid" => properties = properties.with_correlation_id(ShortString::from(value.as_str())),
                "type" => properties = properties.with_type(ShortString::from(value.as_str())),
                "priority" => {
                    let priority: i64 = value.trim().parse().map_err(|_| {
                        ComponentError::InvalidArgument(format!(
                            "priority value must be a valid integer: actual is '{value}'"
                        ))
                    })?;
                    properties = properties.with_priority(priority.clamp(0, 255) as u8);
                }
                _ => {}
            }
        }
        if let Some(ttl) = ttl(&request)? {
            properties = properties.with_expiration(ShortString::from(ttl.as_millis().to_string()));
        }
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(""),
                ShortString::from(self.queue.as_str()),
                BasicPublishOptions::default(),
                &request.data,
                properties.with_headers(headers),
            )
            .await
            .map_err(|e| amqp_error("failed to publish message", e))?
            .await
            .map_err(|e| amqp_error("publish was not confirmed", e))?;
        if confirm.is_nack() {
            return Err(ComponentError::Internal(format!(
                "rabbitmq refused the message for queue {} (publisher confirm nack)",
                self.queue
            )));
        }
        Ok(BindingResponse::none())
    }

    fn is_input(&self) -> bool {
        true
    }

    async fn read(&self) -> Result<Deliveries, ComponentError> {
        let channel = self
            .connection
            .create_channel()
            .await
            .map_err(|e| amqp_error("cannot open a channel", e))?;
        declare(&channel, &self.keys).await?;
        if let Some(prefetch) = self.keys.prefetch_count.filter(|p| *p > 0) {
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| amqp_error("cannot set the prefetch", e))?;
        }
        let consumer = channel
            .basic_consume(
                ShortString::from(self.queue.as_str()),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error("cannot consume", e))?;
        let queue = self.queue.clone();
        Ok(consumer
            .map(move |delivery| {
                // Keep the channel open as long as the stream lives.
                let _channel = &channel;
                let delivery = delivery.map_err(|e| amqp_error("consumer failed", e))?;
                let metadata = string_headers(&delivery.properties);
                Ok(Delivery {
                    message: Message {
                        topic: queue.clone(),
                        data: delivery.data,
                        metadata,
                    },
                    acker: Box::new(RabbitAcker(delivery.acker)),
                })
            })
            .boxed())
    }
}
