//! Executors: what running a task means. `record` runs no code and describes what
//! would have run; `command` runs the operator's program in a sandbox.

mod bwrap;
mod capture;
mod cgroup;
pub mod command;
mod init;
pub mod record;
pub mod sandbox;
mod seccomp;
mod spawner;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value as Json};
use tokio_util::sync::CancellationToken;

/// Kills what a previous incarnation of a worker on this host left: sandboxes
/// whose init it could not see armed (see [`init`]) and its per-task cgroups
/// (where the host delegates cgroups). Returns how many it found. Called once
/// at start, before any task runs.
pub async fn reap_stale_sandboxes() -> usize {
    init::reap_orphaned() + cgroup::reap_stale(Duration::from_secs(5)).await
}

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

/// Whether the program runs in the sandbox (`JCT_SANDBOX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Every program runs under bubblewrap; where a protection cannot be set up the
    /// task fails with SANDBOX_UNAVAILABLE naming it.
    Required,
    /// The operator's explicit opt-out: the program runs as a plain child of the
    /// worker (its own process group, the environment allowlist, rlimits). Every
    /// manifest records it.
    Off,
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

/// Whether the sandbox installs its system-call filter (`JCT_SANDBOX_SECCOMP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// Every sandboxed program runs under the filter; where it cannot be built
    /// the task fails with SANDBOX_UNAVAILABLE.
    Required,
    /// The operator's opt-out; every manifest records it.
    Off,
}

/// Operator limits on the executed program's whole process tree. `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResourceLimits {
    /// Memory of the whole task (a cgroup; RLIMIT_AS per process where the host
    /// delegates no memory cgroup), in MiB.
    pub memory_mb: Option<u64>,
    /// Processes of the whole task (a pids cgroup; RLIMIT_NPROC where none).
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
    pub sandbox: SandboxConfig,
}

/// The operator's sandbox settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    /// The uid (and gid) bubblewrap runs as when the worker is root
    /// (`JCT_SANDBOX_UID`), so the program has no root at all.
    pub uid: u32,
    /// Host paths the program may read besides the system directories
    /// (`JCT_SANDBOX_READONLY_PATHS`).
    pub readonly_paths: Vec<PathBuf>,
    /// Whether this worker runs tasks that ask for network (`JCT_SANDBOX_ALLOW_NETWORK`).
    pub allow_network: bool,
    /// The system-call filter (`JCT_SANDBOX_SECCOMP`).
    pub seccomp: SeccompMode,
    /// Whether this worker runs tasks that ask for secrets (`JCT_SANDBOX_ALLOW_SECRETS`).
    pub allow_secrets: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            mode: SandboxMode::Required,
            uid: 65534,
            readonly_paths: Vec::new(),
            allow_network: false,
            allow_secrets: false,
            seccomp: SeccompMode::Required,
        }
    }
}

/// One run of the program for one task attempt.
#[derive(Debug)]
pub struct CommandRun {
    /// The task as JSON, written to the program's stdin.
    pub task_json: Vec<u8>,
    /// Variables the program gets besides PATH, HOME and LANG: JCT_TASK_ID,
    /// JCT_TASK_ATTEMPT, JCT_WORKSPACE.
    pub task_env: Vec<(String, String)>,
    /// Working directory (the task's workspace).
    pub workspace: PathBuf,
    /// Where stdout and stderr go, opened by the worker in the trace folder
    /// (the program never gets a path into it).
    pub stdout: std::fs::File,
    pub stderr: std::fs::File,
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

/// What the sandbox enforced, for the manifest: exactly the protections that
/// applied to this run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SandboxFacts {
    /// "bubblewrap" or "off (operator: JCT_SANDBOX=off)".
    pub mode: String,
    /// e.g. "isolated (network namespace, loopback only)", "off (operator)",
    /// "allowed (task)".
    pub network: String,
    /// e.g. "allowlist (PATH, HOME, LANG, JCT_*)" or "inherited (allow_secrets)".
    pub environment: String,
    /// What of the host's filesystem the program saw.
    pub filesystem: String,
    /// Who the program ran as.
    pub user: String,
    /// How the process count was bounded ("cgroup v1 pids.max", "RLIMIT_NPROC", "unbounded").
    pub processes: String,
    /// How memory was bounded.
    pub memory: String,
    /// How the whole process tree was killed and proven dead.
    pub process_tree: String,
    /// Which system calls were filtered (seccomp), or that none were.
    pub syscalls: String,
    pub limits: ResourceLimits,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommandReport {
    pub end: CommandEnd,
    /// Every process of the program is known to be gone (the trace may be sealed).
    pub tree_dead: bool,
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
