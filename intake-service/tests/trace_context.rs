//! The trace context stored with each task, over real gRPC: the client's
//! `traceparent` metadata is kept (and read back from the database, not only the
//! cache), a missing or invalid one is replaced by a fresh sampled root, an
//! idempotent replay keeps the first enqueue's trace, and a dry run names none —
//! on SQLite and on Postgres. (No OpenTelemetry layer is installed here, so the
//! intake has no span of its own to put between the client and the run: the
//! stored value is the one sent.)

mod support;

use jct::traceparent::Traceparent;
use jct::v1 as pb;
use jct_migrations::on_both_backends;
use support::{TestIntake, enqueue_request};

on_both_backends!(
    the_clients_traceparent_is_stored_with_the_task,
    a_missing_or_invalid_traceparent_becomes_a_fresh_root,
    a_replay_keeps_the_first_enqueues_trace,
);

const SENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn with_traceparent<T>(message: T, value: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", value.parse().expect("ascii"));
    request
}

/// The task as the database holds it (ListTasks reads rows; GetTask may be
/// answered from the cache).
async fn stored(intake: &TestIntake, id: &str) -> pb::Task {
    let mut client = intake.client.clone();
    client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("list")
        .into_inner()
        .tasks
        .into_iter()
        .find(|task| task.id == id)
        .expect("listed")
}

async fn the_clients_traceparent_is_stored_with_the_task(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let task = client
        .enqueue(with_traceparent(enqueue_request("Join my trace"), SENT))
        .await
        .expect("enqueue")
        .into_inner()
        .task
        .expect("task");
    assert_eq!(task.traceparent, SENT);
    let fetched = client
        .get_task(pb::GetTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(fetched.traceparent, SENT);
    assert_eq!(stored(&intake, &task.id).await.traceparent, SENT);

    let mut dry_run = enqueue_request("Would this be traced?");
    dry_run.validate_only = true;
    let answer = client
        .enqueue(with_traceparent(dry_run, SENT))
        .await
        .expect("dry run")
        .into_inner();
    assert_eq!(
        answer.task.expect("task").traceparent,
        "",
        "a dry run starts no run, so it names no trace"
    );
    intake.stop().await;
}

async fn a_missing_or_invalid_traceparent_becomes_a_fresh_root(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let mut made = Vec::new();
    for sent in [
        None,
        Some("garbage"),
        // all-zero trace id: invalid by the spec
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        // a version this intake does not read
        Some("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ] {
        let request = enqueue_request("Trace me anyway");
        let request = match sent {
            Some(value) => with_traceparent(request, value),
            None => tonic::Request::new(request),
        };
        let task = client
            .enqueue(request)
            .await
            .unwrap_or_else(|status| panic!("{sent:?} must not fail the enqueue: {status:?}"))
            .into_inner()
            .task
            .expect("task");
        let parsed = Traceparent::parse(&task.traceparent)
            .unwrap_or_else(|| panic!("{sent:?}: stored {:?}", task.traceparent));
        assert!(parsed.is_sampled(), "a fresh root is sampled");
        assert_ne!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            stored(&intake, &task.id).await.traceparent,
            task.traceparent
        );
        made.push(parsed.trace_id);
    }
    made.sort();
    made.dedup();
    assert_eq!(made.len(), 4, "every fresh root is a trace of its own");
    intake.stop().await;
}

async fn a_replay_keeps_the_first_enqueues_trace(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let mut request = enqueue_request("Once, traced once");
    request.idempotency_key = Some("traced-key".into());
    let first = client
        .enqueue(with_traceparent(request.clone(), SENT))
        .await
        .expect("enqueue")
        .into_inner();
    let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let again = client
        .enqueue(with_traceparent(request, other))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(
        (again.task_id.as_str(), again.created),
        (first.task_id.as_str(), false)
    );
    assert_eq!(again.task.expect("task").traceparent, SENT);
    intake.stop().await;
}
