//! The `tasks` row, and its conversion to and from the domain task.

use sea_orm::entity::prelude::*;
use serde_json::{Map, Value as Json};

use crate::task::{
    Constraints, Lease, Operation, Requester, RequesterKind, Status, Target, Task, TaskError,
    TaskSpec,
};

use super::StoreError;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tasks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub version: String,
    pub idempotency_key: Option<String>,
    pub submitted_by: String,
    pub requested_by_kind: String,
    pub requested_by_id: String,
    pub requested_by_label: Option<String>,
    pub objective: String,
    pub operation: String,
    pub target_repo: String,
    pub target_ref: String,
    pub target_path: String,
    pub time_budget_seconds: i32,
    pub allow_network: bool,
    pub allow_secrets: bool,
    pub inputs: String,
    pub metadata: String,
    pub status: String,
    pub created_at: i64,
    pub queued_at: Option<i64>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub updated_at: i64,
    pub available_at: i64,
    pub attempt: i32,
    pub max_attempts: i32,
    pub worker_id: Option<String>,
    pub lease_token: Option<Uuid>,
    pub lease_expires_at: Option<i64>,
    pub trace_uri: Option<String>,
    pub result: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Who made the latest status change, and through which method (the audit
    /// trigger reads them); NULL for the intake's own moves.
    pub changed_by: Option<String>,
    pub changed_via: Option<String>,
    /// W3C trace context of the enqueue; NULL for tasks from before it was kept.
    pub traceparent: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

// === impl Model ===

impl Model {
    /// The row a new task is stored as.
    pub fn new_queued(id: Uuid, spec: &TaskSpec, max_attempts: i32, now: i64) -> Self {
        Self {
            id,
            version: spec.version.clone(),
            idempotency_key: spec.idempotency_key.clone(),
            submitted_by: spec.submitted_by.clone(),
            requested_by_kind: spec.requested_by.kind.as_str().to_string(),
            requested_by_id: spec.requested_by.id.clone(),
            requested_by_label: spec.requested_by.label.clone(),
            objective: spec.objective.clone(),
            operation: spec.operation.as_str().to_string(),
            target_repo: spec.target.repo.clone(),
            target_ref: spec.target.ref_name.clone(),
            target_path: spec.target.path.clone(),
            time_budget_seconds: spec.constraints.time_budget_seconds,
            allow_network: spec.constraints.allow_network,
            allow_secrets: spec.constraints.allow_secrets,
            inputs: object_text(&spec.inputs),
            metadata: object_text(&spec.metadata),
            status: Status::Queued.as_str().to_string(),
            created_at: now,
            queued_at: Some(now),
            started_at: None,
            completed_at: None,
            updated_at: now,
            available_at: now,
            attempt: 0,
            max_attempts,
            worker_id: None,
            lease_token: None,
            lease_expires_at: None,
            trace_uri: None,
            result: None,
            error_code: None,
            error_message: None,
            changed_by: None,
            changed_via: None,
            traceparent: spec.traceparent.clone(),
        }
    }

    pub fn into_task(self) -> Result<Task, StoreError> {
        let corrupt = |what: &str, value: &str| {
            StoreError::Corrupt(format!("task {}: unknown {what} {value:?}", self.id))
        };
        let kind = RequesterKind::parse(&self.requested_by_kind)
            .ok_or_else(|| corrupt("requester kind", &self.requested_by_kind))?;
        let operation = Operation::parse(&self.operation)
            .ok_or_else(|| corrupt("operation", &self.operation))?;
        let status = Status::parse(&self.status).ok_or_else(|| corrupt("status", &self.status))?;
        let lease = match (self.lease_token, self.lease_expires_at) {
            (Some(token), Some(expires_at)) => Some(Lease { token, expires_at }),
            _ => None,
        };
        let error = self.error_code.map(|code| TaskError {
            code,
            message: self.error_message.unwrap_or_default(),
        });
        Ok(Task {
            id: self.id,
            spec: TaskSpec {
                version: self.version,
                idempotency_key: self.idempotency_key,
                submitted_by: self.submitted_by,
                requested_by: Requester {
                    kind,
                    id: self.requested_by_id,
                    label: self.requested_by_label,
                },
                objective: self.objective,
                operation,
                target: Target {
                    repo: self.target_repo,
                    ref_name: self.target_ref,
                    path: self.target_path,
                },
                constraints: Constraints {
                    time_budget_seconds: self.time_budget_seconds,
                    allow_network: self.allow_network,
                    allow_secrets: self.allow_secrets,
                },
                inputs: parse_object(self.id, "inputs", &self.inputs)?,
                metadata: parse_object(self.id, "metadata", &self.metadata)?,
                traceparent: self.traceparent,
            },
            status,
            created_at: self.created_at,
            queued_at: self.queued_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
            updated_at: self.updated_at,
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            worker_id: self.worker_id,
            lease,
            trace_uri: self.trace_uri,
            result: self
                .result
                .as_deref()
                .map(|text| parse_object(self.id, "result", text))
                .transpose()?,
            error,
        })
    }
}

fn parse_object(id: Uuid, column: &str, text: &str) -> Result<Map<String, Json>, StoreError> {
    match serde_json::from_str(text) {
        Ok(Json::Object(map)) => Ok(map),
        _ => Err(StoreError::Corrupt(format!(
            "task {id}: column {column} is not a JSON object"
        ))),
    }
}

/// Serializes a JSON object for a text column.
pub fn object_text(map: &Map<String, Json>) -> String {
    // a map of serde_json values always serializes
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_string())
}
