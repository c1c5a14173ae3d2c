//! Tenancy over real gRPC, on both backends: `Task.submitted_by` is the
//! authenticated principal; a submitter sees, watches, lists and cancels only its
//! own tasks (another's is TASK_NOT_FOUND, its existence not revealed); readers
//! and operators see all; idempotency keys are scoped per principal; page tokens
//! are bound to the caller and the filters; worker ids are for operators.

mod support;

use jct::v1 as pb;
use jct_migrations::on_both_backends;
use support::{FakeWorker, TestIntake, as_caller, enqueue_request, reason};
use tonic::Code;

on_both_backends!(
    submitters_see_and_cancel_only_their_own_tasks,
    idempotency_keys_are_scoped_per_principal,
    page_tokens_are_bound_to_the_caller_and_the_filters,
    only_operators_see_which_worker_runs_a_task,
);

const TOKENS: &str = "\
tok-alice,alice,submitter
tok-bob,bob,submitter
tok-rita,rita,reader
tok-olga,olga,operator
tok-wendy,wendy,worker
";

async fn start(url: &str) -> (TestIntake, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).expect("tokens");
    (
        TestIntake::start_with_tokens(url, "myorg/", &tokens).await,
        dir,
    )
}

async fn enqueue_as(intake: &TestIntake, token: &str, objective: &str) -> pb::Task {
    intake
        .client
        .clone()
        .enqueue(as_caller(enqueue_request(objective), token))
        .await
        .expect("enqueue")
        .into_inner()
        .task
        .expect("task")
}

async fn get_as(intake: &TestIntake, token: &str, id: &str) -> Result<pb::Task, tonic::Status> {
    intake
        .client
        .clone()
        .get_task(as_caller(pb::GetTaskRequest { task_id: id.into() }, token))
        .await
        .map(tonic::Response::into_inner)
}

async fn list_as(
    intake: &TestIntake,
    token: &str,
    request: pb::ListTasksRequest,
) -> Result<pb::ListTasksResponse, tonic::Status> {
    intake
        .client
        .clone()
        .list_tasks(as_caller(request, token))
        .await
        .map(tonic::Response::into_inner)
}

fn ids(response: &pb::ListTasksResponse) -> Vec<String> {
    response.tasks.iter().map(|t| t.id.clone()).collect()
}

fn assert_hidden(result: Result<impl std::fmt::Debug, tonic::Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::NotFound, "TASK_NOT_FOUND"),
        "{what}"
    );
}

async fn submitters_see_and_cancel_only_their_own_tasks(url: &str) {
    let (intake, _dir) = start(url).await;
    let alices = enqueue_as(&intake, "tok-alice", "Alice's task").await;
    let bobs = enqueue_as(&intake, "tok-bob", "Bob's task").await;
    let olgas = enqueue_as(&intake, "tok-olga", "Olga's task").await;
    assert_eq!(alices.submitted_by, "alice");
    assert_eq!(olgas.submitted_by, "olga");
    assert_eq!(
        alices.requested_by.as_ref().map(|r| r.id.as_str()),
        Some("bot-1"),
        "requested_by stays what the caller says"
    );

    // alice: her own task, nothing of bob's
    assert_eq!(
        get_as(&intake, "tok-alice", &alices.id)
            .await
            .expect("own")
            .id,
        alices.id
    );
    assert_hidden(
        get_as(&intake, "tok-alice", &bobs.id).await,
        "bob's via GetTask",
    );
    let mut client = intake.client.clone();
    assert_hidden(
        client
            .watch_task(as_caller(
                pb::WatchTaskRequest {
                    task_id: bobs.id.clone(),
                },
                "tok-alice",
            ))
            .await
            .map(|_| ()),
        "bob's via WatchTask",
    );
    let listed = list_as(&intake, "tok-alice", pb::ListTasksRequest::default())
        .await
        .expect("list");
    assert_eq!(ids(&listed), vec![alices.id.clone()]);
    let cancel = |id: &str, token: &str| {
        as_caller(
            pb::UpdateStatusRequest {
                task_id: id.into(),
                status: "cancelled".into(),
                ..Default::default()
            },
            token,
        )
    };
    assert_hidden(
        client.update_status(cancel(&bobs.id, "tok-alice")).await,
        "cancelling bob's",
    );
    assert_eq!(
        get_as(&intake, "tok-bob", &bobs.id)
            .await
            .expect("bob's")
            .status,
        "queued",
        "bob's task untouched"
    );
    client
        .update_status(cancel(&alices.id, "tok-alice"))
        .await
        .expect("her own");

    // readers and operators see every task; readers cancel nothing
    for token in ["tok-rita", "tok-olga"] {
        let listed = list_as(&intake, token, pb::ListTasksRequest::default())
            .await
            .expect("list");
        assert_eq!(
            ids(&listed),
            vec![olgas.id.clone(), bobs.id.clone(), alices.id.clone()],
            "{token}"
        );
        get_as(&intake, token, &bobs.id)
            .await
            .expect("reader and operator see all");
    }
    let denied = client
        .update_status(cancel(&bobs.id, "tok-rita"))
        .await
        .expect_err("readers do not cancel");
    assert_eq!(reason(&denied), "ROLE_NOT_ALLOWED");
    client
        .update_status(cancel(&bobs.id, "tok-olga"))
        .await
        .expect("operators cancel any task");
    intake.stop().await;
}

