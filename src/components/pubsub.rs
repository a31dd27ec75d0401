//! The `pub_subs` building block: publish messages to a topic; consume a
//! topic as a consumer group, acknowledging each message only once the
//! application has handled it.
//!
//! A broker here carries bytes and string metadata; CloudEvents, routing to
//! the application and retries live in the API layer, written once for every
//! broker. A broker's job is at-least-once: a message that was acknowledged
//! to its publisher is delivered until a consumer acks it, across consumer
//! crashes; consumers of one group share the messages.

pub mod memory;
pub mod mqtt;
pub mod nats;
pub mod pluggable;
pub mod rabbitmq;
pub mod redis;

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::BoxStream;

use super::meta::Section;
use super::{Component, ComponentError, ComponentSpec};

/// Component metadata: the consumer group; defaults to the app id.
pub const CONSUMER_ID: &str = "consumerID";

/// The keys every broker type accepts, read by the delivery engine (a
/// subscription's own metadata may override them).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct PubSubKeys {
    /// The consumer group of this sidecar's subscriptions; default: the
    /// app id.
    #[serde(rename = "consumerID", default)]
    pub consumer_id: Option<String>,
    /// Messages of one subscription handled at once.
    #[serde(rename = "maxConcurrentHandlers", default)]
    pub max_concurrent_handlers: Option<usize>,
}

impl Section for PubSubKeys {}

impl PubSubKeys {
    /// The consumer group: `consumerID`, else the app id.
    pub fn group(&self, app_id: &str) -> String {
        self.consumer_id
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| app_id.to_owned())
    }
}

/// A message to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishRequest {
    pub topic: String,
    pub data: Vec<u8>,
    pub content_type: String,
    /// Carried with the message where the broker has headers.
    pub metadata: HashMap<String, String>,
    /// Expire the message after this long, where the broker can.
    pub ttl: Option<Duration>,
}

/// What to consume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeRequest {
    pub topic: String,
    /// The consumer group: consumers of one group share the messages.
    pub group: String,
    /// Messages handed out before earlier ones are acked: the broker's
    /// prefetch.
    pub max_in_flight: usize,
    /// The subscription's metadata, for broker-specific settings.
    pub metadata: HashMap<String, String>,
}

/// A consumed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub data: Vec<u8>,
    pub metadata: HashMap<String, String>,
}

/// Settles one delivered message with the broker.
#[async_trait::async_trait]
pub trait Acker: Send {
    /// Handled (or dropped on purpose): never deliver it again.
    async fn ack(self: Box<Self>) -> Result<(), ComponentError>;

    /// Not handled: give it back for redelivery, where the broker can do so
    /// at once (otherwise it comes back after the broker's timeout).
    async fn nack(self: Box<Self>) {}
}

/// One message and the means to settle it.
pub struct Delivery {
    pub message: Message,
    pub acker: Box<dyn Acker>,
}

/// The messages of one subscription. It ends (or yields an error) when the
/// broker connection is lost or the component closes; the caller then
/// subscribes again through the component's next incarnation.
pub type Deliveries = BoxStream<'static, Result<Delivery, ComponentError>>;

/// A message broker.
#[async_trait::async_trait]
pub trait PubSub: Component {
    /// Publishes one message; returns once the broker has taken
    /// responsibility for it (a publisher confirm, an XADD, a PubAck).
    async fn publish(&self, req: PublishRequest) -> Result<(), ComponentError>;

    /// Starts consuming a topic as a member of a group.
    async fn subscribe(&self, req: SubscribeRequest) -> Result<Deliveries, ComponentError>;
}

/// The consumer group of a component: `consumerID`, else the app id.
pub fn consumer_group(spec: &ComponentSpec) -> String {
    spec.meta(CONSUMER_ID)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| spec.app_id.clone())
}
