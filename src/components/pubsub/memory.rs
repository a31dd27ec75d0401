//! `in-memory`: a broker inside the sidecar, for tests and the embedded
//! default. Each consumer group of a topic has a queue; a message published
//! while a topic has no group is dropped (there is nobody to hold it for),
//! and everything is lost when the sidecar stops. Within those limits it
//! keeps the contract of the others: a message leaves its group's queue only
//! when acked; one that is given back, or whose delivery is abandoned, goes
//! back to the front.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{Notify, watch};

use super::{Acker, Deliveries, Delivery, Message, PubSub, PubSubKeys, PublishRequest, SubscribeRequest};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn PubSub> = TypeEntry::of::<MemoryType>();

pub struct MemoryType;

impl ComponentType<dyn PubSub> for MemoryType {
    const NAME: &'static str = "in-memory";
    type Metadata = PubSubKeys;

    fn build(_ctx: BuildContext, _metadata: PubSubKeys) -> BoxFuture<'static, Result<Arc<dyn PubSub>, BuildError>> {
        async move { Ok(Arc::new(MemoryBroker::default()) as Arc<dyn PubSub>) }.boxed()
    }
}

#[derive(Default)]
struct Group {
    queue: Mutex<VecDeque<Message>>,
    ready: Notify,
}

impl Group {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Message>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct MemoryBroker {
    /// topic -> group -> queue
    topics: Mutex<HashMap<String, HashMap<String, Arc<Group>>>>,
    closed: watch::Sender<bool>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker {
            topics: Mutex::new(HashMap::new()),
            closed: watch::channel(false).0,
        }
    }
}

impl MemoryBroker {
    fn topics(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, Arc<Group>>>> {
        self.topics.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl Component for MemoryBroker {
    async fn health_check(&self) -> Result<(), ComponentError> {
        Ok(())
    }

    async fn close(&self) {
        let _ = self.closed.send(true);
    }
}

#[async_trait::async_trait]
impl PubSub for MemoryBroker {
    async fn publish(&self, req: PublishRequest) -> Result<(), ComponentError> {
        let groups: Vec<Arc<Group>> = self
            .topics()
            .get(&req.topic)
            .map(|g| g.values().cloned().collect())
            .unwrap_or_default();
        for group in groups {
            group.queue().push_back(Message {
                topic: req.topic.clone(),
                data: req.data.clone(),
                metadata: req.metadata.clone(),
            });
            group.ready.notify_one();
        }
        Ok(())
    }

    async fn subscribe(&self, req: SubscribeRequest) -> Result<Deliveries, ComponentError> {
        let group = self
            .topics()
            .entry(req.topic.clone())
            .or_default()
            .entry(req.group.clone())
            .or_default()
            .clone();
        let closed = self.closed.subscribe();
        let stream = futures::stream::unfold((group, closed), |(group, mut closed)| async move {
            loop {
                if *closed.borrow() {
                    return None;
                }
                let next = group.queue().pop_front();
                if let Some(message) = next {
                    let acker = Box::new(MemoryAcker {
                        group: group.clone(),
                        message: Some(message.clone()),
                    });
                    return Some((Ok(Delivery { message, acker }), (group, closed)));
                }
                tokio::select! {
                    _ = group.ready.notified() => {}
                    _ = closed.changed() => {}
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

/// Holds a delivered message until it is acked; anything else puts it back.
struct MemoryAcker {
    group: Arc<Group>,
    message: Option<Message>,
}

impl MemoryAcker {
    fn give_back(&mut self) {
        if let Some(message) = self.message.take() {
            self.group.queue().push_front(message);
            self.group.ready.notify_one();
        }
    }
}

#[async_trait::async_trait]
impl Acker for MemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), ComponentError> {
        self.message = None;
        Ok(())
    }

    async fn nack(mut self: Box<Self>) {
        self.give_back();
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        self.give_back();
    }
}
