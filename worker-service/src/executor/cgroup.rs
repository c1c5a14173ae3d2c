//! A cgroup per task: the bound on the processes, memory and CPU of the task as
//! a whole, which rlimits cannot give (RLIMIT_NPROC counts every process of a
//! uid, and the kernel ignores it for root; RLIMIT_AS and RLIMIT_CPU are per
//! process).
//!
//! cgroup v2 is used where the worker's own cgroup has the `pids` and `memory`
//! controllers delegated to it (and `cpu` when it is too); otherwise the v1
//! `pids`, `memory` and `cpu` hierarchies (hybrid hosts, such as this project's
//! CI). The task's cgroup is made under the worker's own, so a container's
//! limits still apply above it.
//!
//! A plain program's first process joins the cgroup between fork and exec
//! (through a `cgroup.procs` descriptor opened here), so nothing it forks is ever
//! outside. A sandboxed one is moved in from outside while bubblewrap builds the
//! sandbox ([`Placement`]); its start gate opens only once bubblewrap, the init
//! and the gate process are proven inside (see `init`), so nothing the program
//! forks is ever outside either.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::{ResourceLimits, cpus_text};

const MIB: u64 = 1024 * 1024;
/// The CFS period the CPU quota is a share of (the kernel's default, 100 ms).
const CPU_PERIOD_US: u64 = 100_000;

