//! The escape suite: the `command` executor's program is untrusted code, and each
//! test here is an attack it tries, run as the task program by a real worker
//! against a real intake (or, where the intake cannot be made to send the
//! assignment or the worker must die for real, by the executor directly).
//! Every test asserts the attack failed. What an attack plants on the host is
//! removed again whether it succeeded or not.
//!
//! See contract-v1-trust.md, "What a task program can reach".

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jct::v1 as pb;
use jct_e2e::{
    IntakeHandle, WorkerHandle, enqueue_request, eventually, intake_config, on_both_backends,
    task_client, worker_config,
};
use serde_json::Value as Json;
use worker_service::config::WorkerConfig;
use worker_service::executor::ExecutorKind;

type Client = pb::task_service_client::TaskServiceClient<tonic::transport::Channel>;

/// A unique string for this test run: planted secrets, process markers, file names.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A `sleep` argument no other process on the host has: its process is found by it.
fn sleep_marker() -> String {
    let n = uuid::Uuid::new_v4().as_u128() % 1_000_000_000;
    format!("3600.{n:09}")
}

/// Host processes whose command line contains `needle`.
fn host_processes_with(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .is_ok_and(|c| c.contains(needle))
                && !is_zombie(*pid)
        })
        .collect()
}

/// How many `sleep` processes with `marker` run: the program itself is running
/// (bubblewrap's own processes carry the marker in their arguments earlier).
fn sleeping_with(marker: &str) -> usize {
    host_processes_with(marker)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
        })
        .count()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rfind(')')
            .and_then(|i| stat.get(i + 2..i + 3))
            .is_some_and(|s| s == "Z" || s == "X")
    })
}

