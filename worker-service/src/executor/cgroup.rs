//! A cgroup per task: the bound on the processes and memory of the task as a
//! whole, which rlimits cannot give (RLIMIT_NPROC counts every process of a uid,
//! and the kernel ignores it for root; RLIMIT_AS is per process).
//!
//! cgroup v2 is used where the worker's own cgroup has the `pids` and `memory`
//! controllers delegated to it; otherwise the v1 `pids` and `memory` hierarchies
//! (hybrid hosts, such as this project's CI). The task's cgroup is made under the
//! worker's own, so a container's limits still apply above it.
//!
//! The program's first process joins the cgroup between fork and exec (through a
//! `cgroup.procs` descriptor opened here), so nothing it forks is ever outside.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::ResourceLimits;

const ROOT: &str = "/sys/fs/cgroup";
const MIB: u64 = 1024 * 1024;

/// The cgroup layout of this host, as seen from the worker's own cgroup.
#[derive(Debug, Clone)]
enum Layout {
    /// Unified hierarchy: the directory under which task cgroups are made.
    V2 { parent: PathBuf },
    /// Separate hierarchies: the worker's own directory in each (when mounted).
    V1 {
        pids: Option<PathBuf>,
        memory: Option<PathBuf>,
    },
}

/// A task's cgroup(s); removed by [`TaskCgroup::remove`].
#[derive(Debug)]
pub struct TaskCgroup {
    version: u8,
    pids: Option<PathBuf>,
    memory: Option<PathBuf>,
    /// `cgroup.procs` of each directory, opened for writing before the fork.
    procs: Vec<OwnedFd>,
}

/// What bounds each limit of one run.
#[derive(Debug, Default)]
pub struct Bounds {
    pub cgroup: Option<TaskCgroup>,
    /// Set when the processes limit could not get a cgroup (an rlimit stands in).
    pub processes_fallback: bool,
    pub memory_fallback: bool,
}

impl Bounds {
    /// Makes the cgroup(s) `limits` need. A limit without a cgroup controller is
    /// left to the caller's rlimit fallback (flagged here).
    pub fn for_limits(limits: &ResourceLimits) -> io::Result<Bounds> {
        if limits.processes.is_none() && limits.memory_mb.is_none() {
            return Ok(Bounds::default());
        }
        let layout = layout();
        let (pids_parent, memory_parent, version) = match &layout {
            Some(Layout::V2 { parent }) => (Some(parent.clone()), Some(parent.clone()), 2),
            Some(Layout::V1 { pids, memory }) => (pids.clone(), memory.clone(), 1),
            None => (None, None, 0),
        };
        let name = unique_name();
        let mut cgroup = TaskCgroup {
            version,
            pids: None,
            memory: None,
            procs: Vec::new(),
        };
        let mut bounds = Bounds::default();
        if let Some(max) = limits.processes {
            match &pids_parent {
                Some(parent) => {
                    let dir = cgroup.make(parent, &name)?;
                    // bubblewrap's own two processes are in the cgroup too
                    write(&dir, "pids.max", &max.saturating_add(2).to_string())?;
                    cgroup.pids = Some(dir);
                }
                None => bounds.processes_fallback = true,
            }
        }
        if let Some(mb) = limits.memory_mb {
            match &memory_parent {
                Some(parent) => {
                    let dir = cgroup.make(parent, &name)?;
                    let bytes = mb.saturating_mul(MIB).to_string();
                    if version == 2 {
                        write(&dir, "memory.max", &bytes)?;
                        // no escape into swap (absent without swap accounting)
                        let _ = write(&dir, "memory.swap.max", "0");
                    } else {
                        write(&dir, "memory.limit_in_bytes", &bytes)?;
                        if dir.join("memory.memsw.limit_in_bytes").exists() {
                            write(&dir, "memory.memsw.limit_in_bytes", &bytes)?;
                        }
                    }
                    cgroup.memory = Some(dir);
                }
                None => bounds.memory_fallback = true,
            }
        }
        if !cgroup.procs.is_empty() {
            bounds.cgroup = Some(cgroup);
        }
        Ok(bounds)
    }
}

impl TaskCgroup {
    /// Creates `<parent>/<name>` (once: v2 uses one directory for both) and
    /// opens its `cgroup.procs`.
    fn make(&mut self, parent: &Path, name: &str) -> io::Result<PathBuf> {
        let dir = parent.join(name);
        if self.pids.as_deref() == Some(dir.as_path()) {
            return Ok(dir);
        }
        fs::create_dir(&dir).map_err(|e| context(e, &dir))?;
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .map_err(|e| context(e, &dir))?;
        self.procs.push(procs.into());
        Ok(dir)
    }

