//! How SQL reaches the partial queue and lease indexes: status conditions
//! written as literals, never as bound parameters, and the index named for
//! SQLite.
//!
//! The queue and lease indexes are partial (`WHERE status = 'queued'`, `WHERE
//! status = 'running'`). When a statement compares `status` with a bound
//! parameter, SQLite's planner reads the parameter's value to decide whether a
//! partial index applies and marks the prepared statement to be prepared again
//! whenever that parameter is bound anew: every status change was parsed and
//! planned afresh (`sqlite3Reprepare` and its parser were 15 % of the intake's
//! CPU in the drain benchmark). Postgres's generic plans cannot use a partial
//! index through a parameter at all. Statuses are a closed set of lowercase
//! words ([`Status::as_str`]), so writing them into the SQL is safe.

use sea_orm::DatabaseBackend;
use sea_orm::sea_query::{Expr, SimpleExpr};

use crate::task::Status;

/// `status = '<status>'`.
pub(super) fn status_is(status: Status) -> SimpleExpr {
    Expr::cust(format!("status = '{}'", status.as_str()))
}

/// `status IN ('<a>', '<b>', …)`; `statuses` must not be empty.
pub(super) fn status_in(statuses: &[Status]) -> SimpleExpr {
    let list: Vec<String> = statuses
        .iter()
        .map(|status| format!("'{}'", status.as_str()))
        .collect();
    Expr::cust(format!("status IN ({})", list.join(", ")))
}

/// `INDEXED BY` for SQLite, whose planner (without statistics) prefers
/// `ix_tasks_status_id` and sorts every queued or running task over reading
/// the partial index in order; Postgres's planner picks the partial index.
/// The queries spell the status as a literal, so the partial index applies.
pub(super) fn indexed_by(backend: DatabaseBackend, index: &str) -> String {
    match backend {
        DatabaseBackend::Sqlite => format!(" INDEXED BY {index}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::sea_query::{Query, SqliteQueryBuilder};

    #[test]
    fn statuses_are_written_as_literals() {
        let sql = Query::select()
            .expr(Expr::val(1))
            .and_where(status_is(Status::Running))
            .and_where(status_in(&[Status::Queued, Status::Running]))
            .to_string(SqliteQueryBuilder);
        assert!(
            sql.ends_with("WHERE (status = 'running') AND (status IN ('queued', 'running'))"),
            "{sql}"
        );
    }

    /// Every status spelling is a plain word, so no quoting is needed.
    #[test]
    fn every_status_is_a_plain_word() {
        for status in Status::ALL {
            assert!(
                status
                    .as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                status.as_str()
            );
        }
    }
}
