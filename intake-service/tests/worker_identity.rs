//! A worker's session belongs to the principal that attached it. The attack of
//! issue 9: another caller attached under a real worker's id, was handed its
//! running task and reported a forged result; the real worker never got work
//! again. Now the takeover is refused, a lease handed to one principal's worker
//! cannot be renewed or reported under by another's, and the real worker keeps
//! its task.

mod support;

use std::time::Duration;

use jct::v1 as pb;
use jct_migrations::test_database::TestDatabase;
use support::{FakeWorker, TestIntake, as_caller, completed, enqueue_request, reason};
use tonic::Code;

const TOKENS: &str = "\
tok-sam,sam,submitter
tok-walt,walt,worker
tok-mallory,mallory,worker
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_principal_cannot_take_over_a_worker_or_its_leases() {
    let database = TestDatabase::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).expect("tokens");
    let intake = TestIntake::start_with_tokens(&database.url, "myorg/", &tokens).await;
    let mut client = intake.client.clone();
    let id = client
        .enqueue(as_caller(enqueue_request("Held by walt"), "tok-sam"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;

    let mut walt = FakeWorker::attach_as(intake.channel().await, Some("tok-walt"), "w1", 1, vec![])
        .await
        .expect("walt attaches");
    let assignment = walt.next_assignment().await;
    assert_eq!(
        assignment.task.as_ref().map(|t| t.id.as_str()),
        Some(id.as_str())
    );

    // the takeover: mallory claims walt's worker id, even presenting walt's lease
    let lease = pb::LeaseRef {
        task_id: id.clone(),
        lease_token: assignment.lease_token.clone(),
    };
    for held in [vec![], vec![lease.clone()]] {
        let refused =
            FakeWorker::attach_as(intake.channel().await, Some("tok-mallory"), "w1", 1, held)
                .await
                .err()
                .expect("takeover refused");
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (Code::PermissionDenied, "WORKER_ID_TAKEN")
        );
    }

    // under an id of its own, mallory cannot renew or report under walt's lease
    let mut mallory = FakeWorker::attach_as(
        intake.channel().await,
        Some("tok-mallory"),
        "m1",
        1,
        vec![lease.clone()],
    )
    .await
    .expect("own id");
    mallory
        .send(pb::worker_message::Kind::Heartbeat(pb::Heartbeat {
            leases: vec![lease.clone()],
        }))
        .await;
    let mut forged = completed(&assignment, 1);
    forged.trace_uri = "https://evil.example/trace".into();
    let ack = mallory.report(forged).await;
    assert!(!ack.accepted, "{ack:?}");
    assert_eq!(ack.reason, "LEASE_LOST");

    // walt was never told its lease is gone, and finishes its task
    while let Some(message) = walt.next(Duration::from_millis(200)).await {
        assert!(
            !matches!(
                message,
                pb::dispatch_message::Kind::LeaseLost(_) | pb::dispatch_message::Kind::Cancel(_)
            ),
            "{message:?}"
        );
    }
    let ack = walt.report(completed(&assignment, 1)).await;
    assert!(ack.accepted, "{ack:?}");
    let task = client
        .get_task(as_caller(pb::GetTaskRequest { task_id: id }, "tok-sam"))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(task.status, "completed");
    assert_eq!(task.trace_uri, "");
    intake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_workers_attach_and_the_same_principal_may_reconnect() {
    let database = TestDatabase::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).expect("tokens");
    let intake = TestIntake::start_with_tokens(&database.url, "myorg/", &tokens).await;

    for (token, code) in [
        (None, Code::Unauthenticated),
        (Some("tok-sam"), Code::PermissionDenied),
    ] {
        let refused = FakeWorker::attach_as(intake.channel().await, token, "w1", 1, vec![])
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.code(), code, "{token:?}");
    }
    let _first = FakeWorker::attach_as(intake.channel().await, Some("tok-walt"), "w1", 1, vec![])
        .await
        .expect("walt");
    let _again = FakeWorker::attach_as(intake.channel().await, Some("tok-walt"), "w1", 1, vec![])
        .await
        .expect("walt reconnects under its own id");
    intake.stop().await;
}
