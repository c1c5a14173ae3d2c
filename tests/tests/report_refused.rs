//! A report the intake refuses deterministically ends the task `failed` at once,
//! saying which report was refused and why, instead of leaving it to expire and
//! be rescued as `WORKER_LOST` — on SQLite and on Postgres.

use std::time::{Duration, Instant};

use jct_e2e::{
    IntakeHandle, WorkerHandle, enqueue_request, intake_config, on_both_backends, task_client,
    worker_config,
};

on_both_backends!(a_refused_completion_fails_the_task_promptly_with_report_refused);

const TERMINAL: [&str; 3] = ["completed", "failed", "cancelled"];

/// The trace root's name carries a bidi override, so every `trace_uri` the
/// worker reports is refused (VALIDATION_FAILED) however often it is sent.
async fn a_refused_completion_fails_the_task_promptly_with_report_refused(url: &str) {
    let scratch = tempfile::tempdir().expect("scratch");
    let root = scratch.path().join("traces-\u{202E}gpj.exe");
    std::fs::create_dir(&root).expect("trace root");
    let intake = IntakeHandle::start(intake_config(url), "127.0.0.1:0".parse().expect("addr"))
        .expect("intake");
    let worker = WorkerHandle::start(worker_config(&intake.url(), &root));
    let mut client = task_client(intake.addr);

    let started = Instant::now();
    let id = client
        .enqueue(enqueue_request("Complete with a refused trace uri"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    let task = jct_e2e::wait_for_task(&client, &id, Duration::from_secs(30), |task| {
        TERMINAL.contains(&task.status.as_str())
    })
    .await
    .expect("the task reaches a terminal state");
    let elapsed = started.elapsed();

    let error = task.error.clone().expect("a failed task has an error");
    assert_eq!(
        (task.status.as_str(), error.code.as_str()),
        ("failed", "REPORT_REFUSED"),
        "{task:?}"
    );
    // the first attempt's own report, not a rescue after the lease (3 s) expired
    assert_eq!(task.attempt, 1, "{task:?}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(
        error.message.contains("completed") && error.message.contains("VALIDATION_FAILED"),
        "the error names the refused report and the reason: {}",
        error.message
    );
    assert!(
        error.message.contains("trace_uri"),
        "the error names the refused field: {}",
        error.message
    );
    assert!(
        !error.message.contains("gpj") && !error.message.contains('\u{202E}'),
        "the refused content stays out of the error: {}",
        error.message
    );
    assert!(task.result.is_none());

    worker.stop().await.expect("worker stops");
    intake.stop().await.expect("intake stops");
}
