//! The building blocks' rules, once, for every front end.
//!
//! A block service is one module per building block: plain Rust requests
//! and responses that know nothing of protobuf or HTTP, and async functions
//! taking the [`ApiContext`](super::ApiContext) that do everything a
//! request needs before a component sees it: validate it, scope its keys
//! (`keyPrefix`), parse etags and TTLs, pick the component through the
//! `Router`, and send it the actor message. A front end (Layotto's gRPC
//! API, Dapr's HTTP API) only decodes its wire format into a block request,
//! calls the block, and encodes the answer, so the two cannot drift apart.
//!
//! Every block fails with one type, [`BlockError`]; each front end maps it
//! in one file (`api::grpc::status` for gRPC).

pub mod bindings;
pub mod configuration;
pub mod file;
pub mod hello;
pub mod invoke;
pub mod lifecycle;
pub mod lock;
pub mod metadata;
pub mod pubsub;
pub mod secrets;
pub mod sequencer;
pub mod state;
pub mod wasm;

use crate::actors::{CallError, RouteError};
use crate::components::{ComponentError, ComponentSpec, KeyPrefix, PREFIX_SEPARATOR};

/// Why a block refused or failed a request. Each variant carries the
/// message the client sees; its kind picks the status code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The request is malformed: an empty key, a bad etag, an unknown
    /// component name.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named item does not exist.
    #[error("{0}")]
    NotFound(String),
    /// No component of the block is configured.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request names a component that is not configured (or none).
    #[error("{0}")]
    UnknownComponent(String),
    /// An optimistic-concurrency check failed: an etag mismatch, or a
    /// first-write to a key that exists.
    #[error("{0}")]
    Conflict(String),
    /// What the request would create is already there (a second stream on
    /// one topic).
    #[error("{0}")]
    AlreadyExists(String),
    /// The component, or its backend, cannot serve now; retrying may work.
    #[error("{0}")]
    Unavailable(String),
    /// The component is at its capacity; retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The component does not support the operation.
    #[error("{0}")]
    Unimplemented(String),
    /// The caller's deadline passed before the answer came.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The target refused the caller (an access policy).
    #[error("{0}")]
    PermissionDenied(String),
    /// Anything else, a component's panic included.
    #[error("{0}")]
    Internal(String),
}

impl BlockError {
    pub(crate) fn invalid(message: impl Into<String>) -> BlockError {
        BlockError::InvalidArgument(message.into())
    }

    /// A component's error met outside a call (in a stream it answered).
    pub(crate) fn from_component(e: ComponentError) -> BlockError {
        component_kind(&e)(e.to_string())
    }
}

/// The longest TTL a request may ask for (`ttlInSeconds`): about 68 years,
/// as Dapr caps it, and small enough that no store's clock arithmetic can
/// overflow.
pub const MAX_TTL_SECONDS: i64 = i32::MAX as i64;

pub use crate::components::{QUOTE_LIMIT, quote};

impl From<RouteError> for BlockError {
    fn from(e: RouteError) -> BlockError {
        match e {
            RouteError::NoneConfigured { .. } => BlockError::FailedPrecondition(e.to_string()),
            RouteError::EmptyName { .. } | RouteError::Unknown { .. } => BlockError::UnknownComponent(e.to_string()),
        }
    }
}

impl From<CallError> for BlockError {
    fn from(e: CallError) -> BlockError {
        let kind = match &e {
            CallError::Unavailable { .. } => BlockError::Unavailable,
            CallError::Busy { .. } | CallError::Limited { .. } => BlockError::ResourceExhausted,
            CallError::Panicked { .. } => BlockError::Internal,
            CallError::Component { error, .. } => component_kind(error),
        };
        kind(e.to_string())
    }
}

fn component_kind(e: &ComponentError) -> fn(String) -> BlockError {
    match e {
        ComponentError::InvalidArgument(_) => BlockError::InvalidArgument,
        ComponentError::NotFound(_) => BlockError::NotFound,
        ComponentError::Conflict(_) => BlockError::Conflict,
        ComponentError::Unavailable(_) | ComponentError::Fatal(_) => BlockError::Unavailable,
        ComponentError::Unsupported(_) => BlockError::Unimplemented,
        ComponentError::FailedPrecondition(_) => BlockError::FailedPrecondition,
        ComponentError::Internal(_) => BlockError::Internal,
    }
}

