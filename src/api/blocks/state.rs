//! The State block: get, bulk get, save, delete, bulk delete and
//! transactions.
//!
//! Everything every store must do the same way happens here, once: key
//! prefixes (`keyPrefix`), etag parsing, `ttlInSeconds`, and request
//! validation. Invalid input is refused before anything is written, and a
//! write of several items is one transaction: all or none.

use std::collections::HashMap;
use std::time::Duration;

pub mod query;

use super::{BlockError, MAX_TTL_SECONDS, quote};
use crate::actors::ComponentHandle;
use crate::actors::state::{BulkGet, Delete, Get, Scan, Set, Transact};
use crate::api::ApiContext;
use crate::api::actuator::rfc3339;
pub use crate::components::state::{Concurrency, Consistency, StateValue};
use crate::components::state::{DeleteRequest, Etag, KeyPrefix, PREFIX_SEPARATOR, SetRequest, TransactionOp};
use crate::components::{ComponentSpec, State};

/// Request metadata: seconds until the value expires; -1 for never.
pub const TTL_IN_SECONDS: &str = "ttlInSeconds";
/// Response metadata: when the value expires (RFC 3339), as Dapr names it.
pub const TTL_EXPIRE_TIME: &str = "ttlExpireTime";
/// Bulk get parallelism when the request leaves it at 0.
const DEFAULT_PARALLELISM: usize = 10;
/// The request field that names the store, in the messages of a routing
/// error. Transactions spell it as Layotto's proto does there.
const STORE_NAME: &str = "store_name";
const TRANSACTION_STORE_NAME: &str = "storeName";

/// Reads one key.
#[derive(Clone, Debug, Default)]
pub struct GetState {
    pub store: String,
    pub key: String,
    pub consistency: Consistency,
}

/// Reads many keys; a bad key fails its own item, not the call.
#[derive(Clone, Debug, Default)]
pub struct GetBulkState {
    pub store: String,
    pub keys: Vec<String>,
    /// Reads in flight at once; 0 for the default.
    pub parallelism: usize,
}

/// One key of a bulk read: its value (`None` when absent), or why it could
/// not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkItem {
    pub key: String,
    pub value: Result<Option<StateValue>, String>,
}

/// One value to write.
#[derive(Clone, Debug, Default)]
pub struct StateItem {
    pub key: String,
    pub value: Vec<u8>,
    /// Write only over this etag; `None` or empty for no check.
    pub etag: Option<String>,
    pub concurrency: Concurrency,
    /// `ttlInSeconds` is read from here.
    pub metadata: HashMap<String, String>,
}

/// One key to delete.
#[derive(Clone, Debug, Default)]
pub struct DeleteItem {
    pub key: String,
    /// Delete only if the stored etag is this one; `None` or empty for no
    /// check.
    pub etag: Option<String>,
}

/// Writes items; several are written all or none.
#[derive(Clone, Debug, Default)]
pub struct SaveState {
    pub store: String,
    pub items: Vec<StateItem>,
}

/// Deletes one key.
#[derive(Clone, Debug, Default)]
pub struct DeleteState {
    pub store: String,
    pub item: DeleteItem,
}

/// Deletes keys, all or none.
#[derive(Clone, Debug, Default)]
pub struct DeleteBulkState {
    pub store: String,
    pub items: Vec<DeleteItem>,
}

/// One operation of a transaction, as the client spelled it.
#[derive(Clone, Debug, Default)]
pub struct TransactionOperation {
    /// `"upsert"` or `"delete"`.
    pub operation: String,
    /// The item written, or whose key (and etag) is deleted.
    pub item: Option<StateItem>,
}

/// Operations applied all or none.
#[derive(Clone, Debug, Default)]
pub struct Transaction {
    pub store: String,
    pub operations: Vec<TransactionOperation>,
    /// Defaults for every upsert: `ttlInSeconds`.
    pub metadata: HashMap<String, String>,
}

/// How a store scopes keys: `<prefix>||<key>`, or the bare key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scope {
    prefix: Option<String>,
}

