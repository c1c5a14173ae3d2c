//! Cancellations of running tasks reach the worker holding them: from this
//! replica's own commits and, on Postgres, from every replica's (NOTIFY).

use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, warn};

use super::Dispatcher;
use super::messages::{LeaseRef, ToWorker};

pub(super) async fn run(dispatcher: Dispatcher) {
    let shutdown = dispatcher.inner.shutdown.clone();
    let mut notices = dispatcher.store().events().task_cancelled.subscribe();
    loop {
        let notice = tokio::select! {
            _ = shutdown.cancelled() => return,
            notice = notices.recv() => notice,
        };
        let notice = match notice {
            Ok(notice) => notice,
            Err(RecvError::Lagged(missed)) => {
                // the worker still learns: its next report is refused as the task
                // is terminal, and it stops then
                warn!(missed, "cancellation notices dropped");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let registry = dispatcher.registry();
        if let Some((_, holder)) = registry.holder(notice.task_id, notice.lease_token) {
            debug!(task_id = %notice.task_id, worker_id = %holder.worker_id, "forwarding cancellation");
            let _ = holder.outbox.try_send(ToWorker::Cancel(LeaseRef {
                task_id: notice.task_id,
                lease_token: notice.lease_token,
            }));
        }
    }
}
