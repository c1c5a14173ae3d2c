//! A program that writes NUL, ESC and OSC-8 sequences to stderr and fails: the
//! worker escapes its stderr tail before it leaves the worker, so the failure is
//! stored and shown as harmless text instead of wedging the worker's slot on a
//! report the database cannot store — on SQLite and on Postgres.

use std::time::Duration;

use jct::v1 as pb;
use jct_e2e::{
    IntakeHandle, WorkerHandle, enqueue_request, intake_config, on_both_backends, task_client,
    worker_config,
};
use worker_service::executor::ExecutorKind;

on_both_backends!(a_program_writing_control_characters_to_stderr_fails_visibly);

async fn a_program_writing_control_characters_to_stderr_fails_visibly(url: &str) {
    let intake = IntakeHandle::start(intake_config(url), "127.0.0.1:0".parse().expect("addr"))
        .expect("intake");
    let mut client = task_client(intake.addr);
    let traces = tempfile::tempdir().expect("traces");
    let scratch = tempfile::tempdir().expect("scratch");
    let mut config = worker_config(&intake.url(), traces.path());
    config.executor = ExecutorKind::Command;
    config.executor_command = Some(
        r#"sh -c 'printf "nul\000 esc\033[2J osc\033]8;;https://evil.example\007click\033]8;;\007\n" >&2; exit 3'"#
            .to_string(),
    );
    config.workspace_root = Some(scratch.path().join("workspaces"));
    config.shutdown_grace_seconds = 1;
    let worker = WorkerHandle::start(config);

    let id = client
        .enqueue(enqueue_request("Write hostile bytes to stderr"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    let task = jct_e2e::wait_for_task(&client, &id, Duration::from_secs(30), |task| {
        matches!(task.status.as_str(), "completed" | "failed" | "cancelled")
    })
    .await
    .unwrap_or_else(|| panic!("task {id} did not finish: the report was not accepted"));
    assert_eq!(task.status, "failed");
    let error = task.error.expect("error");
    assert_eq!(error.code, "EXIT_STATUS");
    assert_eq!(
        jct::text::text_problem(&error.message),
        None,
        "{:?}",
        error.message
    );
    assert!(
        error
            .message
            .contains("nul\\u{0000} esc\\u{001b}[2J osc\\u{001b}]8;;https://evil.example"),
        "{}",
        error.message
    );

    // the worker's slot is free again: the next task runs
    let next = client
        .enqueue(enqueue_request("The next task still runs"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    let task: Option<pb::Task> =
        jct_e2e::wait_for_task(&client, &next, Duration::from_secs(30), |task| {
            task.status == "failed"
        })
        .await;
    assert!(task.is_some(), "the worker took no further task");
    worker.stop().await.expect("worker stops");
    intake.stop().await.expect("intake stops");
}