impl Scope {
    fn new(scheme: &KeyPrefix, app_id: &str, store: &str) -> Scope {
        Scope {
            prefix: scheme.prefix(app_id, store).map(str::to_owned),
        }
    }

    /// The scheme of the store `spec` (bare keys unless `keyPrefix` says
    /// otherwise).
    pub(crate) fn of(spec: &ComponentSpec, app_id: &str) -> Scope {
        Scope::new(&KeyPrefix::from_spec(spec, KeyPrefix::None), app_id, &spec.name)
    }

    /// The key as the backend stores it.
    pub(crate) fn key(&self, key: &str) -> Result<String, BlockError> {
        if key.is_empty() {
            return Err(BlockError::invalid("key is empty"));
        }
        match &self.prefix {
            None => Ok(key.to_owned()),
            Some(_) if key.contains(PREFIX_SEPARATOR) => Err(BlockError::invalid(format!(
                "key '{}' must not contain '||': the store prefixes keys (keyPrefix)",
                quote(key)
            ))),
            Some(prefix) => Ok(format!("{prefix}{PREFIX_SEPARATOR}{key}")),
        }
    }
}

/// A store, with the key scheme its metadata asks for.
struct Store {
    handle: ComponentHandle<State>,
    scope: Scope,
}

impl Store {
    fn find(ctx: &ApiContext, name: &str, field: &'static str) -> Result<Store, BlockError> {
        let handle = ctx.router.state.get(field, name)?;
        let scope = Scope::of(&handle.spec(), &ctx.app.app_id);
        Ok(Store { handle, scope })
    }
}

fn etag(etag: Option<&str>, key: &str) -> Result<Option<Etag>, BlockError> {
    match etag {
        None | Some("") => Ok(None),
        Some(value) => value.parse::<Etag>().map(Some).map_err(|_| {
            BlockError::invalid(format!(
                "malformed etag '{}' for key '{}': use an etag this store returned",
                quote(value),
                quote(key)
            ))
        }),
    }
}

fn ttl(metadata: &HashMap<String, String>, key: &str) -> Result<Option<Duration>, BlockError> {
    let Some(value) = metadata.get(TTL_IN_SECONDS) else {
        return Ok(None);
    };
    match value.trim().parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(secs) if secs > 0 && secs <= MAX_TTL_SECONDS => Ok(Some(Duration::from_secs(secs.unsigned_abs()))),
        _ => Err(BlockError::invalid(format!(
            "ttlInSeconds '{}' for key '{}' must be a number of seconds from 1 to {MAX_TTL_SECONDS}, or -1 for no expiry",
            quote(value),
            quote(key)
        ))),
    }
}

/// The upsert of `item`; its own `ttlInSeconds` (even -1) wins over the
/// request's `defaults`.
pub(crate) fn set_request(
    scope: &Scope,
    item: StateItem,
    defaults: &HashMap<String, String>,
) -> Result<SetRequest, BlockError> {
    let ttl = match ttl(&item.metadata, &item.key)? {
        Some(ttl) => Some(ttl),
        None if item.metadata.contains_key(TTL_IN_SECONDS) => None,
        None => ttl(defaults, &item.key)?,
    };
    Ok(SetRequest {
        key: scope.key(&item.key)?,
        etag: etag(item.etag.as_deref(), &item.key)?,
        concurrency: item.concurrency,
        ttl,
        value: item.value,
    })
}

pub(crate) fn delete_request(scope: &Scope, key: &str, etag_value: Option<&str>) -> Result<DeleteRequest, BlockError> {
    Ok(DeleteRequest {
        key: scope.key(key)?,
        etag: etag(etag_value, key)?,
    })
}

