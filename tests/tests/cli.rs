//! The `jct` binary end to end, run as a user runs it against a running pair:
//! every subcommand, its `-o json` output parsed, and every exit code of the
//! contract (0 success, 2 usage, 3 rejected, 4 not found, 5 unauthenticated or
//! denied, 6 unreachable, 20 the watched task failed, 21 it was cancelled).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jct_e2e::{IntakeHandle, TestDatabase, WorkerHandle, intake_config, worker_config};
use serde_json::Value as Json;
use worker_service::executor::ExecutorKind;

/// The `jct` binary pointed at one intake, optionally with a token file.
struct Jct {
    addr: String,
    token_file: Option<PathBuf>,
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The one JSON object on stdout.
    fn json(&self) -> Json {
        let lines = self.lines();
        assert_eq!(lines.len(), 1, "one JSON object expected: {self:?}");
        lines.into_iter().next().unwrap_or_default()
    }

    /// Every stdout line as JSON (JSON lines).
    fn lines(&self) -> Vec<Json> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?} in {self:?}"))
            })
            .collect()
    }

    /// The error object `-o json` prints on stderr.
    fn error(&self) -> Json {
        serde_json::from_str::<Json>(self.stderr.trim())
            .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {self:?}"))["error"]
            .clone()
    }

    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }
}

