//! bubblewrap's init (pid 1 of the task's pid namespace) and the start gate.
//!
//! The parent-death signal chain is worker → bubblewrap (armed before exec, see
//! [`super::sandbox`]) → init → program. bubblewrap arms its init's only at the
//! end of the sandbox's set-up, milliseconds after creating it: a worker
//! SIGKILLed in between left the init orphaned, and it went on to run the
//! program with nobody to stop it (the escape suite reproduced it in about one
//! kill of two during start-up).
//!
//! So the program does not start until the worker has seen the init armed:
//! bubblewrap runs a gate (`/bin/sh`, a system binary every sandbox has) that
//! reads one line from stdin and only then `exec`s the program. The worker
//! writes that line ahead of the task once the init is blocked in `wait()`,
//! which bubblewrap's init reaches only after arming. A worker that dies before
//! closes stdin with it: the gate exits without running anything, and the init,
//! left without children, exits too.
//!
//! The same gate holds the program until its tree is in the task's cgroup:
//! bubblewrap and its init are moved in from outside while the init builds the
//! sandbox (a move may wait for an RCU grace period, which so overlaps the
//! set-up instead of preceding the spawn), and the line is written only once
//! bubblewrap, the init and the gate are read back from the cgroup's
//! `cgroup.procs`. Nothing forks meanwhile (the init waits, the gate reads), so
//! everything the program forks is inside.

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::cgroup::Placement;

/// What the worker writes to open the gate, before the task's JSON.
pub const GATE_LINE: &[u8] = b"jct-go\n";
/// The gate's interpreter and script: `$@` is the program and its arguments.
pub const GATE_SHELL: &str = "/bin/sh";
pub const GATE_SCRIPT: &str = r#"IFS= read -r go && [ "$go" = jct-go ] && exec "$@"; exit 125"#;
/// The gate's `$0`.
pub const GATE_NAME: &str = "jct-gate";
/// The gate's exit status when it was never opened (only seen by a worker
/// that gave up on the init).
pub const GATE_CLOSED_EXIT: i32 = 125;

/// How long the sandbox's set-up may take before the init must have armed.
const ARM_PATIENCE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_micros(100);

