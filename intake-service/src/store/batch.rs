//! The batching writer: one task per process owns client-facing writes and commits
//! whatever is waiting as one transaction (group commit). While a commit runs, new
//! requests queue; the next transaction takes them all, up to `max_batch`. Under
//! load a commit (and its fsync) is shared by many requests; alone, a request waits
//! for nobody.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::task::{Task, TaskSpec, now_micros};

use super::cache::TaskCache;
use super::connect::Backend;
use super::insert::{self, Enqueued};
use super::transition::{self, Transition, TransitionError};
use super::watch::Watchers;
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
    group_commits: bool,
    max_batch: usize,
) -> BatchHandle {
    let (ops, receiver) = mpsc::channel(QUEUE_CAPACITY);
    let writer = BatchWriter {
        db,
        backend,
        events,
        cache,
        watchers,
        group_commits,
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
    /// Wrap a batch in one transaction (one commit for all its statements).
    group_commits: bool,
    max_batch: usize,
}

struct InsertReply {
    reply: oneshot::Sender<Result<Enqueued, StoreError>>,
}

/// Each request's outcome, in order, and what the batch changed.
type Written = (
    Vec<Result<Enqueued, StoreError>>,
    Vec<Result<(Task, Option<CancelNotice>), TransitionError>>,
    Committed,
);

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
            }
        }
        let changes: Vec<&Transition> = transitions.iter().map(|(change, _)| change).collect();
        match self.commit(&inserts, &changes).await {
            Ok((inserted, transitioned, committed)) => {
                for enqueued in inserted.iter().flatten().filter(|e| e.created) {
                    self.cache.put(&enqueued.task);
                }
                // a new task has no watchers yet (nobody knew its id): only
                // changes are published
                for (task, _) in transitioned.iter().flatten() {
                    self.cache.put(task);
                    self.watchers.publish(task);
                }
                for (outcome, waiting) in inserted.into_iter().zip(insert_replies) {
                    let _ = waiting.reply.send(outcome);
                }
                for (outcome, (_, reply)) in transitioned.into_iter().zip(transitions) {
                    let _ = reply.send(outcome.map(|(task, _)| task));
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
            Err(error) => {
                warn!(%error, requests = inserts.len() + changes.len(), "write batch failed");
                let message = error.to_string();
                let failure = || StoreError::Database(DbErr::Custom(message.clone()));
                for waiting in insert_replies {
                    let _ = waiting.reply.send(Err(failure()));
                }
                for (_, reply) in transitions {
                    let _ = reply.send(Err(TransitionError::Store(failure())));
                }
            }
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

    async fn commit(
        &self,
        inserts: &[(TaskSpec, i32)],
        changes: &[&Transition],
    ) -> Result<Written, DbErr> {
        let now = now_micros();
        // Every write here is one atomic statement (a multi-row insert, a guarded
        // update), so a transaction only buys one commit for several of them. That
        // matters where a commit is a flush (Postgres, SQLite `full`); with SQLite
        // `normal` a commit is a WAL append, and skipping BEGIN/COMMIT saves two
        // round trips to the connection. A batch with a single write statement
        // (all its inserts are one statement) never needs one.
        let write_statements = usize::from(!inserts.is_empty()) + changes.len();
        if !self.group_commits || write_statements <= 1 {
            return self.write_all(&self.db, inserts, changes, now).await;
        }
        let txn = self.db.begin().await?;
        let written = self.write_all(&txn, inserts, changes, now).await?;
        txn.commit().await?;
        Ok(written)
    }

    async fn write_all<C: ConnectionTrait>(
        &self,
        db: &C,
        inserts: &[(TaskSpec, i32)],
        changes: &[&Transition],
        now: i64,
    ) -> Result<Written, DbErr> {
        let inserted = if inserts.is_empty() {
            Vec::new()
        } else {
            insert::insert_batch(db, inserts, now).await?
        };
        let mut transitioned = Vec::with_capacity(changes.len());
        for change in changes {
            transitioned.push(transition::apply(db, change, now).await?);
        }
        let committed = Committed {
            queued: inserted
                .iter()
                .any(|outcome| matches!(outcome, Ok(e) if e.created)),
            cancelled: transitioned
                .iter()
                .filter_map(|outcome| outcome.as_ref().ok().and_then(|(_, notice)| *notice))
                .collect(),
        };
        Ok((inserted, transitioned, committed))
    }
}
