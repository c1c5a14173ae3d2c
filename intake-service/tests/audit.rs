//! The audit trail over real gRPC, on both backends: enqueues, status changes
//! (with the principal and method that made them), denied calls and rejected
//! enqueues (aggregated, with a count), read by operators only through
//! `OperatorService/ListAuditEvents`, newest first, filtered and paged; worker
//! attaches and detaches (with the worker id), refused takeovers of a worker
//! id, and idempotency-key conflicts as rejected enqueues.

mod support;

use std::time::Duration;

use intake_service::config::IntakeConfig;
use jct::v1 as pb;
use jct_migrations::on_both_backends;
use support::{FakeWorker, TestIntake, as_caller, enqueue_request, reason};

on_both_backends!(
    the_trail_records_changes_and_refusals_for_operators,
    the_trail_records_workers_takeovers_and_key_conflicts,
);

const TOKENS: &str = "\
tok-alice,alice,submitter
tok-olga,olga,operator
";

async fn events(
    intake: &TestIntake,
    request: pb::ListAuditEventsRequest,
) -> Result<pb::ListAuditEventsResponse, tonic::Status> {
    pb::operator_service_client::OperatorServiceClient::new(intake.channel().await)
        .list_audit_events(as_caller(request, "tok-olga"))
        .await
        .map(tonic::Response::into_inner)
}

