//! Wire ↔ domain: reading requests into drafts (resolving the legacy aliases) and
//! writing stored tasks out as `jct.v1.Task`.

#![allow(deprecated)] // the legacy alias fields are read here, and only here

use jct::structs::{json_to_struct, struct_to_json};
use jct::v1 as pb;
use prost_types::Timestamp;
use serde_json::Map;

use crate::policy::{ConstraintsDraft, RequesterDraft, TargetDraft, TaskDraft};
use crate::task::{Micros, Task, TaskSpec};

/// Reads an Enqueue request; canonical fields win over their legacy aliases.
pub fn draft_from_request(request: &pb::EnqueueRequest) -> TaskDraft {
    let operation = if request.operation.is_empty() {
        request.r#type.clone()
    } else {
        request.operation.clone()
    };
    let inputs = match (&request.inputs, &request.payload) {
        (Some(inputs), _) => struct_to_json(inputs),
        (None, Some(payload)) => struct_to_json(payload),
        (None, None) => Ok(Map::new()),
    };
    let metadata = request
        .metadata
        .as_ref()
        .map_or_else(|| Ok(Map::new()), struct_to_json);
    TaskDraft {
        version: request.version.clone(),
        idempotency_key: request.idempotency_key.clone(),
        requested_by: request
            .requested_by
            .as_ref()
            .map(|requester| RequesterDraft {
                kind: requester.kind.clone(),
                id: requester.id.clone(),
                label: requester.label.clone(),
            }),
        objective: request.objective.clone(),
        operation,
        target: request.target.as_ref().map(|target| TargetDraft {
            repo: if target.repo.is_empty() {
                target.repository.clone()
            } else {
                target.repo.clone()
            },
            ref_name: target.r#ref.clone(),
            path: target.path.clone(),
        }),
        constraints: request
            .constraints
            .as_ref()
            .map(|constraints| ConstraintsDraft {
                time_budget_seconds: constraints.time_budget_seconds,
                allow_network: constraints.allow_network,
                allow_secrets: constraints.allow_secrets,
            })
            .unwrap_or_default(),
        inputs,
        metadata,
    }
}

/// The task as the contract shows it, whether stored or (without an id) only validated.
pub fn spec_to_pb(spec: &TaskSpec) -> pb::Task {
    pb::Task {
        version: spec.version.clone(),
        submitted_by: spec.submitted_by.clone(),
        idempotency_key: spec.idempotency_key.clone(),
        requested_by: Some(pb::RequestedBy {
            kind: spec.requested_by.kind.as_str().to_string(),
            id: spec.requested_by.id.clone(),
            label: spec.requested_by.label.clone(),
        }),
        objective: spec.objective.clone(),
        operation: spec.operation.as_str().to_string(),
        target: Some(pb::Target {
            repo: spec.target.repo.clone(),
            r#ref: spec.target.ref_name.clone(),
            path: spec.target.path.clone(),
            repository: String::new(),
        }),
        constraints: Some(pb::Constraints {
            time_budget_seconds: Some(spec.constraints.time_budget_seconds),
            allow_network: spec.constraints.allow_network,
            allow_secrets: spec.constraints.allow_secrets,
        }),
        inputs: Some(json_to_struct(&spec.inputs)),
        metadata: Some(json_to_struct(&spec.metadata)),
        traceparent: spec.traceparent.clone().unwrap_or_default(),
        ..Default::default()
    }
}

pub fn task_to_pb(task: &Task) -> pb::Task {
    pb::Task {
        id: task.id.to_string(),
        status: task.status.as_str().to_string(),
        created_at: Some(timestamp(task.created_at)),
        queued_at: task.queued_at.map(timestamp),
        started_at: task.started_at.map(timestamp),
        completed_at: task.completed_at.map(timestamp),
        updated_at: Some(timestamp(task.updated_at)),
        attempt: task.attempt,
        max_attempts: task.max_attempts,
        worker_id: task.worker_id.clone().unwrap_or_default(),
        trace_uri: task.trace_uri.clone().unwrap_or_default(),
        result: task.result.as_ref().map(json_to_struct),
        error: task.error.as_ref().map(|error| pb::TaskError {
            code: error.code.clone(),
            message: error.message.clone(),
        }),
        ..spec_to_pb(&task.spec)
    }
}

pub fn timestamp(micros: Micros) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_fields_win_over_aliases() {
        let request = pb::EnqueueRequest {
            operation: "docs".into(),
            r#type: "ops".into(),
            target: Some(pb::Target {
                repo: "a/b".into(),
                repository: "c/d".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let draft = draft_from_request(&request);
        assert_eq!(draft.operation, "docs");
        assert_eq!(draft.target.map(|t| t.repo), Some("a/b".to_string()));
    }

    #[test]
    fn aliases_fill_empty_canonical_fields() {
        let payload = json_to_struct(
            &serde_json::json!({"k": 1})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        let request = pb::EnqueueRequest {
            r#type: "ops".into(),
            payload: Some(payload),
            target: Some(pb::Target {
                repository: "c/d".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let draft = draft_from_request(&request);
        assert_eq!(draft.operation, "ops");
        assert_eq!(draft.target.map(|t| t.repo), Some("c/d".to_string()));
        assert_eq!(
            draft.inputs.ok().and_then(|m| m.get("k").cloned()),
            Some(serde_json::json!(1))
        );
    }

    #[test]
    fn timestamps_keep_microseconds() {
        let ts = timestamp(1_700_000_000_123_456);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_000));
    }
}
