//! Text that attacks its reader, sent to a real intake: each reproduction of
//! issue 10 is refused as VALIDATION_FAILED naming exactly the offending field,
//! never stored, never a database error, and never in the way of the next caller
//! — on SQLite and on Postgres (where a NUL used to fail a whole write batch).

mod support;

use jct_migrations::on_both_backends;

use std::time::Duration;

use jct::v1 as pb;
use support::{FakeWorker, TestIntake, enqueue_request, reason};
use tonic::Code;
use tonic_types::StatusExt;

on_both_backends!(
    control_characters_in_objective_and_requester_id_are_refused,
    bidi_and_invisible_characters_in_ref_are_refused,
    nul_in_documents_is_refused_and_does_not_fail_the_batch,
    hostile_list_filters_are_refused,
    a_worker_id_that_forges_log_lines_is_refused,
    a_report_carrying_raw_program_text_is_refused_not_retried,
);

type Client = pb::task_service_client::TaskServiceClient<tonic::transport::Channel>;

const OSC8: &str = "\u{1b}]8;;https://evil.example\u{1b}\\click me\u{1b}]8;;\u{1b}\\";

/// The violated fields of a VALIDATION_FAILED status.
fn violated_fields(status: &tonic::Status) -> Vec<String> {
    assert_eq!(
        (status.code(), reason(status).as_str()),
        (Code::InvalidArgument, "VALIDATION_FAILED"),
        "{status:?}"
    );
    let fields: Vec<String> = status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    for (field, description) in status
        .get_details_bad_request()
        .into_iter()
        .flat_map(|bad| bad.field_violations)
        .map(|v| (v.field, v.description))
    {
        // what the intake says back is itself safe to print
        assert_eq!(jct::text::line_problem(&field), None, "{field:?}");
        assert_eq!(
            jct::text::line_problem(&description),
            None,
            "{description:?}"
        );
    }
    assert_eq!(jct::text::text_problem(status.message()), None);
    fields
}

async fn refused(client: &mut Client, request: pb::EnqueueRequest) -> Vec<String> {
    let status = client
        .enqueue(request)
        .await
        .expect_err("hostile text must be refused");
    violated_fields(&status)
}

