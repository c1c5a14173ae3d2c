//! Failure isolation below the API: a request the database refuses fails alone,
//! with a deterministic (non-retryable) error, and everything batched or
//! dispatched beside it goes on — on SQLite (both `synchronous` settings) and Postgres.
//!
//! The refusals are injected in the database itself, so the API's validation
//! cannot hide them: a test-only CHECK constraint (Postgres) or trigger (SQLite)
//! refuses any row whose objective, trace_uri or worker_id holds `POISON`, and on
//! Postgres a NUL in text is refused by the server as it is in production.

mod support;

use std::time::Duration;

use intake_service::config::IntakeConfig;
use intake_service::store::{
    SqliteSynchronous, Store, StoreError, StoreOptions, Transition, TransitionError,
};
use intake_service::task::{
    Constraints, Operation, Requester, RequesterKind, Status, Target, TaskError, TaskSpec,
};
use jct::v1 as pb;
use jct_migrations::on_both_backends;
use sea_orm::{ConnectionTrait, Database};
use support::{FakeWorker, TestIntake, enqueue_request};

on_both_backends!(
    a_refused_request_fails_alone_in_its_batch,
    a_nul_in_text_fails_alone,
    a_worker_whose_claims_fail_does_not_stop_the_others,
    a_claim_for_a_nul_worker_id_fails_alone,
    a_failure_report_with_nul_fails_alone,
);

const MARKER: &str = "POISON";

/// Makes the database refuse rows carrying [`MARKER`].
pub async fn poison(url: &str) {
    let db = Database::connect(url).await.expect("connect");
    let statements: &[&str] = if url.starts_with("postgres") {
        &["ALTER TABLE tasks ADD CONSTRAINT jct_test_poison CHECK (
            position('POISON' in objective) = 0
            AND position('POISON' in coalesce(trace_uri, '')) = 0
            AND position('POISON' in coalesce(worker_id, '')) = 0)"]
    } else {
        &[
            "CREATE TRIGGER jct_test_poison_insert BEFORE INSERT ON tasks
             WHEN instr(NEW.objective, 'POISON') > 0
             BEGIN SELECT RAISE(ABORT, 'poisoned by the test'); END",
            "CREATE TRIGGER jct_test_poison_update BEFORE UPDATE ON tasks
             WHEN instr(coalesce(NEW.trace_uri, ''), 'POISON') > 0
               OR instr(coalesce(NEW.worker_id, ''), 'POISON') > 0
             BEGIN SELECT RAISE(ABORT, 'poisoned by the test'); END",
        ]
    };
    for statement in statements {
        db.execute_unprepared(statement).await.expect("poison");
    }
    let _ = db.close().await;
}

pub fn spec(objective: &str) -> TaskSpec {
    TaskSpec {
        version: "1.0".into(),
        submitted_by: "anonymous".into(),
        idempotency_key: None,
        requested_by: Requester {
            kind: RequesterKind::parse("agent").expect("kind"),
            id: "bot".into(),
            label: None,
        },
        objective: objective.into(),
        operation: Operation::parse("docs").expect("operation"),
        target: Target {
            repo: "myorg/service".into(),
            ref_name: "main".into(),
            path: String::new(),
        },
        constraints: Constraints {
            time_budget_seconds: 600,
            allow_network: false,
            allow_secrets: false,
        },
        inputs: Default::default(),
        metadata: Default::default(),
        traceparent: None,
    }
}

fn cancel(task_id: uuid::Uuid, trace_uri: Option<&str>) -> Transition {
    Transition {
        task_id,
        to: Status::Cancelled,
        result: None,
        error: None,
        trace_uri: trace_uri.map(str::to_string),
        lease_token: None,
        actor: None,
    }
}

/// Every durability setting the backend has: SQLite `synchronous=normal` and
/// `full` (a batch of several statements is one transaction in both, and a
/// batch of one statement commits alone); Postgres has one.
fn modes(url: &str) -> Vec<StoreOptions> {
    let mut modes = vec![StoreOptions::new(url)];
    if url.starts_with("sqlite") {
        let mut full = StoreOptions::new(url);
        full.sqlite_synchronous = SqliteSynchronous::Full;
        modes.push(full);
    }
    modes
}

