//! The process side of the sandbox: what happens in the worker's child between
//! fork and exec (joining the task's cgroup, dropping root, the parent-death
//! signal, rlimits), finding bubblewrap and proving once that it works here.
//!
//! Between fork and exec only async-signal-safe system calls are made, through
//! `rustix` (raw syscalls: no allocation, no locks); everything they need is
//! computed before the fork.

// `pre_exec` is unsafe by nature (the closure runs in a forked child); it is the
// only unsafe code here and states why it is sound.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use rustix::process::{Pid, Resource, Rlimit, Signal};

const MIB: u64 = 1024 * 1024;
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What the child does between fork and exec. Plain data, moved into the
/// closure before the fork.
#[derive(Debug, Clone, Default)]
pub struct ChildSetup {
    /// `cgroup.procs` descriptors to write "0" (this process) to (a plain
    /// program's; bubblewrap is moved in from outside, see `init::CgroupJoin`).
    pub cgroup_procs: Vec<RawFd>,
    /// Drop to this uid (and gid of the same number, no supplementary groups).
    pub switch_to: Option<u32>,
    /// Descriptors to keep open across exec (e.g. bubblewrap's info pipe).
    pub inherit: Vec<RawFd>,
    /// Each resource's soft and hard limit.
    pub rlimits: Vec<(Resource, u64, u64)>,
}

impl ChildSetup {
    pub fn memory_rlimit(&mut self, mb: u64) {
        let bytes = mb.saturating_mul(MIB);
        self.rlimits.push((Resource::As, bytes, bytes));
    }

    pub fn processes_rlimit(&mut self, n: u64) {
        self.rlimits.push((Resource::Nproc, n, n));
    }

    pub fn file_size_rlimit(&mut self, mb: u64) {
        let bytes = mb.saturating_mul(MIB);
        self.rlimits.push((Resource::Fsize, bytes, bytes));
    }

    /// CPU seconds per process: SIGXCPU at the limit (a program may clean up),
    /// SIGKILL a second later.
    pub fn cpu_rlimit(&mut self, seconds: u64) {
        self.rlimits
            .push((Resource::Cpu, seconds, seconds.saturating_add(1)));
    }

    /// Installs the setup in `cmd`; the child also leads a new process group.
    pub fn install(self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let parent = rustix::process::getpid();
        cmd.process_group(0);
        // SAFETY: `child_setup` only makes raw system calls through rustix (no
        // allocation, no locks: async-signal-safe) and reads the plain data moved
        // into the closure before the fork.
        unsafe {
            cmd.pre_exec(move || self.child_setup(parent));
        }
    }

    fn child_setup(&self, parent: Pid) -> io::Result<()> {
        for fd in &self.cgroup_procs {
            // SAFETY: the descriptor is open in the parent (owned by the task's
            // cgroup, which outlives the spawn) and so in this child.
            let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
            rustix::io::write(fd, b"0")?;
        }
        for (resource, soft, hard) in &self.rlimits {
            let limit = Rlimit {
                current: Some(*soft),
                maximum: Some(*hard),
            };
            rustix::process::setrlimit(*resource, limit)?;
        }
        if let Some(id) = self.switch_to {
            // per-thread calls: this forked child has one thread
            let uid = rustix::process::Uid::from_raw_unchecked(id);
            let gid = rustix::process::Gid::from_raw_unchecked(id);
            rustix::thread::set_thread_groups(&[])?;
            rustix::thread::set_thread_res_gid(gid, gid, gid)?;
            rustix::thread::set_thread_res_uid(uid, uid, uid)?;
        }
        // After the uid change (which clears it): a worker killed even by SIGKILL
        // takes the sandbox with it. If it died before this line, stop now.
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
        if rustix::process::getppid() != Some(parent) {
            return Err(io::Error::other(
                "the worker died while starting the program",
            ));
        }
        // Whatever the worker holds without close-on-exec (its own, a library's,
        // or inherited from whoever started it) must not reach the program;
        // bubblewrap passes stray descriptors through. Only those named below are
        // kept.
        cloexec_from(FIRST_NON_STDIO)?;
        for fd in &self.inherit {
            // SAFETY: as above, the descriptor is open in this child.
            let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
        }
        Ok(())
    }
}

/// The first descriptor after stdin, stdout and stderr.
const FIRST_NON_STDIO: u32 = 3;

/// Marks every open descriptor from `first` up close-on-exec, in a forked
/// child: `close_range(CLOSE_RANGE_CLOEXEC)` (Linux 5.11), else a walk of
/// /proc/self/fd. Fails (and so does the spawn) if neither can be done.
fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range takes plain integers and only changes descriptor
    // flags; a raw system call, async-signal-safe.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            libc::c_uint::from(first),
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if done == 0 {
        return Ok(());
    }
    cloexec_by_proc(first)
}

/// The fallback of [`cloexec_from`]: no allocation (a buffer on the stack).
fn cloexec_by_proc(first: u32) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags, RawDir};
    use std::mem::MaybeUninit;
    let dir = rustix::fs::open(
        c"/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf = [MaybeUninit::<u8>::uninit(); 1024];
    let mut entries = RawDir::new(&dir, &mut buf);
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let Some(fd) = parse_fd(entry.file_name().to_bytes()) else {
            continue; // "." and ".."
        };
        let Ok(raw) = RawFd::try_from(fd) else {
            continue;
        };
        if fd >= first && raw != dir.as_raw_fd() {
            // SAFETY: listed in /proc/self/fd just now, and this single-threaded
            // child opens or closes nothing else meanwhile.
            let fd = unsafe { BorrowedFd::borrow_raw(raw) };
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?;
        }
    }
    Ok(())
}

