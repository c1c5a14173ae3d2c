//! Every failure a client can see, mapped to a gRPC status in one place. Each
//! status carries a `google.rpc.ErrorInfo` with a stable reason (domain `jct`);
//! schema failures add a `google.rpc.BadRequest` naming every bad field.
//!
//! Messages and field descriptions are capped: a status travels in HTTP/2
//! headers (`grpc-message`, `grpc-status-details-bin`), and a header list past the
//! peer's limit breaks the call instead of reporting the error.

use jct::reasons::{self, DOMAIN};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::{error, warn};

use crate::auth::AuthError;
use crate::policy::Rejection;
use crate::store::{StoreError, TransitionError};

/// Longest message a status carries, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Longest field name of one BadRequest violation, in bytes.
const MAX_FIELD_BYTES: usize = 96;
/// Longest description of one BadRequest violation, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 160;
/// Most violations listed; a request with more is summarized. With the caps
/// above the encoded details stay under 7 KiB (about 9 KiB as base64), so the
/// whole status fits well inside HTTP/2's customary 16 KiB header list.
const MAX_VIOLATIONS: usize = 20;

/// A classified failure: what a status, or a worker's report acknowledgement,
/// says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: Code,
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: cap(message.into(), MAX_MESSAGE_BYTES),
        }
    }

    pub fn into_status(self) -> Status {
        status(self.code, self.reason, self.message)
    }
}

/// A status with an ErrorInfo of `reason`.
pub fn status(code: Code, reason: &str, message: impl Into<String>) -> Status {
    let details = ErrorDetails::with_error_info(reason, DOMAIN, std::collections::HashMap::new());
    Status::with_error_details(code, cap(message.into(), MAX_MESSAGE_BYTES), details)
}

/// VALIDATION_FAILED with one BadRequest violation per field.
pub fn validation_failed<'a>(violations: impl IntoIterator<Item = (&'a str, &'a str)>) -> Status {
    let violations: Vec<(String, String)> = violations
        .into_iter()
        .map(|(field, description)| {
            (
                cap(field.to_string(), MAX_FIELD_BYTES),
                cap(description.to_string(), MAX_DESCRIPTION_BYTES),
            )
        })
        .collect();
    let mut details = ErrorDetails::new();
    for (field, description) in violations.iter().take(MAX_VIOLATIONS) {
        details.add_bad_request_violation(field.as_str(), description.as_str());
    }
    if violations.len() > MAX_VIOLATIONS {
        details.add_bad_request_violation(
            "",
            format!(
                "and {} more invalid fields",
                violations.len() - MAX_VIOLATIONS
            ),
        );
    }
    details.set_error_info(
        reasons::VALIDATION_FAILED,
        DOMAIN,
        std::collections::HashMap::new(),
    );
    Status::with_error_details(
        Code::InvalidArgument,
        validation_message(violations.iter().map(|(f, d)| (f.as_str(), d.as_str()))),
        details,
    )
}

/// The one-line summary of a VALIDATION_FAILED, capped.
pub fn validation_message<'a>(violations: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let fields: Vec<String> = violations
        .into_iter()
        .map(|(field, description)| format!("{field} {description}"))
        .collect();
    cap(
        format!("the request has invalid fields: {}", fields.join("; ")),
        MAX_MESSAGE_BYTES,
    )
}

