//! `redis`: Redis Streams, as Dapr's Redis pub/sub uses them. A topic is a
//! stream; a consumer group is a Redis consumer group; each sidecar is a
//! consumer named by its instance id.
//!
//! Publishing is an `XADD` of `data` (and `metadata`, as JSON). Consuming
//! reads the consumer's own pending entries first (left by a crash), then
//! new ones with a blocking `XREADGROUP`; every `redeliverInterval` it
//! claims (`XAUTOCLAIM`) entries that another consumer has held longer than
//! `processingTimeout`, so a crashed sidecar's unacked messages are
//! delivered again. `XACK` after the application answers. Each
//! subscription's reads run as a task linked to the component, handing
//! entries over a small channel: when Redis goes away the task fails, the
//! component goes DOWN and is rebuilt, and the subscription, whose stream
//! ended, subscribes again on the new one.
//!
//! Connections: a blocking read holds its connection, so the subscriptions
//! of one consumer group share one [`GroupReader`], whose single
//! `XREADGROUP ... STREAMS t1 t2 ...` waits on all their topics at once;
//! everything else (group creation, own pending entries, claims, acks,
//! publishing) goes over the component's one multiplexed connection. A
//! group's reader and its connection go away with its last subscription.
//! The reader's connection waits `BLOCK` plus `readTimeout` for an answer:
//! with the client's default of 0.5 s, shorter than the 1 s block, every
//! idle read timed out and the subscription was "lost" every 0.7 s.
//!
//! Metadata: the connection keys of `redis_client`, `consumerID`, and
//! [`StreamKeys`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use redis::AsyncConnectionConfig;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{Acker, Deliveries, Delivery, Message, PubSub, PubSubKeys, PublishRequest, SubscribeRequest};
use crate::components::meta::{Seconds, Section};
use crate::components::redis_client::{self, RedisConnection, map_error};
use crate::components::tasks::Tasks;
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn PubSub> = TypeEntry::of::<RedisType>();

pub struct RedisType;

impl ComponentType<dyn PubSub> for RedisType {
    const NAME: &'static str = "redis";
    type Metadata = (RedisConnection, PubSubKeys, StreamKeys);

    fn build(
        ctx: BuildContext,
        (connection, _, streams): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn PubSub>, BuildError>> {
        async move {
            RedisBroker::connect(&connection, streams, &ctx.spec.instance_id, ctx.tasks)
                .await
                .map(|b| Arc::new(b) as Arc<dyn PubSub>)
        }
        .boxed()
    }
}

/// The Redis broker's own keys.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamKeys {
    /// An entry another consumer has held this long is claimed and
    /// delivered again.
    #[serde(default = "default_processing_timeout")]
    pub processing_timeout: Seconds,
    /// How often to look for entries to claim.
    #[serde(default = "default_redeliver_interval")]
    pub redeliver_interval: Seconds,
    /// Trim streams to about this many entries; default: no trimming.
    #[serde(default)]
    pub max_len_approx: Option<u64>,
}

impl Section for StreamKeys {}

fn default_processing_timeout() -> Seconds {
    Seconds::secs(60)
}

fn default_redeliver_interval() -> Seconds {
    Seconds::secs(15)
}

/// How long one blocking read waits before it checks for claims and close.
const BLOCK: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct Settings {
    /// How long a reply may take beyond a read's block.
    read_timeout: Duration,
    processing_timeout: Duration,
    redeliver_interval: Duration,
    max_len: Option<u64>,
    consumer: String,
}

pub struct RedisBroker {
    conn: ConnectionManager,
    settings: Settings,
    closed: watch::Sender<bool>,
    /// Where subscriptions run their reads.
    tasks: Tasks,
    readers: Readers,
}

