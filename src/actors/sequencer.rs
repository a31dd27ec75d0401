//! Messages for `sequencer` components.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Operation;
use crate::components::sequencer::{Increment, SequencerStore};
use crate::components::{ComponentError, Sequencers};

/// The next id of a key.
pub struct NextId {
    pub key: String,
    /// Every id is above this.
    pub floor: i64,
    pub increment: Increment,
}

impl Operation<Sequencers> for NextId {
    type Output = i64;

    fn run(self, store: Arc<dyn SequencerStore>) -> BoxFuture<'static, Result<i64, ComponentError>> {
        async move { store.next_id(&self.key, self.floor, self.increment).await }.boxed()
    }
}
