//! The pump: claims queued tasks for hungry workers and sends them. It runs when
//! woken (a commit made tasks available, a worker freed a slot or joined) and,
//! as a safety net for missed wake-ups and retry backoffs, when the next backoff
//! ends or after `DispatchConfig::idle_recheck`.

use std::time::Duration;

use tracing::{debug, warn};

use crate::store::lease::Release;
use crate::task::{Task, now_micros};

use super::Dispatcher;
use super::messages::{Assignment, ToWorker};
use super::registry::SessionId;

const ERROR_PAUSE: Duration = Duration::from_millis(500);

pub(super) async fn run(dispatcher: Dispatcher) {
    let shutdown = dispatcher.inner.shutdown.clone();
    loop {
        let pause = match fill(&dispatcher).await {
            Ok(pause) => pause,
            Err(error) => {
                warn!(%error, "claiming tasks failed; retrying");
                ERROR_PAUSE
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = dispatcher.inner.wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Claims until no worker has room or no task is available; returns how long the
/// pump may sleep if nothing wakes it.
async fn fill(dispatcher: &Dispatcher) -> Result<Duration, crate::store::StoreError> {
    loop {
        let hungry = dispatcher.registry().hungry();
        let idle_recheck = dispatcher.config().idle_recheck;
        if hungry.is_empty() {
            return Ok(idle_recheck);
        }
        let mut claimed_any = false;
        for worker in hungry {
            let limit = worker.free.min(dispatcher.config().max_claim_batch);
            let tasks = dispatcher
                .store()
                .claim(&worker.worker_id, limit, dispatcher.config().lease_ttl)
                .await?;
            if tasks.is_empty() {
                break;
            }
            claimed_any = true;
            deliver(dispatcher, worker.session, tasks).await;
        }
        if !claimed_any {
            // every worker has room and nothing is available now: sleep until the
            // earliest backoff ends
            let next = dispatcher.store().next_available_at().await?;
            let pause = next
                .map(|at| Duration::from_micros(u64::try_from(at - now_micros()).unwrap_or(0)))
                .unwrap_or(idle_recheck)
                .min(idle_recheck);
            return Ok(pause.max(Duration::from_millis(1)));
        }
    }
}

/// Sends claimed tasks to their session; hands back any it can no longer take.
async fn deliver(dispatcher: &Dispatcher, session: SessionId, tasks: Vec<Task>) {
    let heartbeat_interval = dispatcher.config().heartbeat_interval();
    let mut undelivered = Vec::new();
    {
        let mut registry = dispatcher.registry();
        for task in tasks {
            let Some(lease) = task.lease else {
                undelivered.push(task);
                continue;
            };
            let Some(outbox) = registry.get(session).map(|s| s.outbox.clone()) else {
                undelivered.push(task);
                continue;
            };
            let (task_id, attempt) = (task.id, task.attempt);
            let assignment = ToWorker::Assign(Box::new(Assignment {
                lease_token: lease.token,
                lease_expires_at: lease.expires_at,
                attempt,
                heartbeat_interval,
                task,
            }));
            match outbox.try_send(assignment) {
                Ok(()) => {
                    registry.hold(session, task_id, lease.token);
                    debug!(%task_id, attempt, "task assigned");
                }
                Err(refused) => {
                    if let ToWorker::Assign(assignment) = refused.into_inner() {
                        undelivered.push(assignment.task);
                    }
                }
            }
        }
    }
    for task in undelivered {
        let Some(lease) = task.lease else { continue };
        let released = dispatcher
            .store()
            .release(
                task.id,
                lease.token,
                Release::Undelivered,
                &dispatcher.config().retry,
            )
            .await;
        if let Err(error) = released {
            // the lease expires and the rescuer queues the task again
            warn!(task_id = %task.id, %error, "could not hand back an undelivered task");
        }
    }
}
