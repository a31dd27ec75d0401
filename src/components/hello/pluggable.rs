//! A pluggable hello: a process serving Layotto's
//! `spec.proto.pluggable.v1.hello.Hello` on a unix socket (see
//! [`crate::components::pluggable`] for discovery; Layotto's folder is
//! `LAYOTTO_COMPONENTS_SOCKETS_FOLDER`, default
//! `/tmp/runtime/component-sockets`). Its type is the socket's name.
//!
//! `Init` gets what Layotto sends: the type, the `hello` metadata as the
//! greeting, the whole metadata, and the secret references. Layotto's
//! protocol has no `Ping`, so the health check is a fresh connection to the
//! socket: it fails as soon as the process stops listening.

use std::path::PathBuf;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::HelloService;
use crate::components::pluggable::{self, Connection};
use crate::components::{BuildContext, BuildError, Component, ComponentError, Kind, TypeEntry};
use crate::proto::pluggable::v1::common as common_pb;
use crate::proto::pluggable::v1::hello as pb;
use pb::hello_client::HelloClient;

/// The entry every discovered hello type builds with.
pub const TYPE: TypeEntry<dyn HelloService> = TypeEntry {
    name: "pluggable",
    rust_type: std::any::type_name::<PluggableHello>,
    validate: pluggable::any_metadata,
    build,
};

fn build(ctx: BuildContext) -> BoxFuture<'static, Result<Arc<dyn HelloService>, BuildError>> {
    async move {
        let (conn, socket) = pluggable::connect(Kind::Hellos, &ctx.spec).await?;
        let mut client = HelloClient::new(conn);
        let spec = &ctx.spec;
        let config = common_pb::Config {
            secret_ref: spec
                .secret_refs
                .iter()
                .map(|r| common_pb::SecretRefConfig {
                    store_name: r.store.clone(),
                    key: r.secret.clone(),
                    sub_key: r.key.clone().unwrap_or_default(),
                    inject_as: r.inject_as.clone(),
                })
                .collect(),
            component_ref: None,
        };
        client
            .init(pb::HelloConfig {
                config: Some(config),
                r#type: spec.type_name.clone(),
                hello_string: spec.meta("hello").unwrap_or_default().to_owned(),
                metadata: spec.metadata.clone().into_iter().collect(),
            })
            .await
            .map_err(pluggable::init_failed)?;
        Ok(Arc::new(PluggableHello {
            client,
            socket: socket.path,
        }) as Arc<dyn HelloService>)
    }
    .boxed()
}

pub struct PluggableHello {
    client: HelloClient<Connection>,
    socket: PathBuf,
}

#[async_trait::async_trait]
impl Component for PluggableHello {
    async fn health_check(&self) -> Result<(), ComponentError> {
        tokio::net::UnixStream::connect(&self.socket)
            .await
            .map(drop)
            .map_err(|e| ComponentError::Unavailable(format!("{}: {e}", self.socket.display())))
    }
}

#[async_trait::async_trait]
impl HelloService for PluggableHello {
    async fn hello(&self, name: &str) -> Result<String, ComponentError> {
        let answer = self
            .client
            .clone()
            .say_hello(pb::HelloRequest { name: name.to_owned() })
            .await
            .map_err(pluggable::error)?;
        Ok(answer.into_inner().hello_string)
    }
}
