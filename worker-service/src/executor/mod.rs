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
pub async fn reap_stale_sandboxes(sandbox: &SandboxConfig) -> usize {
    init::reap_orphaned() + cgroup::reap_stale(&sandbox.cgroup_root, Duration::from_secs(5)).await
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

/// Whether a task's limits must be held by a cgroup for the task as a whole
/// (`JCT_SANDBOX_CGROUP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// The memory and processes limits are held by a cgroup per task; where the
    /// host delegates no such controller the task fails with SANDBOX_UNAVAILABLE
    /// naming it.
    Required,
    /// The operator's opt-out, for hosts that delegate no cgroup: per-process
    /// rlimits stand in where a controller is missing (RLIMIT_AS per process,
    /// RLIMIT_NPROC per uid, still refused for root), recorded in every manifest.
    Optional,
}

/// Operator limits on the executed program's whole process tree. `None` =
/// unlimited (the worker's configuration always sets the first three).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResourceLimits {
    /// Memory of the whole task (a cgroup; RLIMIT_AS per process where the host
    /// delegates no memory cgroup and the operator accepts it), in MiB.
    pub memory_mb: Option<u64>,
    /// Processes of the whole task (a pids cgroup; RLIMIT_NPROC where none and
    /// the operator accepts it).
    pub processes: Option<u64>,
    /// CPU of the whole task in thousandths of a CPU (a cgroup CPU quota where
    /// delegated), and per process the CPU time the budget allows at that rate
    /// (RLIMIT_CPU, always).
    pub cpu_millis: Option<u64>,
    /// Largest file the program may write (RLIMIT_FSIZE), in MiB.
    pub file_size_mb: Option<u64>,
}

/// `JCT_LIMIT_CPUS` ("1", "0.5", "2.25") in thousandths of a CPU; at least
/// 0.01 (the kernel's smallest quota is 1 ms per 100 ms period).
pub fn parse_cpus(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a number of CPUs such as 1, 0.5 or 2");
    let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if whole.is_empty() && fraction.is_empty()
        || fraction.len() > 3
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let fraction: u64 = format!("{fraction:0<3}").parse().map_err(|_| bad())?;
    let millis = whole
        .checked_mul(1000)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(bad)?;
    if millis < 10 {
        return Err(format!("{text:?}: at least 0.01 CPU"));
    }
    Ok(millis)
}

/// Thousandths of a CPU as the operator writes them ("1", "0.5").
pub fn cpus_text(millis: u64) -> String {
    let (whole, fraction) = (millis / 1000, millis % 1000);
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:03}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
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
    /// Whether the limits must be held by a task cgroup (`JCT_SANDBOX_CGROUP`).
    pub cgroup: CgroupMode,
    /// Where the cgroup filesystem is mounted (`JCT_CGROUP_ROOT`).
    pub cgroup_root: PathBuf,
}

/// Where cgroup filesystems are mounted on Linux.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            mode: SandboxMode::Required,
            uid: 65534,
            readonly_paths: Vec::new(),
            allow_network: false,
            allow_secrets: false,
            seccomp: SeccompMode::Required,
            cgroup: CgroupMode::Required,
            cgroup_root: PathBuf::from(DEFAULT_CGROUP_ROOT),
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
    /// How CPU was bounded (a cgroup quota and RLIMIT_CPU, or RLIMIT_CPU alone).
    pub cpu: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_parse_and_print() {
        for (text, millis) in [
            ("1", 1000),
            ("0.5", 500),
            (".25", 250),
            ("2.125", 2125),
            ("4.", 4000),
        ] {
            assert_eq!(parse_cpus(text), Ok(millis), "{text}");
        }
        for bad in [
            "",
            ".",
            "-1",
            "1e3",
            "0.0001",
            "0",
            "0.005",
            "1,5",
            "99999999999999999999",
        ] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
        assert_eq!(cpus_text(1000), "1");
        assert_eq!(cpus_text(500), "0.5");
        assert_eq!(cpus_text(2125), "2.125");
        assert_eq!(cpus_text(10), "0.01");
    }
}
