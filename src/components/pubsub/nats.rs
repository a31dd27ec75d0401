//! `nats`: NATS JetStream. Each topic is a stream (capturing the subject of
//! the same name); each consumer group a durable pull consumer with
//! explicit acks, so sidecars of one group share its messages and a
//! message not acked within `ackWaitTime` is delivered again.
//!
//! Publishing waits for JetStream's publish ack. Consuming acks after the
//! application answered; giving a message back naks it for immediate
//! redelivery.
//!
//! Metadata: `consumerID`, and [`NatsKeys`].

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, AckKind};
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use super::{Acker, Deliveries, Delivery, Message, PubSub, PubSubKeys, PublishRequest, SubscribeRequest};
use crate::components::meta::{Seconds, Section};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn PubSub> = TypeEntry::of::<NatsType>();

pub struct NatsType;

impl ComponentType<dyn PubSub> for NatsType {
    const NAME: &'static str = "nats";
    type Metadata = (PubSubKeys, NatsKeys);

    fn build(_ctx: BuildContext, (_, keys): Self::Metadata) -> BoxFuture<'static, Result<Arc<dyn PubSub>, BuildError>> {
        async move { NatsBroker::connect(keys).await.map(|b| Arc::new(b) as Arc<dyn PubSub>) }.boxed()
    }
}

/// The NATS broker's own keys.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NatsKeys {
    /// The server.
    #[serde(rename = "natsURL", default = "default_url")]
    pub nats_url: String,
    /// A message not acked within this long is delivered again.
    #[serde(default = "default_ack_wait")]
    pub ack_wait_time: Seconds,
    /// Prefix of stream names (letters, digits, - and _); default none.
    #[serde(default)]
    pub stream_prefix: String,
    /// `true` keeps streams in memory; default: on file.
    #[serde(default)]
    pub memory_storage: bool,
    /// A stream keeps at most this many messages, dropping the oldest;
    /// default unlimited.
    #[serde(default)]
    pub max_msgs: Option<u64>,
}

fn default_url() -> String {
    "nats://127.0.0.1:4222".to_owned()
}

fn default_ack_wait() -> Seconds {
    Seconds::secs(30)
}

impl Section for NatsKeys {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        let prefix = &self.stream_prefix;
        if *prefix != stream_name_part(prefix) {
            errors.push(MetadataError::new(
                "streamPrefix",
                format!("'{prefix}' may hold only letters, digits, - and _"),
            ));
        }
    }
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
    let text = e.to_string();
    // The server's answers that no retry can change (a payload over its
    // limit, a subject or header it refuses) are the client's to fix.
    let lower = text.to_ascii_lowercase();
    let permanent = [
        "maximum payload",
        "max payload",
        "invalid subject",
        "invalid header",
        "headers too large",
    ]
    .iter()
    .any(|p| lower.contains(p));
    if permanent {
        ComponentError::InvalidArgument(format!("nats {what}: {text}"))
    } else {
        ComponentError::Unavailable(format!("nats {what}: {text}"))
    }
}

/// Checks a topic before it becomes a subject and a stream: one literal
/// subject, so no wildcard (`*`, `>`), no whitespace, no empty token, and
/// no `$` prefix (`$JS.>`, `$SYS.>` are the server's). A topic `>` once
/// created a stream capturing every subject, JetStream's API included,
/// which broke JetStream for every client of the server.
pub fn check_topic(topic: &str) -> Result<(), ComponentError> {
    let bad = |why: &str| {
        Err(ComponentError::InvalidArgument(format!(
            "topic '{}' is not a NATS subject: {why}",
            crate::components::quote(topic)
        )))
    };
    if topic.is_empty() {
        return bad("it is empty");
    }
    if topic.len() > MAX_SUBJECT_BYTES {
        return bad("it is longer than 255 bytes");
    }
    if topic.starts_with('$') {
        return bad("subjects starting with '$' are reserved by the server");
    }
    if topic.contains(['*', '>']) {
        return bad("'*' and '>' are wildcards");
    }
    if topic.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it contains whitespace or control characters");
    }
    if topic.split('.').any(str::is_empty) {
        return bad("it has an empty token (a leading, trailing or doubled '.')");
    }
    Ok(())
}