    /// The `cgroup.procs` descriptors the child writes "0" to before exec.
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// e.g. "cgroup v1 pids.max=10".
    pub fn describe_processes(&self, max: u64) -> String {
        format!(
            "cgroup v{} (pids.max {} for the program, the sandbox's 2 processes besides)",
            self.version, max
        )
    }

    pub fn describe_memory(&self, mb: u64) -> String {
        format!(
            "cgroup v{} ({mb} MiB for the whole task, no swap)",
            self.version
        )
    }

    #[cfg(test)]
    pub fn has_pids(&self) -> bool {
        self.pids.is_some()
    }

    #[cfg(test)]
    pub fn has_memory(&self) -> bool {
        self.memory.is_some()
    }

    fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.pids.iter().chain(
            self.memory
                .iter()
                .filter(|m| Some(*m) != self.pids.as_ref()),
        )
    }

    /// The processes in the cgroup (empty when none or unreadable).
    fn members(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in self.dirs() {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids
    }

    /// SIGKILLs every member. The pid namespace already took the tree down;
    /// this is the second line.
    pub fn kill_all(&self) {
        if self.version == 2
            && let Some(dir) = self.dirs().next()
            && write(dir, "cgroup.kill", "1").is_ok()
        {
            return;
        }
        for pid in self.members() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }

    /// Whether the memory limit killed a process (v1 `memory.oom_control`,
    /// v2 `memory.events`).
    pub fn oom_killed(&self) -> bool {
        let Some(dir) = &self.memory else {
            return false;
        };
        let file = if self.version == 2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(dir.join(file)).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    }

    /// Kills what is left, waits (up to `patience`) until the cgroup is empty and
    /// removes it. Returns whether it was proven empty.
    pub async fn remove(self, patience: Duration) -> bool {
        let started = Instant::now();
        let mut empty = self.members().is_empty();
        while !empty && started.elapsed() < patience {
            self.kill_all();
            tokio::time::sleep(Duration::from_millis(5)).await;
            empty = self.members().is_empty();
        }
        let dirs: Vec<PathBuf> = self.dirs().cloned().collect();
        drop(self.procs);
        for dir in dirs {
            // an empty cgroup may take a moment to be released by the kernel
            for _ in 0..50 {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
        empty
    }
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    fs::write(dir.join(file), value).map_err(|e| context(e, &dir.join(file)))
}

fn context(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

const PREFIX: &str = "jct-task-";

/// `jct-task-<incarnation>-<n>`: the worker that made it is known from the name,
/// so a later incarnation can tell its leftovers from a live worker's.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{PREFIX}{}-{}",
        own_incarnation(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// This worker process: its pid and start time (a reused pid is another one).
fn own_incarnation() -> &'static str {
    static OWN: OnceLock<String> = OnceLock::new();
    OWN.get_or_init(|| {
        incarnation_of(std::process::id()).unwrap_or_else(|| std::process::id().to_string())
    })
}

/// `<pid>.<start time in clock ticks since boot>` of a live process.
fn incarnation_of(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the fields after the command name (which may hold spaces) start at 3;
    // the start time is field 22
    let fields = stat.get(stat.rfind(')')? + 2..)?;
    let start = fields.split_whitespace().nth(22 - 3)?;
    Some(format!("{pid}.{start}"))
}

/// Whether the task cgroup `name` was made by a worker that no longer runs.
fn is_stale(name: &str) -> bool {
    let Some((incarnation, _)) = name
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.rsplit_once('-'))
    else {
        return false;
    };
    if incarnation == own_incarnation() {
        return false;
    }
    let pid = incarnation.split('.').next().unwrap_or_default();
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if incarnation.contains('.') {
        incarnation_of(pid).as_deref() != Some(incarnation)
    } else {
        // a name without a start time (an older worker): stale once its pid is gone
        !Path::new(&format!("/proc/{pid}")).exists()
    }
}

/// Kills and removes the task cgroups a previous incarnation of a worker left
/// (one SIGKILLed while its programs ran, in the moment before their
/// parent-death signal was armed). Returns how many were found.
pub async fn reap_stale(patience: Duration) -> usize {
    let (version, parents) = match layout() {
        Some(Layout::V2 { parent }) => (2, vec![parent]),
        Some(Layout::V1 { pids, memory }) => (1, pids.into_iter().chain(memory).collect()),
        None => return 0,
    };
    let mut reaped = 0;
    for parent in parents {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_str().is_some_and(is_stale) || !entry.path().is_dir() {
                continue;
            }
            let stale = TaskCgroup {
                version,
                pids: Some(entry.path()),
                memory: None,
                procs: Vec::new(),
            };
            if !stale.remove(patience).await {
                tracing::warn!(cgroup = %entry.path().display(), "a stale task cgroup did not empty in time");
            }
            reaped += 1;
        }
    }
    reaped
}

/// The host's layout, found once.
fn layout() -> Option<Layout> {
    static LAYOUT: OnceLock<Option<Layout>> = OnceLock::new();
    LAYOUT.get_or_init(detect).clone()
}

fn detect() -> Option<Layout> {
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let root = Path::new(ROOT);
    if root.join("cgroup.controllers").exists() {
        let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        return v2_parent(&root.join(path.trim_start_matches('/')));
    }
    let mut pids = None;
    let mut memory = None;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        for controller in controllers.split(',') {
            let dir = root.join(controller).join(path.trim_start_matches('/'));
            let usable = dir.join("cgroup.procs").exists() && writable(&dir);
            match controller {
                "pids" if usable => pids = Some(dir),
                "memory" if usable => memory = Some(dir),
                _ => {}
            }
        }
    }
    (pids.is_some() || memory.is_some()).then_some(Layout::V1 { pids, memory })
}

