//! `mqtt`: MQTT 3.1.1 through rumqttc, QoS 1.
//!
//! Publishing returns once the broker's PUBACK arrives. Each subscription
//! is a client of its own with a persistent session (`cleanSession = false`)
//! named `<consumer group>-<sidecar instance>-<topic>`, subscribed to the
//! shared subscription `$share/<consumer group>/<topic>`: sidecars of one
//! group share the messages, and the broker keeps a sidecar's messages while
//! it reconnects. Acks are manual: a message is PUBACKed only after the
//! application answered, so one the sidecar never settled is redelivered.
//!
//! The publisher's event loop and each subscription's run as tasks linked
//! to the component: a lost connection fails the task, so the component
//! goes DOWN and is rebuilt on fresh connections (rumqttc would otherwise
//! reconnect quietly while the component claimed UP).
//!
//! Metadata: `consumerID`, and [`MqttKeys`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use super::{Acker, Deliveries, Delivery, Message, PubSub, PubSubKeys, PublishRequest, SubscribeRequest};
use crate::components::meta::{Seconds, Section};
use crate::components::tasks::Tasks;
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn PubSub> = TypeEntry::of::<MqttType>();

pub struct MqttType;

impl ComponentType<dyn PubSub> for MqttType {
    const NAME: &'static str = "mqtt";
    type Metadata = (PubSubKeys, MqttKeys);

    fn build(
        ctx: BuildContext,
        (pubsub, keys): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn PubSub>, BuildError>> {
        async move {
            let group = pubsub.group(&ctx.spec.app_id);
            MqttBroker::connect(keys, group, &ctx.spec.instance_id, ctx.tasks)
                .await
                .map(|b| Arc::new(b) as Arc<dyn PubSub>)
        }
        .boxed()
    }
}

/// The MQTT broker's own keys.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttKeys {
    /// The broker: `tcp://host:port`, `mqtt://host:port` or `host:port`.
    #[serde(default = "default_url")]
    pub url: String,
    /// User name; none by default.
    #[serde(default)]
    pub username: Option<String>,
    /// Password, sent with `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// The MQTT keep-alive interval.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: Seconds,
}

fn default_url() -> String {
    "tcp://127.0.0.1:1883".to_owned()
}

fn default_keep_alive() -> Seconds {
    Seconds::secs(30)
}

impl Section for MqttKeys {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        if let Err(e) = host_port(&self.url) {
            errors.push(MetadataError::new("url", e));
        }
    }
}

/// How long a publish may wait for its PUBACK.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// `tcp://host:port`, `mqtt://host:port` or `host:port`.
fn host_port(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("tcp://")
        .or_else(|| url.strip_prefix("mqtt://"))
        .unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("'{url}' has no port; write e.g. tcp://127.0.0.1:1883"))?;
    let port = port.parse().map_err(|_| format!("'{url}' has no valid port"))?;
    Ok((host.to_owned(), port))
}

/// What MQTT client ids may hold here.
fn id_part(s: &str) -> String {
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

#[derive(Clone)]
struct Settings {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    keep_alive: Duration,
    instance: String,
}

impl Settings {
    fn options(&self, client_id: String, clean_session: bool) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, self.host.clone(), self.port);
        options.set_keep_alive(self.keep_alive).set_clean_session(clean_session);
        if let (Some(user), password) = (&self.username, &self.password) {
            options.set_credentials(user.clone(), password.clone().unwrap_or_default());
        }
        options
    }
}

/// Publishes waiting for their PUBACK: first in line until the event loop
/// names their packet id, then by id.
#[derive(Default)]
struct PendingAcks {
    unnumbered: VecDeque<oneshot::Sender<Result<(), String>>>,
    by_id: HashMap<u16, oneshot::Sender<Result<(), String>>>,
}

pub struct MqttBroker {
    publisher: AsyncClient,
    pending: Arc<Mutex<PendingAcks>>,
    /// Keeps publishes in the order their waiters were queued.
    publish_order: tokio::sync::Mutex<()>,
    connected: Arc<AtomicBool>,
    events: AbortHandle,
    settings: Settings,
    closed: watch::Sender<bool>,
    /// Where subscriptions run their event loops.
    tasks: Tasks,
}

impl MqttBroker {
    pub(crate) async fn connect(
        keys: MqttKeys,
        group: String,
        instance_id: &str,
        tasks: Tasks,
    ) -> Result<MqttBroker, BuildError> {
        let (host, port) = host_port(&keys.url).map_err(BuildError)?;
        let settings = Settings {
            host,
            port,
            username: keys.username,
            password: keys.password,
            keep_alive: keys.keep_alive.into(),
            instance: if instance_id.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                instance_id.to_owned()
            },
        };
        let client_id = format!("{}-pub-{}", id_part(&group), uuid::Uuid::new_v4().simple());
        let (publisher, mut eventloop) = AsyncClient::new(settings.options(client_id, true), 1024);
        // Wait for the CONNACK, so a broker that is not there fails the build.
        let connected = Arc::new(AtomicBool::new(false));
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| {
            BuildError(format!(
                "mqtt {}:{}: no CONNACK within 5s",
                settings.host, settings.port
            ))
        })?
        .map_err(|e| BuildError(format!("mqtt {}:{}: {e}", settings.host, settings.port)))?;
        connected.store(true, Ordering::Release);
        let pending = Arc::new(Mutex::new(PendingAcks::default()));
        let events = tasks.spawn(
            "publisher connection",
            publisher_events(eventloop, pending.clone(), connected.clone()),
        );
        Ok(MqttBroker {
            publisher,
            pending,
            publish_order: tokio::sync::Mutex::new(()),
            connected,
            events,
            settings,
            closed: watch::channel(false).0,
            tasks,
        })
    }
}

