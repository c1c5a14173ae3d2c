//! The `record` executor (the original v0 behaviour): runs no code, and completes
//! with a result describing what would have run.

use serde_json::{Map, Value as Json, json};

use jct::v1 as pb;

/// The result of a recorded run.
pub fn result(task: &pb::Task) -> Map<String, Json> {
    let target = task.target.as_ref();
    let budget = task
        .constraints
        .as_ref()
        .and_then(|c| c.time_budget_seconds);
    let would_run = json!({
        "operation": task.operation,
        "objective": task.objective,
        "repo": target.map(|t| t.repo.as_str()),
        "ref": target.map(|t| t.r#ref.as_str()),
        "path": target.map(|t| t.path.as_str()),
        "time_budget_seconds": budget,
        "allow_network": false,
        "allow_secrets": false,
    });
    let mut result = Map::new();
    result.insert("executor".into(), Json::from("record"));
    result.insert("executed".into(), Json::Bool(false));
    result.insert(
        "summary".into(),
        Json::from(format!(
            "recorded, not run: {} on {}",
            task.operation,
            target.map_or("", |t| t.repo.as_str())
        )),
    );
    result.insert("would_run".into(), would_run);
    result
}

/// What `stdout.log` says for a recorded run.
pub fn stdout(task: &pb::Task) -> String {
    format!(
        "record executor: no program was run for task {} (operation {}, objective {:?})\n",
        task.id, task.operation, task.objective
    )
}
