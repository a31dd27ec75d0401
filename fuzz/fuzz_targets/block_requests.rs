//! Every building block's request checks, as the block services run them
//! before a component is called, with the component's `keyPrefix` and
//! other metadata from the input too. A state write that passes them is
//! then applied to the in-memory store, which must not panic and must
//! answer what was written.
#![no_main]

use std::collections::{BTreeMap, HashMap};

use arbitrary::Arbitrary;
use layotto::api::blocks::configuration::{ConfigurationItem, ConfigurationQuery, SaveConfiguration};
use layotto::api::blocks::lock::{LeaseRequest, UnlockRequest};
use layotto::api::blocks::pubsub::{self, PublishEvent, SubscriptionSpec};
use layotto::api::blocks::sequencer::{Increment, NextIdRequest};
use layotto::api::blocks::state::{Concurrency, Consistency, DeleteItem, StateItem, Transaction, TransactionOperation};
use layotto::api::blocks::{BlockError, MAX_TTL_SECONDS};
use layotto::components::ComponentSpec;
use layotto::components::state::memory::MemoryStore;
use layotto::components::state::{StateStore, TransactionOp};
use layotto::fuzzing;
use layotto_fuzz::MAX_ERROR_BYTES;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// The component's name (the request's store, pubsub, ...).
    component: String,
    /// Its `keyPrefix` metadata.
    key_prefix: KeyPrefix,
    /// Its other metadata (`biggerThan.<key>`, `maxConcurrentHandlers`,
    /// `consumerID`, ...).
    metadata: Vec<(Meta, String)>,
    /// The sidecar's app id (may be empty).
    app_id: String,
    request: Request,
}

#[derive(Arbitrary, Debug)]
enum KeyPrefix {
    Unset,
    None,
    AppId,
    Name,
    Literal(String),
}

