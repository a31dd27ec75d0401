//! The checks each block service makes before a component sees a request,
//! callable without a router, actors or a runtime, for the fuzz targets in
//! `fuzz/`. Each function runs the block's own (crate-private) helpers in
//! the order the block service runs them after it has found the component
//! `spec`; none is a second copy of a rule. Not a stable API.

use std::time::Duration;

use crate::api::blocks::configuration::{self, ConfigurationQuery, SaveConfiguration};
use crate::api::blocks::lock::{self, LeaseRequest, UnlockRequest};
use crate::api::blocks::pubsub::{self, PublishEvent};
use crate::api::blocks::sequencer::{self, NextIdRequest};
use crate::api::blocks::state::{self, DeleteItem, Scope, StateItem, Transaction};
use crate::api::blocks::{BlockError, required};
use crate::components::configuration::{ItemId, ItemValue, Selector};
use crate::components::pubsub::PublishRequest;
use crate::components::state::TransactionOp;
use crate::components::{ComponentError, ComponentSpec};

/// The backend key of a state read (`GetState`, each key of a bulk read).
pub fn state_key(spec: &ComponentSpec, app_id: &str, key: &str) -> Result<String, BlockError> {
    Scope::of(spec, app_id).key(key)
}

/// The writes of a `SaveState`.
pub fn state_save(spec: &ComponentSpec, app_id: &str, items: Vec<StateItem>) -> Result<Vec<TransactionOp>, BlockError> {
    let scope = Scope::of(spec, app_id);
    let none = Default::default();
    items
        .into_iter()
        .map(|item| state::set_request(&scope, item, &none).map(TransactionOp::Upsert))
        .collect()
}

/// The deletes of a `DeleteState` or `DeleteBulkState`.
pub fn state_delete(
    spec: &ComponentSpec,
    app_id: &str,
    items: &[DeleteItem],
) -> Result<Vec<TransactionOp>, BlockError> {
    let scope = Scope::of(spec, app_id);
    items
        .iter()
        .map(|item| state::delete_request(&scope, &item.key, item.etag.as_deref()).map(TransactionOp::Delete))
        .collect()
}

/// The operations of an `ExecuteStateTransaction`.
pub fn state_transaction(
    spec: &ComponentSpec,
    app_id: &str,
    req: Transaction,
) -> Result<Vec<TransactionOp>, BlockError> {
    state::transaction_ops(&Scope::of(spec, app_id), req.operations, &req.metadata)
}

/// The message a `PublishEvent` sends the broker (`source` is the app id).
pub fn publish(event: PublishEvent, source: &str) -> Result<PublishRequest, BlockError> {
    pubsub::publish_request(event, source)
}

/// NATS's own checks of a message before it is published: its subject and
/// its headers.
pub fn nats_publish(req: &PublishRequest) -> Result<(), ComponentError> {
    crate::components::pubsub::nats::check_topic(&req.topic)?;
    crate::components::pubsub::nats::headers(&req.metadata, &req.content_type).map(drop)
}

/// The backend key and lease of a `TryLock` or `LockKeepAlive`.
pub fn lock_lease(spec: &ComponentSpec, app_id: &str, req: &LeaseRequest) -> Result<(String, Duration), BlockError> {
    let key = lock::lock_key(app_id, spec, &req.store, &req.resource_id, &req.owner)?;
    Ok((key, lock::lease(req.expire)?))
}

/// The backend key of an `Unlock`.
pub fn unlock(spec: &ComponentSpec, app_id: &str, req: &UnlockRequest) -> Result<String, BlockError> {
    lock::lock_key(app_id, spec, &req.store, &req.resource_id, &req.owner)
}

/// The backend key and floor of a `GetNextId`.
pub fn next_id(spec: &ComponentSpec, app_id: &str, req: &NextIdRequest) -> Result<(String, i64), BlockError> {
    sequencer::sequence(app_id, spec, req)
}

/// The selector of a `GetConfiguration` or `SubscribeConfiguration`.
pub fn configuration_query(app_id: &str, query: ConfigurationQuery) -> Result<Selector, BlockError> {
    configuration::selector(app_id, query)
}

/// The items of a `SaveConfiguration`.
pub fn configuration_save(app_id: &str, req: SaveConfiguration) -> Result<Vec<(ItemId, ItemValue)>, BlockError> {
    configuration::items_to_save(app_id, req)
}

/// The items of a `DeleteConfiguration`.
pub fn configuration_delete(app_id: &str, query: ConfigurationQuery) -> Result<Vec<ItemId>, BlockError> {
    configuration::items_to_delete(app_id, query)
}

/// The check of a `GetSecret`.
pub fn secret(key: &str) -> Result<(), BlockError> {
    required(key, "key")
}

/// Dapr's state query language (`QueryStateAlpha1`) over `(key, value)`
/// entries: the keys of the page, and the next page's token.
pub fn state_query(query: &str, entries: Vec<(String, Vec<u8>)>) -> Result<(Vec<String>, Option<String>), String> {
    let query = state::query::Query::parse(query)?;
    let (page, token) = query.run(entries.into_iter().map(|(k, v)| (k, v, ())).collect());
    Ok((page.into_iter().map(|(k, _, _)| k).collect(), token))
}

/// A subscription's routing rules (CEL) over a message as a broker
/// delivers it: the path it goes to, `None` when no rule matches.
pub fn route(rules: &[(String, String)], default: &str, delivered: &[u8]) -> Result<Option<String>, String> {
    let table = crate::api::delivery::RouteTable::new(&crate::config::Routes {
        rules: rules.to_vec(),
        default: default.to_owned(),
    })?;
    let event = crate::api::cloudevents::unwrap(delivered, "topic", "pubsub", Default::default());
    table.path_for(&event)
}

/// How an HTTP app's 2xx answer settles an event.
pub fn app_answer(body: &[u8]) -> pubsub::Outcome {
    crate::api::callback::http_outcome(body)
}

/// The subscriptions an HTTP app lists at `GET /dapr/subscribe`.
pub fn dapr_subscribe(body: &[u8]) -> Result<Vec<crate::api::callback::AppSubscription>, String> {
    crate::api::callback::parse_subscribe(body).map_err(|e| e.to_string())
}
