//! The one place errors become gRPC statuses.

use tonic::{Code, Status};

use crate::actors::{CallError, RouteError};
use crate::components::ComponentError;

impl From<RouteError> for Status {
    fn from(e: RouteError) -> Status {
        match e {
            RouteError::NoneConfigured { .. } => Status::failed_precondition(e.to_string()),
            RouteError::EmptyName { .. } | RouteError::Unknown { .. } => Status::invalid_argument(e.to_string()),
        }
    }
}

impl From<CallError> for Status {
    fn from(e: CallError) -> Status {
        let code = match &e {
            CallError::Unavailable { .. } => Code::Unavailable,
            CallError::Busy { .. } => Code::ResourceExhausted,
            CallError::Panicked { .. } => Code::Internal,
            CallError::Component { error, .. } => component_code(error),
        };
        Status::new(code, e.to_string())
    }
}

fn component_code(e: &ComponentError) -> Code {
    match e {
        ComponentError::InvalidArgument(_) => Code::InvalidArgument,
        ComponentError::NotFound(_) => Code::NotFound,
        ComponentError::Conflict(_) => Code::Aborted,
        ComponentError::Unavailable(_) | ComponentError::Fatal(_) => Code::Unavailable,
        ComponentError::Unsupported(_) => Code::Unimplemented,
        ComponentError::Internal(_) => Code::Internal,
    }
}

/// The canonical name of a code, as gRPC's own metrics spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
