//! The store's lease operations driven directly, on both backends: claim, renew,
//! release and guarded transitions, and an intake restart that must not take
//! back the work of workers that reattach.

mod support;

use std::time::Duration;

use intake_service::config::IntakeConfig;
use intake_service::store::lease::{RENEW_CHUNK, Release, Released, RetryPolicy};
use intake_service::store::{Store, StoreOptions, Transition, TransitionError};
use intake_service::task::{
    Constraints, Operation, Requester, RequesterKind, Status, Target, Task, TaskSpec,
};
use jct::v1 as pb;
use jct_migrations::on_both_backends;
use support::{FakeWorker, TestIntake};

on_both_backends!(
    claims_take_the_oldest_under_fresh_leases,
    renewals_keep_current_leases_only,
    more_than_a_thousand_leases_renew_at_once,
    releases_follow_their_reason,
    transitions_are_guarded_by_the_lease,
    a_restarted_intake_keeps_reattaching_workers_tasks,
    a_cancel_recorded_while_the_intake_was_down_reaches_the_worker_as_a_cancel,
);

const TTL: Duration = Duration::from_secs(30);
const RETRY: RetryPolicy = RetryPolicy {
    backoff_base: Duration::from_millis(1),
    backoff_max: Duration::from_millis(1),
};

fn spec(objective: &str) -> TaskSpec {
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

async fn open(url: &str) -> Store {
    Store::open(StoreOptions::new(url)).await.expect("open")
}

async fn enqueue_many(store: &Store, count: usize, max_attempts: i32) -> Vec<uuid::Uuid> {
    let mut handles = Vec::with_capacity(count);
    for n in 0..count {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store
                .enqueue(spec(&format!("task {n}")), max_attempts)
                .await
        }));
    }
    let mut ids = Vec::with_capacity(count);
    for handle in handles {
        ids.push(handle.await.expect("join").expect("enqueue").task.id);
    }
    ids
}

fn lease_of(task: &Task) -> (uuid::Uuid, uuid::Uuid) {
    (
        task.id,
        task.lease.expect("a claimed task has a lease").token,
    )
}

fn change(task: &Task, to: Status, lease_token: Option<uuid::Uuid>) -> Transition {
    Transition {
        task_id: task.id,
        to,
        result: (to == Status::Completed).then(Default::default),
        error: None,
        trace_uri: None,
        lease_token,
        actor: None,
    }
}

async fn claims_take_the_oldest_under_fresh_leases(url: &str) {
    let store = open(url).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            store
                .enqueue(spec(&format!("t{n}")), 3)
                .await
                .expect("enqueue")
                .task
                .id,
        );
    }
    let first = store.claim("w1", 2, TTL).await.expect("claim");
    assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), ids[..2]);
    for task in &first {
        assert_eq!(task.status, Status::Running);
        assert_eq!(task.attempt, 1);
        assert_eq!(task.worker_id.as_deref(), Some("w1"));
        assert!(task.lease.is_some());
    }
    assert_ne!(lease_of(&first[0]).1, lease_of(&first[1]).1);
    let second = store.claim("w2", 5, TTL).await.expect("claim");
    assert_eq!(second.iter().map(|t| t.id).collect::<Vec<_>>(), ids[2..]);
    assert!(store.claim("w3", 5, TTL).await.expect("claim").is_empty());
    assert!(store.claim("w3", 0, TTL).await.expect("claim").is_empty());
    store.close().await;
}

async fn renewals_keep_current_leases_only(url: &str) {
    let store = open(url).await;
    enqueue_many(&store, 2, 3).await;
    let claimed = store.claim("w1", 2, TTL).await.expect("claim");
    let (held, stale) = (lease_of(&claimed[0]), (claimed[1].id, uuid::Uuid::now_v7()));
    let renewed = store.renew(&[held, stale], TTL).await.expect("renew");
    assert_eq!(renewed, vec![held.0]);
    assert!(store.renew(&[], TTL).await.expect("renew").is_empty());
    // a finished task's lease is not renewed
    store
        .transition(change(&claimed[0], Status::Completed, Some(held.1)))
        .await
        .expect("complete");
    assert!(store.renew(&[held], TTL).await.expect("renew").is_empty());
    store.close().await;
}

