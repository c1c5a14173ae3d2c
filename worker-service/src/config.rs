//! Configuration: environment variables (the contract's names) mirrored by flags;
//! `worker-service --help` explains each.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::executor::{
    CgroupMode, CommandConfig, ExecutorKind, NetworkIsolation, ResourceLimits, SandboxConfig,
    SandboxMode, SeccompMode, parse_cpus,
};
use crate::intake::{IntakeLink, LinkError, TlsFiles};
use crate::telemetry::LogFormat;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "worker-service",
    version,
    about = "JCT worker: receives tasks from the intake over a gRPC stream, runs them under \
             their constraints and writes a trace folder per task"
)]
pub struct WorkerConfig {
    /// Where the intake is.
    #[arg(long, env = "JCT_INTAKE_URL", default_value = "http://127.0.0.1:50051")]
    pub intake_url: String,

    /// File holding this worker's bearer token for the intake (one line). Read
    /// at every attach, so a rotated token needs no restart. Unset: no token.
    #[arg(long, env = "JCT_WORKER_TOKEN_FILE")]
    pub worker_token_file: Option<PathBuf>,

    /// PEM CA certificate(s) that must have signed the intake's certificate, for
    /// an `https://` JCT_INTAKE_URL. Unset: the system's trusted roots.
    #[arg(long, env = "JCT_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,

    /// PEM certificate chain this worker presents to the intake (mutual TLS).
    #[arg(long, env = "JCT_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of JCT_TLS_CERT_FILE.
    #[arg(long, env = "JCT_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// Root of the trace folders: one per task, `<root>/<task_id>/`.
    #[arg(long, env = "JCT_TRACE_ROOT", default_value = "./traces")]
    pub trace_root: PathBuf,

    /// `record` runs no code and records what would run; `command` runs JCT_EXECUTOR_COMMAND.
    #[arg(long, env = "JCT_EXECUTOR", value_enum, default_value = "record")]
    pub executor: ExecutorKind,

    /// Program and arguments the `command` executor runs per task (split like a shell).
    /// The task arrives as JSON on stdin; JCT_TASK_ID, JCT_TASK_ATTEMPT and
    /// JCT_WORKSPACE are in its environment; it runs in the workspace.
    #[arg(long, env = "JCT_EXECUTOR_COMMAND")]
    pub executor_command: Option<String>,

    /// This worker's id; unique among workers. Defaults to the host name and pid.
    #[arg(long, env = "JCT_WORKER_ID", value_parser = parse_worker_id)]
    pub worker_id: Option<String>,

    /// Tasks run at once.
    #[arg(long, env = "JCT_WORKER_CAPACITY", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub capacity: u32,

    /// After SIGTERM: how long running tasks may finish before they are stopped and
    /// handed back to the queue, in seconds.
    #[arg(long, env = "JCT_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,

    /// Directory of per-task workspaces (removed after each task).
    #[arg(long, env = "JCT_WORKSPACE_ROOT")]
    pub workspace_root: Option<PathBuf>,

    /// Where repositories are fetched from: a directory of bare repositories
    /// (`<base>/<owner>/<name>.git`) or an https base. Unset: empty workspaces.
    #[arg(long, env = "JCT_GIT_BASE")]
    pub git_base: Option<String>,