async fn the_trail_records_changes_and_refusals_for_operators(url: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, TOKENS).expect("tokens");
    let mut config = IntakeConfig::for_database(url);
    config.allowed_repo_prefixes = "myorg/".into();
    config.shutdown_grace_seconds = 5;
    config.auth_tokens_file = Some(tokens);
    config.audit_flush_ms = 20;
    let intake = TestIntake::start_with(config).await;
    let mut client = intake.client.clone();

    let id = client
        .enqueue(as_caller(enqueue_request("Audited"), "tok-alice"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    client
        .update_status(as_caller(
            pb::UpdateStatusRequest {
                task_id: id.clone(),
                status: "cancelled".into(),
                ..Default::default()
            },
            "tok-alice",
        ))
        .await
        .expect("cancel");
    // refused calls: a rejected enqueue, and a flood of unknown tokens
    let mut bad = enqueue_request("Elsewhere");
    bad.target = Some(pb::Target {
        repo: "evil/repo".into(),
        ..Default::default()
    });
    let rejected = client
        .enqueue(as_caller(bad, "tok-alice"))
        .await
        .expect_err("repo not allowed");
    assert_eq!(reason(&rejected), "REPO_NOT_ALLOWED");
    for _ in 0..50 {
        client
            .list_tasks(as_caller(pb::ListTasksRequest::default(), "tok-guess"))
            .await
            .expect_err("unknown token");
    }
    // only operators read the trail
    let denied = pb::operator_service_client::OperatorServiceClient::new(intake.channel().await)
        .list_audit_events(as_caller(
            pb::ListAuditEventsRequest::default(),
            "tok-alice",
        ))
        .await
        .expect_err("submitters do not read the trail");
    assert_eq!(reason(&denied), "ROLE_NOT_ALLOWED");

    // the task's own events, newest first, in the commits that made them
    let of_task = events(
        &intake,
        pb::ListAuditEventsRequest {
            task_id: id.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("by task");
    let seen: Vec<(&str, &str, &str)> = of_task
        .events
        .iter()
        .map(|e| (e.principal.as_str(), e.method.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "alice",
                "/jct.v1.TaskService/UpdateStatus",
                "queued -> cancelled"
            ),
            ("alice", "/jct.v1.TaskService/Enqueue", "enqueued"),
        ]
    );

    // refusals arrive aggregated (a row per principal, method and reason per
    // flush, with a count), once flushed
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (flood, rejection) = loop {
        let all = events(&intake, pb::ListAuditEventsRequest::default())
            .await
            .expect("all");
        let flood: Vec<pb::AuditEvent> = all
            .events
            .iter()
            .filter(|e| e.principal == "unauthenticated" && e.action == "denied")
            .cloned()
            .collect();
        let rejection = all
            .events
            .iter()
            .find(|e| e.principal == "alice" && e.action == "rejected")
            .cloned();
        if let Some(rejection) = rejection
            && flood.iter().map(|e| e.count).sum::<i64>() == 50
        {
            break (flood, rejection);
        }
        assert!(tokio::time::Instant::now() < deadline, "{all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(flood.len() < 50, "aggregated: {flood:?}");
    assert!(
        flood
            .iter()
            .all(|e| e.reason == "unknown_token" && e.method == "/jct.v1.TaskService/ListTasks")
    );
    assert_eq!(
        (rejection.reason.as_str(), rejection.count),
        ("REPO_NOT_ALLOWED", 1)
    );
    let flood_rows = events(
        &intake,
        pb::ListAuditEventsRequest {
            principal: "unauthenticated".into(),
            ..Default::default()
        },
    )
    .await
    .expect("by principal");
    assert!(
        flood_rows
            .events
            .iter()
            .all(|e| e.principal == "unauthenticated")
    );
    assert!(
        !format!("{flood_rows:?}").contains("tok-guess"),
        "never a token"
    );

    // paging: one event a page, newest first, no repeats
    let mut token = String::new();
    let mut ids = Vec::new();
    loop {
        let page = events(
            &intake,
            pb::ListAuditEventsRequest {
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("page");
        ids.extend(page.events.iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert!(ids.len() >= 4);
    let bad = events(
        &intake,
        pb::ListAuditEventsRequest {
            page_token: "!!".into(),
            ..Default::default()
        },
    )
    .await
    .expect_err("malformed");
    assert_eq!(reason(&bad), "INVALID_PAGE_TOKEN");
    intake.stop().await;
}

const WORKER_TOKENS: &str = "\
tok-olga,olga,operator
tok-walt,walt,worker
tok-wendy,wendy,worker
";

/// Polls the trail until `found` picks what it waits for.
async fn wait_for_events<T>(
    intake: &TestIntake,
    found: impl Fn(&[pb::AuditEvent]) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = events(intake, pb::ListAuditEventsRequest::default())
            .await
            .expect("all");
        if let Some(value) = found(&all.events) {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{all:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn the_trail_records_workers_takeovers_and_key_conflicts(url: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, WORKER_TOKENS).expect("tokens");
    let mut config = IntakeConfig::for_database(url);
    config.allowed_repo_prefixes = "myorg/".into();
    config.shutdown_grace_seconds = 5;
    config.auth_tokens_file = Some(tokens);
    config.audit_flush_ms = 20;
    let intake = TestIntake::start_with(config).await;

    let walt = FakeWorker::attach_as(intake.channel().await, Some("tok-walt"), "w-1", 2, vec![])
        .await
        .expect("walt attaches");
    let attached = wait_for_events(&intake, |events| {
        events
            .iter()
            .find(|e| e.action == "attached" && e.worker_id == "w-1")
            .cloned()
    })
    .await;
    assert_eq!(
        (attached.principal.as_str(), attached.method.as_str()),
        ("walt", "/jct.v1.DispatchService/Attach")
    );
    assert!(attached.at.is_some());

    // another principal under walt's worker id: refused, and recorded as denied
    let taken = FakeWorker::attach_as(intake.channel().await, Some("tok-wendy"), "w-1", 2, vec![])
        .await
        .err()
        .expect("takeover refused");
    assert_eq!(reason(&taken), "WORKER_ID_TAKEN");

    drop(walt);
    let detached = wait_for_events(&intake, |events| {
        events
            .iter()
            .find(|e| e.action == "detached" && e.worker_id == "w-1")
            .cloned()
    })
    .await;
    assert_eq!(
        (detached.principal.as_str(), detached.reason.as_str()),
        ("walt", "stream_closed")
    );
    assert!(detached.id > attached.id);
    let denial = wait_for_events(&intake, |events| {
        events
            .iter()
            .find(|e| e.principal == "wendy" && e.action == "denied")
            .cloned()
    })
    .await;
    assert_eq!(
        (denial.method.as_str(), denial.reason.as_str(), denial.count),
        ("/jct.v1.DispatchService/Attach", "WORKER_ID_TAKEN", 1)
    );

    // an idempotency key reused for another request is a rejected enqueue
    let mut client = intake.client.clone();
    let mut first = enqueue_request("First use of the key");
    first.idempotency_key = Some("k-1".into());
    client
        .enqueue(as_caller(first.clone(), "tok-olga"))
        .await
        .expect("first");
    first.objective = "Another request, same key".into();
    let conflict = client
        .enqueue(as_caller(first, "tok-olga"))
        .await
        .expect_err("conflict");
    assert_eq!(reason(&conflict), "IDEMPOTENCY_KEY_CONFLICT");
    let rejection = wait_for_events(&intake, |events| {
        events
            .iter()
            .find(|e| e.principal == "olga" && e.action == "rejected")
            .cloned()
    })
    .await;
    assert_eq!(
        (rejection.reason.as_str(), rejection.count),
        ("IDEMPOTENCY_KEY_CONFLICT", 1)
    );

    // filtered by principal, only walt's two events
    let walts = events(
        &intake,
        pb::ListAuditEventsRequest {
            principal: "walt".into(),
            ..Default::default()
        },
    )
    .await
    .expect("by principal");
    let actions: Vec<&str> = walts.events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["detached", "attached"]);
    intake.stop().await;
}
