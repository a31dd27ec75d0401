//! The State API: GetState, GetBulkState, SaveState, DeleteState,
//! DeleteBulkState and ExecuteStateTransaction.
//!
//! Everything every store must do the same way happens here, once: key
//! prefixes (`keyPrefix`), etag parsing, `ttlInSeconds`, and request
//! validation. Invalid input is refused before anything is written.

use std::collections::HashMap;
use std::time::Duration;

use tonic::Status;

use crate::actors::ComponentHandle;
use crate::actors::state::{BulkGet, Delete, Get, Set, Transact};
use crate::api::ApiContext;
use crate::api::actuator::rfc3339;
use crate::components::State;
use crate::components::state::{
    Concurrency, Consistency, DeleteRequest, Etag, KeyPrefix, PREFIX_SEPARATOR, SetRequest, TransactionOp,
};
use crate::proto::runtime::v1 as pb;
use crate::proto::runtime::v1::state_options::{StateConcurrency, StateConsistency};

/// Request metadata: seconds until the value expires; -1 for never.
const TTL_IN_SECONDS: &str = "ttlInSeconds";
/// Response metadata: when the value expires (RFC 3339), as Dapr names it.
const TTL_EXPIRE_TIME: &str = "ttlExpireTime";
/// GetBulkState parallelism when the request leaves it at 0.
const DEFAULT_PARALLELISM: usize = 10;

/// A store, with the key scheme its metadata asks for.
struct Store<'a> {
    handle: &'a ComponentHandle<State>,
    prefix: Option<String>,
}

impl<'a> Store<'a> {
    fn find(ctx: &'a ApiContext, name: &str, field: &'static str) -> Result<Store<'a>, Status> {
        let handle = ctx.router.state.get(field, name)?;
        let prefix = KeyPrefix::from_spec(handle.spec(), KeyPrefix::None)
            .prefix(&ctx.app.app_id, name)
            .map(str::to_owned);
        Ok(Store { handle, prefix })
    }

    /// The key as the backend stores it.
    fn key(&self, key: &str) -> Result<String, Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("key is empty"));
        }
        match &self.prefix {
            None => Ok(key.to_owned()),
            Some(_) if key.contains(PREFIX_SEPARATOR) => Err(Status::invalid_argument(format!(
                "key '{key}' must not contain '||': the store prefixes keys (keyPrefix)"
            ))),
            Some(prefix) => Ok(format!("{prefix}{PREFIX_SEPARATOR}{key}")),
        }
    }
}

fn etag(etag: Option<&pb::Etag>, key: &str) -> Result<Option<Etag>, Status> {
    match etag.map(|e| e.value.as_str()) {
        None | Some("") => Ok(None),
        Some(value) => value.parse::<Etag>().map(Some).map_err(|_| {
            Status::invalid_argument(format!(
                "malformed etag '{value}' for key '{key}': use an etag this store returned"
            ))
        }),
    }
}

fn ttl(metadata: &HashMap<String, String>, key: &str) -> Result<Option<Duration>, Status> {
    let Some(value) = metadata.get(TTL_IN_SECONDS) else {
        return Ok(None);
    };
    match value.trim().parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(secs) if secs > 0 => Ok(Some(Duration::from_secs(secs.unsigned_abs()))),
        _ => Err(Status::invalid_argument(format!(
            "ttlInSeconds '{value}' for key '{key}' must be a positive number of seconds, or -1 for no expiry"
        ))),
    }
}

fn concurrency(options: Option<&pb::StateOptions>) -> Concurrency {
    match options.map(|o| o.concurrency()) {
        Some(StateConcurrency::ConcurrencyFirstWrite) => Concurrency::FirstWrite,
        _ => Concurrency::LastWrite,
    }
}

fn consistency(c: StateConsistency) -> Consistency {
    match c {
        StateConsistency::ConsistencyUnspecified => Consistency::Unspecified,
        StateConsistency::ConsistencyEventual => Consistency::Eventual,
        StateConsistency::ConsistencyStrong => Consistency::Strong,
    }
}

fn set_request(store: &Store, item: pb::StateItem, defaults: &HashMap<String, String>) -> Result<SetRequest, Status> {
    let ttl = match ttl(&item.metadata, &item.key)? {
        Some(ttl) => Some(ttl),
        None if item.metadata.contains_key(TTL_IN_SECONDS) => None,
        None => ttl(defaults, &item.key)?,
    };
    Ok(SetRequest {
        key: store.key(&item.key)?,
        etag: etag(item.etag.as_ref(), &item.key)?,
        concurrency: concurrency(item.options.as_ref()),
        ttl,
        value: item.value,
    })
}

fn delete_request(store: &Store, key: &str, etag_value: Option<&pb::Etag>) -> Result<DeleteRequest, Status> {
    Ok(DeleteRequest {
        key: store.key(key)?,
        etag: etag(etag_value, key)?,
    })
}

