//! The `command` executor: runs the operator's program once per task attempt,
//! under bubblewrap (see [`super::bwrap`]), with the task on stdin, bounded
//! output, a per-task cgroup for processes and memory, and the whole process
//! tree killed — and proven dead — at exit, budget, cancel or worker death.

use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::Child;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::capture::{self, Capture};
use super::cgroup::{Bounds, TaskCgroup};
use super::init::{self, InitView, InitWatch};
use super::sandbox::{self, ChildSetup};
use super::spawner;
use super::{
    CgroupMode, CommandConfig, CommandEnd, CommandReport, CommandRun, NetworkIsolation,
    ResourceLimits, SandboxFacts, SandboxMode, SeccompMode, bwrap, seccomp,
};

/// How long the pipes may still be drained after the program's tree is gone.
const IO_GRACE: Duration = Duration::from_secs(2);
/// How long a killed tree may take to be reaped and its cgroup to empty.
const REAP_GRACE: Duration = Duration::from_secs(5);
const DEFAULT_LANG: &str = "C.UTF-8";

const NETWORK_ISOLATED: &str = "isolated (network namespace, loopback only)";
const NETWORK_OFF: &str = "off (operator)";
const NETWORK_ALLOWED: &str = "allowed (task)";
const ENV_INHERITED: &str = "inherited (allow_secrets)";
const MODE_BWRAP: &str = "bubblewrap";
const MODE_OFF: &str = "off (operator: JCT_SANDBOX=off)";

/// Runs `config.program` for one task attempt. Never panics; every failure is a
/// [`CommandEnd`].
pub async fn run(config: &CommandConfig, run: CommandRun) -> CommandReport {
    let started = Instant::now();
    let mut facts = SandboxFacts {
        limits: config.limits,
        ..SandboxFacts::default()
    };
    let mut out = Capture::new(config.output_limit_bytes, false);
    let mut err = Capture::new(config.output_limit_bytes, true);
    let (end, tree_dead) = execute(config, run, &mut facts, started, &mut out, &mut err).await;
    CommandReport {
        end,
        tree_dead,
        stdout_bytes: out.seen,
        stderr_bytes: err.seen,
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        stderr_tail: err.tail_text(),
        sandbox: facts,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// The program as started: its process, and what proves its tree dead.
struct Started {
    child: Child,
    /// bubblewrap's init (pid 1 of the task's pid namespace) and the start gate.
    init: Option<InitWatch>,
    cgroup: Option<TaskCgroup>,
}

async fn execute(
    config: &CommandConfig,
    run: CommandRun,
    facts: &mut SandboxFacts,
    started: Instant,
    out: &mut Capture,
    err: &mut Capture,
) -> (CommandEnd, bool) {
    let policy = &config.sandbox;
    let share_net = run.allow_network || config.network_isolation == NetworkIsolation::Off;
    facts.network = if run.allow_network {
        NETWORK_ALLOWED
    } else if share_net {
        NETWORK_OFF
    } else {
        NETWORK_ISOLATED
    }
    .to_string();
    facts.environment = environment_fact(&run);
    // the worker's own policy, whatever the intake let through
    if run.allow_network && !policy.allow_network {
        return (refused("network access", "JCT_SANDBOX_ALLOW_NETWORK"), true);
    }
    if run.allow_secrets && !policy.allow_secrets {
        return (refused("secrets", "JCT_SANDBOX_ALLOW_SECRETS"), true);
    }
    let Some((name, args)) = config.program.split_first() else {
        return (
            spawn_failed("no program is configured (JCT_EXECUTOR_COMMAND is empty)"),
            true,
        );
    };
    let Some(program) = sandbox::resolve_program(name) else {
        return (
            spawn_failed(format!("cannot start {name}: not found")),
            true,
        );
    };
    if !tokio::fs::metadata(&run.workspace)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        let reason = format!(
            "the workspace {} is not a directory",
            run.workspace.display()
        );
        return (spawn_failed(reason), true);
    }
    if run.cancel.is_cancelled() {
        return (CommandEnd::Cancelled, true);
    }

    let spawned = match policy.mode {
        SandboxMode::Required => spawn_sandboxed(config, &run, &program, args, share_net, facts),
        SandboxMode::Off => spawn_plain(config, &run, &program, args, facts),
    };
    let started_program = match spawned {
        Ok(started_program) => started_program,
        Err(end) => return (end, true),
    };
    let sandboxed = policy.mode == SandboxMode::Required;
    supervise(started_program, run, sandboxed, started, out, err, facts).await
}

fn refused(what: &str, variable: &str) -> CommandEnd {
    CommandEnd::SandboxUnavailable {
        reason: format!(
            "the task asks for {what}, which this worker's configuration does not allow \
             ({variable}=false); the program was not run"
        ),
    }
}

fn unavailable(reason: impl Into<String>) -> CommandEnd {
    CommandEnd::SandboxUnavailable {
        reason: reason.into(),
    }
}

/// The environment the program gets: the allowlist, or the worker's own when
/// the task may have secrets (and the worker allows it).
fn environment(run: &CommandRun) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    if run.allow_secrets {
        let mut env: Vec<_> = std::env::vars_os().collect();
        env.extend(run.task_env.iter().map(|(k, v)| (k.into(), v.into())));
        return env;
    }
    let lang = std::env::var_os("LANG")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_LANG.into());
    let mut env = vec![
        ("PATH".into(), sandbox::worker_path()),
        ("HOME".into(), run.workspace.clone().into_os_string()),
        ("LANG".into(), lang),
    ];
    env.extend(run.task_env.iter().map(|(k, v)| (k.into(), v.into())));
    env
}

