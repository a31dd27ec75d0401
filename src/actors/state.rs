//! Messages for `state` components.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Operation;
use crate::components::state::{Consistency, DeleteRequest, Etag, SetRequest, StateStore, StateValue, TransactionOp};
use crate::components::{ComponentError, State};

/// Reads one key.
pub struct Get {
    pub key: String,
    pub consistency: Consistency,
}

impl Operation<State> for Get {
    type Output = Option<StateValue>;

    fn run(self, store: Arc<dyn StateStore>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { store.get(&self.key, self.consistency).await }.boxed()
    }
}

/// Reads many keys; one result per key.
pub struct BulkGet {
    pub keys: Vec<String>,
    pub parallelism: usize,
}

impl Operation<State> for BulkGet {
    type Output = Vec<Result<Option<StateValue>, ComponentError>>;

    fn run(self, store: Arc<dyn StateStore>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { Ok(store.bulk_get(self.keys, self.parallelism).await) }.boxed()
    }
}

/// Writes one value; answers its new etag.
pub struct Set(pub SetRequest);

impl Operation<State> for Set {
    type Output = Etag;

    fn run(self, store: Arc<dyn StateStore>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { store.set(self.0).await }.boxed()
    }
}

/// Deletes one key.
pub struct Delete(pub DeleteRequest);

impl Operation<State> for Delete {
    type Output = ();

    fn run(self, store: Arc<dyn StateStore>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { store.delete(self.0).await }.boxed()
    }
}

/// Applies all operations or none.
pub struct Transact(pub Vec<TransactionOp>);

impl Operation<State> for Transact {
    type Output = ();

    fn run(self, store: Arc<dyn StateStore>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { store.transact(self.0).await }.boxed()
    }
}

/// Lists the live entries under a prefix (the query API).
pub struct Scan {
    pub prefix: String,
    pub limit: usize,
}

impl Operation<State> for Scan {
    type Output = Vec<(String, StateValue)>;

    fn run(self, store: Arc<dyn StateStore>) -> BoxFuture<'static, Result<Self::Output, ComponentError>> {
        async move { store.scan(&self.prefix, self.limit).await }.boxed()
    }
}