impl RedisBroker {
    async fn connect(
        connection: &RedisConnection,
        streams: StreamKeys,
        instance_id: &str,
        tasks: Tasks,
    ) -> Result<RedisBroker, BuildError> {
        let settings = Settings {
            read_timeout: connection.read_timeout.into(),
            processing_timeout: streams.processing_timeout.into(),
            redeliver_interval: streams.redeliver_interval.into(),
            max_len: streams.max_len_approx,
            consumer: if instance_id.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                instance_id.to_owned()
            },
        };
        let conn = connection.connect().await?;
        let client = redis::Client::open(connection.url()).map_err(|e| BuildError(format!("redis pub/sub: {e}")))?;
        let readers = Readers {
            client,
            conn: conn.clone(),
            settings: settings.clone(),
            tasks: tasks.clone(),
            groups: Arc::default(),
        };
        Ok(RedisBroker {
            conn,
            settings,
            closed: watch::channel(false).0,
            tasks,
            readers,
        })
    }
}

#[async_trait::async_trait]
impl Component for RedisBroker {
    async fn health_check(&self) -> Result<(), ComponentError> {
        redis_client::ping(&mut self.conn.clone()).await
    }

    async fn close(&self) {
        let _ = self.closed.send(true);
    }
}

#[async_trait::async_trait]
impl PubSub for RedisBroker {
    async fn publish(&self, req: PublishRequest) -> Result<(), ComponentError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&req.topic);
        if let Some(max) = self.settings.max_len {
            cmd.arg("MAXLEN").arg("~").arg(max);
        }
        cmd.arg("*").arg("data").arg(req.data.as_slice());
        if !req.metadata.is_empty() {
            let metadata = serde_json::to_string(&req.metadata).unwrap_or_default();
            cmd.arg("metadata").arg(metadata);
        }
        cmd.query_async::<String>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(map_error)
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<Deliveries, ComponentError> {
        let mut conn = self.conn.clone();
        // From "0": a new group gets what the stream already holds, so a
        // message published before the first subscription is not lost.
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&req.topic)
            .arg(&req.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<String>(&mut conn)
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(map_error(e)),
        }
        let mut consumer = Consumer {
            topic: req.topic,
            group: req.group,
            batch: req.max_in_flight.clamp(1, 1000),
            settings: self.settings.clone(),
            acks: conn,
            readers: self.readers.clone(),
            buffer: VecDeque::new(),
            // Our own pending entries first: what a crash left unacked.
            own_pending: true,
            next_claim: Instant::now() + self.settings.redeliver_interval,
            closed: self.closed.subscribe(),
            failed: false,
        };
        // Entries wait here for a free delivery slot; those read but never
        // delivered stay pending, so the next subscription gets them.
        // Boxed: a channel allocates room for 32 items when it is made.
        let (tx, rx) = mpsc::channel::<Box<Result<Delivery, ComponentError>>>(1);
        self.tasks.spawn_scoped("stream consumer", async move {
            loop {
                let next = tokio::select! {
                    next = consumer.next() => next,
                    () = tx.closed() => return Ok(()),
                };
                match next {
                    Some(Ok(delivery)) => {
                        if tx.send(Box::new(Ok(delivery))).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(Err(ComponentError::Fatal(error))) => {
                        return Err(format!("consumer of {} failed: {error}", consumer.topic));
                    }
                    // Redis answered with an error: the subscription hears
                    // it and subscribes again.
                    Some(Err(error)) => {
                        let _ = tx.send(Box::new(Err(error))).await;
                        return Ok(());
                    }
                    None => return Ok(()),
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx).map(|d| *d)))
    }
}

struct Consumer {
    topic: String,
    group: String,
    batch: usize,
    settings: Settings,
    /// Every command but the blocking read.
    acks: ConnectionManager,
    readers: Readers,
    buffer: VecDeque<StreamId>,
    own_pending: bool,
    next_claim: Instant,
    closed: watch::Receiver<bool>,
    failed: bool,
}

