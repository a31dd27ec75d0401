//! `in-memory`: a state store in the sidecar's memory, for tests and the
//! embedded default. Values are never evicted for space; a value with a TTL
//! disappears when it expires (reads never see it; the periodic health
//! check sweeps it out). Lost when the sidecar stops.
//!
//! One map behind one lock: etag checks and transactions are atomic, and
//! the sidecar's single event loop never contends for it. (A concurrent
//! cache such as moka costs six times a map's insert here, for concurrency
//! the event loop cannot use.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{
    Consistency, DeleteRequest, Etag, SetRequest, StateStore, StateValue, TransactionOp, check_write, new_etag,
};
use crate::components::{
    BuildContext, BuildError, Component, ComponentError, ComponentType, KeyPrefixSection, TypeEntry,
};

pub const TYPE: TypeEntry<dyn StateStore> = TypeEntry::of::<MemoryType>();

pub struct MemoryType;

impl ComponentType<dyn StateStore> for MemoryType {
    const NAME: &'static str = "in-memory";
    type Metadata = KeyPrefixSection;

    fn build(
        ctx: BuildContext,
        _metadata: KeyPrefixSection,
    ) -> BoxFuture<'static, Result<Arc<dyn StateStore>, BuildError>> {
        // The store is its data: a restart gets the same one back.
        let store = ctx.retained.get_or_init(MemoryStore::default);
        async move { Ok(store as Arc<dyn StateStore>) }.boxed()
    }
}

struct Entry {
    data: Vec<u8>,
    etag: Etag,
    /// When it expires: on the monotonic clock (to expire it) and the wall
    /// clock (to report it).
    expires: Option<(Instant, SystemTime)>,
}

impl Entry {
    fn live(&self, now: &mut Option<Instant>) -> bool {
        match self.expires {
            None => true,
            Some((at, _)) => *now.get_or_insert_with(Instant::now) < at,
        }
    }
}

#[derive(Default)]
pub struct MemoryStore {
    values: Mutex<HashMap<String, Entry>>,
}

type Values<'a> = MutexGuard<'a, HashMap<String, Entry>>;

impl MemoryStore {
    fn lock(&self) -> Values<'_> {
        self.values.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn live<'a>(values: &'a Values<'_>, key: &str) -> Option<&'a Entry> {
        values.get(key).filter(|e| e.live(&mut None))
    }

    /// Applies a checked `op`; answers the new etag of an upsert.
    fn apply(values: &mut Values<'_>, op: TransactionOp) -> Etag {
        match op {
            TransactionOp::Upsert(req) => {
                let etag = new_etag();
                let expires = req
                    .ttl
                    .map(|ttl: Duration| (Instant::now() + ttl, SystemTime::now() + ttl));
                let entry = Entry {
                    data: req.value,
                    etag,
                    expires,
                };
                values.insert(req.key, entry);
                etag
            }
            TransactionOp::Delete(req) => {
                values.remove(&req.key);
                0
            }
        }
    }
}

#[async_trait::async_trait]
impl Component for MemoryStore {
    async fn health_check(&self) -> Result<(), ComponentError> {
        // Nothing outside the process can fail; sweep out expired values.
        let mut now = None;
        self.lock().retain(|_, e| e.live(&mut now));
        Ok(())
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    async fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, StateValue)>, ComponentError> {
        let values = self.lock();
        let mut now = None;
        let mut out: Vec<(String, StateValue)> = Vec::new();
        for (key, e) in values.iter() {
            if !key.starts_with(prefix) || !e.live(&mut now) {
                continue;
            }
            if out.len() == limit {
                return Err(super::too_many(limit));
            }
            out.push((
                key.clone(),
                StateValue {
                    data: e.data.clone(),
                    etag: e.etag,
                    expires_at: e.expires.map(|(_, at)| at),
                },
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn get(&self, key: &str, _consistency: Consistency) -> Result<Option<StateValue>, ComponentError> {
        Ok(Self::live(&self.lock(), key).map(|e| StateValue {
            data: e.data.clone(),
            etag: e.etag,
            expires_at: e.expires.map(|(_, at)| at),
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
        let mut values = self.lock();
        check_write(&op, Self::live(&values, op.key()).map(|e| e.etag))?;
        Ok(Self::apply(&mut values, op))
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), ComponentError> {
        let op = TransactionOp::Delete(req);
        let mut values = self.lock();
        check_write(&op, Self::live(&values, op.key()).map(|e| e.etag))?;
        Self::apply(&mut values, op);
        Ok(())
    }

    async fn transact(&self, ops: Vec<TransactionOp>) -> Result<(), ComponentError> {
        let mut values = self.lock();
        // Operations on one key see the ones before them, so check against
        // a shadow of the pending writes rather than the store alone.
        let mut pending: Vec<(String, Option<Etag>)> = Vec::new();
        for op in &ops {
            let current = match pending.iter().rev().find(|(k, _)| k == op.key()) {
                Some((_, etag)) => *etag,
                None => Self::live(&values, op.key()).map(|e| e.etag),
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
            Self::apply(&mut values, op);
        }
        Ok(())
    }
}
