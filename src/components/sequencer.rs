//! The `sequencer` building block: ids per key that are unique and
//! increasing, across sidecars sharing a store and across restarts.
//!
//! A store reserves ranges atomically ([`SequencerStore::reserve`]); every
//! range starts above the key's `biggerThan` floor. `STRONG` asks the store
//! for every id, so ids are increasing globally. `WEAK` hands ids out of a
//! segment of `segmentSize` ids reserved at once, prefetching the next
//! segment while the current one still has a tenth left; ids are then
//! increasing for each caller of one sidecar and unique everywhere. A
//! restart throws the rest of a segment away rather than hand an id out
//! twice.

pub mod memory;
pub mod mysql;
pub mod postgres;
pub mod redis;
mod sql;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::{Component, ComponentError, ComponentSpec, MetadataError};

/// Metadata: ids reserved per segment for `WEAK` ids.
pub const SEGMENT_SIZE: &str = "segmentSize";
const DEFAULT_SEGMENT_SIZE: u64 = 1000;

/// How ids must increase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Increment {
    /// For each caller; served from segments.
    Weak,
    /// Globally: every id from the store.
    Strong,
}

/// Where ids come from.
#[async_trait::async_trait]
pub trait SequencerStore: Component {
    /// Reserves the `size` ids after `max(current, floor)` for `key`, and
    /// answers the last of them: the range is `last - size + 1 ..= last`.
    async fn reserve(&self, key: &str, size: u64, floor: i64) -> Result<i64, ComponentError>;

    /// The next id. Stores built with [`segmented`] serve `WEAK` ids from
    /// segments; on their own, every id comes from the store.
    async fn next_id(&self, key: &str, floor: i64, _increment: Increment) -> Result<i64, ComponentError> {
        self.reserve(key, 1, floor).await
    }
}

/// Checks `segmentSize` and `keyPrefix`, for every sequencer type.
pub(crate) fn check_segment_size(spec: &ComponentSpec, errors: &mut Vec<MetadataError>) {
    if let Some(v) = spec.meta(SEGMENT_SIZE)
        && !v.trim().parse::<u64>().is_ok_and(|n| n > 0)
    {
        errors.push(MetadataError::new(
            SEGMENT_SIZE,
            format!("'{v}' is not a positive number of ids"),
        ));
    }
    super::check_key_prefix(spec, errors);
}

/// Wraps a store so that `WEAK` ids come from segments.
pub fn segmented(store: Arc<dyn SequencerStore>, spec: &ComponentSpec) -> Arc<dyn SequencerStore> {
    let size = spec
        .meta(SEGMENT_SIZE)
        .and_then(|v| v.trim().parse().ok())
        .filter(|n: &u64| *n > 0)
        .unwrap_or(DEFAULT_SEGMENT_SIZE);
    Arc::new(Segmented {
        store,
        size,
        keys: Mutex::new(HashMap::new()),
    })
}

/// The ids of one key that this sidecar holds.
#[derive(Default)]
struct Segment {
    /// Next id to hand out.
    next: i64,
    /// Last id of the segment (`next > last`: empty).
    last: i64,
    /// The next segment, being reserved.
    prefetch: Option<JoinHandle<Result<i64, ComponentError>>>,
}

struct Segmented {
    store: Arc<dyn SequencerStore>,
    size: u64,
    keys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Segment>>>>,
}

impl Segmented {
    fn start(&self, last: i64) -> i64 {
        last - i64::try_from(self.size).unwrap_or(i64::MAX) + 1
    }
}

#[async_trait::async_trait]
impl Component for Segmented {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.store.health_check().await
    }

    async fn close(&self) {
        self.store.close().await;
    }
}

#[async_trait::async_trait]
impl SequencerStore for Segmented {
    async fn reserve(&self, key: &str, size: u64, floor: i64) -> Result<i64, ComponentError> {
        self.store.reserve(key, size, floor).await
    }

    async fn next_id(&self, key: &str, floor: i64, increment: Increment) -> Result<i64, ComponentError> {
        if increment == Increment::Strong {
            return self.store.reserve(key, 1, floor).await;
        }
        let segment = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone();
        let mut s = segment.lock().await;
        if s.next > s.last || s.next <= floor {
            let prefetched = match s.prefetch.take() {
                Some(handle) => handle.await.ok().and_then(Result::ok),
                None => None,
            };
            let last = match prefetched {
                Some(last) => last,
                None => self.store.reserve(key, self.size, floor).await?,
            };
            s.next = self.start(last).max(floor.saturating_add(1));
            s.last = last;
        }
        let id = s.next;
        s.next += 1;
        // A tenth left: reserve the next segment in the background.
        let left = u64::try_from(s.last - s.next + 1).unwrap_or(0);
        if left <= self.size / 10 && s.prefetch.is_none() {
            let (store, key, size) = (self.store.clone(), key.to_owned(), self.size);
            s.prefetch = Some(tokio::spawn(async move { store.reserve(&key, size, floor).await }));
        }
        Ok(id)
    }
}