/// A legitimate enqueue and read-back still work: nothing before broke the
/// intake for others.
async fn others_unaffected(client: &mut Client) {
    let created = client
        .enqueue(enqueue_request("A legitimate task after the attack"))
        .await
        .expect("a clean enqueue still works")
        .into_inner();
    let task = client
        .get_task(pb::GetTaskRequest {
            task_id: created.task_id,
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(task.objective, "A legitimate task after the attack");
}

async fn control_characters_in_objective_and_requester_id_are_refused(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    for hostile in [
        "Fix it\0 now",
        "Fix \u{1b}[2J\u{1b}[H the screen",
        &format!("Read {OSC8} carefully"),
        "carriage\rreturn hides the start",
        "line separator\u{2028}here",
    ] {
        let request = enqueue_request(hostile);
        assert_eq!(
            refused(&mut client, request).await,
            ["objective"],
            "{hostile:?}"
        );
        let mut request = enqueue_request("A clean objective");
        if let Some(requester) = &mut request.requested_by {
            requester.id = format!("bot{hostile}");
        }
        assert_eq!(
            refused(&mut client, request).await,
            ["requested_by.id"],
            "{hostile:?}"
        );
    }
    // one violation per field, even when a value breaks two rules
    let mut request = enqueue_request(&format!("{}\0", "x".repeat(5000)));
    request.idempotency_key = Some(format!("{}\n", "k".repeat(300)));
    assert_eq!(
        refused(&mut client, request).await,
        ["idempotency_key", "objective"]
    );
    // newlines and tabs are fine in free text, not in an id
    let mut request = enqueue_request("Line one\n\tLine two");
    if let Some(requester) = &mut request.requested_by {
        requester.id = "bot-1\nINFO forged".into();
    }
    assert_eq!(refused(&mut client, request).await, ["requested_by.id"]);
    let accepted = client
        .enqueue(enqueue_request("Line one\n\tLine two, ünïcödé, 日本語 🚀"))
        .await
        .expect("ordinary multilingual text passes");
    assert!(accepted.into_inner().created);
    others_unaffected(&mut client).await;
    intake.stop().await;
}

async fn bidi_and_invisible_characters_in_ref_are_refused(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    for ref_name in [
        "main\u{202E}niam",
        "ma\u{2066}in\u{2069}",
        "ma\u{200B}in",
        "\u{FEFF}main",
        "feature/\u{200F}x",
    ] {
        let mut request = enqueue_request("Check out a deceptive ref");
        request.target = Some(pb::Target {
            repo: "myorg/service".into(),
            r#ref: ref_name.into(),
            ..Default::default()
        });
        assert_eq!(
            refused(&mut client, request).await,
            ["target.ref"],
            "{ref_name:?}"
        );
    }
    // the rule the worker applies is the gate's: a repo segment starting with '-'
    // is refused at the edge, not discovered by the worker
    let mut request = enqueue_request("Clone an option");
    request.target = Some(pb::Target {
        repo: "myorg/--upload-pack=touch".into(),
        ..Default::default()
    });
    assert_eq!(refused(&mut client, request).await, ["target.repo"]);
    others_unaffected(&mut client).await;
    intake.stop().await;
}

async fn nul_in_documents_is_refused_and_does_not_fail_the_batch(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let string = |text: &str| prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(text.into())),
    };
    let mut request = enqueue_request("Data with a NUL");
    request.inputs = Some(prost_types::Struct {
        fields: [("blob".to_string(), string("a\0b"))].into(),
    });
    assert_eq!(refused(&mut client, request).await, ["inputs.blob"]);
    let mut request = enqueue_request("A key with a NUL");
    request.metadata = Some(prost_types::Struct {
        fields: [("ke\0y".to_string(), string("v"))].into(),
    });
    let fields = refused(&mut client, request).await;
    assert_eq!(fields, ["metadata.ke\\u{0000}y"]);
    // program data may hold control characters (it is JSON wherever shown);
    // labels people read may not
    let mut request = enqueue_request("Escape sequences as data");
    request.inputs = Some(prost_types::Struct {
        fields: [("ansi".to_string(), string("\u{1b}[31mred"))].into(),
    });
    client
        .enqueue(request)
        .await
        .expect("control characters in inputs are data");
    let mut request = enqueue_request("Escape sequences as a label");
    request.metadata = Some(prost_types::Struct {
        fields: [("label".to_string(), string("\u{1b}[31mred"))].into(),
    });
    assert_eq!(refused(&mut client, request).await, ["metadata.label"]);

    // poisoned requests beside clean ones, concurrently: only the poisoned fail
    let mut calls = Vec::new();
    for n in 0..24 {
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            let objective = if n % 4 == 0 {
                format!("Poisoned {n}\0")
            } else {
                format!("Clean task {n}")
            };
            (n, client.enqueue(enqueue_request(&objective)).await)
        }));
    }
    for call in calls {
        let (n, outcome) = call.await.expect("call");
        match outcome {
            Ok(_) => assert_ne!(n % 4, 0, "poisoned request {n} was accepted"),
            Err(status) => {
                assert_eq!(n % 4, 0, "clean request {n} failed: {status:?}");
                assert_eq!(violated_fields(&status), ["objective"]);
            }
        }
    }
    others_unaffected(&mut client).await;
    intake.stop().await;
}

async fn hostile_list_filters_are_refused(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    let status = client
        .list_tasks(pb::ListTasksRequest {
            target_repo: Some("myorg/\0".into()),
            requester_kind: Some("agent\u{202E}".into()),
            ..Default::default()
        })
        .await
        .expect_err("a NUL filter is a client error, not a query");
    assert_eq!(violated_fields(&status), ["requester_kind", "target_repo"]);
    others_unaffected(&mut client).await;
    intake.stop().await;
}

