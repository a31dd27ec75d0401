//! The `bindings` building block: output bindings, which do one operation
//! on an outside system per call (an HTTP request, a row query, a message
//! published), with Dapr's operation names and response metadata; and
//! input bindings, which read events from outside (a schedule, a queue, a
//! topic, a database channel) for the sidecar to deliver to the app. A
//! type may be both (`rabbitmq`, `mqtt`, `postgresql`).

pub mod cron;
pub mod http;
pub mod localstorage;
pub mod mqtt;
pub mod pluggable;
pub mod rabbitmq;
pub mod redis;
pub mod sql;
pub mod wasm;

use std::collections::BTreeMap;

use super::{Component, ComponentError};

/// Dapr's operation names.
pub mod ops {
    pub const CREATE: &str = "create";
    pub const GET: &str = "get";
    pub const DELETE: &str = "delete";
    pub const LIST: &str = "list";
}

/// Dapr's keys every binding takes: where input events are delivered and
/// which directions the component serves. Read by every type (so Dapr's
/// resource files validate), used by input delivery.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct BindingCommon {
    /// `input`, `output` or both, comma-separated. Default: what the type
    /// does.
    #[serde(default)]
    pub direction: Option<String>,
    /// The app's path input events are delivered to. Default: the
    /// component's name.
    #[serde(default)]
    pub route: Option<String>,
}

impl crate::components::meta::Section for BindingCommon {}

/// One call of an output binding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BindingRequest {
    pub operation: String,
    pub data: Vec<u8>,
    pub metadata: BTreeMap<String, String>,
    /// The loaded WASM functions (the `wasm` binding runs one); set by the
    /// block service.
    pub functions: super::wasm::FunctionAccess,
}

/// What an output binding answers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BindingResponse {
    /// None: the operation answers nothing (Dapr's HTTP API says 204).
    pub data: Option<Vec<u8>>,
    pub metadata: BTreeMap<String, String>,
}

impl BindingResponse {
    /// An answer with no data.
    pub fn none() -> BindingResponse {
        BindingResponse::default()
    }

    pub fn data(data: Vec<u8>) -> BindingResponse {
        BindingResponse {
            data: Some(data),
            metadata: BTreeMap::new(),
        }
    }
}

pub use super::pubsub::{Acker, Deliveries, Delivery, Message};

/// A binding: output, input, or both.
#[async_trait::async_trait]
pub trait Binding: Component {
    /// The operations it does as an output binding, in Dapr's names (none
    /// for an input-only type); a request for another is refused before it
    /// gets here.
    fn operations(&self) -> Vec<&str>;

    async fn invoke(&self, request: BindingRequest) -> Result<BindingResponse, ComponentError> {
        Err(ComponentError::InvalidArgument(format!(
            "this binding has no operation {}",
            request.operation
        )))
    }

    /// Whether it reads input events.
    fn is_input(&self) -> bool {
        false
    }

    /// Starts reading input events: each is to be acknowledged once the app
    /// accepted it (or given back). The stream ends when the component
    /// closes; the reader then reads again from its next incarnation.
    /// Unsupported for an output-only type.
    async fn read(&self) -> Result<Deliveries, ComponentError> {
        Err(ComponentError::Unsupported("not an input binding".into()))
    }
}

/// An acknowledgement with nothing to settle (a timer's tick, a NOTIFY).
pub struct NoAck;

#[async_trait::async_trait]
impl Acker for NoAck {
    async fn ack(self: Box<Self>) -> Result<(), ComponentError> {
        Ok(())
    }
}

/// A request metadata value, or an error naming the key.
pub fn required<'a>(request: &'a BindingRequest, key: &str) -> Result<&'a str, ComponentError> {
    request
        .metadata
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ComponentError::InvalidArgument(format!("required metadata not set: {key}")))
}

/// Dapr's TTL of a request: `ttlInSeconds` (or `ttl`), whole seconds or a
/// duration (`10s`); none when absent.
pub fn ttl(request: &BindingRequest) -> Result<Option<std::time::Duration>, ComponentError> {
    let Some((key, value)) = request
        .metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("ttlInSeconds") || k.eq_ignore_ascii_case("ttl"))
    else {
        return Ok(None);
    };
    let seconds = match value.trim().parse::<i64>() {
        Ok(s) => s,
        Err(_) => humantime::parse_duration(value.trim())
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .map_err(|_| {
                ComponentError::InvalidArgument(format!("{key} value must be a valid integer: actual is '{value}'"))
            })?,
    };
    if seconds <= 0 {
        return Err(ComponentError::InvalidArgument(format!(
            "{key} value must be higher than zero: actual is '{value}'"
        )));
    }
    Ok(Some(std::time::Duration::from_secs(seconds.unsigned_abs())))
}