/// A descriptor number from its /proc/self/fd entry name (no allocation).
fn parse_fd(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name.len() > 10 {
        return None;
    }
    name.iter().try_fold(0u32, |n, b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u32::from(digit))
    })
}

/// The uid the program's processes run as on the host: the worker's own, or
/// `sandbox_uid` when the worker is root (so the program never has root).
pub fn program_uid(sandbox_uid: u32) -> (u32, Option<u32>) {
    let me = rustix::process::geteuid().as_raw();
    if me == 0 {
        (sandbox_uid, Some(sandbox_uid))
    } else {
        (me, None)
    }
}

/// Who must own a task's workspace: the sandbox uid when the worker is root and
/// runs programs in the sandbox (they never run as root); otherwise the worker.
pub fn workspace_owner(config: &super::SandboxConfig) -> Option<u32> {
    match config.mode {
        super::SandboxMode::Required => program_uid(config.uid).1,
        super::SandboxMode::Off => None,
    }
}

/// The worker's PATH (the program's too: it finds the same tools).
pub fn worker_path() -> OsString {
    std::env::var_os("PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PATH.into())
}

/// `name` as the worker would find it: a path as given (made absolute), or the
/// first match on PATH.
pub fn resolve_program(name: &str) -> Option<PathBuf> {
    let is_file = |p: &Path| p.metadata().is_ok_and(|m| m.is_file());
    if name.contains('/') {
        let path = std::path::absolute(name).ok()?;
        return is_file(&path).then_some(path);
    }
    std::env::split_paths(&worker_path())
        .map(|dir| dir.join(name))
        .find(|p| is_file(p))
}

/// bubblewrap's path if it is installed and can build a sandbox on this host
/// for `uid` (checked once per uid by running `true` in it); otherwise why not.
pub fn bwrap_for(uid: Option<u32>) -> Result<PathBuf, String> {
    type Checked = HashMap<Option<u32>, Result<PathBuf, String>>;
    static CHECKED: Mutex<Option<Checked>> = Mutex::new(None);
    let Ok(mut checked) = CHECKED.lock() else {
        return Err("the sandbox check was poisoned".into());
    };
    checked
        .get_or_insert_with(HashMap::new)
        .entry(uid)
        .or_insert_with(|| check_bwrap(uid))
        .clone()
}

fn check_bwrap(uid: Option<u32>) -> Result<PathBuf, String> {
    let bwrap = resolve_program("bwrap").ok_or(
        "bubblewrap (bwrap) is not installed; install the `bubblewrap` package, \
         or opt out with JCT_SANDBOX=off",
    )?;
    let mut cmd = std::process::Command::new(&bwrap);
    cmd.args(super::bwrap::probe_args())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let setup = ChildSetup {
        switch_to: uid,
        ..ChildSetup::default()
    };
    setup.install(&mut cmd);
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    if output.status.success() {
        return Ok(bwrap);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!(
        "bubblewrap cannot build a sandbox here ({}): {}; the host must allow \
         unprivileged user namespaces (see deploy/README.md)",
        output.status,
        stderr.trim()
    ))
}

/// Whether the sandbox uid can reach `dir` (every ancestor searchable), which
/// bubblewrap needs to bind it.
pub fn reachable_by(dir: &Path, uid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mut path = PathBuf::new();
    for part in dir.components() {
        path.push(part);
        let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let searchable = if meta.uid() == uid {
            meta.mode() & 0o100 != 0
        } else if meta.gid() == uid {
            meta.mode() & 0o010 != 0
        } else {
            meta.mode() & 0o001 != 0
        };
        if !searchable {
            return Err(format!(
                "{} is not searchable by the sandbox uid {uid} (mode {:o}); \
                 make it 0711 or move JCT_WORKSPACE_ROOT",
                path.display(),
                meta.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn descriptor_names_parse() {
        assert_eq!(parse_fd(b"0"), Some(0));
        assert_eq!(parse_fd(b"251"), Some(251));
        assert_eq!(parse_fd(b"."), None);
        assert_eq!(parse_fd(b".."), None);
        assert_eq!(parse_fd(b""), None);
        assert_eq!(parse_fd(b"99999999999"), None);
    }

    /// The descriptors a child of this process ends up with, after `setup`
    /// ran in it, while this process holds a descriptor without CLOEXEC.
    fn child_fds(setup: fn() -> io::Result<()>) -> Vec<u32> {
        let held = tempfile::tempfile().expect("file");
        rustix::io::fcntl_setfd(&held, rustix::io::FdFlags::empty()).expect("no CLOEXEC");
        let mut cmd = std::process::Command::new("sh");
        // `ls` is a child of the shell: it lists what the shell inherited
        cmd.args(["-c", "ls /proc/$$/fd"]);
        // SAFETY: `setup` makes raw system calls only (see `cloexec_from`).
        unsafe {
            cmd.pre_exec(setup);
        }
        let out = cmd.output().expect("sh runs");
        drop(held);
        let mut fds: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        fds.sort_unstable();
        fds
    }

    #[test]
    fn stray_descriptors_are_closed_at_exec() {
        // the test harness itself may hold stray descriptors: held is one more
        assert_ne!(child_fds(|| Ok(())), [0, 1, 2]);
        assert_eq!(child_fds(|| cloexec_from(FIRST_NON_STDIO)), [0, 1, 2]);
        // the fallback for kernels without close_range
        assert_eq!(child_fds(|| cloexec_by_proc(FIRST_NON_STDIO)), [0, 1, 2]);
    }
}
