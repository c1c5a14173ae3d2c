#![allow(deprecated)] // exercises the legacy alias fields
//! TaskService over real gRPC: every RPC, every error reason, the idempotency race,
//! paging while inserts happen, the state machine, and durability across a
//! restart — on SQLite and on Postgres.

mod support;

use jct_migrations::on_both_backends;

use std::collections::HashSet;

use jct::v1 as pb;
use support::{TestIntake, enqueue_request, reason};
use tonic::Code;
use tonic_types::StatusExt;

on_both_backends!(
    enqueue_then_get_returns_the_same_normalized_task,
    validate_only_stores_nothing,
    rejections_carry_stable_reasons,
    concurrent_enqueues_with_one_key_store_one_task,
    paging_neither_skips_nor_repeats_while_tasks_are_enqueued,
    list_filters_match_exactly,
    clients_only_cancel,
    acknowledged_tasks_survive_a_restart,
);

async fn enqueue_then_get_returns_the_same_normalized_task(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let mut request = enqueue_request("  Add a health check to the service  ");
    request.target = Some(pb::Target {
        repo: "  MyOrg/Service.git ".into(),
        ..Default::default()
    });
    request.r#type = "docs".into(); // alias loses to the canonical field
    let response = client.enqueue(request).await.expect("enqueue").into_inner();
    assert!(response.created);
    assert_eq!(response.status, "queued");
    let task = response.task.expect("task");
    assert_eq!(task.id, response.task_id);
    assert_eq!(
        uuid::Uuid::parse_str(&task.id).map(|id| id.get_version_num()),
        Ok(7)
    );
    assert_eq!(task.objective, "Add a health check to the service");
    assert_eq!(task.operation, "code_change");
    let target = task.target.clone().expect("target");
    assert_eq!(
        (
            target.repo.as_str(),
            target.r#ref.as_str(),
            target.path.as_str()
        ),
        ("myorg/service", "main", "")
    );
    assert_eq!(
        task.constraints.and_then(|c| c.time_budget_seconds),
        Some(900)
    );
    assert!(task.created_at.is_some() && task.queued_at.is_some() && task.started_at.is_none());

    let fetched = client
        .get_task(pb::GetTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        fetched, task,
        "GetTask must return exactly what Enqueue answered"
    );
    intake.stop().await;
}

async fn validate_only_stores_nothing(url: &str) {
    let intake = TestIntake::start(url, "myorg").await;
    let mut client = intake.client.clone();
    let mut request = enqueue_request("Would this be accepted?");
    request.validate_only = true;
    let response = client.enqueue(request).await.expect("dry run").into_inner();
    assert_eq!((response.task_id.as_str(), response.created), ("", false));
    let task = response.task.expect("normalized task");
    assert_eq!((task.id.as_str(), task.status.as_str()), ("", "queued"));
    let listed = client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.tasks.is_empty());

    let mut refused = enqueue_request("Would this be accepted?");
    refused.validate_only = true;
    refused.target = Some(pb::Target {
        repo: "elsewhere/x".into(),
        ..Default::default()
    });
    let status = client
        .enqueue(refused)
        .await
        .expect_err("policy runs on dry runs");
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::PermissionDenied, "REPO_NOT_ALLOWED")
    );
    intake.stop().await;
}

