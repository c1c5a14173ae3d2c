//! A task as JSON (prost messages have no serde), in one shape for every reader:
//! what `jct -o json` prints (the stable, documented form), what the worker
//! writes to a trace's `task.json` and what a `command` program reads on stdin.
//! Field names are the contract's; unset timestamps, `result` and `error` are
//! `null`.

use prost_types::{Struct, Timestamp};
use serde_json::{Value as Json, json};

use crate::structs::struct_to_json;
use crate::v1 as pb;

/// Every field of `jct.v1.Task` under its contract name.
pub fn task(task: &pb::Task) -> Json {
    json!({
        "id": task.id,
        "version": task.version,
        "idempotency_key": task.idempotency_key,
        "requested_by": task.requested_by.as_ref().map(|r| json!({
            "kind": r.kind, "id": r.id, "label": r.label,
        })),
        "objective": task.objective,
        "operation": task.operation,
        "target": task.target.as_ref().map(|t| json!({
            "repo": t.repo, "ref": t.r#ref, "path": t.path,
        })),
        "constraints": task.constraints.as_ref().map(|c| json!({
            "time_budget_seconds": c.time_budget_seconds,
            "allow_network": c.allow_network,
            "allow_secrets": c.allow_secrets,
        })),
        "inputs": object(task.inputs.as_ref()),
        "metadata": object(task.metadata.as_ref()),
        "status": task.status,
        "created_at": time(task.created_at.as_ref()),
        "queued_at": time(task.queued_at.as_ref()),
        "started_at": time(task.started_at.as_ref()),
        "completed_at": time(task.completed_at.as_ref()),
        "updated_at": time(task.updated_at.as_ref()),
        "attempt": task.attempt,
        "max_attempts": task.max_attempts,
        "worker_id": task.worker_id,
        "submitted_by": task.submitted_by,
        "trace_uri": task.trace_uri,
        "traceparent": task.traceparent,
        "result": task.result.as_ref().map(|r| object(Some(r))),
        "error": task.error.as_ref().map(|e| json!({"code": e.code, "message": e.message})),
    })
}

fn object(value: Option<&Struct>) -> Json {
    // a Struct holding NaN cannot be JSON; the intake refuses those, so this is
    // only a fallback that keeps the output valid
    Json::Object(
        value
            .and_then(|s| struct_to_json(s).ok())
            .unwrap_or_default(),
    )
}

/// RFC 3339 with microseconds (`2026-12-03T10:00:00.123456Z`), or `null`.
pub fn time(value: Option<&Timestamp>) -> Json {
    system_time(value).map_or(Json::Null, |at| {
        Json::String(humantime::format_rfc3339_micros(at).to_string())
    })
}

pub fn system_time(value: Option<&Timestamp>) -> Option<std::time::SystemTime> {
    let ts = value?;
    let seconds = u64::try_from(ts.seconds).ok()?;
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    Some(std::time::UNIX_EPOCH + std::time::Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_json_has_every_field_with_nulls_for_unset() {
        let t = pb::Task {
            id: "t1".into(),
            status: "queued".into(),
            created_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000,
            }),
            ..Default::default()
        };
        let out = task(&t);
        assert_eq!(out["created_at"], json!("2023-11-14T22:13:20.000005Z"));
        assert_eq!(out["started_at"], Json::Null);
        assert_eq!(out["error"], Json::Null);
        assert_eq!(out["result"], Json::Null);
        assert_eq!(out["inputs"], json!({}));
    }
}