/// Asserts that no process with `marker` in its command line survives (within a
/// short grace for the kernel to finish killing), killing survivors so that a
/// failed test leaves nothing behind.
async fn assert_no_survivors(marker: &str) {
    let gone = eventually(Duration::from_secs(3), || async {
        host_processes_with(marker).is_empty().then_some(())
    })
    .await;
    let survivors = host_processes_with(marker);
    // what each survivor was, for the failure message (before it is killed)
    let described: Vec<String> = survivors
        .iter()
        .map(|pid| {
            let status = read_lossy(Path::new(&format!("/proc/{pid}/status")));
            let ppid = status.lines().find(|l| l.starts_with("PPid"));
            let cmdline = read_lossy(Path::new(&format!("/proc/{pid}/cmdline")));
            format!("{pid} ({:?}, {ppid:?})", cmdline.replace('\0', " "))
        })
        .collect();
    for pid in &survivors {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(
        gone.is_some(),
        "processes of the program outlived it: {described:?}"
    );
}

/// Removes planted host files when dropped.
struct Planted(Vec<PathBuf>);

impl Drop for Planted {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// One intake (SQLite, or the backend given) and one `command` worker running
/// `program` under `sh -c`.
struct Case {
    intake: IntakeHandle,
    client: Client,
    traces: tempfile::TempDir,
    scratch: tempfile::TempDir,
    _db: Option<tempfile::TempDir>,
}

impl Case {
    fn new() -> Case {
        let db = tempfile::tempdir().expect("db dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            db.path().join("intake.db").display()
        );
        Case::with_database(&url, Some(db))
    }

    fn with_database(url: &str, db: Option<tempfile::TempDir>) -> Case {
        let intake = IntakeHandle::start(intake_config(url), "127.0.0.1:0".parse().expect("addr"))
            .expect("intake");
        let client = task_client(intake.addr);
        Case {
            intake,
            client,
            traces: tempfile::tempdir().expect("traces"),
            scratch: jct_e2e::scratch_dir(),
            _db: db,
        }
    }

    fn trace_root(&self) -> PathBuf {
        self.traces.path().canonicalize().expect("trace root")
    }

    fn workspace_root(&self) -> PathBuf {
        self.scratch.path().join("workspaces")
    }

    fn worker(&self, script: &str) -> WorkerConfig {
        let mut config = worker_config(&self.intake.url(), self.traces.path());
        config.executor = ExecutorKind::Command;
        config.executor_command = Some(shell_words::join(["sh", "-c", script]));
        config.workspace_root = Some(self.workspace_root());
        config.shutdown_grace_seconds = 1;
        config
    }

    /// A local git base with `myorg/service.git` holding one commit on `main`.
    fn git_base(&self) -> PathBuf {
        let base = self.scratch.path().join("git");
        let bare = base.join("myorg/service.git");
        std::fs::create_dir_all(&bare).expect("bare dir");
        git(&bare, &["init", "--bare", "-q"]);
        let seed = self.scratch.path().join("seed");
        std::fs::create_dir_all(&seed).expect("seed dir");
        git(&seed, &["init", "-q"]);
        std::fs::write(seed.join("README.md"), "# service\n").expect("readme");
        git(&seed, &["add", "."]);
        git(&seed, &["commit", "-q", "-m", "initial"]);
        let target = bare.to_str().expect("utf-8").to_string();
        git(&seed, &["push", "-q", &target, "HEAD:refs/heads/main"]);
        base
    }

    async fn enqueue(&self) -> String {
        let mut client = self.client.clone();
        client
            .enqueue(enqueue_request("Try to escape"))
            .await
            .expect("enqueue")
            .into_inner()
            .task_id
    }

    async fn settled(&self, id: &str, patience: Duration) -> Option<pb::Task> {
        jct_e2e::wait_for_task(&self.client, id, patience, |task| {
            matches!(task.status.as_str(), "completed" | "failed" | "cancelled")
        })
        .await
    }

    /// Runs one task with a worker made from `config`; returns what it left.
    async fn run(&self, config: WorkerConfig) -> Outcome {
        let worker = WorkerHandle::start(config);
        let id = self.enqueue().await;
        let task = self
            .settled(&id, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("task {id} did not finish"));
        worker.stop().await.expect("worker stops");
        self.outcome(task)
    }

    fn outcome(&self, task: pb::Task) -> Outcome {
        let trace = self.trace_root().join(&task.id);
        Outcome {
            stdout: read_lossy(&trace.join("stdout.log")),
            stderr: read_lossy(&trace.join("stderr.log")),
            manifest: serde_json::from_str(&read_lossy(&trace.join("manifest.json")))
                .unwrap_or(Json::Null),
            trace,
            task,
        }
    }

    async fn finish(self) {
        self.intake.stop().await.expect("intake stops");
    }
}

struct Outcome {
    task: pb::Task,
    trace: PathBuf,
    stdout: String,
    stderr: String,
    manifest: Json,
}

impl Outcome {
    fn error_code(&self) -> String {
        self.task
            .error
            .as_ref()
            .map(|e| e.code.clone())
            .unwrap_or_default()
    }

    /// The program ran (it printed `started`), so a passing assertion is not
    /// just a sandbox that refused to start.
    fn assert_ran(&self) {
        assert!(
            self.stdout.contains("started"),
            "the program did not run: {:?} {:?} {:?}",
            self.task.error,
            self.stdout,
            self.stderr
        );
    }
}

/// Hands a workspace made by the test to the sandbox's uid, as the worker does.
fn own_for_the_sandbox(workspace: &Path) {
    let sandbox = worker_service::executor::SandboxConfig::default();
    if let Some(uid) = worker_service::executor::sandbox::workspace_owner(&sandbox) {
        std::os::unix::fs::lchown(workspace, Some(uid), Some(uid)).expect("chown");
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@localhost",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

// ---------------------------------------------------------------------------------
// Capabilities and namespaces

#[tokio::test(flavor = "multi_thread")]
async fn no_capabilities_and_no_way_back_to_the_host_network() {
    let case = Case::new();
    let script = "echo started; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status; \
                  for t in /proc/$PPID/ns/net /proc/1/ns/net; do \
                    nsenter --net=$t sh -c 'echo ESCAPED-NETNS' 2>&1; done; \
                  unshare -U -r sh -c 'echo NEW-USERNS-ROOT' 2>&1; true";
    let out = case.run(case.worker(script)).await;
    out.assert_ran();
    assert!(!out.stdout.contains("ESCAPED-NETNS"), "{}", out.stdout);
    assert!(!out.stdout.contains("NEW-USERNS-ROOT"), "{}", out.stdout);
    for cap in ["CapEff", "CapPrm", "CapBnd"] {
        assert!(
            out.stdout.contains(&format!("{cap}:\t0000000000000000")),
            "{cap}: {}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("NoNewPrivs:\t1"), "{}", out.stdout);
    case.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_environment_and_host_command_lines_are_unreadable() {
    let case = Case::new();
    let secret = unique("jct-planted-secret");
    // a host process with a secret on its command line (as git's credentials were)
    let mut decoy = Command::new("sh")
        .args(["-c", "sleep 30", &secret])
        .spawn()
        .expect("decoy");
    let script = "echo started; tr '\\0' '\\n' < /proc/$PPID/environ; \
                  for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done 2>/dev/null; \
                  for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null; true";
    let out = case.run(case.worker(script)).await;
    let _ = decoy.kill();
    let _ = decoy.wait();
    out.assert_ran();
    assert!(!out.stdout.contains(&secret), "host argv leaked");
    // cargo puts CARGO_MANIFEST_DIR in this process's (the worker's) environment
    assert!(
        !out.stdout.contains("CARGO_MANIFEST_DIR"),
        "the worker's environment leaked: {}",
        out.stdout
    );
    case.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_tcp_ports_and_unix_sockets_are_unreachable() {
    let case = Case::new();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
    let port = tcp.local_addr().expect("port").port();
    let socket = case.scratch.path().join("host.sock");
    let _unix = std::os::unix::net::UnixListener::bind(&socket).expect("unix");
    let script = format!(
        r#"echo started; /usr/bin/python3 - <<'EOF'
import socket
for name, family, addr in [('tcp', socket.AF_INET, ('127.0.0.1', {port})),
                           ('unix', socket.AF_UNIX, '{socket}'),
                           ('postgres', socket.AF_UNIX, '/var/run/postgresql/.s.PGSQL.5432')]:
    try:
        s = socket.socket(family); s.settimeout(2); s.connect(addr); print('CONNECTED', name)
    except OSError as e:
        print('refused', name, e)
EOF"#,
        socket = socket.display()
    );
    let out = case.run(case.worker(&script)).await;
    out.assert_ran();
    assert!(
        out.stdout.contains("refused unix"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    assert!(!out.stdout.contains("CONNECTED"), "{}", out.stdout);
    case.finish().await;
}

// ---------------------------------------------------------------------------------
// The filesystem

#[tokio::test(flavor = "multi_thread")]
async fn the_git_base_is_out_of_reach() {
    let case = Case::new();
    let base = case.git_base();
    let bare = base.join("myorg/service.git");
    let before = git(&bare, &["rev-parse", "refs/heads/main"]);
    let script = format!(
        "echo started; echo pwned > {bare}/PLANTED; mkdir -p {base}/myorg/evil.git; \
         git -c user.name=x -c user.email=x@x commit -q --allow-empty -m evil; \
         git push -q {bare} HEAD:refs/heads/main 2>&1; true",
        bare = bare.display(),
        base = base.display()
    );
    let mut config = case.worker(&script);
    config.git_base = Some(base.display().to_string());
    let out = case.run(config).await;
    out.assert_ran();
    assert!(!bare.join("PLANTED").exists(), "wrote into the git base");
    assert!(
        !base.join("myorg/evil.git").exists(),
        "wrote into the git base"
    );
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/main"]), before);
    case.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_trace_folder_is_written_by_the_worker_alone() {
    let case = Case::new();
    let victim = case.scratch.path().join("victim.txt");
    std::fs::write(&victim, "original\n").expect("victim");
    let root = case.trace_root();
    let script = format!(
        "echo started; for d in \"$JCT_TRACE_DIR\" {root}/*; do \
           [ -n \"$d\" ] || continue; echo x > \"$d/PLANTED\"; \
           for f in result.json error.json manifest.json diff.patch stderr.log; do \
             rm -f \"$d/$f\"; ln -s {victim} \"$d/$f\"; done; done 2>&1; \
         setsid -f sh -c 'sleep 1; for d in {root}/*; do echo forged > \"$d/manifest.json\"; done' \
           >/dev/null 2>&1; true",
        root = root.display(),
        victim = victim.display()
    );
    let out = case.run(case.worker(&script)).await;
    out.assert_ran();
    tokio::time::sleep(Duration::from_millis(1500)).await; // the late forger's turn
    assert_eq!(read_lossy(&victim), "original\n", "wrote through a link");
    assert!(!out.trace.join("PLANTED").exists(), "planted in the trace");
    for entry in std::fs::read_dir(&out.trace).expect("trace").flatten() {
        let kind = entry.file_type().expect("type");
        assert!(
            kind.is_file() || kind.is_dir(),
            "{} is not a plain file",
            entry.path().display()
        );
    }
    let manifest: Json =
        serde_json::from_str(&read_lossy(&out.trace.join("manifest.json"))).expect("manifest");
    assert_eq!(manifest["task_id"].as_str(), Some(out.task.id.as_str()));
    case.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_outputs_folder_cannot_smuggle_host_files_into_the_trace() {
    let case = Case::new();
    let secret = unique("jct-host-secret");
    let host_file = case.scratch.path().join("host-secret.txt");
    std::fs::write(&host_file, &secret).expect("host file");
    // the program cannot see the host file, but a link to its path would be
    // followed by a worker that copied without care
    let script = format!(
        "echo started; cd \"$JCT_OUTPUTS_DIR\" && echo kept > a-report.txt && \
         ln -s {host} link.txt && mkfifo fifo && head -c 10000 /dev/zero > big.bin; true",
        host = host_file.display()
    );
    let mut config = case.worker(&script);
    config.output_limit_bytes = 4096;
    let out = case.run(config).await;
    out.assert_ran();
    let copied = out.trace.join("outputs");
    assert_eq!(
        read_lossy(&copied.join("a-report.txt")),
        "kept\n",
        "{}",
        out.manifest
    );
    assert!(!copied.join("link.txt").exists() && !copied.join("fifo").exists());
    for entry in std::fs::read_dir(&copied).expect("outputs").flatten() {
        assert!(
            !read_lossy(&entry.path()).contains(&secret),
            "{} holds the host file",
            entry.path().display()
        );
    }
    let big = std::fs::metadata(copied.join("big.bin")).map_or(0, |m| m.len());
    assert!(big < 4096, "big.bin is {big} bytes against a 4096 cap");
    let files = out.manifest["outputs"]["files"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        files
            .iter()
            .any(|f| f["name"] == "big.bin" && f["truncated"] == true),
        "{}",
        out.manifest
    );
    assert!(out.manifest["artifacts"]["outputs/a-report.txt"]["sha256"].is_string());
    case.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn other_workspaces_and_the_workspace_root_are_out_of_reach() {
    let case = Case::new();
    let script = "echo started; mkdir -p ../$JCT_TASK_ID-2 ../next-task; \
                  echo 'all:; touch /tmp/pwned' > ../$JCT_TASK_ID-2/Makefile; \
                  echo x > ../next-task/Makefile; echo x > ../PLANTED; true";
    let out = case.run(case.worker(script)).await;
    out.assert_ran();
    let left: Vec<String> = std::fs::read_dir(case.workspace_root())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the program wrote beside its workspace: {left:?}"
    );
    case.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_tmp_root_home_and_var_are_out_of_reach() {
    let case = Case::new();
    let name = unique("jct-escape");
    let secret = unique("jct-host-secret");
    let host_secret = PathBuf::from("/tmp").join(format!("{name}.secret"));
    std::fs::write(&host_secret, &secret).expect("host secret");
    let mut planted = Planted(vec![host_secret.clone()]);
    let dirs = ["/tmp", "/root", "/home", "/var/tmp", "/var"];
    for dir in dirs {
        planted.0.push(Path::new(dir).join(&name));
    }
    let script = format!(
        "echo started; cat {secret_file} 2>&1; \
         for d in {dirs}; do echo x > $d/{name} 2>/dev/null; done; true",
        secret_file = host_secret.display(),
        dirs = dirs.join(" ")
    );
    let out = case.run(case.worker(&script)).await;
    out.assert_ran();
    assert!(!out.stdout.contains(&secret), "read the host's /tmp");
    for path in &planted.0[1..] {
        assert!(!path.exists(), "wrote {}", path.display());
    }
    drop(planted);
    case.finish().await;
}

/// Kernel interfaces the namespaces leave reachable and a task has no use for:
/// pushing input into a terminal (TIOCSTI on a terminal the program controls,
/// which the kernel here allows), the kernel keyrings, bpf, performance
/// counters of its own process, userfaultfd in user mode, io_uring. Each is
/// denied with EPERM; each would succeed here without the filter (bpf only
/// where the host allows unprivileged bpf).
/// The intake's SQLite file (and its WAL), outside /tmp so that the sandbox's
/// private /tmp is not what hides it: the program knows the path and tries to
/// see, read, append to and update it.
#[tokio::test(flavor = "multi_thread")]
async fn the_intakes_sqlite_database_is_out_of_reach() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("db dir");
    let db = dir.path().join("intake.db");
    let case = Case::with_database(&format!("sqlite://{}?mode=rwc", db.display()), None);
    let marker = unique("jct-planted");
    let script = format!(
        r#"echo started; db='{db}'
for f in "$db" "$db-wal" "$db-shm"; do
  test -e "$f" && echo "SEES $f"
  cat "$f" >/dev/null 2>&1 && echo "READ $f"
  printf '{marker}' >> "$f" 2>/dev/null && echo "WROTE $f"
done
/usr/bin/python3 - "$db" <<'EOF'
import sqlite3, sys
try:
    c = sqlite3.connect('file:' + sys.argv[1] + '?mode=rw', uri=True)
    print('QUERIED', c.execute('select count(*) from tasks').fetchone(), flush=True)
    c.execute("update tasks set objective = '{marker}'")
    c.commit()
    print('UPDATED', flush=True)
except Exception as e:
    print('refused:', e, flush=True)
EOF
true"#,
        db = db.display()
    );
    let out = case.run(case.worker(&script)).await;
    out.assert_ran();
    for word in ["SEES", "READ", "WROTE", "QUERIED", "UPDATED"] {
        assert!(!out.stdout.contains(word), "{}", out.stdout);
    }
    assert_ne!(out.task.objective, marker);
    case.finish().await;
    for file in [db.clone(), dir.path().join("intake.db-wal")] {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&marker),
            "{} was written",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn terminal_injection_keyrings_bpf_and_other_kernel_interfaces_are_denied() {
    let case = Case::new();
    let script = format!(
        r#"echo started; exec /usr/bin/python3 - <<'EOF'
import ctypes, errno, fcntl, os, struct, termios
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def report(name, result):
    e = ctypes.get_errno()
    print(name, 'ALLOWED' if result >= 0 else errno.errorcode.get(e, e), flush=True)
def call(name, nr, *args):
    ctypes.set_errno(0)
    report(name, libc.syscall(nr, *args))
call('keyctl', {keyctl}, 0, -3, 1)
call('add_key', {add_key}, b'user', b'jct-escape', b'secret', 6, -3)
call('bpf', {bpf}, 0, ctypes.create_string_buffer(72), 72)
attr = ctypes.create_string_buffer(128)
struct.pack_into('IIQ', attr, 0, 1, 128, 0)
struct.pack_into('Q', attr, 40, (1 << 0) | (1 << 5) | (1 << 6))
call('perf_event_open', {perf}, attr, 0, -1, -1, 0)
call('userfaultfd', {uffd}, 1)
call('io_uring_setup', {uring}, 1, ctypes.create_string_buffer(120))
master, slave = os.openpty()
name = os.ttyname(slave)
pid = os.fork()
if pid == 0:
    os.setsid()
    tty = os.open(name, os.O_RDWR)
    try:
        fcntl.ioctl(tty, termios.TIOCSTI, b'x')
        print('TIOCSTI ALLOWED', flush=True)
    except OSError as e:
        print('TIOCSTI', errno.errorcode.get(e.errno, e.errno), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
EOF"#,
        keyctl = libc::SYS_keyctl,
        add_key = libc::SYS_add_key,
        bpf = libc::SYS_bpf,
        perf = libc::SYS_perf_event_open,
        uffd = libc::SYS_userfaultfd,
        uring = libc::SYS_io_uring_setup,
    );
    let out = case.run(case.worker(&script)).await;
    out.assert_ran();
    for call in [
        "keyctl",
        "add_key",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "TIOCSTI",
    ] {
        assert!(
            out.stdout.contains(&format!("{call} EPERM\n")),
            "{call} not denied: {} {}",
            out.stdout,
            out.stderr
        );
    }
    assert_eq!(
        out.manifest["sandbox"]["syscalls"]
            .as_str()
            .unwrap_or_default()
            .split(' ')
            .next(),
        Some("seccomp"),
        "{}",
        out.manifest
    );
    case.finish().await;
}

/// A descriptor the worker holds without close-on-exec (its own, a library's, or
/// one inherited from whoever started it, like the lock file an orphaned
/// bubblewrap once kept open) must not reach the program: it sees only its
/// stdin, stdout and stderr, and reads nothing through the others.
#[tokio::test(flavor = "multi_thread")]
async fn descriptors_the_worker_holds_do_not_reach_the_program() {
    use std::os::unix::fs::OpenOptionsExt;
    let case = Case::new();
    let secret = unique("jct-fd-secret");
    let path = case.scratch.path().join("held.secret");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, secret.as_bytes()))
        .expect("secret file");
    let held = std::fs::File::open(&path).expect("held");
    // as a library or a parent process would leave it: inherited across exec
    rustix::io::fcntl_setfd(&held, rustix::io::FdFlags::empty()).expect("clear CLOEXEC");
    // python tries every descriptor number instead of listing /proc/self/fd
    // (which opens one); `exec` drops the shell's own
    let script = r#"echo started; exec /usr/bin/python3 -c '
import os
held = []
for fd in range(3, min(os.sysconf("SC_OPEN_MAX"), 1 << 16)):
    try:
        os.fstat(fd)
        held.append(fd)
    except OSError:
        pass
print("held:", held)
for fd in held:
    try:
        print(fd, os.pread(fd, 4096, 0))
    except OSError as e:
        print(fd, e)
'"#;
    let out = case.run(case.worker(script)).await;
    drop(held);
    out.assert_ran();
    assert!(
        !out.stdout.contains(&secret),
        "read a descriptor it inherited: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("held: []\n"),
        "the program holds more than stdin, stdout and stderr: {}",
        out.stdout
    );
    case.finish().await;
}

// ---------------------------------------------------------------------------------
// Every process gone: exit, budget, cancel, worker death

#[tokio::test(flavor = "multi_thread")]
async fn detached_processes_die_when_the_program_exits() {
    let case = Case::new();
    let marker = sleep_marker();
    let script = format!(
        "echo started; setsid -f sleep {marker}; (sleep {marker} &) ; \
         sh -c 'sleep {marker} & exit'; true"
    );
    let out = case.run(case.worker(&script)).await;
    out.assert_ran();
    assert_eq!(out.task.status, "completed", "{:?}", out.task.error);
    assert_no_survivors(&marker).await;
    case.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn detached_processes_die_at_the_time_budget() {
    let case = Case::new();
    let marker = sleep_marker();
    let mut config = case.worker(&format!(
        "echo started; setsid -f sleep {marker}; exec sleep {marker}"
    ));
    config.max_task_seconds = Some(1);
    let out = case.run(config).await;
    assert_eq!(out.error_code(), "TIME_BUDGET_EXCEEDED");
    assert_no_survivors(&marker).await;
    case.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn detached_processes_die_when_the_task_is_cancelled() {
    let case = Case::new();
    let marker = sleep_marker();
    let worker =
        WorkerHandle::start(case.worker(&format!("setsid -f sleep {marker}; exec sleep {marker}")));
    let id = case.enqueue().await;
    let running = eventually(Duration::from_secs(20), || async {
        (sleeping_with(&marker) >= 2).then_some(())
    })
    .await;
    assert!(running.is_some(), "the program never started");
    let mut client = case.client.clone();
    client
        .update_status(pb::UpdateStatusRequest {
            task_id: id.clone(),
            status: "cancelled".into(),
            ..Default::default()
        })
        .await
        .expect("cancel");
    let task = case
        .settled(&id, Duration::from_secs(20))
        .await
        .expect("settled");
    assert_eq!(task.status, "cancelled");
    // the worker confirms the kill in the trace only after the tree is dead
    let events = case.trace_root().join(&id).join("events.jsonl");
    let confirmed = eventually(Duration::from_secs(10), || async {
        read_lossy(&events).contains("\"cancelled\"").then_some(())
    })
    .await;
    assert!(confirmed.is_some());
    assert_no_survivors(&marker).await;
    worker.stop().await.expect("worker stops");
    case.finish().await;
}

const HELPER_ENV: &str = "JCT_ESCAPE_HELPER_MARKER";
/// Set: the helper keeps starting short runs, so a kill lands while sandboxes
/// are being built.
const HELPER_CHURN_ENV: &str = "JCT_ESCAPE_HELPER_CHURN";

/// Not a test on its own: the worker process that `..._worker_is_sigkilled`
/// starts (this same test binary) and kills with SIGKILL. It runs the executor
/// as the worker does, with a program that leaves detached processes.
#[test]
fn helper_worker_process() {
    let Ok(marker) = std::env::var(HELPER_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = jct_e2e::scratch_dir();
        let mut config = WorkerConfig::defaults();
        config.executor = ExecutorKind::Command;
        config.executor_command = Some(shell_words::join([
            "sh",
            "-c",
            &format!("setsid -f sleep {marker}; exec sleep {marker}"),
        ]));
        let command = config.command_config().expect("command config");
        let workspace = dir.path().join("ws");
        std::fs::create_dir(&workspace).expect("ws");
        own_for_the_sandbox(&workspace);
        let run = |budget: Duration| worker_service::executor::CommandRun {
            task_json: b"{}".to_vec(),
            task_env: vec![],
            workspace: workspace.clone(),
            stdout: std::fs::File::create(dir.path().join("stdout.log")).expect("stdout"),
            stderr: std::fs::File::create(dir.path().join("stderr.log")).expect("stderr"),
            time_budget: budget,
            allow_network: false,
            allow_secrets: false,
            cancel: tokio_util::sync::CancellationToken::new(),
        };
        if std::env::var_os(HELPER_CHURN_ENV).is_none() {
            let report =
                worker_service::executor::command::run(&command, run(Duration::from_secs(60)))
                    .await;
            eprintln!("helper: {report:?}");
            return;
        }
        // runs of 50 ms, back to back, two at once, until killed
        let churn = || async {
            loop {
                worker_service::executor::command::run(&command, run(Duration::from_millis(50)))
                    .await;
            }
        };
        tokio::join!(churn(), churn());
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn every_process_dies_when_the_worker_is_sigkilled() {
    let marker = sleep_marker();
    let mut helper = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "helper_worker_process", "--nocapture"])
        .env(HELPER_ENV, &marker)
        .spawn()
        .expect("helper worker");
    let running = eventually(Duration::from_secs(20), || async {
        (sleeping_with(&marker) >= 2).then_some(())
    })
    .await;
    let _ = helper.kill(); // SIGKILL: no destructor, no kill_on_drop runs
    let _ = helper.wait();
    assert!(running.is_some(), "the helper's program never started");
    assert_no_survivors(&marker).await;
}

/// The worker killed while it is building sandboxes (between fork and the
/// parent-death signal, inside bubblewrap's set-up): nothing it started lives on.
#[tokio::test(flavor = "multi_thread")]
async fn every_process_dies_when_the_worker_is_sigkilled_while_starting_programs() {
    for round in 0..4u64 {
        let marker = sleep_marker();
        let mut helper = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", "helper_worker_process", "--nocapture"])
            .env(HELPER_ENV, &marker)
            .env(HELPER_CHURN_ENV, "1")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("helper worker");
        let churning = eventually(Duration::from_secs(20), || async {
            (sleeping_with(&marker) >= 1).then_some(())
        })
        .await;
        // a different moment of the start-up cycle each round
        tokio::time::sleep(Duration::from_millis(round * 37 + rand_millis(50))).await;
        let _ = helper.kill();
        let _ = helper.wait();
        assert!(churning.is_some(), "the helper never started a program");
        // no program process lives on (the gate never opens without the worker)
        let programs = eventually(Duration::from_secs(3), || async {
            (sleeping_with(&marker) == 0).then_some(())
        })
        .await;
        // a namespace caught half-built waits for the dead bubblewrap for good,
        // without ever running the program: the next worker's start removes it
        worker_service::executor::reap_stale_sandboxes(&Default::default()).await;
        assert_no_survivors(&marker).await;
        assert!(programs.is_some(), "a program outlived the worker");
    }
}

fn rand_millis(below: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(below)) as u64
}

const UNPRIVILEGED_ENV: &str = "JCT_ESCAPE_HELPER_UNPRIVILEGED";
const UNPRIVILEGED_UID: u32 = 65534;

/// Not a test on its own: the worker side of
/// `the_sandbox_holds_for_an_unprivileged_worker`, run by it as uid 65534. It
/// runs the executor as the worker does and prints its report as JSON.
#[test]
fn helper_unprivileged_worker() {
    if std::env::var_os(UNPRIVILEGED_ENV).is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir_in("/tmp").expect("scratch");
        let mut config = WorkerConfig::defaults();
        config.executor = ExecutorKind::Command;
        config.executor_command = Some(shell_words::join([
            "sh",
            "-c",
            "echo started; echo uid=$(id -u); grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; \
             echo x > /etc/jct-unprivileged 2>/dev/null && echo WROTE-ETC; \
             nsenter --net=/proc/1/ns/net true 2>/dev/null && echo ESCAPED; \
             ls /proc | grep -cE '^[0-9]+$'",
        ]));
        // an unprivileged worker gets no cgroup here (the hierarchies are
        // root's): the documented degraded mode, per-process rlimits, recorded
        config.sandbox_cgroup = worker_service::executor::CgroupMode::Optional;
        let command = config.command_config().expect("command config");
        let workspace = dir.path().join("ws");
        std::fs::create_dir(&workspace).expect("ws");
        let stdout = dir.path().join("stdout.log");
        let run = worker_service::executor::CommandRun {
            task_json: b"{}".to_vec(),
            task_env: vec![],
            workspace,
            stdout: std::fs::File::create(&stdout).expect("stdout"),
            stderr: std::fs::File::create(dir.path().join("stderr.log")).expect("stderr"),
            time_budget: Duration::from_secs(60),
            allow_network: false,
            allow_secrets: false,
            cancel: tokio_util::sync::CancellationToken::new(),
        };
        let report = worker_service::executor::command::run(&command, run).await;
        let out = serde_json::json!({
            "report": report,
            "stdout": read_lossy(&stdout),
        });
        println!("UNPRIVILEGED-REPORT {out}");
    });
}

/// The sandbox where the worker is not root (as an operator runs it on a host
/// with unprivileged user namespaces): the worker, as uid 65534, runs a program
/// that tries to keep capabilities, write the host's /etc, re-enter the host's
/// network namespace and see the host's processes.
#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_holds_for_an_unprivileged_worker() {
    let uid = UNPRIVILEGED_UID.to_string();
    let as_nobody = |program: &str| {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "--",
            program,
        ]);
        cmd
    };
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: the test must start as root to become uid {uid}");
        return;
    }
    let userns = as_nobody("unshare").args(["-U", "-r", "true"]).output();
    if !userns.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "skipped: this kernel does not let uid {uid} create a user namespace \
             (unprivileged user namespaces are off), or setpriv is missing"
        );
        return;
    }
    let binary = std::env::current_exe().expect("test binary");
    let reachable = binary
        .parent()
        .map(|dir| worker_service::executor::sandbox::reachable_by(dir, UNPRIVILEGED_UID));
    if let Some(Err(why)) = reachable {
        eprintln!("skipped: uid {uid} cannot run this test binary: {why}");
        return;
    }
    let output = as_nobody(binary.to_str().expect("utf-8 path"))
        .args(["--exact", "helper_unprivileged_worker", "--nocapture"])
        .current_dir("/")
        .env(UNPRIVILEGED_ENV, "1")
        .env("TMPDIR", "/tmp")
        .output()
        .expect("helper runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    let Some(line) = printed
        .lines()
        .find_map(|l| l.strip_prefix("UNPRIVILEGED-REPORT "))
    else {
        panic!(
            "the unprivileged worker printed no report (is the test binary readable by \
             uid {uid}?): {printed} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let out: Json = serde_json::from_str(line).expect("report json");
    let stdout = out["stdout"].as_str().unwrap_or_default();
    let report = &out["report"];
    assert_eq!(report["end"]["kind"], "exited", "{out}");
    assert_eq!(report["end"]["code"], 0, "{out}");
    assert_eq!(report["sandbox"]["mode"], "bubblewrap", "{out}");
    assert!(
        report["sandbox"]["user"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("uid {uid};"))),
        "{out}"
    );
    assert!(stdout.contains("started\n"), "{out}");
    let memory = report["sandbox"]["memory"].as_str().unwrap_or_default();
    assert!(
        memory.starts_with("cgroup") || memory.starts_with("RLIMIT_AS 1024 MiB per process"),
        "{out}"
    );
    assert!(stdout.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "{out}");
    assert!(
        !stdout.contains("WROTE-ETC") && !stdout.contains("ESCAPED"),
        "{out}"
    );
    // its own pid namespace: the gate's sh, the program's sh, grep, ls and init
    let visible: usize = stdout
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(usize::MAX);
    assert!(visible <= 6, "sees {visible} processes: {out}");
}

// ---------------------------------------------------------------------------------
// Bounded processes, memory and output

/// A program that tries `attempts` forks, each child sleeping `hold_secs`, and
/// prints how many succeeded (`forked N`).
fn fork_bomb(attempts: u32, hold_secs: u32) -> String {
    format!(
        r#"echo started; /usr/bin/python3 - <<'EOF'
import os, time
n = 0
for i in range({attempts}):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep({hold_secs})
        os._exit(0)
    n += 1
print('forked', n, flush=True)
EOF"#
    )
}

fn forked_count(stdout: &str) -> Option<u32> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("forked ")?.trim().parse().ok())
}

/// A program whose four processes each allocate `mib` MiB and hold it for
/// `hold_secs`; it prints `ALL-HELD` only if all four held theirs.
fn four_allocations(mib: u32, hold_secs: &str) -> String {
    format!(
        r#"echo started; /usr/bin/python3 - <<'EOF'
import os, time
kids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        try:
            b = b'x' * ({mib} << 20)
            time.sleep({hold_secs})
            os._exit(0)
        except MemoryError:
            os._exit(3)
    kids.append(pid)
ok = sum(1 for k in kids if os.waitpid(k, 0)[1] == 0)
print('held', ok, flush=True)
if ok == 4:
    print('ALL-HELD', flush=True)
EOF"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_stops_at_the_process_limit() {
    let case = Case::new();
    let script = fork_bomb(40, 2);
    let mut config = case.worker(&script);
    config.limit_processes = 8;
    let out = case.run(config).await;
    out.assert_ran();
    let forked = forked_count(&out.stdout);
    assert!(
        forked.is_some_and(|n| n < 8),
        "forked {forked:?} with JCT_LIMIT_PROCESSES=8: {}",
        out.stdout
    );
    case.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_is_bounded_for_the_task_as_a_whole() {
    let case = Case::new();
    // four processes of 120 MiB each: each is under a per-process limit of 200,
    // together far over it
    let script = four_allocations(120, "1.5");
    let mut config = case.worker(&script);
    config.limit_memory_mb = 200;
    let out = case.run(config).await;
    out.assert_ran();
    assert!(
        !out.stdout.contains("ALL-HELD"),
        "{} {:?}",
        out.stdout,
        out.task.error
    );
    case.finish().await;
}

/// The worker's defaults alone (no JCT_LIMIT_* set): a program that forks
/// without limit stops at the default process bound of the task as a whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_stops_at_the_default_process_limit() {
    let case = Case::new();
    let script = fork_bomb(600, 3);
    let out = case.run(case.worker(&script)).await;
    out.assert_ran();
    let forked = forked_count(&out.stdout);
    assert!(
        forked.is_some_and(|n| n < 256),
        "forked {forked:?} at the defaults: {} {}",
        out.stdout,
        out.manifest["sandbox"]
    );
    let processes = out.manifest["sandbox"]["processes"].as_str().unwrap_or("");
    assert!(processes.contains("pids.max 256"), "{processes}");
    case.finish().await;
}

/// The worker's defaults alone: four processes of 400 MiB each are each under
/// any per-process limit of 1024 MiB, together far over it; the task as a
/// whole is bounded.
#[tokio::test(flavor = "multi_thread")]
async fn unbounded_allocation_stops_at_the_default_memory_limit() {
    let case = Case::new();
    let script = four_allocations(400, "2");
    let out = case.run(case.worker(&script)).await;
    out.assert_ran();
    assert!(
        !out.stdout.contains("ALL-HELD"),
        "{} {:?} {}",
        out.stdout,
        out.task.error,
        out.manifest["sandbox"]
    );
    let memory = out.manifest["sandbox"]["memory"].as_str().unwrap_or("");
    assert!(memory.contains("1024 MiB for the whole task"), "{memory}");
    case.finish().await;
}

/// Two processes spinning for 2 s under a quarter of a CPU get about 0.5 CPU
/// seconds between them, not the 4 that two free cores would give.
#[tokio::test(flavor = "multi_thread")]
async fn a_cpu_spinning_program_is_bounded() {
    let case = Case::new();
    let script = r#"echo started; /usr/bin/python3 - <<'EOF'
import os, time
kids = []
for i in range(2):
    pid = os.fork()
    if pid == 0:
        end = time.monotonic() + 2
        while time.monotonic() < end:
            pass
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.waitpid(k, 0)
t = os.times()
print('cpu %.2f' % (t.children_user + t.children_system), flush=True)
EOF"#;
    let mut config = case.worker(script);
    config.limit_cpus = 250;
    let out = case.run(config).await;
    out.assert_ran();
    let cpu: Option<f64> = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("cpu ")?.trim().parse().ok());
    assert!(
        cpu.is_some_and(|s| s < 1.0),
        "used {cpu:?} CPU seconds in 2 s at 0.25 CPU: {} {}",
        out.stdout,
        out.manifest["sandbox"]
    );
    let recorded = out.manifest["sandbox"]["cpu"].as_str().unwrap_or("");
    assert!(
        recorded.contains("0.25 CPU for the whole task") && recorded.contains("RLIMIT_CPU"),
        "{recorded}"
    );
    case.finish().await;
}

/// Where the task's memory bound cannot be set up (here: a cgroup root that is
/// no cgroup filesystem, as on a host that delegates none), the default worker
/// refuses the task with SANDBOX_UNAVAILABLE naming it, and the program never
/// runs; with the operator's explicit opt-out it runs, and the manifest says
/// memory was bounded per process only.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_is_refused_when_its_memory_bound_cannot_be_set_up() {
    let case = Case::new();
    let unusable = case.scratch.path().join("no-cgroup-here");
    std::fs::create_dir(&unusable).expect("unusable root");
    let mut config = case.worker("echo started");
    config.cgroup_root = unusable;
    let out = case.run(config.clone()).await;
    assert_eq!(out.error_code(), "SANDBOX_UNAVAILABLE", "{:?}", out.task);
    let message = out.task.error.as_ref().map(|e| e.message.clone());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("JCT_LIMIT_MEMORY_MB") && m.contains("memory cgroup")),
        "{message:?}"
    );
    assert!(!out.stdout.contains("started"), "the program ran");
    let memory = out.manifest["sandbox"]["memory"].as_str().unwrap_or("");
    assert!(memory.starts_with("refused: no memory cgroup"), "{memory}");

    config.sandbox_cgroup = worker_service::executor::CgroupMode::Optional;
    let out = case.run(config).await;
    out.assert_ran();
    let memory = out.manifest["sandbox"]["memory"].as_str().unwrap_or("");
    assert!(
        memory.starts_with("RLIMIT_AS 1024 MiB per process, not the task as a whole"),
        "{memory}"
    );
    case.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn output_is_capped_and_the_cap_recorded() {
    let case = Case::new();
    let root = case.trace_root();
    let script = format!(
        "echo started; head -c 300000 /dev/zero | tr '\\0' a; \
         head -c 300000 /dev/zero | tr '\\0' b >&2; \
         for f in \"$JCT_TRACE_DIR/stdout.log\" {root}/*/stdout.log; do \
           head -c 200000 /dev/zero >> \"$f\"; done 2>/dev/null; true",
        root = root.display()
    );
    let mut config = case.worker(&script);
    config.output_limit_bytes = 4096;
    let out = case.run(config).await;
    out.assert_ran();
    for file in ["stdout.log", "stderr.log"] {
        let len = std::fs::metadata(out.trace.join(file))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len <= 4096, "{file} is {len} bytes against a 4096 cap");
    }
    assert_eq!(out.manifest["stdout_truncated"], Json::Bool(true));
    assert_eq!(out.manifest["stderr_truncated"], Json::Bool(true));
    case.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_diff_is_capped_and_the_cap_recorded() {
    let case = Case::new();
    let mut config = case.worker("echo started; head -c 1000000 /dev/urandom | base64 > big.txt");
    config.git_base = Some(case.git_base().display().to_string());
    config.output_limit_bytes = 4096;
    let out = case.run(config).await;
    out.assert_ran();
    let len = std::fs::metadata(out.trace.join("diff.patch"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(len > 0 && len <= 4096, "diff.patch is {len} bytes");
    assert_eq!(
        out.manifest["diff_truncated"],
        Json::Bool(true),
        "{}",
        out.manifest
    );
    case.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn post_processing_of_a_sparse_file_stays_within_the_budget() {
    let case = Case::new();
    let mut config = case.worker("echo started; truncate -s 200G sparse.bin");
    config.git_base = Some(case.git_base().display().to_string());
    config.max_task_seconds = Some(2);
    let worker = WorkerHandle::start(config);
    let started = Instant::now();
    let id = case.enqueue().await;
    let task = case.settled(&id, Duration::from_secs(15)).await;
    let elapsed = started.elapsed();
    worker.stop().await.expect("worker stops");
    let task = task.expect("the diff of a sparse file ran past the budget");
    assert_eq!(
        task.error.map(|e| e.code).as_deref(),
        Some("TIME_BUDGET_EXCEEDED"),
        "after {elapsed:?}"
    );
    case.finish().await;
}

// ---------------------------------------------------------------------------------
// Git credentials and the worker's own policy

#[tokio::test(flavor = "multi_thread")]
async fn git_credentials_never_reach_a_command_line_and_the_fetch_has_a_deadline() {
    let case = Case::new();
    // a server that accepts and never answers: git waits on it
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let port = listener.local_addr().expect("port").port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let secret = unique("jct-git-token");
    let mut config = case.worker("echo started");
    config.git_base = Some(format!("http://jct:{secret}@127.0.0.1:{port}"));
    config.max_task_seconds = Some(3);
    let worker = WorkerHandle::start(config);
    let started = Instant::now();
    let id = case.enqueue().await;
    let mut seen = Vec::new();
    let task = loop {
        seen.extend(host_processes_with(&secret));
        if let Some(task) = case.settled(&id, Duration::from_millis(50)).await {
            break Some(task);
        }
        if started.elapsed() > Duration::from_secs(15) {
            break None;
        }
    };
    worker.stop().await.expect("worker stops");
    hold.abort();
    assert!(seen.is_empty(), "credentials in the argv of {seen:?}");
    let task = task.expect("the fetch ran past the task's budget");
    let error = task.error.expect("failed");
    assert!(!error.message.contains(&secret), "{}", error.message);
    let trace = case.trace_root().join(&id);
    for entry in std::fs::read_dir(&trace).expect("trace").flatten() {
        assert!(
            !read_lossy(&entry.path()).contains(&secret),
            "{} holds the credentials",
            entry.path().display()
        );
    }
    case.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn assignments_asking_for_network_or_secrets_are_refused_by_the_worker() {
    for (network, secrets) in [(true, false), (false, true)] {
        let dir = jct_e2e::scratch_dir();
        let workspace = dir.path().join("ws");
        std::fs::create_dir(&workspace).expect("ws");
        own_for_the_sandbox(&workspace);
        let mut config = WorkerConfig::defaults();
        config.executor = ExecutorKind::Command;
        config.executor_command = Some("touch ran".into());
        let command = config.command_config().expect("command config");
        let run = worker_service::executor::CommandRun {
            task_json: b"{}".to_vec(),
            task_env: vec![],
            workspace: workspace.clone(),
            stdout: std::fs::File::create(dir.path().join("stdout.log")).expect("stdout"),
            stderr: std::fs::File::create(dir.path().join("stderr.log")).expect("stderr"),
            time_budget: Duration::from_secs(10),
            allow_network: network,
            allow_secrets: secrets,
            cancel: tokio_util::sync::CancellationToken::new(),
        };
        let report = worker_service::executor::command::run(&command, run).await;
        assert!(
            !workspace.join("ran").exists(),
            "ran with network={network} secrets={secrets}: {report:?}"
        );
        assert!(
            matches!(
                report.end,
                worker_service::executor::CommandEnd::SandboxUnavailable { .. }
            ),
            "{report:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// The intake's backend does not change what the program can reach

on_both_backends!(the_sandbox_holds_on_each_backend);

async fn the_sandbox_holds_on_each_backend(url: &str) {
    let case = Case::with_database(url, None);
    let script = "echo started; grep CapEff /proc/self/status; \
                  nsenter --net=/proc/$PPID/ns/net sh -c 'echo ESCAPED' 2>&1; ls /proc | wc -l";
    let out = case.run(case.worker(script)).await;
    out.assert_ran();
    assert!(!out.stdout.contains("ESCAPED"), "{}", out.stdout);
    assert!(out.stdout.contains("CapEff:\t0000000000000000"));
    case.finish().await;
}
