//! The low-level process sandbox of the `command` executor.
//!
//! A [`Sandbox`] spawns one program so that, before it executes:
//! - it leads a new process group (so the whole tree can be killed with
//!   [`kill_process_group`]);
//! - optionally, it is in a fresh network namespace whose only interface is its own
//!   loopback, brought up;
//! - the operator's [`ResourceLimits`] are applied with `setrlimit`.
//!
//! Whatever fails between `fork` and `exec` is reported through a small pipe, so a
//! failed sandbox step ([`SpawnError::Sandbox`]) is told apart exactly from a
//! program that could not be executed ([`SpawnError::Spawn`]). If a step fails the
//! program never runs.
//!
//! What this does not do: file-system isolation, and a process that leaves its group
//! (`setsid`) escapes [`kill_process_group`]; both would need a PID namespace or a
//! cgroup.

// The sandbox has to act in the child between fork and exec (`pre_exec`) and call
// the C library directly (`unshare`, `ioctl`, `setrlimit`, `killpg`, `pipe2`):
// both need `unsafe`. Every unsafe block is kept small and states why it is sound.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Stdio;
use std::sync::OnceLock;

use super::ResourceLimits;

const MIB: u64 = 1024 * 1024;

/// The step between fork and exec that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SandboxStage {
    NetworkNamespace = 1,
    Loopback = 2,
    MemoryLimit = 3,
    ProcessLimit = 4,
    FileSizeLimit = 5,
}

impl SandboxStage {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::NetworkNamespace,
            2 => Self::Loopback,
            3 => Self::MemoryLimit,
            4 => Self::ProcessLimit,
            5 => Self::FileSizeLimit,
            _ => return None,
        })
    }

    fn describe(self) -> &'static str {
        match self {
            Self::NetworkNamespace => "creating a network namespace (unshare CLONE_NEWNET)",
            Self::Loopback => "bringing up loopback in the network namespace",
            Self::MemoryLimit => "setting the memory limit (RLIMIT_AS)",
            Self::ProcessLimit => "setting the process limit (RLIMIT_NPROC)",
            Self::FileSizeLimit => "setting the file size limit (RLIMIT_FSIZE)",
        }
    }
}

/// A sandbox step failed in the child; the program did not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxFailure {
    pub stage: SandboxStage,
    /// `errno` of the failed call.
    pub errno: i32,
}

