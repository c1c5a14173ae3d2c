//! The request/response commands: enqueue, get, list, cancel, status.

use std::time::{Duration, SystemTime};

use jct::v1 as pb;
use serde_json::{Map, Value as Json, json};

use super::args::{EnqueueArgs, ListArgs};
use super::client::Connection;
use super::error::CliError;
use super::output::{self, Out};
use super::{exit, json, render, watch};

pub async fn enqueue(
    connection: &Connection,
    out: &Out,
    args: EnqueueArgs,
) -> Result<u8, CliError> {
    let wait = args.wait;
    let request = enqueue_request(args)?;
    let validate_only = request.validate_only;
    let response = connection
        .tasks()
        .enqueue(request)
        .await
        .map_err(CliError::rpc("enqueue"))?
        .into_inner();
    if out.is_json() {
        out.json(&json::enqueue_response(&response))?;
    } else if validate_only {
        out.raw("valid: the intake would accept this task as below (nothing was stored)\n")?;
        if let Some(task) = &response.task {
            out.raw(&render::task_detail(task))?;
        }
    } else {
        let id = render::cell(&response.task_id);
        if response.created {
            out.raw(&format!(
                "enqueued {id} ({})\n",
                render::cell(&response.status)
            ))?;
        } else {
            out.raw(&format!(
                "{id} already exists for this idempotency key ({}); nothing new was stored\n",
                render::cell(&response.status)
            ))?;
        }
        if !wait {
            output::stderr(&format!("follow it: jct watch {id}\n"));
        }
    }
    if wait && !validate_only {
        return watch::follow(connection, out, response.task_id).await;
    }
    Ok(exit::SUCCESS)
}

/// The request: the task file if any, then every flag given over it.
#[allow(deprecated)] // `payload`, the alias of `inputs` (see --input below)
fn enqueue_request(args: EnqueueArgs) -> Result<pb::EnqueueRequest, CliError> {
    let mut request = match &args.file {
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(path)
            }
            .map_err(|error| CliError::Usage(format!("cannot read {}: {error}", path.display())))?;
            let value: Json = serde_json::from_str(&text).map_err(|error| {
                CliError::Usage(format!("{} is not JSON: {error}", path.display()))
            })?;
            json::enqueue_from_json(&value)
                .map_err(|error| CliError::Usage(format!("{}: {error}", path.display())))?
        }
        None => pb::EnqueueRequest::default(),
    };
    if let Some(objective) = args.objective {
        request.objective = objective;
    }
    if let Some(operation) = args.operation {
        request.operation = operation;
    }
    if args.repo.is_some() || args.git_ref.is_some() || args.path.is_some() {
        let target = request.target.get_or_insert_with(Default::default);
        if let Some(repo) = args.repo {
            target.repo = repo;
        }
        if let Some(git_ref) = args.git_ref {
            target.r#ref = git_ref;
        }
        if let Some(path) = args.path {
            target.path = path;
        }
    }
    if let Some(by) = args.requested_by {
        let (kind, id) = by.split_once(':').ok_or_else(|| {
            CliError::Usage(format!(
                "--requested-by {by:?} is not KIND:ID (e.g. human:alice)"
            ))
        })?;
        let label = request.requested_by.take().and_then(|r| r.label);
        request.requested_by = Some(pb::RequestedBy {
            kind: kind.to_string(),
            id: id.to_string(),
            label,
        });
    }
    if request.requested_by.is_none() {
        // a person at a terminal is the usual requester; scripts say who they are
        let user = ["USER", "LOGNAME"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|u| !u.is_empty()));
        let id = user.ok_or_else(|| {
            CliError::Usage("say who the task is for: --requested-by KIND:ID".into())
        })?;
        request.requested_by = Some(pb::RequestedBy {
            kind: "human".into(),
            id,
            label: None,
        });
    }
    if let Some(label) = args.label
        && let Some(by) = request.requested_by.as_mut()
    {
        by.label = Some(label);
    }
    if let Some(key) = args.idempotency_key {
        request.idempotency_key = Some(key);
    }
    if args.time_budget.is_some() || args.allow_network || args.allow_secrets {
        let constraints = request.constraints.get_or_insert_with(Default::default);
        if args.time_budget.is_some() {
            constraints.time_budget_seconds = args.time_budget;
        }
        constraints.allow_network |= args.allow_network;
        constraints.allow_secrets |= args.allow_secrets;
    }
    if !args.inputs.is_empty() {
        // the deprecated `payload` only counts when `inputs` is absent: merging
        // flags into it keeps that meaning
        let inputs = match (request.inputs.take(), request.payload.take()) {
            (Some(inputs), payload) => {
                request.payload = payload;
                inputs
            }
            (None, payload) => payload.unwrap_or_default(),
        };
        request.inputs = Some(merge(inputs, &args.inputs, "--input")?);
    }
    if !args.metadata.is_empty() {
        let metadata = request.metadata.take().unwrap_or_default();
        request.metadata = Some(merge(metadata, &args.metadata, "--meta")?);
    }
    request.validate_only |= args.validate_only;
    Ok(request)
}

