//! Layotto's Lifecycle API: `ApplyConfiguration` replaces one component's
//! metadata (all of it) and rebuilds the component through the same path as
//! a config reload (make-before-break, see `runtime::reload`), for every
//! component type (Layotto does it for `helloworld` only).
//!
//! Layotto's argument checks, in its order and words: an empty kind, an
//! empty name or empty metadata is INVALID_ARGUMENT "field <f> is not
//! configured"; a component that does not exist is INVALID_ARGUMENT
//! "component not found. kind: <k> , name: <n>".

use std::collections::BTreeMap;

use tokio::sync::{mpsc, oneshot};

use super::BlockError;
use crate::api::ApiContext;
use crate::components::Kind;

/// A change for the reloader, which owns the config in force.
#[derive(Debug)]
pub struct Apply {
    pub kind: Kind,
    pub name: String,
    pub metadata: BTreeMap<String, String>,
    pub reply: oneshot::Sender<Result<(), BlockError>>,
}

/// Where [`Apply`] requests go: set once the reloader runs.
pub type ApplySender = mpsc::UnboundedSender<Apply>;

fn no_field(field: &str) -> BlockError {
    BlockError::invalid(format!("field {field} is not configured"))
}

/// Checks the request and hands it to the reloader.
pub async fn apply_configuration(
    ctx: &ApiContext,
    kind: &str,
    name: &str,
    metadata: BTreeMap<String, String>,
) -> Result<(), BlockError> {
    if kind.is_empty() {
        return Err(no_field("kind"));
    }
    if name.is_empty() {
        return Err(no_field("name"));
    }
    if metadata.is_empty() {
        return Err(no_field("metadata"));
    }
    let not_found = || {
        BlockError::invalid(format!(
            "component not found. kind: {} , name: {}",
            super::quote(kind),
            super::quote(name)
        ))
    };
    let kind = Kind::from_section(kind)
        .filter(|k| *k != Kind::Wasm)
        .ok_or_else(not_found)?;
    let Some(sender) = ctx.lifecycle.get() else {
        return Err(BlockError::Unavailable("the sidecar is still starting".into()));
    };
    let (reply, answer) = oneshot::channel();
    sender
        .send(Apply {
            kind,
            name: name.to_owned(),
            metadata,
            reply,
        })
        .map_err(|_| BlockError::Unavailable("the sidecar is stopping".into()))?;
    match answer.await {
        Ok(outcome) => outcome.map_err(|e| match e {
            BlockError::UnknownComponent(_) => not_found(),
            other => other,
        }),
        Err(_) => Err(BlockError::Unavailable("the sidecar is stopping".into())),
    }
}
