//! Why the store could not answer, classified once: a database error is either
//! worth retrying (the database is unreachable, overloaded or busy), a
//! deterministic refusal of what the request carries (a constraint, an encoding,
//! a value out of range: the same request fails the same way forever), or a fault
//! of ours. Callers decide on the class, never on a message.

use std::path::PathBuf;

use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or cannot serve now (connection, pool
    /// timeout, I/O, lock contention, resources): retrying later may succeed.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] DbErr),
    /// The database refused what this request carries (constraint, encoding,
    /// data): the same request fails the same way every time.
    #[error("the database refused the request: {0}")]
    Rejected(#[source] DbErr),
    /// Any other database failure: a fault of ours, not of the caller.
    #[error("database error: {0}")]
    Internal(#[source] DbErr),
    #[error("the store's writer has stopped")]
    WriterStopped,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("idempotency key was used for a different request (task {existing})")]
    IdempotencyConflict { existing: Uuid },
    #[error("unsupported DATABASE_URL {url:?}: use sqlite:// or postgres://")]
    UnsupportedUrl { url: String },
    #[error("cannot open the lock file {}: {source}", path.display())]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another intake-service is using this SQLite database ({} is locked); \
         SQLite allows one intake, use Postgres for several",
        path.display()
    )]
    Locked { path: PathBuf },
}

/// The class of a database error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Unavailable,
    Rejected,
    Internal,
}

impl StoreError {
    /// Whether the same call may succeed later (the caller may retry it).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Whether Postgres aborted the transaction to break a deadlock or a
    /// serialization conflict with another transaction (SQLSTATE class 40): the
    /// same transaction, run again at once, normally succeeds.
    pub fn is_transaction_conflict(&self) -> bool {
        let StoreError::Unavailable(
            DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error)),
        ) = self
        else {
            return false;
        };
        let sea_orm::sqlx::Error::Database(database) = &**error else {
            return false;
        };
        database
            .try_downcast_ref::<sea_orm::sqlx::postgres::PgDatabaseError>()
            .is_some_and(|pg| pg.code().starts_with("40"))
    }

    /// Whether the request itself is at fault and would fail again unchanged.
    pub fn is_rejected(&self) -> bool {
        matches!(
            self,
            StoreError::Rejected(_) | StoreError::IdempotencyConflict { .. }
        )
    }

    /// A copy for every request of a failed batch (`DbErr` is `Clone`).
    pub(super) fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Unavailable(e) => StoreError::Unavailable(e.clone()),
            StoreError::Rejected(e) => StoreError::Rejected(e.clone()),
            StoreError::Internal(e) => StoreError::Internal(e.clone()),
            StoreError::Corrupt(detail) => StoreError::Corrupt(detail.clone()),
            StoreError::IdempotencyConflict { existing } => StoreError::IdempotencyConflict {
                existing: *existing,
            },
            StoreError::UnsupportedUrl { url } => StoreError::UnsupportedUrl { url: url.clone() },
            StoreError::LockFile { path, source } => StoreError::LockFile {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            StoreError::Locked { path } => StoreError::Locked { path: path.clone() },
            StoreError::WriterStopped => StoreError::WriterStopped,
        }
    }
}

/// Runs of one statement or transaction when Postgres aborts it to break a
/// deadlock (a batch and a lease renewal touching the same running tasks).
const CONFLICT_ATTEMPTS: u32 = 3;

