//! The task as JSON (prost messages have no serde): what `task.json` holds and what
//! the `command` executor's program reads on stdin. Field names are the contract's.

use jct::structs::struct_to_json;
use jct::v1 as pb;
use prost_types::{Struct, Timestamp};
use serde_json::{Value as Json, json};

pub fn task_to_json(task: &pb::Task) -> Json {
    let requested_by = task
        .requested_by
        .as_ref()
        .map(|r| json!({ "kind": r.kind, "id": r.id, "label": r.label }));
    let target = task
        .target
        .as_ref()
        .map(|t| json!({ "repo": t.repo, "ref": t.r#ref, "path": t.path }));
    let constraints = task.constraints.as_ref().map(|c| {
        json!({
            "time_budget_seconds": c.time_budget_seconds,
            "allow_network": c.allow_network,
            "allow_secrets": c.allow_secrets,
        })
    });
    json!({
        "id": task.id,
        "version": task.version,
        "idempotency_key": task.idempotency_key,
        "requested_by": requested_by,
        "objective": task.objective,
        "operation": task.operation,
        "target": target,
        "constraints": constraints,
        "inputs": object(task.inputs.as_ref()),
        "metadata": object(task.metadata.as_ref()),
        "status": task.status,
        "created_at": time(task.created_at.as_ref()),
        "queued_at": time(task.queued_at.as_ref()),
        "started_at": time(task.started_at.as_ref()),
        "attempt": task.attempt,
        "max_attempts": task.max_attempts,
        "worker_id": task.worker_id,
        // a program that traces its own work can continue the task's trace
        "traceparent": task.traceparent,
    })
}

fn object(value: Option<&Struct>) -> Json {
    // the intake refuses non-finite numbers, so this conversion does not fail
    Json::Object(
        value
            .and_then(|s| struct_to_json(s).ok())
            .unwrap_or_default(),
    )
}

fn time(value: Option<&Timestamp>) -> Json {
    let Some(ts) = value else { return Json::Null };
    let Ok(seconds) = u64::try_from(ts.seconds) else {
        return Json::Null;
    };
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    let at = std::time::UNIX_EPOCH + std::time::Duration::new(seconds, nanos);
    Json::String(humantime::format_rfc3339_micros(at).to_string())
}