/// At most `limit` bytes (cut at a character boundary), marked with `…` when cut.
fn cap(text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

pub fn from_rejection(rejection: Rejection) -> Status {
    match rejection {
        Rejection::UnsupportedVersion(version) => status(
            Code::InvalidArgument,
            reasons::UNSUPPORTED_VERSION,
            format!(
                "version \"{}\" is not supported; send \"1.0\" or leave it empty",
                jct::text::escape(&version.chars().take(64).collect::<String>())
            ),
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
    store_failure(error).into_status()
}

pub fn store_failure(error: StoreError) -> Failure {
    match &error {
        StoreError::IdempotencyConflict { existing } => Failure::new(
            Code::AlreadyExists,
            reasons::IDEMPOTENCY_KEY_CONFLICT,
            format!(
                "the idempotency key was already used for a different request (task {existing}); \
                 use a new key or resend the original request"
            ),
        ),
        StoreError::Unavailable(db_error) => {
            warn!(error = %db_error, "database unavailable");
            Failure::new(
                Code::Unavailable,
                reasons::DATABASE_UNAVAILABLE,
                "the task database is unavailable; retry later",
            )
        }
        StoreError::Rejected(db_error) => {
            // deterministic: retrying the same request cannot succeed
            warn!(error = %db_error, "the database refused a request");
            Failure::new(
                Code::InvalidArgument,
                reasons::REJECTED_BY_DATABASE,
                "the task database refused a value in this request; \
                 resending it unchanged fails the same way",
            )
        }
        StoreError::Internal(db_error) => {
            error!(error = %db_error, "database error");
            Failure::new(
                Code::Internal,
                reasons::INTERNAL_ERROR,
                "the task database failed unexpectedly",
            )
        }
        StoreError::UnsupportedUrl { .. }
        | StoreError::LockFile { .. }
        | StoreError::Locked { .. } => {
            // configuration errors stop the intake at start; never a request's
            error!(%error, "store configuration error");
            Failure::new(
                Code::Internal,
                reasons::INTERNAL_ERROR,
                "the intake is misconfigured",
            )
        }
        StoreError::WriterStopped => shutting_down_failure(),
        StoreError::Corrupt(detail) => {
            error!(%detail, "corrupt stored data");
            Failure::new(
                Code::Internal,
                reasons::INTERNAL_ERROR,
                "stored data could not be read",
            )
        }
    }
}

pub fn from_transition(error: TransitionError, task_id: &str) -> Status {
    transition_failure(error, task_id).into_status()
}

pub fn transition_failure(error: TransitionError, task_id: &str) -> Failure {
    match error {
        TransitionError::NotFound => not_found_failure(task_id),
        TransitionError::Invalid { from, to } => Failure::new(
            Code::FailedPrecondition,
            reasons::INVALID_TRANSITION,
            format!("task {task_id} is {from} and cannot become {to}"),
        ),
        TransitionError::LeaseLost { holder } => Failure::new(
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
        TransitionError::Store(store) => store_failure(store),
    }
}

pub fn shutting_down() -> Status {
    shutting_down_failure().into_status()
}

fn shutting_down_failure() -> Failure {
    Failure::new(
        Code::Unavailable,
        reasons::SHUTTING_DOWN,
        "the intake is shutting down; retry against another instance",
    )
}

pub fn not_found(task_id: &str) -> Status {
    not_found_failure(task_id).into_status()
}

fn not_found_failure(task_id: &str) -> Failure {
    Failure::new(
        Code::NotFound,
        reasons::TASK_NOT_FOUND,
        format!("task {task_id} does not exist"),
    )
}

/// The ErrorInfo reason a status carries (empty if none).
pub fn reason_of(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// A client asked for a status that only the worker holding the lease reports.
pub fn worker_only_transition(to: &str) -> Status {
    status(
        Code::PermissionDenied,
        reasons::WORKER_ONLY_TRANSITION,
        format!(
            "clients may only set status \"cancelled\"; \"{}\" is not for clients (running, \
             completed and failed are reported by the worker holding the lease, over the \
             dispatch stream)",
            jct::text::escape(&to.chars().take(64).collect::<String>())
        ),
    )
}

/// A call refused by the auth layer. The message never carries the token.
pub fn from_auth(error: &AuthError) -> Status {
    match error {
        AuthError::MissingToken | AuthError::MalformedToken | AuthError::UnknownToken => status(
            Code::Unauthenticated,
            reasons::UNAUTHENTICATED,
            error.to_string(),
        ),
        AuthError::RoleNotAllowed { .. } => status(
            Code::PermissionDenied,
            reasons::ROLE_NOT_ALLOWED,
            error.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn giant_messages_and_violations_are_capped() {
        let huge = "x".repeat(1 << 20);
        let status = status(Code::InvalidArgument, reasons::VALIDATION_FAILED, huge);
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);

        let huge = "\u{10FFFF}".repeat(1 << 18); // four bytes a character
        let many: Vec<(String, String)> = (0..1000)
            .map(|i| (format!("field{i}{huge}"), huge.clone()))
            .collect();
        let status = validation_failed(many.iter().map(|(f, d)| (f.as_str(), d.as_str())));
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        let details = status.get_error_details();
        let violations = details
            .bad_request()
            .map(|b| b.field_violations.clone())
            .unwrap_or_default();
        assert_eq!(violations.len(), MAX_VIOLATIONS + 1);
        assert!(violations.iter().all(|v| {
            v.description.len() <= MAX_DESCRIPTION_BYTES && v.field.len() <= MAX_FIELD_BYTES
        }));
        assert!(
            status.details().len() < 7 * 1024,
            "{}",
            status.details().len()
        );
    }

    #[test]
    fn capping_respects_character_boundaries() {
        assert_eq!(cap("héllo wörld".to_string(), 8), "héll…");
        assert_eq!(cap("hé".to_string(), 3), "hé");
        assert_eq!(cap("éééé".to_string(), 6), "é…");
    }
}