/// cgroup v2: task cgroups go beside the worker's own, under a parent with
/// `pids` and `memory` enabled for its children. A cgroup with processes cannot
/// enable controllers for children, so the worker first moves itself into a leaf
/// `jct-worker` of its own cgroup (what systemd's delegation expects).
fn v2_parent(own: &Path) -> Option<Layout> {
    let controllers = fs::read_to_string(own.join("cgroup.controllers")).ok()?;
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if !(has("pids") && has("memory") && writable(own)) {
        return None;
    }
    let enable = || fs::write(own.join("cgroup.subtree_control"), "+pids +memory");
    if enable().is_err() {
        let leaf = own.join("jct-worker");
        if let Err(e) = fs::create_dir(&leaf)
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            return None;
        }
        fs::write(leaf.join("cgroup.procs"), std::process::id().to_string()).ok()?;
        enable().ok()?;
    }
    Some(Layout::V2 {
        parent: own.to_path_buf(),
    })
}

fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_limits_no_cgroup() {
        let bounds = Bounds::for_limits(&ResourceLimits::default()).expect("bounds");
        assert!(bounds.cgroup.is_none());
        assert!(!bounds.processes_fallback && !bounds.memory_fallback);
    }

    #[test]
    fn leftovers_are_told_from_live_workers() {
        assert!(!is_stale(&unique_name()));
        assert!(!is_stale("user.slice"));
        assert!(!is_stale("jct-worker"));
        // a live worker's, and an older worker's name while its pid lives
        let pid1 = incarnation_of(1).expect("pid 1");
        assert!(!is_stale(&format!("{PREFIX}{pid1}-0")));
        // beyond the largest pid Linux allows: gone
        assert!(is_stale(&format!("{PREFIX}4194305.17-3")));
        assert!(is_stale(&format!("{PREFIX}4194305-3")));
        assert!(!is_stale(&format!("{PREFIX}1-3")));
    }

    /// A program left in the cgroup of a dead worker incarnation is killed and
    /// the cgroup removed when the next one starts.
    #[tokio::test]
    async fn a_dead_incarnations_cgroups_are_killed_and_removed() {
        let parents = match layout() {
            Some(Layout::V2 { parent }) => vec![parent],
            Some(Layout::V1 { pids, memory }) => pids.into_iter().chain(memory).collect(),
            None => {
                eprintln!("skipped: this host delegates no cgroup to the worker");
                return;
            }
        };
        let name = format!("{PREFIX}4194305.{}-0", rand::random::<u32>());
        let mut sleeper = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep");
        let dirs: Vec<PathBuf> = parents.iter().map(|p| p.join(&name)).collect();
        for dir in &dirs {
            fs::create_dir(dir).expect("stale cgroup");
            write(dir, "cgroup.procs", &sleeper.id().to_string()).expect("join");
        }
        assert!(reap_stale(Duration::from_secs(5)).await >= dirs.len());
        let status = sleeper.wait().expect("reaped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(dirs.iter().all(|d| !d.exists()));
    }

    #[tokio::test]
    async fn a_limit_makes_a_cgroup_or_flags_the_fallback() {
        let limits = ResourceLimits {
            processes: Some(5),
            memory_mb: Some(64),
            file_size_mb: None,
        };
        let bounds = Bounds::for_limits(&limits).expect("bounds");
        match bounds.cgroup {
            Some(cgroup) => {
                assert_eq!(cgroup.has_pids(), !bounds.processes_fallback);
                assert_eq!(cgroup.has_memory(), !bounds.memory_fallback);
                let dirs: Vec<PathBuf> = cgroup.dirs().cloned().collect();
                assert!(dirs.iter().all(|d| d.is_dir()));
                assert!(cgroup.remove(Duration::from_secs(1)).await);
                assert!(dirs.iter().all(|d| !d.exists()));
            }
            None => assert!(bounds.processes_fallback && bounds.memory_fallback),
        }
    }
}