async fn idempotency_keys_are_scoped_per_principal(url: &str) {
    let (intake, _dir) = start(url).await;
    let mut client = intake.client.clone();
    let keyed = |objective: &str| pb::EnqueueRequest {
        idempotency_key: Some("deploy-42".into()),
        ..enqueue_request(objective)
    };
    let first = client
        .enqueue(as_caller(keyed("Alice's deploy"), "tok-alice"))
        .await
        .expect("alice")
        .into_inner();
    assert!(first.created);
    // bob's same key, even with another request, is bob's own task: no conflict,
    // and alice's task is not handed to him
    let squat = client
        .enqueue(as_caller(keyed("Bob's deploy"), "tok-bob"))
        .await
        .expect("bob's key is his own")
        .into_inner();
    assert!(squat.created);
    assert_ne!(squat.task_id, first.task_id);
    let replay = client
        .enqueue(as_caller(keyed("Bob's deploy"), "tok-bob"))
        .await
        .expect("bob")
        .into_inner();
    assert_eq!(
        (replay.created, replay.task_id.as_str()),
        (false, squat.task_id.as_str())
    );
    assert_eq!(
        replay.task.map(|t| t.objective),
        Some("Bob's deploy".to_string())
    );
    // alice's own replay still finds hers, and a different request conflicts
    let again = client
        .enqueue(as_caller(keyed("Alice's deploy"), "tok-alice"))
        .await
        .expect("alice replays")
        .into_inner();
    assert_eq!(
        (again.created, again.task_id.as_str()),
        (false, first.task_id.as_str())
    );
    let conflict = client
        .enqueue(as_caller(keyed("Something else"), "tok-alice"))
        .await
        .expect_err("same key, other request");
    assert_eq!(reason(&conflict), "IDEMPOTENCY_KEY_CONFLICT");
    intake.stop().await;
}

async fn page_tokens_are_bound_to_the_caller_and_the_filters(url: &str) {
    let (intake, _dir) = start(url).await;
    for i in 0..3 {
        enqueue_as(&intake, "tok-alice", &format!("Alice {i}")).await;
        enqueue_as(&intake, "tok-bob", &format!("Bob {i}")).await;
    }
    let page = |token: &str| pb::ListTasksRequest {
        page_size: 1,
        page_token: token.into(),
        ..Default::default()
    };
    let first = list_as(&intake, "tok-alice", page(""))
        .await
        .expect("first");
    assert_eq!(first.tasks.len(), 1);
    assert!(!first.next_page_token.is_empty());
    let second = list_as(&intake, "tok-alice", page(&first.next_page_token))
        .await
        .expect("alice pages on");
    assert!(second.tasks.iter().all(|t| t.submitted_by == "alice"));

    let invalid = |result: Result<pb::ListTasksResponse, tonic::Status>, what: &str| {
        let status = result.expect_err(what);
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::InvalidArgument, "INVALID_PAGE_TOKEN"),
            "{what}"
        );
    };
    // borrowed by bob, or by a reader
    invalid(
        list_as(&intake, "tok-bob", page(&first.next_page_token)).await,
        "bob borrows",
    );
    invalid(
        list_as(&intake, "tok-rita", page(&first.next_page_token)).await,
        "rita borrows",
    );
    // other filters
    invalid(
        list_as(
            &intake,
            "tok-alice",
            pb::ListTasksRequest {
                status: Some("queued".into()),
                ..page(&first.next_page_token)
            },
        )
        .await,
        "other filters",
    );
    // forged: a token's position changed by one bit
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut bytes = engine.decode(&first.next_page_token).expect("base64 token");
    bytes[10] ^= 0x01;
    invalid(
        list_as(&intake, "tok-alice", page(&engine.encode(bytes))).await,
        "forged",
    );
    intake.stop().await;
}

/// The first version of a task `token` is shown by WatchTask.
async fn watched_as(intake: &TestIntake, token: &str, id: &str) -> pb::Task {
    let mut stream = intake
        .client
        .clone()
        .watch_task(as_caller(
            pb::WatchTaskRequest { task_id: id.into() },
            token,
        ))
        .await
        .expect("watch")
        .into_inner();
    stream
        .message()
        .await
        .expect("watch message")
        .expect("the task now")
}

async fn only_operators_see_which_worker_runs_a_task(url: &str) {
    let (intake, _dir) = start(url).await;
    let alices = enqueue_as(&intake, "tok-alice", "Alice's running task").await;
    let mut worker = FakeWorker::attach_as(
        intake.channel().await,
        Some("tok-wendy"),
        "w-secret",
        1,
        vec![],
    )
    .await
    .expect("attach");
    let assignment = worker.next_assignment().await;
    assert_eq!(assignment.task.map(|t| t.id), Some(alices.id.clone()));

    for (token, shown) in [
        ("tok-alice", ""),
        ("tok-rita", ""),
        ("tok-olga", "w-secret"),
    ] {
        let got = get_as(&intake, token, &alices.id).await.expect("get");
        assert_eq!(got.status, "running");
        assert_eq!(got.worker_id, shown, "GetTask as {token}");
        let listed = list_as(&intake, token, pb::ListTasksRequest::default())
            .await
            .expect("list");
        let listed: Vec<&str> = listed.tasks.iter().map(|t| t.worker_id.as_str()).collect();
        assert_eq!(listed, vec![shown], "ListTasks as {token}");
        let watched = watched_as(&intake, token, &alices.id).await;
        assert_eq!(watched.worker_id, shown, "WatchTask as {token}");
    }
    let cancelled = intake
        .client
        .clone()
        .update_status(as_caller(
            pb::UpdateStatusRequest {
                task_id: alices.id.clone(),
                status: "cancelled".into(),
                ..Default::default()
            },
            "tok-alice",
        ))
        .await
        .expect("alice cancels her task")
        .into_inner();
    assert_eq!(
        (cancelled.status.as_str(), cancelled.worker_id.as_str()),
        ("cancelled", ""),
        "UpdateStatus as alice"
    );
    intake.stop().await;
}
