//! One attempt of the `command` executor, as steps: prepare the workspace → run
//! the program → collect the diff and the outputs → finish. The attempt owns its
//! trace folder; an event it cannot write is recorded in the manifest
//! (`trace_write_failures`), not dropped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jct::reasons::task_error;
use jct::v1 as pb;
use serde_json::{Map, Value as Json, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use crate::executor::{self, CommandConfig, CommandEnd, CommandReport, CommandRun, Outcome};
use crate::outputs::{self, OutputsRecord};
use crate::runner::RunnerContext;
use crate::trace::{self, TraceFolder};
use crate::workspace::{self, Budget, DiffCapture, Workspace, WorkspaceError};
use jct::task_json::task as task_to_json;

/// Runs the attempt; returns the outcome, the manifest's fields and the trace.
pub async fn run(
    context: &Arc<RunnerContext>,
    task: &pb::Task,
    task_id: Uuid,
    attempt: i32,
    cancel: &CancellationToken,
    trace: TraceFolder,
) -> (Outcome, Json, TraceFolder) {
    let mut steps = Steps {
        trace,
        unwritten: Vec::new(),
    };
    let Some(command) = context.command.clone() else {
        let failed = Outcome::Failed {
            code: task_error::EXECUTOR_ERROR.into(),
            message: "the command executor has no JCT_EXECUTOR_COMMAND".into(),
        };
        return steps.end(failed, Map::new());
    };
    let constraints = task.constraints.unwrap_or_default();
    let task_budget = u64::try_from(constraints.time_budget_seconds.unwrap_or(900)).unwrap_or(900);
    let seconds = context
        .max_task_seconds
        .map_or(task_budget, |cap| task_budget.min(cap));
    // one deadline for the whole attempt: checkout, program, diff
    let budget = Budget {
        deadline: Instant::now().checked_add(Duration::from_secs(seconds)),
        cancel: cancel.clone(),
    };

    let name = format!("{task_id}-{attempt}");
    let (dir, checkout) = match steps.prepare(context, &command, task, &name, &budget).await {
        Ok(prepared) => prepared,
        Err(stop) => return steps.end(stop, Map::new()),
    };
    let base_commit = checkout.as_ref().map(|w| w.base_commit.clone());

    let env = vec![
        ("JCT_TASK_ID".into(), task_id.to_string()),
        ("JCT_TASK_ATTEMPT".into(), attempt.to_string()),
        ("JCT_WORKSPACE".into(), dir.display().to_string()),
        (
            "JCT_OUTPUTS_DIR".into(),
            dir.join(outputs::WORKSPACE_DIR).display().to_string(),
        ),
    ];
    let program = Program {
        task_json: serde_json::to_vec(&task_to_json(task)).unwrap_or_default(),
        env,
        budget: &budget,
        seconds,
        allow_network: constraints.allow_network,
        allow_secrets: constraints.allow_secrets,
    };
    let report = match steps.run_program(&command, &dir, program).await {
        Ok(report) => report,
        Err(stop) => {
            remove(&dir, task_id).await;
            return steps.end(stop, Map::new());
        }
    };

    // only once nothing of the program can change the workspace
    let (diff, diff_stop) = match checkout.as_ref().filter(|_| report.tree_dead) {
        Some(checkout) => steps.collect_diff(checkout, &command, &budget).await,
        None => (None, None),
    };
    let outputs = if report.tree_dead {
        steps.copy_outputs(&dir, command.output_limit_bytes).await
    } else {
        None
    };

    remove(&dir, task_id).await;
    let mut outcome = outcome_of(&report, diff.map(|d| d.bytes));
    if let (Some(stop), Outcome::Completed { .. }) = (diff_stop, &outcome) {
        outcome = stop;
    }
    let extra = json!({
        "exit_code": match report.end { CommandEnd::Exited { code } => Some(code), _ => None },
        "end": report.end,
        "tree_dead": report.tree_dead,
        "duration_ms": report.duration_ms,
        "stdout_bytes": report.stdout_bytes,
        "stderr_bytes": report.stderr_bytes,
        "stdout_truncated": report.stdout_truncated,
        "stderr_truncated": report.stderr_truncated,
        "base_commit": base_commit,
        "diff_bytes": diff.map(|d| d.bytes),
        "diff_truncated": diff.map(|d| d.truncated),
        "outputs": outputs,
        "sandbox": report.sandbox,
    });
    let Json::Object(extra) = extra else {
        return steps.end(outcome, Map::new());
    };
    steps.end(outcome, extra)
}

/// What the program is given.
struct Program<'a> {
    task_json: Vec<u8>,
    env: Vec<(String, String)>,
    budget: &'a Budget,
    seconds: u64,
    allow_network: bool,
    allow_secrets: bool,
}

