//! Running one assignment: trace folder, workspace, executor, outcome, report.
//!
//! The order is what makes a run auditable: the trace folder exists before the
//! program starts, and it is complete (result or error, manifest) before the
//! outcome is reported, so a failed or killed run keeps its partial trace.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jct::reasons::task_error;
use jct::structs::json_to_struct;
use jct::traceparent::Traceparent;
use jct::v1 as pb;
use jct::v1::ReportStatus;
use serde_json::{Map, Value as Json, json};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use crate::executor::{self, CommandConfig, ExecutorKind, Outcome};
use crate::reporter::Reporter;
use crate::trace::{self, TraceFolder, TraceRoot};
use jct::task_json::task as task_to_json;

/// Why a running task is being stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A client cancelled the task.
    Cancelled,
    /// The lease expired and the task moved on without this worker.
    LeaseLost,
    /// The worker is shutting down past its grace period: hand the task back.
    Shutdown,
}

/// The handle to stop one running task.
#[derive(Default)]
pub struct TaskControl {
    token: CancellationToken,
    reason: Mutex<Option<StopReason>>,
}

impl TaskControl {
    /// Stops the task; the first reason given wins.
    pub fn stop(&self, reason: StopReason) {
        if let Ok(mut current) = self.reason.lock() {
            current.get_or_insert(reason);
        }
        self.token.cancel();
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.reason.lock().ok().and_then(|reason| *reason)
    }
}

/// What every run on this worker shares.
pub struct RunnerContext {
    pub worker_id: String,
    pub trace_root: Arc<TraceRoot>,
    pub executor: ExecutorKind,
    pub command: Option<CommandConfig>,
    pub workspace_root: PathBuf,
    pub git_base: Option<String>,
    /// Operator cap on time budgets.
    pub max_task_seconds: Option<u64>,
    pub reporter: Reporter,
}

/// Runs an assignment to its end and reports it, in a `jct.task.run` span that
/// is a child of the task's stored traceparent (the Enqueue's span, or the
/// enqueuing client's): one trace from enqueue to run.
/// `received_at` is when the assignment reached the worker (the `assigned` event).
pub async fn run(
    context: Arc<RunnerContext>,
    assignment: pb::Assignment,
    control: Arc<TaskControl>,
    received_at: String,
) {
    let Some(task) = assignment.task.clone() else {
        return;
    };
    let Ok(task_id) = Uuid::parse_str(&task.id) else {
        warn!(task_id = %task.id, "assignment with a malformed task id ignored");
        return;
    };
    let attempt = assignment.attempt.max(1);
    // a consumer span: the task was produced by the Enqueue and is run here
    let span = info_span!(
        "jct.task.run",
        otel.kind = "consumer",
        task_id = %task_id,
        attempt,
        worker_id = %context.worker_id,
    );
    if let Some(parent) = Traceparent::parse(&task.traceparent) {
        jct::telemetry::set_remote_parent(&span, &parent);
    }
    run_attempt(
        context,
        assignment,
        task,
        task_id,
        attempt,
        control,
        received_at,
    )
    .instrument(span)
    .await;
}

async fn run_attempt(
    context: Arc<RunnerContext>,
    assignment: pb::Assignment,
    task: pb::Task,
    task_id: Uuid,
    attempt: i32,
    control: Arc<TaskControl>,
    received_at: String,
) {
    let started = Instant::now();
    let recorded = record_run(
        &context,
        &assignment,
        &task,
        task_id,
        attempt,
        &control,
        received_at,
    )
    .instrument(info_span!(
        "jct.task.execute",
        executor = context.executor.as_str()
    ))
    .await;
    let (trace_uri, outcome) = match recorded {
        Ok(done) => done,
        Err(error) => {
            // no trace could be written: report the failure itself
            warn!(%task_id, %error, "trace folder could not be written");
            let message = format!("the worker could not write the trace folder: {error}");
            (
                String::new(),
                Outcome::Failed {
                    code: task_error::EXECUTOR_ERROR.to_string(),
                    message,
                },
            )
        }
    };

    let report = match (control.reason(), outcome) {
        (Some(StopReason::LeaseLost), _) => {
            crate::metrics::run_ended("lease_lost");
            info!(%task_id, attempt, "stopped: lease lost");
            return;
        }
        (Some(StopReason::Shutdown), _) => {
            report(&assignment, ReportStatus::Released, None, None, &trace_uri)
        }
        (_, Outcome::Cancelled) => {
            report(&assignment, ReportStatus::Cancelled, None, None, &trace_uri)
        }
        (_, Outcome::Completed { result }) => report(
            &assignment,
            ReportStatus::Completed,
            Some(result),
            None,
            &trace_uri,
        ),
        (_, Outcome::Failed { code, message }) => report(
            &assignment,
            ReportStatus::Failed,
            None,
            Some(pb::TaskError { code, message }),
            &trace_uri,
        ),
    };
    let status = report.status().as_str_name();
    crate::metrics::run_ended(match report.status() {
        ReportStatus::Completed => "completed",
        ReportStatus::Failed => "failed",
        ReportStatus::Cancelled => "cancelled",
        _ => "released",
    });
    let ack = context
        .reporter
        .deliver(report, &control)
        .instrument(info_span!("jct.task.report", status))
        .await;
    info!(
        %task_id, attempt, %status,
        accepted = ack.as_ref().is_some_and(|a| a.accepted),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "task finished"
    );
}

