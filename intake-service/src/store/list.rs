//! Pages of tasks, bounded in bytes as well as in tasks.
//!
//! A task's inputs, metadata and result may be megabytes each, so a page of
//! `limit` whole rows could be gigabytes; reading them all and trimming the
//! answer afterwards would already have spent that memory. A page is therefore
//! read in two steps: the ids and stored sizes of up to `limit` matching tasks
//! (a few bytes a row), then only the rows that fit the byte budget — the first
//! always, so paging moves on past a task larger than the budget.
//!
//! The basic view never reads the three payload columns at all.

use sea_orm::sea_query::{Expr, ExprTrait, SimpleExpr};
use sea_orm::{EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select};
use uuid::Uuid;

use crate::task::{Status, Task};

use super::entity::{Column, Entity, Model};
use super::status_literal::status_is;
use super::{Backend, ListFilter, Store, StoreError};

/// How much of each task a page holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListView {
    /// The whole task.
    #[default]
    Full,
    /// Everything but `inputs`, `metadata` and `result` (left empty).
    Basic,
}

/// A page as read from the database, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub tasks: Vec<Task>,
    /// Whether tasks matching the filter are left after the last one.
    pub more: bool,
}

/// Besides the columns measured, a task's short fields (ids, names, times): all
/// are bounded by the text rules to a few hundred bytes.
const ROW_OVERHEAD_BYTES: i64 = 512;

impl Store {
    /// Newest first (ids are time-ordered UUIDv7), strictly older than `before`:
    /// a keyset page, so inserts while paging shift nothing. At most `limit`
    /// tasks, and no more than fit `max_bytes` of stored text (but at least one).
    pub async fn list(
        &self,
        filter: &ListFilter,
        before: Option<Uuid>,
        limit: u64,
        view: ListView,
        max_bytes: u64,
    ) -> Result<ListPage, StoreError> {
        let sizes = matching(filter, before)
            .select_only()
            .column(Column::Id)
            .column_as(stored_bytes(self.backend, view), "bytes")
            .order_by_desc(Column::Id)
            .limit(limit.saturating_add(1))
            .into_tuple::<(Uuid, i64)>()
            .all(&self.reader)
            .await?;
        let fits = fitting(&sizes, limit, max_bytes);
        let more = sizes.len() > fits;
        if fits == 0 {
            return Ok(ListPage::default());
        }
        let ids: Vec<Uuid> = sizes[..fits].iter().map(|(id, _)| *id).collect();
        let rows = Entity::find().filter(Expr::col(Column::Id).is_in(ids.clone()));
        let models = match view {
            ListView::Full => rows.order_by_desc(Column::Id).all(&self.reader).await?,
            ListView::Basic => {
                without_payloads(rows)
                    .order_by_desc(Column::Id)
                    .into_model::<Model>()
                    .all(&self.reader)
                    .await?
            }
        };
        let mut tasks = Vec::with_capacity(models.len());
        for model in models {
            tasks.push(model.into_task()?);
        }
        Ok(ListPage { tasks, more })
    }
}

/// The tasks a filter and a page position select.
fn matching(filter: &ListFilter, before: Option<Uuid>) -> Select<Entity> {
    let mut query = Entity::find();
    let filters = [
        (Column::SubmittedBy, &filter.submitted_by),
        (Column::Status, &filter.status),
        (Column::Operation, &filter.operation),
        (Column::RequestedByKind, &filter.requester_kind),
        (Column::TargetRepo, &filter.target_repo),
    ];
    for (column, value) in filters {
        let Some(value) = value else { continue };
        // a known status as a literal (see `status_literal`); anything else
        // matches no row, bound as a value
        match Status::parse(value).filter(|_| matches!(column, Column::Status)) {
            Some(status) => query = query.filter(status_is(status)),
            None => query = query.filter(Expr::col(column).eq(value.as_str())),
        }
    }
    if let Some(before) = before {
        query = query.filter(Expr::col(Column::Id).lt(before));
    }
    query
}

/// How many of the first `limit` rows fit `max_bytes`: at least one, so a task
/// larger than the budget is a page of its own instead of a page never passed.
fn fitting(sizes: &[(Uuid, i64)], limit: u64, max_bytes: u64) -> usize {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut total: u64 = 0;
    let mut fits = 0;
    for (_, bytes) in sizes.iter().take(limit) {
        total = total.saturating_add(u64::try_from(*bytes).unwrap_or(0));
        if fits > 0 && total > max_bytes {
            break;
        }
        fits += 1;
    }
    fits
}

/// The stored bytes of the columns a view returns that may be large, plus the
/// rest as a constant. Bytes, not characters: SQLite's `length` of text counts
/// characters, of a blob bytes.
fn stored_bytes(backend: Backend, view: ListView) -> SimpleExpr {
    let columns: &[&str] = match view {
        ListView::Full => &["objective", "error_message", "inputs", "metadata", "result"],
        ListView::Basic => &["objective", "error_message"],
    };
    let measured: Vec<String> = columns
        .iter()
        .map(|column| match backend {
            Backend::Sqlite => format!("COALESCE(LENGTH(CAST({column} AS BLOB)), 0)"),
            Backend::Postgres => format!("COALESCE(OCTET_LENGTH({column}), 0)"),
        })
        .collect();
    // on Postgres the sum of int4 lengths is int4; a bigint keeps the tuple's i64
    let sql = match backend {
        Backend::Sqlite => format!("({} + {ROW_OVERHEAD_BYTES})", measured.join(" + ")),
        Backend::Postgres => format!(
            "CAST({} + {ROW_OVERHEAD_BYTES} AS BIGINT)",
            measured.join(" + ")
        ),
    };
    Expr::cust(sql)
}

/// The row with its three payload columns replaced by empty values, so the
/// database never sends them.
fn without_payloads(query: Select<Entity>) -> Select<Entity> {
    use sea_orm::Iterable;
    let kept = Column::iter()
        .filter(|column| !matches!(column, Column::Inputs | Column::Metadata | Column::Result));
    query
        .select_only()
        .columns(kept)
        .column_as(Expr::val("{}"), "inputs")
        .column_as(Expr::val("{}"), "metadata")
        .column_as(Expr::cust("NULL"), "result")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(bytes: &[i64]) -> Vec<(Uuid, i64)> {
        bytes.iter().map(|b| (Uuid::now_v7(), *b)).collect()
    }

    #[test]
    fn a_page_takes_what_fits_and_at_least_one() {
        assert_eq!(fitting(&sizes(&[10, 10, 10]), 2, 100), 2);
        assert_eq!(fitting(&sizes(&[10, 10, 10]), 5, 25), 2);
        assert_eq!(fitting(&sizes(&[500, 10]), 5, 100), 1, "a big task alone");
        assert_eq!(fitting(&sizes(&[]), 5, 100), 0);
        assert_eq!(fitting(&sizes(&[10, 10]), 0, 100), 0);
    }
}
