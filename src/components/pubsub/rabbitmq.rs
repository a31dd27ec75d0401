//! `rabbitmq`: AMQP 0-9-1 through lapin. Each topic is a durable fanout
//! exchange; each consumer group a durable queue (`<group>-<topic>`) bound
//! to it, so sidecars of one group compete for its messages and a group's
//! messages wait in its queue while no consumer runs.
//!
//! Publishing waits for the broker's publisher confirm; messages are
//! persistent. Consuming acks manually, only after the application
//! answered, with a prefetch bound; a message whose consumer dies unacked
//! is requeued by the broker.
//!
//! Metadata: `consumerID`, and [`RabbitKeys`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::watch;

use super::{Acker, Deliveries, Delivery, Message, PubSub, PubSubKeys, PublishRequest, SubscribeRequest};
use crate::components::meta::Section;
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn PubSub> = TypeEntry::of::<RabbitType>();

pub struct RabbitType;

impl ComponentType<dyn PubSub> for RabbitType {
    const NAME: &'static str = "rabbitmq";
    type Metadata = (PubSubKeys, RabbitKeys);

    fn build(_ctx: BuildContext, (_, keys): Self::Metadata) -> BoxFuture<'static, Result<Arc<dyn PubSub>, BuildError>> {
        async move {
            RabbitBroker::connect(keys)
                .await
                .map(|b| Arc::new(b) as Arc<dyn PubSub>)
        }
        .boxed()
    }
}

/// The RabbitMQ broker's own keys.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RabbitKeys {
    /// The broker's `amqp://` or `amqps://` URL; `connectionString` wins
    /// when both are set. Default: `amqp://guest:guest@127.0.0.1:5672/%2f`.
    #[serde(default)]
    pub host: Option<String>,
    /// Same as `host`.
    #[serde(default)]
    pub connection_string: Option<String>,
    /// Messages handed to a consumer before it acks; default: the
    /// subscription's concurrency.
    #[serde(default)]
    pub prefetch_count: Option<u16>,
    /// Exchanges and queues survive a broker restart.
    #[serde(default = "default_durable")]
    pub durable: bool,
    /// 2: messages are persistent; 1: transient.
    #[serde(default = "default_delivery_mode")]
    pub delivery_mode: u8,
}

fn default_durable() -> bool {
    true
}

fn default_delivery_mode() -> u8 {
    2
}

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl RabbitKeys {
    fn url(&self) -> &str {
        self.connection_string
            .as_deref()
            .or(self.host.as_deref())
            .unwrap_or(DEFAULT_URL)
    }
}

impl Section for RabbitKeys {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        let url = self.url();
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            errors.push(MetadataError::new(
                "host",
                format!("'{url}' is not an amqp:// or amqps:// URL"),
            ));
        }
        if !matches!(self.delivery_mode, 1 | 2) {
            errors.push(MetadataError::new(
                "deliveryMode",
                format!("'{}' is not 1 (transient) or 2 (persistent)", self.delivery_mode),
            ));
        }
    }
}

pub(crate) fn amqp_error(what: &str, e: lapin::Error) -> ComponentError {
    ComponentError::Fatal(format!("rabbitmq {what}: {e}"))
}

pub struct RabbitBroker {
    connection: Connection,
    /// Publisher confirms on.
    publisher: Channel,
    durable: bool,
    persistent: bool,
    prefetch: Option<u16>,
    /// Exchanges already declared by this connection.
    declared: Mutex<HashSet<String>>,
    closed: watch::Sender<bool>,
}

impl RabbitBroker {
    async fn connect(keys: RabbitKeys) -> Result<RabbitBroker, BuildError> {
        let url = keys.url();
        let fail = |what: &str, e: lapin::Error| BuildError(format!("rabbitmq {what}: {e}"));
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .map_err(|e| fail("cannot connect", e))?;
        let publisher = connection
            .create_channel()
            .await
            .map_err(|e| fail("cannot open a channel", e))?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| fail("cannot turn on publisher confirms", e))?;
        Ok(RabbitBroker {
            connection,
            publisher,
            durable: keys.durable,
            persistent: keys.delivery_mode != 1,
            prefetch: keys.prefetch_count,
            declared: Mutex::new(HashSet::new()),
            closed: watch::channel(false).0,
        })
    }

    async fn declare_exchange(&self, channel: &Channel, topic: &str) -> Result<(), ComponentError> {
        let known = self.declared.lock().unwrap_or_else(|p| p.into_inner()).contains(topic);
        if known {
            return Ok(());
        }
        channel
            .exchange_declare(
                ShortString::from(topic),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: self.durable,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error(&format!("cannot declare exchange {topic}"), e))?;
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_owned());
        Ok(())
    }
}