fn report(
    assignment: &pb::Assignment,
    status: ReportStatus,
    result: Option<Map<String, Json>>,
    error: Option<pb::TaskError>,
    trace_uri: &str,
) -> pb::TaskReport {
    pb::TaskReport {
        report_id: 0,
        task_id: assignment
            .task
            .as_ref()
            .map(|t| t.id.clone())
            .unwrap_or_default(),
        lease_token: assignment.lease_token.clone(),
        status: status.into(),
        result: result.as_ref().map(json_to_struct),
        // the message quotes the program's stderr: escaped before it leaves the
        // worker (error.json in the trace keeps the raw text)
        error: error.map(|error| pb::TaskError {
            code: jct::text::escape(&error.code),
            message: jct::text::escape(&error.message),
        }),
        trace_uri: trace_uri.to_string(),
        // legacy_status stays empty: only workers of the previous release spell it
        ..Default::default()
    }
}

/// What every record of one attempt says about it: the `assigned` event,
/// task.json and the manifest share these facts.
#[derive(Clone)]
struct Attempt {
    task_id: Uuid,
    number: i32,
    worker_id: String,
    executor: &'static str,
    started_at: String,
    /// The trace the run joins: the task's stored traceparent.
    trace: Option<Traceparent>,
}

impl Attempt {
    /// Creates the attempt's trace folder with task.json and the `assigned` event
    /// (stamped with when the assignment arrived).
    fn open_trace(
        &self,
        root: &Arc<TraceRoot>,
        task_document: &Json,
        received_at: String,
        lease_expires_at: Option<i64>,
    ) -> std::io::Result<TraceFolder> {
        let mut trace = TraceFolder::create(root, self.task_id, self.number)?;
        trace.write_json(trace::TASK_FILE, task_document)?;
        let assigned = json!({ "attempt": self.number, "worker_id": self.worker_id, "lease_expires_at": lease_expires_at });
        trace.event_at(received_at, "assigned", assigned)?;
        Ok(trace)
    }

    /// manifest.json: the attempt's facts, its final status, and `extra` fields.
    fn manifest(&self, status: &str, extra: Json) -> Json {
        let mut manifest = json!({
            "task_id": self.task_id.to_string(), "attempt": self.number, "worker_id": self.worker_id,
            "executor": self.executor, "started_at": self.started_at, "finished_at": trace::now_rfc3339(),
            "status": status,
            // which trace holds this run's spans (null for a task stored without one)
            "trace_id": self.trace.map(|trace| trace.trace_id_hex()),
            "traceparent": self.trace.map(|trace| trace.to_string()),
        });
        if let (Some(manifest), Json::Object(extra)) = (manifest.as_object_mut(), extra) {
            manifest.extend(extra);
        }
        manifest
    }
}

