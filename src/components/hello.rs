//! The `hellos` building block: a greeting service, Layotto's smoke test for
//! a running sidecar.

pub mod helloworld;
pub mod pluggable;

use super::{Component, ComponentError};

/// A component that answers `SayHello`.
#[async_trait::async_trait]
pub trait HelloService: Component {
    /// Greets `name`; an empty name gets the bare greeting.
    async fn hello(&self, name: &str) -> Result<String, ComponentError>;
}