fn merge(
    mut into: prost_types::Struct,
    pairs: &[String],
    flag: &str,
) -> Result<prost_types::Struct, CliError> {
    for pair in pairs {
        let (key, value) =
            json::key_value(pair).map_err(|error| CliError::Usage(format!("{flag} {error}")))?;
        into.fields.insert(key, jct::structs::json_to_value(&value));
    }
    Ok(into)
}

pub async fn get(connection: &Connection, out: &Out, id: String) -> Result<u8, CliError> {
    let task = connection
        .tasks()
        .get_task(pb::GetTaskRequest { task_id: id })
        .await
        .map_err(CliError::rpc("get"))?
        .into_inner();
    if out.is_json() {
        out.json(&json::task(&task))?;
    } else {
        out.raw(&render::task_detail(&task))?;
    }
    Ok(exit::SUCCESS)
}

pub async fn cancel(connection: &Connection, out: &Out, id: String) -> Result<u8, CliError> {
    let task = connection
        .tasks()
        .update_status(pb::UpdateStatusRequest {
            task_id: id,
            status: "cancelled".into(),
            ..Default::default()
        })
        .await
        .map_err(CliError::rpc("cancel"))?
        .into_inner();
    if out.is_json() {
        out.json(&json::task(&task))?;
    } else {
        out.raw(&format!(
            "{}: {}\n",
            render::cell(&task.id),
            render::cell(&task.status)
        ))?;
    }
    Ok(exit::SUCCESS)
}

pub async fn list(connection: &Connection, out: &Out, args: ListArgs) -> Result<u8, CliError> {
    let mut client = connection.tasks();
    let mut remaining = if args.all { usize::MAX } else { args.limit };
    let mut page_token = args.page_token.clone().unwrap_or_default();
    let page_size = usize::try_from(args.page_size).unwrap_or(100);
    let mut shown = Vec::new();
    while remaining > 0 {
        // never more than `remaining`, so a page is never cut and its token stays exact
        let size = page_size.min(remaining);
        let response = client
            .list_tasks(pb::ListTasksRequest {
                status: args.status.clone(),
                operation: args.operation.clone(),
                requester_kind: args.requester_kind.clone(),
                target_repo: args.repo.clone(),
                page_size: i32::try_from(size).unwrap_or(500),
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .map_err(CliError::rpc("list"))?
            .into_inner();
        remaining = remaining.saturating_sub(response.tasks.len());
        if out.is_json() {
            // JSON lines as pages arrive: a script sees the first task at once
            for task in &response.tasks {
                out.json(&json::task(task))?;
            }
        } else {
            shown.extend(response.tasks);
        }
        page_token = response.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    if !out.is_json() {
        if shown.is_empty() {
            out.raw("no tasks match\n")?;
        } else {
            out.raw(&render::task_table(&shown, SystemTime::now()))?;
        }
    }
    if !page_token.is_empty() {
        output::stderr(&format!(
            "more tasks: the same command with --page-token {} (or --all)\n",
            render::cell(&page_token)
        ));
    }
    Ok(exit::SUCCESS)
}

pub async fn status(connection: &Connection, out: &Out) -> Result<u8, CliError> {
    let mut operator = connection.operator();
    let version = operator
        .get_version(pb::GetVersionRequest {})
        .await
        .map_err(CliError::rpc("status"))?
        .into_inner();
    let status = operator
        .get_system_status(pb::GetSystemStatusRequest {})
        .await
        .map_err(CliError::rpc("status"))?
        .into_inner();
    let oldest_queued = oldest_queued_age(&status);
    if out.is_json() {
        out.json(&status_json(&version, &status, oldest_queued))?;
    } else {
        out.raw(&render::system_status(&version, &status, oldest_queued))?;
    }
    Ok(exit::SUCCESS)
}

/// How long the longest-waiting queued task has waited (unset when none is
/// queued). The intake's clock set the timestamp; a clock behind ours reads 0.
fn oldest_queued_age(status: &pb::GetSystemStatusResponse) -> Option<Duration> {
    let since = json::system_time(status.oldest_queued_at.as_ref())?;
    Some(SystemTime::now().duration_since(since).unwrap_or_default())
}

fn status_json(
    version: &pb::GetVersionResponse,
    status: &pb::GetSystemStatusResponse,
    oldest_queued: Option<Duration>,
) -> Json {
    let counts: Map<String, Json> = status
        .task_counts
        .iter()
        .map(|(status, count)| (status.clone(), Json::from(*count)))
        .collect();
    json!({
        "service": version.service,
        "version": version.version,
        "api_version": version.api_version,
        "database_backend": status.database_backend,
        "database_reachable": status.database_reachable,
        "uptime_seconds": status.uptime_seconds,
        "task_counts": counts,
        "oldest_queued_at": json::time(status.oldest_queued_at.as_ref()),
        "oldest_queued_age_seconds": oldest_queued.map(|age| age.as_secs_f64()),
        "workers": status.workers.iter().map(|w| json!({
            "worker_id": w.worker_id,
            "executor": w.executor,
            "version": w.version,
            "capacity": w.capacity,
            "in_flight": w.in_flight,
            "draining": w.draining,
        })).collect::<Vec<_>>(),
    })
}
