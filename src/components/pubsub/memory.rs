//! `in-memory`: a broker inside the sidecar, for tests and the embedded
//! default. Each consumer group of a topic has a queue; a message published
//! while a topic has no group is dropped (there is nobody to hold it for),
//! and everything is lost when the sidecar stops. Within those limits it
//! keeps the contract of the others: a message leaves its group's queue only
//! when acked; one that is given back, or whose delivery is abandoned, goes
//! back to the front. A group that nobody consumes (no subscription, no
//! delivery unsettled) and that holds no message is forgotten, so that
//! subscriptions to ever new topics leave nothing behind.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Subscriptions and unsettled deliveries using it.
    users: AtomicUsize,
}

impl Group {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Message>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// topic -> group -> queue
type Topics = Arc<Mutex<HashMap<String, HashMap<String, Arc<Group>>>>>;

fn lock_topics(topics: &Topics) -> MutexGuard<'_, HashMap<String, HashMap<String, Arc<Group>>>> {
    topics.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct MemoryBroker {
    topics: Topics,
    closed: watch::Sender<bool>,
}

impl Default for MemoryBroker {
    fn default() -> Self {
        MemoryBroker {
            topics: Topics::default(),
            closed: watch::channel(false).0,
        }
    }
}

impl MemoryBroker {
    fn topics(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, Arc<Group>>>> {
        lock_topics(&self.topics)
    }
}

/// One use of a group (a subscription, or a delivery not yet settled);
/// the last one to go forgets the group if it holds no message.
struct Use {
    topics: Topics,
    topic: String,
    name: String,
    group: Arc<Group>,
}

impl Use {
    /// Takes a use of `group`, which the caller found in `topics` under
    /// the lock it still holds.
    fn take(topics: &Topics, topic: &str, name: &str, group: Arc<Group>) -> Use {
        group.users.fetch_add(1, Ordering::AcqRel);
        Use {
            topics: topics.clone(),
            topic: topic.to_owned(),
            name: name.to_owned(),
            group,
        }
    }

    fn again(&self) -> Use {
        self.group.users.fetch_add(1, Ordering::AcqRel);
        Use {
            topics: self.topics.clone(),
            topic: self.topic.clone(),
            name: self.name.clone(),
            group: self.group.clone(),
        }
    }
}

impl Drop for Use {
    fn drop(&mut self) {
        let mut topics = lock_topics(&self.topics);
        if self.group.users.fetch_sub(1, Ordering::AcqRel) != 1 || !self.group.queue().is_empty() {
            return;
        }
        if let Some(groups) = topics.get_mut(&self.topic) {
            if groups.get(&self.name).is_some_and(|g| Arc::ptr_eq(g, &self.group)) {
                groups.remove(&self.name);
            }
            if groups.is_empty() {
                topics.remove(&self.topic);
            }
        }
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
        let using = {
            let mut topics = self.topics();
            let group = topics
                .entry(req.topic.clone())
                .or_default()
                .entry(req.group.clone())
                .or_default()
                .clone();
            Use::take(&self.topics, &req.topic, &req.group, group)
        };
        let closed = self.closed.subscribe();
        let stream = futures::stream::unfold((using, closed), |(using, mut closed)| async move {
            loop {
                if *closed.borrow() {
                    return None;
                }
                let group = using.group.clone();
                let next = group.queue().pop_front();
                if let Some(message) = next {
                    let acker = Box::new(MemoryAcker {
                        message: Some(message.clone()),
                        using: using.again(),
                    });
                    return Some((Ok(Delivery { message, acker }), (using, closed)));
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
    message: Option<Message>,
    /// Keeps the group while the message may come back to it (dropped
    /// after `Drop::drop` gave it back).
    using: Use,
}

impl MemoryAcker {
    fn give_back(&mut self) {
        if let Some(message) = self.message.take() {
            let group = &self.using.group;
            group.queue().push_front(message);
            group.ready.notify_one();
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

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn request(topic: &str) -> SubscribeRequest {
        SubscribeRequest {
            topic: topic.into(),
            group: "g".into(),
            max_in_flight: 1,
            metadata: HashMap::new(),
        }
    }

    fn publish(topic: &str) -> PublishRequest {
        PublishRequest {
            topic: topic.into(),
            data: b"m".to_vec(),
            content_type: "text/plain".into(),
            metadata: HashMap::new(),
            ttl: None,
        }
    }

    /// Subscriptions to ever new topics once left a group behind each.
    #[tokio::test]
    async fn a_group_nobody_uses_is_forgotten_unless_it_holds_messages() {
        let broker = MemoryBroker::default();
        for i in 0..100 {
            drop(broker.subscribe(request(&format!("t{i}"))).await.expect("subscribed"));
        }
        assert!(broker.topics().is_empty());

        // An unsettled delivery keeps the group, and its message comes back.
        let mut stream = broker.subscribe(request("kept")).await.expect("subscribed");
        broker.publish(publish("kept")).await.expect("published");
        let delivery = stream.next().await.expect("a delivery").expect("ok");
        drop(stream);
        assert_eq!(broker.topics().len(), 1);
        drop(delivery);
        let mut again = broker.subscribe(request("kept")).await.expect("subscribed");
        let delivery = again.next().await.expect("given back").expect("ok");
        delivery.acker.ack().await.expect("acked");
        drop(again);
        assert!(broker.topics().is_empty());
    }
}
