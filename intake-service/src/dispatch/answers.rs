//! Precise answers to a worker whose lease did not do what it asked: a renewal
//! refused because a client cancelled the task becomes a cancellation (so the
//! worker's trace says `cancelled`, even when the cancel was recorded just before
//! an intake restart and never forwarded); a hand-back of a finished task is a
//! no-op, not an acceptance; anything else is a lost lease.

use tracing::warn;

use crate::store::{LeaseFate, Store, TransitionError};

use super::messages::{LeaseRef, Refusal, ToWorker};

/// What the worker is told about a lease that could not be renewed.
pub(super) async fn not_renewed(store: &Store, lease: LeaseRef) -> ToWorker {
    match store.lease_fate(lease.task_id, lease.lease_token).await {
        Ok(LeaseFate::Cancelled) => ToWorker::Cancel(lease),
        Ok(_) => ToWorker::LeaseLost(lease),
        Err(error) => {
            // the task is not renewed either way; stopping it is the safe answer
            warn!(task_id = %lease.task_id, %error, "could not read a lost lease's task");
            ToWorker::LeaseLost(lease)
        }
    }
}

/// Why a `released` report changed nothing.
pub(super) async fn stale_release(store: &Store, lease: LeaseRef) -> Refusal {
    match store.lease_fate(lease.task_id, lease.lease_token).await {
        Ok(LeaseFate::Finished(status)) => Refusal::AlreadyFinished { status },
        Ok(LeaseFate::Cancelled) => Refusal::AlreadyFinished {
            status: crate::task::Status::Cancelled,
        },
        Ok(LeaseFate::NoSuchTask) => TransitionError::NotFound.into(),
        Ok(LeaseFate::Lost { holder }) => TransitionError::LeaseLost { holder }.into(),
        // released between the two reads: the lease is gone now
        Ok(LeaseFate::Current) => TransitionError::LeaseLost { holder: None }.into(),
        Err(error) => error.into(),
    }
}
