//! One worker's stream, in domain terms: the worker says hello (id, capacity,
//! tasks it still holds), then reports and heartbeats; the dispatcher sends
//! assignments, acknowledgements and cancellations. The wire side of it is
//! `api::dispatch_service`.
//!
//! A stream that ends while the intake runs means the worker is gone: its tasks
//! return to the queue (after a backoff). A stream cut by the intake's own
//! shutdown hands back nothing: the worker reconnects, presents its leases and
//! keeps its tasks.

use std::collections::HashMap;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tracing::{info, warn};
use uuid::Uuid;

use crate::store::audit::WorkerEvent;
use crate::store::{Actor, Release, Released, Transition, TransitionError};
use crate::task::now_micros;

use super::Dispatcher;
use super::messages::{
    Ack, Closing, FromWorker, Hello, LeaseRef, Refusal, Report, ReportChange, ToWorker,
};
use super::registry::{Outbox, Session, SessionId};

/// Room for every assignment a worker may hold plus acks and control messages.
const OUTBOX_SLACK: usize = 256;

impl Dispatcher {
    /// Registers a worker that said `hello` and serves its `inbound` messages
    /// until the stream ends; returns what to send it, or [`super::WorkerIdTaken`] when
    /// another principal's worker is attached under the same id.
    pub fn attach<S>(
        &self,
        hello: Hello,
        inbound: S,
    ) -> Result<mpsc::Receiver<ToWorker>, super::WorkerIdTaken>
    where
        S: Stream<Item = FromWorker> + Send + Unpin + 'static,
    {
        let capacity = hello.capacity;
        let (outbox, receiver) = mpsc::channel(capacity as usize + OUTBOX_SLACK);
        let session = Session {
            principal: hello.principal.clone(),
            worker_id: hello.worker_id.clone(),
            capacity,
            executor: hello.executor.clone(),
            version: hello.version.clone(),
            draining: false,
            held: HashMap::new(),
            outbox: outbox.clone(),
        };
        let registered = self.registry().register(session);
        let Ok((session_id, replaced)) = registered else {
            warn!(worker_id = %hello.worker_id, principal = %hello.principal,
                  "attach refused: the worker id is attached by another principal");
            return Err(super::WorkerIdTaken);
        };
        info!(worker_id = %hello.worker_id, principal = %hello.principal, capacity, "worker attached");

        let dispatcher = self.clone();
        tokio::spawn(async move {
            audit(&dispatcher, &hello, "attached", None).await;
            adopt(&dispatcher, session_id, &outbox, &hello.held, replaced).await;
            dispatcher.wake_pump();
            serve(&dispatcher, session_id, &outbox, inbound).await;
            let why = detach(&dispatcher, session_id, &hello.worker_id).await;
            audit(&dispatcher, &hello, "detached", Some(why)).await;
        });
        Ok(receiver)
    }
}

/// Takes over the tasks a reconnecting worker still runs, if their leases are
/// current; tasks of a replaced session that the worker no longer runs are lost.
async fn adopt(
    dispatcher: &Dispatcher,
    session: SessionId,
    outbox: &Outbox,
    held: &[LeaseRef],
    replaced: Option<Session>,
) {
    let held = &own_leases(dispatcher, session, held.to_vec());
    let renewed = match dispatcher
        .store()
        .renew(&pairs(held), dispatcher.config().lease_ttl)
        .await
    {
        Ok(renewed) => renewed,
        Err(error) => {
            // the database cannot say whether the leases are current: keep them
            // (the next heartbeat renews or refuses them), never stop healthy work
            // because the database is away
            warn!(%error, "could not renew presented leases; keeping them until the next heartbeat");
            held.iter().map(|lease| lease.task_id).collect()
        }
    };
    let mut lost = Vec::new();
    {
        let mut registry = dispatcher.registry();
        for lease in held {
            if renewed.contains(&lease.task_id) {
                registry.hold(session, lease.task_id, lease.lease_token);
            } else {
                lost.push(*lease);
            }
        }
    }
    for lease in lost {
        let _ = outbox.try_send(not_renewed(dispatcher, lease).await);
    }
    let Some(old) = replaced else { return };
    for (task, lease) in old.held {
        if !held.iter().any(|l| l.task_id == task) {
            release(dispatcher, task, lease, Release::WorkerLost).await;
        }
    }
}

