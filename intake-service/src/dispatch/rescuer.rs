//! The rescuer: tasks whose lease expired (their worker stopped renewing) go back
//! to the queue after a backoff, or fail with WORKER_LOST when their attempts are
//! spent. Every replica runs one; the lease guard makes their work idempotent.
//!
//! An expiry only says a worker is gone if the worker could have renewed. While
//! this intake was down, or the database unreachable, no worker could: so leases
//! count as renewed when the intake starts and when the database answers again,
//! and nothing is rescued until one TTL after that, time enough for every live
//! worker to reattach and renew. Rescuing earlier would requeue healthy work and
//! make its workers kill it as `LeaseLost`, burning an attempt.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::store::lease::{Release, Released};

use super::Dispatcher;
use super::messages::{LeaseRef, ToWorker};

const BATCH: u64 = 500;

pub(super) async fn run(dispatcher: Dispatcher) {
    let shutdown = dispatcher.inner.shutdown.clone();
    let ttl = dispatcher.config().lease_ttl;
    // checks a few times per lease, so an expired task waits at most a fraction of
    // a lease beyond its expiry
    let period = (ttl / 4).max(Duration::from_millis(50));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut grace = Grace::starting(Instant::now(), ttl);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let expired = dispatcher.store().expired_leases(BATCH).await;
        let may_rescue = grace.observe(expired.is_ok(), Instant::now());
        match expired {
            Ok(expired) if may_rescue => {
                if let Err(error) = rescue(&dispatcher, expired).await {
                    grace.observe(false, Instant::now());
                    warn!(%error, "rescuing expired leases failed");
                }
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "reading expired leases failed"),
        }
    }
}

/// When expired leases may be rescued: one TTL after the start, and one TTL
/// after the database answers again following a failure.
#[derive(Debug)]
struct Grace {
    ttl: Duration,
    until: Instant,
    database_down: bool,
}

impl Grace {
    fn starting(now: Instant, ttl: Duration) -> Self {
        Self {
            ttl,
            until: now + ttl,
            database_down: false,
        }
    }

    /// Records whether the database answered; says whether rescuing is allowed now.
    fn observe(&mut self, database_answered: bool, now: Instant) -> bool {
        if !database_answered {
            self.database_down = true;
            return false;
        }
        if self.database_down {
            self.database_down = false;
            self.until = now + self.ttl;
            info!(grace = ?self.ttl, "the database answers again; leases count as renewed");
        }
        now >= self.until
    }
}

async fn rescue(
    dispatcher: &Dispatcher,
    expired: Vec<(uuid::Uuid, uuid::Uuid)>,
) -> Result<(), crate::store::StoreError> {
    for (task_id, lease_token) in expired {
        let released = dispatcher
            .store()
            .release(
                task_id,
                lease_token,
                Release::WorkerLost,
                &dispatcher.config().retry,
            )
            .await?;
        if released == Released::Stale {
            continue;
        }
        crate::metrics::lease_expired();
        info!(%task_id, outcome = ?released, "lease expired");
        let mut registry = dispatcher.registry();
        if let Some((session, holder)) = registry.holder(task_id, lease_token) {
            let _ = holder.outbox.try_send(ToWorker::LeaseLost(LeaseRef {
                task_id,
                lease_token,
            }));
            registry.release(session, task_id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn nothing_is_rescued_until_one_ttl_after_the_start() {
        let start = Instant::now();
        let mut grace = Grace::starting(start, TTL);
        assert!(!grace.observe(true, start));
        assert!(!grace.observe(true, start + TTL / 2));
        assert!(grace.observe(true, start + TTL));
    }

    #[test]
    fn nothing_is_rescued_until_one_ttl_after_the_database_returns() {
        let start = Instant::now();
        let mut grace = Grace::starting(start, TTL);
        assert!(grace.observe(true, start + TTL));
        // an outage longer than the TTL: every lease expired meanwhile
        assert!(!grace.observe(false, start + TTL * 2));
        assert!(!grace.observe(false, start + TTL * 4));
        let back = start + TTL * 5;
        assert!(!grace.observe(true, back));
        assert!(!grace.observe(true, back + TTL / 2));
        assert!(grace.observe(true, back + TTL));
    }

    #[test]
    fn a_failure_during_the_grace_restarts_it_when_the_database_returns() {
        let start = Instant::now();
        let mut grace = Grace::starting(start, TTL);
        assert!(!grace.observe(false, start + TTL / 2));
        let back = start + TTL * 2;
        assert!(!grace.observe(true, back));
        assert!(grace.observe(true, back + TTL));
    }
}