/// The cgroup layout of this host, as seen from the worker's own cgroup.
#[derive(Debug, Clone)]
enum Layout {
    /// Unified hierarchy: the directory under which task cgroups are made, and
    /// whether `cpu` is enabled there too.
    V2 { parent: PathBuf, cpu: bool },
    /// Separate hierarchies: the worker's own directory in each (when mounted
    /// and writable).
    V1 {
        pids: Option<PathBuf>,
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
}

impl Layout {
    fn parents(&self) -> Vec<PathBuf> {
        match self {
            Layout::V2 { parent, .. } => vec![parent.clone()],
            Layout::V1 { pids, memory, cpu } => {
                let mut all: Vec<PathBuf> = Vec::new();
                for dir in [pids, memory, cpu].into_iter().flatten() {
                    if !all.contains(dir) {
                        all.push(dir.clone());
                    }
                }
                all
            }
        }
    }
}

/// A task's cgroup(s); removed by [`TaskCgroup::remove`].
#[derive(Debug)]
pub struct TaskCgroup {
    version: u8,
    pids: Option<PathBuf>,
    memory: Option<PathBuf>,
    cpu: Option<PathBuf>,
    /// Every directory made (v2: one for all controllers), in order.
    made: Vec<PathBuf>,
    /// `cgroup.procs` of each directory, opened for writing before the fork.
    procs: Vec<OwnedFd>,
}

/// What bounds each limit of one run.
#[derive(Debug, Default)]
pub struct Bounds {
    pub cgroup: Option<TaskCgroup>,
    /// Set when the processes limit could not get a cgroup: what is missing.
    pub processes_missing: Option<String>,
    pub memory_missing: Option<String>,
    pub cpu_missing: Option<String>,
}

impl Bounds {
    /// Makes the cgroup(s) `limits` need under the cgroup filesystem at `root`.
    /// A limit without a cgroup controller is left to the caller (refused, or an
    /// rlimit stands in), which is told what is missing.
    pub fn for_limits(limits: &ResourceLimits, root: &Path) -> io::Result<Bounds> {
        if limits.processes.is_none() && limits.memory_mb.is_none() && limits.cpu_millis.is_none() {
            return Ok(Bounds::default());
        }
        let layout = layout(root);
        let (pids_parent, memory_parent, cpu_parent, version) = match &layout {
            Some(Layout::V2 { parent, cpu }) => (
                Some(parent.clone()),
                Some(parent.clone()),
                cpu.then(|| parent.clone()),
                2,
            ),
            Some(Layout::V1 { pids, memory, cpu }) => {
                (pids.clone(), memory.clone(), cpu.clone(), 1)
            }
            None => (None, None, None, 0),
        };
        let missing = |controller: &str| match &layout {
            None => format!(
                "this host delegates no cgroup to the worker under {} (neither cgroup v2 \
                 with pids and memory enabled for the worker's own cgroup, nor a writable \
                 v1 hierarchy)",
                root.display()
            ),
            Some(Layout::V2 { .. }) => format!(
                "the worker's cgroup v2 under {} has no {controller} controller delegated",
                root.display()
            ),
            Some(Layout::V1 { .. }) => format!(
                "no writable cgroup v1 {controller} hierarchy for the worker under {}",
                root.display()
            ),
        };
        let name = unique_name();
        let mut cgroup = TaskCgroup {
            version,
            pids: None,
            memory: None,
            cpu: None,
            made: Vec::new(),
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
                None => bounds.processes_missing = Some(missing("pids")),
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
                None => bounds.memory_missing = Some(missing("memory")),
            }
        }
        if let Some(millis) = limits.cpu_millis {
            match &cpu_parent {
                Some(parent) => {
                    let dir = cgroup.make(parent, &name)?;
                    let quota = cpu_quota_us(millis).to_string();
                    if version == 2 {
                        write(&dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
                    } else {
                        write(&dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                        write(&dir, "cpu.cfs_quota_us", &quota)?;
                    }
                    cgroup.cpu = Some(dir);
                }
                None => bounds.cpu_missing = Some(missing("cpu")),
            }
        }
        if !cgroup.procs.is_empty() {
            bounds.cgroup = Some(cgroup);
        }
        Ok(bounds)
    }
}

/// The CFS quota per period for `millis` thousandths of a CPU (at least the
/// kernel's minimum of 1 ms).
fn cpu_quota_us(millis: u64) -> u64 {
    millis.saturating_mul(CPU_PERIOD_US / 1000).max(1000)
}

impl TaskCgroup {
    /// Creates `<parent>/<name>` (once: v2 uses one directory for both) and
    /// opens its `cgroup.procs`.
    fn make(&mut self, parent: &Path, name: &str) -> io::Result<PathBuf> {
        let dir = parent.join(name);
        if self.made.contains(&dir) {
            return Ok(dir);
        }
        fs::create_dir(&dir).map_err(|e| context(e, &dir))?;
        self.made.push(dir.clone());
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

    pub fn describe_cpu(&self, millis: u64) -> String {
        let file = if self.version == 2 {
            "cpu.max"
        } else {
            "cpu.cfs_quota_us"
        };
        format!(
            "cgroup v{} ({file}: {} CPU for the whole task, {} µs per {CPU_PERIOD_US} µs)",
            self.version,
            cpus_text(millis),
            cpu_quota_us(millis)
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

    #[cfg(test)]
    pub fn has_cpu(&self) -> bool {
        self.cpu.is_some()
    }

    fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.made.iter()
    }

    /// The processes in the cgroup (empty when none or unreadable).
    fn members(&self) -> Vec<i32> {
        self.dirs().flat_map(|dir| read_members(dir)).collect()
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
        // on a blocking thread: the kernel releases a just-reaped tree's cgroup
        // within a few hundred microseconds, finer than tokio's 1 ms timer
        tokio::task::spawn_blocking(move || self.remove_blocking(patience))
            .await
            .unwrap_or(false)
    }

    fn remove_blocking(mut self, patience: Duration) -> bool {
        let started = Instant::now();
        let mut pause = Backoff::default();
        let mut empty = self.members().is_empty();
        while !empty && started.elapsed() < patience {
            self.kill_all();
            pause.sleep();
            empty = self.members().is_empty();
        }
        self.procs.clear();
        for dir in std::mem::take(&mut self.made) {
            // an empty cgroup may take a moment to be released by the kernel
            // (EBUSY right after the last member was reaped)
            let mut pause = Backoff::default();
            let started = Instant::now();
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) if started.elapsed() >= RMDIR_PATIENCE => break,
                    Err(_) => pause.sleep(),
                }
            }
        }
        empty
    }