/// The limits' cgroup, refusing a limit no cgroup can hold unless the operator
/// accepts the per-process rlimit fallback (and refusing a process limit that
/// nothing could enforce for `uid`). CPU always gets RLIMIT_CPU per process: the
/// CPU time the budget allows at the limit's rate.
fn bound(
    config: &CommandConfig,
    uid: u32,
    time_budget: Duration,
    setup: &mut ChildSetup,
    facts: &mut SandboxFacts,
) -> Result<Option<TaskCgroup>, CommandEnd> {
    let limits = &config.limits;
    let optional = config.sandbox.cgroup == CgroupMode::Optional;
    let bounds = Bounds::for_limits(limits, &config.sandbox.cgroup_root)
        .map_err(|e| unavailable(format!("cannot create the task's cgroup: {e}")))?;
    facts.processes = "unbounded (no JCT_LIMIT_PROCESSES)".into();
    facts.memory = "unbounded (no JCT_LIMIT_MEMORY_MB)".into();
    facts.cpu = "unbounded (no JCT_LIMIT_CPUS)".into();
    if !optional {
        refuse_missing(&bounds, limits, facts)?;
    }
    if let Some(max) = limits.processes {
        if let Some(missing) = &bounds.processes_missing {
            if uid == 0 {
                return Err(unavailable(format!(
                    "JCT_LIMIT_PROCESSES cannot be enforced: {missing}, and the kernel \
                     ignores RLIMIT_NPROC for uid 0"
                )));
            }
            setup.processes_rlimit(max);
            facts.processes = format!(
                "RLIMIT_NPROC {max} (counts every process of uid {uid}; operator: \
                 JCT_SANDBOX_CGROUP=optional, {missing})"
            );
        } else if let Some(cgroup) = &bounds.cgroup {
            facts.processes = cgroup.describe_processes(max);
        }
    }
    if let Some(mb) = limits.memory_mb {
        if let Some(missing) = &bounds.memory_missing {
            setup.memory_rlimit(mb);
            facts.memory = format!(
                "RLIMIT_AS {mb} MiB per process, not the task as a whole (operator: \
                 JCT_SANDBOX_CGROUP=optional, {missing})"
            );
        } else if let Some(cgroup) = &bounds.cgroup {
            facts.memory = cgroup.describe_memory(mb);
        }
    }
    if let Some(millis) = limits.cpu_millis {
        let seconds = cpu_seconds(time_budget, millis);
        setup.cpu_rlimit(seconds);
        let floor = format!("RLIMIT_CPU {seconds} s per process");
        facts.cpu = match (&bounds.cpu_missing, &bounds.cgroup) {
            (Some(missing), _) => format!(
                "{floor} only, not the task as a whole ({missing}); the time budget bounds \
                 the rest"
            ),
            (None, Some(cgroup)) => format!("{}; {floor}", cgroup.describe_cpu(millis)),
            (None, None) => floor,
        };
    }
    if let Some(mb) = limits.file_size_mb {
        setup.file_size_rlimit(mb);
    }
    Ok(bounds.cgroup)
}

