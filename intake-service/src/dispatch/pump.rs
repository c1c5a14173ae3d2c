//! The pump: claims queued tasks for hungry workers and sends them. It runs when
//! woken (a commit made tasks available, a worker freed a slot or joined) and,
//! as a safety net for missed wake-ups and retry backoffs, when the next backoff
//! ends or after `DispatchConfig::idle_recheck`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::store::lease::Release;
use crate::task::{Task, now_micros};

use super::Dispatcher;
use super::messages::{Assignment, ToWorker};
use super::registry::{Hungry, SessionId};

const ERROR_PAUSE: Duration = Duration::from_millis(500);
/// A worker whose claims the database refuses is skipped for this long, doubling
/// per failure up to [`WORKER_BACKOFF_MAX`]; the others keep getting work.
const WORKER_BACKOFF_BASE: Duration = Duration::from_secs(1);
const WORKER_BACKOFF_MAX: Duration = Duration::from_secs(60);

pub(super) async fn run(dispatcher: Dispatcher) {
    let shutdown = dispatcher.inner.shutdown.clone();
    let mut refused = Refused::default();
    loop {
        let pause = match fill(&dispatcher, &mut refused).await {
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

/// Workers whose last claim the database refused, and until when they are skipped.
#[derive(Default)]
struct Refused {
    until: HashMap<SessionId, (u32, Instant)>,
}

impl Refused {
    fn skips(&self, session: SessionId, now: Instant) -> bool {
        self.until
            .get(&session)
            .is_some_and(|(_, until)| *until > now)
    }

    fn record(&mut self, session: SessionId, now: Instant) -> Duration {
        let failures = self.until.get(&session).map_or(0, |(n, _)| *n) + 1;
        let delay = WORKER_BACKOFF_BASE
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)))
            .min(WORKER_BACKOFF_MAX);
        self.until.insert(session, (failures, now + delay));
        delay
    }

    /// The earliest end of a skip, to wake for.
    fn next_end(&self, now: Instant) -> Option<Duration> {
        self.until
            .values()
            .filter(|(_, until)| *until > now)
            .map(|(_, until)| *until - now)
            .min()
    }

    /// Forgets sessions that are gone or no longer want work.
    fn retain(&mut self, hungry: &[Hungry]) {
        self.until
            .retain(|session, _| hungry.iter().any(|h| h.session == *session));
    }
}

/// Claims until no worker has room or no task is available; returns how long the
/// pump may sleep if nothing wakes it.
async fn fill(
    dispatcher: &Dispatcher,
    refused: &mut Refused,
) -> Result<Duration, crate::store::StoreError> {
    loop {
        let hungry = dispatcher.registry().hungry();
        let idle_recheck = dispatcher.config().idle_recheck;
        refused.retain(&hungry);
        if hungry.is_empty() {
            return Ok(idle_recheck);
        }
        let mut claimed_any = false;
        let now = Instant::now();
        // every hungry worker's claim at once: they reach the batching writer
        // together and commit in one transaction
        let claims = hungry
            .into_iter()
            .filter(|worker| !refused.skips(worker.session, now))
            .map(|worker| async move {
                let limit = worker.free.min(dispatcher.config().max_claim_batch);
                let claimed = dispatcher
                    .store()
                    .claim(&worker.worker_id, limit, dispatcher.config().lease_ttl)
                    .await;
                (worker, claimed)
            });
        let mut unavailable = None;
        for (worker, claimed) in futures::future::join_all(claims).await {
            let tasks = match claimed {
                Ok(tasks) => tasks,
                // the database itself is down: nobody can claim, wait and retry
                // (after delivering what the other claims took)
                Err(error) if error.is_retryable() => {
                    unavailable = Some(error);
                    continue;
                }
                // something about this worker makes its claim fail every time:
                // skip it for a while, the others keep their work flowing
                Err(error) => {
                    let delay = refused.record(worker.session, now);
                    warn!(worker_id = %worker.worker_id, %error, ?delay,
                        "claiming for this worker failed; skipping it for a while");
                    continue;
                }
            };
            refused.until.remove(&worker.session);
            if tasks.is_empty() {
                continue;
            }
            claimed_any = true;
            deliver(dispatcher, worker.session, tasks).await;
        }
        if let Some(error) = unavailable.filter(|_| !claimed_any) {
            return Err(error);
        }
        if !claimed_any {
            // nothing is available now (or only refused workers want it): sleep
            // until the earliest backoff ends
            let next = dispatcher.store().next_available_at().await?;
            let pause = next
                .map(|at| Duration::from_micros(u64::try_from(at - now_micros()).unwrap_or(0)))
                .unwrap_or(idle_recheck)
                .min(idle_recheck)
                .min(refused.next_end(Instant::now()).unwrap_or(idle_recheck));
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