pub async fn get_state(ctx: &ApiContext, req: pb::GetStateRequest) -> Result<pb::GetStateResponse, Status> {
    let store = Store::find(ctx, &req.store_name, "store_name")?;
    let key = store.key(&req.key)?;
    let consistency = consistency(req.consistency());
    let value = store.handle.call(Get { key, consistency }).await?;
    Ok(match value {
        None => pb::GetStateResponse::default(),
        Some(v) => pb::GetStateResponse {
            data: v.data,
            etag: v.etag.to_string(),
            metadata: v
                .expires_at
                .map(|at| HashMap::from([(TTL_EXPIRE_TIME.to_owned(), rfc3339(at))]))
                .unwrap_or_default(),
        },
    })
}

pub async fn get_bulk_state(
    ctx: &ApiContext,
    req: pb::GetBulkStateRequest,
) -> Result<pb::GetBulkStateResponse, Status> {
    let store = Store::find(ctx, &req.store_name, "store_name")?;
    // A bad key fails its own item, not the call.
    let mut items: Vec<pb::BulkStateItem> = Vec::with_capacity(req.keys.len());
    let mut wanted = Vec::with_capacity(req.keys.len());
    for (i, key) in req.keys.iter().enumerate() {
        let mut item = pb::BulkStateItem {
            key: key.clone(),
            ..Default::default()
        };
        match store.key(key) {
            Ok(stored) => wanted.push((i, stored)),
            Err(e) => item.error = e.message().to_owned(),
        }
        items.push(item);
    }
    let parallelism = usize::try_from(req.parallelism)
        .ok()
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_PARALLELISM);
    let (positions, keys): (Vec<usize>, Vec<String>) = wanted.into_iter().unzip();
    let results = store.handle.call(BulkGet { keys, parallelism }).await?;
    for (i, result) in positions.into_iter().zip(results) {
        let item = &mut items[i];
        match result {
            Ok(Some(v)) => {
                item.data = v.data;
                item.etag = v.etag.to_string();
                if let Some(at) = v.expires_at {
                    item.metadata.insert(TTL_EXPIRE_TIME.to_owned(), rfc3339(at));
                }
            }
            Ok(None) => {}
            Err(e) => item.error = e.to_string(),
        }
    }
    Ok(pb::GetBulkStateResponse { items })
}

pub async fn save_state(ctx: &ApiContext, req: pb::SaveStateRequest) -> Result<(), Status> {
    let store = Store::find(ctx, &req.store_name, "store_name")?;
    let none = HashMap::new();
    let mut sets = req
        .states
        .into_iter()
        .map(|item| set_request(&store, item, &none))
        .collect::<Result<Vec<_>, _>>()?;
    match sets.len() {
        0 => Ok(()),
        1 => {
            let set = sets.remove(0);
            store.handle.call(Set(set)).await.map(drop).map_err(Status::from)
        }
        // Several items: all or none.
        _ => {
            let ops = sets.into_iter().map(TransactionOp::Upsert).collect();
            store.handle.call(Transact(ops)).await.map_err(Status::from)
        }
    }
}

pub async fn delete_state(ctx: &ApiContext, req: pb::DeleteStateRequest) -> Result<(), Status> {
    let store = Store::find(ctx, &req.store_name, "store_name")?;
    let delete = delete_request(&store, &req.key, req.etag.as_ref())?;
    store.handle.call(Delete(delete)).await.map_err(Status::from)
}

pub async fn delete_bulk_state(ctx: &ApiContext, req: pb::DeleteBulkStateRequest) -> Result<(), Status> {
    let store = Store::find(ctx, &req.store_name, "store_name")?;
    let mut deletes = req
        .states
        .iter()
        .map(|item| delete_request(&store, &item.key, item.etag.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    match deletes.len() {
        0 => Ok(()),
        1 => store.handle.call(Delete(deletes.remove(0))).await.map_err(Status::from),
        _ => {
            let ops = deletes.into_iter().map(TransactionOp::Delete).collect();
            store.handle.call(Transact(ops)).await.map_err(Status::from)
        }
    }
}

pub async fn execute_state_transaction(
    ctx: &ApiContext,
    req: pb::ExecuteStateTransactionRequest,
) -> Result<(), Status> {
    let store = Store::find(ctx, &req.store_name, "storeName")?;
    let mut ops = Vec::with_capacity(req.operations.len());
    for (i, op) in req.operations.into_iter().enumerate() {
        let Some(item) = op.request else {
            return Err(Status::invalid_argument(format!("operations[{i}] has no request")));
        };
        ops.push(match op.operation_type.as_str() {
            "upsert" => TransactionOp::Upsert(set_request(&store, item, &req.metadata)?),
            "delete" => TransactionOp::Delete(delete_request(&store, &item.key, item.etag.as_ref())?),
            other => {
                return Err(Status::invalid_argument(format!(
                    "operations[{i}].operationType '{other}' is not \"upsert\" or \"delete\""
                )));
            }
        });
    }
    store.handle.call(Transact(ops)).await.map_err(Status::from)
}