#[derive(Arbitrary, Debug)]
enum Meta {
    BiggerThan(String),
    MaxConcurrentHandlers,
    ConsumerId,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Request {
    GetState(String),
    GetBulkState(Vec<String>),
    SaveState(Vec<Item>),
    DeleteState(Vec<Delete>),
    Transaction {
        operations: Vec<(Operation, Option<Item>)>,
        metadata: Metadata,
    },
    Publish {
        topic: String,
        data: Vec<u8>,
        content_type: String,
        metadata: Metadata,
    },
    Subscribe {
        topic: String,
        metadata: Metadata,
    },
    TryLock(Lease),
    KeepAlive(Lease),
    Unlock {
        resource_id: String,
        owner: String,
    },
    NextId {
        key: String,
        strong: bool,
    },
    GetConfiguration(Query),
    DeleteConfiguration(Query),
    SaveConfiguration {
        app_id: String,
        items: Vec<ConfigItem>,
    },
    GetSecret(String),
}

#[derive(Arbitrary, Debug)]
struct Item {
    key: String,
    value: Vec<u8>,
    etag: Option<String>,
    first_write: bool,
    metadata: Metadata,
}

#[derive(Arbitrary, Debug)]
struct Delete {
    key: String,
    etag: Option<String>,
}

#[derive(Arbitrary, Debug)]
enum Operation {
    Upsert,
    Delete,
    Other(String),
}

/// Request metadata, with the keys the blocks read made likely.
#[derive(Arbitrary, Debug)]
struct Metadata(Vec<(MetaKey, String)>);

#[derive(Arbitrary, Debug)]
enum MetaKey {
    TtlInSeconds,
    RawPayload,
    Other(String),
}

impl Metadata {
    fn map(self) -> HashMap<String, String> {
        self.0
            .into_iter()
            .map(|(key, value)| {
                let key = match key {
                    MetaKey::TtlInSeconds => "ttlInSeconds".to_owned(),
                    MetaKey::RawPayload => pubsub::RAW_PAYLOAD.to_owned(),
                    MetaKey::Other(key) => key,
                };
                (key, value)
            })
            .collect()
    }
}

#[derive(Arbitrary, Debug)]
struct Lease {
    resource_id: String,
    owner: String,
    expire: i32,
}

#[derive(Arbitrary, Debug)]
struct Query {
    app_id: String,
    group: String,
    label: String,
    keys: Vec<String>,
}

#[derive(Arbitrary, Debug)]
struct ConfigItem {
    key: String,
    content: String,
    group: String,
    label: String,
    tags: HashMap<String, String>,
}

impl Item {
    fn state_item(self) -> StateItem {
        StateItem {
            key: self.key,
            value: self.value,
            etag: self.etag,
            concurrency: if self.first_write {
                Concurrency::FirstWrite
            } else {
                Concurrency::LastWrite
            },
            metadata: self.metadata.map(),
        }
    }
}

impl Query {
    fn query(self, store: &str) -> ConfigurationQuery {
        ConfigurationQuery {
            store: store.to_owned(),
            app_id: self.app_id,
            group: self.group,
            label: self.label,
            keys: self.keys,
        }
    }
}

fn spec(input: &mut Input) -> ComponentSpec {
    let mut metadata = BTreeMap::new();
    let prefix = match std::mem::replace(&mut input.key_prefix, KeyPrefix::Unset) {
        KeyPrefix::Unset => None,
        KeyPrefix::None => Some("none".to_owned()),
        KeyPrefix::AppId => Some("appid".to_owned()),
        KeyPrefix::Name => Some("name".to_owned()),
        KeyPrefix::Literal(literal) => Some(literal),
    };
    if let Some(prefix) = prefix {
        metadata.insert("keyPrefix".to_owned(), prefix);
    }
    for (key, value) in std::mem::take(&mut input.metadata) {
        let key = match key {
            Meta::BiggerThan(key) => format!("biggerThan.{key}"),
            Meta::MaxConcurrentHandlers => pubsub::MAX_CONCURRENT_HANDLERS.to_owned(),
            Meta::ConsumerId => "consumerID".to_owned(),
            Meta::Other(key) => key,
        };
        metadata.insert(key, value);
    }
    let mut spec = ComponentSpec::new(input.component.clone(), "in-memory");
    spec.metadata = metadata;
    spec.app_id = input.app_id.clone();
    spec
}

/// A refusal says why in a bounded message.
fn bounded<T>(result: Result<T, BlockError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty(), "an empty error: {error:?}");
            assert!(
                message.len() <= MAX_ERROR_BYTES,
                "a {}-byte error message: {}...",
                message.len(),
                message.chars().take(200).collect::<String>()
            );
            None
        }
    }
}

/// Applies checked state writes to a fresh in-memory store: no panic (an
/// overflowing TTL once panicked the store and lost every key), and a
/// write the store accepts can be read back.
fn apply(ops: Vec<TransactionOp>) {
    let store = MemoryStore::default();
    let mut last: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    for op in &ops {
        let value = match op {
            TransactionOp::Upsert(set) => Some(set.value.clone()),
            TransactionOp::Delete(_) => None,
        };
        last.insert(op.key().to_owned(), value);
    }
    let single = ops.len() == 1;
    futures::executor::block_on(async {
        let written = if single {
            match ops.into_iter().next() {
                Some(TransactionOp::Upsert(set)) => store.set(set).await.map(drop),
                Some(TransactionOp::Delete(delete)) => store.delete(delete).await,
                None => Ok(()),
            }
        } else {
            store.transact(ops).await
        };
        if written.is_err() {
            // Nothing of a refused write may be there: the store was empty.
            for key in last.keys() {
                let read = store.get(key, Consistency::Unspecified).await;
                assert!(matches!(read, Ok(None)), "a refused write left {key:?}: {read:?}");
            }
            return;
        }
        for (key, expected) in last {
            let read = store.get(&key, Consistency::Unspecified).await.expect("read");
            assert_eq!(read.map(|v| v.data), expected, "key {key:?}");
        }
    });
}

