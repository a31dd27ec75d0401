//! `helloworld`: answers its configured greeting, as Layotto's does.
//!
//! ```toml
//! [hellos.helloworld]
//! type = "helloworld"
//! hello = "greetings"      # or metadata = { hello = "greetings" }
//! ```

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use crate::components::hello::HelloService;
use crate::components::meta::{self, Metadata, Parser};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentSpec, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn HelloService> = TypeEntry::of::<HelloWorldType>();

pub struct HelloWorldType;

impl ComponentType<dyn HelloService> for HelloWorldType {
    const NAME: &'static str = "helloworld";
    type Metadata = HelloMetadata;

    fn build(
        _ctx: BuildContext,
        metadata: HelloMetadata,
    ) -> BoxFuture<'static, Result<Arc<dyn HelloService>, BuildError>> {
        async move { Ok(Arc::new(HelloWorld::with(metadata)) as Arc<dyn HelloService>) }.boxed()
    }
}

/// What `helloworld` reads from its metadata. Like Layotto's, it takes
/// any other key and ignores it: it is the smoke test a config starts from.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct HelloMetadata {
    /// The greeting.
    #[serde(default = "default_greeting")]
    pub hello: String,
}

impl Metadata for HelloMetadata {
    fn read(parser: &mut Parser<'_>) -> Option<Self> {
        parser.accept_other_keys();
        parser.section()
    }
}

fn default_greeting() -> String {
    "greetings".to_owned()
}

pub struct HelloWorld {
    greeting: String,
}

impl HelloWorld {
    pub fn with(metadata: HelloMetadata) -> Self {
        HelloWorld {
            greeting: metadata.hello,
        }
    }

    /// For callers outside the registry (the benchmark's baseline): the
    /// greeting of `spec`, or the default when its metadata does not parse.
    pub fn new(spec: &ComponentSpec) -> Self {
        let metadata = meta::parse(spec).unwrap_or_else(|_| HelloMetadata {
            hello: default_greeting(),
        });
        HelloWorld::with(metadata)
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
