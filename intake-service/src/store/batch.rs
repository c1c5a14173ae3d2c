//! The batching writer: one task per process owns client-facing writes and commits
//! whatever is waiting as one transaction (group commit). While a commit runs, new
//! requests queue; the next transaction takes them all, up to `max_batch`. Under
//! load a commit (and its fsync) is shared by many requests; alone, a request waits
//! for nobody.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::task::{Task, TaskSpec, now_micros};

use super::cache::TaskCache;
use super::connect::Backend;
use super::insert::Enqueued;
use super::lease::ClaimRequest;
use super::transition::{Transition, TransitionError};
use super::watch::Watchers;
use super::write::{self, Written};
use super::{CancelNotice, StoreError, StoreEvents};

pub(super) enum WriteOp {
    Insert {
        spec: TaskSpec,
        max_attempts: i32,
        reply: oneshot::Sender<Result<Enqueued, StoreError>>,
    },
    Transition {
        change: Transition,
        reply: oneshot::Sender<Result<Task, TransitionError>>,
    },
    Claim {
        request: ClaimRequest,
        reply: oneshot::Sender<Result<Vec<Task>, StoreError>>,
    },
}

/// Sends writes to the batching writer, which runs until every handle is gone.
#[derive(Clone)]
pub(super) struct BatchHandle {
    ops: mpsc::Sender<WriteOp>,
}

/// Requests waiting beyond this many make callers wait for room (backpressure).
const QUEUE_CAPACITY: usize = 4096;

pub(super) fn spawn(
    db: DatabaseConnection,
    backend: Backend,
    events: StoreEvents,
    cache: TaskCache,
    watchers: Watchers,
    max_batch: usize,
) -> BatchHandle {
    let (ops, receiver) = mpsc::channel(QUEUE_CAPACITY);
    let writer = BatchWriter {
        db,
        backend,
        events,
        cache,
        watchers,
        max_batch: max_batch.max(1),
    };
    tokio::spawn(writer.run(receiver));
    BatchHandle { ops }
}

// === impl BatchHandle ===

impl BatchHandle {
    pub(super) async fn submit(&self, op: WriteOp) -> Result<(), StoreError> {
        self.ops
            .send(op)
            .await
            .map_err(|_| StoreError::WriterStopped)
    }
}

struct BatchWriter {
    db: DatabaseConnection,
    backend: Backend,
    events: StoreEvents,
    cache: TaskCache,
    watchers: Watchers,
    max_batch: usize,
}

struct InsertReply {
    reply: oneshot::Sender<Result<Enqueued, StoreError>>,
}

/// What a committed batch tells the rest of the process.
#[derive(Default)]
struct Committed {
    queued: bool,
    cancelled: Vec<CancelNotice>,
}

// === impl BatchWriter ===

impl BatchWriter {
    async fn run(self, mut receiver: mpsc::Receiver<WriteOp>) {
        let mut ops = Vec::with_capacity(self.max_batch);
        while receiver.recv_many(&mut ops, self.max_batch).await > 0 {
            self.write(std::mem::take(&mut ops)).await;
        }
    }

    async fn write(&self, ops: Vec<WriteOp>) {
        let mut inserts = Vec::new();
        let mut insert_replies = Vec::new();
        let mut transitions = Vec::new();
        let mut claims = Vec::new();
        for op in ops {
            match op {
                WriteOp::Insert {
                    spec,
                    max_attempts,
                    reply,
                } => {
                    inserts.push((spec, max_attempts));
                    insert_replies.push(InsertReply { reply });
                }
                WriteOp::Transition { change, reply } => transitions.push((change, reply)),
                WriteOp::Claim { request, reply } => claims.push((request, reply)),
            }
        }
        // rows are locked in task id order, so that the batches of two replicas
        // meet in the same order instead of deadlocking (a deadlock with a
        // lease renewal, which locks rows as it finds them, is run again)
        transitions.sort_by_key(|(change, _)| change.task_id);
        let changes: Vec<&Transition> = transitions.iter().map(|(change, _)| change).collect();
        let claim_requests: Vec<&ClaimRequest> =
            claims.iter().map(|(request, _)| request).collect();
        let Written {
            inserted,
            transitioned,
            claimed,
        } = write::write_batch(
            &self.db,
            write::Batch {
                inserts: &inserts,
                changes: &changes,
                claims: &claim_requests,
            },
            now_micros(),
        )
        .await;
        let committed = Committed {
            queued: inserted
                .iter()
                .any(|outcome| matches!(outcome, Ok(e) if e.created)),
            cancelled: transitioned
                .iter()
                .filter_map(|outcome| outcome.as_ref().ok().and_then(|(_, notice)| *notice))
                .collect(),
        };
        for enqueued in inserted.iter().flatten().filter(|e| e.created) {
            self.cache.put(&enqueued.task);
        }
        // a new task has no watchers yet (nobody knew its id): only changes
        // are published
        for (task, _) in transitioned.iter().flatten() {
            self.cache.put(task);
            self.watchers.publish(task);
            crate::metrics::finished(task);
        }
        for task in claimed.iter().flatten().flatten() {
            self.cache.put(task);
            self.watchers.publish(task);
            crate::metrics::claimed(task);
        }
        for (outcome, waiting) in inserted.into_iter().zip(insert_replies) {
            let _ = waiting.reply.send(outcome);
        }
        for (outcome, (_, reply)) in transitioned.into_iter().zip(transitions) {
            let _ = reply.send(outcome.map(|(task, _)| task));
        }
        for (outcome, (_, reply)) in claimed.into_iter().zip(claims) {
            let _ = reply.send(outcome);
        }
        if committed.queued {
            self.events.task_queued.notify_one();
        }
        for notice in &committed.cancelled {
            let _ = self.events.task_cancelled.send(*notice);
        }
        // after the answers: a client waits for its commit, not for the
        // other replicas to hear of it
        if let Err(error) = self.notify_replicas(&committed).await {
            warn!(%error, "could not notify other intake replicas; they recheck within seconds");
        }
    }

    /// Tells the other replicas' dispatchers (Postgres LISTEN/NOTIFY) what the
    /// committed batch changed.
    async fn notify_replicas(&self, committed: &Committed) -> Result<(), DbErr> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        if committed.queued {
            self.db
                .execute_unprepared("SELECT pg_notify('jct_task_queued', '')")
                .await?;
        }
        for notice in &committed.cancelled {
            let payload = format!("{}:{}", notice.task_id, notice.lease_token);
            self.db
                .execute_raw(sea_orm::Statement::from_sql_and_values(
                    sea_orm::DatabaseBackend::Postgres,
                    "SELECT pg_notify('jct_task_cancelled', $1)",
                    [payload.into()],
                ))
                .await?;
        }
        Ok(())
    }
}
