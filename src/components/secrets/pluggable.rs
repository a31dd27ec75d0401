//! A pluggable secret store: a process serving Dapr's
//! `dapr.proto.components.v1.SecretStore` on a unix socket (see
//! [`crate::components::pluggable`] for discovery). Its type is the socket's
//! name; its metadata goes to the process's `Init`. A `Get` answered
//! NOT_FOUND is a secret that does not exist.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Secret, SecretStore};
use crate::components::pluggable::{self, Connection};
use crate::components::{BuildContext, BuildError, Component, ComponentError, Kind, TypeEntry};
use crate::proto::dapr::components::v1 as pb;
use pb::secret_store_client::SecretStoreClient;

/// The entry every discovered secret store type builds with.
pub const TYPE: TypeEntry<dyn SecretStore> = TypeEntry {
    name: "pluggable",
    rust_type: std::any::type_name::<PluggableSecrets>,
    validate: pluggable::any_metadata,
    build,
};

fn build(ctx: BuildContext) -> BoxFuture<'static, Result<Arc<dyn SecretStore>, BuildError>> {
    async move {
        let (conn, _) = pluggable::connect(Kind::SecretStore, &ctx.spec).await?;
        let mut client = SecretStoreClient::new(conn);
        client
            .init(pb::SecretStoreInitRequest {
                metadata: Some(pb::MetadataRequest {
                    properties: ctx.spec.metadata.clone().into_iter().collect(),
                }),
            })
            .await
            .map_err(pluggable::init_failed)?;
        Ok(Arc::new(PluggableSecrets { client }) as Arc<dyn SecretStore>)
    }
    .boxed()
}

pub struct PluggableSecrets {
    client: SecretStoreClient<Connection>,
}

#[async_trait::async_trait]
impl Component for PluggableSecrets {
    async fn health_check(&self) -> Result<(), ComponentError> {
        self.client
            .clone()
            .ping(pb::PingRequest {})
            .await
            .map(drop)
            .map_err(pluggable::error)
    }
}

#[async_trait::async_trait]
impl SecretStore for PluggableSecrets {
    async fn get(&self, key: &str) -> Result<Option<Secret>, ComponentError> {
        let answer = self
            .client
            .clone()
            .get(pb::GetSecretRequest {
                key: key.to_owned(),
                metadata: HashMap::new(),
            })
            .await;
        match answer {
            Ok(answer) => Ok(Some(answer.into_inner().data.into_iter().collect())),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(pluggable::error(status)),
        }
    }

    async fn bulk(&self) -> Result<BTreeMap<String, Secret>, ComponentError> {
        let answer = self
            .client
            .clone()
            .bulk_get(pb::BulkGetSecretRequest {
                metadata: HashMap::new(),
            })
            .await
            .map_err(pluggable::error)?
            .into_inner();
        Ok(answer
            .data
            .into_iter()
            .map(|(name, secret)| (name, secret.secrets.into_iter().collect()))
            .collect())
    }
}
