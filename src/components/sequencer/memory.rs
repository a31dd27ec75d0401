//! `in-memory`: counters inside the sidecar; lost when it stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{SequencerStore, Sequencing, segmented};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn SequencerStore> = TypeEntry::of::<MemoryType>();

pub struct MemoryType;

impl ComponentType<dyn SequencerStore> for MemoryType {
    const NAME: &'static str = "in-memory";
    type Metadata = Sequencing;

    fn build(
        ctx: BuildContext,
        sequencing: Sequencing,
    ) -> BoxFuture<'static, Result<Arc<dyn SequencerStore>, BuildError>> {
        // The counters survive a restart: no id is handed out twice.
        let counters = ctx.retained.get_or_init(MemoryCounters::default);
        async move { Ok(segmented(counters, &sequencing, ctx.tasks)) }.boxed()
    }
}

#[derive(Default)]
pub struct MemoryCounters(Mutex<HashMap<String, i64>>);

#[async_trait::async_trait]
impl Component for MemoryCounters {
    async fn health_check(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl SequencerStore for MemoryCounters {
    async fn reserve(&self, key: &str, size: u64, floor: i64) -> Result<i64, ComponentError> {
        let mut counters = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let current = counters.entry(key.to_owned()).or_insert(0);
        *current = (*current).max(floor) + i64::try_from(size).unwrap_or(i64::MAX);
        Ok(*current)
    }
}
