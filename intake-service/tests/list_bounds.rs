//! ListTasks stays bounded in bytes over large tasks: a page ends early (and its
//! token continues where it stopped) rather than grow past the response bound,
//! paging still returns every task exactly once, and the basic view leaves the
//! payloads out — on SQLite and on Postgres.

mod support;

use std::collections::HashSet;

use intake_service::config::IntakeConfig;
use jct::prost::Message;
use jct::v1 as pb;
use jct_migrations::on_both_backends;
use support::{FakeWorker, TestIntake, completed, enqueue_request, reason};
use tonic::Code;

on_both_backends!(
    pages_of_large_tasks_stay_under_the_bound_and_miss_nothing,
    pages_of_small_integer_arrays_stay_under_the_bound,
    a_task_larger_than_the_bound_is_a_page_of_its_own,
    the_basic_view_omits_inputs_metadata_and_result,
    an_unknown_view_is_refused,
);

/// About 140 KB on the wire: 12,000 numbers in `inputs` (about 215 KB of JSON,
/// under the 256 KiB a document may be).
fn large_request(n: usize) -> pb::EnqueueRequest {
    let numbers = serde_json::Value::Array(
        (0..12_000)
            .map(|i| serde_json::json!(i as f64 / 7.0))
            .collect(),
    );
    let inputs = serde_json::json!({ "numbers": numbers });
    let mut request = enqueue_request(&format!("Analyse large input {n}"));
    request.inputs = Some(jct::structs::json_to_struct(
        inputs.as_object().expect("object"),
    ));
    request.metadata = Some(jct::structs::json_to_struct(
        serde_json::json!({ "note": "x".repeat(10_000) })
            .as_object()
            .expect("object"),
    ));
    request
}

async fn start(url: &str, list_bound: u32) -> TestIntake {
    let mut config = IntakeConfig::for_database(url);
    config.allowed_repo_prefixes = "myorg/".into();
    config.shutdown_grace_seconds = 5;
    config.list_max_response_bytes = list_bound;
    TestIntake::start_with(config).await
}

/// Every page of a listing with `request`'s filters and view; each response's size.
async fn all_pages(
    client: &mut pb::task_service_client::TaskServiceClient<tonic::transport::Channel>,
    request: pb::ListTasksRequest,
) -> Vec<(pb::ListTasksResponse, usize)> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_tasks(pb::ListTasksRequest {
                page_token: token.clone(),
                ..request.clone()
            })
            .await
            .expect("page")
            .into_inner();
        let bytes = page.encoded_len();
        token = page.next_page_token.clone();
        pages.push((page, bytes));
        if token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 100, "paging does not end");
    }
}

async fn pages_of_large_tasks_stay_under_the_bound_and_miss_nothing(url: &str) {
    const BOUND: usize = 512 * 1024;
    let intake = start(url, BOUND as u32).await;
    let mut client = intake.client.clone();
    let mut ids = HashSet::new();
    for n in 0..12 {
        let request = if n % 3 == 0 {
            enqueue_request(&format!("Small task {n}"))
        } else {
            large_request(n)
        };
        let id = client.enqueue(request).await.expect("enqueue").into_inner();
        ids.insert(id.task_id);
    }

    let pages = all_pages(&mut client, pb::ListTasksRequest::default()).await;
    for (page, bytes) in &pages {
        assert!(*bytes <= BOUND, "a page of {bytes} bytes");
        assert!(!page.tasks.is_empty(), "a page holds at least one task");
    }
    assert!(
        pages.len() >= 3,
        "8 tasks of ~145 KB take at least 3 pages of 512 KiB, got {}",
        pages.len()
    );
    let seen: Vec<String> = pages
        .iter()
        .flat_map(|(page, _)| page.tasks.iter().map(|task| task.id.clone()))
        .collect();
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no task twice");
    assert_eq!(unique, ids, "every task once");
    let first = &pages[0].0.tasks;
    assert!(
        first.iter().any(|task| task.inputs.is_some()),
        "the full view carries the inputs"
    );

    // the token still binds the filters it was issued for
    let token = pages[0].0.next_page_token.clone();
    let refused = client
        .list_tasks(pb::ListTasksRequest {
            status: Some("completed".into()),
            page_token: token,
            ..Default::default()
        })
        .await
        .expect_err("another filter");
    assert_eq!(reason(&refused), "INVALID_PAGE_TOKEN");
    intake.stop().await;
}

/// A task whose inputs are arrays of small integers: about 2 bytes an element
/// as stored JSON ("7,"), 11 in a protobuf `ListValue` (a tagged, length-delimited
/// `Value` holding a double), so the encoded task is about 5 times its stored
/// size — the bound must be kept on the encoded size, not the stored one.
fn small_integers_request(n: usize) -> pb::EnqueueRequest {
    let digits: Vec<serde_json::Value> = (0..8_000).map(|i| serde_json::json!(i % 10)).collect();
    let inputs = serde_json::json!({ "digits": digits });
    let mut request = enqueue_request(&format!("Sum the digits {n}"));
    request.inputs = Some(jct::structs::json_to_struct(
        inputs.as_object().expect("object"),
    ));
    request
}

