//! Enqueue → row → worker → trace folder, with the `record` executor: a complete
//! trace, exactly-once execution across workers, and an intake restart while
//! workers are attached — on SQLite and on Postgres.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use jct::v1 as pb;
use jct_e2e::{
    IntakeHandle, WorkerHandle, enqueue_request, eventually, intake_config, on_both_backends,
    task_client, worker_config,
};

on_both_backends!(
    a_recorded_task_completes_with_a_complete_trace,
    four_workers_run_each_of_500_tasks_exactly_once,
    workers_reattach_after_the_intake_restarts,
);

const PATIENCE: Duration = Duration::from_secs(30);

async fn wait_for_status(client: &mut jct_e2e::TaskClient, id: &str, status: &str) -> pb::Task {
    jct_e2e::wait_for_task(client, id, PATIENCE, |task| task.status == status)
        .await
        .unwrap_or_else(|| panic!("task {id} did not become {status}"))
}

async fn a_recorded_task_completes_with_a_complete_trace(url: &str) {
    let traces = tempfile::tempdir().expect("trace root");
    let intake = IntakeHandle::start(intake_config(url), "127.0.0.1:0".parse().expect("addr"))
        .expect("intake");
    let worker = WorkerHandle::start(worker_config(&intake.url(), traces.path()));
    let mut client = task_client(intake.addr);

    let id = client
        .enqueue(enqueue_request("Record what would run"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    let task = wait_for_status(&mut client, &id, "completed").await;
    assert_eq!(task.attempt, 1);
    assert!(!task.worker_id.is_empty());
    assert!(task.started_at.is_some() && task.completed_at.is_some());
    let result = task.result.expect("result");
    assert!(result.fields.contains_key("would_run"));
    assert!(task.error.is_none());

    let folder = traces.path().canonicalize().expect("root").join(&id);
    assert_eq!(task.trace_uri, format!("file://{}", folder.display()));
    for file in [
        "task.json",
        "events.jsonl",
        "stdout.log",
        "stderr.log",
        "result.json",
        "manifest.json",
    ] {
        assert!(folder.join(file).is_file(), "{file} missing");
    }
    assert!(
        !folder.join("error.json").exists(),
        "exactly one of result.json / error.json"
    );
    let events = std::fs::read_to_string(folder.join("events.jsonl")).expect("events");
    let kinds: Vec<String> = events
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("json line"))
        .map(|event| {
            assert!(event["ts"].is_string());
            event["event"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(kinds, ["assigned", "started", "finished"]);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(folder.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(
        (
            manifest["executor"].as_str(),
            manifest["attempt"].as_i64(),
            manifest["status"].as_str()
        ),
        (Some("record"), Some(1), Some("completed"))
    );
    assert_eq!(
        manifest["worker_id"].as_str(),
        Some(task.worker_id.as_str())
    );
    // the trace the run belongs to, also without a span exporter
    let context = jct::traceparent::Traceparent::parse(&task.traceparent).expect("traceparent");
    assert_eq!(
        manifest["trace_id"].as_str(),
        Some(context.trace_id_hex().as_str())
    );
    assert_eq!(
        manifest["traceparent"].as_str(),
        Some(task.traceparent.as_str())
    );
    let stored: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(folder.join("task.json")).expect("task.json"),
    )
    .expect("json");
    assert_eq!(stored["id"].as_str(), Some(id.as_str()));

    worker.stop().await.expect("worker stops");
    intake.stop().await.expect("intake stops");
}

async fn four_workers_run_each_of_500_tasks_exactly_once(url: &str) {
    let traces = tempfile::tempdir().expect("trace root");
    let intake = IntakeHandle::start(intake_config(url), "127.0.0.1:0".parse().expect("addr"))
        .expect("intake");
    let workers: Vec<WorkerHandle> = (0..4)
        .map(|n| {
            let mut config = worker_config(&intake.url(), traces.path());
            config.worker_id = Some(format!("worker-{n}"));
            config.capacity = 8;
            WorkerHandle::start(config)
        })
        .collect();
    let client = task_client(intake.addr);
    let enqueues = (0..500).map(|n| {
        let mut client = client.clone();
        async move {
            client
                .enqueue(enqueue_request(&format!("Task {n}")))
                .await
                .map(|r| r.into_inner().task_id)
        }
    });
    let ids: Vec<String> = futures::future::join_all(enqueues)
        .await
        .into_iter()
        .map(|r| r.expect("enqueue"))
        .collect();

    let done = eventually(Duration::from_secs(60), || {
        let mut client = client.clone();
        async move {
            let page = client
                .list_tasks(pb::ListTasksRequest {
                    status: Some("completed".into()),
                    page_size: 500,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            (page.tasks.len() == 500).then_some(page.tasks)
        }
    })
    .await
    .expect("all 500 tasks completed");
    assert!(
        done.iter().all(|task| task.attempt == 1),
        "no task ran twice"
    );
    let workers_used: HashSet<&str> = done.iter().map(|t| t.worker_id.as_str()).collect();
    assert!(
        workers_used.len() > 1,
        "work spread over workers: {workers_used:?}"
    );

    let folders: HashSet<String> = std::fs::read_dir(traces.path())
        .expect("trace root")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(folders.len(), 500, "one trace folder per task");
    for id in &ids {
        assert!(folders.contains(id), "no trace for {id}");
        assert!(
            !Path::new(traces.path()).join(id).join("attempt-2").exists(),
            "{id} executed twice"
        );
    }
    for worker in workers {
        worker.stop().await.expect("worker stops");
    }
    intake.stop().await.expect("intake stops");
}

async fn workers_reattach_after_the_intake_restarts(url: &str) {
    let traces = tempfile::tempdir().expect("trace root");
    let config = intake_config(url);
    let intake =
        IntakeHandle::start(config.clone(), "127.0.0.1:0".parse().expect("addr")).expect("intake");
    let addr = intake.addr;
    let workers: Vec<WorkerHandle> = (0..2)
        .map(|n| {
            let mut config = worker_config(&intake.url(), traces.path());
            config.worker_id = Some(format!("worker-{n}"));
            WorkerHandle::start(config)
        })
        .collect();
    let mut client = task_client(addr);
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(
            client
                .enqueue(enqueue_request(&format!("Before restart {n}")))
                .await
                .expect("enqueue")
                .into_inner()
                .task_id,
        );
    }
    // crash mid-stream: whatever was assigned, running or queued must still finish
    intake.crash();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let intake = IntakeHandle::start(config, addr).expect("intake restarts on the same address");
    let mut client = task_client(addr);
    for n in 0..50 {
        ids.push(
            client
                .enqueue(enqueue_request(&format!("After restart {n}")))
                .await
                .expect("enqueue")
                .into_inner()
                .task_id,
        );
    }
    for id in &ids {
        let task = wait_for_status(&mut client, id, "completed").await;
        assert!(task.attempt >= 1);
    }
    for worker in workers {
        worker.stop().await.expect("worker stops");
    }
    intake.stop().await.expect("intake stops");
}
