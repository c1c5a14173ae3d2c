//! The `command` executor: runs the operator's program once per task attempt, in the
//! [`sandbox`](super::sandbox), with the task on stdin and bounded output capture.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::sandbox::{self, ProcessGroupGuard, Sandbox, SpawnError};
use super::{CommandConfig, CommandEnd, CommandReport, CommandRun, NetworkIsolation, SandboxFacts};

/// How much of the end of stderr is kept for the error message.
const STDERR_TAIL_BYTES: usize = 4096;
/// How long the pipes may still be drained after the program's group is gone.
const IO_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for a SIGKILLed program to be reaped.
const REAP_GRACE: Duration = Duration::from_secs(5);
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
const DEFAULT_LANG: &str = "C.UTF-8";

const NETWORK_ISOLATED: &str = "isolated (network namespace, loopback only)";
const NETWORK_OFF: &str = "off (operator)";
const NETWORK_ALLOWED: &str = "allowed (task)";
const NETWORK_UNAVAILABLE: &str = "unavailable (network namespace could not be created)";
const ENV_INHERITED: &str = "inherited (allow_secrets)";

/// Runs `config.program` for one task attempt. Never panics; every failure is a
/// [`CommandEnd`].
pub async fn run(config: &CommandConfig, run: CommandRun) -> CommandReport {
    let started = Instant::now();
    let isolate = !run.allow_network && config.network_isolation == NetworkIsolation::Required;
    let mut sandbox_facts = SandboxFacts {
        network: if run.allow_network {
            NETWORK_ALLOWED
        } else if isolate {
            NETWORK_ISOLATED
        } else {
            NETWORK_OFF
        }
        .to_string(),
        environment: environment_fact(&run),
        limits: config.limits,
        process_group: true,
    };
    let mut out = Capture::new(config.output_limit_bytes, false);
    let mut err = Capture::new(config.output_limit_bytes, true);

    let end = execute(config, run, isolate, started, &mut out, &mut err).await;
    if matches!(end, CommandEnd::SandboxUnavailable { .. }) && isolate {
        sandbox_facts.network = NETWORK_UNAVAILABLE.to_string();
    }
    CommandReport {
        end,
        stdout_bytes: out.seen,
        stderr_bytes: err.seen,
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        stderr_tail: err.tail_text(),
        sandbox: sandbox_facts,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

async fn execute(
    config: &CommandConfig,
    run: CommandRun,
    isolate: bool,
    started: Instant,
    out: &mut Capture,
    err: &mut Capture,
) -> CommandEnd {
    let Some((program, args)) = config.program.split_first() else {
        return spawn_failed("no program is configured (JCT_EXECUTOR_COMMAND is empty)");
    };
    if program.is_empty() {
        return spawn_failed("the configured program name is empty");
    }
    let stdout_file = match create_output(&run.stdout_path).await {
        Ok(file) => file,
        Err(reason) => return spawn_failed(reason),
    };
    let stderr_file = match create_output(&run.stderr_path).await {
        Ok(file) => file,
        Err(reason) => return spawn_failed(reason),
    };
    if !tokio::fs::metadata(&run.workspace)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        return spawn_failed(format!(
            "the workspace {} is not a directory",
            run.workspace.display()
        ));
    }
    if isolate && !namespaces_available().await {
        return CommandEnd::SandboxUnavailable {
            reason: "network isolation is required but this worker cannot create network \
                     namespaces (needs root or CAP_SYS_ADMIN); the operator may set \
                     JCT_NETWORK_ISOLATION=off"
                .to_string(),
        };
    }
    if run.cancel.is_cancelled() {
        return CommandEnd::Cancelled;
    }

    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(&run.workspace)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if !run.allow_secrets {
        cmd.env_clear()
            .env("PATH", worker_var("PATH", DEFAULT_PATH))
            .env("HOME", &run.workspace)
            .env("LANG", worker_var("LANG", DEFAULT_LANG));
    }
    cmd.envs(run.task_env.iter().map(|(k, v)| (k, v)));

    let sandbox = match Sandbox::new(isolate, &config.limits) {
        Ok(sandbox) => sandbox,
        Err(e) => {
            return CommandEnd::SandboxUnavailable {
                reason: format!("cannot prepare the sandbox: {e}"),
            };
        }
    };
    let mut child = match sandbox.spawn(cmd) {
        Ok(child) => child,
        Err(SpawnError::Sandbox(failure)) => {
            return CommandEnd::SandboxUnavailable {
                reason: failure.to_string(),
            };
        }
        Err(SpawnError::Spawn(e)) => return spawn_failed(format!("cannot start {program}: {e}")),
    };
    let Some(pid) = child.id() else {
        return spawn_failed(format!("{program} started without a process id"));
    };
    // Declared after `child`, so dropped first: the whole group is killed before
    // kill_on_drop kills (and the runtime reaps) the leader.
    let mut group = ProcessGroupGuard::new(pid);

    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let io = async {
        tokio::join!(
            feed(stdin, run.task_json),
            drain(stdout, stdout_file, out),
            drain(stderr, stderr_file, err),
        );
    };
    tokio::pin!(io);
    let deadline = started.checked_add(run.time_budget);
    let (end, io_done) = {
        let waiter = wait_for_end(&mut child, &group, deadline, &run.cancel);
        tokio::pin!(waiter);
        tokio::select! {
            end = &mut waiter => (end, false),
            () = &mut io => (waiter.await, true),
        }
    };
    // The leader is reaped and its group killed: the id may be reused from now on.
    group.disarm();
    if !io_done && tokio::time::timeout(IO_GRACE, io).await.is_err() {
        // Someone outside the group (setsid) still holds a pipe; stop reading.
        tracing::warn!(
            pid,
            "output pipes still open after the program ended; abandoned"
        );
    }
    end
}

/// Waits for the program to exit, the time budget to run out or the task to be
/// cancelled. In every case the process group is SIGKILLed (after a normal exit
/// that only removes what the program left behind) and the leader is reaped.
async fn wait_for_end(
    child: &mut Child,
    group: &ProcessGroupGuard,
    deadline: Option<Instant>,
    cancel: &CancellationToken,
) -> CommandEnd {
    let budget = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    let killed = tokio::select! {
        biased;
        () = cancel.cancelled() => CommandEnd::Cancelled,
        () = budget => CommandEnd::TimedOut,
        status = child.wait() => {
            // Kill what the program left behind. Leftovers keep the group id in use;
            // without any it was freed just now, and pids are allocated cyclically,
            // so the id cannot already belong to another group.
            group.kill();
            return match status {
                Ok(status) => exit_end(status),
                Err(e) => spawn_failed(format!("waiting for the program failed: {e}")),
            };
        }
    };
    group.kill();
    match tokio::time::timeout(REAP_GRACE, child.wait()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "reaping the killed program failed"),
        // kill_on_drop and the runtime's orphan reaping take over.
        Err(_) => tracing::warn!("the killed program did not exit in time"),
    }
    killed
}