    /// `required`: tasks without network access run in a fresh network namespace,
    /// or fail with SANDBOX_UNAVAILABLE. `off`: no namespace (recorded in every trace).
    #[arg(
        long,
        env = "JCT_NETWORK_ISOLATION",
        value_enum,
        default_value = "required"
    )]
    pub network_isolation: NetworkIsolation,

    /// `required`: every program runs under bubblewrap, or its task fails with
    /// SANDBOX_UNAVAILABLE naming the missing protection. `off`: the operator's
    /// opt-out (a plain child process), recorded in every manifest.
    #[arg(long, env = "JCT_SANDBOX", value_enum, default_value = "required")]
    pub sandbox: SandboxMode,

    /// `required`: the sandbox denies kernel interfaces a task has no use for
    /// (a seccomp filter: TIOCSTI, keyrings, bpf, perf, userfaultfd, io_uring,
    /// kexec, modules, syslog), or the task fails with SANDBOX_UNAVAILABLE.
    /// `off`: the operator's opt-out, recorded in every manifest.
    #[arg(
        long,
        env = "JCT_SANDBOX_SECCOMP",
        value_enum,
        default_value = "required"
    )]
    pub sandbox_seccomp: SeccompMode,

    /// When the worker runs as root, the uid (and gid) the sandbox runs as.
    #[arg(long, env = "JCT_SANDBOX_UID", default_value_t = 65534,
          value_parser = clap::value_parser!(u32).range(1..4_294_967_295))]
    pub sandbox_uid: u32,

    /// Colon-separated host paths the program may read besides the system directories.
    #[arg(long, env = "JCT_SANDBOX_READONLY_PATHS", default_value = "")]
    pub sandbox_readonly_paths: String,

    /// Run tasks that ask for network access (the intake must allow them too).
    #[arg(long, env = "JCT_SANDBOX_ALLOW_NETWORK", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub sandbox_allow_network: bool,

    /// Run tasks that ask for secrets, i.e. the worker's environment (the intake
    /// must allow them too).
    #[arg(long, env = "JCT_SANDBOX_ALLOW_SECRETS", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub sandbox_allow_secrets: bool,

    /// `required`: a task's memory and processes are bounded as a whole by a
    /// cgroup per task, or the task fails with SANDBOX_UNAVAILABLE naming the
    /// controller this host does not delegate. `optional`: the operator's opt-out
    /// for such hosts: per-process rlimits stand in (RLIMIT_AS per process,
    /// RLIMIT_NPROC per uid, still refused for root), recorded in every manifest.
    #[arg(
        long,
        env = "JCT_SANDBOX_CGROUP",
        value_enum,
        default_value = "required"
    )]
    pub sandbox_cgroup: CgroupMode,

    /// Where the cgroup filesystem is mounted (v2, or the v1 hierarchies below it).
    #[arg(long, env = "JCT_CGROUP_ROOT", default_value = crate::executor::DEFAULT_CGROUP_ROOT)]
    pub cgroup_root: PathBuf,

    /// Memory of a task as a whole, in MiB. 1024 because the shipped worker pod
    /// allows 4 GiB for its 4 tasks (JCT_WORKER_CAPACITY): one task cannot take
    /// the memory of the others. Raise it with the pod's limit.
    #[arg(long, env = "JCT_LIMIT_MEMORY_MB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_memory_mb: u64,

    /// Processes (and threads) of a task as a whole. 256 leaves a parallel build
    /// (make -j, cargo, a test runner) its room while a fork bomb stops there,
    /// far below the host's pid space even with every task at its limit.
    #[arg(long, env = "JCT_LIMIT_PROCESSES", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub limit_processes: u64,

    /// CPUs a task may use at once ("1", "0.5", "2"): a cgroup CPU quota where the
    /// host delegates the `cpu` controller, and always RLIMIT_CPU per process
    /// (the CPU time its time budget allows at that rate). 1 because the shipped
    /// worker pod has 2 CPUs for 4 tasks: a spinning task cannot starve the others.
    #[arg(long, env = "JCT_LIMIT_CPUS", default_value = "1", value_parser = parse_cpus)]
    pub limit_cpus: u64,

    /// Largest file the program may write, in MiB (unset: none).
    #[arg(long, env = "JCT_LIMIT_FILE_SIZE_MB")]
    pub limit_file_size_mb: Option<u64>,

    /// Operator cap on any task's time budget, in seconds: a task runs for the
    /// smaller of its own budget and this (unset: the task's budget).
    #[arg(long, env = "JCT_MAX_TASK_SECONDS")]
    pub max_task_seconds: Option<u64>,

    /// Bytes kept in the trace per task of each of stdout, stderr and the diff;
    /// the manifest records what was cut.
    #[arg(long, env = "JCT_OUTPUT_LIMIT_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub output_limit_bytes: u64,

    /// gRPC health endpoint of the worker (grpc.health.v1): "" is SERVING while the
    /// process runs; "jct.v1.Worker" while attached to the intake and not draining.
    /// Empty turns the endpoint off.
    #[arg(
        long,
        env = "JCT_WORKER_HEALTH_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    pub health_addr: String,

    /// Where to serve Prometheus metrics at `/metrics` (e.g. `0.0.0.0:9465`).
    /// Unset: no metrics listener.
    #[arg(long, env = "JCT_WORKER_METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// Log format: `text` or `json`. The filter is `RUST_LOG`.
    #[arg(long, env = "JCT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// The intake refuses a worker id that is not one clean line (it is written into
/// every log line about the worker); refuse it here too, at start, with the reason.
fn parse_worker_id(text: &str) -> Result<String, String> {
    if text.is_empty() || text.chars().count() > 256 {
        return Err("must be 1-256 characters".to_string());
    }
    match jct::text::line_problem(text) {
        Some(problem) => Err(problem.to_string()),
        None => Ok(text.to_string()),
    }
}

impl WorkerConfig {
    /// Every default, for tests and the local launcher.
    pub fn defaults() -> Self {
        WorkerConfig::parse_from(["worker-service"])
    }