async fn pages_of_small_integer_arrays_stay_under_the_bound(url: &str) {
    const BOUND: usize = 256 * 1024;
    let intake = start(url, BOUND as u32).await;
    let mut client = intake.client.clone();
    let mut ids = HashSet::new();
    for n in 0..20 {
        let id = client
            .enqueue(small_integers_request(n))
            .await
            .expect("enqueue")
            .into_inner();
        ids.insert(id.task_id);
    }
    let one = client
        .get_task(pb::GetTaskRequest {
            task_id: ids.iter().next().cloned().expect("an id"),
        })
        .await
        .expect("get")
        .into_inner()
        .encoded_len();
    assert!(
        (80_000..BOUND / 2).contains(&one),
        "each task is about 88 KB encoded (16 KB of JSON), got {one}"
    );

    let pages = all_pages(
        &mut client,
        pb::ListTasksRequest {
            page_size: 500,
            ..Default::default()
        },
    )
    .await;
    for (page, bytes) in &pages {
        assert!(
            *bytes <= BOUND,
            "a page of {} tasks is {bytes} bytes encoded, over the bound of {BOUND}",
            page.tasks.len()
        );
    }
    let seen: Vec<String> = pages
        .iter()
        .flat_map(|(page, _)| page.tasks.iter().map(|task| task.id.clone()))
        .collect();
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no task twice");
    assert_eq!(unique, ids, "every task once");
    assert!(
        pages.len() >= 7,
        "20 tasks of ~88 KB take at least 7 pages of 256 KiB, got {}",
        pages.len()
    );
    intake.stop().await;
}

async fn a_task_larger_than_the_bound_is_a_page_of_its_own(url: &str) {
    const BOUND: u32 = 64 * 1024;
    let intake = start(url, BOUND).await;
    let mut client = intake.client.clone();
    let mut ids = HashSet::new();
    for n in 0..4 {
        let id = client
            .enqueue(large_request(n))
            .await
            .expect("enqueue")
            .into_inner();
        ids.insert(id.task_id);
    }
    let pages = all_pages(&mut client, pb::ListTasksRequest::default()).await;
    assert_eq!(pages.len(), 4, "one task a page");
    let seen: HashSet<String> = pages
        .iter()
        .flat_map(|(page, _)| page.tasks.iter().map(|task| task.id.clone()))
        .collect();
    assert_eq!(seen, ids);

    // the basic view of the same tasks fits one page
    let basic = all_pages(
        &mut client,
        pb::ListTasksRequest {
            view: pb::TaskView::Basic as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(basic.len(), 1);
    assert_eq!(basic[0].0.tasks.len(), 4);
    intake.stop().await;
}

async fn the_basic_view_omits_inputs_metadata_and_result(url: &str) {
    let intake = start(url, 512 * 1024).await;
    let mut client = intake.client.clone();
    let queued = client
        .enqueue(large_request(1))
        .await
        .expect("enqueue")
        .into_inner();
    let done = client
        .enqueue(large_request(2))
        .await
        .expect("enqueue")
        .into_inner();
    let mut worker = FakeWorker::attach(intake.channel().await, "worker-a", 1, vec![]).await;
    let assignment = worker.next_assignment().await;
    let assigned = assignment.task.as_ref().map(|t| t.id.clone());
    let mut report = completed(&assignment, 1);
    report.result = Some(jct::structs::json_to_struct(
        serde_json::json!({ "summary": "done" })
            .as_object()
            .expect("object"),
    ));
    let ack = worker.report(report).await;
    assert!(ack.accepted, "{ack:?}");
    // the oldest queued task went first
    assert_eq!(assigned.as_deref(), Some(queued.task_id.as_str()));

    let basic = client
        .list_tasks(pb::ListTasksRequest {
            view: pb::TaskView::Basic as i32,
            ..Default::default()
        })
        .await
        .expect("basic list")
        .into_inner();
    assert_eq!(basic.tasks.len(), 2);
    for task in &basic.tasks {
        assert_eq!(task.inputs, None, "inputs omitted");
        assert_eq!(task.metadata, None, "metadata omitted");
        assert_eq!(task.result, None, "result omitted");
        assert!(task.objective.starts_with("Analyse large input"));
        assert!(task.target.is_some() && task.requested_by.is_some());
    }
    let statuses: HashSet<&str> = basic.tasks.iter().map(|t| t.status.as_str()).collect();
    assert!(statuses.contains("completed"), "{statuses:?}");

    for view in [pb::TaskView::Unspecified, pb::TaskView::Full] {
        let full = client
            .list_tasks(pb::ListTasksRequest {
                view: view as i32,
                ..Default::default()
            })
            .await
            .expect("full list")
            .into_inner();
        assert_eq!(full.tasks.len(), 2);
        assert!(full.tasks.iter().all(|t| t.inputs.is_some()));
        assert!(full.tasks.iter().all(|t| t.metadata.is_some()));
        let completed = full
            .tasks
            .iter()
            .find(|t| t.status == "completed")
            .expect("the completed task");
        assert!(completed.result.is_some(), "{view:?} carries the result");
    }
    let _ = done;
    intake.stop().await;
}

async fn an_unknown_view_is_refused(url: &str) {
    let intake = start(url, 512 * 1024).await;
    let mut client = intake.client.clone();
    let refused = client
        .list_tasks(pb::ListTasksRequest {
            view: 99,
            ..Default::default()
        })
        .await
        .expect_err("unknown view");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(reason(&refused), "VALIDATION_FAILED");
    intake.stop().await;
}
