//! A pluggable state store: a process serving Dapr's
//! `dapr.proto.components.v1.StateStore` on a unix socket (see
//! [`crate::components::pluggable`] for discovery). Its type is the socket's
//! name; its metadata goes to the process's `Init` as is.
//!
//! Etags travel as Dapr's strings and must be decimal integers, as this
//! sidecar's etags are (the API parses the ones clients send as such); a
//! store answering another form fails the call, naming the etag. A TTL
//! travels as the `ttlInSeconds` metadata of a `Set`. Transactions go to
//! `TransactionalStateStore` when the process serves it; otherwise a
//! transaction of only upserts is a `BulkSet`, of only deletes a
//! `BulkDelete` (not atomic, as with daprd's bulk calls), and a mixed one
//! is refused.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Concurrency, Consistency, DeleteRequest, Etag, SetRequest, StateStore, StateValue, TransactionOp};
use crate::components::pluggable::{self, Connection, TRANSACTIONAL_STATE_STORE};
use crate::components::{BuildContext, BuildError, Component, ComponentError, Kind, TypeEntry};
use crate::proto::dapr::components::v1 as pb;
use pb::state_store_client::StateStoreClient;
use pb::transactional_state_store_client::TransactionalStateStoreClient;

/// The entry every discovered state store type builds with.
pub const TYPE: TypeEntry<dyn StateStore> = TypeEntry {
    name: "pluggable",
    rust_type: std::any::type_name::<PluggableState>,
    validate: pluggable::any_metadata,
    build,
};

fn build(ctx: BuildContext) -> BoxFuture<'static, Result<Arc<dyn StateStore>, BuildError>> {
    async move {
        let (conn, socket) = pluggable::connect(Kind::State, &ctx.spec).await?;
        let mut client = StateStoreClient::new(conn.clone());
        client
            .init(pb::InitRequest {
                metadata: Some(pb::MetadataRequest {
                    properties: ctx.spec.metadata.clone().into_iter().collect(),
                }),
            })
            .await
            .map_err(pluggable::init_failed)?;
        let transactions = socket
            .serves(TRANSACTIONAL_STATE_STORE)
            .then(|| TransactionalStateStoreClient::new(conn));
        Ok(Arc::new(PluggableState { client, transactions }) as Arc<dyn StateStore>)
    }
    .boxed()
}

pub struct PluggableState {
    client: StateStoreClient<Connection>,
    transactions: Option<TransactionalStateStoreClient<Connection>>,
}

/// The `ttlInSeconds` Dapr's stores read.
const TTL_KEY: &str = "ttlInSeconds";
/// Where Dapr's stores report a value's expiry (RFC 3339).
const EXPIRY_KEY: &str = "ttlExpireTime";

fn set_request(req: SetRequest) -> pb::SetRequest {
    let mut metadata = HashMap::new();
    if let Some(ttl) = req.ttl {
        metadata.insert(TTL_KEY.to_owned(), ttl.as_secs().max(1).to_string());
    }
    let concurrency = match req.concurrency {
        Concurrency::FirstWrite => pb::state_options::StateConcurrency::ConcurrencyFirstWrite,
        Concurrency::LastWrite => pb::state_options::StateConcurrency::ConcurrencyLastWrite,
    };
    pb::SetRequest {
        key: req.key,
        value: req.value,
        etag: req.etag.map(etag_out),
        metadata,
        options: Some(pb::StateOptions {
            concurrency: concurrency as i32,
            consistency: pb::state_options::StateConsistency::ConsistencyUnspecified as i32,
        }),
        content_type: String::new(),
    }
}

fn delete_request(req: DeleteRequest) -> pb::DeleteRequest {
    pb::DeleteRequest {
        key: req.key,
        etag: req.etag.map(etag_out),
        metadata: HashMap::new(),
        options: None,
    }
}

fn etag_out(etag: Etag) -> pb::Etag {
    pb::Etag {
        value: etag.to_string(),
    }
}

fn etag_in(key: &str, etag: Option<pb::Etag>) -> Result<Option<Etag>, ComponentError> {
    match etag.map(|e| e.value).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(value) => value.parse::<Etag>().map(Some).map_err(|_| {
            ComponentError::Internal(format!(
                "the pluggable store answered etag '{}' for key '{}'; this sidecar's etags are decimal integers",
                crate::components::quote(&value),
                crate::components::quote(key)
            ))
        }),
    }
}

/// A value from Dapr's answer: none when it has neither data nor etag. A
/// store that keeps no etags answers values without one: they read with
/// etag 0.
fn value(
    key: &str,
    data: Vec<u8>,
    etag: Option<pb::Etag>,
    metadata: &HashMap<String, String>,
) -> Result<Option<StateValue>, ComponentError> {
    let etag = etag_in(key, etag)?;
    if etag.is_none() && data.is_empty() {
        return Ok(None);
    }
    Ok(Some(StateValue {
        data,
        etag: etag.unwrap_or(0),
        expires_at: expiry(metadata),
    }))
}

