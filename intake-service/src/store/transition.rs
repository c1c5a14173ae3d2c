//! Status changes, each one guarded `UPDATE … RETURNING`: the row changes only if
//! it is in a status the state machine allows and, for a worker's report, still
//! under the lease the worker presents. Concurrent changes cannot both win.

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, EntityTrait, FromQueryResult};
use serde_json::{Map, Value as Json};
use uuid::Uuid;

use crate::task::{Status, Task, TaskError};

use super::entity::{Column, Entity, Model, object_text};
use super::status_literal::{status_in, status_is};
use super::{CancelNotice, StoreError};

/// A requested status change.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub task_id: Uuid,
    pub to: Status,
    pub result: Option<Map<String, Json>>,
    pub error: Option<TaskError>,
    pub trace_uri: Option<String>,
    /// The lease a worker presents; `None` for a client.
    pub lease_token: Option<Uuid>,
    /// Who asks for the change, and through which method (the audit trail).
    pub actor: Option<Actor>,
}

/// The principal and gRPC method behind a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub principal: String,
    pub method: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("task not found")]
    NotFound,
    #[error("a {from} task cannot become {to}")]
    Invalid { from: Status, to: Status },
    #[error("the lease is not the task's current lease")]
    LeaseLost { holder: Option<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TransitionError {
    /// Whether the same change may succeed later (only a store that cannot
    /// answer now, or is stopping, is worth a retry).
    pub fn is_retryable(&self) -> bool {
        matches!(self, TransitionError::Store(error) if error.is_retryable() || matches!(error, StoreError::WriterStopped))
    }
}

pub(super) async fn apply(
    txn: &impl ConnectionTrait,
    change: &Transition,
    now: i64,
) -> Result<Result<(Task, Option<CancelNotice>), TransitionError>, StoreError> {
    if let Some(confirmed) = confirm_cancellation(txn, change, now).await? {
        return Ok(Ok((confirmed, None)));
    }
    let mut update = Query::update();
    update
        .table(Entity)
        .value(Column::UpdatedAt, now)
        .and_where(Expr::col(Column::Id).eq(change.task_id))
        .returning_all();
    if let Some(trace_uri) = &change.trace_uri {
        update.value(Column::TraceUri, trace_uri.clone());
    }
    update
        .value(
            Column::ChangedBy,
            change.actor.as_ref().map(|a| a.principal.clone()),
        )
        .value(
            Column::ChangedVia,
            change.actor.as_ref().map(|a| a.method.to_string()),
        );

    let leased_report = change.to == Status::Running && change.lease_token.is_some();
    if leased_report {
        // a claim already made the task running; the worker's report confirms it
        update.and_where(status_is(Status::Running));
    } else {
        let sources = change.to.sources();
        if sources.is_empty() {
            return Ok(Err(classify(txn, change).await?));
        }
        update
            .value(Column::Status, change.to.as_str())
            .and_where(status_in(&sources));
    }

    match change.to {
        Status::Running if !leased_report => {
            update
                .value(Column::StartedAt, now)
                .value(Column::Attempt, Expr::col(Column::Attempt).add(1));
        }
        Status::Completed | Status::Failed | Status::Cancelled => {
            update
                .value(Column::CompletedAt, now)
                .value(Column::LeaseExpiresAt, Option::<i64>::None)
                .value(Column::Result, change.result.as_ref().map(object_text))
                .value(
                    Column::ErrorCode,
                    change.error.as_ref().map(|e| e.code.clone()),
                )
                .value(
                    Column::ErrorMessage,
                    change.error.as_ref().map(|e| e.message.clone()),
                );
        }
        _ => {}
    }

    // Cancellation is the client's; every other change is fenced by the lease.
    if change.to != Status::Cancelled {
        match change.lease_token {
            Some(token) => update.and_where(Expr::col(Column::LeaseToken).eq(token)),
            None => update.and_where(Expr::col(Column::LeaseToken).is_null()),
        };
    }

    let Some(row) = txn.query_one(&update).await? else {
        return Ok(Err(classify(txn, change).await?));
    };
    let model = Model::from_query_result(&row, "")?;
    let notice = match (change.to, model.lease_token) {
        (Status::Cancelled, Some(lease_token)) if model.worker_id.is_some() => Some(CancelNotice {
            task_id: model.id,
            lease_token,
        }),
        _ => None,
    };
    Ok(model
        .into_task()
        .map(|task| (task, notice))
        .map_err(TransitionError::Store))
}

/// A worker confirming, under its lease, that it stopped a task a client
/// cancelled: nothing changes but the trace location, which the task keeps if the
/// worker's earlier `running` report lost the race with the cancellation.
async fn confirm_cancellation(
    txn: &impl ConnectionTrait,
    change: &Transition,
    now: i64,
) -> Result<Option<Task>, StoreError> {
    let (Status::Cancelled, Some(lease_token)) = (change.to, change.lease_token) else {
        return Ok(None);
    };
    let mut update = Query::update();
    update
        .table(Entity)
        .value(Column::UpdatedAt, now)
        .and_where(Expr::col(Column::Id).eq(change.task_id))
        .and_where(status_is(Status::Cancelled))
        .and_where(Expr::col(Column::LeaseToken).eq(lease_token))
        .returning_all();
    if let Some(trace_uri) = &change.trace_uri {
        update.value(
            Column::TraceUri,
            Expr::col(Column::TraceUri).if_null(trace_uri.clone()),
        );
    }
    let Some(row) = txn.query_one(&update).await? else {
        return Ok(None);
    };
    Model::from_query_result(&row, "")?.into_task().map(Some)
}

/// Why a guarded update changed nothing.
async fn classify(
    txn: &impl ConnectionTrait,
    change: &Transition,
) -> Result<TransitionError, StoreError> {
    let Some(current) = Entity::find_by_id(change.task_id).one(txn).await? else {
        return Ok(TransitionError::NotFound);
    };
    let Some(from) = Status::parse(&current.status) else {
        return Ok(TransitionError::Store(StoreError::Corrupt(format!(
            "task {}: unknown status {:?}",
            current.id, current.status
        ))));
    };
    // a worker whose lease is gone (the rescuer queued the task again, another
    // worker runs it) learns that, not that `queued → completed` is invalid;
    // a finished task stays an invalid transition for everyone
    if let Some(presented) = change.lease_token
        && current.lease_token != Some(presented)
        && !from.is_terminal()
    {
        return Ok(TransitionError::LeaseLost {
            holder: current.worker_id,
        });
    }
    let reportable = from.can_move_to(change.to)
        || (from == Status::Running
            && change.to == Status::Running
            && change.lease_token.is_some());
    if !reportable {
        return Ok(TransitionError::Invalid {
            from,
            to: change.to,
        });
    }
    Ok(TransitionError::LeaseLost {
        holder: current.worker_id,
    })
}
