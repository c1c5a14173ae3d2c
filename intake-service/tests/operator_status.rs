//! `OperatorService/GetSystemStatus` reports the queue exactly as the store holds
//! it: counts by status and when the longest-waiting queued task entered the
//! queue, following claims and cancellations, on both backends.

mod support;

use jct::v1 as pb;
use jct_migrations::on_both_backends;
use support::{FakeWorker, TestIntake, enqueue_request};

on_both_backends!(status_reports_counts_and_the_oldest_queued_task);

async fn status(intake: &TestIntake) -> pb::GetSystemStatusResponse {
    pb::operator_service_client::OperatorServiceClient::new(intake.channel().await)
        .get_system_status(pb::GetSystemStatusRequest {})
        .await
        .expect("status answers")
        .into_inner()
}

async fn enqueue(intake: &TestIntake, objective: &str) -> pb::Task {
    intake
        .client
        .clone()
        .enqueue(enqueue_request(objective))
        .await
        .expect("enqueue")
        .into_inner()
        .task
        .expect("task")
}

async fn status_reports_counts_and_the_oldest_queued_task(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;

    let empty = status(&intake).await;
    assert!(empty.database_reachable);
    assert_eq!(empty.oldest_queued_at, None, "nothing is queued");
    assert_eq!(empty.task_counts.get("queued"), Some(&0));

    let first = enqueue(&intake, "First in the queue").await;
    let second = enqueue(&intake, "Second in the queue").await;
    let third = enqueue(&intake, "Third in the queue").await;
    let when = |task: &pb::Task| task.queued_at.map(|t| (t.seconds, t.nanos));
    assert!(when(&first) <= when(&second) && when(&second) <= when(&third));

    let now = status(&intake).await;
    assert_eq!(now.task_counts.get("queued"), Some(&3));
    assert_eq!(now.oldest_queued_at, first.queued_at);

    // the dispatcher claims the oldest: the next one becomes the oldest waiting
    let mut worker = FakeWorker::attach(intake.channel().await, "worker-1", 1, vec![]).await;
    let claimed = worker.next_assignment().await;
    assert_eq!(claimed.task.map(|t| t.id), Some(first.id.clone()));
    let now = status(&intake).await;
    assert_eq!(now.task_counts.get("running"), Some(&1));
    assert_eq!(now.task_counts.get("queued"), Some(&2));
    assert_eq!(now.oldest_queued_at, second.queued_at);

    // a cancelled task leaves the queue
    intake
        .client
        .clone()
        .update_status(pb::UpdateStatusRequest {
            task_id: second.id.clone(),
            status: "cancelled".into(),
            ..Default::default()
        })
        .await
        .expect("cancel");
    let now = status(&intake).await;
    assert_eq!(now.task_counts.get("cancelled"), Some(&1));
    assert_eq!(now.task_counts.get("queued"), Some(&1));
    assert_eq!(now.oldest_queued_at, third.queued_at);

    intake
        .client
        .clone()
        .update_status(pb::UpdateStatusRequest {
            task_id: third.id.clone(),
            status: "cancelled".into(),
            ..Default::default()
        })
        .await
        .expect("cancel");
    let now = status(&intake).await;
    assert_eq!(now.task_counts.get("queued"), Some(&0));
    assert_eq!(now.oldest_queued_at, None);

    drop(worker);
    intake.stop().await;
}
