//! A request as read off the wire, legacy aliases already resolved: plain data the
//! gate can judge without knowing protobuf.

use jct::structs::NonFiniteNumber;
use serde_json::{Map, Value as Json};

/// A JSON object, or the reason it cannot be one.
pub type Document = Result<Map<String, Json>, NonFiniteNumber>;

#[derive(Debug, Clone, PartialEq)]
pub struct TaskDraft {
    pub version: String,
    pub idempotency_key: Option<String>,
    pub requested_by: Option<RequesterDraft>,
    pub objective: String,
    /// `operation`, or the legacy `type` when `operation` is empty.
    pub operation: String,
    pub target: Option<TargetDraft>,
    pub constraints: ConstraintsDraft,
    /// `inputs`, or the legacy `payload` when `inputs` is unset.
    pub inputs: Document,
    pub metadata: Document,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequesterDraft {
    pub kind: String,
    pub id: String,
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDraft {
    /// `repo`, or the legacy `repository` when `repo` is empty.
    pub repo: String,
    pub ref_name: String,
    pub path: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConstraintsDraft {
    pub time_budget_seconds: Option<i32>,
    pub allow_network: bool,
    pub allow_secrets: bool,
}

impl Default for TaskDraft {
    fn default() -> Self {
        Self {
            version: String::new(),
            idempotency_key: None,
            requested_by: None,
            objective: String::new(),
            operation: String::new(),
            target: None,
            constraints: ConstraintsDraft::default(),
            inputs: Ok(Map::new()),
            metadata: Ok(Map::new()),
        }
    }
}