impl Jct {
    fn at(addr: impl std::fmt::Display) -> Jct {
        Jct {
            addr: format!("http://{addr}"),
            token_file: None,
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        let mut all = vec![env!("CARGO_BIN_EXE_jct")];
        all.extend_from_slice(args);
        self.run_as(&all).await
    }

    /// Runs `program` with `args` in jct's environment.
    async fn run_as(&self, program_and_args: &[&str]) -> Run {
        let (program, args) = program_and_args.split_first().expect("a program");
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env("JCT_ADDR", &self.addr)
            .env("USER", "cli-test")
            .env_remove("JCT_TOKEN_FILE")
            .env_remove("JCT_TLS_CA_FILE")
            .env_remove("JCT_TLS_CERT_FILE")
            .env_remove("JCT_TLS_KEY_FILE")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(path) = &self.token_file {
            command.env("JCT_TOKEN_FILE", path);
        }
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .unwrap_or_else(|_| panic!("{program_and_args:?} did not finish"))
            .expect("jct runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn enqueue(&self, objective: &str) -> String {
        let run = self
            .run(&[
                "enqueue",
                "-o",
                "json",
                "--objective",
                objective,
                "--operation",
                "docs",
                "--repo",
                "myorg/service",
            ])
            .await
            .ok();
        let id = run.json()["task_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!id.is_empty(), "{run:?}");
        id
    }
}

fn record_pair(database: &TestDatabase, traces: &Path) -> (IntakeHandle, WorkerHandle) {
    let intake = IntakeHandle::start(
        intake_config(&database.url),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .expect("intake");
    let worker = WorkerHandle::start(worker_config(&intake.url(), traces));
    (intake, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_watch_get_list_trace_and_status_against_a_running_pair() {
    let database = TestDatabase::sqlite();
    let traces = tempfile::tempdir().expect("traces");
    let (intake, worker) = record_pair(&database, traces.path());
    let jct = Jct::at(intake.addr);

    // enqueue with flags, then watch it to the end: JSON lines, exit 0
    let id = jct.enqueue("Write the CLI guide").await;
    let watched = jct.run(&["watch", &id, "-o", "json"]).await.ok();
    let states = watched.lines();
    assert_eq!(
        states.last().map(|t| t["status"].clone()),
        Some("completed".into())
    );
    assert!(states.iter().all(|t| t["id"] == id.as_str()));

    // piped text: one plain line per change, the last one the outcome
    let watched = jct.run(&["watch", &id]).await.ok();
    let last = watched.stdout.lines().last().unwrap_or_default();
    assert!(
        last.contains(&id) && last.contains("completed"),
        "{watched:?}"
    );
    assert!(
        !watched.stdout.contains('\u{1b}'),
        "no terminal codes when piped"
    );

    // on a terminal (a pty from util-linux `script`): the line is redrawn in place
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok()
    {
        let command = format!("{} watch {id}", env!("CARGO_BIN_EXE_jct"));
        let run = jct.run_as(&["script", "-qec", &command, "/dev/null"]).await;
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("\r\u{1b}[2K"), "{run:?}");
        assert!(run.stdout.contains("completed"), "{run:?}");
    } else {
        eprintln!("note: no `script` here (util-linux); the terminal line is not checked");
    }

    // get: every field, result set and error null
    let task = jct.run(&["get", &id, "-o", "json"]).await.ok().json();
    assert_eq!(task["status"], "completed");
    assert_eq!(task["objective"], "Write the CLI guide");
    assert_eq!(task["target"]["repo"], "myorg/service");
    assert_eq!(task["requested_by"]["id"], "cli-test");
    assert_eq!(task["result"]["executor"], "record");
    assert_eq!(task["error"], Json::Null);
    assert!(task["completed_at"].is_string(), "{task}");
    let traceparent = task["traceparent"].as_str().unwrap_or_default();
    assert!(
        jct::traceparent::Traceparent::parse(traceparent).is_some(),
        "{task}"
    );
    let text = jct.run(&["get", &id]).await.ok();
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("status ") && l.ends_with(" completed")),
        "{text:?}"
    );

    // a V1 JSON file with the deprecated aliases, and --wait
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("task.json");
    std::fs::write(
        &file,
        r#"{"version": "1.0", "requested_by": {"kind": "agent", "id": "bot", "label": null},
            "objective": "Analyse the service", "type": "analysis",
            "target": {"repository": "MyOrg/Service.git"}, "payload": {"depth": 2},
            "constraints": {"time_budget_seconds": 120}}"#,
    )
    .expect("task file");
    let file = file.to_str().expect("utf-8 path");
    let waited = jct
        .run(&["enqueue", "-f", file, "--wait", "-o", "json"])
        .await
        .ok();
    let lines = waited.lines();
    assert_eq!(lines[0]["created"], true, "{waited:?}");
    let stored = &lines[0]["task"];
    assert_eq!(stored["operation"], "analysis");
    assert_eq!(stored["target"]["repo"], "myorg/service");
    assert_eq!(stored["inputs"]["depth"], 2);
    assert_eq!(stored["constraints"]["time_budget_seconds"], 120);
    assert_eq!(
        lines.last().map(|t| t["status"].clone()),
        Some("completed".into())
    );

    // validate-only stores nothing
    let dry = jct
        .run(&["enqueue", "-f", file, "--validate-only", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(dry["created"], false);
    assert_eq!(dry["task_id"], "");
    assert_eq!(dry["task"]["operation"], "analysis");

    // the file on stdin, a flag over its alias (the canonical field wins)
    let piped = format!(
        "{} enqueue -f - --operation docs --validate-only -o json < {file}",
        env!("CARGO_BIN_EXE_jct")
    );
    let dry = jct.run_as(&["sh", "-c", &piped]).await.ok().json();
    assert_eq!(dry["task"]["operation"], "docs", "{dry}");
    assert_eq!(dry["task"]["inputs"]["depth"], 2, "{dry}");

    // list: paging across pages up to --limit, newest first, then --all
    let third = jct.enqueue("A third task here").await;
    let listed = jct
        .run(&["list", "-o", "json", "--limit", "2", "--page-size", "1"])
        .await
        .ok();
    let ids: Vec<Json> = listed.lines().iter().map(|t| t["id"].clone()).collect();
    assert_eq!(ids.len(), 2, "{listed:?}");
    assert_eq!(ids[0], third.as_str(), "newest first");
    assert_ne!(ids[0], ids[1]);
    assert!(listed.stderr.contains("--page-token"), "{listed:?}");
    let all = jct
        .run(&["list", "--all", "--page-size", "1", "-o", "json"])
        .await
        .ok();
    assert_eq!(all.lines().len(), 3, "{all:?}");
    let filtered = jct
        .run(&[
            "list",
            "-o",
            "json",
            "--operation",
            "analysis",
            "--requester-kind",
            "agent",
        ])
        .await
        .ok();
    assert_eq!(filtered.lines().len(), 1, "{filtered:?}");
    let table = jct.run(&["list", "--repo", "myorg/service"]).await.ok();
    let header = table.stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ID") && header.contains("STATUS"),
        "{table:?}"
    );
    assert_eq!(table.stdout.lines().count(), 4, "{table:?}");
    let none = jct.run(&["list", "--status", "failed"]).await.ok();
    assert_eq!(none.stdout, "no tasks match\n");

    // trace: the worker's folder is on this machine
    let trace = jct.run(&["trace", &id, "-o", "json"]).await.ok().json();
    assert_eq!(trace["reachable"], true, "{trace}");
    assert!(trace["manifest"].is_object(), "{trace}");
    let events = trace["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| e["event"].is_string()),
        "events: {trace}"
    );
    let text = jct.run(&["trace", &id]).await.ok();
    assert!(text.stdout.contains("manifest:") && text.stdout.contains("events:"));

    // status: counts, workers and their load
    let status = jct.run(&["status", "-o", "json"]).await.ok().json();
    assert_eq!(
        status["workers"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert!(
        status["task_counts"]["completed"].as_i64() >= Some(2),
        "{status}"
    );
    assert!(status["version"].is_string());
    assert_eq!(status["oldest_queued_at"], Json::Null, "nothing is queued");
    assert_eq!(status["oldest_queued_age_seconds"], Json::Null);
    let text = jct.run(&["status"]).await.ok();
    assert!(text.stdout.contains("workers   1 connected"), "{text:?}");

    // rejected (3): a finished task cannot be cancelled; bad fields; policy
    let refused = jct.run(&["cancel", &id, "-o", "json"]).await;
    assert_eq!(refused.code, 3, "{refused:?}");
    assert_eq!(refused.error()["reason"], "INVALID_TRANSITION");
    let invalid = jct
        .run(&["enqueue", "--objective", "hi", "--operation", "docs"])
        .await;
    assert_eq!(invalid.code, 3, "{invalid:?}");
    assert!(invalid.stderr.contains("VALIDATION_FAILED"), "{invalid:?}");
    assert!(
        invalid.stderr.contains("target"),
        "violations listed: {invalid:?}"
    );
    assert!(invalid.stderr.contains("hint:"), "{invalid:?}");
    let policy = jct
        .run(&[
            "enqueue",
            "-o",
            "json",
            "--objective",
            "Elsewhere",
            "--operation",
            "docs",
            "--repo",
            "other/x",
        ])
        .await;
    assert_eq!(policy.code, 3, "{policy:?}");
    assert_eq!(policy.error()["reason"], "REPO_NOT_ALLOWED");

    // not found (4)
    let missing = jct
        .run(&["get", "0192a2b0-0000-7000-8000-000000000000", "-o", "json"])
        .await;
    assert_eq!(missing.code, 4, "{missing:?}");
    assert_eq!(missing.error()["reason"], "TASK_NOT_FOUND");
    assert_eq!(missing.error()["exit_code"], 4);

    // usage (2): bad command line, unreadable or unknown task file fields
    assert_eq!(jct.run(&["frobnicate"]).await.code, 2);
    assert_eq!(jct.run(&["get"]).await.code, 2);
    assert_eq!(
        jct.run(&["enqueue", "-f", "/nonexistent/task.json"])
            .await
            .code,
        2
    );
    std::fs::write(dir.path().join("typo.json"), r#"{"objectve": "x"}"#).expect("write");
    let typo = jct
        .run(&[
            "enqueue",
            "-f",
            &dir.path().join("typo.json").display().to_string(),
        ])
        .await;
    assert_eq!(typo.code, 2, "{typo:?}");
    assert!(typo.stderr.contains("unknown field objectve"), "{typo:?}");

    // help with examples, and completions
    let help = jct.run(&["--help"]).await.ok();
    assert!(help.stdout.contains("Examples:") && help.stdout.contains("Exit codes:"));
    for shell in ["bash", "zsh", "fish"] {
        let script = jct.run(&["completions", shell]).await.ok();
        assert!(script.stdout.contains("jct"), "{shell}: {script:?}");
        assert!(script.stdout.contains("enqueue"), "{shell}");
    }

    worker.stop().await.expect("worker stops");
    intake.stop().await.expect("intake stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_exits_21_for_a_cancelled_task_and_20_for_a_failed_one() {
    let database = TestDatabase::sqlite();
    let intake = IntakeHandle::start(
        intake_config(&database.url),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .expect("intake");
    let jct = Jct::at(intake.addr);

    // no worker yet: the task stays queued until cancelled
    let id = jct.enqueue("Never going to run").await;
    let cancelled = jct.run(&["cancel", &id]).await.ok();
    assert_eq!(cancelled.stdout, format!("{id}: cancelled\n"));
    let watched = jct.run(&["watch", &id]).await;
    assert_eq!(watched.code, 21, "{watched:?}");
    assert!(watched.stdout.contains("cancelled"), "{watched:?}");

    // a worker whose program fails
    let traces = tempfile::tempdir().expect("traces");
    let scratch = jct_e2e::scratch_dir();
    let mut config = worker_config(&intake.url(), traces.path());
    config.executor = ExecutorKind::Command;
    config.executor_command = Some("sh -c 'exit 3'".into());
    config.workspace_root = Some(scratch.path().join("workspaces"));
    config.shutdown_grace_seconds = 1;
    let worker = WorkerHandle::start(config);
    let run = jct
        .run(&[
            "enqueue",
            "-o",
            "json",
            "--objective",
            "This one fails",
            "--operation",
            "ops",
            "--repo",
            "myorg/service",
            "--wait",
        ])
        .await;
    assert_eq!(run.code, 20, "{run:?}");
    let last = run.lines().pop().unwrap_or_default();
    assert_eq!(last["status"], "failed", "{run:?}");
    assert!(last["error"]["code"].is_string(), "{last}");

    worker.stop().await.expect("worker stops");
    intake.stop().await.expect("intake stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_sent_and_refusals_exit_5() {
    let database = TestDatabase::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "tok-sub,sam,submitter\ntok-op,olga,operator\n").expect("tokens");
    let mut config = intake_config(&database.url);
    config.auth_tokens_file = Some(tokens);
    let intake = IntakeHandle::start(config, "127.0.0.1:0".parse().expect("addr")).expect("intake");
    let token = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).expect("token file");
        Some(path)
    };

    let anonymous = Jct::at(intake.addr);
    let refused = anonymous.run(&["list", "-o", "json"]).await;
    assert_eq!(refused.code, 5, "{refused:?}");
    assert_eq!(refused.error()["reason"], "UNAUTHENTICATED");

    let wrong = Jct {
        token_file: token("wrong", "tok-nobody"),
        ..Jct::at(intake.addr)
    };
    let refused = wrong.run(&["status"]).await;
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("--token-file"), "{refused:?}");
    assert!(
        !refused.stderr.contains("tok-nobody"),
        "the token is never printed"
    );

    let submitter = Jct {
        token_file: token("sub", "tok-sub"),
        ..Jct::at(intake.addr)
    };
    let id = submitter.enqueue("Submitted with a token").await;
    assert_eq!(submitter.run(&["get", &id]).await.code, 0);
    let denied = submitter.run(&["status", "-o", "json"]).await;
    assert_eq!(denied.code, 5, "{denied:?}");
    assert_eq!(denied.error()["reason"], "ROLE_NOT_ALLOWED");

    let operator = Jct {
        token_file: token("op", "tok-op"),
        ..Jct::at(intake.addr)
    };
    let status = operator.run(&["status", "-o", "json"]).await.ok().json();
    assert_eq!(status["task_counts"]["queued"], 1, "{status}");
    // no worker: the task waits, and status says since when
    assert!(status["oldest_queued_at"].is_string(), "{status}");
    assert!(
        status["oldest_queued_age_seconds"].as_f64() >= Some(0.0),
        "{status}"
    );
    let text = operator.run(&["status"]).await.ok();
    assert!(
        !text.stdout.contains("oldest queued  none queued"),
        "{text:?}"
    );

    intake.stop().await.expect("intake stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_intake_exits_6() {
    // a port that was just free: nothing listens on it
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let jct = Jct::at(format!("127.0.0.1:{port}"));
    let run = jct.run(&["get", "x"]).await;
    assert_eq!(run.code, 6, "{run:?}");
    assert!(run.stderr.contains("cannot reach the intake"), "{run:?}");
    let run = jct.run(&["status", "-o", "json"]).await;
    assert_eq!(run.code, 6, "{run:?}");
    assert_eq!(run.error()["exit_code"], 6);
}

fn free_port() -> u16 {
    jct_e2e::free_port().expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jct_up_runs_a_pair_that_jct_can_use_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut up = tokio::process::Command::new(env!("CARGO_BIN_EXE_jct"))
        .arg("up")
        .current_dir(dir.path())
        .env("JCT_INTAKE_ADDR", format!("127.0.0.1:{port}"))
        .env("JCT_WORKER_HEALTH_ADDR", "")
        .env_remove("DATABASE_URL")
        .env_remove("JCT_ALLOWED_REPO_PREFIXES")
        .env_remove("JCT_TRACE_ROOT")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("jct up starts");
    let jct = Jct::at(format!("127.0.0.1:{port}"));

    // the banner names the address and the jct lines to try
    let mut stdout = up.stdout.take().expect("stdout");
    let mut banner = String::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 4096];
        while !banner.contains("Ctrl-C stops both") {
            let n = stdout.read(&mut buffer).await.expect("read banner");
            assert!(n > 0, "jct up ended early: {banner}");
            banner.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    })
    .await;
    assert!(read.is_ok(), "no banner: {banner}");
    assert!(banner.contains(&format!("grpcurl -plaintext 127.0.0.1:{port} list")));
    assert!(
        banner.contains(&format!("JCT_ADDR=http://127.0.0.1:{port} jct status")),
        "{banner}"
    );

    // the worker attaches, and a task runs to completion on the local defaults
    let attached = jct_e2e::eventually(Duration::from_secs(30), || async {
        let run = jct.run(&["status", "-o", "json"]).await;
        (run.code == 0 && run.json()["workers"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    assert!(attached.is_some(), "the worker did not attach");
    let run = jct
        .run(&[
            "enqueue",
            "--objective",
            "Run on jct up",
            "--operation",
            "docs",
            "--repo",
            "myorg/service",
            "--wait",
        ])
        .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        dir.path().join("jct-intake.db").exists(),
        "SQLite file in the working dir"
    );
    assert!(
        dir.path().join("traces").is_dir(),
        "traces in the working dir"
    );

    // SIGTERM stops both cleanly
    let pid = up.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(60), up.wait())
        .await
        .expect("jct up stops")
        .expect("exit status");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_outlives_an_intake_restart() {
    let database = TestDatabase::sqlite();
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let intake = IntakeHandle::start(intake_config(&database.url), addr).expect("intake");
    let jct = Jct::at(addr);
    let id = jct.enqueue("Outlives a restart").await;

    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_jct"))
        .args(["watch", &id, "-o", "json"])
        .env("JCT_ADDR", &jct.addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("watch starts");
    // the watch has seen the task queued before the intake goes away
    let mut stdout = tokio::io::BufReader::new(watch.stdout.take().expect("stdout"));
    let mut first = String::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        use tokio::io::AsyncBufReadExt;
        stdout.read_line(&mut first).await.expect("first line");
    })
    .await
    .expect("the watch starts");
    assert!(first.contains("\"queued\""), "{first}");

    // a drain (as at a rolling restart) ends the watch's stream under it
    intake.stop().await.expect("intake stops");
    // the first tries may fail while the old intake's lock and port are let go
    let intake = jct_e2e::eventually(Duration::from_secs(20), || async {
        IntakeHandle::start_serving(intake_config(&database.url), addr, Duration::from_secs(5))
            .await
            .ok()
    })
    .await
    .expect("the intake restarts on the same address");
    let cancel = jct.run(&["cancel", &id]).await;
    assert_eq!(cancel.code, 0, "{cancel:?}");

    let output = tokio::time::timeout(Duration::from_secs(60), watch.wait_with_output())
        .await
        .expect("the watch ends")
        .expect("watch output");
    assert_eq!(output.status.code(), Some(21), "{output:?}");
    let mut rest = String::new();
    {
        use tokio::io::AsyncReadExt;
        stdout.read_to_string(&mut rest).await.expect("rest");
    }
    let last: Json = rest
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    assert_eq!(last["status"], "cancelled", "{rest}");
    intake.stop().await.expect("intake stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_jct_verifies_the_intake_and_presents_its_certificate() {
    use jct::test_pki::MutualTlsFiles;

    let database = TestDatabase::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    let MutualTlsFiles {
        server_ca_file,
        intake: intake_files,
        client_ca,
        client_ca_file,
        ..
    } = MutualTlsFiles::write(dir.path()).expect("certificates");
    let caller = client_ca
        .write_issued(dir.path(), "caller", &["olga"])
        .expect("caller certificate");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "tok-op,olga,operator\n").expect("tokens");
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-op\n").expect("token");

    let mut config = intake_config(&database.url);
    config.auth_tokens_file = Some(tokens);
    config.tls_cert_file = Some(intake_files.cert.clone());
    config.tls_key_file = Some(intake_files.key.clone());
    config.tls_client_ca_file = Some(client_ca_file);
    let intake = IntakeHandle::start(config, "127.0.0.1:0".parse().expect("addr")).expect("intake");
    let jct = Jct {
        addr: format!("https://{}", intake.addr),
        token_file: Some(token),
    };
    let path = |p: &Path| p.display().to_string();
    let (ca, cert, key) = (path(&server_ca_file), path(&caller.cert), path(&caller.key));

    let status = jct
        .run(&[
            "status",
            "-o",
            "json",
            "--tls-ca-file",
            &ca,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
        ])
        .await
        .ok()
        .json();
    assert!(status["version"].is_string(), "{status}");

    // no client certificate: the intake refuses the handshake
    let run = jct.run(&["status", "--tls-ca-file", &ca]).await;
    assert_eq!(run.code, 6, "{run:?}");
    // an intake the system's roots do not vouch for is not trusted
    let run = jct
        .run(&["status", "--tls-cert-file", &cert, "--tls-key-file", &key])
        .await;
    assert_eq!(run.code, 6, "{run:?}");
    // TLS files with a plaintext address, or a certificate without its key: usage
    let plain = Jct {
        addr: format!("http://{}", intake.addr),
        token_file: None,
    };
    let run = plain.run(&["status", "--tls-ca-file", &ca]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("https://"), "{run:?}");
    assert_eq!(jct.run(&["status", "--tls-cert-file", &cert]).await.code, 2);

    intake.stop().await.expect("intake stops");
}