fn expiry(metadata: &HashMap<String, String>) -> Option<SystemTime> {
    let text = metadata.get(EXPIRY_KEY)?;
    humantime::parse_rfc3339_weak(text.trim()).ok()
}

fn consistency(c: Consistency) -> i32 {
    use pb::state_options::StateConsistency as C;
    (match c {
        Consistency::Unspecified => C::ConsistencyUnspecified,
        Consistency::Eventual => C::ConsistencyEventual,
        Consistency::Strong => C::ConsistencyStrong,
    }) as i32
}

#[async_trait::async_trait]
impl Component for PluggableState {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.client
            .clone()
            .ping(pb::PingRequest {})
            .await
            .map(drop)
            .map_err(pluggable::error)
    }
}

#[async_trait::async_trait]
impl StateStore for PluggableState {
    async fn get(&self, key: &str, c: Consistency) -> Result<Option<StateValue>, ComponentError> {
        let answer = self
            .client
            .clone()
            .get(pb::GetRequest {
                key: key.to_owned(),
                metadata: HashMap::new(),
                consistency: consistency(c),
            })
            .await
            .map_err(pluggable::error)?
            .into_inner();
        value(key, answer.data, answer.etag, &answer.metadata)
    }

    async fn bulk_get(&self, keys: Vec<String>, parallelism: usize) -> Vec<Result<Option<StateValue>, ComponentError>> {
        let request = pb::BulkGetRequest {
            items: keys
                .iter()
                .map(|key| pb::GetRequest {
                    key: key.clone(),
                    metadata: HashMap::new(),
                    consistency: 0,
                })
                .collect(),
            options: Some(pb::BulkGetRequestOptions {
                parallelism: i64::try_from(parallelism).unwrap_or(i64::MAX),
            }),
        };
        let items = match self.client.clone().bulk_get(request).await {
            Ok(answer) => answer.into_inner().items,
            Err(status) => {
                let e = pluggable::error(status);
                return keys.iter().map(|_| Err(e.clone())).collect();
            }
        };
        let mut by_key: HashMap<String, pb::BulkStateItem> = items.into_iter().map(|i| (i.key.clone(), i)).collect();
        keys.iter()
            .map(|key| match by_key.remove(key) {
                None => Ok(None),
                Some(item) if !item.error.is_empty() => Err(ComponentError::Internal(item.error)),
                Some(item) => value(key, item.data, item.etag, &item.metadata),
            })
            .collect()
    }

    /// Dapr's `Set` answers no etag: 0 stands for "not known" (no caller
    /// reads it; clients read etags with a get).
    async fn set(&self, req: SetRequest) -> Result<Etag, ComponentError> {
        self.client
            .clone()
            .set(set_request(req))
            .await
            .map_err(pluggable::error)?;
        Ok(0)
    }

    async fn delete(&self, req: DeleteRequest) -> Result<(), ComponentError> {
        self.client
            .clone()
            .delete(delete_request(req))
            .await
            .map(drop)
            .map_err(pluggable::error)
    }

    async fn transact(&self, ops: Vec<TransactionOp>) -> Result<(), ComponentError> {
        if let Some(transactions) = &self.transactions {
            let operations = ops
                .into_iter()
                .map(|op| pb::TransactionalStateOperation {
                    request: Some(match op {
                        TransactionOp::Upsert(set) => pb::transactional_state_operation::Request::Set(set_request(set)),
                        TransactionOp::Delete(delete) => {
                            pb::transactional_state_operation::Request::Delete(delete_request(delete))
                        }
                    }),
                })
                .collect();
            return transactions
                .clone()
                .transact(pb::TransactionalStateRequest {
                    operations,
                    metadata: HashMap::new(),
                })
                .await
                .map(drop)
                .map_err(pluggable::error);
        }
        let (sets, deletes): (Vec<_>, Vec<_>) = ops.into_iter().partition(|op| matches!(op, TransactionOp::Upsert(_)));
        match (sets.is_empty(), deletes.is_empty()) {
            (_, true) => {
                let items = sets
                    .into_iter()
                    .filter_map(|op| match op {
                        TransactionOp::Upsert(set) => Some(set_request(set)),
                        TransactionOp::Delete(_) => None,
                    })
                    .collect();
                self.client
                    .clone()
                    .bulk_set(pb::BulkSetRequest { items, options: None })
                    .await
                    .map(drop)
                    .map_err(pluggable::error)
            }
            (true, false) => {
                let items = deletes
                    .into_iter()
                    .filter_map(|op| match op {
                        TransactionOp::Delete(delete) => Some(delete_request(delete)),
                        TransactionOp::Upsert(_) => None,
                    })
                    .collect();
                self.client
                    .clone()
                    .bulk_delete(pb::BulkDeleteRequest { items, options: None })
                    .await
                    .map(drop)
                    .map_err(pluggable::error)
            }
            (false, false) => Err(ComponentError::Unsupported(
                "this pluggable state store does not serve TransactionalStateStore, so it cannot mix upserts and deletes in one transaction".into(),
            )),
        }
    }
}
