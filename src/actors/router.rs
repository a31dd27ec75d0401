//! Finds the component a request names.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use super::handle::{ComponentHandle, Slot};
use crate::components::{BuildingBlock, Kind};

/// Why a request's component name does not lead to a component.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("no {kind} component is configured")]
    NoneConfigured { kind: Kind },
    #[error("{field} is empty; configured {kind} components: {}", known.join(", "))]
    EmptyName {
        kind: Kind,
        field: &'static str,
        known: Vec<String>,
    },
    #[error("{kind} component '{name}' is not configured; configured: {}", known.join(", "))]
    Unknown {
        kind: Kind,
        name: String,
        known: Vec<String>,
    },
}

/// The components of one building block, by instance name. A reload adds
/// and removes components while requests read the map: each read takes the
/// map of the moment (one `Arc` clone under a read lock).
pub struct Blocks<B: BuildingBlock> {
    handles: RwLock<Arc<BTreeMap<String, ComponentHandle<B>>>>,
}

impl<B: BuildingBlock> Blocks<B> {
    pub fn new(slots: &[Arc<Slot<B>>]) -> Self {
        Blocks {
            handles: RwLock::new(Arc::new(
                slots
                    .iter()
                    .map(|slot| (slot.spec().name.clone(), ComponentHandle::new(slot.clone())))
                    .collect(),
            )),
        }
    }

    fn current(&self) -> Arc<BTreeMap<String, ComponentHandle<B>>> {
        self.handles
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Routes requests for the slot's name to it from now on.
    pub fn insert(&self, slot: Arc<Slot<B>>) {
        let mut handles = self.handles.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = (**handles).clone();
        next.insert(slot.spec().name.clone(), ComponentHandle::new(slot));
        *handles = Arc::new(next);
    }

    /// Stops routing requests to `name`; answers its handle.
    pub fn remove(&self, name: &str) -> Option<ComponentHandle<B>> {
        let mut handles = self.handles.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = (**handles).clone();
        let removed = next.remove(name);
        *handles = Arc::new(next);
        removed
    }

    /// The component called `name`; `field` names the request field it came
    /// from, for the error message.
    pub fn get(&self, field: &'static str, name: &str) -> Result<ComponentHandle<B>, RouteError> {
        let handles = self.current();
        if handles.is_empty() {
            return Err(RouteError::NoneConfigured { kind: B::KIND });
        }
        if name.is_empty() {
            return Err(RouteError::EmptyName {
                kind: B::KIND,
                field,
                known: self.names(),
            });
        }
        handles.get(name).cloned().ok_or_else(|| RouteError::Unknown {
            kind: B::KIND,
            name: crate::api::blocks::quote(name).into_owned(),
            known: handles.keys().cloned().collect(),
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.current().keys().cloned().collect()
    }

    /// The components of the moment.
    pub fn handles(&self) -> Vec<ComponentHandle<B>> {
        self.current().values().cloned().collect()
    }
}

macro_rules! router {
    ($(($block:ident, $field:ident)),*) => {
        /// Every configured component, by building block (one field per
        /// row of the block table).
        pub struct Router {
            $(pub $field: Blocks<crate::components::$block>,)*
        }
    };
}

with_blocks!(router);
