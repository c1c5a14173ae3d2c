//! The `command` executor end to end: success, failure, time-budget kill,
//! cancellation while running, network and secret isolation, diff capture against
//! a local bare repository, and a crashed worker's task finishing elsewhere as
//! attempt 2 — on SQLite and on Postgres.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jct::v1 as pb;
use jct_e2e::{
    IntakeHandle, WorkerHandle, enqueue_request, eventually, intake_config, on_both_backends,
    task_client, worker_config,
};
use worker_service::config::WorkerConfig;
use worker_service::executor::ExecutorKind;

on_both_backends!(
    a_program_that_exits_zero_completes,
    a_failing_program_fails_with_its_exit_status_and_stderr,
    the_time_budget_kills_the_process_group,
    cancelling_a_running_task_stops_its_program,
    the_program_has_no_network_and_no_secrets,
    the_diff_against_the_checked_out_repository_is_kept,
    a_crashed_workers_task_completes_elsewhere_as_attempt_2,
);

type Client = pb::task_service_client::TaskServiceClient<tonic::transport::Channel>;

struct Setup {
    intake: IntakeHandle,
    client: Client,
    traces: tempfile::TempDir,
    scratch: tempfile::TempDir,
}

fn setup(url: &str) -> Setup {
    let intake = IntakeHandle::start(intake_config(url), "127.0.0.1:0".parse().expect("addr"))
        .expect("intake");
    let client = task_client(intake.addr);
    Setup {
        intake,
        client,
        traces: tempfile::tempdir().expect("traces"),
        scratch: jct_e2e::scratch_dir(),
    }
}

impl Setup {
    fn worker(&self, command: &str) -> WorkerConfig {
        let mut config = worker_config(&self.intake.url(), self.traces.path());
        config.executor = ExecutorKind::Command;
        config.executor_command = Some(command.to_string());
        config.workspace_root = Some(self.scratch.path().join("workspaces"));
        config.shutdown_grace_seconds = 1;
        config
    }

    fn trace(&self, id: &str) -> PathBuf {
        self.traces
            .path()
            .canonicalize()
            .expect("trace root")
            .join(id)
    }
}

async fn settled(client: &Client, id: &str) -> pb::Task {
    jct_e2e::wait_for_task(client, id, Duration::from_secs(30), |task| {
        matches!(task.status.as_str(), "completed" | "failed" | "cancelled")
    })
    .await
    .unwrap_or_else(|| panic!("task {id} did not finish"))
}

async fn enqueue(client: &Client, objective: &str) -> String {
    let mut client = client.clone();
    client
        .enqueue(enqueue_request(objective))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

async fn wait_for_file(path: &Path, needle: &str) {
    let found = eventually(Duration::from_secs(20), || async {
        std::fs::read_to_string(path)
            .ok()
            .filter(|text| text.contains(needle))
            .map(|_| ())
    })
    .await;
    assert!(
        found.is_some(),
        "{} never contained {needle:?}",
        path.display()
    );
}

async fn a_program_that_exits_zero_completes(url: &str) {
    let setup = setup(url);
    let worker = WorkerHandle::start(setup.worker(
        r#"sh -c 'cat > task-from-stdin.json; echo "hello from $JCT_TASK_ID"; test -s task-from-stdin.json'"#,
    ));
    let id = enqueue(&setup.client, "Say hello").await;
    let task = settled(&setup.client, &id).await;
    assert_eq!(task.status, "completed", "{:?}", task.error);
    let result = task.result.expect("result");
    assert_eq!(
        result.fields.get("exit_code").and_then(|v| match v.kind {
            Some(prost_types::value::Kind::NumberValue(n)) => Some(n),
            _ => None,
        }),
        Some(0.0)
    );
    let folder = setup.trace(&id);
    assert_eq!(task.trace_uri, format!("file://{}", folder.display()));
    assert!(read(&folder.join("stdout.log")).contains(&format!("hello from {id}")));
    assert!(folder.join("result.json").is_file() && !folder.join("error.json").exists());
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&folder.join("manifest.json"))).expect("manifest");
    assert_eq!(
        (
            manifest["executor"].as_str(),
            manifest["exit_code"].as_i64()
        ),
        (Some("command"), Some(0))
    );
    assert!(
        manifest["sandbox"]["network"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
    );
    worker.stop().await.expect("worker stops");
    setup.intake.stop().await.expect("intake stops");
}