    /// A second handle on the cgroup's `cgroup.procs`, to move a started process
    /// tree in from outside (see [`Placement`]).
    pub fn placement(&self) -> io::Result<Placement> {
        let mut procs = Vec::new();
        for fd in &self.procs {
            procs.push(fd.try_clone()?);
        }
        Ok(Placement {
            dirs: self.made.clone(),
            procs,
        })
    }
}

/// How long an emptied cgroup's directory may stay busy before it is left to
/// [`reap_stale`].
const RMDIR_PATIENCE: Duration = Duration::from_millis(250);

/// Sleeps of 50 µs doubling up to 5 ms: what the kernel usually needs is well
/// under a millisecond, what it may need under load is longer.
#[derive(Debug)]
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_micros(50))
    }
}

impl Backoff {
    fn sleep(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(5));
    }
}

/// Moves processes into a task's cgroup from outside (by pid), for a tree
/// started before it joins: a move may wait for an RCU grace period (the cgroup
/// threadgroup lock), milliseconds on a busy host, which then overlaps the
/// sandbox's set-up instead of preceding the spawn.
#[derive(Debug)]
pub struct Placement {
    dirs: Vec<PathBuf>,
    procs: Vec<OwnedFd>,
}

impl Placement {
    /// Moves `pid` (the whole process) into every hierarchy of the cgroup.
    pub fn adopt(&self, pid: i32) -> io::Result<()> {
        let text = pid.to_string();
        for (fd, dir) in self.procs.iter().zip(&self.dirs) {
            rustix::io::write(fd, text.as_bytes())
                .map_err(|e| context(e.into(), &dir.join("cgroup.procs")))?;
        }
        Ok(())
    }

    /// Makes sure every one of `pids` is in every hierarchy of the cgroup
    /// (moving those that are not), and proves it by reading each
    /// `cgroup.procs` back.
    pub fn ensure(&self, pids: &[i32]) -> io::Result<()> {
        for (fd, dir) in self.procs.iter().zip(&self.dirs) {
            let members = read_members(dir);
            for pid in pids.iter().filter(|p| !members.contains(p)) {
                rustix::io::write(fd, pid.to_string().as_bytes())
                    .map_err(|e| context(e.into(), &dir.join("cgroup.procs")))?;
            }
        }
        for dir in &self.dirs {
            let members = read_members(dir);
            if let Some(pid) = pids.iter().find(|p| !members.contains(p)) {
                return Err(io::Error::other(format!(
                    "process {pid} is not in {} after being moved there",
                    dir.display()
                )));
            }
        }
        Ok(())
    }
}

/// The pids listed in `dir`'s `cgroup.procs` (empty when unreadable).
fn read_members(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for TaskCgroup {
    /// A cgroup given up before its program started (a refused or failed start)
    /// is empty and goes at once; one that still has processes stays for the
    /// next worker's start to reap ([`reap_stale`]).
    fn drop(&mut self) {
        self.procs.clear();
        for dir in &self.made {
            let _ = fs::remove_dir(dir);
        }
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
/// parent-death signal was armed), under the cgroup filesystem at `root`.
/// Returns how many were found.
pub async fn reap_stale(root: &Path, patience: Duration) -> usize {
    let Some(layout) = layout(root) else {
        return 0;
    };
    let version = match layout {
        Layout::V2 { .. } => 2,
        Layout::V1 { .. } => 1,
    };
    let mut reaped = 0;
    for parent in layout.parents() {
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
                pids: None,
                memory: None,
                cpu: None,
                made: vec![entry.path()],
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

/// The layout under `root`, found once per root (finding it may move the
/// worker into a leaf cgroup, which must happen once).
fn layout(root: &Path) -> Option<Layout> {
    static LAYOUTS: Mutex<Vec<(PathBuf, Option<Layout>)>> = Mutex::new(Vec::new());
    let mut known = LAYOUTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, layout)) = known.iter().find(|(r, _)| r == root) {
        return layout.clone();
    }
    let layout = detect(root);
    known.push((root.to_path_buf(), layout.clone()));
    layout
}

fn detect(root: &Path) -> Option<Layout> {
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    if root.join("cgroup.controllers").exists() {
        let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        return v2_parent(&root.join(path.trim_start_matches('/')));
    }
    let mut pids = None;
    let mut memory = None;
    let mut cpu = None;
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
                "cpu" if usable && dir.join("cpu.cfs_quota_us").exists() => cpu = Some(dir),
                _ => {}
            }
        }
    }
    (pids.is_some() || memory.is_some() || cpu.is_some()).then_some(Layout::V1 {
        pids,
        memory,
        cpu,
    })
}

