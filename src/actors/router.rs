//! Finds the component a request names.

use std::collections::BTreeMap;
use std::sync::Arc;

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

/// The components of one building block, by instance name.
pub struct Blocks<B: BuildingBlock> {
    handles: BTreeMap<String, ComponentHandle<B>>,
}

impl<B: BuildingBlock> Blocks<B> {
    pub fn new(slots: &[Arc<Slot<B>>]) -> Self {
        Blocks {
            handles: slots
                .iter()
                .map(|slot| (slot.spec.name.clone(), ComponentHandle::new(slot.clone())))
                .collect(),
        }
    }

    /// The component called `name`; `field` names the request field it came
    /// from, for the error message.
    pub fn get(&self, field: &'static str, name: &str) -> Result<&ComponentHandle<B>, RouteError> {
        if self.handles.is_empty() {
            return Err(RouteError::NoneConfigured { kind: B::KIND });
        }
        if name.is_empty() {
            return Err(RouteError::EmptyName {
                kind: B::KIND,
                field,
                known: self.names(),
            });
        }
        self.handles.get(name).ok_or_else(|| RouteError::Unknown {
            kind: B::KIND,
            name: crate::api::blocks::quote(name).into_owned(),
            known: self.names(),
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.handles.keys().cloned().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ComponentHandle<B>> {
        self.handles.values()
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
