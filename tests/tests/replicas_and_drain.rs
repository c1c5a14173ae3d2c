//! Operations across processes: several intake replicas on one Postgres database
//! (a task enqueued through one reaches a worker attached to another, promptly),
//! and a worker stopped with SIGTERM handing back what it could not finish.

use std::time::{Duration, Instant};

use jct::v1 as pb;
use jct_e2e::{
    IntakeHandle, TestDatabase, WorkerHandle, enqueue_request, eventually, intake_config,
    task_client, worker_config,
};
use worker_service::executor::ExecutorKind;

async fn status_of(
    client: &jct_e2e::TaskClient,
    id: &str,
    wanted: &str,
    patience: Duration,
) -> Option<pb::Task> {
    jct_e2e::wait_for_task(client, id, patience, |task| task.status == wanted).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_enqueued_on_one_replica_reaches_a_worker_on_another() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let traces = tempfile::tempdir().expect("traces");
    let any_port = "127.0.0.1:0".parse().expect("addr");
    // with the fallback recheck far away, only LISTEN/NOTIFY can wake replica b
    let mut config = intake_config(&database.url);
    config.dispatch_recheck_ms = 600_000;
    let replica_a = IntakeHandle::start(config.clone(), any_port).expect("replica a");
    let replica_b = IntakeHandle::start(config, any_port).expect("replica b");
    let worker = WorkerHandle::start(worker_config(&replica_b.url(), traces.path()));
    let through_a = task_client(replica_a.addr);
    // let the worker attach to b first
    tokio::time::sleep(Duration::from_millis(300)).await;

    for n in 0..5 {
        let mut client = through_a.clone();
        let id = client
            .enqueue(enqueue_request(&format!("Cross-replica {n}")))
            .await
            .expect("enqueue")
            .into_inner()
            .task_id;
        let done = status_of(&through_a, &id, "completed", Duration::from_secs(20)).await;
        assert!(
            done.is_some(),
            "task {id} never reached the worker on the other replica"
        );
    }
    worker.stop().await.expect("worker stops");
    replica_a.stop().await.expect("a stops");
    replica_b.stop().await.expect("b stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_hands_back_what_it_cannot_finish() {
    let database = TestDatabase::sqlite();
    let traces = tempfile::tempdir().expect("traces");
    let scratch = tempfile::tempdir().expect("scratch");
    let intake = IntakeHandle::start(
        intake_config(&database.url),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .expect("intake");
    let client = task_client(intake.addr);
    let command_worker = |command: &str, id: &str| {
        let mut config = worker_config(&intake.url(), traces.path());
        config.executor = ExecutorKind::Command;
        config.executor_command = Some(command.to_string());
        config.workspace_root = Some(scratch.path().to_path_buf());
        config.worker_id = Some(id.to_string());
        config.shutdown_grace_seconds = 1;
        config
    };
    let slow = WorkerHandle::start(command_worker("sleep 60", "slow"));
    let mut enqueuer = client.clone();
    let id = enqueuer
        .enqueue(enqueue_request("Longer than the grace period"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    let running = status_of(&client, &id, "running", Duration::from_secs(10)).await;
    assert!(running.is_some());
    let events = traces.path().join(&id).join("events.jsonl");
    let started = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(&events)
            .ok()
            .filter(|e| e.contains(r#""event":"started""#))
            .map(|_| ())
    })
    .await;
    assert!(started.is_some());

    let stopping = Instant::now();
    slow.stop().await.expect("the worker drains and exits");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "grace 1 s, then hand back"
    );
    let handed_back = status_of(&client, &id, "queued", Duration::from_secs(5)).await;
    assert!(
        handed_back.is_some(),
        "the task went back to the queue, not left running"
    );
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(traces.path().join(&id).join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["status"].as_str(), Some("released"));

    let quick = WorkerHandle::start(command_worker("true", "quick"));
    let done = status_of(&client, &id, "completed", Duration::from_secs(10))
        .await
        .expect("completed elsewhere");
    assert_eq!((done.attempt, done.worker_id.as_str()), (2, "quick"));
    quick.stop().await.expect("worker stops");
    intake.stop().await.expect("intake stops");
}
