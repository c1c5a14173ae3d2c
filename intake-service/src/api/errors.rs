//! Every failure a client can see, mapped to a gRPC status in one place. Each
//! status carries a `google.rpc.ErrorInfo` with a stable reason (domain `jct`);
//! schema failures add a `google.rpc.BadRequest` naming every bad field.

use jct::reasons::{self, DOMAIN};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::error;

use crate::policy::Rejection;
use crate::store::{StoreError, TransitionError};

/// A status with an ErrorInfo of `reason`.
pub fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    let details = ErrorDetails::with_error_info(reason, DOMAIN, std::collections::HashMap::new());
    Status::with_error_details(code, message, details)
}

/// VALIDATION_FAILED with one BadRequest violation per field.
pub fn validation_failed<'a>(violations: impl IntoIterator<Item = (&'a str, &'a str)>) -> Status {
    let mut details = ErrorDetails::new();
    let mut fields = Vec::new();
    for (field, description) in violations {
        details.add_bad_request_violation(field, description);
        fields.push(format!("{field} {description}"));
    }
    details.set_error_info(
        reasons::VALIDATION_FAILED,
        DOMAIN,
        std::collections::HashMap::new(),
    );
    Status::with_error_details(
        Code::InvalidArgument,
        format!("the request has invalid fields: {}", fields.join("; ")),
        details,
    )
}

pub fn from_rejection(rejection: Rejection) -> Status {
    match rejection {
        Rejection::UnsupportedVersion(version) => status(
            Code::InvalidArgument,
            reasons::UNSUPPORTED_VERSION,
            format!("version {version:?} is not supported; send \"1.0\" or leave it empty"),
        ),
        Rejection::Validation(violations) => validation_failed(
            violations
                .iter()
                .map(|v| (v.field.as_str(), v.description.as_str())),
        ),
        Rejection::Policy(violation) => {
            let code = if violation.reason.is_permission_denial() {
                Code::PermissionDenied
            } else {
                Code::InvalidArgument
            };
            status(code, violation.reason.code(), violation.message)
        }
    }
}

pub fn from_store(error: StoreError) -> Status {
    match error {
        StoreError::IdempotencyConflict { existing } => status(
            Code::AlreadyExists,
            reasons::IDEMPOTENCY_KEY_CONFLICT,
            format!(
                "the idempotency key was already used for a different request (task {existing}); \
                 use a new key or resend the original request"
            ),
        ),
        StoreError::Database(db_error) => {
            error!(error = %db_error, "database error");
            status(
                Code::Unavailable,
                reasons::DATABASE_UNAVAILABLE,
                "the task database is unavailable; retry later",
            )
        }
        StoreError::WriterStopped => shutting_down(),
        StoreError::Corrupt(detail) => {
            error!(%detail, "corrupt stored data");
            status(
                Code::Internal,
                reasons::INTERNAL_ERROR,
                "stored data could not be read",
            )
        }
    }
}

pub fn from_transition(error: TransitionError, task_id: &str) -> Status {
    match error {
        TransitionError::NotFound => not_found(task_id),
        TransitionError::Invalid { from, to } => status(
            Code::FailedPrecondition,
            reasons::INVALID_TRANSITION,
            format!("task {task_id} is {from} and cannot become {to}"),
        ),
        TransitionError::LeaseLost { holder } => status(
            Code::FailedPrecondition,
            reasons::LEASE_LOST,
            match holder {
                Some(worker) => format!(
                    "task {task_id} is not held under this lease (worker {worker} holds or held it); \
                     a worker's report must present the task's current lease"
                ),
                None => format!("task {task_id} is not held under this lease"),
            },
        ),
        TransitionError::Store(store) => from_store(store),
    }
}

pub fn shutting_down() -> Status {
    status(
        Code::Unavailable,
        reasons::SHUTTING_DOWN,
        "the intake is shutting down; retry against another instance",
    )
}

pub fn not_found(task_id: &str) -> Status {
    status(
        Code::NotFound,
        reasons::TASK_NOT_FOUND,
        format!("task {task_id} does not exist"),
    )
}
