//! The stable reasons carried in `google.rpc.ErrorInfo` (domain [`DOMAIN`]) and in
//! `ReportAck.reason`. Clients match on these strings; they never change meaning.

/// The `ErrorInfo.domain` of every JCT error.
pub const DOMAIN: &str = "jct";

/// The canonical upper-case name of a gRPC code (`NOT_FOUND`), as the CLI prints
/// it and the intake's RPC metrics label it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
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

pub const VALIDATION_FAILED: &str = "VALIDATION_FAILED";
pub const UNSUPPORTED_VERSION: &str = "UNSUPPORTED_VERSION";
pub const INVALID_OPERATION: &str = "INVALID_OPERATION";
pub const REPO_NOT_ALLOWED: &str = "REPO_NOT_ALLOWED";
pub const TIME_BUDGET_TOO_LOW: &str = "TIME_BUDGET_TOO_LOW";
pub const TIME_BUDGET_TOO_HIGH: &str = "TIME_BUDGET_TOO_HIGH";
pub const NETWORK_ACCESS_DENIED: &str = "NETWORK_ACCESS_DENIED";
pub const SECRETS_ACCESS_DENIED: &str = "SECRETS_ACCESS_DENIED";
pub const TASK_NOT_FOUND: &str = "TASK_NOT_FOUND";
pub const INVALID_TRANSITION: &str = "INVALID_TRANSITION";
pub const IDEMPOTENCY_KEY_CONFLICT: &str = "IDEMPOTENCY_KEY_CONFLICT";
pub const INVALID_PAGE_TOKEN: &str = "INVALID_PAGE_TOKEN";
pub const LEASE_LOST: &str = "LEASE_LOST";
pub const DATABASE_UNAVAILABLE: &str = "DATABASE_UNAVAILABLE";
/// The database refused a value the request carries; resending it unchanged fails
/// the same way.
pub const REJECTED_BY_DATABASE: &str = "REJECTED_BY_DATABASE";
pub const SHUTTING_DOWN: &str = "SHUTTING_DOWN";
pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";
/// No token, or one the intake does not know.
pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
/// The caller's roles do not admit the method.
pub const ROLE_NOT_ALLOWED: &str = "ROLE_NOT_ALLOWED";
/// A client asked for a status only the worker holding the lease may report.
pub const WORKER_ONLY_TRANSITION: &str = "WORKER_ONLY_TRANSITION";
/// Another principal's worker is attached under this worker id.
pub const WORKER_ID_TAKEN: &str = "WORKER_ID_TAKEN";

/// Error codes of `Task.error` set by JCT itself (executors add their own).
pub mod task_error {
    pub const WORKER_LOST: &str = "WORKER_LOST";
    pub const TIME_BUDGET_EXCEEDED: &str = "TIME_BUDGET_EXCEEDED";
    pub const SANDBOX_UNAVAILABLE: &str = "SANDBOX_UNAVAILABLE";
    pub const EXIT_STATUS: &str = "EXIT_STATUS";
    pub const EXECUTOR_ERROR: &str = "EXECUTOR_ERROR";
    pub const WORKSPACE_FAILED: &str = "WORKSPACE_FAILED";
    pub const CANCELLED: &str = "CANCELLED";
    /// The intake refused the worker's final report for what it carried (an
    /// invalid field, a value the database refuses); the outcome is in the trace.
    pub const REPORT_REFUSED: &str = "REPORT_REFUSED";
}