/// Every operation of a transaction, checked; one bad operation refuses
/// them all.
pub(crate) fn transaction_ops(
    scope: &Scope,
    operations: Vec<TransactionOperation>,
    defaults: &HashMap<String, String>,
) -> Result<Vec<TransactionOp>, BlockError> {
    let mut ops = Vec::with_capacity(operations.len());
    for (i, op) in operations.into_iter().enumerate() {
        let Some(item) = op.item else {
            return Err(BlockError::invalid(format!("operations[{i}] has no request")));
        };
        ops.push(match op.operation.as_str() {
            "upsert" => TransactionOp::Upsert(set_request(scope, item, defaults)?),
            "delete" => TransactionOp::Delete(delete_request(scope, &item.key, item.etag.as_deref())?),
            other => {
                return Err(BlockError::invalid(format!(
                    "operations[{i}].operationType '{}' is not \"upsert\" or \"delete\"",
                    quote(other)
                )));
            }
        });
    }
    Ok(ops)
}

/// The metadata a read answers with: `ttlExpireTime` when the value
/// expires.
pub fn value_metadata(value: &StateValue) -> HashMap<String, String> {
    value
        .expires_at
        .map(|at| HashMap::from([(TTL_EXPIRE_TIME.to_owned(), rfc3339(at))]))
        .unwrap_or_default()
}

pub async fn get(ctx: &ApiContext, req: GetState) -> Result<Option<StateValue>, BlockError> {
    let store = Store::find(ctx, &req.store, STORE_NAME)?;
    let key = store.scope.key(&req.key)?;
    Ok(store
        .handle
        .call(Get {
            key,
            consistency: req.consistency,
        })
        .await?)
}

