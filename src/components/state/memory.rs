//! `in-memory`: a state store in the sidecar's memory, for tests and the
//! embedded default. Values are never evicted for space; a value with a TTL
//! disappears when it expires. Lost when the sidecar stops.
//!
//! Reads are lock-free; writes take one lock so that etag checks and
//! transactions are atomic.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use moka::Expiry;
use moka::sync::Cache;

use super::{
    Consistency, DeleteRequest, Etag, SetRequest, StateStore, StateValue, TransactionOp, check_key_prefix, check_write,
    new_etag,
};
use crate::components::{Component, ComponentError, ComponentSpec, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn StateStore> = TypeEntry {
    name: "in-memory",
    validate,
    build: |_spec| async move { Ok(Arc::new(MemoryStore::new()) as Arc<dyn StateStore>) }.boxed(),
};

fn validate(spec: &ComponentSpec) -> Vec<MetadataError> {
    let mut errors = Vec::new();
    check_key_prefix(spec, &mut errors);
    errors
}

struct Entry {
    data: Vec<u8>,
    etag: Etag,
    ttl: Option<Duration>,
    expires_at: Option<SystemTime>,
}

/// Gives each entry its own time to live.
struct PerEntryTtl;

impl Expiry<String, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Arc<Entry>, _now: Instant) -> Option<Duration> {
        value.ttl
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<Entry>,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        value.ttl
    }
}

pub struct MemoryStore {
    values: Cache<String, Arc<Entry>>,
    writes: Mutex<()>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            values: Cache::builder().expire_after(PerEntryTtl).build(),
            writes: Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn etag_of(&self, key: &str) -> Option<Etag> {
        self.values.get(key).map(|e| e.etag)
    }

    /// Applies a checked `op`; answers the new etag of an upsert.
    fn apply(&self, op: TransactionOp) -> Etag {
        match op {
            TransactionOp::Upsert(req) => {
                let etag = new_etag();
                let entry = Entry {
                    data: req.value,
                    etag,
                    ttl: req.ttl,
                    expires_at: req.ttl.map(|ttl| SystemTime::now() + ttl),
                };
                self.values.insert(req.key, Arc::new(entry));
                etag
            }
            TransactionOp::Delete(req) => {
                self.values.invalidate(&req.key);
                0
            }
        }
    }
}

#[async_trait::async_trait]
impl Component for MemoryStore {
    async fn health_check(&self) -> Result<(), ComponentError> {
        // Nothing outside the process can fail.
        Ok(())
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, key: &str, _consistency: Consistency) -> Result<Option<StateValue>, ComponentError> {
        Ok(self.values.get(key).map(|e| StateValue {
            data: e.data.clone(),
            etag: e.etag,
            expires_at: e.expires_at,
        }))
    }

    async fn bulk_get(
        &self,
        keys: Vec<String>,
        _parallelism: usize,
    ) -> Vec<Result<Option<StateValue>, ComponentError>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(&key, Consistency::Unspecified).await);
        }
        out
    }

    async fn set(&self, req: SetRequest) -> Result<Etag, ComponentError> {
        let op = TransactionOp::Upsert(req);
        let _guard = self.lock();
        check_write(&op, self.etag_of(op.key()))?;
        Ok(self.apply(op))
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), ComponentError> {
        let op = TransactionOp::Delete(req);
        let _guard = self.lock();
        check_write(&op, self.etag_of(op.key()))?;
        self.apply(op);
        Ok(())
    }

    async fn transact(&self, ops: Vec<TransactionOp>) -> Result<(), ComponentError> {
        let _guard = self.lock();
        // Operations on one key see the ones before them, so check against
        // a shadow of the pending writes rather than the store alone.
        let mut pending: Vec<(String, Option<Etag>)> = Vec::new();
        for op in &ops {
            let current = match pending.iter().rev().find(|(k, _)| k == op.key()) {
                Some((_, etag)) => *etag,
                None => self.etag_of(op.key()),
            };
            check_write(op, current)?;
            let after = match op {
                // A placeholder: a later op in this transaction cannot know
                // the new etag, so it can only match by having none.
                TransactionOp::Upsert(_) => Some(0),
                TransactionOp::Delete(_) => None,
            };
            pending.push((op.key().to_owned(), after));
        }
        for op in ops {
            self.apply(op);
        }
        Ok(())
    }
}