/// An empty required field is refused, naming the field.
pub(crate) fn required(value: &str, field: &str) -> Result<(), BlockError> {
    if value.is_empty() {
        Err(BlockError::invalid(format!("{field} is empty")))
    } else {
        Ok(())
    }
}

/// The backend key of `key` for the Lock and Sequencer blocks, with
/// Layotto's scheme: `<namespace>|||<prefix>||<key>`, or
/// `<namespace>|||<key>` without a prefix. The prefix comes from the
/// component's `keyPrefix` (default `appid`).
pub(crate) fn scoped_key(
    namespace: &str,
    spec: &ComponentSpec,
    app_id: &str,
    store: &str,
    key: &str,
) -> Result<String, BlockError> {
    if key.contains(PREFIX_SEPARATOR) {
        return Err(BlockError::invalid(format!("key '{key}' must not contain '||'")));
    }
    let scheme = KeyPrefix::from_spec(spec, KeyPrefix::AppId);
    Ok(match scheme.prefix(app_id, store) {
        None => format!("{namespace}|||{key}"),
        Some(prefix) => format!("{namespace}|||{prefix}||{key}"),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::components::{KEY_PREFIX, Kind};

    fn spec(key_prefix: Option<&str>) -> ComponentSpec {
        let spec = ComponentSpec::new("lk", "memory");
        match key_prefix {
            Some(p) => spec.with_metadata(KEY_PREFIX, p),
            None => spec,
        }
    }

    #[test]
    fn scoped_keys_follow_layottos_scheme() {
        let key = |prefix, app| scoped_key("lock", &spec(prefix), app, "lk", "res").expect("accepted");
        assert_eq!(key(None, "app"), "lock|||app||res");
        assert_eq!(key(None, ""), "lock|||res", "no app id, no prefix");
        assert_eq!(key(Some("appid"), "app"), "lock|||app||res");
        assert_eq!(key(Some("name"), "app"), "lock|||lk||res");
        assert_eq!(key(Some("none"), "app"), "lock|||res");
        assert_eq!(key(Some("team"), "app"), "lock|||team||res");
    }

    #[test]
    fn scoped_keys_refuse_the_separator() {
        let err = scoped_key("sequencer", &spec(None), "app", "s", "a||b").expect_err("refused");
        assert_eq!(err, BlockError::invalid("key 'a||b' must not contain '||'"));
    }

    #[test]
    fn route_errors_keep_their_kind_and_message() {
        let none = RouteError::NoneConfigured { kind: Kind::State };
        let message = none.to_string();
        assert_eq!(BlockError::from(none), BlockError::FailedPrecondition(message));
        let unknown = RouteError::Unknown {
            kind: Kind::State,
            name: "x".into(),
            known: vec!["a".into()],
        };
        let message = unknown.to_string();
        assert_eq!(BlockError::from(unknown), BlockError::UnknownComponent(message));
    }

    #[test]
    fn call_errors_keep_their_kind_and_message() {
        let component: Arc<str> = "state/s".into();
        let cases = [
            (ComponentError::Conflict("etag".into()), "Conflict"),
            (ComponentError::Fatal("gone".into()), "Unavailable"),
            (ComponentError::Unsupported("no".into()), "Unimplemented"),
            (ComponentError::NotFound("no".into()), "NotFound"),
            (ComponentError::FailedPrecondition("floor".into()), "FailedPrecondition"),
        ];
        for (error, kind) in cases {
            let call = CallError::Component {
                component: component.clone(),
                error,
            };
            let message = call.to_string();
            let block = BlockError::from(call);
            assert!(format!("{block:?}").starts_with(kind), "{block:?}");
            assert_eq!(block.to_string(), message);
        }
        let busy = BlockError::from(CallError::Busy { component, capacity: 2 });
        assert!(matches!(busy, BlockError::ResourceExhausted(m) if m.contains("capacity of 2")));
    }
}