fn exit_end(status: ExitStatus) -> CommandEnd {
    match (status.code(), status.signal()) {
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

async fn namespaces_available() -> bool {
    tokio::task::spawn_blocking(sandbox::network_namespaces_available)
        .await
        .unwrap_or(false)
}

fn worker_var(name: &str, default: &str) -> std::ffi::OsString {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
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

async fn create_output(path: &Path) -> Result<tokio::fs::File, String> {
    tokio::fs::File::create(path)
        .await
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Writes the task to the program's stdin and closes it. A program that does not
/// read its stdin is fine (the write fails with EPIPE once it exits).
async fn feed(stdin: Option<ChildStdin>, input: Vec<u8>) {
    let Some(mut stdin) = stdin else { return };
    if stdin.write_all(&input).await.is_ok() {
        let _ = stdin.shutdown().await;
    }
}

/// Copies a pipe into `file` up to the capture's limit and drains (and counts) the
/// rest, so the program never blocks on a full pipe.
async fn drain(pipe: Option<impl AsyncRead + Unpin>, mut file: tokio::fs::File, cap: &mut Capture) {
    use tokio::io::AsyncReadExt;
    if let Some(mut pipe) = pipe {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match pipe.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the program's output failed");
                    break;
                }
            };
            let chunk = &buf[..n];
            let keep = cap.accept(chunk);
            if keep > 0
                && !cap.write_failed
                && let Err(e) = file.write_all(&chunk[..keep]).await
            {
                tracing::warn!(error = %e, "writing the program's output failed");
                cap.write_failed = true;
                cap.truncated = true;
            }
        }
    }
    if let Err(e) = file.flush().await {
        tracing::warn!(error = %e, "writing the program's output failed");
        cap.truncated = true;
    }
}

/// Accounting for one output stream.
#[derive(Debug)]
struct Capture {
    limit: u64,
    kept: u64,
    seen: u64,
    truncated: bool,
    write_failed: bool,
    /// The end of the stream (for stderr), at most 2 × STDERR_TAIL_BYTES.
    tail: Option<Vec<u8>>,
}

impl Capture {
    fn new(limit: u64, tail: bool) -> Self {
        Self {
            limit,
            kept: 0,
            seen: 0,
            truncated: false,
            write_failed: false,
            tail: tail.then(Vec::new),
        }
    }

    /// Counts `chunk` and returns how many of its first bytes to keep.
    fn accept(&mut self, chunk: &[u8]) -> usize {
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        self.seen = self.seen.saturating_add(len);
        let room = self.limit.saturating_sub(self.kept);
        let keep = len.min(room);
        self.kept += keep;
        if keep < len {
            self.truncated = true;
        }
        if let Some(tail) = &mut self.tail {
            let start = chunk.len().saturating_sub(STDERR_TAIL_BYTES);
            tail.extend_from_slice(&chunk[start..]);
            if tail.len() > 2 * STDERR_TAIL_BYTES {
                tail.drain(..tail.len() - STDERR_TAIL_BYTES);
            }
        }
        usize::try_from(keep).unwrap_or(chunk.len())
    }

    /// The last STDERR_TAIL_BYTES of the stream, as (lossy) UTF-8 that does not start
    /// in the middle of a character.
    fn tail_text(&self) -> String {
        let Some(tail) = &self.tail else {
            return String::new();
        };
        let mut tail = &tail[tail.len().saturating_sub(STDERR_TAIL_BYTES)..];
        let cut = self.seen > u64::try_from(tail.len()).unwrap_or(u64::MAX);
        if cut {
            let partial = tail
                .iter()
                .take(3)
                .take_while(|b| *b & 0xC0 == 0x80)
                .count();
            tail = &tail[partial..];
        }
        String::from_utf8_lossy(tail).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::ResourceLimits;
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Instant as StdInstant;

    struct Fixture {
        _dir: tempfile::TempDir,
        workspace: PathBuf,
        stdout: PathBuf,
        stderr: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let workspace = dir.path().join("workspace");
            std::fs::create_dir(&workspace).expect("workspace");
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
                stdout_path: self.stdout.clone(),
                stderr_path: self.stderr.clone(),
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
            // Most tests do not care about the network; the network test sets it.
            network_isolation: NetworkIsolation::Off,
            limits: ResourceLimits::default(),
            output_limit_bytes: 1024 * 1024,
        }
    }

    fn sh(script: &str) -> CommandConfig {
        config(&["sh", "-c", script])
    }

    /// The pid in `file` (written by the program).
    fn read_pid(file: &Path) -> u32 {
        let text = std::fs::read_to_string(file).expect("pid file");
        text.trim().parse().expect("pid")
    }

    fn is_gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => {
                let after = &stat[stat.rfind(')').expect("comm") + 2..];
                matches!(after.split(' ').next(), Some("Z" | "X"))
            }
        }
    }

    async fn assert_gone(pid: u32) {
        let started = StdInstant::now();
        while !is_gone(pid) {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "process {pid} is still alive"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn success_echoes_stdin() {
        let fx = Fixture::new();
        let report = super::run(&sh("cat; echo done"), fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 });
        assert_eq!(fx.stdout(), "{\"id\":\"t1\"}done\n");
        assert_eq!(report.stdout_bytes, 16);
        assert!(!report.stdout_truncated);
        assert_eq!(report.stderr_bytes, 0);
        assert_eq!(report.stderr_tail, "");
        assert_eq!(report.sandbox.network, NETWORK_OFF);
        assert_eq!(
            report.sandbox.environment,
            "allowlist (PATH, HOME, LANG, JCT_TASK_ID, JCT_TASK_ATTEMPT)"
        );
        assert!(report.sandbox.process_group);
    }

    #[tokio::test]
    async fn runs_in_the_workspace() {
        let fx = Fixture::new();
        let report = super::run(&config(&["pwd"]), fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 });
        let expected = fx.workspace.canonicalize().expect("canonical");
        assert_eq!(fx.stdout().trim_end(), expected.to_str().expect("utf-8"));
    }

    #[tokio::test]
    async fn nonzero_exit_keeps_stderr_tail() {
        let fx = Fixture::new();
        let script = "i=0; while [ $i -lt 2000 ]; do echo \"line $i\" >&2; i=$((i+1)); done; \
                      echo 'it went wrong' >&2; exit 3";
        let report = super::run(&sh(script), fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 3 });
        assert!(report.stderr_tail.ends_with("it went wrong\n"));
        assert!(report.stderr_tail.len() <= STDERR_TAIL_BYTES);
        assert!(report.stderr_tail.len() > STDERR_TAIL_BYTES - 100);
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
    async fn time_budget_kills_the_whole_group() {
        let fx = Fixture::new();
        let mut run = fx.run();
        run.time_budget = Duration::from_secs(1);
        let started = StdInstant::now();
        let report = super::run(&sh("sleep 100 & echo $! > gc.pid; sleep 100"), run).await;
        assert_eq!(report.end, CommandEnd::TimedOut);
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        assert!(report.duration_ms >= 900);
        assert_gone(read_pid(&fx.workspace.join("gc.pid"))).await;
    }

    #[tokio::test]
    async fn cancellation_kills_promptly() {
        let fx = Fixture::new();
        let run = fx.run();
        let cancel = run.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
        });
        let started = StdInstant::now();
        let report = super::run(&sh("sleep 100 & echo $! > gc.pid; sleep 100"), run).await;
        assert_eq!(report.end, CommandEnd::Cancelled);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_gone(read_pid(&fx.workspace.join("gc.pid"))).await;
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
        let started = StdInstant::now();
        // The background sleep keeps stdout open; the run must not wait for it.
        let report = super::run(&sh("sleep 100 & echo $! > gc.pid"), fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 });
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_gone(read_pid(&fx.workspace.join("gc.pid"))).await;
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
        assert_eq!(
            names,
            ["HOME", "JCT_TASK_ATTEMPT", "JCT_TASK_ID", "LANG", "PATH"]
        );
        assert_eq!(env["HOME"], fx.workspace.to_str().expect("utf-8"));
        assert_eq!(env["JCT_TASK_ID"], "t1");
        let expected_path = std::env::var("PATH")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_PATH.to_string());
        assert_eq!(env["PATH"], expected_path);
        // Nothing else of the test process (cargo's CARGO_*, the real HOME, …) leaks.
        for (name, value) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if !["PATH", "LANG"].contains(&name.as_ref()) {
                assert_ne!(
                    env.get(name.as_ref()).map(|v| v.as_bytes()),
                    Some(value.as_encoded_bytes()),
                    "{name} leaked"
                );
            }
        }
        assert!(!env.keys().any(|k| k.starts_with("CARGO")));
    }

    #[tokio::test]
    async fn allow_secrets_inherits_the_environment() {
        let fx = Fixture::new();
        let mut run = fx.run();
        run.allow_secrets = true;
        let report = super::run(&config(&["env", "-0"]), run).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 });
        assert_eq!(report.sandbox.environment, ENV_INHERITED);
        let env = parse_env(&fx.stdout());
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            assert!(env.contains_key(name.as_ref()), "{name} not inherited");
        }
        assert_eq!(env["JCT_TASK_ID"], "t1");
    }

    #[tokio::test]
    async fn network_isolation() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let script = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
        let mut cfg = config(&["bash", "-c", &script]);

        // Off: the program shares the worker's network and reaches the listener.
        let fx = Fixture::new();
        let report = super::run(&cfg, fx.run()).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 }, "{report:?}");
        assert_eq!(report.sandbox.network, NETWORK_OFF);

        // allow_network: no namespace either.
        cfg.network_isolation = NetworkIsolation::Required;
        let mut run = fx.run();
        run.allow_network = true;
        let report = super::run(&cfg, run).await;
        assert_eq!(report.end, CommandEnd::Exited { code: 0 }, "{report:?}");
        assert_eq!(report.sandbox.network, NETWORK_ALLOWED);

        // Required: a namespace of its own, or no run at all.
        let report = super::run(&cfg, fx.run()).await;
        if sandbox::network_namespaces_available() {
            assert!(
                matches!(report.end, CommandEnd::Exited { code } if code != 0),
                "{report:?}"
            );
            assert_eq!(report.sandbox.network, NETWORK_ISOLATED);
            // Refused, not unreachable: the namespace's loopback is up.
            assert!(
                report.stderr_tail.contains("Connection refused"),
                "{report:?}"
            );
        } else {
            assert!(
                matches!(report.end, CommandEnd::SandboxUnavailable { .. }),
                "{report:?}"
            );
            assert_eq!(report.sandbox.network, NETWORK_UNAVAILABLE);
        }
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
        assert!(
            matches!(report.end, CommandEnd::Exited { code } if code != 0),
            "{report:?}"
        );
        assert_eq!(report.sandbox.limits.file_size_mb, Some(1));
        let size = std::fs::metadata(fx.workspace.join("big"))
            .expect("big")
            .len();
        assert!(size <= 1024 * 1024, "{size}");
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

    #[test]
    fn tail_does_not_start_mid_character() {
        let mut cap = Capture::new(0, true);
        let mut text = "é".repeat(STDERR_TAIL_BYTES);
        text.push('!');
        cap.accept(text.as_bytes());
        let tail = cap.tail_text();
        assert!(!tail.contains('\u{FFFD}'));
        assert!(tail.ends_with("é!"));
        assert!(cap.truncated);
        assert_eq!(cap.seen, text.len() as u64);
    }
}
