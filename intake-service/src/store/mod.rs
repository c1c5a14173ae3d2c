//! Persistence of tasks, on SQLite or Postgres through sea-orm. Nothing outside this
//! module touches the database, and nothing in it knows gRPC.
//!
//! Writes that clients wait for (enqueues and status changes) go through one
//! batching writer per process ([`batch`]): whatever arrives while a transaction is
//! committing is grouped into the next one, so a commit (and its fsync) is shared
//! by every request in it. Claims, renewals and reads run directly.

pub mod audit;
mod batch;
mod cache;
mod connect;
pub mod entity;
pub mod error;
mod insert;
pub mod lease;
mod lease_fate;
mod list;
mod notify;
mod read;
mod status_literal;
mod transition;
mod watch;
mod write;

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

pub use connect::{Backend, SqliteSynchronous, StoreOptions, migrate_only, redact};
pub use error::StoreError;
pub use insert::Enqueued;
pub use lease::{Release, Released, RetryPolicy};
pub use lease_fate::LeaseFate;
pub use list::{ListPage, ListView};
pub use read::{ListFilter, StatusCounts};
pub use transition::{Actor, Transition, TransitionError};
pub use watch::TaskWatch;

/// A running task whose worker must stop: it was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelNotice {
    pub task_id: Uuid,
    pub lease_token: Uuid,
}

/// What happened in the store that another part of the process reacts to.
#[derive(Debug, Clone)]
pub struct StoreEvents {
    /// Signalled after a commit that made tasks dispatchable.
    pub task_queued: Arc<Notify>,
    /// Sent after a commit that cancelled a task a worker holds.
    pub task_cancelled: broadcast::Sender<CancelNotice>,
}

impl StoreEvents {
    fn new() -> Self {
        Self {
            task_queued: Arc::new(Notify::new()),
            task_cancelled: broadcast::channel(1024).0,
        }
    }
}

/// The task store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    reader: DatabaseConnection,
    writer: DatabaseConnection,
    backend: Backend,
    batch: batch::BatchHandle,
    events: StoreEvents,
    cache: cache::TaskCache,
    watchers: watch::Watchers,
    /// Held for the store's life on SQLite: the single-writer lock.
    _exclusive: Option<Arc<std::fs::File>>,
}

impl Store {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn events(&self) -> &StoreEvents {
        &self.events
    }

    /// Answers whether the database is reachable now.
    pub async fn ping(&self) -> bool {
        self.reader.ping().await.is_ok()
    }

    /// Closes the connection pools; call after the server has drained its requests.
    pub async fn close(self) {
        let _ = self.reader.close().await;
        let _ = self.writer.close().await;
    }
}

// === writes through the batching writer ===

impl Store {
    /// Stores a new queued task (or returns the one its idempotency key names).
    /// Returns once the task is committed.
    pub async fn enqueue(
        &self,
        spec: crate::task::TaskSpec,
        max_attempts: i32,
    ) -> Result<Enqueued, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.batch
            .submit(batch::WriteOp::Insert {
                spec,
                max_attempts,
                reply,
            })
            .await?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Applies a status change; returns the task as it now is.
    pub async fn transition(
        &self,
        change: Transition,
    ) -> Result<crate::task::Task, TransitionError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.batch
            .submit(batch::WriteOp::Transition { change, reply })
            .await?;
        answer
            .await
            .map_err(|_| TransitionError::Store(StoreError::WriterStopped))?
    }
}