impl Drop for MqttBroker {
    fn drop(&mut self) {
        self.events.abort();
    }
}

fn lock(pending: &Mutex<PendingAcks>) -> std::sync::MutexGuard<'_, PendingAcks> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drives the publisher's connection and settles publishes as their PUBACKs
/// arrive, until the connection is lost.
async fn publisher_events(
    mut eventloop: EventLoop,
    pending: Arc<Mutex<PendingAcks>>,
    connected: Arc<AtomicBool>,
) -> Result<(), String> {
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut p = lock(&pending);
                if let Some(waiter) = p.unnumbered.pop_front() {
                    p.by_id.insert(pkid, waiter);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(waiter) = lock(&pending).by_id.remove(&ack.pkid) {
                    let _ = waiter.send(Ok(()));
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => connected.store(true, Ordering::Release),
            Ok(_) => {}
            Err(e) => {
                connected.store(false, Ordering::Release);
                let message = format!("mqtt connection lost: {e}");
                let waiters = {
                    let mut p = lock(&pending);
                    let mut waiters: Vec<_> = p.unnumbered.drain(..).collect();
                    waiters.extend(p.by_id.drain().map(|(_, w)| w));
                    waiters
                };
                for waiter in waiters {
                    let _ = waiter.send(Err(message.clone()));
                }
                return Err(message);
            }
        }
    }
}

#[async_trait::async_trait]
impl Component for MqttBroker {
    async fn health_check(&self) -> Result<(), ComponentError> {
        if self.connected.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(ComponentError::Fatal(format!(
                "mqtt {}:{}: not connected",
                self.settings.host, self.settings.port
            )))
        }
    }

    async fn close(&self) {
        let _ = self.closed.send(true);
        let _ = self.publisher.disconnect().await;
        self.events.abort();
    }
}

#[async_trait::async_trait]
impl PubSub for MqttBroker {
    async fn publish(&self, req: PublishRequest) -> Result<(), ComponentError> {
        if !self.connected.load(Ordering::Acquire) {
            return Err(ComponentError::Fatal("mqtt: not connected".into()));
        }
        let (tx, rx) = oneshot::channel();
        {
            let _order = self.publish_order.lock().await;
            lock(&self.pending).unnumbered.push_back(tx);
            self.publisher
                .publish(req.topic.clone(), QoS::AtLeastOnce, false, req.data)
                .await
                .map_err(|e| ComponentError::Fatal(format!("mqtt publish failed: {e}")))?;
        }
        match tokio::time::timeout(PUBLISH_TIMEOUT, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(ComponentError::Unavailable(e)),
            Ok(Err(_)) => Err(ComponentError::Unavailable("mqtt: the connection closed".into())),
            Err(_) => Err(ComponentError::Unavailable(format!(
                "mqtt: no PUBACK within {PUBLISH_TIMEOUT:?} for topic {}",
                req.topic
            ))),
        }
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<Deliveries, ComponentError> {
        let client_id = format!(
            "{}-{}-{}",
            id_part(&req.group),
            id_part(&self.settings.instance),
            id_part(&req.topic)
        );
        // Room for every ack the deliveries may send at once: an ack that
        // waited for the event loop while the event loop waited for a free
        // delivery would stall the subscription.
        let (client, mut eventloop) = AsyncClient::new(
            {
                let mut options = self.settings.options(client_id, false);
                options.set_manual_acks(true);
                options
            },
            1024,
        );
        let filter = format!("$share/{}/{}", req.group, req.topic);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .map_err(|e| ComponentError::Fatal(format!("mqtt subscribe failed: {e}")))?;
        // Unbounded, so the event loop never waits on the consumer; the
        // broker's in-flight window (unacked QoS 1 messages per client)
        // bounds what can pile up here.
        let (tx, rx) = mpsc::unbounded_channel();
        let mut closed = self.closed.subscribe();
        let topic = req.topic.clone();
        self.tasks.spawn_scoped("subscriber connection", async move {
            let mut lost = None;
            loop {
                let event = tokio::select! {
                    event = eventloop.poll() => event,
                    _ = closed.wait_for(|c| *c) => break,
                    () = tx.closed() => break,
                };
                match event {
                    Ok(Event::Incoming(Incoming::Publish(publish))) => {
                        let delivery = Delivery {
                            message: Message {
                                topic: topic.clone(),
                                data: publish.payload.to_vec(),
                                metadata: HashMap::new(),
                            },
                            acker: Box::new(MqttAcker {
                                client: client.clone(),
                                publish,
                            }),
                        };
                        if tx.send(Ok(delivery)).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // The session persists: the next subscription gets
                        // what this one left unacked.
                        lost = Some(format!("mqtt subscriber lost on topic {topic}: {e}"));
                        break;
                    }
                }
            }
            match lost {
                Some(error) => Err(error),
                None => {
                    let _ = client.disconnect().await;
                    Ok(())
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)))
    }
}

struct MqttAcker {
    client: AsyncClient,
    publish: rumqttc::Publish,
}

#[async_trait::async_trait]
impl Acker for MqttAcker {
    async fn ack(self: Box<Self>) -> Result<(), ComponentError> {
        self.client
            .ack(&self.publish)
            .await
            .map_err(|e| ComponentError::Unavailable(format!("mqtt ack failed: {e}")))
    }
}
