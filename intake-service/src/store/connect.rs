//! Opening the database: connection pools tuned per backend, and migrations.

use std::time::Duration;

use jct_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous as SqlxSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, TransactionTrait};

use super::cache::TaskCache;
use super::watch::Watchers;
use super::{Store, StoreError, StoreEvents, batch};

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// SQLite's `synchronous` in WAL mode. `normal` survives a crash of the process
/// (`kill -9`): a commit is in the WAL before it is acknowledged. `full` also
/// survives power loss, at one fsync per commit (shared by a batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSynchronous {
    Normal,
    Full,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub url: String,
    /// Readers (and, on Postgres, writers) in the pool.
    pub max_connections: u32,
    pub sqlite_synchronous: SqliteSynchronous,
    /// Apply pending migrations when opening.
    pub migrate: bool,
    /// Most requests grouped into one write transaction.
    pub max_batch: usize,
    /// Bound of the task cache, in estimated bytes of memory (0 caches nothing).
    pub cache_bytes: u64,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 8,
            sqlite_synchronous: SqliteSynchronous::Normal,
            migrate: true,
            max_batch: 256,
            cache_bytes: super::cache::DEFAULT_CACHE_BYTES,
        }
    }
}

/// Waiting for a lock held by another connection, before SQLite answers BUSY.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Postgres advisory lock id serializing migrations across intake replicas.
const MIGRATION_LOCK_ID: i64 = 0x004a_4354_5f6d_6967; // "JCT_mig"

impl Store {
    /// Connects, migrates when asked, and starts the batching writer.
    pub async fn open(options: StoreOptions) -> Result<Store, StoreError> {
        let backend =
            Backend::from_url(&options.url).ok_or_else(|| StoreError::UnsupportedUrl {
                url: redact(&options.url),
            })?;
        let (reader, writer, exclusive) = match backend {
            Backend::Sqlite => {
                let exclusive = lock_sqlite_file(&options.url)?;
                let (reader, writer) = open_sqlite(&options).await?;
                (reader, writer, exclusive)
            }
            Backend::Postgres => {
                let pool = connect(pool_options(&options.url, options.max_connections)).await?;
                (pool.clone(), pool, None)
            }
        };
        if options.migrate {
            migrate(&writer, backend).await?;
        }
        let events = StoreEvents::new();
        // SQLite: the lock file makes this process the only writer, so the cache
        // may hold tasks that can still change
        let cache = TaskCache::new(backend == Backend::Sqlite, options.cache_bytes);
        let watchers = Watchers::default();
        let batch = batch::spawn(
            writer.clone(),
            backend,
            events.clone(),
            cache.clone(),
            watchers.clone(),
            options.max_batch,
        );
        Ok(Store {
            reader,
            writer,
            backend,
            batch,
            events,
            cache,
            watchers,
            _exclusive: exclusive,
        })
    }
}

/// Applies pending migrations and returns (`intake-service migrate`).
pub async fn migrate_only(url: &str) -> Result<(), StoreError> {
    let mut options = StoreOptions::new(url);
    options.max_connections = 1;
    options.migrate = true;
    let store = Store::open(options).await?;
    store.close().await;
    Ok(())
}

async fn migrate(db: &DatabaseConnection, backend: Backend) -> Result<(), StoreError> {
    match backend {
        // One writer connection: nothing else can migrate concurrently.
        Backend::Sqlite => Migrator::up(db, None).await?,
        // Replicas may start together; the transaction-scoped advisory lock lets one
        // migrate while the others wait and then find nothing pending.
        Backend::Postgres => {
            let txn = db.begin().await?;
            txn.execute_unprepared(&format!(
                "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"
            ))
            .await?;
            Migrator::up(&txn, None).await?;
            txn.commit().await?;
        }
    }
    Ok(())
}

/// SQLite allows one writer at a time, so writes get a pool of one connection
/// (never BUSY among ourselves) and reads their own pool (WAL readers never block).
async fn open_sqlite(
    options: &StoreOptions,
) -> Result<(DatabaseConnection, DatabaseConnection), StoreError> {
    let in_memory = options.url.contains(":memory:") || options.url.contains("mode=memory");
    let synchronous = match options.sqlite_synchronous {
        SqliteSynchronous::Normal => SqlxSynchronous::Normal,
        SqliteSynchronous::Full => SqlxSynchronous::Full,
    };
    let tune = move |opts: sea_orm::sqlx::sqlite::SqliteConnectOptions| {
        opts.create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true)
    };
    let mut writer_options = pool_options(&options.url, 1);
    writer_options.map_sqlx_sqlite_opts(tune);
    let writer = connect(writer_options).await?;
    if in_memory {
        // every connection to :memory: is a different database
        return Ok((writer.clone(), writer));
    }
    let mut reader_options = pool_options(&options.url, options.max_connections.max(1));
    reader_options.map_sqlx_sqlite_opts(tune);
    let reader = connect(reader_options).await?;
    Ok((reader, writer))
}

/// Takes an exclusive lock on `<database>.lock` for the life of the store: a
/// second intake on the same SQLite file would be a second writer (and would make
/// this one's cache stale), so it is refused at start.
fn lock_sqlite_file(url: &str) -> Result<Option<std::sync::Arc<std::fs::File>>, StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") || url.contains("mode=memory") {
        return Ok(None);
    }
    let lock_path = std::path::PathBuf::from(format!("{path}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StoreError::LockFile {
            path: lock_path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StoreError::Locked { path: lock_path });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(StoreError::LockFile {
                path: lock_path,
                source,
            });
        }
    }
    Ok(Some(std::sync::Arc::new(file)))
}

fn pool_options(url: &str, max_connections: u32) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_string());
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    options
}

async fn connect(options: ConnectOptions) -> Result<DatabaseConnection, StoreError> {
    Ok(Database::connect(options).await?)
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://jct.db"), "sqlite://jct.db");
    }
}