impl fmt::Display for SandboxFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {}",
            self.stage.describe(),
            io::Error::from_raw_os_error(self.errno)
        )?;
        if self.stage == SandboxStage::NetworkNamespace
            && (self.errno == libc::EPERM || self.errno == libc::EACCES)
        {
            write!(f, " (needs root or CAP_SYS_ADMIN)")?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub enum SpawnError {
    /// A sandbox step failed; the program did not run.
    Sandbox(SandboxFailure),
    /// The program could not be started (not found, not executable, fork failed, …).
    Spawn(io::Error),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Sandbox(failure) => failure.fmt(f),
            SpawnError::Spawn(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for SpawnError {}

/// Everything the child needs between fork and exec, computed before the fork: only
/// plain values, so the child neither allocates nor takes locks.
#[derive(Debug, Clone, Copy)]
struct ChildPlan {
    /// Write end of the failure-report pipe (close-on-exec).
    report_fd: RawFd,
    network_namespace: bool,
    memory: Option<libc::rlimit>,
    processes: Option<libc::rlimit>,
    file_size: Option<libc::rlimit>,
}

/// One sandboxed spawn. Consumed by [`Sandbox::spawn`].
#[derive(Debug)]
pub struct Sandbox {
    plan: ChildPlan,
    report_read: OwnedFd,
    // Kept open until the spawn has returned: the child's copy is where it reports.
    report_write: OwnedFd,
}

impl Sandbox {
    /// Prepares a sandbox: a new process group always, a fresh network namespace
    /// (loopback only) when `network_namespace`, and `limits`.
    ///
    /// Limits above the worker's own hard limits are lowered to them (raising a hard
    /// limit would fail).
    pub fn new(network_namespace: bool, limits: &ResourceLimits) -> io::Result<Sandbox> {
        let (report_read, report_write) = report_pipe()?;
        let plan = ChildPlan {
            report_fd: report_write.as_raw_fd(),
            network_namespace,
            memory: limits
                .memory_mb
                .map(|mb| clamped_limit(Limit::Memory, mb.saturating_mul(MIB))),
            processes: limits.processes.map(|n| clamped_limit(Limit::Processes, n)),
            file_size: limits
                .file_size_mb
                .map(|mb| clamped_limit(Limit::FileSize, mb.saturating_mul(MIB))),
        };
        Ok(Sandbox {
            plan,
            report_read,
            report_write,
        })
    }

    /// Spawns `cmd` in the sandbox. The child leads its own process group, so its
    /// pid is also its process group id.
    pub fn spawn(
        self,
        mut cmd: tokio::process::Command,
    ) -> Result<tokio::process::Child, SpawnError> {
        self.install(cmd.as_std_mut());
        let spawned = cmd.spawn();
        // The command (and its closure, which names our report fd) is gone before
        // the fd is closed, so it can never run again against a reused fd.
        drop(cmd);
        self.finish(spawned)
    }

    /// [`Sandbox::spawn`] for a `std` command (the probe and tests).
    fn spawn_std(self, mut cmd: std::process::Command) -> Result<std::process::Child, SpawnError> {
        self.install(&mut cmd);
        let spawned = cmd.spawn();
        drop(cmd);
        self.finish(spawned)
    }

    /// Makes the child lead its own process group and run `child_setup` between
    /// fork and exec.
    fn install(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let plan = self.plan;
        cmd.process_group(0);
        // SAFETY: the closure only calls async-signal-safe functions (see
        // `child_setup`), does not allocate and touches no locks; `plan` is plain data
        // copied into the closure before the fork.
        unsafe {
            cmd.pre_exec(move || child_setup(&plan));
        }
    }

    fn finish<C>(self, spawned: io::Result<C>) -> Result<C, SpawnError> {
        let Sandbox {
            report_read,
            report_write,
            ..
        } = self;
        drop(report_write);
        match spawned {
            Ok(child) => Ok(child),
            // A failing child wrote its report before it exited, and the spawn only
            // returns the error after the child has exited: a report is in the pipe now
            // or there is none.
            Err(err) => match read_report(&report_read) {
                Some(failure) => Err(SpawnError::Sandbox(failure)),
                None => Err(SpawnError::Spawn(err)),
            },
        }
    }
}

/// Whether this worker can run programs in a fresh network namespace with loopback
/// up. Probed once (a trivial child going through the same steps) and cached.
pub fn network_namespaces_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(probe_network_namespaces)
}

fn probe_network_namespaces() -> bool {
    let sandbox = match Sandbox::new(true, &ResourceLimits::default()) {
        Ok(sandbox) => sandbox,
        Err(err) => {
            tracing::warn!(error = %err, "cannot probe network namespaces");
            return false;
        }
    };
    let mut cmd = std::process::Command::new("/bin/true");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match sandbox.spawn_std(cmd) {
        Ok(mut child) => {
            let _ = child.wait();
            true
        }
        Err(SpawnError::Sandbox(failure)) => {
            tracing::info!(%failure, "network namespaces are unavailable");
            false
        }
        // The namespace steps succeeded but /bin/true could not run (or fork failed);
        // every real spawn reports its own sandbox failure anyway.
        Err(SpawnError::Spawn(err)) => {
            tracing::debug!(error = %err, "network namespace probe could not exec /bin/true");
            true
        }
    }
}

/// Sends SIGKILL to every process in process group `pgid`. A group that no longer
/// exists is not an error.
pub fn kill_process_group(pgid: u32) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .ok()
        .filter(|pgid| *pgid > 1)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a process group id"))?;
    // SAFETY: killpg has no memory-safety preconditions; `pgid` > 1 so it never
    // targets our own group (0) or init.
    let rc = unsafe { libc::killpg(pgid, libc::SIGKILL) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Kills a process group when dropped, unless disarmed: if the executor's future is
/// dropped mid-run, nothing of the program survives it.
///
/// Disarm once the group leader has been reaped and the group killed a last time:
/// after that its id may be reused.
#[derive(Debug)]
pub struct ProcessGroupGuard {
    pgid: Option<u32>,
}

impl ProcessGroupGuard {
    pub fn new(pgid: u32) -> Self {
        Self { pgid: Some(pgid) }
    }

    /// SIGKILLs the group now (the guard stays armed).
    pub fn kill(&self) {
        if let Some(pgid) = self.pgid
            && let Err(err) = kill_process_group(pgid)
        {
            tracing::warn!(pgid, error = %err, "killing the process group failed");
        }
    }

    pub fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Clone, Copy)]
enum Limit {
    Memory,
    Processes,
    FileSize,
}

/// `wanted` as soft and hard limit, but no higher than the worker's hard limit.
fn clamped_limit(which: Limit, wanted: u64) -> libc::rlimit {
    let mut current = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: getrlimit writes into the valid, exclusively borrowed `current`.
    let rc = unsafe {
        match which {
            Limit::Memory => libc::getrlimit(libc::RLIMIT_AS, &mut current),
            Limit::Processes => libc::getrlimit(libc::RLIMIT_NPROC, &mut current),
            Limit::FileSize => libc::getrlimit(libc::RLIMIT_FSIZE, &mut current),
        }
    };
    let wanted = libc::rlim_t::try_from(wanted).unwrap_or(libc::RLIM_INFINITY);
    let value = if rc == 0 {
        wanted.min(current.rlim_max)
    } else {
        wanted
    };
    libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    }
}

/// A close-on-exec, non-blocking pipe: (read end, write end).
fn report_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the valid array.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let fds = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok(fds)
}