/// Why the gate stays closed when the init never armed.
const NOT_ARMED: &str = "the sandbox's init was not seen to arm its parent-death signal in time";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Gate {
    Closed,
    Open,
    /// Never to be opened, and why.
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Init {
    pid: i32,
    gate: Gate,
}

/// The task's cgroup, for a sandbox started outside it: bubblewrap (`bwrap`,
/// its pid) is moved in while it builds the sandbox, and the gate opens only
/// once bubblewrap, the init and the gate process are all proven inside (the
/// program is forked from the gate, so then nothing of it is ever outside).
#[derive(Debug)]
pub struct CgroupJoin {
    pub bwrap: i32,
    pub cgroup: Placement,
}

/// Follows the init of one run: its pid from bubblewrap's info pipe, then
/// whether it armed its parent-death signal (and its tree joined the task's
/// cgroup).
#[derive(Debug)]
pub struct InitWatch {
    state: watch::Receiver<Option<Init>>,
    task: AbortHandle,
}

impl InitWatch {
    /// Starts following the init whose pid bubblewrap writes to `info`.
    pub fn start(info: OwnedFd, join: Option<CgroupJoin>) -> InitWatch {
        let (tx, state) = watch::channel(None);
        let task = tokio::spawn(follow(info, tx, join)).abort_handle();
        InitWatch { state, task }
    }

    /// A second view of the same init (for the gate).
    pub fn view(&self) -> InitView {
        InitView(self.state.clone())
    }

    /// The init's pid, waiting up to `patience` for bubblewrap to report it.
    pub async fn pid(&mut self, patience: Duration) -> Option<i32> {
        let reported = self.state.wait_for(Option::is_some);
        let _ = tokio::time::timeout(patience, reported).await;
        // what the follower saw, if anything (it may have ended since)
        self.state.borrow().as_ref().map(|i| i.pid)
    }
}

impl Drop for InitWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the gate waits on.
#[derive(Debug)]
pub struct InitView(watch::Receiver<Option<Init>>);

impl InitView {
    /// Whether the gate may open: the init armed its parent-death signal (and
    /// the tree is in the task's cgroup). Otherwise why not (it never armed,
    /// bubblewrap failed before starting it, or the tree could not be moved).
    pub async fn opened(mut self) -> Result<(), String> {
        let decided = self
            .0
            .wait_for(|i| i.as_ref().is_some_and(|i| i.gate != Gate::Closed))
            .await
            .ok()
            .and_then(|state| state.as_ref().map(|i| i.gate.clone()));
        match decided {
            Some(Gate::Open) => Ok(()),
            Some(Gate::Refused(reason)) => Err(reason),
            Some(Gate::Closed) | None => Err(NOT_ARMED.to_string()),
        }
    }
}

async fn follow(info: OwnedFd, tx: watch::Sender<Option<Init>>, join: Option<CgroupJoin>) {
    let Some(pid) = read_pid(info).await else {
        return;
    };
    tx.send_replace(Some(Init {
        pid,
        gate: Gate::Closed,
    }));
    // one blocking thread for all of it: tokio's timer would round every poll
    // up to a millisecond, which the start-up of every task would pay
    let gate = tokio::task::spawn_blocking(move || decide(pid, join))
        .await
        .unwrap_or_else(|_| Gate::Refused(NOT_ARMED.to_string()));
    tx.send_replace(Some(Init { pid, gate }));
}

/// Whether the gate of the init `pid` may open. bubblewrap and the init are
/// moved into the task's cgroup first, while the init still builds the sandbox
/// (so the gate it forks later is born inside); then, once the init is armed
/// and waits (nothing forks until the gate opens), the whole tree is proven
/// inside.
fn decide(pid: i32, join: Option<CgroupJoin>) -> Gate {
    if let Some(join) = &join {
        // a failure here is settled (retried, or refused) by `ensure` below
        let _ = join.cgroup.adopt(join.bwrap);
        let _ = join.cgroup.adopt(pid);
    }
    if !wait_armed(pid) {
        return Gate::Refused(NOT_ARMED.to_string());
    }
    if let Some(join) = join {
        // the init's children listed once the init is proven inside: what it
        // forks from then on is inside too
        let placed = join
            .cgroup
            .ensure(&[join.bwrap, pid])
            .and_then(|()| join.cgroup.ensure(&children(pid)));
        if let Err(e) = placed {
            return Gate::Refused(format!(
                "cannot move the sandbox into the task's cgroup: {e}"
            ));
        }
    }
    Gate::Open
}

/// The children of `pid`: /proc/PID/task/PID/children, or a walk of /proc
/// where the kernel has no such file.
fn children(pid: i32) -> Vec<i32> {
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return text
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| parent_of(*child) == Some(pid))
        .collect()
}

fn parent_of(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// Polls until the init is past arming; false if it is gone, or if it was not
/// seen armed in time. An init whose state cannot be read (`/proc/PID/syscall`
/// hidden by ptrace restrictions) is not assumed armed: the gate exists to
/// prove it, so the program is refused rather than started unproven.
fn wait_armed(pid: i32) -> bool {
    wait_until_armed(|| probe(pid), ARM_PATIENCE, pid)
}

fn wait_until_armed(mut probe: impl FnMut() -> Probe, patience: Duration, pid: i32) -> bool {
    let deadline = std::time::Instant::now() + patience;
    let mut seen = false;
    loop {
        match probe() {
            Probe::Waiting => return true,
            // bubblewrap failed before the program: nothing to open
            Probe::Gone => return false,
            state @ (Probe::Busy | Probe::Unknown) => {
                seen |= state == Probe::Busy;
                if std::time::Instant::now() >= deadline {
                    if seen {
                        tracing::warn!(
                            pid,
                            "the sandbox's init did not arm in time; the program is not run"
                        );
                    } else {
                        tracing::warn!(
                            pid,
                            "cannot read whether the sandbox's init armed (/proc/PID/syscall); \
                             the program is not run"
                        );
                    }
                    return false;
                }
                std::thread::sleep(POLL);
            }
        }
    }
}

async fn read_pid(info: OwnedFd) -> Option<i32> {
    use tokio::io::AsyncReadExt;
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(info).ok()?;
    let mut text = Vec::new();
    let mut buf = [0u8; 512];
    // bubblewrap writes the info and closes its end; a failed setup closes it empty
    while text.len() < 64 * 1024 {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
    }
    super::bwrap::child_pid(&text)
}

#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// Blocked in wait(): past arming.
    Waiting,
    Busy,
    Gone,
    /// /proc does not say (not readable here).
    Unknown,
}