/// SQLite refuses one statement renewing about 1,000 leases ("Expression tree is
/// too large"); a worker may hold 1,024.
async fn more_than_a_thousand_leases_renew_at_once(url: &str) {
    let store = open(url).await;
    let count = 1100;
    assert!(count > 4 * RENEW_CHUNK);
    enqueue_many(&store, count, 3).await;
    let mut leases = Vec::with_capacity(count);
    while leases.len() < count {
        let claimed = store.claim("big", 512, TTL).await.expect("claim");
        assert!(!claimed.is_empty());
        leases.extend(claimed.iter().map(lease_of));
    }
    let mut renewed = store.renew(&leases, TTL).await.expect("renew");
    renewed.sort();
    let mut expected: Vec<_> = leases.iter().map(|(id, _)| *id).collect();
    expected.sort();
    assert_eq!(renewed, expected);
    store.close().await;
}

async fn releases_follow_their_reason(url: &str) {
    let store = open(url).await;
    enqueue_many(&store, 3, 2).await;
    let claimed = store.claim("w1", 3, TTL).await.expect("claim");

    // undelivered: the claim is undone, the attempt not spent
    let (id, token) = lease_of(&claimed[0]);
    let released = store.release(id, token, Release::Undelivered, &RETRY).await;
    assert_eq!(released.expect("release"), Released::Requeued);
    let task = store.get(id).await.expect("get").expect("task");
    assert_eq!(
        (task.status, task.attempt, task.lease),
        (Status::Queued, 0, None)
    );
    // the old lease is stale now
    let again = store.release(id, token, Release::HandedBack, &RETRY).await;
    assert_eq!(again.expect("release"), Released::Stale);

    // handed back: queued again, the attempt counted
    let (id, token) = lease_of(&claimed[1]);
    let released = store.release(id, token, Release::HandedBack, &RETRY).await;
    assert_eq!(released.expect("release"), Released::Requeued);
    let task = store.get(id).await.expect("get").expect("task");
    assert_eq!((task.status, task.attempt), (Status::Queued, 1));

    // worker lost: retried while attempts remain, then WORKER_LOST
    let (id, token) = lease_of(&claimed[2]);
    let released = store.release(id, token, Release::WorkerLost, &RETRY).await;
    assert_eq!(released.expect("release"), Released::Requeued);
    let retried = loop {
        let claimed = store.claim("w2", 3, TTL).await.expect("claim");
        if let Some(task) = claimed.into_iter().find(|t| t.id == id) {
            break task;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(retried.attempt, 2);
    let (_, token) = lease_of(&retried);
    let released = store.release(id, token, Release::WorkerLost, &RETRY).await;
    assert_eq!(released.expect("release"), Released::Failed);
    let task = store.get(id).await.expect("get").expect("task");
    assert_eq!(task.status, Status::Failed);
    assert_eq!(
        task.error.as_ref().map(|e| e.code.as_str()),
        Some("WORKER_LOST")
    );
    store.close().await;
}

async fn transitions_are_guarded_by_the_lease(url: &str) {
    let store = open(url).await;
    enqueue_many(&store, 1, 3).await;
    let claimed = store.claim("w1", 1, TTL).await.expect("claim");
    let task = &claimed[0];
    let (_, token) = lease_of(task);

    let wrong = store
        .transition(change(task, Status::Completed, Some(uuid::Uuid::now_v7())))
        .await;
    assert!(
        matches!(wrong, Err(TransitionError::LeaseLost { .. })),
        "{wrong:?}"
    );
    let missing = store
        .transition(Transition {
            task_id: uuid::Uuid::now_v7(),
            ..change(task, Status::Cancelled, None)
        })
        .await;
    assert!(
        matches!(missing, Err(TransitionError::NotFound)),
        "{missing:?}"
    );

    let done = store
        .transition(change(task, Status::Completed, Some(token)))
        .await
        .expect("complete");
    assert_eq!((done.status, done.lease), (Status::Completed, None));
    let late = store
        .transition(change(task, Status::Cancelled, None))
        .await;
    assert!(
        matches!(late, Err(TransitionError::Invalid { .. })),
        "{late:?}"
    );
    store.close().await;
}

/// The intake died with two tasks running; their leases expired while it was
/// down. A restarted intake must let the worker that reattaches keep its task
/// (on old code the rescuer's first tick, at start, requeued it and the worker
/// killed a healthy program as `LeaseLost`, burning an attempt); the task whose
/// worker never returns is still rescued, one TTL later.
async fn a_restarted_intake_keeps_reattaching_workers_tasks(url: &str) {
    let store = open(url).await;
    enqueue_many(&store, 2, 3).await;
    // leases of 1 µs: expired before the intake starts
    let claimed = store
        .claim("w1", 2, Duration::from_micros(1))
        .await
        .expect("claim");
    let (task_id, token) = lease_of(&claimed[0]);
    let orphan = claimed[1].id;
    store.close().await;

    let mut config = IntakeConfig::for_database(url);
    config.allowed_repo_prefixes = "myorg/".into();
    config.shutdown_grace_seconds = 5;
    config.lease_ttl_seconds = 2;
    let intake = TestIntake::start_with(config).await;
    // the worker reconnects after a backoff, well within one TTL
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lease = pb::LeaseRef {
        task_id: task_id.to_string(),
        lease_token: token.to_string(),
    };
    let mut worker = FakeWorker::attach(intake.channel().await, "w1", 2, vec![lease.clone()]).await;
    // a live worker heartbeats a few times per lease
    let heartbeats = worker.outbox.clone();
    let beating = tokio::spawn(async move {
        loop {
            let beat = pb::WorkerMessage {
                kind: Some(pb::worker_message::Kind::Heartbeat(pb::Heartbeat {
                    leases: vec![lease.clone()],
                })),
            };
            if heartbeats.send(beat).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut client = intake.client.clone();
    let get = |id: uuid::Uuid| {
        let mut client = client.clone();
        async move {
            client
                .get_task(pb::GetTaskRequest {
                    task_id: id.to_string(),
                })
                .await
                .expect("get")
                .into_inner()
        }
    };
    // the rescuer has acted once the orphan is no longer running
    let rescued = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let task = get(orphan).await;
            if task.status != "running" {
                return task;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the orphaned task is rescued");
    assert_eq!(rescued.attempt, 1, "{rescued:?}");
    let kept = get(task_id).await;
    assert_eq!((kept.status.as_str(), kept.attempt), ("running", 1));
    let ack = worker
        .report(pb::TaskReport {
            report_id: 1,
            task_id: task_id.to_string(),
            lease_token: token.to_string(),
            status: pb::ReportStatus::Completed.into(),
            result: Some(prost_types::Struct::default()),
            ..Default::default()
        })
        .await;
    assert!(ack.accepted, "{ack:?}");
    beating.abort();
    let done = client
        .get_task(pb::GetTaskRequest {
            task_id: task_id.to_string(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!((done.status.as_str(), done.attempt), ("completed", 1));
    intake.stop().await;
}

/// A client's cancel was committed but the intake died before forwarding it (here:
/// recorded while no intake runs). The worker that reattaches with the lease must
/// be told to cancel, so its trace says `cancelled`, not be told its lease is lost.
async fn a_cancel_recorded_while_the_intake_was_down_reaches_the_worker_as_a_cancel(url: &str) {
    let store = open(url).await;
    enqueue_many(&store, 1, 3).await;
    let claimed = store.claim("w1", 1, TTL).await.expect("claim");
    let (task_id, token) = lease_of(&claimed[0]);
    let cancelled = store
        .transition(change(&claimed[0], Status::Cancelled, None))
        .await
        .expect("a client cancel");
    assert_eq!(cancelled.status, Status::Cancelled);
    store.close().await;

    let mut config = IntakeConfig::for_database(url);
    config.allowed_repo_prefixes = "myorg/".into();
    config.shutdown_grace_seconds = 5;
    let intake = TestIntake::start_with(config).await;
    let lease = pb::LeaseRef {
        task_id: task_id.to_string(),
        lease_token: token.to_string(),
    };
    let mut worker = FakeWorker::attach(intake.channel().await, "w1", 1, vec![lease.clone()]).await;
    worker
        .send(pb::worker_message::Kind::Heartbeat(pb::Heartbeat {
            leases: vec![lease],
        }))
        .await;
    let told = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match worker.next(Duration::from_secs(10)).await {
                Some(pb::dispatch_message::Kind::Cancel(cancel)) => return Ok(cancel.task_id),
                Some(pb::dispatch_message::Kind::LeaseLost(lost)) => return Err(lost.task_id),
                Some(_) => continue,
                None => panic!("the intake said nothing about the cancelled task's lease"),
            }
        }
    })
    .await
    .expect("an answer about the lease");
    assert_eq!(
        told,
        Ok(task_id.to_string()),
        "told LeaseLost instead of Cancel"
    );
    intake.stop().await;
}
