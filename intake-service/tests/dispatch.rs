//! DispatchService over real gRPC with scripted workers: push on commit, capacity,
//! lease fencing after a lost worker, retries up to WORKER_LOST, lease expiry,
//! cancellation reaching the worker, and acknowledgements that say what happened
//! (no "accepted" for a no-op, `LEASE_LOST` once the lease is gone) — on SQLite
//! and on Postgres.

mod support;

use jct_migrations::on_both_backends;

use std::time::Duration;

use intake_service::config::IntakeConfig;
use jct::v1 as pb;
use jct::v1::dispatch_message::Kind as Inbound;
use support::{FakeWorker, TestIntake, completed, enqueue_request, reason};

on_both_backends!(
    queued_tasks_are_pushed_within_capacity_oldest_first,
    a_lost_worker_cannot_report_over_the_next_attempt,
    attempts_run_out_with_worker_lost,
    an_expired_lease_is_taken_back,
    cancelling_a_running_task_reaches_its_worker,
    a_release_after_completion_is_not_acknowledged_as_accepted,
    reports_after_the_rescuer_took_the_task_back_answer_lease_lost,
);

fn config(url: &str) -> IntakeConfig {
    let mut config = IntakeConfig::for_database(url);
    config.allowed_repo_prefixes = "myorg/".into();
    config.retry_backoff_base_ms = 20;
    config.retry_backoff_max_ms = 50;
    config.shutdown_grace_seconds = 5;
    config
}

async fn queued_tasks_are_pushed_within_capacity_oldest_first(url: &str) {
    let intake = TestIntake::start_with(config(url)).await;
    let mut client = intake.client.clone();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            client
                .enqueue(enqueue_request(&format!("Task {n}")))
                .await
                .expect("enqueue")
                .into_inner()
                .task_id,
        );
    }
    let mut worker = FakeWorker::attach(intake.channel().await, "w1", 2, vec![]).await;
    let first = worker.next_assignment().await;
    let second = worker.next_assignment().await;
    let got = [
        first.task.as_ref().map(|t| t.id.clone()),
        second.task.as_ref().map(|t| t.id.clone()),
    ];
    assert_eq!(
        got,
        [Some(ids[0].clone()), Some(ids[1].clone())],
        "oldest first"
    );
    assert_eq!(first.attempt, 1);
    assert!(first.lease_expires_at.is_some() && !first.lease_token.is_empty());
    assert!(
        worker.next(Duration::from_millis(300)).await.is_none(),
        "never more than capacity in flight"
    );

    let ack = worker.report(completed(&first, 1)).await;
    assert!(ack.accepted, "{ack:?}");
    let third = worker.next_assignment().await;
    assert_eq!(
        third.task.map(|t| t.id),
        Some(ids[2].clone()),
        "a freed slot is refilled"
    );

    // a task enqueued while the worker has room is pushed without any poll;
    // this report spells its status as a worker of the previous release does
    // (a rolling upgrade), and is read the same
    let mut legacy = completed(&second, 2);
    legacy.status = pb::ReportStatus::Unspecified.into();
    #[allow(deprecated)]
    {
        legacy.legacy_status = "completed".into();
    }
    let ack = worker.report(legacy).await;
    assert!(ack.accepted, "{ack:?}");
    let fourth = worker.next_assignment().await;
    assert_eq!(fourth.task.map(|t| t.id), Some(ids[3].clone()));
    intake.stop().await;
}