fuzz_target!(|input: Input| {
    let mut input = input;
    let spec = spec(&mut input);
    let app_id = input.app_id.as_str();
    let store = spec.name.clone();
    match input.request {
        Request::GetState(key) => {
            bounded(fuzzing::state_key(&spec, app_id, &key));
        }
        Request::GetBulkState(keys) => {
            for key in keys {
                bounded(fuzzing::state_key(&spec, app_id, &key));
            }
        }
        Request::SaveState(items) => {
            let items = items.into_iter().map(Item::state_item).collect();
            if let Some(ops) = bounded(fuzzing::state_save(&spec, app_id, items)) {
                for op in &ops {
                    if let TransactionOp::Upsert(set) = op {
                        assert!(set.ttl.is_none_or(|ttl| ttl.as_secs() <= MAX_TTL_SECONDS as u64));
                    }
                }
                apply(ops);
            }
        }
        Request::DeleteState(items) => {
            let items: Vec<DeleteItem> = items
                .into_iter()
                .map(|d| DeleteItem {
                    key: d.key,
                    etag: d.etag,
                })
                .collect();
            if let Some(ops) = bounded(fuzzing::state_delete(&spec, app_id, &items)) {
                apply(ops);
            }
        }
        Request::Transaction { operations, metadata } => {
            let operations = operations
                .into_iter()
                .map(|(operation, item)| TransactionOperation {
                    operation: match operation {
                        Operation::Upsert => "upsert".to_owned(),
                        Operation::Delete => "delete".to_owned(),
                        Operation::Other(other) => other,
                    },
                    item: item.map(Item::state_item),
                })
                .collect();
            let req = Transaction {
                store,
                operations,
                metadata: metadata.map(),
            };
            if let Some(ops) = bounded(fuzzing::state_transaction(&spec, app_id, req)) {
                apply(ops);
            }
        }
        Request::Publish {
            topic,
            data,
            content_type,
            metadata,
        } => {
            let event = PublishEvent {
                pubsub: store,
                topic,
                data,
                content_type,
                metadata: metadata.map(),
                api: Default::default(),
            };
            if let Some(req) = bounded(fuzzing::publish(event, app_id)) {
                assert!(!req.topic.is_empty());
                if let Err(error) = fuzzing::nats_publish(&req) {
                    assert!(error.to_string().len() <= MAX_ERROR_BYTES, "{error}");
                }
            }
        }
        Request::Subscribe { topic, metadata } => {
            let sub = SubscriptionSpec {
                pubsub: store,
                topic,
                metadata: metadata.map(),
                dead_letter_topic: None,
            };
            let req = pubsub::subscribe_request(&sub, &spec);
            assert!(req.max_in_flight > 0);
        }
        Request::TryLock(lease) | Request::KeepAlive(lease) => {
            let req = LeaseRequest {
                store,
                resource_id: lease.resource_id,
                owner: lease.owner,
                expire: lease.expire,
            };
            if let Some((_, ttl)) = bounded(fuzzing::lock_lease(&spec, app_id, &req)) {
                assert!(!ttl.is_zero());
            }
        }
        Request::Unlock { resource_id, owner } => {
            let req = UnlockRequest {
                store,
                resource_id,
                owner,
            };
            bounded(fuzzing::unlock(&spec, app_id, &req));
        }
        Request::NextId { key, strong } => {
            let req = NextIdRequest {
                store,
                key,
                increment: if strong { Increment::Strong } else { Increment::Weak },
            };
            bounded(fuzzing::next_id(&spec, app_id, &req));
        }
        Request::GetConfiguration(query) => {
            bounded(fuzzing::configuration_query(app_id, query.query(&store)));
        }
        Request::DeleteConfiguration(query) => {
            bounded(fuzzing::configuration_delete(app_id, query.query(&store)));
        }
        Request::SaveConfiguration { app_id: own, items } => {
            let req = SaveConfiguration {
                store,
                app_id: own,
                items: items
                    .into_iter()
                    .map(|it| ConfigurationItem {
                        key: it.key,
                        content: it.content,
                        group: it.group,
                        label: it.label,
                        tags: it.tags,
                        metadata: HashMap::new(),
                    })
                    .collect(),
            };
            bounded(fuzzing::configuration_save(app_id, req));
        }
        Request::GetSecret(key) => {
            bounded(fuzzing::secret(&key));
        }
    }
});
