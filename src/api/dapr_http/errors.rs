//! The one place a [`BlockError`] becomes a Dapr HTTP answer: a status code
//! and Dapr's error JSON, `{"errorCode": "ERR_...", "message": "..."}`
//! (with `details` where daprd sends a rich error), as daprd answers them.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::blocks::BlockError;

/// A Dapr error answer.
pub struct DaprError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl DaprError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> DaprError {
        DaprError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// A body that does not decode: 400 `ERR_MALFORMED_REQUEST`.
    pub fn malformed(message: impl Into<String>) -> DaprError {
        DaprError::new(StatusCode::BAD_REQUEST, "ERR_MALFORMED_REQUEST", message)
    }

    fn with_reason(mut self, reason: &str, app_id: &str) -> DaprError {
        self.details = Some(json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "dapr.io",
            "metadata": { "appID": app_id },
        }]));
        self
    }
}

impl IntoResponse for DaprError {
    fn into_response(self) -> Response {
        let mut body = json!({ "errorCode": self.code, "message": self.message });
        if let Some(details) = self.details {
            body["details"] = details;
        }
        (self.status, Json(body)).into_response()
    }
}

/// How daprd answers a failed output binding call: 500
/// `ERR_INVOKE_OUTPUT_BINDING` whatever the cause (an unknown binding, an
/// operation it does not do, the binding's own failure), the message
/// naming the binding; 503 while the component is down.
pub fn binding_error(name: &str, e: BlockError) -> DaprError {
    let status = match &e {
        BlockError::Unavailable(_) | BlockError::ResourceExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = match e {
        BlockError::Internal(message) if message.starts_with("error invoking output binding") => message,
        other => format!("error invoking output binding {name}: {other}"),
    };
    DaprError::new(status, "ERR_INVOKE_OUTPUT_BINDING", message)
}

/// How daprd answers a failed invocation: 404 without a target, 403 when
/// the target refused the caller, else 500, all `ERR_DIRECT_INVOKE`.
pub fn invoke_error(e: BlockError) -> DaprError {
    let status = match &e {
        BlockError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    DaprError::new(status, "ERR_DIRECT_INVOKE", e.to_string())
}

/// A state operation, for the error code daprd answers its failures with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateOp {
    Get,
    Save,
    Delete,
    BulkGet,
    Transaction,
    Query,
}

impl StateOp {
    fn code(self) -> &'static str {
        match self {
            StateOp::Get => "ERR_STATE_GET",
            StateOp::Save => "ERR_STATE_SAVE",
            StateOp::Delete => "ERR_STATE_DELETE",
            StateOp::BulkGet => "ERR_STATE_BULK_GET",
            StateOp::Transaction => "ERR_STATE_TRANSACTION",
            StateOp::Query => "ERR_STATE_QUERY",
        }
    }
}

/// How daprd answers a failed state call on store `store`.
pub fn state(op: StateOp, store: &str, app_id: &str, error: BlockError) -> DaprError {
    let code = op.code();
    match error {
        BlockError::FailedPrecondition(message) => DaprError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_STATE_STORE_NOT_CONFIGURED",
            message,
        )
        .with_reason("DAPR_STATE_NOT_CONFIGURED", app_id),
        BlockError::UnknownComponent(_) => DaprError::new(
            StatusCode::BAD_REQUEST,
            "ERR_STATE_STORE_NOT_FOUND",
            format!("state store {} is not found", crate::api::blocks::quote(store)),
        )
        .with_reason("DAPR_STATE_NOT_FOUND", app_id),
        BlockError::InvalidArgument(message) if message.contains("'||'") => {
            DaprError::malformed(message).with_reason("DAPR_STATE_ILLEGAL_KEY", app_id)
        }
        // A transaction's failures are all one error in daprd, etag
        // mismatches included.
        BlockError::Conflict(message) if op == StateOp::Transaction => DaprError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code,
            format!("error while executing state transaction: {message}"),
        ),
        BlockError::Conflict(message) => DaprError::new(StatusCode::CONFLICT, code, message),
        // daprd answers a query it cannot run with a 500.
        BlockError::InvalidArgument(message) if op == StateOp::Query => DaprError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code,
            format!("state store {store} query failed: {message}"),
        )
        .with_reason("DAPR_STATE_QUERY_FAILED", app_id),
        BlockError::InvalidArgument(message) => DaprError::new(StatusCode::BAD_REQUEST, code, message),
        BlockError::ResourceExhausted(message) => DaprError::new(StatusCode::TOO_MANY_REQUESTS, code, message),
        BlockError::Unimplemented(message) => DaprError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ERR_STATE_STORE_NOT_SUPPORTED",
            message,
        ),
        other => {
            let message = match op {
                StateOp::Save => format!("failed saving state in state store {store}: {other}"),
                StateOp::Delete => format!("failed deleting state: {other}"),
                StateOp::Transaction => format!("error while executing state transaction: {other}"),
                StateOp::Get | StateOp::BulkGet => format!("fail to get state from state store {store}: {other}"),
                StateOp::Query => format!("state store {store} query failed: {other}"),
            };
            DaprError::new(StatusCode::INTERNAL_SERVER_ERROR, code, message)
        }
    }
}