async fn a_lost_worker_cannot_report_over_the_next_attempt(url: &str) {
    let intake = TestIntake::start_with(config(url)).await;
    let mut client = intake.client.clone();
    let id = client
        .enqueue(enqueue_request("Survive a lost worker"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;

    let mut first = FakeWorker::attach(intake.channel().await, "w1", 1, vec![]).await;
    let lost = first.next_assignment().await;
    assert_eq!(lost.attempt, 1);
    drop(first); // the stream drops: the worker is presumed dead

    let mut second = FakeWorker::attach(intake.channel().await, "w2", 1, vec![]).await;
    let retry = second.next_assignment().await;
    assert_eq!(
        (retry.task.as_ref().map(|t| t.id.clone()), retry.attempt),
        (Some(id.clone()), 2)
    );
    assert_ne!(retry.lease_token, lost.lease_token);

    // the first worker's late report, through the client API, changes nothing:
    // clients only cancel, lease or no lease
    for lease_token in [lost.lease_token.clone(), String::new()] {
        let refused = client
            .update_status(pb::UpdateStatusRequest {
                task_id: id.clone(),
                status: "completed".into(),
                result: Some(prost_types::Struct::default()),
                lease_token,
                ..Default::default()
            })
            .await
            .expect_err("clients only cancel");
        assert_eq!(reason(&refused), "WORKER_ONLY_TRANSITION");
    }

    let ack = second.report(completed(&retry, 7)).await;
    assert!(ack.accepted, "{ack:?}");
    let task = client
        .get_task(pb::GetTaskRequest { task_id: id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        (task.status.as_str(), task.attempt, task.worker_id.as_str()),
        ("completed", 2, "w2")
    );

    // reporting again on a finished task is refused, and nothing changes
    let again = second.report(completed(&retry, 8)).await;
    assert!(!again.accepted);
    assert_eq!(again.reason, "INVALID_TRANSITION");
    intake.stop().await;
}

async fn attempts_run_out_with_worker_lost(url: &str) {
    let mut config = config(url);
    config.max_attempts = 2;
    let intake = TestIntake::start_with(config).await;
    let mut client = intake.client.clone();
    let id = client
        .enqueue(enqueue_request("Doomed task"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    for attempt in 1..=2 {
        let mut worker =
            FakeWorker::attach(intake.channel().await, &format!("w{attempt}"), 1, vec![]).await;
        let assignment = worker.next_assignment().await;
        assert_eq!(assignment.attempt, attempt);
        drop(worker);
    }
    let task = support_eventually(|| {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            let task = client
                .get_task(pb::GetTaskRequest { task_id: id })
                .await
                .ok()?
                .into_inner();
            (task.status == "failed").then_some(task)
        }
    })
    .await;
    assert_eq!(task.error.map(|e| e.code), Some("WORKER_LOST".to_string()));
    assert_eq!(task.attempt, 2);
    intake.stop().await;
}

async fn an_expired_lease_is_taken_back(url: &str) {
    let mut config = config(url);
    config.lease_ttl_seconds = 1;
    let intake = TestIntake::start_with(config).await;
    let mut client = intake.client.clone();
    let id = client
        .enqueue(enqueue_request("Silent worker"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    // attached but never heartbeating: the lease lapses although the stream lives
    let mut silent = FakeWorker::attach(intake.channel().await, "silent", 1, vec![]).await;
    let first = silent.next_assignment().await;
    let lost = loop {
        match silent.next(Duration::from_secs(5)).await {
            Some(Inbound::LeaseLost(lost)) => break lost,
            Some(_) => continue,
            None => panic!("no LeaseLost after the lease expired"),
        }
    };
    assert_eq!(
        (lost.task_id.as_str(), lost.lease_token.as_str()),
        (id.as_str(), first.lease_token.as_str())
    );
    // the slot it held is free again, and the retry comes back to this worker
    let retry = silent.next_assignment().await;
    assert_eq!((retry.task.map(|t| t.id), retry.attempt), (Some(id), 2));
    intake.stop().await;
}

async fn cancelling_a_running_task_reaches_its_worker(url: &str) {
    let intake = TestIntake::start_with(config(url)).await;
    let mut client = intake.client.clone();
    let id = client
        .enqueue(enqueue_request("Cancel me while running"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    let mut worker = FakeWorker::attach(intake.channel().await, "w1", 1, vec![]).await;
    let assignment = worker.next_assignment().await;
    let cancelled = client
        .update_status(pb::UpdateStatusRequest {
            task_id: id.clone(),
            status: "cancelled".into(),
            ..Default::default()
        })
        .await
        .expect("cancel running")
        .into_inner();
    assert_eq!(cancelled.status, "cancelled");
    let cancel = loop {
        match worker.next(Duration::from_secs(5)).await {
            Some(Inbound::Cancel(cancel)) => break cancel,
            Some(_) => continue,
            None => panic!("the worker was not told to cancel"),
        }
    };
    assert_eq!(
        (cancel.task_id.as_str(), cancel.lease_token.as_str()),
        (id.as_str(), assignment.lease_token.as_str())
    );
    // the worker's final report is refused and the task stays cancelled
    let mut report = completed(&assignment, 3);
    report.status = pb::ReportStatus::Failed.into();
    report.result = None;
    report.error = Some(pb::TaskError {
        code: "CANCELLED".into(),
        message: "killed".into(),
    });
    let ack = worker.report(report).await;
    assert!(!ack.accepted);
    let task = client
        .get_task(pb::GetTaskRequest { task_id: id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(task.status, "cancelled");
    intake.stop().await;
}

async fn status_of(
    client: &pb::task_service_client::TaskServiceClient<tonic::transport::Channel>,
    id: &str,
) -> String {
    client
        .clone()
        .get_task(pb::GetTaskRequest {
            task_id: id.to_string(),
        })
        .await
        .expect("get")
        .into_inner()
        .status
}

fn released(assignment: &pb::Assignment, report_id: u64) -> pb::TaskReport {
    pb::TaskReport {
        status: pb::ReportStatus::Released.into(),
        result: None,
        ..completed(assignment, report_id)
    }
}

async fn a_release_after_completion_is_not_acknowledged_as_accepted(url: &str) {
    let intake = TestIntake::start_with(config(url)).await;
    let mut client = intake.client.clone();
    let id = client
        .enqueue(enqueue_request("Complete, then hand back"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    let mut worker = FakeWorker::attach(intake.channel().await, "w1", 1, vec![]).await;
    let assignment = worker.next_assignment().await;
    let ack = worker.report(completed(&assignment, 1)).await;
    assert!(ack.accepted, "{ack:?}");

    // handing back a task that is already finished changes nothing, and the
    // answer says so instead of "accepted"
    let ack = worker.report(released(&assignment, 2)).await;
    assert!(!ack.accepted, "{ack:?}");
    assert_eq!(ack.reason, "INVALID_TRANSITION", "{ack:?}");
    assert!(ack.message.contains("completed"), "{ack:?}");
    let task = client
        .get_task(pb::GetTaskRequest { task_id: id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!((task.status.as_str(), task.attempt), ("completed", 1));
    intake.stop().await;
}

async fn reports_after_the_rescuer_took_the_task_back_answer_lease_lost(url: &str) {
    let mut config = config(url);
    config.lease_ttl_seconds = 1;
    // the rescued task waits in the queue long enough to report against it there
    config.retry_backoff_base_ms = 1500;
    config.retry_backoff_max_ms = 1500;
    let intake = TestIntake::start_with(config).await;
    let mut client = intake.client.clone();
    let id = client
        .enqueue(enqueue_request("Outlive my lease"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    // attached but never heartbeating: the rescuer takes the task back
    let mut worker = FakeWorker::attach(intake.channel().await, "w1", 1, vec![]).await;
    let first = worker.next_assignment().await;
    loop {
        match worker.next(Duration::from_secs(5)).await {
            Some(Inbound::LeaseLost(_)) => break,
            Some(_) => continue,
            None => panic!("no LeaseLost after the lease expired"),
        }
    }
    assert_eq!(
        status_of(&client, &id).await,
        "queued",
        "rescued, waiting out its backoff"
    );

    // while the task is queued again: each report under the old lease
    let ack = worker.report(completed(&first, 1)).await;
    assert_eq!(
        (ack.accepted, ack.reason.as_str()),
        (false, "LEASE_LOST"),
        "{ack:?}"
    );
    let ack = worker.report(released(&first, 2)).await;
    assert_eq!(
        (ack.accepted, ack.reason.as_str()),
        (false, "LEASE_LOST"),
        "{ack:?}"
    );

    // and while the next attempt runs under a new lease
    let retry = worker.next_assignment().await;
    assert_eq!(
        (retry.task.as_ref().map(|t| t.id.clone()), retry.attempt),
        (Some(id.clone()), 2)
    );
    let ack = worker.report(completed(&first, 3)).await;
    assert_eq!(
        (ack.accepted, ack.reason.as_str()),
        (false, "LEASE_LOST"),
        "{ack:?}"
    );
    let ack = worker.report(released(&first, 4)).await;
    assert_eq!(
        (ack.accepted, ack.reason.as_str()),
        (false, "LEASE_LOST"),
        "{ack:?}"
    );
    assert_eq!(status_of(&client, &id).await, "running");

    // the current lease still completes it
    let ack = worker.report(completed(&retry, 5)).await;
    assert!(ack.accepted, "{ack:?}");
    intake.stop().await;
}

async fn support_eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..500 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached in 10 s")
}