#[async_trait::async_trait]
impl Component for RabbitBroker {
    async fn health_check(&self) -> Result<(), ComponentError> {
        open_a_channel(&self.connection).await
    }

    async fn close(&self) {
        let _ = self.closed.send(true);
        let _ = self.connection.close(200, "closing".into()).await;
    }
}

#[async_trait::async_trait]
impl PubSub for RabbitBroker {
    async fn publish(&self, req: PublishRequest) -> Result<(), ComponentError> {
        self.declare_exchange(&self.publisher, &req.topic).await?;
        let mut headers = FieldTable::default();
        for (k, v) in &req.metadata {
            headers.insert(ShortString::from(k.as_str()), AMQPValue::LongString(v.as_str().into()));
        }
        let mut properties = BasicProperties::default()
            .with_content_type(ShortString::from(req.content_type.as_str()))
            .with_delivery_mode(if self.persistent { 2 } else { 1 })
            .with_headers(headers);
        if let Some(ttl) = req.ttl {
            properties = properties.with_expiration(ShortString::from(ttl.as_millis().to_string()));
        }
        let confirm = self
            .publisher
            .basic_publish(
                ShortString::from(req.topic.as_str()),
                ShortString::from(""),
                BasicPublishOptions::default(),
                &req.data,
                properties,
            )
            .await
            .map_err(|e| amqp_error("publish failed", e))?
            .await
            .map_err(|e| amqp_error("publish was not confirmed", e))?;
        if confirm.is_nack() {
            return Err(ComponentError::Internal(format!(
                "rabbitmq refused the message for topic {} (publisher confirm nack)",
                req.topic
            )));
        }
        Ok(())
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<Deliveries, ComponentError> {
        let channel = self
            .connection
            .create_channel()
            .await
            .map_err(|e| amqp_error("cannot open a channel", e))?;
        self.declare_exchange(&channel, &req.topic).await?;
        let queue = format!("{}-{}", req.group, req.topic);
        channel
            .queue_declare(
                ShortString::from(queue.as_str()),
                QueueDeclareOptions {
                    durable: self.durable,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error(&format!("cannot declare queue {queue}"), e))?;
        channel
            .queue_bind(
                ShortString::from(queue.as_str()),
                ShortString::from(req.topic.as_str()),
                ShortString::from(""),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error("cannot bind the queue", e))?;
        let prefetch = self
            .prefetch
            .unwrap_or_else(|| u16::try_from(req.max_in_flight).unwrap_or(u16::MAX).max(1));
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| amqp_error("cannot set the prefetch", e))?;
        let consumer = channel
            .basic_consume(
                ShortString::from(queue.as_str()),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error("cannot consume", e))?;
        let topic = req.topic.clone();
        let mut closed = self.closed.subscribe();
        let until_closed = async move {
            let _ = closed.wait_for(|c| *c).await;
        };
        let deliveries = consumer.take_until(Box::pin(until_closed)).map(move |delivery| {
            // Keep the channel open as long as the stream lives.
            let _channel = &channel;
            let delivery = delivery.map_err(|e| amqp_error("consumer failed", e))?;
            let metadata = string_headers(&delivery.properties);
            Ok(Delivery {
                message: Message {
                    topic: topic.clone(),
                    data: delivery.data,
                    metadata,
                },
                acker: Box::new(RabbitAcker(delivery.acker)),
            })
        });
        Ok(Box::pin(deliveries))
    }
}

/// The health check of every RabbitMQ component: what use does, open a
/// channel (and close it).
pub(crate) async fn open_a_channel(connection: &Connection) -> Result<(), ComponentError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| amqp_error("health check", e))?;
    let _ = channel.close(200, "health check".into()).await;
    Ok(())
}

/// A message's string-valued headers (the metadata it carries).
pub(crate) fn string_headers(properties: &BasicProperties) -> HashMap<String, String> {
    properties
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .filter_map(|(k, v)| match v {
                    AMQPValue::LongString(s) => Some((k.to_string(), s.to_string())),
                    AMQPValue::ShortString(s) => Some((k.to_string(), s.to_string())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) struct RabbitAcker(pub(crate) lapin::Acker);

#[async_trait::async_trait]
impl Acker for RabbitAcker {
    async fn ack(self: Box<Self>) -> Result<(), ComponentError> {
        self.0
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(|e| amqp_error("ack failed", e))
    }

    async fn nack(self: Box<Self>) {
        let _ = self
            .0
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await;
    }
}
