//! The audit trail's rows. Task changes are written by database triggers in the
//! transaction of the change (migration m20261203_000400); this module adds the
//! refused calls, already aggregated by the caller, and reads the trail newest
//! first.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query};
use sea_orm::{ConnectionTrait, FromQueryResult};
use uuid::Uuid;

use super::{Store, StoreError};

/// One row of the trail.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct AuditEvent {
    pub id: i64,
    /// Microseconds since the Unix epoch.
    pub at: i64,
    pub principal: String,
    pub method: String,
    pub action: String,
    pub task_id: Option<Uuid>,
    pub reason: Option<String>,
    /// How many refused calls this row stands for (1 for a change).
    pub count: i64,
    /// The worker an `attached` / `detached` event is about.
    pub worker_id: Option<String>,
}

/// A worker came or went on a dispatch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEvent {
    pub at: i64,
    /// The authenticated principal the session belongs to.
    pub principal: String,
    pub worker_id: String,
    /// `attached` or `detached`.
    pub action: &'static str,
    /// Why a session ended (`stream_closed`, `replaced`, `intake_shutdown`).
    pub reason: Option<&'static str>,
}

/// The method worker events are recorded under.
pub const ATTACH_METHOD: &str = "/jct.v1.DispatchService/Attach";

/// Refused calls of one principal, method and reason, counted over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub at: i64,
    pub principal: String,
    pub method: String,
    /// `denied` (auth) or `rejected` (an Enqueue the gate refused).
    pub action: &'static str,
    pub reason: String,
    pub count: i64,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub principal: Option<String>,
    pub task_id: Option<Uuid>,
}

/// The table and its columns (they have no entity: rows are written by triggers
/// and by [`Store::record_refused`] only).
fn name(name: &'static str) -> Alias {
    Alias::new(name)
}

impl Store {
    pub async fn record_refused(&self, rows: &[Refused]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = Query::insert();
        insert.into_table(name("audit_events")).columns([
            name("at"),
            name("principal"),
            name("method"),
            name("action"),
            name("reason"),
            name("count"),
        ]);
        for row in rows {
            insert.values_panic([
                row.at.into(),
                row.principal.clone().into(),
                row.method.clone().into(),
                row.action.into(),
                row.reason.clone().into(),
                row.count.into(),
            ]);
        }
        self.writer.execute(&insert).await?;
        Ok(())
    }

    /// Records a worker's attach or detach; durable when this returns.
    pub async fn record_worker_event(&self, event: &WorkerEvent) -> Result<(), StoreError> {
        let mut insert = Query::insert();
        insert
            .into_table(name("audit_events"))
            .columns([
                name("at"),
                name("principal"),
                name("method"),
                name("action"),
                name("reason"),
                name("count"),
                name("worker_id"),
            ])
            .values_panic([
                event.at.into(),
                event.principal.clone().into(),
                ATTACH_METHOD.into(),
                event.action.into(),
                event.reason.map(str::to_string).into(),
                1i64.into(),
                event.worker_id.clone().into(),
            ]);
        self.writer.execute(&insert).await?;
        Ok(())
    }

    /// Newest first, strictly older than `before`.
    pub async fn audit_events(
        &self,
        filter: &AuditFilter,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut query = Query::select();
        query
            .columns([
                name("id"),
                name("at"),
                name("principal"),
                name("method"),
                name("action"),
                name("task_id"),
                name("reason"),
                name("count"),
                name("worker_id"),
            ])
            .from(name("audit_events"))
            .order_by(name("id"), Order::Desc)
            .limit(limit);
        if let Some(principal) = &filter.principal {
            query.and_where(Expr::col(name("principal")).eq(principal.as_str()));
        }
        if let Some(task_id) = filter.task_id {
            query.and_where(Expr::col(name("task_id")).eq(task_id));
        }
        if let Some(before) = before {
            query.and_where(Expr::col(name("id")).lt(before));
        }
        let rows = self.reader.query_all(&query).await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            events.push(AuditEvent::from_query_result(&row, "")?);
        }
        Ok(events)
    }
}
