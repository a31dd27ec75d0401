//! `in-memory`: counters inside the sidecar; lost when it stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;

use super::{SequencerStore, check_segment_size, segmented};
use crate::components::{Component, ComponentError, ComponentSpec, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn SequencerStore> = TypeEntry {
    name: "in-memory",
    validate,
    build: |crate::components::BuildContext { spec, .. }| {
        async move { Ok(segmented(Arc::new(MemoryCounters::default()), &spec)) }.boxed()
    },
};

fn validate(spec: &ComponentSpec) -> Vec<MetadataError> {
    let mut errors = Vec::new();
    check_segment_size(spec, &mut errors);
    errors
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
