//! Executors: what running a task means. `record` runs no code and describes what
//! would have run; `command` runs the operator's program in a sandbox.

pub mod command;
pub mod record;
pub mod sandbox;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value as Json};
use tokio_util::sync::CancellationToken;

/// Which executor the worker uses (`JCT_EXECUTOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    Record,
    Command,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Record => "record",
            ExecutorKind::Command => "command",
        }
    }
}

/// Whether `allow_network = false` must be enforced with a network namespace
/// (`JCT_NETWORK_ISOLATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkIsolation {
    /// Tasks without network access run in a fresh network namespace; if one
    /// cannot be made the task fails with SANDBOX_UNAVAILABLE.
    Required,
    /// The operator turned isolation off (e.g. a pod without CAP_SYS_ADMIN, where a
    /// NetworkPolicy confines the worker instead); every trace records it.
    Off,
}

/// Operator limits on the executed program's whole process tree. `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResourceLimits {
    /// Address space per process (RLIMIT_AS), in MiB.
    pub memory_mb: Option<u64>,
    /// Processes of the executing user (RLIMIT_NPROC).
    pub processes: Option<u64>,
    /// Largest file the program may write (RLIMIT_FSIZE), in MiB.
    pub file_size_mb: Option<u64>,
}

/// How the `command` executor runs programs; fixed for the worker's lifetime.
#[derive(Debug, Clone)]
pub struct CommandConfig {
    /// Program and arguments (`JCT_EXECUTOR_COMMAND`, split like a shell would).
    pub program: Vec<String>,
    pub network_isolation: NetworkIsolation,
    pub limits: ResourceLimits,
    /// Bytes of stdout and of stderr kept in the trace; the rest is drained and dropped.
    pub output_limit_bytes: u64,
}

/// One run of the program for one task attempt.
#[derive(Debug, Clone)]
pub struct CommandRun {
    /// The task as JSON, written to the program's stdin.
    pub task_json: Vec<u8>,
    /// Variables the program gets besides PATH, HOME and LANG: JCT_TASK_ID,
    /// JCT_TASK_ATTEMPT, JCT_TRACE_DIR, JCT_WORKSPACE.
    pub task_env: Vec<(String, String)>,
    /// Working directory (the task's workspace).
    pub workspace: PathBuf,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    pub time_budget: Duration,
    pub allow_network: bool,
    pub allow_secrets: bool,
    pub cancel: CancellationToken,
}

/// How the program ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandEnd {
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
    /// The time budget ran out; the process group was killed.
    TimedOut,
    /// The task was cancelled; the process group was killed.
    Cancelled,
    /// The sandbox could not be set up; the program did not run.
    SandboxUnavailable {
        reason: String,
    },
    /// The program could not be started (not found, not executable, …).
    SpawnFailed {
        reason: String,
    },
}

/// What the sandbox enforced, for the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SandboxFacts {
    /// e.g. "isolated (network namespace, loopback only)", "off (operator)",
    /// "allowed (task)".
    pub network: String,
    /// e.g. "allowlist (PATH, HOME, LANG, JCT_*)" or "inherited (allow_secrets)".
    pub environment: String,
    pub limits: ResourceLimits,
    pub process_group: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommandReport {
    pub end: CommandEnd,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The last few KiB of stderr (lossy UTF-8), for the task's error message.
    pub stderr_tail: String,
    pub sandbox: SandboxFacts,
    pub duration_ms: u64,
}

/// The outcome an executor reports for a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed { result: Map<String, Json> },
    Failed { code: String, message: String },
    Cancelled,
}
