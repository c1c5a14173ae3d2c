//! Writing one batch so that a request the database refuses fails alone.
//!
//! The fast path writes the whole batch as it came: all inserts in one statement,
//! every status change after it, then the claims, in one transaction. The
//! claims come last so that they may take tasks enqueued in the same batch.
//! When that fails for a reason other than the database being unavailable, some
//! request in the batch carries something the database refuses (a NUL in text on
//! Postgres, a value a constraint rejects). The batch is then written again one
//! request at a time, each inside a savepoint of a single transaction: the
//! refused request rolls back to its savepoint and gets its error, the rest
//! commit together. This costs one more transaction and a savepoint per request,
//! only for a batch that held a refused request; the clean path pays nothing.
//! (Bisection would need about 2·log2(n) commits, each a flush, per bad request.)
//!
//! A batch of one statement (only inserts: they are one statement) commits by
//! itself, without a transaction: a refused multi-row insert is then retried
//! row by row, each row committing alone, and needs no savepoints.

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};
use tracing::warn;

use crate::task::{Task, TaskSpec};

use super::error::retrying_conflicts;
use super::insert::{self, Enqueued};
use super::lease::{self, ClaimRequest};
use super::transition::{self, Transition, TransitionError};
use super::{CancelNotice, StoreError};

/// The requests of one batch, by kind.
#[derive(Clone, Copy)]
pub(super) struct Batch<'a> {
    pub inserts: &'a [(TaskSpec, i32)],
    pub changes: &'a [&'a Transition],
    pub claims: &'a [&'a ClaimRequest],
}

/// Each request's outcome, in the order the requests came.
pub(super) struct Written {
    pub inserted: Vec<Result<Enqueued, StoreError>>,
    pub transitioned: Vec<Result<(Task, Option<CancelNotice>), TransitionError>>,
    pub claimed: Vec<Result<Vec<Task>, StoreError>>,
}

impl Written {
    fn all_failed(error: &StoreError, batch: Batch<'_>) -> Written {
        Written {
            inserted: batch
                .inserts
                .iter()
                .map(|_| Err(error.duplicate()))
                .collect(),
            transitioned: batch
                .changes
                .iter()
                .map(|_| Err(TransitionError::Store(error.duplicate())))
                .collect(),
            claimed: batch
                .claims
                .iter()
                .map(|_| Err(error.duplicate()))
                .collect(),
        }
    }
}

pub(super) async fn write_batch(db: &DatabaseConnection, batch: Batch<'_>, now: i64) -> Written {
    // A batch with a single write statement (all its inserts are one statement)
    // never needs a transaction. Several statements share one, on SQLite too:
    // each commit appends every page it changed to the WAL, and the claims and
    // completions of one batch change the same index and audit pages (one
    // transaction cut the WAL writes per task from 32 to 9 in the drain and took
    // the intake's CPU per task from about 800 to 600-700 µs).
    let write_statements =
        usize::from(!batch.inserts.is_empty()) + batch.changes.len() + batch.claims.len();
    if write_statements <= 1 {
        return autocommitted(db, batch, now).await;
    }
    // a transaction aborted to break a deadlock with another writer (a lease
    // renewal, another replica's batch) runs again rather than fail everyone
    let error = match retrying_conflicts(|| grouped(db, batch, now)).await {
        Ok(written) => return written,
        Err(error) if error.is_retryable() => return Written::all_failed(&error, batch),
        Err(error) => error,
    };
    warn!(%error, requests = write_statements, "write batch refused; writing its requests one by one");
    match isolated(db, batch, now).await {
        Ok(written) => written,
        Err(error) => Written::all_failed(&error, batch),
    }
}

/// The fast path: the whole batch in one transaction; any failure fails it all.
async fn grouped(
    db: &DatabaseConnection,
    batch: Batch<'_>,
    now: i64,
) -> Result<Written, StoreError> {
    let txn = db.begin().await?;
    let inserted = if batch.inserts.is_empty() {
        Vec::new()
    } else {
        insert::insert_batch(&txn, batch.inserts, now).await?
    };
    let mut transitioned = Vec::with_capacity(batch.changes.len());
    for change in batch.changes {
        transitioned.push(transition::apply(&txn, change, now).await?);
    }
    let mut claimed = Vec::with_capacity(batch.claims.len());
    for request in batch.claims {
        claimed.push(Ok(lease::claim(&txn, request, now).await?));
    }
    txn.commit().await?;
    Ok(Written {
        inserted,
        transitioned,
        claimed,
    })
}