async fn serve<S>(dispatcher: &Dispatcher, session: SessionId, outbox: &Outbox, mut inbound: S)
where
    S: Stream<Item = FromWorker> + Send + Unpin + 'static,
{
    let shutdown = dispatcher.inner.shutdown.clone();
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = outbox.try_send(ToWorker::Close(Closing::ShuttingDown));
                return;
            }
            _ = outbox.closed() => return,
            message = inbound.next() => message,
        };
        let Some(message) = message else { return };
        match message {
            FromWorker::Report(report) => {
                let (dispatcher, outbox) = (dispatcher.clone(), outbox.clone());
                // reports of one worker commit concurrently (and batch together)
                tokio::spawn(
                    async move { handle_report(&dispatcher, session, &outbox, report).await },
                );
            }
            FromWorker::Heartbeat(leases) => {
                let (dispatcher, outbox) = (dispatcher.clone(), outbox.clone());
                tokio::spawn(async move { renew(&dispatcher, session, &outbox, leases).await });
            }
            FromWorker::Drain => {
                info!(session, "worker draining");
                dispatcher.registry().set_draining(session);
            }
            FromWorker::HelloAgain => {
                let _ = outbox.try_send(ToWorker::Close(Closing::HelloTwice));
                return;
            }
        }
    }
}

/// The stream ended: unless the intake is shutting down, the worker is gone.
/// Returns why, for the audit trail.
async fn detach(dispatcher: &Dispatcher, session: SessionId, worker_id: &str) -> &'static str {
    let Some(gone) = dispatcher.registry().remove(session) else {
        return "replaced"; // by a newer session of the same worker
    };
    if dispatcher.inner.shutdown.is_cancelled() {
        info!(%worker_id, held = gone.held.len(), "worker detached at shutdown; leases kept");
        return "intake_shutdown";
    }
    info!(%worker_id, held = gone.held.len(), "worker detached; its tasks return to the queue");
    for (task, lease) in gone.held {
        release(dispatcher, task, lease, Release::WorkerLost).await;
    }
    dispatcher.wake_pump();
    "stream_closed"
}

/// Writes a worker's attach or detach to the audit trail (durably, before the
/// session goes on). A failed write is logged, not fatal: the database is then
/// away, dispatch waits for it anyway, and ending a healthy session would not
/// bring the trail back.
async fn audit(
    dispatcher: &Dispatcher,
    hello: &Hello,
    action: &'static str,
    reason: Option<&'static str>,
) {
    let event = WorkerEvent {
        at: now_micros(),
        principal: hello.principal.clone(),
        worker_id: hello.worker_id.clone(),
        action,
        reason,
    };
    if let Err(error) = dispatcher.store().record_worker_event(&event).await {
        warn!(worker_id = %hello.worker_id, action, %error, "could not record the worker event in the audit trail");
    }
}

async fn release(dispatcher: &Dispatcher, task: Uuid, lease: Uuid, why: Release) {
    if let Err(error) = dispatcher
        .store()
        .release(task, lease, why, &dispatcher.config().retry)
        .await
    {
        // the lease expires and the rescuer queues the task again
        warn!(task_id = %task, %error, "could not release a task");
    }
}