async fn a_worker_id_that_forges_log_lines_is_refused(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    for (worker_id, executor) in [
        (
            "w1\n2026-12-03T07:00:00Z  INFO worker attached worker_id=admin",
            "fake",
        ),
        ("w1\0", "fake"),
        ("w1\u{1b}[2K", "fake"),
        ("w\u{202E}1", "fake"),
        ("w1", "fake\nINFO forged"),
    ] {
        let (outbox, outbound) = tokio::sync::mpsc::channel(4);
        outbox
            .send(pb::WorkerMessage {
                kind: Some(pb::worker_message::Kind::Hello(pb::WorkerHello {
                    worker_id: worker_id.into(),
                    capacity: 1,
                    executor: executor.into(),
                    version: "test".into(),
                    held: vec![],
                })),
            })
            .await
            .expect("hello");
        let mut dispatch =
            pb::dispatch_service_client::DispatchServiceClient::new(intake.channel().await);
        let status = dispatch
            .attach(tokio_stream::wrappers::ReceiverStream::new(outbound))
            .await
            .expect_err("the hello is refused");
        let expected = if executor == "fake" {
            "hello.worker_id"
        } else {
            "hello.executor"
        };
        assert_eq!(violated_fields(&status), [expected], "{worker_id:?}");
    }
    // a clean worker still gets work
    let mut client = intake.client.clone();
    let id = client
        .enqueue(enqueue_request("Work for the honest worker"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    let mut worker = FakeWorker::attach(intake.channel().await, "honest-1", 1, vec![]).await;
    let assignment = worker.next_assignment().await;
    assert_eq!(assignment.task.map(|t| t.id), Some(id));
    intake.stop().await;
}

async fn a_report_carrying_raw_program_text_is_refused_not_retried(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let mut client = intake.client.clone();
    client
        .enqueue(enqueue_request("A program that writes a NUL"))
        .await
        .expect("enqueue");
    let mut worker = FakeWorker::attach(intake.channel().await, "w1", 1, vec![]).await;
    let assignment = worker.next_assignment().await;
    let task_id = assignment
        .task
        .as_ref()
        .map(|t| t.id.clone())
        .unwrap_or_default();
    let failed = |report_id, message: &str| pb::TaskReport {
        report_id,
        task_id: task_id.clone(),
        lease_token: assignment.lease_token.clone(),
        status: pb::ReportStatus::Failed.into(),
        error: Some(pb::TaskError {
            code: "EXIT_STATUS".into(),
            message: message.into(),
        }),
        ..Default::default()
    };
    // raw text is a client error the worker can act on, not DATABASE_UNAVAILABLE
    let ack = worker
        .report(failed(
            1,
            "the program exited with status 1: \0\u{1b}]8;;x\u{7}",
        ))
        .await;
    assert!(!ack.accepted);
    assert_eq!(ack.reason, "VALIDATION_FAILED", "{}", ack.message);
    assert!(
        ack.message.contains("report.error.message"),
        "{}",
        ack.message
    );
    assert_eq!(jct::text::text_problem(&ack.message), None);
    // the same text, escaped as the worker sends it, is accepted and stored
    let escaped = jct::text::escape("the program exited with status 1: \0\u{1b}]8;;x\u{7}");
    let ack = worker.report(failed(2, &escaped)).await;
    assert!(ack.accepted, "{} {}", ack.reason, ack.message);
    let task = tokio::time::timeout(
        Duration::from_secs(10),
        client.get_task(pb::GetTaskRequest {
            task_id: task_id.clone(),
        }),
    )
    .await
    .expect("in time")
    .expect("get")
    .into_inner();
    assert_eq!(task.status, "failed");
    assert_eq!(task.error.map(|e| e.message), Some(escaped));
    others_unaffected(&mut client).await;
    intake.stop().await;
}