/// One transaction, each request in its own savepoint. Fails as a whole only if
/// the transaction itself cannot commit.
async fn isolated(
    db: &DatabaseConnection,
    batch: Batch<'_>,
    now: i64,
) -> Result<Written, StoreError> {
    let Batch {
        inserts,
        changes,
        claims,
    } = batch;
    let txn = db.begin().await?;
    let mut inserted = Vec::with_capacity(inserts.len());
    for request in inserts {
        let savepoint = txn.begin().await?;
        let outcome = insert_one(&savepoint, request, now).await;
        settle(savepoint, outcome.is_ok()).await?;
        inserted.push(outcome.and_then(|enqueued| enqueued));
    }
    let mut transitioned = Vec::with_capacity(changes.len());
    for change in changes {
        let savepoint = txn.begin().await?;
        let outcome = transition::apply(&savepoint, change, now).await;
        settle(savepoint, outcome.is_ok()).await?;
        transitioned.push(outcome.unwrap_or_else(|error| Err(TransitionError::Store(error))));
    }
    let mut claimed = Vec::with_capacity(claims.len());
    for request in claims {
        let savepoint = txn.begin().await?;
        let outcome = lease::claim(&savepoint, request, now).await;
        settle(savepoint, outcome.is_ok()).await?;
        claimed.push(outcome);
    }
    txn.commit().await?;
    Ok(Written {
        inserted,
        transitioned,
        claimed,
    })
}

/// Releases a savepoint whose statement succeeded, rolls back one that failed.
async fn settle(savepoint: DatabaseTransaction, succeeded: bool) -> Result<(), StoreError> {
    if succeeded {
        savepoint.commit().await?;
    } else {
        savepoint.rollback().await?;
    }
    Ok(())
}

/// Without a transaction every statement commits alone: a refused multi-row
/// insert is retried row by row, and each status change stands by itself.
async fn autocommitted(db: &DatabaseConnection, batch: Batch<'_>, now: i64) -> Written {
    let Batch {
        inserts,
        changes,
        claims,
    } = batch;
    let inserted = match inserts {
        [] => Vec::new(),
        [single] => vec![insert_one(db, single, now).await.and_then(|e| e)],
        _ => match insert::insert_batch(db, inserts, now).await {
            Ok(inserted) => inserted,
            Err(error) if error.is_retryable() => {
                inserts.iter().map(|_| Err(error.duplicate())).collect()
            }
            Err(error) => {
                warn!(%error, requests = inserts.len(), "insert batch refused; inserting one by one");
                let mut inserted = Vec::with_capacity(inserts.len());
                for request in inserts {
                    inserted.push(insert_one(db, request, now).await.and_then(|e| e));
                }
                inserted
            }
        },
    };
    let mut transitioned = Vec::with_capacity(changes.len());
    for change in changes {
        transitioned.push(
            transition::apply(db, change, now)
                .await
                .unwrap_or_else(|error| Err(TransitionError::Store(error))),
        );
    }
    let mut claimed = Vec::with_capacity(claims.len());
    for request in claims {
        claimed.push(lease::claim(db, request, now).await);
    }
    Written {
        inserted,
        transitioned,
        claimed,
    }
}

/// Inserts one request; the outer error is the statement's, the inner the
/// request's answer (an idempotency conflict).
async fn insert_one(
    db: &impl ConnectionTrait,
    request: &(TaskSpec, i32),
    now: i64,
) -> Result<Result<Enqueued, StoreError>, StoreError> {
    let mut outcomes = insert::insert_batch(db, std::slice::from_ref(request), now).await?;
    Ok(outcomes.pop().unwrap_or_else(|| {
        Err(StoreError::Corrupt(
            "an insert of one request returned no outcome".into(),
        ))
    }))
}
