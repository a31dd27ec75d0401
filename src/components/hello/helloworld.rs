//! `helloworld`: answers its configured greeting, as Layotto's does.
//!
//! ```toml
//! [hellos.helloworld]
//! type = "helloworld"
//! hello = "greetings"      # or metadata = { hello = "greetings" }
//! ```

use std::sync::Arc;

use futures::FutureExt;

use crate::components::hello::HelloService;
use crate::components::{Component, ComponentError, ComponentSpec, MetadataError, TypeEntry};

pub const TYPE: TypeEntry<dyn HelloService> = TypeEntry {
    name: "helloworld",
    validate,
    build: |crate::components::BuildContext { spec, .. }| {
        async move { Ok(Arc::new(HelloWorld::new(&spec)) as Arc<dyn HelloService>) }.boxed()
    },
};

/// Metadata key holding the greeting.
const HELLO: &str = "hello";
const DEFAULT_GREETING: &str = "greetings";

fn validate(_spec: &ComponentSpec) -> Vec<MetadataError> {
    Vec::new()
}

pub struct HelloWorld {
    greeting: String,
}

impl HelloWorld {
    pub fn new(spec: &ComponentSpec) -> Self {
        HelloWorld {
            greeting: spec.meta(HELLO).unwrap_or(DEFAULT_GREETING).to_owned(),
        }
    }

    /// The answer, shared with the benchmark's actor-free baseline.
    pub fn greet(&self, name: &str) -> String {
        if name.is_empty() {
            self.greeting.clone()
        } else {
            format!("{}, {name}", self.greeting)
        }
    }
}

#[async_trait::async_trait]
impl Component for HelloWorld {
    async fn health_check(&self) -> Result<(), ComponentError> {
        // Nothing behind it can fail.
        Ok(())
    }
}

#[async_trait::async_trait]
impl HelloService for HelloWorld {
    async fn hello(&self, name: &str) -> Result<String, ComponentError> {
        Ok(self.greet(name))
    }
}