/// Fails closed (JCT_SANDBOX_CGROUP=required) when a processes or memory limit
/// has no cgroup to hold it for the task as a whole, naming each one missing
/// in the refusal and in the manifest.
fn refuse_missing(
    bounds: &Bounds,
    limits: &ResourceLimits,
    facts: &mut SandboxFacts,
) -> Result<(), CommandEnd> {
    let mut refused = Vec::new();
    if let (Some(_), Some(missing)) = (limits.processes, &bounds.processes_missing) {
        facts.processes = format!("refused: no pids cgroup ({missing})");
        refused.push(format!(
            "the processes bound (JCT_LIMIT_PROCESSES) needs a pids cgroup: {missing}"
        ));
    }
    if let (Some(_), Some(missing)) = (limits.memory_mb, &bounds.memory_missing) {
        facts.memory = format!("refused: no memory cgroup ({missing})");
        refused.push(format!(
            "the memory bound (JCT_LIMIT_MEMORY_MB) needs a memory cgroup: {missing}"
        ));
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(unavailable(format!(
        "{}; the program was not run (JCT_SANDBOX_CGROUP=optional accepts per-process \
         rlimits instead)",
        refused.join("; ")
    )))
}

/// The CPU time a process may use: its time budget at `millis` thousandths of a
/// CPU, rounded up, at least a second.
fn cpu_seconds(time_budget: Duration, millis: u64) -> u64 {
    let millis = u128::from(millis);
    let cpu_ms = time_budget.as_millis().saturating_mul(millis) / 1000;
    u64::try_from(cpu_ms.div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

fn spawn_sandboxed(
    config: &CommandConfig,
    run: &CommandRun,
    program: &Path,
    args: &[String],
    share_net: bool,
    facts: &mut SandboxFacts,
) -> Result<Started, CommandEnd> {
    let (uid, switch_to) = sandbox::program_uid(config.sandbox.uid);
    let bwrap = sandbox::bwrap_for(switch_to).map_err(unavailable)?;
    if switch_to.is_some() {
        sandbox::reachable_by(&run.workspace, uid).map_err(unavailable)?;
    }
    let mut setup = ChildSetup {
        switch_to,
        ..ChildSetup::default()
    };
    let cgroup = bound(config, uid, run.time_budget, &mut setup, facts)?;
    // bubblewrap joins the cgroup from outside while it builds the sandbox (see
    // `init::CgroupJoin`), not between fork and exec: a join may wait for an RCU
    // grace period, which would otherwise come before everything else
    let placement = cgroup
        .as_ref()
        .map(TaskCgroup::placement)
        .transpose()
        .map_err(|e| unavailable(format!("cannot open the task's cgroup: {e}")))?;
    let (info_read, info_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| unavailable(format!("cannot create a pipe: {e}")))?;
    setup.inherit.push(info_write.as_raw_fd());
    let filter = match config.sandbox.seccomp {
        SeccompMode::Required => {
            let fd = seccomp::memfd()
                .map_err(|e| unavailable(format!("cannot install the seccomp filter: {e}")))?;
            setup.inherit.push(fd.as_raw_fd());
            facts.syscalls = seccomp::DESCRIPTION.into();
            Some(fd)
        }
        SeccompMode::Off => {
            facts.syscalls = "unfiltered (operator: JCT_SANDBOX_SECCOMP=off)".into();
            None
        }
    };
    let plan = bwrap::Plan {
        share_net,
        workspace: &run.workspace,
        program,
        args,
        readonly: &config.sandbox.readonly_paths,
        info_fd: info_write.as_raw_fd(),
        seccomp_fd: filter.as_ref().map(AsRawFd::as_raw_fd),
    };
    let mut cmd = tokio::process::Command::new(&bwrap);
    cmd.args(bwrap::args(&plan))
        .env_clear()
        .envs(environment(run))
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    setup.install(cmd.as_std_mut());
    let child =
        spawner::spawn(cmd).map_err(|e| unavailable(format!("cannot start bubblewrap: {e}")))?;
    drop(info_write);
    let join = match placement {
        None => None,
        Some(cgroup) => {
            // dropping the child kills it: the gate never opened
            let bwrap = child
                .id()
                .and_then(|pid| i32::try_from(pid).ok())
                .ok_or_else(|| unavailable("bubblewrap exited before joining the task's cgroup"))?;
            Some(init::CgroupJoin { bwrap, cgroup })
        }
    };
    drop(filter);
    facts.mode = MODE_BWRAP.into();
    facts.filesystem = "system directories, the program and JCT_SANDBOX_READONLY_PATHS \
                        read-only; the workspace read-write; private /tmp, /proc and /dev"
        .into();
    facts.user = format!(
        "uid {uid}{}; no capabilities, no_new_privs, no nested user namespaces",
        if switch_to.is_some() {
            " (the worker is root)"
        } else {
            ""
        }
    );
    let init = Some(InitWatch::start(info_read, join));
    Ok(Started {
        child,
        init,
        cgroup,
    })
}

fn spawn_plain(
    config: &CommandConfig,
    run: &CommandRun,
    program: &Path,
    args: &[String],
    facts: &mut SandboxFacts,
) -> Result<Started, CommandEnd> {
    let uid = rustix::process::geteuid().as_raw();
    let mut setup = ChildSetup::default();
    let cgroup = bound(config, uid, run.time_budget, &mut setup, facts)?;
    if let Some(cgroup) = &cgroup {
        // no gate to hold a plain program: it joins before exec
        setup.cgroup_procs = cgroup.procs_fds();
    }
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(environment(run))
        .current_dir(&run.workspace)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    setup.install(cmd.as_std_mut());
    let child = spawner::spawn(cmd)
        .map_err(|e| spawn_failed(format!("cannot start {}: {e}", program.display())))?;
    facts.mode = MODE_OFF.into();
    if facts.network == NETWORK_ISOLATED {
        facts.network = "off (JCT_SANDBOX=off: the worker's network)".into();
    }
    facts.filesystem = "the worker's (JCT_SANDBOX=off)".into();
    facts.syscalls = "unfiltered (JCT_SANDBOX=off)".into();
    facts.user = format!("uid {uid}, the worker's capabilities (JCT_SANDBOX=off)");
    Ok(Started {
        child,
        init: None,
        cgroup,
    })
}

/// Feeds and drains the program, waits for its end (exit, budget, cancel), kills
/// and reaps its whole tree. Returns the end and whether the tree is proven dead.
async fn supervise(
    mut program: Started,
    run: CommandRun,
    sandboxed: bool,
    started: Instant,
    out: &mut Capture,
    err: &mut Capture,
    facts: &mut SandboxFacts,
) -> (CommandEnd, bool) {
    let stdin = program.child.stdin.take();
    let stdout = program.child.stdout.take();
    let stderr = program.child.stderr.take();
    let stdout_file = tokio::fs::File::from_std(run.stdout);
    let stderr_file = tokio::fs::File::from_std(run.stderr);
    let gate = program.init.as_ref().map(InitWatch::view);
    let gate_refusal = OnceLock::new();
    let mut io = Box::pin(async {
        tokio::join!(
            feed(stdin, run.task_json, gate, &gate_refusal),
            capture::drain(stdout, stdout_file, out),
            capture::drain(stderr, stderr_file, err),
        );
    });
    let deadline = started.checked_add(run.time_budget);
    let (ending, io_done) = {
        let waiter = wait_for_end(&mut program.child, deadline, &run.cancel);
        tokio::pin!(waiter);
        tokio::select! {
            end = &mut waiter => (end, false),
            () = &mut io => (waiter.await, true),
        }
    };
    let (mut end, mut dead) = match ending {
        Ending::Exited(status) => (exit_end(status, sandboxed), sandboxed),
        Ending::Failed(reason) => (spawn_failed(reason), false),
        Ending::Stop(end) => {
            crate::metrics::executor_killed(match end {
                CommandEnd::TimedOut => "time_budget",
                _ => "stopped",
            });
            let dead = kill_tree(&mut program).await;
            (end, dead && sandboxed)
        }
    };
    program.init = None;
    if !sandboxed && let Some(pid) = program.child.id() {
        // the plain program's group: what it left behind (setsid escapes it)
        kill_group(pid);
    }
    if let Some(cgroup) = program.cgroup.take() {
        let oom = cgroup.oom_killed();
        // nothing leaves its cgroup (the program cannot reach cgroupfs): an empty
        // one proves the tree gone
        dead = cgroup.remove(REAP_GRACE).await || dead;
        if oom {
            facts
                .memory
                .push_str("; the limit was hit: a process was killed");
        }
    }
    facts.process_tree = match (sandboxed, dead) {
        (true, true) => "pid namespace: every process killed with its init, proven reaped",
        (true, false) => "pid namespace: killed, not proven reaped in time",
        (false, true) => "cgroup: every process killed, proven gone",
        (false, false) => "process group only (JCT_SANDBOX=off): setsid escapes it",
    }
    .into();
    if !io_done && tokio::time::timeout(IO_GRACE, io.as_mut()).await.is_err() {
        tracing::warn!("output pipes still open after the program ended; abandoned");
    }
    drop(io);
    if let Some(reason) = gate_refusal.get()
        && matches!(end, CommandEnd::Exited { code } if code == init::GATE_CLOSED_EXIT)
    {
        end = unavailable(format!("{reason}; the program was not run"));
    }
    // bubblewrap's own failure (before the program ran) is a sandbox failure
    if sandboxed
        && matches!(end, CommandEnd::Exited { code: 1 })
        && err.head_text().starts_with("bwrap: ")
    {
        let head = err.head_text();
        end = unavailable(head.lines().next().unwrap_or_default().to_string());
    }
    (end, dead)
}

/// Writes the task to the program's stdin; in the sandbox, behind the gate
/// line, once the init is armed and the tree in the task's cgroup (see
/// [`super::init`]). If not, stdin is closed unopened (and `refused` says why):
/// the gate exits and the program never runs.
async fn feed(
    stdin: Option<tokio::process::ChildStdin>,
    task_json: Vec<u8>,
    gate: Option<InitView>,
    refused: &OnceLock<String>,
) {
    let input = match gate {
        None => task_json,
        Some(gate) => {
            if let Err(reason) = gate.opened().await {
                let _ = refused.set(reason);
                return;
            }
            [init::GATE_LINE, &task_json].concat()
        }
    };
    capture::feed(stdin, input).await;
}

enum Ending {
    Exited(ExitStatus),
    Failed(String),
    Stop(CommandEnd),
}

async fn wait_for_end(
    child: &mut Child,
    deadline: Option<Instant>,
    cancel: &CancellationToken,
) -> Ending {
    let budget = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = cancel.cancelled() => Ending::Stop(CommandEnd::Cancelled),
        () = budget => Ending::Stop(CommandEnd::TimedOut),
        status = child.wait() => match status {
            Ok(status) => Ending::Exited(status),
            Err(e) => Ending::Failed(format!("waiting for the program failed: {e}")),
        },
    }
}

/// Kills the whole tree: the pid namespace's init (the kernel then kills every
/// process in it, and bubblewrap exits once it has reaped the init), or the
/// process group of a plain program. Returns whether bubblewrap was reaped after
/// its init died, which proves the namespace empty.
async fn kill_tree(program: &mut Started) -> bool {
    let init = match program.init.as_mut() {
        Some(init) => init.pid(Duration::from_millis(500)).await,
        None => None,
    };
    let killed_init = init
        .and_then(rustix::process::Pid::from_raw)
        .is_some_and(|pid| {
            rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok()
        });
    if !killed_init && let Some(pid) = program.child.id() {
        kill_group(pid);
    }
    match tokio::time::timeout(REAP_GRACE, program.child.wait()).await {
        Ok(Ok(_)) => killed_init,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reaping the killed program failed");
            false
        }
        Err(_) => {
            tracing::warn!("the killed program did not exit in time");
            let _ = program.child.start_kill();
            false
        }
    }
}

fn kill_group(pid: u32) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .filter(|pid| *pid > 1)
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

/// bubblewrap exits with the program's status, or 128 + the signal that killed it.
fn exit_end(status: ExitStatus, sandboxed: bool) -> CommandEnd {
    match (status.code(), status.signal()) {
        (Some(code), _) if sandboxed && code > 128 && code < 128 + 65 => {
            CommandEnd::Signaled { signal: code - 128 }
        }
        (Some(code), _) => CommandEnd::Exited { code },
        (None, Some(signal)) => CommandEnd::Signaled { signal },
        (None, None) => CommandEnd::Exited { code: -1 },
    }
}

fn spawn_failed(reason: impl Into<String>) -> CommandEnd {
    CommandEnd::SpawnFailed {
        reason: reason.into(),
    }
}

fn environment_fact(run: &CommandRun) -> String {
    if run.allow_secrets {
        return ENV_INHERITED.to_string();
    }
    let mut names = vec!["PATH", "HOME", "LANG"];
    for (name, _) in &run.task_env {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    format!("allowlist ({})", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::SandboxConfig;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    struct Fixture {
        _dir: tempfile::TempDir,
        workspace: PathBuf,
        stdout: PathBuf,
        stderr: PathBuf,
    }

    impl Fixture {
        /// A workspace the sandbox uid can reach and own (as the worker makes it).
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
                .expect("chmod");
            let workspace = dir.path().join("workspace");
            std::fs::create_dir(&workspace).expect("workspace");
            if let Some(uid) = sandbox::workspace_owner(&SandboxConfig::default()) {
                std::os::unix::fs::lchown(&workspace, Some(uid), Some(uid)).expect("chown");
            }
            Fixture {
                stdout: dir.path().join("stdout.log"),
                stderr: dir.path().join("stderr.log"),
                workspace,
                _dir: dir,
            }
        }

        fn run(&self) -> CommandRun {
            CommandRun {
                task_json: br#"{"id":"t1"}"#.to_vec(),
                task_env: vec![
                    ("JCT_TASK_ID".into(), "t1".into()),
                    ("JCT_TASK_ATTEMPT".into(), "1".into()),
                ],
                workspace: self.workspace.clone(),
                stdout: std::fs::File::create(&self.stdout).expect("stdout"),
                stderr: std::fs::File::create(&self.stderr).expect("stderr"),
                time_budget: Duration::from_secs(30),
                allow_network: false,
                allow_secrets: false,
                cancel: CancellationToken::new(),
            }
        }

        fn stdout(&self) -> String {
            std::fs::read_to_string(&self.stdout).expect("stdout")
        }
    }

    fn config(program: &[&str]) -> CommandConfig {
        CommandConfig {
            program: program.iter().map(|s| s.to_string()).collect(),
            network_isolation: NetworkIsolation::Required,
            limits: ResourceLimits::default(),
            output_limit_bytes: 1024 * 1024,
            sandbox: SandboxConfig::default(),
        }
    }

    fn sh(script: &str) -> CommandConfig {
        config(&["sh", "-c", script])
    }

    /// Whether a process with `marker` in its command line is alive on the host.
    fn alive_with(marker: &str) -> bool {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let pid = e.file_name();
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let zombie = stat
                    .rfind(')')
                    .and_then(|i| stat.get(i + 2..i + 3))
                    .is_some_and(|s| s == "Z");
                pid.to_string_lossy().parse::<u32>().is_ok()
                    && !zombie
                    && std::fs::read(e.path().join("cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
            })
    }

    fn marker() -> String {
        format!("3600.{:09}", rand::random::<u32>() % 1_000_000_000)
    }

    #[tokio::test]
    async fn success_echoes_stdin() {
        let fx = Fixture::new();
        let report = super::run(&sh("cat; echo done"), fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 }, "{report:?}");
        assert!(report.tree_dead);
        assert_eq!(fx.stdout(), "{\"id\":\"t1\"}done\n");
        assert_eq!(report.stdout_bytes, 16);
        assert!(!report.stdout_truncated);
        assert_eq!(report.stderr_tail, "");
        assert_eq!(report.sandbox.mode, MODE_BWRAP);
        assert_eq!(report.sandbox.network, NETWORK_ISOLATED);
        assert_eq!(
            report.sandbox.environment,
            "allowlist (PATH, HOME, LANG, JCT_TASK_ID, JCT_TASK_ATTEMPT)"
        );
    }

    #[tokio::test]
    async fn runs_in_the_workspace() {
        let fx = Fixture::new();
        let report = super::run(&config(&["pwd"]), fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 }, "{report:?}");
        assert_eq!(
            fx.stdout().trim_end(),
            fx.workspace.to_str().expect("utf-8")
        );
    }

    #[tokio::test]
    async fn nonzero_exit_keeps_stderr_tail() {
        let fx = Fixture::new();
        let script = "i=0; while [ $i -lt 2000 ]; do echo \"line $i\" >&2; i=$((i+1)); done; \
                      echo 'it went wrong' >&2; exit 3";
        let report = super::run(&sh(script), fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 3 });
        assert!(report.stderr_tail.ends_with("it went wrong\n"));
        assert!(report.stderr_tail.len() <= capture::STDERR_TAIL_BYTES);
        assert!(!report.stderr_tail.contains("line 0\n"));
        let stderr = std::fs::read(&fx.stderr).expect("stderr");
        assert_eq!(report.stderr_bytes, stderr.len() as u64);
    }

    #[tokio::test]
    async fn killed_by_signal() {
        let fx = Fixture::new();
        let report = super::run(&sh("kill -TERM $$"), fx.run()).await;
        assert_eq!(report.end, CommandEnd::Signaled { signal: 15 });
    }

    #[tokio::test]
    async fn the_time_budget_kills_the_whole_tree() {
        let fx = Fixture::new();
        let mut run = fx.run();
        run.time_budget = Duration::from_secs(1);
        let mark = marker();
        let report = super::run(&sh(&format!("setsid -f sleep {mark}; sleep {mark}")), run).await;
        assert_eq!(report.end, CommandEnd::TimedOut);
        assert!(report.tree_dead);
        assert!(!alive_with(&mark));
    }

    #[tokio::test]
    async fn cancellation_kills_the_whole_tree() {
        let fx = Fixture::new();
        let run = fx.run();
        let cancel = run.cancel.clone();
        let mark = marker();
        let watched = mark.clone();
        tokio::spawn(async move {
            while !alive_with(&watched) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cancel.cancel();
        });
        let report = super::run(&sh(&format!("setsid -f sleep {mark}; sleep {mark}")), run).await;
        assert_eq!(report.end, CommandEnd::Cancelled);
        assert!(report.tree_dead);
        assert!(!alive_with(&mark));
    }

    /// The parent-death signal follows the thread that forked: a program started
    /// from a thread that then ends (here a blocking-pool thread, gone after
    /// 10 ms idle) must keep running until it exits by itself.
    #[test]
    fn a_program_outlives_the_thread_that_started_it() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_keep_alive(Duration::from_millis(10))
            .enable_all()
            .build()
            .expect("runtime");
        let fx = Fixture::new();
        let run = fx.run();
        runtime.block_on(async move {
            let started = tokio::task::spawn_blocking(move || {
                let cfg = sh("sleep 1; echo survived");
                let program = sandbox::resolve_program("sh").expect("sh");
                let mut facts = SandboxFacts::default();
                spawn_sandboxed(&cfg, &run, &program, &cfg.program[1..], false, &mut facts)
                    .map_err(|end| format!("{end:?}"))
            })
            .await
            .expect("join");
            let mut started = started.expect("started");
            let gate = started.init.as_ref().expect("init").view();
            assert_eq!(gate.opened().await, Ok(()), "the init armed");
            let mut stdin = started.child.stdin.take().expect("stdin");
            tokio::io::AsyncWriteExt::write_all(&mut stdin, init::GATE_LINE)
                .await
                .expect("gate");
            let status = started.child.wait().await.expect("wait");
            assert!(status.success(), "{status:?}");
        });
    }

    #[tokio::test]
    async fn already_cancelled_does_not_run() {
        let fx = Fixture::new();
        let run = fx.run();
        run.cancel.cancel();
        let report = super::run(&sh("touch ran"), run).await;
        assert_eq!(report.end, CommandEnd::Cancelled);
        assert!(!fx.workspace.join("ran").exists());
    }

    #[tokio::test]
    async fn leftovers_are_killed_after_a_normal_exit() {
        let fx = Fixture::new();
        let mark = marker();
        // the detached sleep keeps stdout open; the run must not wait for it
        let report = super::run(&sh(&format!("setsid -f sleep {mark}")), fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 });
        assert!(report.tree_dead);
        assert!(!alive_with(&mark));
    }

    fn parse_env(text: &str) -> BTreeMap<String, String> {
        text.split('\0')
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn environment_is_an_allowlist() {
        let fx = Fixture::new();
        let report = super::run(&config(&["env", "-0"]), fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 });
        let env = parse_env(&fx.stdout());
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        // PWD is bubblewrap's (the workspace)
        assert_eq!(
            names,
            [
                "HOME",
                "JCT_TASK_ATTEMPT",
                "JCT_TASK_ID",
                "LANG",
                "PATH",
                "PWD"
            ]
        );
        assert_eq!(env["HOME"], fx.workspace.to_str().expect("utf-8"));
        assert_eq!(env["PATH"], sandbox::worker_path().to_string_lossy());
    }

    #[tokio::test]
    async fn secrets_need_the_workers_consent_too() {
        let fx = Fixture::new();
        let mut run = fx.run();
        run.allow_secrets = true;
        let refused = super::run(&config(&["env", "-0"]), run).await;
        assert!(
            matches!(refused.end, CommandEnd::SandboxUnavailable { .. }),
            "{refused:?}"
        );
        let mut cfg = config(&["env", "-0"]);
        cfg.sandbox.allow_secrets = true;
        let mut run = fx.run();
        run.allow_secrets = true;
        let report = super::run(&cfg, run).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 });
        assert_eq!(report.sandbox.environment, ENV_INHERITED);
        let env = parse_env(&fx.stdout());
        assert!(env.contains_key("CARGO_MANIFEST_DIR"));
        assert_eq!(env["JCT_TASK_ID"], "t1");
    }

    #[tokio::test]
    async fn network_isolation() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
        let mut cfg = config(&["bash", "-c", &script]);
        let fx = Fixture::new();

        // isolated: the namespace's own loopback refuses
        let report = super::run(&cfg, fx.run()).await;
        assert!(
            matches!(report.end, CommandEnd::Exited { code } if code != 0),
            "{report:?}"
        );
        assert_eq!(report.sandbox.network, NETWORK_ISOLATED);
        assert!(
            report.stderr_tail.contains("Connection refused"),
            "{report:?}"
        );

        // allowed by the task and the worker: the host's network
        cfg.sandbox.allow_network = true;
        let mut run = fx.run();
        run.allow_network = true;
        let report = super::run(&cfg, run).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 }, "{report:?}");
        assert_eq!(report.sandbox.network, NETWORK_ALLOWED);

        // the operator's opt-out
        cfg.network_isolation = NetworkIsolation::Off;
        let report = super::run(&cfg, fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 }, "{report:?}");
        assert_eq!(report.sandbox.network, NETWORK_OFF);
        drop(listener);
    }

    #[tokio::test]
    async fn output_is_capped_but_drained() {
        let fx = Fixture::new();
        let mut cfg = sh("head -c 1048576 /dev/zero; echo end >&2");
        cfg.output_limit_bytes = 10 * 1024;
        let report = super::run(&cfg, fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 });
        assert_eq!(
            std::fs::metadata(&fx.stdout).expect("stdout").len(),
            10 * 1024
        );
        assert!(report.stdout_truncated);
        assert_eq!(report.stdout_bytes, 1024 * 1024);
        assert!(!report.stderr_truncated);
        assert_eq!(report.stderr_tail, "end\n");
    }

    #[tokio::test]
    async fn file_size_limit_is_enforced() {
        let fx = Fixture::new();
        let mut cfg = sh("head -c 3M /dev/zero > big");
        cfg.limits.file_size_mb = Some(1);
        let report = super::run(&cfg, fx.run()).await;
        // SIGXFSZ
        assert_eq!(
            report.end,
            CommandEnd::Signaled { signal: 25 },
            "{report:?}"
        );
        let size = std::fs::metadata(fx.workspace.join("big"))
            .expect("big")
            .len();
        assert!(size <= 1024 * 1024, "{size}");
    }

    fn bounded(script: &str) -> CommandConfig {
        let mut cfg = sh(script);
        cfg.limits = ResourceLimits {
            processes: Some(64),
            memory_mb: Some(256),
            cpu_millis: Some(500),
            file_size_mb: None,
        };
        cfg
    }

    /// bubblewrap joins the task's cgroup from outside, during its set-up: the
    /// gate holds the program until then, so what it forks is inside too.
    #[tokio::test]
    async fn the_sandboxed_tree_runs_in_the_task_cgroup() {
        let fx = Fixture::new();
        let mark = marker();
        let run = fx.run();
        let cancel = run.cancel.clone();
        let cfg = bounded(&format!("sleep {mark} & wait"));
        let task = tokio::spawn(async move { super::run(&cfg, run).await });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut cgroups = None;
        while cgroups.is_none() && std::time::Instant::now() < deadline {
            cgroups = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| {
                    std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                        c.starts_with(b"sleep\0") && String::from_utf8_lossy(&c).contains(&mark)
                    })
                })
                .and_then(|e| std::fs::read_to_string(e.path().join("cgroup")).ok());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
        let report = task.await.expect("run");
        let cgroups = cgroups.expect("the program's sleep was seen");
        if report.sandbox.processes.starts_with("cgroup v1") {
            for controller in ["pids", "memory", "cpu"] {
                let line = cgroups
                    .lines()
                    .find(|l| {
                        l.split(':')
                            .nth(1)
                            .is_some_and(|c| c.split(',').any(|c| c == controller))
                    })
                    .unwrap_or_default();
                assert!(line.contains("/jct-task-"), "{controller}: {cgroups}");
            }
        } else if report.sandbox.processes.starts_with("cgroup v2") {
            assert!(cgroups.contains("/jct-task-"), "{cgroups}");
        }
        assert_eq!(report.end, CommandEnd::Cancelled);
        assert!(report.tree_dead);
    }

    /// The limits hold for the task as a whole (a cgroup) where this host
    /// delegates one, and the floor of RLIMIT_CPU always: half a CPU over a
    /// 30 s budget is 15 CPU seconds per process.
    #[tokio::test]
    async fn limits_are_applied_and_recorded() {
        let fx = Fixture::new();
        let report = super::run(&bounded("ulimit -t"), fx.run()).await;
        match &report.end {
            CommandEnd::Exited { code: 0 } => {
                assert_eq!(fx.stdout(), "15\n");
                assert!(report.sandbox.memory.starts_with("cgroup v"), "{report:?}");
                assert!(
                    report.sandbox.processes.starts_with("cgroup v"),
                    "{report:?}"
                );
                assert!(
                    report.sandbox.cpu.ends_with("RLIMIT_CPU 15 s per process"),
                    "{report:?}"
                );
            }
            CommandEnd::SandboxUnavailable { reason } => {
                eprintln!("this host delegates no cgroup: {reason}");
                assert!(report.sandbox.memory.starts_with("refused"), "{report:?}");
            }
            other => panic!("{other:?} {report:?}"),
        }
        assert_eq!(cpu_seconds(Duration::from_secs(30), 500), 15);
        assert_eq!(cpu_seconds(Duration::from_millis(100), 250), 1);
        assert_eq!(cpu_seconds(Duration::from_secs(901), 2000), 1802);
    }

    /// Where no cgroup can hold the memory bound (here: a cgroup root that is
    /// not a cgroup filesystem) the task is refused, naming it, unless the
    /// operator accepts per-process rlimits; then the manifest says so.
    #[tokio::test]
    async fn a_missing_memory_cgroup_fails_closed_unless_the_operator_opts_out() {
        let fx = Fixture::new();
        let root = tempfile::tempdir().expect("root");
        let mut cfg = bounded("touch ran; ulimit -v");
        cfg.sandbox.cgroup_root = root.path().to_path_buf();
        let report = super::run(&cfg, fx.run()).await;
        let CommandEnd::SandboxUnavailable { reason } = &report.end else {
            panic!("{report:?}");
        };
        assert!(reason.contains("JCT_LIMIT_MEMORY_MB"), "{reason}");
        assert!(reason.contains("memory cgroup"), "{reason}");
        assert!(reason.contains("JCT_SANDBOX_CGROUP=optional"), "{reason}");
        assert!(report.sandbox.memory.starts_with("refused"), "{report:?}");
        assert!(!fx.workspace.join("ran").exists());

        cfg.sandbox.cgroup = CgroupMode::Optional;
        let report = super::run(&cfg, fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 }, "{report:?}");
        assert_eq!(fx.stdout(), format!("{}\n", 256 * 1024));
        assert!(
            report
                .sandbox
                .memory
                .starts_with("RLIMIT_AS 256 MiB per process"),
            "{report:?}"
        );
        assert!(report.sandbox.cpu.contains("only"), "{report:?}");
    }

    #[tokio::test]
    async fn spawn_failures() {
        let fx = Fixture::new();
        let report = super::run(&config(&["/nonexistent/program"]), fx.run()).await;
        assert!(
            matches!(&report.end, CommandEnd::SpawnFailed { reason } if reason.contains("/nonexistent/program")),
            "{report:?}"
        );
        let report = super::run(&config(&[]), fx.run()).await;
        assert!(
            matches!(report.end, CommandEnd::SpawnFailed { .. }),
            "{report:?}"
        );
        let mut run = fx.run();
        run.workspace = fx.workspace.join("missing");
        let report = super::run(&config(&["true"]), run).await;
        assert!(
            matches!(report.end, CommandEnd::SpawnFailed { .. }),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn the_syscall_filter_and_its_opt_out_are_recorded() {
        let fx = Fixture::new();
        let report = super::run(&sh("true"), fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 }, "{report:?}");
        assert_eq!(report.sandbox.syscalls, seccomp::DESCRIPTION);
        let mut cfg = sh("true");
        cfg.sandbox.seccomp = SeccompMode::Off;
        let report = super::run(&cfg, fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 }, "{report:?}");
        assert!(
            report.sandbox.syscalls.starts_with("unfiltered (operator"),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn the_opt_out_is_recorded() {
        let fx = Fixture::new();
        let mut cfg = sh("echo plain");
        cfg.sandbox.mode = SandboxMode::Off;
        let report = super::run(&cfg, fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 }, "{report:?}");
        assert_eq!(report.sandbox.mode, MODE_OFF);
        assert_eq!(fx.stdout(), "plain\n");
    }
}