/// cgroup v2: task cgroups go beside the worker's own, under a parent with
/// `pids` and `memory` (and `cpu` where delegated) enabled for its children. A
/// cgroup with processes cannot enable controllers for children, so the worker
/// first moves itself into a leaf `jct-worker` of its own cgroup (what
/// systemd's delegation expects).
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
    // CPU is bounded per process (RLIMIT_CPU) where it is not delegated
    let cpu = has("cpu") && fs::write(own.join("cgroup.subtree_control"), "+cpu").is_ok();
    Some(Layout::V2 {
        parent: own.to_path_buf(),
        cpu,
    })
}

fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/sys/fs/cgroup";

    #[test]
    fn no_limits_no_cgroup() {
        let bounds =
            Bounds::for_limits(&ResourceLimits::default(), Path::new(ROOT)).expect("bounds");
        assert!(bounds.cgroup.is_none());
        assert!(bounds.processes_missing.is_none() && bounds.memory_missing.is_none());
        assert!(bounds.cpu_missing.is_none());
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
        let parents = match layout(Path::new(ROOT)) {
            Some(layout) => layout.parents(),
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
        assert!(reap_stale(Path::new(ROOT), Duration::from_secs(5)).await >= dirs.len());
        let status = sleeper.wait().expect("reaped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(dirs.iter().all(|d| !d.exists()));
    }

    const LIMITS: ResourceLimits = ResourceLimits {
        processes: Some(5),
        memory_mb: Some(64),
        cpu_millis: Some(500),
        file_size_mb: None,
    };

    #[tokio::test]
    async fn a_limit_makes_a_cgroup_or_says_what_is_missing() {
        let bounds = Bounds::for_limits(&LIMITS, Path::new(ROOT)).expect("bounds");
        match bounds.cgroup {
            Some(cgroup) => {
                assert_eq!(cgroup.has_pids(), bounds.processes_missing.is_none());
                assert_eq!(cgroup.has_memory(), bounds.memory_missing.is_none());
                assert_eq!(cgroup.has_cpu(), bounds.cpu_missing.is_none());
                if let Some(dir) = &cgroup.cpu {
                    let file = if cgroup.version == 2 {
                        "cpu.max"
                    } else {
                        "cpu.cfs_quota_us"
                    };
                    let quota = fs::read_to_string(dir.join(file)).expect("quota");
                    assert!(quota.starts_with("50000"), "{quota}");
                }
                let dirs: Vec<PathBuf> = cgroup.dirs().cloned().collect();
                assert!(dirs.iter().all(|d| d.is_dir()));
                assert!(cgroup.remove(Duration::from_secs(1)).await);
                assert!(dirs.iter().all(|d| !d.exists()));
            }
            None => assert!(bounds.processes_missing.is_some() && bounds.memory_missing.is_some()),
        }
    }

    /// A cgroup root that is not a cgroup filesystem: every limit is missing,
    /// and the reason names the root.
    #[test]
    fn an_unusable_root_names_what_is_missing() {
        let root = tempfile::tempdir().expect("root");
        let bounds = Bounds::for_limits(&LIMITS, root.path()).expect("bounds");
        assert!(bounds.cgroup.is_none());
        let memory = bounds.memory_missing.expect("memory missing");
        assert!(
            memory.contains(&root.path().display().to_string()),
            "{memory}"
        );
        assert!(bounds.processes_missing.is_some() && bounds.cpu_missing.is_some());
    }

    #[test]
    fn cpu_quota() {
        assert_eq!(cpu_quota_us(1000), 100_000);
        assert_eq!(cpu_quota_us(250), 25_000);
        assert_eq!(cpu_quota_us(2500), 250_000);
        assert_eq!(cpu_quota_us(1), 1000);
    }
}