async fn a_refused_request_fails_alone_in_its_batch(url: &str) {
    let mut poisoned = false;
    for options in modes(url) {
        let store = Store::open(options).await.expect("open");
        if !poisoned {
            poison(url).await;
            poisoned = true;
        }
        let mut to_cancel = Vec::new();
        for n in 0..20 {
            let enqueued = store.enqueue(spec(&format!("cancel me {n}")), 3).await;
            to_cancel.push(enqueued.expect("enqueue").task.id);
        }

        // 60 legitimate enqueues, 3 refused ones and 20 cancels (5 refused),
        // all at once so that they share batches
        let mut enqueues = Vec::new();
        for n in 0..63 {
            let store = store.clone();
            let objective = if n % 20 == 7 {
                format!("{MARKER} {n}")
            } else {
                format!("legit {n}")
            };
            enqueues.push(tokio::spawn(async move {
                (objective.clone(), store.enqueue(spec(&objective), 3).await)
            }));
        }
        let mut cancels = Vec::new();
        for (n, id) in to_cancel.iter().copied().enumerate() {
            let store = store.clone();
            let trace = (n % 4 == 1).then_some(MARKER);
            let change = cancel(id, trace);
            cancels.push(tokio::spawn(async move {
                (id, trace.is_some(), store.transition(change).await)
            }));
        }

        let mut legit = 0;
        for handle in enqueues {
            let (objective, outcome) = handle.await.expect("join");
            if objective.starts_with(MARKER) {
                let error = outcome.expect_err("a refused enqueue fails");
                assert!(
                    matches!(error, StoreError::Rejected(_)),
                    "deterministic refusal, not {error:?}"
                );
                assert!(!error.is_retryable());
            } else {
                let enqueued = outcome.unwrap_or_else(|e| panic!("{objective} failed: {e}"));
                let stored = store.get(enqueued.task.id).await.expect("get");
                assert_eq!(stored.map(|t| t.spec.objective.clone()), Some(objective));
                legit += 1;
            }
        }
        assert_eq!(legit, 60);
        for handle in cancels {
            let (id, refused, outcome) = handle.await.expect("join");
            if refused {
                assert!(
                    matches!(
                        outcome,
                        Err(TransitionError::Store(StoreError::Rejected(_)))
                    ),
                    "{outcome:?}"
                );
                let task = store.get(id).await.expect("get").expect("task");
                assert_eq!(
                    task.status,
                    Status::Queued,
                    "a refused change changes nothing"
                );
            } else {
                assert_eq!(outcome.expect("cancel").status, Status::Cancelled);
            }
        }
        store.close().await;
    }
}

async fn a_nul_in_text_fails_alone(url: &str) {
    let store = Store::open(StoreOptions::new(url)).await.expect("open");
    let mut handles = Vec::new();
    for n in 0..40 {
        let store = store.clone();
        let objective = if n % 10 == 3 {
            format!("nul \0 {n}")
        } else {
            format!("legit {n}")
        };
        handles.push(tokio::spawn(async move {
            (objective.clone(), store.enqueue(spec(&objective), 3).await)
        }));
    }
    for handle in handles {
        let (objective, outcome) = handle.await.expect("join");
        match outcome {
            Ok(_) => {}
            // Postgres text cannot hold NUL; SQLite stores it (the API refuses it)
            Err(StoreError::Rejected(_)) if objective.contains('\0') => {
                assert!(url.starts_with("postgres"), "SQLite stores NUL");
            }
            Err(error) => panic!("{objective:?}: {error:?}"),
        }
    }
    store.close().await;
}

