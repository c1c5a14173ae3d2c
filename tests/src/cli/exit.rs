//! Every way `jct` ends, as the exit code scripts rely on (fixed by the contract,
//! "The operator surface") and the advice a person gets. This is the one place
//! that maps a gRPC status and its stable reason to an exit code.

use jct::reasons;
use tonic::Code;

/// The command did what was asked (for `watch`: the task completed).
pub const SUCCESS: u8 = 0;
/// Something unexpected: the intake answered INTERNAL/UNKNOWN, or local I/O failed.
pub const FAILURE: u8 = 1;
/// The command line (or a file it names) is not usable.
pub const USAGE: u8 = 2;
/// The intake rejected the request: invalid, against policy, or in conflict.
pub const REJECTED: u8 = 3;
/// No such task (or one the caller may not see).
pub const NOT_FOUND: u8 = 4;
/// No or an unknown token, or a role that may not call the method.
pub const DENIED: u8 = 5;
/// The intake cannot be reached, or is unavailable for now.
pub const UNAVAILABLE: u8 = 6;
/// The watched task failed.
pub const TASK_FAILED: u8 = 20;
/// The watched task was cancelled.
pub const TASK_CANCELLED: u8 = 21;

/// The exit code for a gRPC status `code` carrying the stable `reason`.
pub fn for_status(code: Code, reason: Option<&str>) -> u8 {
    match code {
        Code::Ok => SUCCESS,
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::Aborted => REJECTED,
        Code::NotFound => NOT_FOUND,
        Code::Unauthenticated => DENIED,
        // the policy gate's denials are about the request, not the caller
        Code::PermissionDenied if reason.is_some_and(is_policy_reason) => REJECTED,
        Code::PermissionDenied => DENIED,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled => {
            UNAVAILABLE
        }
        Code::Unknown | Code::Internal | Code::Unimplemented | Code::DataLoss => FAILURE,
    }
}

fn is_policy_reason(reason: &str) -> bool {
    [
        reasons::REPO_NOT_ALLOWED,
        reasons::NETWORK_ACCESS_DENIED,
        reasons::SECRETS_ACCESS_DENIED,
    ]
    .contains(&reason)
}

/// The exit code of a task that reached `status`, if it is terminal.
pub fn for_task_status(status: &str) -> Option<u8> {
    match status {
        "completed" => Some(SUCCESS),
        "failed" => Some(TASK_FAILED),
        "cancelled" => Some(TASK_CANCELLED),
        _ => None,
    }
}

