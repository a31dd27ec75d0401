//! The `sequencer` building block: ids per key that are unique and
//! increasing, across sidecars sharing a store and across restarts.
//!
//! A store reserves ranges atomically ([`SequencerStore::reserve`]); every
//! range starts above the key's `biggerThan` floor ([`floor`]). `STRONG` asks the store
//! for every id, so ids are increasing globally. `WEAK` hands ids out of a
//! segment of `segmentSize` ids reserved at once, prefetching the next
//! segment while the current one still has a tenth left; ids are then
//! increasing for each caller of one sidecar and unique everywhere. A
//! restart throws the rest of a segment away rather than hand an id out
//! twice.

pub mod etcd;
pub mod memory;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod snowflake;
mod sql;
pub mod sqlite;
pub mod zookeeper;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::meta::{Metadata, Parser, Section};
use super::tasks::Tasks;
use super::{Component, ComponentError, ComponentSpec, KeyPrefixSection, MetadataError};

/// The metadata keys that carry Layotto's `biggerThan` table:
/// `biggerThan.<key>` = the floor of `<key>`. The config layer writes
/// them from a sequencer's `biggerThan`; Dapr-style metadata may name them
/// directly.
pub const BIGGER_THAN: &str = "biggerThan.";

/// What every sequencer type reads from its metadata, besides its
/// connection.
#[derive(Clone, Debug)]
pub struct Sequencing {
    pub segment: SegmentKeys,
    /// `biggerThan.<key>`: every id of `<key>` is above this.
    pub bigger_than: BTreeMap<String, i64>,
    pub key_prefix: KeyPrefixSection,
}

impl Metadata for Sequencing {
    fn read(parser: &mut Parser<'_>) -> Option<Self> {
        let segment = parser.section();
        let bigger_than = parser.prefixed(BIGGER_THAN, "a whole number");
        let key_prefix = parser.section();
        Some(Sequencing {
            segment: segment?,
            bigger_than,
            key_prefix: key_prefix?,
        })
    }

    fn check(&self, errors: &mut Vec<MetadataError>) {
        Section::check(&self.segment, errors);
    }
}

/// The segment keys of every sequencer type.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentKeys {
    /// Ids reserved at once for `WEAK` ids; at least 1.
    #[serde(default = "default_segment_size")]
    pub segment_size: u64,
    /// Layotto's name for the segment size; wins over `segmentSize`.
    #[serde(default)]
    pub segment_step: Option<u64>,
    /// Layotto's switch for segments: `false` asks the store for every
    /// id, `WEAK` ones included.
    #[serde(default = "default_true")]
    pub segment_cache_enable: bool,
}

fn default_true() -> bool {
    true
}

impl SegmentKeys {
    /// The ids reserved at once: 1 when segments are off.
    pub fn size(&self) -> u64 {
        if self.segment_cache_enable {
            self.segment_step.unwrap_or(self.segment_size).max(1)
        } else {
            1
        }
    }
}

fn default_segment_size() -> u64 {
    1000
}

impl Section for SegmentKeys {
    fn check(&self, errors: &mut Vec<MetadataError>) {
        if self.segment_size == 0 {
            errors.push(MetadataError::new("segmentSize", "'0' is not a positive number of ids"));
        }
        if self.segment_step == Some(0) {
            errors.push(MetadataError::new("segmentStep", "'0' is not a positive number of ids"));
        }
    }
}

/// The `biggerThan` floor of `key` (the key as the application names it):
/// every id of it is above this; 0 when none is set. Read per request by
/// the API layer, which knows the application's key.
pub fn floor(spec: &ComponentSpec, key: &str) -> i64 {
    spec.metadata
        .get(&format!("{BIGGER_THAN}{key}"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

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

/// Wraps a store so that `WEAK` ids come from segments of its configured
/// size. The next segment is reserved in the background, as a task linked
/// to the component through `tasks` (a panic there is a component failure).
pub fn segmented(store: Arc<dyn SequencerStore>, sequencing: &Sequencing, tasks: Tasks) -> Arc<dyn SequencerStore> {
    let size = sequencing.segment.size();
    Arc::new(Segmented {
        store,
        size,
        keys: Mutex::new(HashMap::new()),
        tasks,
    })
}

/// The ids of one key that this sidecar holds.
#[derive(Default)]
struct Segment {
    /// Next id to hand out.
    next: i64,
    /// Last id of the segment (`next > last`: empty).
    last: i64,
    /// The next segment, being reserved: its last id, or why not.
    prefetch: Option<oneshot::Receiver<Result<i64, ComponentError>>>,
}

struct Segmented {
    store: Arc<dyn SequencerStore>,
    size: u64,
    keys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Segment>>>>,
    tasks: Tasks,
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
                // A failed (or aborted) prefetch: reserve now instead.
                Some(prefetch) => prefetch.await.ok().and_then(Result::ok),
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
            let (reserved, prefetch) = oneshot::channel();
            self.tasks.spawn_scoped("segment prefetch", async move {
                let _ = reserved.send(store.reserve(&key, size, floor).await);
                Ok(())
            });
            s.prefetch = Some(prefetch);
        }
        Ok(id)
    }
}