/// Longest topic taken: a stream name is derived from it, and the server
/// caps stream names.
const MAX_SUBJECT_BYTES: usize = 255;

/// The message headers of `metadata`, each key and value checked against
/// NATS's header rules (a key with ':', a space, a newline or non-ASCII once
/// panicked the component).
pub(crate) fn headers(metadata: &HashMap<String, String>, content_type: &str) -> Result<HeaderMap, ComponentError> {
    let mut headers = HeaderMap::new();
    for (key, value) in metadata {
        let name = HeaderName::from_str(key).map_err(|_| {
            ComponentError::InvalidArgument(format!(
                "metadata key '{}' cannot be a NATS header: use printable ASCII without ':' or spaces",
                crate::components::quote(key)
            ))
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            ComponentError::InvalidArgument(format!(
                "metadata '{}' has a value NATS headers cannot carry (a line break)",
                crate::components::quote(key)
            ))
        })?;
        headers.insert(name, value);
    }
    let content_type = HeaderValue::from_str(content_type)
        .map_err(|_| ComponentError::InvalidArgument("the content type cannot contain a line break".to_owned()))?;
    headers.insert("Content-Type", content_type);
    Ok(headers)
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
    async fn connect(keys: NatsKeys) -> Result<NatsBroker, BuildError> {
        let url = keys.nats_url.as_str();
        // Reconnecting is the supervisor's job: the build fails at once
        // while the server is down (it is probed again at a short interval),
        // and a lost connection is tried once more, then given up, so a
        // replaced client does not keep dialling in the background. (The
        // client reads `max_reconnects(0)` as "without limit", and with
        // `retry_on_initial_connect` a build waited for a server that was
        // down, its reconnect delay growing to 4 s.)
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .ping_interval(Duration::from_secs(5))
            .max_reconnects(1)
            .connect(url)
            .await
            .map_err(|e| BuildError(format!("nats {url}: {e}")))?;
        client
            .flush()
            .await
            .map_err(|e| BuildError(format!("nats {url}: {e}")))?;
        let jetstream = jetstream::new(client.clone());
        let ack_wait = keys.ack_wait_time.into();
        Ok(NatsBroker {
            client,
            jetstream,
            ack_wait,
            prefix: keys.stream_prefix,
            storage: if keys.memory_storage {
                StorageType::Memory
            } else {
                StorageType::File
            },
            max_messages: keys.max_msgs.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
            streams: Mutex::new(HashSet::new()),
            closed: watch::channel(false).0,
        })
    }

    /// A broken connection, as the component's error: it restarts the
    /// component with a new client.
    fn disconnected(&self) -> Option<ComponentError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => None,
            other => Some(ComponentError::Fatal(format!("nats connection is {other:?}"))),
        }
    }

    /// A failed call's error: fatal when the connection is what broke.
    fn failure(&self, what: &str, e: impl std::fmt::Display) -> ComponentError {
        self.disconnected().unwrap_or_else(|| nats_error(what, e))
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
            .map_err(|e| self.failure(&format!("cannot create stream {name}"), e))?;
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
        self.disconnected().map_or(Ok(()), Err)
    }

    async fn close(&self) {
        let _ = self.closed.send(true);
        let _ = self.client.drain().await;
    }
}

#[async_trait::async_trait]
impl PubSub for NatsBroker {
    async fn publish(&self, req: PublishRequest) -> Result<(), ComponentError> {
        check_topic(&req.topic)?;
        let headers = headers(&req.metadata, &req.content_type)?;
        // Without a connection the client would buffer the message and wait
        // for an acknowledgement that cannot come.
        if let Some(error) = self.disconnected() {
            return Err(error);
        }
        let known = self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&self.stream_name(&req.topic));
        if !known {
            self.stream(&req.topic).await?;
        }
        self.jetstream
            .publish_with_headers(req.topic.clone(), headers, req.data.into())
            .await
            .map_err(|e| self.failure("publish failed", e))?
            .await
            .map(drop)
            .map_err(|e| self.failure("publish was not acknowledged", e))
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<Deliveries, ComponentError> {
        check_topic(&req.topic)?;
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
