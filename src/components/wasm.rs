//! The `wasm` building block: functions compiled to WebAssembly that run
//! inside the sidecar, as Layotto's FaaS mode runs them.
//!
//! A function is a component ([`Function`]): it compiles its module at
//! build ([`engine`]: one cranelift engine per memory limit, with wasmer's
//! metering; compiled modules cached in memory by their hash and on disk
//! as wasmer's serialized artifacts), keeps a pool of instances, and runs
//! one request on one instance at a time through Layotto's proxy-wasm ABI
//! ([`abi`]). A guest that traps, runs past its execution budget or grows
//! past its memory limit loses that instance (a fresh one replaces it); the
//! function's other instances and every other function go on serving.
//!
//! What a guest may ask of the sidecar (read and save state, invoke a
//! function or an app, publish an event) goes through a [`FunctionHost`]
//! handed in with each request: the API layer implements it with the same
//! block services as the gRPC APIs, so nothing here knows a protocol.

pub mod abi;
pub mod engine;
pub mod wasmer;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{Component, ComponentError};

/// One request to a function: the ingress's HTTP request, or a binding's
/// or another function's call.
#[derive(Clone, Debug, Default)]
pub struct FunctionRequest {
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body; Layotto hands the query string here when the request had
    /// no body.
    pub body: Vec<u8>,
}

/// What a function answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionResponse {
    /// Headers the guest set on the response.
    pub headers: Vec<(String, String)>,
    /// What the guest wrote to the response body buffer.
    pub body: Vec<u8>,
}

/// Why a guest did not answer a request.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum GuestError {
    /// The guest trapped (`unreachable`, an out-of-bounds access, an
    /// abort, running out of its memory limit).
    #[error("the function trapped: {0}")]
    Trap(String),
    /// The guest ran past its execution budget.
    #[error("the function ran past its execution budget of {0:?} and was stopped")]
    Budget(Duration),
    /// The guest does not follow the ABI (a missing export, a wrong
    /// signature, a pointer outside its memory).
    #[error("the function broke the ABI: {0}")]
    Abi(String),
    /// The guest stopped the request (an action other than Continue).
    #[error("the function stopped the request ({0})")]
    Stopped(&'static str),
    /// Every instance stayed busy past the wait.
    #[error("all {0} instances of the function stayed busy for {1:?}")]
    Busy(usize, Duration),
}

/// A request the guest did not answer; `replaced` when its instance was
/// discarded and a fresh one built in its place (a restart of that
/// instance).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub error: GuestError,
    pub replaced: bool,
}

/// What a guest may ask of the sidecar. Errors are messages: the guest
/// sees a status code, the log the message.
#[async_trait::async_trait]
pub trait FunctionHost: Send + Sync + 'static {
    /// The value of `key` in state store `store`; `None` when absent.
    async fn get_state(&self, store: String, key: String) -> Result<Option<Vec<u8>>, String>;
    /// Saves `value` under `key` in state store `store`.
    async fn save_state(&self, store: String, key: String, value: Vec<u8>) -> Result<(), String>;
    /// Calls `method` of `id` with `data`: a loaded function when `id` is a
    /// function id, otherwise an app through service invocation.
    async fn invoke(&self, id: String, method: String, data: Vec<u8>) -> Result<Vec<u8>, String>;
    /// Publishes `data` to `topic` of pub/sub component `pubsub`.
    async fn publish(&self, pubsub: String, topic: String, data: Vec<u8>) -> Result<(), String>;
}

/// The id a function's guest announced through `proxy_get_id`, kept in the
/// component's slot (see [`super::Retained`]) so that the API side finds
/// the function by it; empty until the first build.
#[derive(Default)]
pub struct Announced(RwLock<String>);

impl Announced {
    pub fn get(&self) -> String {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, id: &str) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = id.to_owned();
    }
}

/// Runs a loaded function by its id: how a component that is not a
/// function (the `wasm` output binding) reaches one. The API layer
/// implements it with the WASM block.
#[async_trait::async_trait]
pub trait FunctionRunner: Send + Sync + 'static {
    async fn run(&self, id: &str, request: FunctionRequest) -> Result<FunctionResponse, String>;
}

/// The loaded functions as a request carries them to a component; empty
/// when none can be reached.
#[derive(Clone, Default)]
pub struct FunctionAccess(Option<Arc<dyn FunctionRunner>>);

impl FunctionAccess {
    pub fn new(runner: Arc<dyn FunctionRunner>) -> Self {
        FunctionAccess(Some(runner))
    }

    pub fn runner(&self) -> Option<&Arc<dyn FunctionRunner>> {
        self.0.as_ref()
    }
}

impl std::fmt::Debug for FunctionAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "FunctionAccess(..)"
        } else {
            "FunctionAccess(none)"
        })
    }
}

/// Two requests are alike whatever access they carry.
impl PartialEq for FunctionAccess {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A loaded function: a module, its instances, its limits.
#[async_trait::async_trait]
pub trait Function: Component {
    /// Runs one request on a free instance. The outer error is the
    /// component's (it cannot serve at all); the inner one the guest's.
    async fn run(
        &self,
        request: FunctionRequest,
        host: Arc<dyn FunctionHost>,
    ) -> Result<Result<FunctionResponse, Failure>, ComponentError>;

    /// Changes the number of instances (Layotto's `/wasm/update`).
    async fn resize(&self, instances: usize) -> Result<(), ComponentError>;
}
