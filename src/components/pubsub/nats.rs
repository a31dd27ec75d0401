//! `nats`: NATS JetStream. Each topic is a stream (capturing the subject of
//! the same name); each consumer group a durable pull consumer with
//! explicit acks, so sidecars of one group share its messages and a
//! message not acked within `ackWaitTime` is delivered again.
//!
//! Publishing waits for JetStream's publish ack. Consuming acks after the
//! application answered; giving a message back naks it for immediate
//! redelivery.
//!
//! Metadata: `natsURL` (default `nats://127.0.0.1:4222`), `consumerID`,
//! `ackWaitTime` (default 30s), `streamPrefix` (prefix of stream names;
//! default none), `memoryStorage` (`true` keeps streams in memory; default
//! file), `maxMsgs` (a stream keeps at most this many messages, dropping
//! the oldest; default unlimited).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use super::{Acker, Deliveries, Delivery, Message, PubSub, PublishRequest, SubscribeRequest};
use crate::components::{BuildError, Component, ComponentError, ComponentSpec, MetadataError, TypeEntry};
use crate::components::{check_duration, duration_meta};

pub const TYPE: TypeEntry<dyn PubSub> = TypeEntry {
    name: "nats",
    validate,
    build: |crate::components::BuildContext { spec, .. }| {
        async move { NatsBroker::connect(&spec).await.map(|b| Arc::new(b) as Arc<dyn PubSub>) }.boxed()
    },
};

const URL: &str = "natsURL";
const ACK_WAIT: &str = "ackWaitTime";
const STREAM_PREFIX: &str = "streamPrefix";
const MEMORY_STORAGE: &str = "memoryStorage";
const MAX_MSGS: &str = "maxMsgs";
const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

fn validate(spec: &ComponentSpec) -> Vec<MetadataError> {
    let mut errors = Vec::new();
    check_duration(spec, ACK_WAIT, &mut errors);
    crate::components::check_number(spec, MAX_MSGS, &mut errors);
    if let Some(prefix) = spec.meta(STREAM_PREFIX)
        && prefix != stream_name_part(prefix)
    {
        errors.push(MetadataError::new(
            STREAM_PREFIX,
            format!("'{prefix}' may hold only letters, digits, - and _"),
        ));
    }
    errors
}

/// What NATS allows in stream and consumer names.
fn stream_name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn nats_error(what: &str, e: impl std::fmt::Display) -> ComponentError {
    ComponentError::Unavailable(format!("nats {what}: {e}"))
}

pub struct NatsBroker {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    ack_wait: Duration,
    prefix: String,
    storage: StorageType,
    /// Per-stream message limit; -1 for none.
    max_messages: i64,
    /// Streams already known to exist.
    streams: Mutex<HashSet<String>>,
    closed: watch::Sender<bool>,
}

impl NatsBroker {
    async fn connect(spec: &ComponentSpec) -> Result<NatsBroker, BuildError> {
        let url = spec.meta(URL).unwrap_or(DEFAULT_URL);
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .ping_interval(Duration::from_secs(5))
            .retry_on_initial_connect()
            .max_reconnects(Some(0))
            .connect(url)
            .await
            .map_err(|e| BuildError(format!("nats {url}: {e}")))?;
        client
            .flush()
            .await
            .map_err(|e| BuildError(format!("nats {url}: {e}")))?;
        let jetstream = jetstream::new(client.clone());
        let ack_wait = duration_meta(spec, ACK_WAIT, Duration::from_secs(30)).map_err(BuildError)?;
        Ok(NatsBroker {
            client,
            jetstream,
            ack_wait,
            prefix: spec.meta(STREAM_PREFIX).unwrap_or_default().to_owned(),
            storage: if spec.meta(MEMORY_STORAGE) == Some("true") {
                StorageType::Memory
            } else {
                StorageType::File
            },
            max_messages: spec.meta(MAX_MSGS).and_then(|v| v.trim().parse().ok()).unwrap_or(-1),
            streams: Mutex::new(HashSet::new()),
            closed: watch::channel(false).0,
        })
    }

    fn stream_name(&self, topic: &str) -> String {
        format!("{}{}", self.prefix, stream_name_part(topic))
    }

    async fn stream(&self, topic: &str) -> Result<jetstream::stream::Stream, ComponentError> {
        let name = self.stream_name(topic);
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![topic.to_owned()],
            storage: self.storage,
            max_messages: self.max_messages,
            ..Default::default()
        };
        let stream = self
            .jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|e| nats_error(&format!("cannot create stream {name}"), e))?;
        self.streams.lock().unwrap_or_else(|p| p.into_inner()).insert(name);
        Ok(stream)
    }
}

#[async_trait::async_trait]
impl Component for NatsBroker {
    async fn health_check(&self) -> Result<(), ComponentError> {
        // The client pings the server on its own and tracks the result; a
        // round trip here would queue behind the data of a busy connection
        // and fail the check exactly when the component is working hardest.
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            other => Err(ComponentError::Fatal(format!("nats connection is {other:?}"))),
        }
    }

    async fn close(&self) {
        let _ = self.closed.send(true);
        let _ = self.client.drain().await;
    }
}

#[async_trait::async_trait]
impl PubSub for NatsBroker {
    async fn publish(&self, req: PublishRequest) -> Result<(), ComponentError> {
        let known = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&self.stream_name(&req.topic));
        if !known {
            self.stream(&req.topic).await?;
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &req.metadata {
            headers.insert(k.as_str(), v.as_str());
        }
        headers.insert("Content-Type", req.content_type.as_str());
        self.jetstream
            .publish_with_headers(req.topic.clone(), headers, req.data.into())
            .await
            .map_err(|e| nats_error("publish failed", e))?
            .await
            .map(drop)
            .map_err(|e| nats_error("publish was not acknowledged", e))
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<Deliveries, ComponentError> {
        let stream = self.stream(&req.topic).await?;
        let durable = stream_name_part(&req.group);
        let config = pull::Config {
            durable_name: Some(durable.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            deliver_policy: DeliverPolicy::All,
            max_ack_pending: i64::try_from(req.max_in_flight.max(1)).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let consumer = stream
            .get_or_create_consumer(&durable, config)
            .await
            .map_err(|e| nats_error(&format!("cannot create consumer {durable}"), e))?;
        let messages = consumer.messages().await.map_err(|e| nats_error("cannot consume", e))?;
        let topic = req.topic.clone();
        let mut closed = self.closed.subscribe();
        let until_closed = async move {
            let _ = closed.wait_for(|c| *c).await;
        };
        let deliveries = messages.take_until(Box::pin(until_closed)).map(move |message| {
            let message = message.map_err(|e| ComponentError::Fatal(format!("nats consumer failed: {e}")))?;
            let metadata: HashMap<String, String> = message
                .headers
                .as_ref()
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| Some((k.to_string(), v.first()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            Ok(Delivery {
                message: Message {
                    topic: topic.clone(),
                    data: message.payload.to_vec(),
                    metadata,
                },
                acker: Box::new(NatsAcker(message)),
            })
        });
        Ok(Box::pin(deliveries))
    }
}

struct NatsAcker(jetstream::Message);

#[async_trait::async_trait]
impl Acker for NatsAcker {
    async fn ack(self: Box<Self>) -> Result<(), ComponentError> {
        // Double ack: wait for the server to record it, so an ack reported
        // is an ack kept.
        self.0.double_ack().await.map_err(|e| nats_error("ack failed", e))
    }

    async fn nack(self: Box<Self>) {
        let _ = self.0.ack_with(AckKind::Nak(None)).await;
    }
}