async fn handle_report(
    dispatcher: &Dispatcher,
    session: SessionId,
    outbox: &Outbox,
    report: Report,
) {
    let Report {
        report_id,
        task_id,
        change,
    } = report;
    let foreign = Uuid::parse_str(&task_id)
        .is_ok_and(|task| dispatcher.registry().held_by_another(session, task));
    let outcome = match change {
        // a lease handed to another principal's worker is not this worker's to use
        Ok(_) if foreign => Err((
            Refusal::Transition(TransitionError::LeaseLost { holder: None }),
            false,
        )),
        Ok(change) => {
            let principal = dispatcher
                .registry()
                .get(session)
                .map(|s| s.principal.clone());
            apply_report(dispatcher, with_actor(change, principal)).await
        }
        Err(violations) => Err((Refusal::Invalid(violations), true)),
    };
    let (outcome, settled) = match outcome {
        Ok(settled) => (Ok(()), settled),
        Err((refusal, settled)) => (Err(refusal), settled),
    };
    if settled && let Ok(id) = Uuid::parse_str(&task_id) {
        dispatcher.registry().release(session, id);
        dispatcher.wake_pump();
    }
    let ack = Ack {
        report_id,
        task_id,
        outcome,
    };
    let _ = outbox.send(ToWorker::Ack(ack)).await;
}

/// Applies one report; returns whether the worker is done with the task (a
/// refusal the worker may retry leaves it held).
async fn apply_report(
    dispatcher: &Dispatcher,
    change: ReportChange,
) -> Result<bool, (Refusal, bool)> {
    let store = dispatcher.store();
    match change {
        ReportChange::Release(lease) => {
            let released = store
                .release(
                    lease.task_id,
                    lease.lease_token,
                    Release::HandedBack,
                    &dispatcher.config().retry,
                )
                .await
                .map_err(|error| settle(error.into()))?;
            if released == Released::Stale {
                return Err((super::answers::stale_release(store, lease).await, true));
            }
            Ok(true)
        }
        ReportChange::Transition(transition) => {
            let settles = transition.to.is_terminal();
            store
                .transition(transition)
                .await
                .map(|_| settles)
                .map_err(|error| settle(error.into()))
        }
    }
}

/// A worker's report names its principal in the audit trail.
fn with_actor(change: ReportChange, principal: Option<String>) -> ReportChange {
    match change {
        ReportChange::Transition(transition) => ReportChange::Transition(Transition {
            actor: principal.map(|principal| Actor {
                principal,
                method: "/jct.v1.DispatchService/Attach",
            }),
            ..transition
        }),
        release => release,
    }
}

/// A refusal, and whether it is final (only unavailability is worth a retry).
fn settle(refusal: Refusal) -> (Refusal, bool) {
    let retryable = matches!(&refusal, Refusal::Transition(error) if error.is_retryable());
    (refusal, !retryable)
}

async fn renew(
    dispatcher: &Dispatcher,
    session: SessionId,
    outbox: &Outbox,
    leases: Vec<LeaseRef>,
) {
    let leases = own_leases(dispatcher, session, leases);
    let renewed = match dispatcher
        .store()
        .renew(&pairs(&leases), dispatcher.config().lease_ttl)
        .await
    {
        Ok(renewed) => renewed,
        Err(error) => {
            warn!(%error, "lease renewal failed; the worker will retry");
            return;
        }
    };
    let lost: Vec<LeaseRef> = leases
        .into_iter()
        .filter(|lease| !renewed.contains(&lease.task_id))
        .collect();
    {
        let mut registry = dispatcher.registry();
        for lease in &lost {
            registry.release(session, lease.task_id);
        }
    }
    for lease in lost {
        let _ = outbox.try_send(not_renewed(dispatcher, lease).await);
    }
    dispatcher.wake_pump();
}

/// What a worker is told about a lease that could not be renewed.
async fn not_renewed(dispatcher: &Dispatcher, lease: LeaseRef) -> ToWorker {
    super::answers::not_renewed(dispatcher.store(), lease).await
}

/// The leases a session may use: not those held here by another principal.
fn own_leases(dispatcher: &Dispatcher, session: SessionId, leases: Vec<LeaseRef>) -> Vec<LeaseRef> {
    let registry = dispatcher.registry();
    leases
        .into_iter()
        .filter(|lease| !registry.held_by_another(session, lease.task_id))
        .collect()
}

fn pairs(leases: &[LeaseRef]) -> Vec<(Uuid, Uuid)> {
    leases
        .iter()
        .map(|lease| (lease.task_id, lease.lease_token))
        .collect()
}
