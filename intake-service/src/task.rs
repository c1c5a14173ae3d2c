//! The task as the intake understands it, free of wire and storage types: the
//! normalized specification a client asked for, and the stored record of it.

use std::fmt;

use serde_json::{Map, Value as Json};
use uuid::Uuid;

/// The contract version every stored task carries.
pub const SPEC_VERSION: &str = "1.0";
/// Time budget when a request sets none.
pub const DEFAULT_TIME_BUDGET_SECONDS: i32 = 900;
/// `target.ref` when a request sets none.
pub const DEFAULT_REF: &str = "main";

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the exact, case-sensitive spelling of the contract.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// What kind of change or work a task is.
    Operation { CodeChange => "code_change", Docs => "docs", Analysis => "analysis", Ops => "ops" }
);

string_enum!(
    /// Who asked for a task.
    RequesterKind { Human => "human", Agent => "agent", System => "system" }
);

string_enum!(
    /// Where a task is in its life.
    Status {
        Pending => "pending",
        Queued => "queued",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }

    /// The contract's state machine: `pending → queued → running → completed |
    /// failed | cancelled`, and `queued → cancelled`.
    pub fn can_move_to(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Pending, Queued)
                | (Pending, Cancelled)
                | (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Completed)
                | (Running, Failed)
                | (Running, Cancelled)
        )
    }

    /// The statuses a task may be in to move to `self`.
    pub fn sources(self) -> Vec<Status> {
        Status::ALL
            .iter()
            .copied()
            .filter(|from| from.can_move_to(self))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub kind: RequesterKind,
    pub id: String,
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub repo: String,
    pub ref_name: String,
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Constraints {
    pub time_budget_seconds: i32,
    pub allow_network: bool,
    pub allow_secrets: bool,
}

/// A validated, normalized request: exactly what is stored, and what two requests
/// with one idempotency key are compared on.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub version: String,
    /// The authenticated principal that enqueued the task; idempotency keys are
    /// scoped to it. Set by the intake, never by the request.
    pub submitted_by: String,
    pub idempotency_key: Option<String>,
    pub requested_by: Requester,
    pub objective: String,
    pub operation: Operation,
    pub target: Target,
    pub constraints: Constraints,
    pub inputs: Map<String, Json>,
    pub metadata: Map<String, Json>,
    /// The W3C `traceparent` the task's run joins (see `jct::traceparent`). Set
    /// by the intake from the caller's trace context (or made fresh), never by the
    /// request body; `None` only for tasks stored before it was kept.
    pub traceparent: Option<String>,
}

impl TaskSpec {
    /// Whether `other` asks for the same task (everything but the key itself, the
    /// submitter, which the key is already scoped to, and the trace context: a
    /// retried request is a new trace of the same task).
    pub fn same_request_as(&self, other: &TaskSpec) -> bool {
        self.version == other.version
            && self.requested_by == other.requested_by
            && self.objective == other.objective
            && self.operation == other.operation
            && self.target == other.target
            && self.constraints == other.constraints
            && self.inputs == other.inputs
            && self.metadata == other.metadata
    }
}

/// Microseconds since the Unix epoch: how every timestamp is stored.
pub type Micros = i64;

/// A stored task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: Uuid,
    pub spec: TaskSpec,
    pub status: Status,
    pub created_at: Micros,
    pub queued_at: Option<Micros>,
    pub started_at: Option<Micros>,
    pub completed_at: Option<Micros>,
    pub updated_at: Micros,
    pub attempt: i32,
    pub max_attempts: i32,
    pub worker_id: Option<String>,
    pub lease: Option<Lease>,
    pub trace_uri: Option<String>,
    pub result: Option<Map<String, Json>>,
    pub error: Option<TaskError>,
}

/// A worker's hold on a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub token: Uuid,
    pub expires_at: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    pub code: String,
    pub message: String,
}

/// The current time in microseconds since the Unix epoch.
pub fn now_micros() -> Micros {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX)
}

/// A queued task with a plain spec, for unit tests to vary.
#[cfg(test)]
impl Task {
    pub(crate) fn example(id: uuid::Uuid, status: Status) -> Task {
        Task {
            id,
            spec: TaskSpec {
                version: SPEC_VERSION.into(),
                submitted_by: "anonymous".into(),
                idempotency_key: None,
                requested_by: Requester {
                    kind: RequesterKind::Agent,
                    id: "bot".into(),
                    label: None,
                },
                objective: "an example task".into(),
                operation: Operation::Docs,
                target: Target {
                    repo: "myorg/app".into(),
                    ref_name: "main".into(),
                    path: String::new(),
                },
                constraints: Constraints {
                    time_budget_seconds: 900,
                    allow_network: false,
                    allow_secrets: false,
                },
                inputs: Default::default(),
                metadata: Default::default(),
                traceparent: None,
            },
            status,
            created_at: 1,
            queued_at: Some(1),
            started_at: None,
            completed_at: None,
            updated_at: 1,
            attempt: 0,
            max_attempts: 3,
            worker_id: None,
            lease: None,
            trace_uri: None,
            result: None,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_statuses_lead_nowhere() {
        for from in [Status::Completed, Status::Failed, Status::Cancelled] {
            assert!(from.is_terminal());
            for to in Status::ALL {
                assert!(!from.can_move_to(*to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn queued_tasks_run_or_are_cancelled() {
        assert_eq!(Status::Running.sources(), vec![Status::Queued]);
        assert_eq!(
            Status::Cancelled.sources(),
            vec![Status::Pending, Status::Queued, Status::Running]
        );
        assert_eq!(Status::Completed.sources(), vec![Status::Running]);
        assert!(!Status::Queued.can_move_to(Status::Completed));
    }

    #[test]
    fn spellings_round_trip() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(*status));
        }
        assert_eq!(Operation::parse("Docs"), None);
        assert_eq!(RequesterKind::parse("agent"), Some(RequesterKind::Agent));
    }
}