const REPORT_LEN: usize = 5;

fn read_report(read: &OwnedFd) -> Option<SandboxFailure> {
    let mut buf = [0u8; REPORT_LEN];
    // SAFETY: reads at most `buf.len()` bytes into the valid buffer; the fd is open
    // and non-blocking.
    let n = unsafe { libc::read(read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if usize::try_from(n).ok() != Some(REPORT_LEN) {
        return None;
    }
    let stage = SandboxStage::from_byte(buf[0])?;
    let errno = i32::from_ne_bytes([buf[1], buf[2], buf[3], buf[4]]);
    Some(SandboxFailure { stage, errno })
}

// ---------------------------------------------------------------------------------
// In the child, between fork and exec: async-signal-safe calls only, no allocation.

fn child_setup(plan: &ChildPlan) -> io::Result<()> {
    if plan.network_namespace {
        enter_network_namespace().map_err(|(stage, errno)| report(plan, stage, errno))?;
    }
    let limits = [
        (Limit::Memory, plan.memory, SandboxStage::MemoryLimit),
        (Limit::Processes, plan.processes, SandboxStage::ProcessLimit),
        (Limit::FileSize, plan.file_size, SandboxStage::FileSizeLimit),
    ];
    for (which, limit, stage) in limits {
        if let Some(limit) = limit {
            set_limit(which, &limit).map_err(|errno| report(plan, stage, errno))?;
        }
    }
    Ok(())
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Writes the failure report for the parent and returns the error for `pre_exec`.
fn report(plan: &ChildPlan, stage: SandboxStage, errno: i32) -> io::Error {
    let mut msg = [0u8; REPORT_LEN];
    msg[0] = stage as u8;
    msg[1..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write(2) is async-signal-safe; it reads `msg.len()` bytes from a valid
    // stack buffer. A failed write only loses the stage, not the error.
    let _ = unsafe { libc::write(plan.report_fd, msg.as_ptr().cast(), msg.len()) };
    io::Error::from_raw_os_error(errno)
}

fn set_limit(which: Limit, limit: &libc::rlimit) -> Result<(), i32> {
    // SAFETY: setrlimit (a plain syscall) reads the valid `limit`.
    let rc = unsafe {
        match which {
            Limit::Memory => libc::setrlimit(libc::RLIMIT_AS, limit),
            Limit::Processes => libc::setrlimit(libc::RLIMIT_NPROC, limit),
            Limit::FileSize => libc::setrlimit(libc::RLIMIT_FSIZE, limit),
        }
    };
    if rc == 0 { Ok(()) } else { Err(last_errno()) }
}

#[cfg(target_os = "linux")]
fn enter_network_namespace() -> Result<(), (SandboxStage, i32)> {
    // SAFETY: unshare is a plain syscall without memory arguments.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err((SandboxStage::NetworkNamespace, last_errno()));
    }
    loopback_up().map_err(|errno| (SandboxStage::Loopback, errno))
}

#[cfg(not(target_os = "linux"))]
fn enter_network_namespace() -> Result<(), (SandboxStage, i32)> {
    Err((SandboxStage::NetworkNamespace, libc::ENOSYS))
}

/// Sets IFF_UP (and IFF_RUNNING) on `lo` of the current network namespace.
#[cfg(target_os = "linux")]
fn loopback_up() -> Result<(), i32> {
    // SAFETY: socket is a plain syscall.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_errno());
    }
    let result = set_loopback_flags(fd);
    // SAFETY: `fd` is the socket opened above, closed exactly once.
    unsafe { libc::close(fd) };
    result
}

#[cfg(target_os = "linux")]
fn set_loopback_flags(fd: RawFd) -> Result<(), i32> {
    // SAFETY: ifreq is plain old data (arrays, integers, a pointer that the kernel
    // does not use for these requests); all-zero is a valid value. Built on the stack:
    // no allocation.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads and writes the valid, exclusively borrowed `ifr`.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as libc::Ioctl, &mut ifr) } != 0 {
        return Err(last_errno());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds `ifru_flags`.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the valid `ifr`.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as libc::Ioctl, &ifr) } != 0 {
        return Err(last_errno());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, Instant};

    fn output(sandbox: Sandbox, program: &str, args: &[&str]) -> String {
        let mut cmd = Command::new(program);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::null());
        let child = sandbox.spawn_std(cmd).expect("spawn");
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{program} failed: {:?}", out.status);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Field `n` (1-based, as in proc(5)) of /proc/<pid>/stat.
    fn stat_field(stat: &str, n: usize) -> String {
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        after.split(' ').nth(n - 3).expect("field").to_string()
    }

    fn is_gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => matches!(stat_field(&stat, 3).as_str(), "Z" | "X"),
        }
    }

    #[test]
    fn child_leads_its_own_process_group() {
        let sandbox = Sandbox::new(false, &ResourceLimits::default()).expect("sandbox");
        let stat = output(sandbox, "cat", &["/proc/self/stat"]);
        let pid: u32 = stat.split(' ').next().expect("pid").parse().expect("pid");
        assert_eq!(stat_field(&stat, 5), pid.to_string(), "pgrp == pid");
    }

    #[test]
    fn limits_are_applied() {
        let limits = ResourceLimits {
            memory_mb: Some(4096),
            processes: Some(500),
            file_size_mb: Some(1),
        };
        let sandbox = Sandbox::new(false, &limits).expect("sandbox");
        let text = output(sandbox, "cat", &["/proc/self/limits"]);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(
            line("Max file size").ends_with("1048576 1048576 bytes"),
            "{text}"
        );
        assert!(
            line("Max address space").ends_with("4294967296 4294967296 bytes"),
            "{text}"
        );
        assert!(
            line("Max processes").ends_with("500 500 processes"),
            "{text}"
        );
    }

    #[test]
    fn failed_step_is_reported_and_program_does_not_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("ran");
        let mut sandbox = Sandbox::new(false, &ResourceLimits::default()).expect("sandbox");
        // soft > hard: setrlimit fails with EINVAL.
        sandbox.plan.file_size = Some(libc::rlimit {
            rlim_cur: 2,
            rlim_max: 1,
        });
        let mut cmd = Command::new("touch");
        cmd.arg(&marker);
        match sandbox.spawn_std(cmd) {
            Err(SpawnError::Sandbox(failure)) => {
                assert_eq!(failure.stage, SandboxStage::FileSizeLimit);
                assert_eq!(failure.errno, libc::EINVAL);
                assert!(failure.to_string().contains("RLIMIT_FSIZE"), "{failure}");
            }
            other => panic!("expected a sandbox failure, got {other:?}"),
        }
        assert!(!marker.exists());
    }

    #[test]
    fn exec_failure_is_a_spawn_error() {
        let sandbox = Sandbox::new(false, &ResourceLimits::default()).expect("sandbox");
        let cmd = Command::new("/nonexistent/program");
        match sandbox.spawn_std(cmd) {
            Err(SpawnError::Spawn(err)) => assert_eq!(err.kind(), io::ErrorKind::NotFound),
            other => panic!("expected a spawn error, got {other:?}"),
        }
    }

    #[test]
    fn network_namespace_has_only_loopback() {
        let sandbox = Sandbox::new(true, &ResourceLimits::default()).expect("sandbox");
        if !network_namespaces_available() {
            let cmd = Command::new("true");
            match sandbox.spawn_std(cmd) {
                Err(SpawnError::Sandbox(failure)) => {
                    assert_eq!(failure.stage, SandboxStage::NetworkNamespace)
                }
                other => panic!("expected a sandbox failure, got {other:?}"),
            }
            return;
        }
        let dev = output(sandbox, "cat", &["/proc/self/net/dev"]);
        let interfaces: Vec<&str> = dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        assert_eq!(interfaces, ["lo"], "{dev}");
    }

    #[test]
    fn kill_process_group_kills_the_tree_and_guards_bad_ids() {
        assert!(kill_process_group(0).is_err());
        assert!(kill_process_group(1).is_err());

        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("gc.pid");
        let sandbox = Sandbox::new(false, &ResourceLimits::default()).expect("sandbox");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("sleep 100 & echo $! > {}; wait", pidfile.display()))
            .stdout(Stdio::null());
        let mut child = sandbox.spawn_std(cmd).expect("spawn");
        let started = Instant::now();
        let grandchild = loop {
            if let Ok(text) = std::fs::read_to_string(&pidfile)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                break pid;
            }
            assert!(started.elapsed() < Duration::from_secs(3), "no pid file");
            std::thread::sleep(Duration::from_millis(10));
        };
        {
            let _guard = ProcessGroupGuard::new(child.id());
        }
        let status = child.wait().expect("wait");
        assert!(!status.success());
        while !is_gone(grandchild) {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "grandchild alive"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The group is gone now: killing it again is fine.
        assert!(kill_process_group(child.id()).is_ok());
    }
}
