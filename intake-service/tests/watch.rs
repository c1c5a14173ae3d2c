//! WatchTask over real gRPC: the current state first, every change pushed by the
//! commit that made it, the end after a terminal state; reconnects, unknown tasks,
//! many watchers, draining — on SQLite and on Postgres — and, on Postgres, a change
//! committed through another replica.

mod support;

use std::time::Duration;

use jct::v1 as pb;
use jct::v1::task_service_client::TaskServiceClient;
use jct_migrations::on_both_backends;
use jct_migrations::test_database::TestDatabase;
use support::{FakeWorker, TestIntake, completed, enqueue_request, reason};
use tonic::Streaming;
use tonic::transport::Channel;

on_both_backends!(
    a_watch_sees_queued_running_completed_and_ends,
    a_reconnect_starts_from_the_current_state,
    unknown_and_malformed_ids_are_refused,
    many_watchers_all_see_the_end,
    a_draining_intake_ends_watches_with_shutting_down,
);

const STEP: Duration = Duration::from_secs(10);

async fn enqueue(client: &mut TaskServiceClient<Channel>, objective: &str) -> String {
    client
        .enqueue(enqueue_request(objective))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id
}

async fn watch(client: &mut TaskServiceClient<Channel>, task_id: &str) -> Streaming<pb::Task> {
    client
        .watch_task(pb::WatchTaskRequest {
            task_id: task_id.into(),
        })
        .await
        .expect("watch")
        .into_inner()
}

/// The next state, or `None` when the stream ended; fails on a timeout.
async fn next(stream: &mut Streaming<pb::Task>) -> Option<pb::Task> {
    tokio::time::timeout(STEP, stream.message())
        .await
        .expect("a state or the end within 10 s")
        .expect("no error")
}

async fn cancel(client: &mut TaskServiceClient<Channel>, task_id: &str) {
    client
        .update_status(pb::UpdateStatusRequest {
            task_id: task_id.into(),
            status: "cancelled".into(),
            ..Default::default()
        })
        .await
        .expect("cancel");
}

async fn a_watch_sees_queued_running_completed_and_ends(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let id = enqueue(&mut client, "Watch me run").await;
    let mut stream = watch(&mut client, &id).await;
    let first = next(&mut stream).await.expect("current state");
    assert_eq!(
        (first.id.as_str(), first.status.as_str()),
        (id.as_str(), "queued")
    );

    let mut worker = FakeWorker::attach(intake.channel().await, "w1", 1, vec![]).await;
    let assignment = worker.next_assignment().await;
    let running = next(&mut stream).await.expect("running");
    assert_eq!(running.status, "running");
    assert_eq!(running.worker_id, "w1");
    assert_eq!(running.attempt, 1);

    assert!(worker.report(completed(&assignment, 1)).await.accepted);
    let done = next(&mut stream).await.expect("completed");
    assert_eq!(done.status, "completed");
    assert!(done.result.is_some() && done.completed_at.is_some());
    assert!(
        next(&mut stream).await.is_none(),
        "ends after a terminal state"
    );
    intake.stop().await;
}

async fn a_reconnect_starts_from_the_current_state(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let id = enqueue(&mut client, "Watch, leave, come back").await;
    let mut first_watch = watch(&mut client, &id).await;
    assert_eq!(
        next(&mut first_watch).await.map(|t| t.status).as_deref(),
        Some("queued")
    );
    drop(first_watch);

    // changes while nobody watches
    let mut worker = FakeWorker::attach(intake.channel().await, "w1", 1, vec![]).await;
    let assignment = worker.next_assignment().await;
    let mut again = watch(&mut client, &id).await;
    assert_eq!(
        next(&mut again).await.map(|t| t.status).as_deref(),
        Some("running")
    );
    drop(again);
    assert!(worker.report(completed(&assignment, 1)).await.accepted);

    // a watch of a finished task shows it once and ends
    let mut late = watch(&mut client, &id).await;
    assert_eq!(
        next(&mut late).await.map(|t| t.status).as_deref(),
        Some("completed")
    );
    assert!(next(&mut late).await.is_none());
    intake.stop().await;
}

async fn unknown_and_malformed_ids_are_refused(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let unknown = client
        .watch_task(pb::WatchTaskRequest {
            task_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("no such task");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(reason(&unknown), "TASK_NOT_FOUND");
    let malformed = client
        .watch_task(pb::WatchTaskRequest {
            task_id: "not-a-uuid".into(),
        })
        .await
        .expect_err("malformed id");
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
    assert_eq!(reason(&malformed), "VALIDATION_FAILED");
    intake.stop().await;
}

async fn many_watchers_all_see_the_end(url: &str) {
    const WATCHERS: usize = 200;
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let id = enqueue(&mut client, "Watched by a crowd").await;
    let mut streams = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        let mut stream = watch(&mut client, &id).await;
        assert_eq!(
            next(&mut stream).await.map(|t| t.status).as_deref(),
            Some("queued")
        );
        streams.push(stream);
    }
    let mut worker = FakeWorker::attach(intake.channel().await, "w1", 1, vec![]).await;
    let assignment = worker.next_assignment().await;
    assert!(worker.report(completed(&assignment, 1)).await.accepted);
    let readers = streams.into_iter().map(|mut stream| {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(task) = next(&mut stream).await {
                seen.push(task.status);
            }
            seen
        })
    });
    for seen in futures::future::join_all(readers).await {
        let seen = seen.expect("reader");
        // a watcher that fell behind may skip `running`, never the end
        assert!(
            seen == ["running", "completed"] || seen == ["completed"],
            "{seen:?}"
        );
    }
    intake.stop().await;
}

async fn a_draining_intake_ends_watches_with_shutting_down(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let id = enqueue(&mut client, "Watched while the intake stops").await;
    let mut stream = watch(&mut client, &id).await;
    assert!(next(&mut stream).await.is_some());
    let stopping = tokio::spawn(intake.stop());
    let ended = tokio::time::timeout(STEP, stream.message())
        .await
        .expect("the stream ends while draining")
        .expect_err("with a status");
    assert_eq!(ended.code(), tonic::Code::Unavailable);
    assert_eq!(reason(&ended), "SHUTTING_DOWN");
    stopping.await.expect("intake stops within its grace");
}

/// On Postgres, every replica's watchers hear of a change committed through any
/// of them (the `jct_task_changed` trigger and LISTEN), not only their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_change_through_another_replica_reaches_the_watcher() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let first = TestIntake::start(&database.url, "myorg/").await;
    let second = TestIntake::start(&database.url, "myorg/").await;
    let mut through_first = first.client.clone();
    let mut through_second = second.client.clone();
    let id = enqueue(&mut through_first, "Changed on one replica").await;
    let mut stream = watch(&mut through_second, &id).await;
    assert_eq!(
        next(&mut stream).await.map(|t| t.status).as_deref(),
        Some("queued")
    );
    cancel(&mut through_first, &id).await;
    let cancelled = next(&mut stream).await.expect("the other replica's change");
    assert_eq!(cancelled.status, "cancelled");
    assert!(next(&mut stream).await.is_none());
    first.stop().await;
    second.stop().await;
}