/// What `pid` is doing, from /proc/PID/syscall (the number of the system call
/// it is blocked in, or "running").
fn probe(pid: i32) -> Probe {
    match std::fs::read_to_string(format!("/proc/{pid}/syscall")) {
        Ok(text) => {
            let nr = text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<i64>().ok());
            if nr.is_some_and(is_wait) {
                Probe::Waiting
            } else if is_zombie(pid) {
                Probe::Gone
            } else {
                Probe::Busy
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Probe::Gone,
        Err(_) if std::fs::metadata(format!("/proc/{pid}")).is_err() => Probe::Gone,
        Err(_) => Probe::Unknown,
    }
}

fn is_wait(nr: i64) -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if nr == libc::SYS_wait4 {
        return true;
    }
    nr == libc::SYS_waitid
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rfind(')')
            .and_then(|i| stat.get(i + 2..i + 3))
            .is_some_and(|s| s == "Z" || s == "X")
    })
}

/// Kills the inits a previous incarnation of a worker left: a worker killed
/// while bubblewrap was creating the namespace leaves its init blocked for good
/// (it waits for a go from the bubblewrap that died, and never reaches the
/// program, whose gate also never opened). Found by their command line (our
/// gate's arguments), being in a pid namespace of their own, and a parent that
/// is not their bubblewrap. Returns how many were killed.
pub fn reap_orphaned() -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        if is_orphaned_init(pid)
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
            && rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

fn is_orphaned_init(pid: i32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args.first().is_some_and(|a| a.ends_with(b"bwrap"))
        && args
            .windows(2)
            .any(|w| w[0] == GATE_SCRIPT.as_bytes() && w[1] == GATE_NAME.as_bytes());
    if !ours {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
    };
    // the outer bubblewrap lives in the worker's pid namespace: one NSpid
    let nested = field("NSpid:").split_whitespace().count() > 1;
    let parent = field("PPid:");
    // a bubblewrap that is dying (its worker just died: the parent-death
    // signal) no longer holds its init; a reaper that runs at once sees it
    // still there. The task cgroup cannot catch that init: bubblewrap joins it
    // from outside, after this point of its start.
    let parent_is_its_live_bwrap = std::fs::read(format!("/proc/{parent}/cmdline"))
        .is_ok_and(|p| p == cmdline)
        && !dying(parent);
    nested && !parent_is_its_live_bwrap
}

/// Whether `pid` is on its way out: a SIGKILL queued and not yet acted on, or
/// already exiting (`PF_EXITING`).
fn dying(pid: &str) -> bool {
    const SIGKILL_BIT: u64 = 1 << (9 - 1);
    const PF_EXITING: u64 = 0x4;
    let pending = std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("SigPnd:")
                    .or_else(|| l.strip_prefix("ShdPnd:"))
            })
            .filter_map(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .any(|mask| mask & SIGKILL_BIT != 0)
    });
    // /proc/PID/stat: the flags are the 7th field after the command's ")"
    let exiting = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat.get(i + 1..))
            .and_then(|rest| rest.split_whitespace().nth(6))
            .and_then(|flags| flags.parse::<u64>().ok())
            .is_some_and(|flags| flags & PF_EXITING != 0)
    });
    pending || exiting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_init_that_cannot_be_seen_armed_keeps_the_gate_closed() {
        let patience = Duration::from_millis(20);
        assert!(!wait_until_armed(|| Probe::Unknown, patience, 1));
        assert!(!wait_until_armed(|| Probe::Busy, patience, 1));
        assert!(!wait_until_armed(|| Probe::Gone, patience, 1));
        let mut states = [Probe::Unknown, Probe::Busy, Probe::Waiting].into_iter();
        assert!(wait_until_armed(
            || states.next().unwrap_or(Probe::Gone),
            patience,
            1
        ));
    }

    #[test]
    fn a_running_process_is_not_dying() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id().to_string();
        assert!(!dying(&pid));
        assert!(!dying(&std::process::id().to_string()));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_process_blocked_in_wait_is_seen_waiting() {
        let mut parent = std::process::Command::new("sh")
            // a foreground command: the shell blocks in wait4/waitid
            .args(["-c", "sleep 30; true"])
            .spawn()
            .expect("sh");
        let pid = i32::try_from(parent.id()).expect("pid");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut seen = probe(pid);
        while seen == Probe::Busy && std::time::Instant::now() < deadline {
            std::thread::sleep(POLL);
            seen = probe(pid);
        }
        let _ = parent.kill();
        let _ = parent.wait();
        assert_eq!(seen, Probe::Waiting);
        assert_eq!(probe(pid), Probe::Gone);
    }
}