pub async fn get_bulk(ctx: &ApiContext, req: GetBulkState) -> Result<Vec<BulkItem>, BlockError> {
    let store = Store::find(ctx, &req.store, STORE_NAME)?;
    let mut items = Vec::with_capacity(req.keys.len());
    let mut wanted = Vec::with_capacity(req.keys.len());
    for (i, key) in req.keys.into_iter().enumerate() {
        let value = match store.scope.key(&key) {
            Ok(stored) => {
                wanted.push((i, stored));
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        };
        items.push(BulkItem { key, value });
    }
    let parallelism = Some(req.parallelism).filter(|p| *p > 0).unwrap_or(DEFAULT_PARALLELISM);
    let (positions, keys): (Vec<usize>, Vec<String>) = wanted.into_iter().unzip();
    let results = store.handle.call(BulkGet { keys, parallelism }).await?;
    for (i, result) in positions.into_iter().zip(results) {
        items[i].value = result.map_err(|e| e.to_string());
    }
    Ok(items)
}

pub async fn save(ctx: &ApiContext, req: SaveState) -> Result<(), BlockError> {
    let store = Store::find(ctx, &req.store, STORE_NAME)?;
    let none = HashMap::new();
    let mut sets = req
        .items
        .into_iter()
        .map(|item| set_request(&store.scope, item, &none))
        .collect::<Result<Vec<_>, _>>()?;
    match sets.len() {
        0 => Ok(()),
        1 => {
            store.handle.call(Set(sets.remove(0))).await?;
            Ok(())
        }
        _ => {
            let ops = sets.into_iter().map(TransactionOp::Upsert).collect();
            Ok(store.handle.call(Transact(ops)).await?)
        }
    }
}

pub async fn delete(ctx: &ApiContext, req: DeleteState) -> Result<(), BlockError> {
    let store = Store::find(ctx, &req.store, STORE_NAME)?;
    let delete = delete_request(&store.scope, &req.item.key, req.item.etag.as_deref())?;
    Ok(store.handle.call(Delete(delete)).await?)
}

pub async fn delete_bulk(ctx: &ApiContext, req: DeleteBulkState) -> Result<(), BlockError> {
    let store = Store::find(ctx, &req.store, STORE_NAME)?;
    let mut deletes = req
        .items
        .iter()
        .map(|item| delete_request(&store.scope, &item.key, item.etag.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    match deletes.len() {
        0 => Ok(()),
        1 => Ok(store.handle.call(Delete(deletes.remove(0))).await?),
        _ => {
            let ops = deletes.into_iter().map(TransactionOp::Delete).collect();
            Ok(store.handle.call(Transact(ops)).await?)
        }
    }
}

pub async fn transact(ctx: &ApiContext, req: Transaction) -> Result<(), BlockError> {
    let store = Store::find(ctx, &req.store, TRANSACTION_STORE_NAME)?;
    let ops = transaction_ops(&store.scope, req.operations, &req.metadata)?;
    Ok(store.handle.call(Transact(ops)).await?)
}

/// One result of a state query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryItem {
    pub key: String,
    pub data: Vec<u8>,
    pub etag: Etag,
}

/// A page of query results, and the token of the next page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryResult {
    pub items: Vec<QueryItem>,
    pub token: Option<String>,
}

/// Runs Dapr's query language over a store's entries (the app's keys
/// only, under its prefix). The query is checked before the store is
/// asked; a store that cannot list its keys is UNIMPLEMENTED, named.
pub async fn query(ctx: &ApiContext, store_name: &str, query_text: &str) -> Result<QueryResult, BlockError> {
    let parsed = query::Query::parse(query_text).map_err(BlockError::invalid)?;
    let store = Store::find(ctx, store_name, STORE_NAME)?;
    let prefix = store
        .scope
        .prefix
        .as_ref()
        .map(|p| format!("{p}{PREFIX_SEPARATOR}"))
        .unwrap_or_default();
    let entries = store
        .handle
        .call(Scan {
            prefix: prefix.clone(),
            limit: query::MAX_SCANNED,
        })
        .await
        .map_err(|e| match BlockError::from(e) {
            BlockError::Unimplemented(_) => BlockError::Unimplemented(format!(
                "state store '{}' ({}) does not support the query API; query a sqlite, postgresql, mysql or in-memory store",
                quote(store_name),
                store.handle.spec().type_name
            )),
            other => other,
        })?;
    let entries = entries
        .into_iter()
        .filter_map(|(key, value)| {
            key.strip_prefix(&prefix)
                .map(|k| (k.to_owned(), value.data, value.etag))
        })
        .collect();
    let (page, token) = parsed.run(entries);
    Ok(QueryResult {
        items: page
            .into_iter()
            .map(|(key, data, etag)| QueryItem { key, data, etag })
            .collect(),
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare() -> Scope {
        Scope::new(&KeyPrefix::None, "app", "s")
    }

    fn prefixed() -> Scope {
        Scope::new(&KeyPrefix::AppId, "app", "s")
    }

    fn meta(ttl: &str) -> HashMap<String, String> {
        HashMap::from([(TTL_IN_SECONDS.to_owned(), ttl.to_owned())])
    }

    fn item(key: &str) -> StateItem {
        StateItem {
            key: key.into(),
            value: b"v".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn keys_are_scoped_by_the_store_prefix() {
        assert_eq!(bare().key("k").expect("accepted"), "k");
        assert_eq!(
            bare().key("a||b").expect("accepted"),
            "a||b",
            "bare keys may hold the separator"
        );
        assert_eq!(prefixed().key("k").expect("accepted"), "app||k");
        assert_eq!(
            Scope::new(&KeyPrefix::Name, "app", "s").key("k").expect("accepted"),
            "s||k"
        );
        assert_eq!(
            Scope::new(&KeyPrefix::Literal("team".into()), "app", "s")
                .key("k")
                .expect("accepted"),
            "team||k"
        );
        assert_eq!(Scope::new(&KeyPrefix::AppId, "", "s").key("k").expect("accepted"), "k");
    }

    #[test]
    fn empty_keys_and_separators_under_a_prefix_are_refused() {
        assert_eq!(
            bare().key("").expect_err("refused"),
            BlockError::invalid("key is empty")
        );
        let err = prefixed().key("a||b").expect_err("refused");
        assert!(matches!(err, BlockError::InvalidArgument(m) if m.contains("keyPrefix")));
    }

    #[test]
    fn etags_are_numbers_and_empty_means_none() {
        assert_eq!(etag(None, "k").expect("accepted"), None);
        assert_eq!(etag(Some(""), "k").expect("accepted"), None);
        assert_eq!(etag(Some("42"), "k").expect("accepted"), Some(42));
        let err = etag(Some("abc"), "k").expect_err("refused");
        assert!(matches!(err, BlockError::InvalidArgument(m) if m.contains("malformed etag 'abc' for key 'k'")));
    }

    #[test]
    fn ttls_are_positive_seconds_or_minus_one() {
        assert_eq!(ttl(&HashMap::new(), "k").expect("accepted"), None);
        assert_eq!(ttl(&meta("30"), "k").expect("accepted"), Some(Duration::from_secs(30)));
        assert_eq!(ttl(&meta(" 5 "), "k").expect("accepted"), Some(Duration::from_secs(5)));
        assert_eq!(ttl(&meta("-1"), "k").expect("accepted"), None);
        for bad in ["0", "-2", "soon", ""] {
            assert!(ttl(&meta(bad), "k").is_err(), "{bad}");
        }
    }

    #[test]
    fn an_items_own_ttl_wins_over_the_requests() {
        let defaults = meta("60");
        let plain = set_request(&bare(), item("k"), &defaults).expect("accepted");
        assert_eq!(plain.ttl, Some(Duration::from_secs(60)));
        let own = StateItem {
            metadata: meta("5"),
            ..item("k")
        };
        assert_eq!(
            set_request(&bare(), own, &defaults).expect("accepted").ttl,
            Some(Duration::from_secs(5))
        );
        let never = StateItem {
            metadata: meta("-1"),
            ..item("k")
        };
        assert_eq!(set_request(&bare(), never, &defaults).expect("accepted").ttl, None);
    }

    #[test]
    fn set_requests_carry_the_scoped_key_etag_and_concurrency() {
        let it = StateItem {
            etag: Some("7".into()),
            concurrency: Concurrency::FirstWrite,
            ..item("k")
        };
        let set = set_request(&prefixed(), it, &HashMap::new()).expect("accepted");
        assert_eq!(
            set,
            SetRequest {
                key: "app||k".into(),
                value: b"v".to_vec(),
                etag: Some(7),
                concurrency: Concurrency::FirstWrite,
                ttl: None,
            }
        );
    }

    #[test]
    fn transactions_build_one_op_per_operation() {
        let ops = vec![
            TransactionOperation {
                operation: "upsert".into(),
                item: Some(item("a")),
            },
            TransactionOperation {
                operation: "delete".into(),
                item: Some(StateItem {
                    etag: Some("3".into()),
                    ..item("b")
                }),
            },
        ];
        let built = transaction_ops(&prefixed(), ops, &meta("10")).expect("accepted");
        assert_eq!(built.len(), 2);
        assert!(
            matches!(&built[0], TransactionOp::Upsert(s) if s.key == "app||a" && s.ttl == Some(Duration::from_secs(10)))
        );
        assert_eq!(
            built[1],
            TransactionOp::Delete(DeleteRequest {
                key: "app||b".into(),
                etag: Some(3),
            })
        );
    }

    #[test]
    fn a_bad_operation_refuses_the_transaction() {
        let op = |operation: &str, item: Option<StateItem>| TransactionOperation {
            operation: operation.into(),
            item,
        };
        let no_request = vec![op("upsert", Some(item("a"))), op("upsert", None)];
        assert_eq!(
            transaction_ops(&bare(), no_request, &HashMap::new()).expect_err("refused"),
            BlockError::invalid("operations[1] has no request")
        );
        let unknown = vec![op("merge", Some(item("a")))];
        let err = transaction_ops(&bare(), unknown, &HashMap::new()).expect_err("refused");
        assert!(matches!(err, BlockError::InvalidArgument(m) if m.contains("'merge'")));
        let bad_key = vec![op("delete", Some(item("")))];
        assert!(transaction_ops(&bare(), bad_key, &HashMap::new()).is_err());
    }

    #[test]
    fn expiring_values_answer_their_expiry() {
        let value = StateValue {
            data: vec![],
            etag: 1,
            expires_at: None,
        };
        assert!(value_metadata(&value).is_empty());
        let expiring = StateValue {
            expires_at: Some(std::time::SystemTime::UNIX_EPOCH),
            ..value
        };
        assert!(value_metadata(&expiring).contains_key(TTL_EXPIRE_TIME));
    }
}