/// Runs `run` again, up to [`CONFLICT_ATTEMPTS`] times in all, while it fails
/// with [`StoreError::is_transaction_conflict`]: the database rolled it back,
/// and running it again at once normally succeeds.
pub(super) async fn retrying_conflicts<T, F, Fut>(mut run: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 1;
    loop {
        match run().await {
            Err(error) if error.is_transaction_conflict() && attempt < CONFLICT_ATTEMPTS => {
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

impl From<DbErr> for StoreError {
    fn from(error: DbErr) -> Self {
        match classify(&error) {
            Class::Unavailable => StoreError::Unavailable(error),
            Class::Rejected => StoreError::Rejected(error),
            Class::Internal => StoreError::Internal(error),
        }
    }
}

/// The one place a database error is classified.
pub fn classify(error: &DbErr) -> Class {
    match error {
        DbErr::ConnectionAcquire(ConnAcquireErr::Timeout | ConnAcquireErr::ConnectionClosed) => {
            Class::Unavailable
        }
        DbErr::Conn(runtime) => match classify_runtime(runtime) {
            // whatever failed while connecting, the database is not serving us
            Class::Internal => Class::Unavailable,
            class => class,
        },
        DbErr::Exec(runtime) | DbErr::Query(runtime) => classify_runtime(runtime),
        _ => Class::Internal,
    }
}

fn classify_runtime(error: &RuntimeErr) -> Class {
    match error {
        RuntimeErr::SqlxError(sqlx) => classify_sqlx(sqlx),
        RuntimeErr::Internal(_) => Class::Internal,
    }
}

fn classify_sqlx(error: &sea_orm::sqlx::Error) -> Class {
    use sea_orm::sqlx::Error as E;
    match error {
        E::Io(_)
        | E::Tls(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::Protocol(_) => Class::Unavailable,
        // a value the driver cannot encode never will be
        E::Encode(_) => Class::Rejected,
        E::Database(database) => {
            let code = database.code().unwrap_or_default();
            if database
                .try_downcast_ref::<sea_orm::sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                classify_sqlstate(&code)
            } else if database
                .try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
                .is_some()
            {
                code.parse().map_or(Class::Internal, classify_sqlite)
            } else {
                Class::Internal
            }
        }
        _ => Class::Internal,
    }
}

/// Postgres SQLSTATE: classes 22 (data exception: bad encoding, NUL, out of
/// range) and 23 (integrity constraint) are the request's fault; 08
/// (connection), 53 (insufficient resources), 57 (operator intervention:
/// shutdown, cancel), 40 (serialization failure, deadlock) and 55P03 (lock not
/// available) pass.
pub fn classify_sqlstate(code: &str) -> Class {
    match code.get(..2) {
        Some("22" | "23") => Class::Rejected,
        Some("08" | "53" | "57" | "40") => Class::Unavailable,
        _ if code == "55P03" => Class::Unavailable,
        _ => Class::Internal,
    }
}

/// SQLite extended result code; its low byte is the primary code.
pub fn classify_sqlite(extended: i32) -> Class {
    const BUSY: i32 = 5;
    const LOCKED: i32 = 6;
    const NOMEM: i32 = 7;
    const INTERRUPT: i32 = 9;
    const IOERR: i32 = 10;
    const FULL: i32 = 13;
    const CANTOPEN: i32 = 14;
    const PROTOCOL: i32 = 15;
    const TOOBIG: i32 = 18;
    const CONSTRAINT: i32 = 19;
    const MISMATCH: i32 = 20;
    const RANGE: i32 = 25;
    match extended & 0xff {
        BUSY | LOCKED | NOMEM | INTERRUPT | IOERR | FULL | CANTOPEN | PROTOCOL => {
            Class::Unavailable
        }
        TOOBIG | CONSTRAINT | MISMATCH | RANGE => Class::Rejected,
        _ => Class::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes() {
        // invalid byte sequence (a NUL in text), numeric out of range
        assert_eq!(classify_sqlstate("22021"), Class::Rejected);
        assert_eq!(classify_sqlstate("22003"), Class::Rejected);
        // unique, check violations
        assert_eq!(classify_sqlstate("23505"), Class::Rejected);
        assert_eq!(classify_sqlstate("23514"), Class::Rejected);
        // connection failure, too many connections, admin shutdown, deadlock
        assert_eq!(classify_sqlstate("08006"), Class::Unavailable);
        assert_eq!(classify_sqlstate("53300"), Class::Unavailable);
        assert_eq!(classify_sqlstate("57P01"), Class::Unavailable);
        assert_eq!(classify_sqlstate("40P01"), Class::Unavailable);
        assert_eq!(classify_sqlstate("55P03"), Class::Unavailable);
        // syntax error, undefined table: ours
        assert_eq!(classify_sqlstate("42601"), Class::Internal);
        assert_eq!(classify_sqlstate("42P01"), Class::Internal);
        assert_eq!(classify_sqlstate(""), Class::Internal);
    }

    #[test]
    fn sqlite_codes() {
        assert_eq!(classify_sqlite(5), Class::Unavailable); // BUSY
        assert_eq!(classify_sqlite(517), Class::Unavailable); // BUSY_SNAPSHOT
        assert_eq!(classify_sqlite(10 | (4 << 8)), Class::Unavailable); // IOERR_SHORT_READ
        assert_eq!(classify_sqlite(13), Class::Unavailable); // FULL
        assert_eq!(classify_sqlite(2067), Class::Rejected); // CONSTRAINT_UNIQUE
        assert_eq!(classify_sqlite(275), Class::Rejected); // CONSTRAINT_CHECK
        assert_eq!(classify_sqlite(1811), Class::Rejected); // CONSTRAINT_TRIGGER
        assert_eq!(classify_sqlite(18), Class::Rejected); // TOOBIG
        assert_eq!(classify_sqlite(1), Class::Internal); // ERROR (bad SQL)
        assert_eq!(classify_sqlite(11), Class::Internal); // CORRUPT
    }

    #[test]
    fn sea_orm_errors() {
        assert_eq!(
            classify(&DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
            Class::Unavailable
        );
        let io = || {
            RuntimeErr::SqlxError(std::sync::Arc::new(sea_orm::sqlx::Error::Io(
                std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            )))
        };
        assert_eq!(classify(&DbErr::Query(io())), Class::Unavailable);
        assert_eq!(classify(&DbErr::Conn(io())), Class::Unavailable);
        let pool = RuntimeErr::SqlxError(std::sync::Arc::new(sea_orm::sqlx::Error::PoolTimedOut));
        assert_eq!(classify(&DbErr::Exec(pool)), Class::Unavailable);
        let encode = RuntimeErr::SqlxError(std::sync::Arc::new(sea_orm::sqlx::Error::Encode(
            "bad value".into(),
        )));
        assert_eq!(classify(&DbErr::Exec(encode)), Class::Rejected);
        assert_eq!(classify(&DbErr::Custom("anything".into())), Class::Internal);
        assert_eq!(classify(&DbErr::Type("bad".into())), Class::Internal);
        // a failure while connecting is never the request's fault
        assert_eq!(
            classify(&DbErr::Conn(RuntimeErr::Internal("x".into()))),
            Class::Unavailable
        );
    }

    #[test]
    fn messages_have_no_odd_whitespace() {
        let locked = StoreError::Locked {
            path: "/tmp/x.db.lock".into(),
        }
        .to_string();
        assert!(!locked.contains("  "), "{locked}");
        assert!(!locked.contains("Custom"), "{locked}");
    }
}
