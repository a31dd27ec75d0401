//! The State API: GetState, GetBulkState, SaveState, DeleteState,
//! DeleteBulkState and ExecuteStateTransaction, over
//! [`blocks::state`](crate::api::blocks::state).

use tonic::Status;

use crate::api::ApiContext;
use crate::api::blocks::state::{self, Concurrency, Consistency};
use crate::proto::runtime::v1 as pb;
use crate::proto::runtime::v1::state_options::{StateConcurrency, StateConsistency};

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

fn etag(etag: Option<pb::Etag>) -> Option<String> {
    etag.map(|e| e.value)
}

fn item(item: pb::StateItem) -> state::StateItem {
    state::StateItem {
        concurrency: concurrency(item.options.as_ref()),
        etag: etag(item.etag),
        key: item.key,
        value: item.value,
        metadata: item.metadata,
    }
}

fn delete_item(item: pb::StateItem) -> state::DeleteItem {
    state::DeleteItem {
        key: item.key,
        etag: etag(item.etag),
    }
}

pub async fn get_state(ctx: &ApiContext, req: pb::GetStateRequest) -> Result<pb::GetStateResponse, Status> {
    let get = state::GetState {
        consistency: consistency(req.consistency()),
        store: req.store_name,
        key: req.key,
    };
    Ok(match state::get(ctx, get).await? {
        None => pb::GetStateResponse::default(),
        Some(value) => pb::GetStateResponse {
            metadata: state::value_metadata(&value),
            etag: value.etag.to_string(),
            data: value.data,
        },
    })
}

pub async fn get_bulk_state(
    ctx: &ApiContext,
    req: pb::GetBulkStateRequest,
) -> Result<pb::GetBulkStateResponse, Status> {
    let get = state::GetBulkState {
        store: req.store_name,
        keys: req.keys,
        parallelism: usize::try_from(req.parallelism).unwrap_or(0),
    };
    let items = state::get_bulk(ctx, get).await?;
    let item = |item: state::BulkItem| {
        let mut out = pb::BulkStateItem {
            key: item.key,
            ..Default::default()
        };
        match item.value {
            Ok(Some(value)) => {
                out.etag = value.etag.to_string();
                out.metadata = state::value_metadata(&value);
                out.data = value.data;
            }
            Ok(None) => {}
            Err(error) => out.error = error,
        }
        out
    };
    Ok(pb::GetBulkStateResponse {
        items: items.into_iter().map(item).collect(),
    })
}

pub async fn save_state(ctx: &ApiContext, req: pb::SaveStateRequest) -> Result<(), Status> {
    let save = state::SaveState {
        store: req.store_name,
        items: req.states.into_iter().map(item).collect(),
    };
    Ok(state::save(ctx, save).await?)
}

pub async fn delete_state(ctx: &ApiContext, req: pb::DeleteStateRequest) -> Result<(), Status> {
    let delete = state::DeleteState {
        store: req.store_name,
        item: state::DeleteItem {
            key: req.key,
            etag: etag(req.etag),
        },
    };
    Ok(state::delete(ctx, delete).await?)
}

pub async fn delete_bulk_state(ctx: &ApiContext, req: pb::DeleteBulkStateRequest) -> Result<(), Status> {
    let delete = state::DeleteBulkState {
        store: req.store_name,
        items: req.states.into_iter().map(delete_item).collect(),
    };
    Ok(state::delete_bulk(ctx, delete).await?)
}

pub async fn execute_state_transaction(
    ctx: &ApiContext,
    req: pb::ExecuteStateTransactionRequest,
) -> Result<(), Status> {
    let operations = req
        .operations
        .into_iter()
        .map(|op| state::TransactionOperation {
            operation: op.operation_type,
            item: op.request.map(item),
        })
        .collect();
    let transaction = state::Transaction {
        store: req.store_name,
        operations,
        metadata: req.metadata,
    };
    Ok(state::transact(ctx, transaction).await?)
}