async fn a_worker_whose_claims_fail_does_not_stop_the_others(url: &str) {
    let mut config = IntakeConfig::for_database(url);
    config.allowed_repo_prefixes = "myorg/".into();
    config.shutdown_grace_seconds = 5;
    intake_service::store::migrate_only(url)
        .await
        .expect("migrate");
    poison(url).await;
    let intake = TestIntake::start_with(config).await;
    // the refused worker attaches first and asks for more, so the pump tries it first
    let _refused = FakeWorker::attach(intake.channel().await, "POISON-worker", 8, vec![]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut healthy = FakeWorker::attach(intake.channel().await, "healthy", 2, vec![]).await;
    let mut client = intake.client.clone();
    let mut ids = Vec::new();
    for n in 0..2 {
        let id = client
            .enqueue(enqueue_request(&format!("task {n}")))
            .await
            .expect("enqueue")
            .into_inner()
            .task_id;
        ids.push(id);
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let assignment = tokio::time::timeout(Duration::from_secs(5), healthy.next_assignment())
            .await
            .expect("the healthy worker gets work while the other's claims fail");
        got.push(assignment.task.map(|t: pb::Task| t.id).unwrap_or_default());
    }
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    intake.stop().await;
}

/// Postgres refuses text holding NUL: a worker id with one makes its claims fail
/// with a deterministic error, and the queue stays claimable for everyone else.
async fn a_claim_for_a_nul_worker_id_fails_alone(url: &str) {
    let store = Store::open(StoreOptions::new(url)).await.expect("open");
    let queued = store.enqueue(spec("claim me"), 3).await.expect("enqueue");
    let ttl = Duration::from_secs(30);
    match store.claim("evil\0worker", 4, ttl).await {
        Err(error) => {
            assert!(url.starts_with("postgres"), "SQLite stores NUL: {error:?}");
            assert!(matches!(error, StoreError::Rejected(_)), "{error:?}");
            assert!(!error.is_retryable());
            let claimed = store.claim("healthy", 4, ttl).await.expect("claim");
            assert_eq!(claimed.len(), 1);
            assert_eq!(claimed[0].id, queued.task.id);
        }
        Ok(claimed) => assert_eq!(claimed.len(), 1),
    }
    store.close().await;
}

/// A program that writes NUL to stderr and fails: the worker reports its stderr
/// tail as the error message. Postgres refuses it deterministically (not
/// "unavailable, retry"), the other reports of the batch commit, and the task
/// keeps its lease so a clean report still lands.
async fn a_failure_report_with_nul_fails_alone(url: &str) {
    let store = Store::open(StoreOptions::new(url)).await.expect("open");
    for n in 0..8 {
        store
            .enqueue(spec(&format!("task {n}")), 3)
            .await
            .expect("enqueue");
    }
    let claimed = store
        .claim("w1", 8, Duration::from_secs(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 8);
    let failed = |task: &intake_service::task::Task, message: &str| Transition {
        task_id: task.id,
        to: Status::Failed,
        result: None,
        error: Some(TaskError {
            code: "EXIT_STATUS".into(),
            message: message.into(),
        }),
        trace_uri: None,
        lease_token: task.lease.map(|lease| lease.token),
        actor: None,
    };
    let mut handles = Vec::new();
    for (n, task) in claimed.iter().enumerate() {
        let message = if n == 3 {
            "boom\0 on stderr".to_string()
        } else {
            format!("exit {n}")
        };
        let (store, change) = (store.clone(), failed(task, &message));
        handles.push(tokio::spawn(async move { store.transition(change).await }));
    }
    for (n, handle) in handles.into_iter().enumerate() {
        let outcome = handle.await.expect("join");
        if n == 3 && url.starts_with("postgres") {
            assert!(
                matches!(
                    outcome,
                    Err(TransitionError::Store(StoreError::Rejected(_)))
                ),
                "{outcome:?}"
            );
        } else {
            assert_eq!(outcome.expect("report").status, Status::Failed);
        }
    }
    let poisoned = &claimed[3];
    let still = store.get(poisoned.id).await.expect("get").expect("task");
    if url.starts_with("postgres") {
        assert_eq!(still.status, Status::Running);
        let clean = store
            .transition(failed(poisoned, "boom on stderr"))
            .await
            .expect("a clean report lands");
        assert_eq!(clean.status, Status::Failed);
    }
    store.close().await;
}

/// The deadlock retries (a batch, a lease renewal) rest on recognising the
/// error Postgres gives the transaction it aborts to break a deadlock. Two
/// transactions lock two rows in opposite orders, as a batch and a renewal can:
/// one of them gets that error, and it must read as a transaction conflict
/// (and as retryable), not as a refusal of the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_deadlock_reads_as_a_transaction_conflict() {
    use sea_orm::TransactionTrait;
    let Some(database) = jct_migrations::test_database::TestDatabase::postgres().await else {
        return;
    };
    let setup = Database::connect(&database.url).await.expect("connect");
    setup
        .execute_unprepared(
            "CREATE TABLE deadlock_probe (id int PRIMARY KEY, v int);
             INSERT INTO deadlock_probe VALUES (1, 0), (2, 0);",
        )
        .await
        .expect("setup");
    let (one, two) = (
        Database::connect(&database.url).await.expect("connect"),
        Database::connect(&database.url).await.expect("connect"),
    );
    let (first, second) = (
        one.begin().await.expect("begin"),
        two.begin().await.expect("begin"),
    );
    first
        .execute_unprepared("UPDATE deadlock_probe SET v = 1 WHERE id = 1")
        .await
        .expect("lock 1");
    second
        .execute_unprepared("UPDATE deadlock_probe SET v = 1 WHERE id = 2")
        .await
        .expect("lock 2");
    let (a, b) = tokio::join!(
        first.execute_unprepared("UPDATE deadlock_probe SET v = 2 WHERE id = 2"),
        second.execute_unprepared("UPDATE deadlock_probe SET v = 2 WHERE id = 1"),
    );
    let aborted: Vec<StoreError> = [a, b]
        .into_iter()
        .filter_map(|outcome| outcome.err().map(StoreError::from))
        .collect();
    assert_eq!(aborted.len(), 1, "exactly one side is aborted: {aborted:?}");
    assert!(aborted[0].is_transaction_conflict(), "{:?}", aborted[0]);
    assert!(aborted[0].is_retryable(), "{:?}", aborted[0]);
    let _ = first.rollback().await;
    let _ = second.rollback().await;
}
