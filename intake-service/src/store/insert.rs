//! Inserting a batch of new tasks in one statement, with idempotency decided by the
//! unique index on `(submitted_by, idempotency_key)`: `ON CONFLICT DO NOTHING`
//! makes exactly one of any number of racing inserts win, on both backends and
//! across replicas. A key belongs to the principal that used it: another
//! principal's same key is another task.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryTrait};
use uuid::Uuid;

use crate::task::{Status, Task, TaskSpec};

use super::StoreError;
use super::entity::{Column, Entity, Model};

/// The answer to an enqueue.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub task: Task,
    /// False when the idempotency key returned an existing task.
    pub created: bool,
}

/// Where a request in a batch stands before the database is asked.
enum Role {
    /// Inserted with this row index.
    Leader(usize),
    /// Same idempotency key as an earlier request of the batch (by index).
    Follower(usize),
}

pub(super) async fn insert_batch(
    txn: &impl ConnectionTrait,
    requests: &[(TaskSpec, i32)],
    now: i64,
) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
    let mut roles = Vec::with_capacity(requests.len());
    let mut leaders_by_key: HashMap<(&str, &str), usize> = HashMap::new();
    let mut rows = Vec::with_capacity(requests.len());
    for (index, (spec, max_attempts)) in requests.iter().enumerate() {
        if let Some(key) = spec.idempotency_key.as_deref() {
            let key = (spec.submitted_by.as_str(), key);
            if let Some(&leader) = leaders_by_key.get(&key) {
                roles.push(Role::Follower(leader));
                continue;
            }
            leaders_by_key.insert(key, index);
        }
        roles.push(Role::Leader(rows.len()));
        rows.push(Model::new_queued(Uuid::now_v7(), spec, *max_attempts, now));
    }

    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let mut statement =
        Entity::insert_many(rows.into_iter().map(IntoActiveModel::into_active_model)).into_query();
    statement
        .on_conflict(
            OnConflict::columns([Column::SubmittedBy, Column::IdempotencyKey])
                .do_nothing()
                .to_owned(),
        )
        .returning_col(Column::Id);
    let mut inserted = std::collections::HashSet::with_capacity(ids.len());
    for row in txn.query_all(&statement).await? {
        inserted.insert(row.try_get::<Uuid>("", "id")?);
    }

    // Keys whose insert lost to a row stored earlier (or by a concurrent replica).
    let lost_keys: Vec<(&str, &str)> = roles
        .iter()
        .zip(requests)
        .filter_map(|(role, (spec, _))| match role {
            Role::Leader(row) if !inserted.contains(&ids[*row]) => spec
                .idempotency_key
                .as_deref()
                .map(|key| (spec.submitted_by.as_str(), key)),
            _ => None,
        })
        .collect();
    let existing = load_by_keys(txn, &lost_keys).await?;

    let mut outcomes: Vec<Result<Enqueued, StoreError>> = Vec::with_capacity(requests.len());
    for (index, role) in roles.iter().enumerate() {
        let (spec, max_attempts) = &requests[index];
        let outcome = match role {
            Role::Leader(row) if inserted.contains(&ids[*row]) => Ok(Enqueued {
                task: queued_task(ids[*row], spec, *max_attempts, now),
                created: true,
            }),
            Role::Leader(_) => {
                let key = spec.idempotency_key.as_deref().unwrap_or_default();
                match existing.get(&(spec.submitted_by.clone(), key.to_string())) {
                    Some(stored) => same_or_conflict(stored.clone(), spec),
                    None => Err(StoreError::Corrupt(format!(
                        "idempotency key {key:?} conflicted but no task holds it"
                    ))),
                }
            }
            Role::Follower(leader) => match &outcomes[*leader] {
                Ok(first) => same_or_conflict(first.task.clone(), spec),
                Err(_) => Err(StoreError::Corrupt(
                    "the first request with this key failed".into(),
                )),
            },
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

fn same_or_conflict(stored: Task, spec: &TaskSpec) -> Result<Enqueued, StoreError> {
    if stored.spec.same_request_as(spec) {
        Ok(Enqueued {
            task: stored,
            created: false,
        })
    } else {
        Err(StoreError::IdempotencyConflict {
            existing: stored.id,
        })
    }
}

/// The stored tasks of `(submitted_by, idempotency_key)` pairs.
async fn load_by_keys(
    txn: &impl ConnectionTrait,
    keys: &[(&str, &str)],
) -> Result<HashMap<(String, String), Task>, StoreError> {
    let mut by_key = HashMap::with_capacity(keys.len());
    if keys.is_empty() {
        return Ok(by_key);
    }
    // one query for the keys; another principal's rows with the same key are
    // read and left out
    let models = Entity::find()
        .filter(Expr::col(Column::IdempotencyKey).is_in(keys.iter().map(|(_, key)| *key)))
        .all(txn)
        .await?;
    for model in models {
        let key = (
            model.submitted_by.clone(),
            model.idempotency_key.clone().unwrap_or_default(),
        );
        if !keys.contains(&(key.0.as_str(), key.1.as_str())) {
            continue;
        }
        let task = model.into_task()?;
        by_key.insert(key, task);
    }
    Ok(by_key)
}

/// The task exactly as `Model::new_queued` stores it, without reading it back.
fn queued_task(id: Uuid, spec: &TaskSpec, max_attempts: i32, now: i64) -> Task {
    Task {
        id,
        spec: spec.clone(),
        status: Status::Queued,
        created_at: now,
        queued_at: Some(now),
        started_at: None,
        completed_at: None,
        updated_at: now,
        attempt: 0,
        max_attempts,
        worker_id: None,
        lease: None,
        trace_uri: None,
        result: None,
        error: None,
    }
}