/// Runs the executor with the trace folder around it; returns the trace URI and
/// the outcome.
async fn record_run(
    context: &Arc<RunnerContext>,
    assignment: &pb::Assignment,
    task: &pb::Task,
    task_id: Uuid,
    attempt_number: i32,
    control: &Arc<TaskControl>,
    received_at: String,
) -> std::io::Result<(String, Outcome)> {
    let task_document = task_to_json(task);
    let root = context.trace_root.clone();
    let lease_expires_at = assignment.lease_expires_at.map(|t| t.seconds);
    let attempt = Attempt {
        task_id,
        number: attempt_number,
        worker_id: context.worker_id.clone(),
        executor: context.executor.as_str(),
        started_at: trace::now_rfc3339(),
        trace: Traceparent::parse(&task.traceparent),
    };

    if context.executor == ExecutorKind::Record {
        // the whole record run is file writes: one blocking call
        let task = task.clone();
        return blocking(move || {
            let mut trace =
                attempt.open_trace(&root, &task_document, received_at, lease_expires_at)?;
            trace.event("started", json!({ "executor": attempt.executor }))?;
            trace.write_text(trace::STDOUT_FILE, &executor::record::stdout(&task))?;
            trace.write_text(trace::STDERR_FILE, "")?;
            let result = executor::record::result(&task);
            trace.write_json(trace::RESULT_FILE, &result)?;
            let sandbox =
                json!({ "executed": false, "network": "not applicable (no program run)" });
            let manifest = attempt.manifest(
                "completed",
                json!({ "exit_code": Json::Null, "sandbox": sandbox }),
            );
            trace.write_json(trace::MANIFEST_FILE, &manifest)?;
            trace.event("finished", json!({ "status": "completed" }))?;
            trace.sync()?;
            Ok((trace.uri(), Outcome::Completed { result }))
        })
        .await;
    }

    let opening = attempt.clone();
    let trace =
        blocking(move || opening.open_trace(&root, &task_document, received_at, lease_expires_at))
            .await?;
    let trace_uri = trace.uri();
    // the task's trace_uri is set now, so even a cancelled run points at its trace
    context.reporter.notify(report(
        assignment,
        ReportStatus::Running,
        None,
        None,
        &trace_uri,
    ));

    let (outcome, manifest_extra, mut trace) = crate::command_attempt::run(
        context,
        task,
        task_id,
        attempt_number,
        &control.token,
        trace,
    )
    .await;
    let status = match (&outcome, control.reason()) {
        (_, Some(StopReason::Shutdown)) => "released",
        (_, Some(StopReason::LeaseLost)) => "lease_lost",
        (Outcome::Completed { .. }, _) => "completed",
        (Outcome::Failed { .. }, _) => "failed",
        (Outcome::Cancelled, _) => "cancelled",
    };
    let outcome_for_files = outcome.clone();
    blocking(move || {
        match &outcome_for_files {
            Outcome::Completed { result } => trace.write_json(trace::RESULT_FILE, result)?,
            Outcome::Failed { code, message } => {
                trace.write_json(trace::ERROR_FILE, &json!({ "code": code, "message": message }))?
            }
            Outcome::Cancelled => trace.write_json(
                trace::ERROR_FILE,
                &json!({ "code": task_error::CANCELLED, "message": "cancelled while running; every process of the program was killed" }),
            )?,
        }
        // sealed: the program's tree is dead (or the manifest says it is not)
        let mut manifest = attempt.manifest(status, manifest_extra);
        manifest["artifacts"] = trace.digests()?;
        trace.write_json(trace::MANIFEST_FILE, &manifest)?;
        let event = if status == "cancelled" { "cancelled" } else { "finished" };
        trace.event(event, json!({ "status": status }))?;
        trace.sync()
    })
    .await?;
    Ok((trace_uri, outcome))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment() -> pb::Assignment {
        pb::Assignment {
            task: Some(pb::Task {
                id: Uuid::now_v7().to_string(),
                ..Default::default()
            }),
            lease_token: Uuid::now_v7().to_string(),
            ..Default::default()
        }
    }

    /// A program's stderr reaches the report escaped: the intake refuses raw
    /// control text, and people read the message in terminals.
    #[test]
    fn program_text_is_escaped_before_it_leaves_the_worker() {
        let stderr = "boom\0 \u{1b}]8;;https://evil.example\u{1b}\\click\u{1b}]8;;\u{1b}\\ \u{202E}txt.exe\n\u{1b}[2J";
        let message = format!("the program exited with status 2: {stderr}");
        let code = task_error::EXIT_STATUS.to_string();
        let sent = report(
            &assignment(),
            ReportStatus::Failed,
            None,
            Some(pb::TaskError { code, message }),
            "",
        );
        let error = sent.error.expect("error");
        assert_eq!(jct::text::line_problem(&error.code), None);
        assert_eq!(
            jct::text::text_problem(&error.message),
            None,
            "{:?}",
            error.message
        );
        assert!(
            error.message.contains("boom\\u{0000}")
                && error.message.contains("\\u{001b}]8;;https://evil.example")
                && error.message.contains("\\u{202e}txt.exe"),
            "{}",
            error.message
        );
    }
}
