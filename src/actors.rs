//! The actor layer: every configured component instance lives in a
//! [`ComponentActor`], and requests reach it as typed messages through a
//! [`ComponentHandle`] looked up in the [`Router`].
//!
//! A handle checks the component's status first (a DOWN component fails
//! fast), takes a slot of the component's bounded queue (a full queue is
//! refused, never grown), then sends the operation to the actor. The actor
//! runs each operation as its own task on the component's arbiter, so many
//! requests to one component proceed at once, and catches a panic or a fatal
//! error at that boundary and stops, for its supervisor to restart.

pub mod bindings;
pub mod configuration;
pub mod file;
mod handle;
pub mod hello;
mod host;
pub mod lock;
pub mod name_resolution;
pub mod pubsub;
mod router;
pub mod secrets;
pub mod sequencer;
pub mod state;
pub mod wasm;

pub use handle::{CallError, ComponentHandle, Slot};
pub use host::{ChildEvent, ComponentActor, HostSettings, Reconfigure, Shutdown};
pub use router::{Blocks, RouteError, Router};

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::components::{BuildingBlock, ComponentError};

/// A typed request to one building block's component, e.g. `SayHello`.
pub trait Operation<B: BuildingBlock>: Send + 'static {
    type Output: Send + 'static;

    /// Runs the operation against the component. Runs on the component's
    /// arbiter, concurrently with other operations.
    fn run(self, component: Arc<B::Component>) -> BoxFuture<'static, Result<Self::Output, ComponentError>>;
}
