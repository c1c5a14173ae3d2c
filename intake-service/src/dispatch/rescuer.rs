//! The rescuer: tasks whose lease expired (their worker stopped renewing) go back
//! to the queue after a backoff, or fail with WORKER_LOST when their attempts are
//! spent. Every replica runs one; the lease guard makes their work idempotent.

use tracing::{info, warn};

use crate::store::lease::{Release, Released};

use super::Dispatcher;
use super::messages::{LeaseRef, ToWorker};

const BATCH: u64 = 500;

pub(super) async fn run(dispatcher: Dispatcher) {
    let shutdown = dispatcher.inner.shutdown.clone();
    // checks a few times per lease, so an expired task waits at most a fraction of
    // a lease beyond its expiry
    let period = (dispatcher.config().lease_ttl / 4).max(std::time::Duration::from_millis(50));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(error) = rescue_expired(&dispatcher).await {
            warn!(%error, "rescuing expired leases failed");
        }
    }
}

async fn rescue_expired(dispatcher: &Dispatcher) -> Result<(), crate::store::StoreError> {
    let expired = dispatcher.store().expired_leases(BATCH).await?;
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