/// What a person can do about a status with `code` and `reason`.
pub fn advice(code: Code, reason: Option<&str>) -> &'static str {
    match (code, reason) {
        (_, Some(reasons::VALIDATION_FAILED)) => "fix the fields listed and send it again",
        (_, Some(reasons::UNSUPPORTED_VERSION)) => "send version \"1.0\" or leave it out",
        (_, Some(reasons::INVALID_OPERATION)) => {
            "use one of --operation code_change, docs, analysis, ops"
        }
        (_, Some(reasons::REPO_NOT_ALLOWED)) => {
            "use a repository under an allowed prefix (the intake's JCT_ALLOWED_REPO_PREFIXES)"
        }
        (_, Some(reasons::TIME_BUDGET_TOO_LOW | reasons::TIME_BUDGET_TOO_HIGH)) => {
            "choose a --time-budget between 30 and 86400 seconds"
        }
        (_, Some(reasons::NETWORK_ACCESS_DENIED | reasons::SECRETS_ACCESS_DENIED)) => {
            "v1 denies network and secrets: drop --allow-network / --allow-secrets"
        }
        (_, Some(reasons::IDEMPOTENCY_KEY_CONFLICT)) => {
            "that idempotency key was used for a different request: use a new key"
        }
        (_, Some(reasons::TASK_NOT_FOUND)) => {
            "check the id (`jct list` shows your tasks); submitters only see their own"
        }
        (_, Some(reasons::INVALID_TRANSITION)) => {
            "the task is already finished; `jct get ID` shows its state"
        }
        (_, Some(reasons::INVALID_PAGE_TOKEN)) => {
            "page tokens only work for the same caller and filters: start again without --page-token"
        }
        (_, Some(reasons::ROLE_NOT_ALLOWED)) => {
            "your token's roles do not allow this; ask an operator for a token that does"
        }
        (Code::Unauthenticated, _) => {
            "pass a valid token with --token-file or JCT_TOKEN_FILE (a file holding the token)"
        }
        (Code::PermissionDenied, _) => "your token does not allow this",
        (Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted, _) => {
            "the intake is busy, draining or cannot reach its database: try again shortly"
        }
        (Code::Cancelled, _) => "the call was cut off: try again",
        (Code::NotFound, _) => "check the id",
        (Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange, _) => {
            "correct the request and send it again"
        }
        _ => "this is not something you sent; if it persists, look at the intake's log",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stable_reason_has_its_exit_code() {
        let cases = [
            (Code::InvalidArgument, reasons::VALIDATION_FAILED, REJECTED),
            (
                Code::InvalidArgument,
                reasons::UNSUPPORTED_VERSION,
                REJECTED,
            ),
            (Code::InvalidArgument, reasons::INVALID_OPERATION, REJECTED),
            (Code::PermissionDenied, reasons::REPO_NOT_ALLOWED, REJECTED),
            (
                Code::InvalidArgument,
                reasons::TIME_BUDGET_TOO_LOW,
                REJECTED,
            ),
            (
                Code::InvalidArgument,
                reasons::TIME_BUDGET_TOO_HIGH,
                REJECTED,
            ),
            (
                Code::PermissionDenied,
                reasons::NETWORK_ACCESS_DENIED,
                REJECTED,
            ),
            (
                Code::PermissionDenied,
                reasons::SECRETS_ACCESS_DENIED,
                REJECTED,
            ),
            (
                Code::AlreadyExists,
                reasons::IDEMPOTENCY_KEY_CONFLICT,
                REJECTED,
            ),
            (Code::NotFound, reasons::TASK_NOT_FOUND, NOT_FOUND),
            (
                Code::FailedPrecondition,
                reasons::INVALID_TRANSITION,
                REJECTED,
            ),
            (Code::InvalidArgument, reasons::INVALID_PAGE_TOKEN, REJECTED),
            (Code::Unauthenticated, reasons::UNAUTHENTICATED, DENIED),
            (Code::PermissionDenied, reasons::ROLE_NOT_ALLOWED, DENIED),
            (
                Code::PermissionDenied,
                reasons::WORKER_ONLY_TRANSITION,
                DENIED,
            ),
            (
                Code::Unavailable,
                reasons::DATABASE_UNAVAILABLE,
                UNAVAILABLE,
            ),
            (Code::Unavailable, reasons::SHUTTING_DOWN, UNAVAILABLE),
            (Code::Internal, reasons::INTERNAL_ERROR, FAILURE),
        ];
        for (code, reason, exit) in cases {
            assert_eq!(for_status(code, Some(reason)), exit, "{code:?} {reason}");
        }
    }

    #[test]
    fn statuses_without_a_reason_map_by_code() {
        assert_eq!(for_status(Code::Unavailable, None), UNAVAILABLE);
        assert_eq!(for_status(Code::DeadlineExceeded, None), UNAVAILABLE);
        assert_eq!(for_status(Code::OutOfRange, None), REJECTED);
        assert_eq!(for_status(Code::PermissionDenied, None), DENIED);
        assert_eq!(for_status(Code::Unauthenticated, None), DENIED);
        assert_eq!(for_status(Code::Unknown, None), FAILURE);
        assert_eq!(for_status(Code::Unimplemented, None), FAILURE);
    }

    #[test]
    fn terminal_task_statuses_and_only_those_end_a_watch() {
        assert_eq!(for_task_status("completed"), Some(SUCCESS));
        assert_eq!(for_task_status("failed"), Some(TASK_FAILED));
        assert_eq!(for_task_status("cancelled"), Some(TASK_CANCELLED));
        for open in ["pending", "queued", "running", ""] {
            assert_eq!(for_task_status(open), None, "{open}");
        }
    }

    #[test]
    fn reasons_get_specific_advice() {
        assert!(advice(Code::PermissionDenied, Some(reasons::REPO_NOT_ALLOWED)).contains("prefix"));
        assert!(advice(Code::Unauthenticated, None).contains("--token-file"));
        assert!(advice(Code::NotFound, Some(reasons::TASK_NOT_FOUND)).contains("jct list"));
    }
}