impl Consumer {
    /// The next delivery; `None` once closed, an error (and then `None`)
    /// when Redis fails.
    async fn next(&mut self) -> Option<Result<Delivery, ComponentError>> {
        loop {
            if self.failed || *self.closed.borrow() {
                return None;
            }
            if let Some(entry) = self.buffer.pop_front() {
                return Some(Ok(self.delivery(entry)));
            }
            let fetched = if self.own_pending {
                self.own_pending = false;
                self.read_pending().await
            } else if Instant::now() >= self.next_claim {
                self.next_claim = Instant::now() + self.settings.redeliver_interval;
                self.claim().await
            } else {
                self.readers.read_new(&self.group, &self.topic, self.batch).await
            };
            match fetched {
                Ok(entries) => self.buffer.extend(entries),
                Err(e) => {
                    // Yield the error once, then end: the caller resubscribes.
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// This consumer's own pending entries (what a crash left unacked).
    async fn read_pending(&mut self) -> Result<Vec<StreamId>, ComponentError> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.settings.consumer)
            .arg("COUNT")
            .arg(self.batch)
            .arg("STREAMS")
            .arg(&self.topic)
            .arg("0")
            .query_async(&mut self.acks)
            .await
            .map_err(map_error)?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    async fn claim(&mut self) -> Result<Vec<StreamId>, ComponentError> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.topic)
            .arg(&self.group)
            .arg(&self.settings.consumer)
            .arg(self.settings.processing_timeout.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.batch)
            .query_async(&mut self.acks)
            .await
            .map_err(map_error)?;
        Ok(reply.claimed)
    }

    fn delivery(&self, entry: StreamId) -> Delivery {
        let data = match entry.map.get("data") {
            Some(redis::Value::BulkString(bytes)) => bytes.clone(),
            Some(redis::Value::SimpleString(s)) => s.clone().into_bytes(),
            _ => Vec::new(),
        };
        let metadata = match entry.map.get("metadata") {
            Some(redis::Value::BulkString(bytes)) => serde_json::from_slice(bytes.as_slice()).unwrap_or_default(),
            _ => HashMap::new(),
        };
        Delivery {
            message: Message {
                topic: self.topic.clone(),
                data,
                metadata,
            },
            acker: Box::new(StreamAcker {
                conn: self.acks.clone(),
                topic: self.topic.clone(),
                group: self.group.clone(),
                id: entry.id,
            }),
        }
    }
}

struct StreamAcker {
    conn: ConnectionManager,
    topic: String,
    group: String,
    id: String,
}

#[async_trait::async_trait]
impl Acker for StreamAcker {
    async fn ack(self: Box<Self>) -> Result<(), ComponentError> {
        let mut conn = self.conn.clone();
        redis::cmd("XACK")
            .arg(&self.topic)
            .arg(&self.group)
            .arg(&self.id)
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(map_error)
    }
}

/// The blocking readers of one broker, one per consumer group in use.
#[derive(Clone)]
struct Readers {
    client: redis::Client,
    /// For `CLIENT UNBLOCK`.
    conn: ConnectionManager,
    settings: Settings,
    tasks: Tasks,
    groups: Arc<Mutex<HashMap<String, Arc<GroupReader>>>>,
}

/// A subscription waiting for new entries of its topic.
struct Waiter {
    batch: usize,
    since: Instant,
    answer: oneshot::Sender<Result<Vec<StreamId>, ComponentError>>,
}

/// The subscriptions of one consumer group waiting for new entries, read
/// by one blocking `XREADGROUP` over all their topics.
#[derive(Default)]
struct GroupReader {
    waiting: Mutex<HashMap<String, Vec<Waiter>>>,
    /// While a read blocks: the reader's connection id and the topics it
    /// waits on. A subscription to another topic unblocks it.
    blocked: Mutex<Option<(i64, HashSet<String>)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Readers {
    /// New entries of `topic` for `group`, at most `batch` (more if the
    /// group's read asked for more); empty after about `BLOCK` without any.
    async fn read_new(&self, group: &str, topic: &str, batch: usize) -> Result<Vec<StreamId>, ComponentError> {
        let (answer, answered) = oneshot::channel();
        let reader = {
            let mut groups = lock(&self.groups);
            let reader = match groups.get(group) {
                Some(reader) => reader.clone(),
                None => {
                    let reader = Arc::new(GroupReader::default());
                    groups.insert(group.to_owned(), reader.clone());
                    let (readers, group, task_reader) = (self.clone(), group.to_owned(), reader.clone());
                    self.tasks
                        .spawn_scoped("stream reader", async move { readers.run(group, task_reader).await });
                    reader
                }
            };
            lock(&reader.waiting).entry(topic.to_owned()).or_default().push(Waiter {
                batch,
                since: Instant::now(),
                answer,
            });
            reader
        };
        // A read blocked on other topics would not see this one before it
        // times out: cut it short (once per read).
        let unblock = {
            let mut blocked = lock(&reader.blocked);
            match blocked.as_ref() {
                Some((id, topics)) if !topics.contains(topic) => {
                    let id = *id;
                    *blocked = None;
                    Some(id)
                }
                _ => None,
            }
        };
        if let Some(id) = unblock {
            let _ = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(id)
                .query_async::<i64>(&mut self.conn.clone())
                .await;
        }
        // The reader ended (its component stops): nothing read.
        answered.await.unwrap_or_else(|_| Ok(Vec::new()))
    }

    /// Reads for `group` while any subscription waits; ends, dropping its
    /// connection, when none is left.
    async fn run(&self, group: String, reader: Arc<GroupReader>) -> Result<(), String> {
        let mut conn: Option<(MultiplexedConnection, i64)> = None;
        loop {
            let topics = {
                let mut waiting = lock(&reader.waiting);
                waiting.retain(|_, waiters| {
                    waiters.retain(|w| !w.answer.is_closed());
                    !waiters.is_empty()
                });
                waiting
                    .iter()
                    .map(|(topic, waiters)| (topic.clone(), waiters.iter().map(|w| w.batch).max().unwrap_or(1)))
                    .collect::<Vec<_>>()
            };
            if topics.is_empty() {
                // Retire, unless a waiter arrived since (then read again).
                let mut groups = lock(&self.groups);
                if lock(&reader.waiting).is_empty() {
                    groups.remove(&group);
                    return Ok(());
                }
                continue;
            }
            let (mut connection, id) = match conn.take() {
                Some(c) => c,
                None => match self.connect().await {
                    Ok(c) => c,
                    Err(error) => {
                        answer_all(&reader, Err(error));
                        continue;
                    }
                },
            };
            let batch = topics.iter().map(|(_, b)| *b).max().unwrap_or(1);
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(&group)
                .arg(&self.settings.consumer)
                .arg("COUNT")
                .arg(batch)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS");
            for (topic, _) in &topics {
                cmd.arg(topic);
            }
            for _ in &topics {
                cmd.arg(">");
            }
            *lock(&reader.blocked) = Some((id, topics.iter().map(|(t, _)| t.clone()).collect()));
            let reply: Result<Option<StreamReadReply>, _> = cmd.query_async(&mut connection).await;
            *lock(&reader.blocked) = None;
            match reply {
                Ok(reply) => {
                    conn = Some((connection, id));
                    let mut waiting = lock(&reader.waiting);
                    for key in reply.map(|r| r.keys).unwrap_or_default() {
                        if let Some(waiters) = waiting.get_mut(&key.key)
                            && !waiters.is_empty()
                        {
                            let _ = waiters.remove(0).answer.send(Ok(key.ids));
                        }
                    }
                    // Those that waited a whole block hear "nothing yet",
                    // so that they look for claims and for their close.
                    let now = Instant::now();
                    for waiters in waiting.values_mut() {
                        let (done, wait): (Vec<Waiter>, Vec<Waiter>) =
                            waiters.drain(..).partition(|w| now.duration_since(w.since) >= BLOCK);
                        *waiters = wait;
                        for waiter in done {
                            let _ = waiter.answer.send(Ok(Vec::new()));
                        }
                    }
                }
                // A failed read fails every subscription waiting on it
                // (each then subscribes again); the connection is made anew.
                Err(error) => answer_all(&reader, Err(map_error(error))),
            }
        }
    }

    /// A connection for blocking reads, and its id for `CLIENT UNBLOCK`.
    async fn connect(&self) -> Result<(MultiplexedConnection, i64), ComponentError> {
        let config = AsyncConnectionConfig::new().set_response_timeout(Some(BLOCK + self.settings.read_timeout));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(map_error)?;
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .map_err(map_error)?;
        Ok((conn, id))
    }
}

fn answer_all(reader: &GroupReader, answer: Result<Vec<StreamId>, ComponentError>) {
    let waiting = std::mem::take(&mut *lock(&reader.waiting));
    for waiter in waiting.into_values().flatten() {
        let _ = waiter.answer.send(answer.clone());
    }
}
