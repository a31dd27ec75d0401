//! `redis`: Dapr's Redis output binding. `create` sets the request's `key`
//! to the data (with `ttlInSeconds`, an expiry), `get` answers its value
//! (nothing when missing; `delete: "true"` takes it away as it reads),
//! `delete` removes it, `increment` adds one.
//!
//! Metadata: [`RedisConnection`].

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;

use super::{Binding, BindingCommon, BindingRequest, BindingResponse, ops, required, ttl};
use crate::components::redis_client::{self, RedisConnection, map_error};
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn Binding> = TypeEntry::of::<RedisType>();

/// Dapr's `increment` operation.
pub const INCREMENT: &str = "increment";

pub struct RedisType;

impl ComponentType<dyn Binding> for RedisType {
    const NAME: &'static str = "redis";
    type Metadata = (RedisConnection, BindingCommon);

    fn build(
        _ctx: BuildContext,
        (connection, _): (RedisConnection, BindingCommon),
    ) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
        async move {
            let conn = connection.connect().await?;
            Ok(Arc::new(RedisBinding { conn }) as Arc<dyn Binding>)
        }
        .boxed()
    }
}

pub struct RedisBinding {
    conn: ConnectionManager,
}

#[async_trait::async_trait]
impl Component for RedisBinding {
    async fn health_check(&self) -> Result<(), ComponentError> {
        redis_client::ping(&mut self.conn.clone()).await
    }
}

#[async_trait::async_trait]
impl Binding for RedisBinding {
    fn operations(&self) -> Vec<&str> {
        vec![ops::CREATE, ops::DELETE, ops::GET, INCREMENT]
    }

    async fn invoke(&self, request: BindingRequest) -> Result<BindingResponse, ComponentError> {
        let key = required(&request, "key")
            .map_err(|_| ComponentError::InvalidArgument("redis binding: missing key in request metadata".into()))?;
        let ttl = ttl(&request)?;
        let mut conn = self.conn.clone();
        let expire = |conn: &mut ConnectionManager| {
            let mut conn = conn.clone();
            let key = key.to_owned();
            async move {
                if let Some(ttl) = ttl {
                    redis::cmd("EXPIRE")
                        .arg(&key)
                        .arg(ttl.as_secs())
                        .query_async::<i64>(&mut conn)
                        .await
                        .map_err(map_error)?;
                }
                Ok::<_, ComponentError>(())
            }
        };
        match request.operation.as_str() {
            ops::CREATE => {
                redis::cmd("SET")
                    .arg(key)
                    .arg(&request.data)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(map_error)?;
                expire(&mut conn).await?;
                Ok(BindingResponse::none())
            }
            ops::GET => {
                let take = request.metadata.get("delete").is_some_and(|d| d == "true");
                let command = if take { "GETDEL" } else { "GET" };
                let value: Option<Vec<u8>> = redis::cmd(command)
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .map_err(map_error)?;
                Ok(BindingResponse {
                    data: Some(value.unwrap_or_default()),
                    metadata: Default::default(),
                })
            }
            ops::DELETE => {
                redis::cmd("DEL")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
                    .map_err(map_error)?;
                Ok(BindingResponse::none())
            }
            INCREMENT => {
                redis::cmd("INCR")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
                    .map_err(map_error)?;
                expire(&mut conn).await?;
                Ok(BindingResponse::none())
            }
            other => Err(ComponentError::InvalidArgument(format!(
                "invalid operation type: {other}"
            ))),
        }
    }
}
