//! The one place errors become gRPC statuses.

use tonic::{Code, Status};

use crate::api::blocks::BlockError;

impl From<BlockError> for Status {
    fn from(e: BlockError) -> Status {
        let code = match &e {
            BlockError::InvalidArgument(_) | BlockError::UnknownComponent(_) => Code::InvalidArgument,
            BlockError::NotFound(_) => Code::NotFound,
            BlockError::FailedPrecondition(_) => Code::FailedPrecondition,
            BlockError::Conflict(_) => Code::Aborted,
            BlockError::AlreadyExists(_) => Code::AlreadyExists,
            BlockError::Unavailable(_) => Code::Unavailable,
            BlockError::ResourceExhausted(_) => Code::ResourceExhausted,
            BlockError::Unimplemented(_) => Code::Unimplemented,
            BlockError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            BlockError::PermissionDenied(_) => Code::PermissionDenied,
            BlockError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_error_keeps_its_message_under_its_code() {
        let cases = [
            (BlockError::InvalidArgument("a".into()), Code::InvalidArgument),
            (BlockError::UnknownComponent("a2".into()), Code::InvalidArgument),
            (BlockError::NotFound("b".into()), Code::NotFound),
            (BlockError::FailedPrecondition("c".into()), Code::FailedPrecondition),
            (BlockError::Conflict("d".into()), Code::Aborted),
            (BlockError::AlreadyExists("e".into()), Code::AlreadyExists),
            (BlockError::Unavailable("f".into()), Code::Unavailable),
            (BlockError::ResourceExhausted("g".into()), Code::ResourceExhausted),
            (BlockError::Unimplemented("h".into()), Code::Unimplemented),
            (BlockError::Internal("i".into()), Code::Internal),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), message);
        }
    }
}
