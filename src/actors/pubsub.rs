//! Messages for `pub_subs` components.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Operation;
use crate::components::pubsub::{Deliveries, PubSub, PublishRequest, SubscribeRequest};
use crate::components::{ComponentError, PubSubs};

/// Publishes one message.
pub struct Publish(pub PublishRequest);

impl Operation<PubSubs> for Publish {
    type Output = ();

    fn run(self, broker: Arc<dyn PubSub>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { broker.publish(self.0).await }.boxed()
    }
}

/// Starts consuming; the stream belongs to the component's current
/// incarnation and ends with it.
pub struct Subscribe(pub SubscribeRequest);

impl Operation<PubSubs> for Subscribe {
    type Output = Deliveries;

    fn run(self, broker: Arc<dyn PubSub>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { broker.subscribe(self.0).await }.boxed()
    }
}