async fn a_failing_program_fails_with_its_exit_status_and_stderr(url: &str) {
    let setup = setup(url);
    let worker = WorkerHandle::start(
        setup.worker("sh -c 'echo partial output; echo something broke >&2; exit 3'"),
    );
    let id = enqueue(&setup.client, "Fail loudly").await;
    let task = settled(&setup.client, &id).await;
    assert_eq!(task.status, "failed");
    let error = task.error.expect("error");
    assert_eq!(error.code, "EXIT_STATUS");
    assert!(
        error.message.contains('3') && error.message.contains("something broke"),
        "{}",
        error.message
    );
    assert!(task.result.is_none());
    let folder = setup.trace(&id);
    assert!(folder.join("error.json").is_file() && !folder.join("result.json").exists());
    assert!(
        read(&folder.join("stdout.log")).contains("partial output"),
        "a failed run keeps its partial trace"
    );
    worker.stop().await.expect("worker stops");
    setup.intake.stop().await.expect("intake stops");
}

async fn the_time_budget_kills_the_process_group(url: &str) {
    let setup = setup(url);
    // a `sleep` argument no other process has: its process is found by it
    let marker = format!("3600.{:09}", uuid::Uuid::new_v4().as_u128() % 1_000_000_000);
    let mut config = setup.worker(&format!("sh -c 'sleep {marker} & wait'"));
    config.max_task_seconds = Some(1); // the operator's cap is below the task's budget
    let worker = WorkerHandle::start(config);
    let id = enqueue(&setup.client, "Run forever").await;
    let task = settled(&setup.client, &id).await;
    assert_eq!(
        (task.status.as_str(), task.error.map(|e| e.code)),
        ("failed", Some("TIME_BUDGET_EXCEEDED".to_string()))
    );
    let alive: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            !stat.contains(") Z ")
                && std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        alive.is_empty(),
        "the background grandchild survived: {alive:?}"
    );
    worker.stop().await.expect("worker stops");
    setup.intake.stop().await.expect("intake stops");
}