struct Steps {
    trace: TraceFolder,
    unwritten: Vec<String>,
}

impl Steps {
    fn note(&mut self, kind: &str, fields: Json) {
        if let Err(error) = self.trace.event(kind, fields) {
            crate::metrics::trace_write_failed();
            self.unwritten.push(format!("event {kind}: {error}"));
        }
    }

    fn end(self, outcome: Outcome, mut extra: Map<String, Json>) -> (Outcome, Json, TraceFolder) {
        extra.insert("trace_write_failures".into(), json!(self.unwritten));
        (outcome, Json::Object(extra), self.trace)
    }

    /// A fresh workspace (with the checkout when there is a git base), owned
    /// by the uid the program runs as.
    async fn prepare(
        &mut self,
        context: &RunnerContext,
        command: &CommandConfig,
        task: &pb::Task,
        name: &str,
        budget: &Budget,
    ) -> Result<(PathBuf, Option<Workspace>), Outcome> {
        let target = task.target.clone().unwrap_or_default();
        let owner = executor::sandbox::workspace_owner(&command.sandbox);
        let git = context
            .git_base
            .as_deref()
            .map(|base| (base, target.repo.as_str(), target.r#ref.as_str()));
        match workspace::fresh(&context.workspace_root, name, git, owner, budget).await {
            Ok((dir, checkout)) => {
                let base_commit = checkout.as_ref().map(|w| w.base_commit.clone());
                self.note(
                    "workspace_ready",
                    json!({ "dir": dir, "base_commit": base_commit }),
                );
                Ok((dir, checkout))
            }
            Err(error) => {
                self.note("workspace_failed", json!({ "error": error.to_string() }));
                Err(stopped_by(&error).unwrap_or_else(|| Outcome::Failed {
                    code: task_error::WORKSPACE_FAILED.into(),
                    message: format!(
                        "could not prepare the workspace for {}@{}: {error}",
                        target.repo, target.r#ref
                    ),
                }))
            }
        }
    }

    /// The program, with stdout and stderr going to files the worker made.
    async fn run_program(
        &mut self,
        command: &CommandConfig,
        dir: &Path,
        program: Program<'_>,
    ) -> Result<CommandReport, Outcome> {
        let files = self
            .trace
            .create_file(trace::STDOUT_FILE)
            .and_then(|out| Ok((out, self.trace.create_file(trace::STDERR_FILE)?)));
        let (stdout, stderr) = match files {
            Ok(files) => files,
            Err(error) => {
                crate::metrics::trace_write_failed();
                self.note("trace_write_failed", json!({ "error": error.to_string() }));
                return Err(Outcome::Failed {
                    code: task_error::EXECUTOR_ERROR.into(),
                    message: format!("the worker could not open the trace's output files: {error}"),
                });
            }
        };
        let left = program
            .budget
            .deadline
            .map_or(Duration::from_secs(program.seconds), |deadline| {
                deadline.saturating_duration_since(Instant::now())
            });
        let run = CommandRun {
            task_json: program.task_json,
            task_env: program.env,
            workspace: dir.to_path_buf(),
            stdout,
            stderr,
            time_budget: left,
            allow_network: program.allow_network,
            allow_secrets: program.allow_secrets,
            cancel: program.budget.cancel.clone(),
        };
        self.note(
            "started",
            json!({ "program": command.program, "time_budget_seconds": program.seconds }),
        );
        let report = executor::command::run(command, run).await;
        self.note(
            "exited",
            json!({ "end": report.end, "tree_dead": report.tree_dead }),
        );
        Ok(report)
    }

    /// diff.patch, capped, under the attempt's deadline; a stop (deadline,
    /// cancel) replaces a completed outcome.
    async fn collect_diff(
        &mut self,
        checkout: &Workspace,
        command: &CommandConfig,
        budget: &Budget,
    ) -> (Option<DiffCapture>, Option<Outcome>) {
        let captured = match self.trace.create_file(trace::DIFF_FILE) {
            Ok(file) => {
                workspace::capture_diff(checkout, file, command.output_limit_bytes, budget).await
            }
            Err(error) => Err(WorkspaceError::Io {
                context: "cannot create diff.patch".into(),
                source: error,
            }),
        };
        match captured {
            Ok(captured) => (Some(captured), None),
            Err(error) => {
                self.note("diff_failed", json!({ "error": error.to_string() }));
                (None, stopped_by(&error))
            }
        }
    }

    async fn copy_outputs(&mut self, dir: &Path, limit: u64) -> Option<OutputsRecord> {
        let from = dir.to_path_buf();
        let copied = match self.trace.outputs() {
            Ok(target) => tokio::task::spawn_blocking(move || outputs::copy(&from, &target, limit))
                .await
                .map_err(std::io::Error::other)
                .and_then(|copied| copied),
            Err(error) => Err(error),
        };
        match copied {
            Ok(record) => Some(record),
            Err(error) => {
                self.note("outputs_failed", json!({ "error": error.to_string() }));
                None
            }
        }
    }
}

async fn remove(dir: &Path, task_id: Uuid) {
    if let Err(error) = workspace::remove_dir(dir).await {
        warn!(%task_id, %error, "workspace not removed");
    }
}

/// The outcome a git step's deadline or cancel stands for.
fn stopped_by(error: &WorkspaceError) -> Option<Outcome> {
    match error {
        WorkspaceError::DeadlineExceeded(_) => Some(timed_out()),
        WorkspaceError::Cancelled(_) => Some(Outcome::Cancelled),
        _ => None,
    }
}

fn timed_out() -> Outcome {
    Outcome::Failed {
        code: task_error::TIME_BUDGET_EXCEEDED.into(),
        message: "the time budget ran out; every process of the program was killed".into(),
    }
}

fn outcome_of(report: &CommandReport, diff_bytes: Option<u64>) -> Outcome {
    let tail = report.stderr_tail.trim_end();
    let failed = |code: &str, message: String| Outcome::Failed {
        code: code.to_string(),
        message,
    };
    match &report.end {
        CommandEnd::Exited { code: 0 } => {
            let mut result = Map::new();
            result.insert("executor".into(), Json::from("command"));
            result.insert("exit_code".into(), Json::from(0));
            result.insert("duration_ms".into(), Json::from(report.duration_ms));
            result.insert("stdout_bytes".into(), Json::from(report.stdout_bytes));
            if let Some(bytes) = diff_bytes {
                result.insert("diff_bytes".into(), Json::from(bytes));
            }
            Outcome::Completed { result }
        }
        CommandEnd::Exited { code } => failed(
            task_error::EXIT_STATUS,
            format!("the program exited with status {code}: {tail}"),
        ),
        CommandEnd::Signaled { signal } => failed(
            task_error::EXIT_STATUS,
            format!("the program was killed by signal {signal}: {tail}"),
        ),
        CommandEnd::TimedOut => timed_out(),
        CommandEnd::Cancelled => Outcome::Cancelled,
        CommandEnd::SandboxUnavailable { reason } => failed(
            task_error::SANDBOX_UNAVAILABLE,
            format!("the sandbox could not be set up, so the program was not run: {reason}"),
        ),
        CommandEnd::SpawnFailed { reason } => failed(
            task_error::EXECUTOR_ERROR,
            format!("the program could not be started: {reason}"),
        ),
    }
}