    /// How to reach the intake; TLS files are read and checked here, at start.
    pub fn intake_link(&self) -> Result<IntakeLink, LinkError> {
        let files = TlsFiles {
            ca: self.tls_ca_file.clone(),
            cert: self.tls_cert_file.clone(),
            key: self.tls_key_file.clone(),
        };
        Ok(IntakeLink {
            url: self.intake_url.clone(),
            token_file: self.worker_token_file.clone(),
            tls: crate::intake::client_tls(&self.intake_url, &files)?,
        })
    }

    pub fn worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_string())
                .unwrap_or_else(|_| "worker".to_string());
            format!("{host}-{}", std::process::id())
        })
    }

    /// The health endpoint's address; `None` when JCT_WORKER_HEALTH_ADDR is empty.
    pub fn health_addr(&self) -> Result<Option<SocketAddr>, String> {
        let text = self.health_addr.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|error| format!("JCT_WORKER_HEALTH_ADDR {text:?}: {error}"))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    pub fn workspace_root(&self) -> PathBuf {
        self.workspace_root
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("jct-workspaces"))
    }

    /// The `command` executor's settings; an error names what is missing.
    pub fn command_config(&self) -> Result<CommandConfig, String> {
        let line = self
            .executor_command
            .as_deref()
            .filter(|line| !line.trim().is_empty())
            .ok_or("JCT_EXECUTOR=command needs JCT_EXECUTOR_COMMAND (the program to run)")?;
        let program =
            shell_words::split(line).map_err(|error| format!("JCT_EXECUTOR_COMMAND: {error}"))?;
        let mut readonly_paths = Vec::new();
        for path in self
            .sandbox_readonly_paths
            .split(':')
            .filter(|p| !p.is_empty())
        {
            let path = PathBuf::from(path);
            if !path.is_absolute() || !path.exists() {
                return Err(format!(
                    "JCT_SANDBOX_READONLY_PATHS: {} is not an existing absolute path",
                    path.display()
                ));
            }
            readonly_paths.push(path);
        }
        Ok(CommandConfig {
            sandbox: SandboxConfig {
                mode: self.sandbox,
                uid: self.sandbox_uid,
                readonly_paths,
                allow_network: self.sandbox_allow_network,
                allow_secrets: self.sandbox_allow_secrets,
                seccomp: self.sandbox_seccomp,
                cgroup: self.sandbox_cgroup,
                cgroup_root: self.cgroup_root.clone(),
            },
            program,
            network_isolation: self.network_isolation,
            limits: ResourceLimits {
                memory_mb: Some(self.limit_memory_mb),
                processes: Some(self.limit_processes),
                cpu_millis: Some(self.limit_cpus),
                file_size_mb: self.limit_file_size_mb,
            },
            output_limit_bytes: self.output_limit_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        WorkerConfig::command().debug_assert();
    }

    #[test]
    fn a_worker_id_that_forges_log_lines_is_refused_at_start() {
        for bad in ["w1\nINFO forged line", "w\0", "w\u{1b}[2J", "w\u{202E}", ""] {
            assert!(
                WorkerConfig::try_parse_from(["worker-service", "--worker-id", bad]).is_err(),
                "{bad:?}"
            );
        }
        let config = WorkerConfig::try_parse_from(["worker-service", "--worker-id", "pod-7.a_b"]);
        assert_eq!(
            config.map(|c| c.worker_id()).ok(),
            Some("pod-7.a_b".to_string())
        );
    }

    /// Every task is bounded unless the operator raises a limit.
    #[test]
    fn limits_have_production_defaults() {
        let mut config = WorkerConfig::defaults();
        config.executor_command = Some("true".into());
        let command = config.command_config().expect("command config");
        assert_eq!(command.limits.memory_mb, Some(1024));
        assert_eq!(command.limits.processes, Some(256));
        assert_eq!(command.limits.cpu_millis, Some(1000));
        assert_eq!(command.sandbox.cgroup, CgroupMode::Required);
        for (flag, value) in [
            ("--limit-memory-mb", "0"),
            ("--limit-processes", "0"),
            ("--limit-cpus", "0"),
        ] {
            assert!(
                WorkerConfig::try_parse_from(["worker-service", flag, value]).is_err(),
                "{flag} {value}"
            );
        }
        let raised = WorkerConfig::parse_from(["worker-service", "--limit-cpus", "2.5"]);
        assert_eq!(raised.limit_cpus, 2500);
    }

    #[test]
    fn command_lines_split_like_a_shell() {
        let mut config = WorkerConfig::parse_from(["worker-service", "--executor", "command"]);
        assert!(config.command_config().is_err());
        config.executor_command = Some("sh -c 'echo \"a b\"'".to_string());
        assert_eq!(
            config.command_config().map(|c| c.program),
            Ok(vec![
                "sh".to_string(),
                "-c".to_string(),
                "echo \"a b\"".to_string()
            ])
        );
    }
}
