//! Reads: one task, counts by status, the oldest queued (pages of tasks:
//! [`super::list`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ConnectionTrait, EntityTrait, QuerySelect, Statement};
use uuid::Uuid;

use crate::task::{Micros, Status, Task};

use super::entity::{Column, Entity};
use super::{Store, StoreError};

/// Exact-match filters on stored, normalized values; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ListFilter {
    /// Only the tasks of this principal (a submitter's view).
    pub submitted_by: Option<String>,
    pub status: Option<String>,
    pub operation: Option<String>,
    pub requester_kind: Option<String>,
    pub target_repo: Option<String>,
}

/// Tasks per status; every status is present.
pub type StatusCounts = BTreeMap<&'static str, i64>;

// === impl Store ===

impl Store {
    pub async fn get(&self, id: Uuid) -> Result<Option<Arc<Task>>, StoreError> {
        if let Some(task) = self.cache.get(&id) {
            return Ok(Some(task));
        }
        match Entity::find_by_id(id).one(&self.reader).await? {
            Some(model) => {
                let task = model.into_task()?;
                self.cache.put(&task);
                Ok(Some(Arc::new(task)))
            }
            None => Ok(None),
        }
    }

    pub async fn count_by_status(&self) -> Result<StatusCounts, StoreError> {
        let rows = Entity::find()
            .select_only()
            .column(Column::Status)
            .column_as(Expr::col(Column::Id).count(), "count")
            .group_by(Column::Status)
            .into_tuple::<(String, i64)>()
            .all(&self.reader)
            .await?;
        let mut counts: StatusCounts = Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for (status, count) in rows {
            if let Some(known) = Status::parse(&status) {
                counts.insert(known.as_str(), count);
            }
        }
        Ok(counts)
    }

    /// When the task that has waited longest in the queue entered it (its
    /// `queued_at`: a requeued task waits from its requeue, as the dispatcher
    /// orders them), or `None` when nothing is queued. Exact, and one seek of
    /// `ix_tasks_queue_order` however long the queue is.
    pub async fn oldest_queued_at(&self) -> Result<Option<Micros>, StoreError> {
        let backend = self.reader.get_database_backend();
        let sql = format!(
            "SELECT queued_at FROM tasks{} WHERE status = 'queued' AND queued_at IS NOT NULL \
             ORDER BY queued_at LIMIT 1",
            super::status_literal::indexed_by(backend, "ix_tasks_queue_order")
        );
        let statement = Statement::from_string(backend, sql);
        match self.reader.query_one_raw(statement).await? {
            Some(row) => Ok(row.try_get("", "queued_at")?),
            None => Ok(None),
        }
    }
}
