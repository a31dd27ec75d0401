//! `wasm`: an output binding that runs a loaded WASM function (Dapr has a
//! `bindings.wasm`; here the module is a function of the `wasm` block,
//! loaded, limited and supervised there), so a function is reachable from
//! Layotto's and Dapr's InvokeBinding as well as from the ingress.
//!
//! Operation `execute`: the request data is the function's request body,
//! the request metadata its headers (the `id` header is the function's);
//! the answer is the function's response body, its response headers the
//! answer's metadata.
//!
//! Metadata: [`WasmBindingKeys`].

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Binding, BindingCommon, BindingRequest, BindingResponse};
use crate::components::meta::{self, Section};
use crate::components::wasm::FunctionRequest;
use crate::components::{BuildContext, BuildError, Component, ComponentError, ComponentType, TypeEntry};

pub const TYPE: TypeEntry<dyn Binding> = TypeEntry::of::<WasmBindingType>();

/// The binding's one operation, as Dapr's wasm binding names it.
pub const EXECUTE: &str = "execute";

pub struct WasmBindingType;

impl ComponentType<dyn Binding> for WasmBindingType {
    const NAME: &'static str = "wasm";
    type Metadata = (WasmBindingKeys, BindingCommon);

    fn build(
        _ctx: BuildContext,
        (keys, _): Self::Metadata,
    ) -> BoxFuture<'static, Result<Arc<dyn Binding>, BuildError>> {
        async move {
            Ok(Arc::new(WasmBinding {
                function: keys.function,
            }) as Arc<dyn Binding>)
        }
        .boxed()
    }
}

/// What `wasm` reads from its metadata.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmBindingKeys {
    /// The id of the function to run (the one its guest announces through
    /// `proxy_get_id`). Required.
    #[serde(deserialize_with = "meta::non_empty")]
    pub function: String,
}

impl Section for WasmBindingKeys {}

struct WasmBinding {
    function: String,
}

#[async_trait::async_trait]
impl Component for WasmBinding {
    /// The function is checked at each call: it may be installed after the
    /// binding starts.
    async fn health_check(&self) -> Result<(), ComponentError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl Binding for WasmBinding {
    fn operations(&self) -> Vec<&str> {
        vec![EXECUTE]
    }

    async fn invoke(&self, request: BindingRequest) -> Result<BindingResponse, ComponentError> {
        let Some(runner) = request.functions.runner() else {
            return Err(ComponentError::Unavailable(
                "no WASM functions can be reached from here".into(),
            ));
        };
        let mut headers: Vec<(String, String)> = request
            .metadata
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .filter(|(k, _)| k != "id")
            .collect();
        headers.push(("id".into(), self.function.clone()));
        let answer = runner
            .run(
                &self.function,
                FunctionRequest {
                    headers,
                    body: request.data,
                },
            )
            .await
            .map_err(ComponentError::Internal)?;
        Ok(BindingResponse {
            data: Some(answer.body),
            metadata: answer.headers.into_iter().collect(),
        })
    }
}
