//! `etcd`: a counter per key at `<keyPrefixPath><key>`, its value the last
//! id handed out, advanced by a compare-and-swap transaction on the key's
//! modification revision (retried when another sidecar got there first),
//! so sidecars sharing the etcd never overlap.
//!
//! Layotto's etcd sequencer counts a key's versions instead (one write per
//! id), which cannot reserve a segment in one write; this one can, so
//! `WEAK` ids come from segments like every other store's.
//!
//! Metadata: Layotto's etcd keys (`endpoints`, `dialTimeout`, `username`,
//! `password`, `keyPrefixPath`), the segment keys, `keyPrefix`.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{SequencerStore, Sequencing, segmented};
use crate::components::etcd_client::{self, Etcd, EtcdConnection};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};
use crate::proto::etcd as pb;

pub const TYPE: TypeEntry<dyn SequencerStore> = TypeEntry::of::<EtcdType>();

pub struct EtcdType;

impl ComponentType<dyn SequencerStore> for EtcdType {
    const NAME: &'static str = "etcd";
    type Metadata = (EtcdConnection, Sequencing);

    fn build(
        ctx: BuildContext,
        (connection, sequencing): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn SequencerStore>, BuildError>> {
        async move {
            let etcd = connection.connect().await?;
            let counters = Arc::new(EtcdCounters {
                etcd,
                prefix: connection.prefix(),
            });
            Ok(segmented(counters, &sequencing, ctx.tasks))
        }
        .boxed()
    }
}

/// How often a reservation is retried when other writers keep winning.
const ATTEMPTS: usize = 64;

pub struct EtcdCounters {
    etcd: Etcd,
    prefix: String,
}

#[async_trait::async_trait]
impl Component for EtcdCounters {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.etcd.ping().await
    }
}

#[async_trait::async_trait]
impl SequencerStore for EtcdCounters {
    async fn reserve(&self, key: &str, size: u64, floor: i64) -> Result<i64, ComponentError> {
        let key = format!("{}{key}", self.prefix).into_bytes();
        let size = i64::try_from(size).map_err(|_| ComponentError::InvalidArgument("segment too large".into()))?;
        let mut seen = self.etcd.range(&key, false, 0).await?.kvs.into_iter().next();
        for _ in 0..ATTEMPTS {
            let (current, revision) = match &seen {
                Some(kv) => {
                    let text = String::from_utf8_lossy(&kv.value);
                    let current: i64 = text.trim().parse().map_err(|_| {
                        ComponentError::Internal(format!(
                            "etcd key {} holds '{text}', not a counter",
                            String::from_utf8_lossy(&key)
                        ))
                    })?;
                    (current, kv.mod_revision)
                }
                None => (0, 0),
            };
            let last = current
                .max(floor)
                .checked_add(size)
                .ok_or_else(|| ComponentError::Internal("the sequence is exhausted".into()))?;
            let answer = self
                .etcd
                .txn(pb::TxnRequest {
                    compare: vec![etcd_client::mod_revision_is(&key, revision)],
                    success: vec![etcd_client::put(&key, last.to_string().as_bytes(), 0)],
                    failure: vec![etcd_client::get(&key)],
                })
                .await?;
            if answer.succeeded {
                return Ok(last);
            }
            seen = etcd_client::range_kvs(answer.responses.first()).first().cloned();
        }
        Err(ComponentError::Unavailable(format!(
            "etcd: {ATTEMPTS} attempts to advance the counter lost to other writers"
        )))
    }
}