async fn rejections_carry_stable_reasons(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();

    let bad = pb::EnqueueRequest {
        objective: "hey".into(),
        operation: "code_change".into(),
        target: Some(pb::Target {
            repo: "myorg/x".into(),
            r#ref: "--upload-pack=evil".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = client.enqueue(bad).await.expect_err("invalid");
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::InvalidArgument, "VALIDATION_FAILED")
    );
    let fields: HashSet<String> = status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    let expected: HashSet<String> = ["requested_by", "objective", "target.ref"]
        .map(String::from)
        .into();
    assert_eq!(fields, expected, "every bad field is listed");

    let cases: Vec<(pb::EnqueueRequest, Code, &str)> = vec![
        (
            {
                let mut r = enqueue_request("Valid objective");
                r.version = "2.0".into();
                r
            },
            Code::InvalidArgument,
            "UNSUPPORTED_VERSION",
        ),
        (
            {
                let mut r = enqueue_request("Valid objective");
                r.operation = "deploy".into();
                r
            },
            Code::InvalidArgument,
            "INVALID_OPERATION",
        ),
        (
            {
                let mut r = enqueue_request("Valid objective");
                r.target = Some(pb::Target {
                    repo: "myorganization/app".into(),
                    ..Default::default()
                });
                r
            },
            Code::PermissionDenied,
            "REPO_NOT_ALLOWED",
        ),
        (
            {
                let mut r = enqueue_request("Valid objective");
                r.constraints = Some(pb::Constraints {
                    time_budget_seconds: Some(29),
                    ..Default::default()
                });
                r
            },
            Code::InvalidArgument,
            "TIME_BUDGET_TOO_LOW",
        ),
        (
            {
                let mut r = enqueue_request("Valid objective");
                r.constraints = Some(pb::Constraints {
                    time_budget_seconds: Some(86_401),
                    ..Default::default()
                });
                r
            },
            Code::InvalidArgument,
            "TIME_BUDGET_TOO_HIGH",
        ),
        (
            {
                let mut r = enqueue_request("Valid objective");
                r.constraints = Some(pb::Constraints {
                    allow_network: true,
                    ..Default::default()
                });
                r
            },
            Code::PermissionDenied,
            "NETWORK_ACCESS_DENIED",
        ),
        (
            {
                let mut r = enqueue_request("Valid objective");
                r.constraints = Some(pb::Constraints {
                    allow_secrets: true,
                    ..Default::default()
                });
                r
            },
            Code::PermissionDenied,
            "SECRETS_ACCESS_DENIED",
        ),
    ];
    for (request, code, expected_reason) in cases {
        let status = client.enqueue(request).await.expect_err(expected_reason);
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (code, expected_reason),
            "{}",
            status.message()
        );
        assert!(!status.message().is_empty());
    }

    let missing = client
        .get_task(pb::GetTaskRequest {
            task_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("not found");
    assert_eq!(
        (missing.code(), reason(&missing).as_str()),
        (Code::NotFound, "TASK_NOT_FOUND")
    );
    let malformed = client
        .get_task(pb::GetTaskRequest {
            task_id: "nope".into(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);

    let token = client
        .list_tasks(pb::ListTasksRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(
        (token.code(), reason(&token).as_str()),
        (Code::InvalidArgument, "INVALID_PAGE_TOKEN")
    );

    // a Struct nested past prost's recursion limit is the client's fault, not INTERNAL
    let mut deep = prost_types::Value {
        kind: Some(prost_types::value::Kind::NullValue(0)),
    };
    for _ in 0..120 {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("x".to_string(), deep);
        deep = prost_types::Value {
            kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
                fields,
            })),
        };
    }
    let mut nested = enqueue_request("Deeply nested inputs");
    if let Some(prost_types::value::Kind::StructValue(inputs)) = deep.kind {
        nested.inputs = Some(inputs);
    }
    let status = client.enqueue(nested).await.expect_err("too deep");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());

    let mut huge = enqueue_request("A very large request");
    huge.objective = "x".repeat(5 * 1024 * 1024);
    let status = client.enqueue(huge).await.expect_err("too large");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    intake.stop().await;
}

async fn concurrent_enqueues_with_one_key_store_one_task(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let requests = (0..50).map(|_| {
        let mut client = intake.client.clone();
        let mut request = enqueue_request("Exactly once, please");
        request.idempotency_key = Some("race-key".into());
        async move { client.enqueue(request).await.map(|r| r.into_inner()) }
    });
    let responses: Vec<_> = futures::future::join_all(requests).await;
    let responses: Vec<pb::EnqueueResponse> =
        responses.into_iter().map(|r| r.expect("enqueue")).collect();
    let ids: HashSet<&str> = responses.iter().map(|r| r.task_id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one task id for one key");
    assert_eq!(
        responses.iter().filter(|r| r.created).count(),
        1,
        "exactly one created = true"
    );

    let mut client = intake.client.clone();
    let listed = client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.tasks.len(), 1, "one stored task");

    let mut different = enqueue_request("A different objective");
    different.idempotency_key = Some("race-key".into());
    let status = client.enqueue(different).await.expect_err("conflict");
    assert_eq!(
        (status.code(), reason(&status).as_str()),
        (Code::AlreadyExists, "IDEMPOTENCY_KEY_CONFLICT")
    );

    // normalization makes these the same request
    let mut same = enqueue_request("  Exactly once, please ");
    same.idempotency_key = Some("race-key".into());
    same.target = Some(pb::Target {
        repo: "MyOrg/Service.git".into(),
        r#ref: "main".into(),
        ..Default::default()
    });
    let again = client
        .enqueue(same)
        .await
        .expect("same normalized request")
        .into_inner();
    assert_eq!(
        (again.task_id.as_str(), again.created),
        (responses[0].task_id.as_str(), false)
    );
    intake.stop().await;
}

async fn paging_neither_skips_nor_repeats_while_tasks_are_enqueued(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let mut before = Vec::new();
    for i in 0..60 {
        let response = client
            .enqueue(enqueue_request(&format!("Task number {i}")))
            .await
            .expect("enqueue");
        before.push(response.into_inner().task_id);
    }
    let mut writer = intake.client.clone();
    let concurrent = tokio::spawn(async move {
        for i in 0..40 {
            writer
                .enqueue(enqueue_request(&format!("Concurrent task {i}")))
                .await
                .expect("enqueue");
        }
    });
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_tasks(pb::ListTasksRequest {
                page_size: 7,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        seen.extend(page.tasks.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        tokio::task::yield_now().await;
    }
    concurrent.await.expect("writer");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no task repeated");
    for id in &before {
        assert!(unique.contains(id), "task {id} skipped");
    }
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");

    let page = client
        .list_tasks(pb::ListTasksRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("clamped page")
        .into_inner();
    assert_eq!(page.tasks.len(), 100);
    assert!(page.next_page_token.is_empty());
    intake.stop().await;
}

async fn list_filters_match_exactly(url: &str) {
    let intake = TestIntake::start(url, "myorg/, partner/").await;
    let mut client = intake.client.clone();
    let mut docs = enqueue_request("Write the docs");
    docs.operation = "docs".into();
    docs.requested_by = Some(pb::RequestedBy {
        kind: "human".into(),
        id: "ann".into(),
        label: Some("Ann".into()),
    });
    docs.target = Some(pb::Target {
        repo: "partner/site".into(),
        ..Default::default()
    });
    let docs_id = client
        .enqueue(docs)
        .await
        .expect("docs")
        .into_inner()
        .task_id;
    let code_id = client
        .enqueue(enqueue_request("Change the code"))
        .await
        .expect("code")
        .into_inner()
        .task_id;
    client
        .update_status(pb::UpdateStatusRequest {
            task_id: code_id.clone(),
            status: "cancelled".into(),
            ..Default::default()
        })
        .await
        .expect("cancel");

    let ids = |response: pb::ListTasksResponse| {
        response.tasks.into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    let by = |status: Option<&str>,
              operation: Option<&str>,
              kind: Option<&str>,
              repo: Option<&str>| pb::ListTasksRequest {
        status: status.map(String::from),
        operation: operation.map(String::from),
        requester_kind: kind.map(String::from),
        target_repo: repo.map(String::from),
        ..Default::default()
    };
    assert_eq!(
        ids(client
            .list_tasks(by(Some("queued"), None, None, None))
            .await
            .expect("l")
            .into_inner()),
        vec![docs_id.clone()]
    );
    assert_eq!(
        ids(client
            .list_tasks(by(Some("cancelled"), None, None, None))
            .await
            .expect("l")
            .into_inner()),
        vec![code_id.clone()]
    );
    assert_eq!(
        ids(client
            .list_tasks(by(None, Some("docs"), None, None))
            .await
            .expect("l")
            .into_inner()),
        vec![docs_id.clone()]
    );
    assert_eq!(
        ids(client
            .list_tasks(by(None, None, Some("agent"), None))
            .await
            .expect("l")
            .into_inner()),
        vec![code_id.clone()]
    );
    assert_eq!(
        ids(client
            .list_tasks(by(None, None, None, Some("partner/site")))
            .await
            .expect("l")
            .into_inner()),
        vec![docs_id.clone()]
    );
    assert!(
        ids(client
            .list_tasks(by(Some("queued"), Some("code_change"), None, None))
            .await
            .expect("l")
            .into_inner())
        .is_empty()
    );
    assert_eq!(
        ids(client
            .list_tasks(by(Some(""), None, None, None))
            .await
            .expect("l")
            .into_inner())
        .len(),
        2,
        "empty = no filter"
    );
    intake.stop().await;
}

/// The attack of issue 9: with no lease, a client moved a queued task to
/// `running` (where the rescuer never looked again), then to `completed` with a
/// forged result. Clients only cancel.
async fn clients_only_cancel(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let id = client
        .enqueue(enqueue_request("Run me"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    let update = |status: &str| pb::UpdateStatusRequest {
        task_id: id.clone(),
        status: status.into(),
        ..Default::default()
    };
    let forged = prost_types::Struct {
        fields: [(
            "merged_by".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue("mallory".into())),
            },
        )]
        .into(),
    };
    let attempts = [
        update("running"),
        pb::UpdateStatusRequest {
            result: Some(forged.clone()),
            ..update("completed")
        },
        pb::UpdateStatusRequest {
            error: Some(pb::TaskError {
                code: "E".into(),
                message: "m".into(),
            }),
            ..update("failed")
        },
        pb::UpdateStatusRequest {
            lease_token: uuid::Uuid::new_v4().to_string(),
            ..update("running")
        },
        update("queued"),
        update("pending"),
    ];
    for attempt in attempts {
        let to = attempt.status.clone();
        let status = client
            .update_status(attempt)
            .await
            .expect_err("only workers report");
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::PermissionDenied, "WORKER_ONLY_TRANSITION"),
            "queued -> {to}"
        );
    }
    let task = client
        .get_task(pb::GetTaskRequest {
            task_id: id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!((task.status.as_str(), task.attempt), ("queued", 0));
    assert!(task.result.is_none());

    // "any other status" is the contract's wording: a status that is no status
    // at all is not a client's either, and the answer quotes it escaped
    for other in [
        "bogus",
        "Cancelled",
        " cancelled",
        "canceled",
        "\u{202E}cancelled",
    ] {
        let status = client
            .update_status(update(other))
            .await
            .expect_err("clients may set only cancelled");
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::PermissionDenied, "WORKER_ONLY_TRANSITION"),
            "{other:?}"
        );
        assert!(
            !status.message().contains('\u{202E}'),
            "{}",
            status.message()
        );
    }
    // no status at all is a schema problem, named as such
    let status = client
        .update_status(update(""))
        .await
        .expect_err("missing status");
    assert_eq!(reason(&status), "VALIDATION_FAILED");
    assert!(
        status.message().contains("status is required"),
        "{}",
        status.message()
    );

    // a client's cancellation cannot plant a trace location
    let cancelled = client
        .update_status(pb::UpdateStatusRequest {
            trace_uri: "https://evil.example/trace".into(),
            lease_token: uuid::Uuid::new_v4().to_string(),
            ..update("cancelled")
        })
        .await
        .expect("cancel queued")
        .into_inner();
    assert_eq!(cancelled.status, "cancelled");
    assert!(cancelled.completed_at.is_some());
    assert_eq!(cancelled.trace_uri, "");

    for next in ["cancelled", "completed"] {
        let status = client
            .update_status(pb::UpdateStatusRequest {
                result: (next == "completed").then(prost_types::Struct::default),
                ..update(next)
            })
            .await
            .expect_err("terminal is immutable");
        let expected = if next == "cancelled" {
            (Code::FailedPrecondition, "INVALID_TRANSITION")
        } else {
            (Code::PermissionDenied, "WORKER_ONLY_TRANSITION")
        };
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            expected,
            "{next}"
        );
    }

    let missing = client
        .update_status(pb::UpdateStatusRequest {
            task_id: uuid::Uuid::now_v7().to_string(),
            status: "cancelled".into(),
            ..Default::default()
        })
        .await
        .expect_err("missing");
    assert_eq!(reason(&missing), "TASK_NOT_FOUND");
    intake.stop().await;
}

async fn acknowledged_tasks_survive_a_restart(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            client
                .enqueue(enqueue_request(&format!("Durable task {i}")))
                .await
                .expect("enqueue")
                .into_inner()
                .task_id,
        );
    }
    intake.stop().await;

    let restarted = TestIntake::start(url, "myorg/").await;
    let mut client = restarted.client.clone();
    for id in &ids {
        let task = client
            .get_task(pb::GetTaskRequest {
                task_id: id.clone(),
            })
            .await
            .expect("still there")
            .into_inner();
        assert_eq!(task.status, "queued");
    }
    restarted.stop().await;
}