async fn cancelling_a_running_task_stops_its_program(url: &str) {
    let setup = setup(url);
    let worker = WorkerHandle::start(setup.worker("sleep 60"));
    let id = enqueue(&setup.client, "Cancel me midway").await;
    let events = setup.trace(&id).join("events.jsonl");
    wait_for_file(&events, r#""event":"started""#).await;
    let mut client = setup.client.clone();
    client
        .update_status(pb::UpdateStatusRequest {
            task_id: id.clone(),
            status: "cancelled".into(),
            ..Default::default()
        })
        .await
        .expect("cancel");
    wait_for_file(&events, r#""event":"cancelled""#).await;
    let error: serde_json::Value =
        serde_json::from_str(&read(&setup.trace(&id).join("error.json"))).expect("error.json");
    assert_eq!(error["code"].as_str(), Some("CANCELLED"));
    let task = settled(&setup.client, &id).await;
    assert_eq!(task.status, "cancelled", "the status stays cancelled");
    assert_eq!(
        task.trace_uri,
        format!("file://{}", setup.trace(&id).display())
    );
    worker.stop().await.expect("worker stops");
    setup.intake.stop().await.expect("intake stops");
}

async fn the_program_has_no_network_and_no_secrets(url: &str) {
    let setup = setup(url);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
    let port = listener.local_addr().expect("port").port();
    let program = format!(
        "python3 -c \"import os, socket, sys; print(sorted(os.environ)); \
         socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')\""
    );
    let worker = WorkerHandle::start(setup.worker(&program));
    let id = enqueue(&setup.client, "Try to phone home").await;
    let task = settled(&setup.client, &id).await;
    let folder = setup.trace(&id);
    let stdout = read(&folder.join("stdout.log"));
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&folder.join("manifest.json"))).expect("manifest");
    let network = manifest["sandbox"]["network"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if task
        .error
        .as_ref()
        .is_some_and(|e| e.code == "SANDBOX_UNAVAILABLE")
    {
        eprintln!("network namespaces unavailable here: the task refused to run, as required");
    } else {
        assert_eq!(
            task.status, "failed",
            "the connection to the host's loopback must fail: {stdout}"
        );
        assert!(!stdout.contains("CONNECTED"));
        assert!(network.contains("isolated"), "{network}");
        // the program ran and listed its environment: the allowlist, never the
        // worker's own variables (cargo sets CARGO_* for this test process)
        assert!(
            stdout.contains("JCT_TASK_ID") && stdout.contains("PATH"),
            "{stdout}"
        );
        assert!(
            !stdout.contains("CARGO_"),
            "the program saw the worker's variables: {stdout}"
        );
    }
    drop(listener);
    worker.stop().await.expect("worker stops");
    setup.intake.stop().await.expect("intake stops");
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
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
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

async fn the_diff_against_the_checked_out_repository_is_kept(url: &str) {
    let setup = setup(url);
    let base = setup.scratch.path().join("git");
    let bare = base.join("myorg/service.git");
    std::fs::create_dir_all(&bare).expect("bare dir");
    git(&bare, &["init", "--bare", "-q"]);
    let seed = setup.scratch.path().join("seed");
    std::fs::create_dir_all(&seed).expect("seed dir");
    git(&seed, &["init", "-q"]);
    std::fs::write(seed.join("README.md"), "# service\n").expect("readme");
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-q", "-m", "initial"]);
    git(
        &seed,
        &[
            "push",
            "-q",
            bare.to_str().expect("utf-8 path"),
            "HEAD:refs/heads/main",
        ],
    );

    let mut config = setup.worker("sh -c 'echo \"more docs\" >> README.md; echo fresh > NEW.md'");
    config.git_base = Some(base.display().to_string());
    let worker = WorkerHandle::start(config);
    let id = enqueue(&setup.client, "Edit the readme").await;
    let task = settled(&setup.client, &id).await;
    assert_eq!(task.status, "completed", "{:?}", task.error);
    let folder = setup.trace(&id);
    let diff = read(&folder.join("diff.patch"));
    assert!(
        diff.contains("README.md") && diff.contains("+more docs"),
        "{diff}"
    );
    assert!(
        diff.contains("NEW.md") && diff.contains("+fresh"),
        "new files are in the diff: {diff}"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&folder.join("manifest.json"))).expect("manifest");
    assert_eq!(manifest["base_commit"].as_str().map(str::len), Some(40));
    let workspaces = std::fs::read_dir(setup.scratch.path().join("workspaces"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(workspaces, 0, "the workspace is removed");
    worker.stop().await.expect("worker stops");
    setup.intake.stop().await.expect("intake stops");
}

async fn a_crashed_workers_task_completes_elsewhere_as_attempt_2(url: &str) {
    let setup = setup(url);
    let mut first = setup.worker("sleep 60");
    first.worker_id = Some("doomed".into());
    let doomed = WorkerHandle::start(first);
    let id = enqueue(&setup.client, "Outlive a crash").await;
    wait_for_file(
        &setup.trace(&id).join("events.jsonl"),
        r#""event":"started""#,
    )
    .await;
    doomed.crash(); // like kill -9: the stream drops, the program dies with it

    let mut second = setup.worker("true");
    second.worker_id = Some("survivor".into());
    let survivor = WorkerHandle::start(second);
    let task = settled(&setup.client, &id).await;
    assert_eq!(
        (task.status.as_str(), task.attempt, task.worker_id.as_str()),
        ("completed", 2, "survivor")
    );
    let first_attempt = setup.trace(&id);
    let second_attempt = first_attempt.join("attempt-2");
    assert_eq!(
        task.trace_uri,
        format!("file://{}", second_attempt.display())
    );
    assert!(second_attempt.join("result.json").is_file());
    assert!(
        first_attempt.join("task.json").is_file() && !first_attempt.join("result.json").exists(),
        "attempt 1 keeps its partial trace, and never completed"
    );
    survivor.stop().await.expect("worker stops");
    setup.intake.stop().await.expect("intake stops");
}
