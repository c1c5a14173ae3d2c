//! Configuration: every setting is an environment variable (the contract's names)
//! with a flag mirroring it; `intake-service --help` explains each.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::dispatch::DispatchConfig;
use crate::store::{RetryPolicy, SqliteSynchronous, StoreOptions};
use crate::telemetry::LogFormat;

/// The default database: a SQLite file in the working directory, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://jct-intake.db?mode=rwc";

#[derive(Debug, Parser)]
#[command(
    name = "intake-service",
    version,
    about = "JCT intake: accepts tasks over gRPC (jct.v1.TaskService), governs them with a \
             policy gate, stores them durably and dispatches them to connected workers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: IntakeConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply pending database migrations and exit (for an init container or Job).
    Migrate,
}

#[derive(Debug, Clone, Args)]
pub struct IntakeConfig {
    /// Database: `sqlite://PATH?mode=rwc` or `postgres://USER:PASS@HOST:PORT/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,

    /// gRPC listen address.
    #[arg(
        long = "listen-addr",
        env = "JCT_INTAKE_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub listen_addr: SocketAddr,

    /// Repository prefixes tasks may target, comma separated (`myorg/,partner/team`).
    /// Whole path segments match. Empty denies every repository.
    #[arg(long, env = "JCT_ALLOWED_REPO_PREFIXES", default_value = "")]
    pub allowed_repo_prefixes: String,

    /// Log format: `text` for people, `json` for log collectors. The filter is `RUST_LOG`.
    #[arg(long, env = "JCT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Apply pending migrations on start. Turn off when an init container or Job
    /// runs `intake-service migrate`.
    #[arg(long, env = "JCT_MIGRATE_ON_START", default_value_t = true, action = ArgAction::Set)]
    pub migrate_on_start: bool,

    /// After SIGTERM/SIGINT, how long in-flight calls may take before the process exits.
    #[arg(long, env = "JCT_SHUTDOWN_GRACE_SECONDS", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,

    /// Largest request message accepted, in bytes (larger ones are refused with OUT_OF_RANGE).
    #[arg(long, env = "JCT_MAX_REQUEST_BYTES", default_value_t = 4 * 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(1024..=(64 * 1024 * 1024)))]
    pub max_request_bytes: u32,

    /// How long a worker's lease on a task lasts without renewal, in seconds.
    #[arg(long, env = "JCT_LEASE_TTL_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_ttl_seconds: u64,

    /// Executions a task gets before a lost worker fails it with WORKER_LOST.
    #[arg(long, env = "JCT_MAX_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..=100))]
    pub max_attempts: i32,

    /// First retry delay after a worker is lost, in milliseconds (doubles per attempt, with jitter).
    #[arg(long, env = "JCT_RETRY_BACKOFF_BASE_MS", default_value_t = 1000)]
    pub retry_backoff_base_ms: u64,

    /// Longest retry delay, in milliseconds.
    #[arg(long, env = "JCT_RETRY_BACKOFF_MAX_MS", default_value_t = 300_000)]
    pub retry_backoff_max_ms: u64,

    /// How often the dispatcher looks at the queue without being woken, in
    /// milliseconds. Commits (and, on Postgres, other replicas' NOTIFY) wake it at
    /// once; this only covers missed wake-ups.
    #[arg(long, env = "JCT_DISPATCH_RECHECK_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub dispatch_recheck_ms: u64,

    /// SQLite durability: `normal` survives a crash of the process (kill -9), `full`
    /// also survives power loss. Commits are batched either way.
    #[arg(
        long,
        env = "JCT_SQLITE_SYNCHRONOUS",
        value_enum,
        default_value = "normal"
    )]
    pub sqlite_synchronous: SqliteSynchronous,

    /// Database connections in the pool (readers on SQLite; all on Postgres).
    #[arg(long, env = "JCT_DB_MAX_CONNECTIONS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=512))]
    pub db_max_connections: u32,

    /// Memory the task cache (GetTask's) may hold, in bytes, estimated from each
    /// task's parsed inputs, metadata and result. 0 turns the cache off.
    #[arg(long, env = "JCT_TASK_CACHE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub task_cache_bytes: u64,

    /// Largest ListTasks response, in bytes: a page ends before page_size tasks
    /// rather than grow past it (its next_page_token continues after the last task
    /// returned). At most 4 MiB, the gRPC clients' default receive limit.
    #[arg(long, env = "JCT_LIST_MAX_RESPONSE_BYTES", default_value_t = 512 * 1024,
          value_parser = clap::value_parser!(u32).range(16 * 1024..=(4 * 1024 * 1024)))]
    pub list_max_response_bytes: u32,

    /// The callers: one `TOKEN,PRINCIPAL,ROLE[,ROLE…]` per line (`TOKEN` may be
    /// `sha256:<hex>` of the token). SIGHUP re-reads it. Unset: no
    /// authentication, every caller is `anonymous` with every role, and the intake
    /// serves loopback only unless JCT_INSECURE=true.
    #[arg(long, env = "JCT_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// Secret that signs ListTasks page tokens (any bytes; at least 32 random
    /// ones). Replicas behind one address share it. Unset: a key drawn at start,
    /// so a page token holds only on the intake that issued it.
    #[arg(long, env = "JCT_PAGE_TOKEN_KEY_FILE")]
    pub page_token_key_file: Option<PathBuf>,

    /// How often refused calls (denied, unauthenticated, rejected enqueues) are
    /// written to the audit trail, aggregated per principal, method and reason.
    #[arg(long, env = "JCT_AUDIT_FLUSH_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub audit_flush_ms: u64,

    /// PEM certificate chain the intake presents: with JCT_TLS_KEY_FILE, every
    /// call is served over TLS (h2 over rustls) on JCT_INTAKE_ADDR.
    #[arg(long, env = "JCT_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of JCT_TLS_CERT_FILE.
    #[arg(long, env = "JCT_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA certificate(s): every client must present a certificate signed by
    /// one of them (mutual TLS). Needs JCT_TLS_CERT_FILE and JCT_TLS_KEY_FILE.
    #[arg(long, env = "JCT_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// A second listener serving only grpc.health.v1, in plaintext and without
    /// authentication, for probes that cannot speak TLS (Kubernetes gRPC probes).
    /// Unset: health is served on JCT_INTAKE_ADDR only.
    #[arg(long, env = "JCT_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,

    /// Where to serve Prometheus metrics at `/metrics` (e.g. `0.0.0.0:9464`).
    /// Unset: no metrics listener.
    #[arg(long, env = "JCT_METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// Allow serving a non-loopback address without JCT_AUTH_TOKENS_FILE.
    #[arg(long, env = "JCT_INSECURE", default_value_t = false, action = ArgAction::Set)]
    pub insecure: bool,
}

impl IntakeConfig {
    /// The configuration with every default and the given database, for tests and tools.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        let mut config = Cli::parse_from(["intake-service"]).config;
        config.database_url = database_url.into();
        config
    }

    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            url: self.database_url.clone(),
            max_connections: self.db_max_connections,
            sqlite_synchronous: self.sqlite_synchronous,
            migrate: self.migrate_on_start,
            cache_bytes: self.task_cache_bytes,
            ..StoreOptions::new(&self.database_url)
        }
    }

    pub fn dispatch_config(&self) -> DispatchConfig {
        DispatchConfig {
            lease_ttl: Duration::from_secs(self.lease_ttl_seconds),
            retry: RetryPolicy {
                backoff_base: Duration::from_millis(self.retry_backoff_base_ms),
                backoff_max: Duration::from_millis(
                    self.retry_backoff_max_ms.max(self.retry_backoff_base_ms),
                ),
            },
            idle_recheck: Duration::from_millis(self.dispatch_recheck_ms),
            ..DispatchConfig::default()
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_mirror_the_environment_defaults() {
        let cli = Cli::parse_from(["intake-service", "--listen-addr", "0.0.0.0:6000", "migrate"]);
        assert!(matches!(cli.command, Some(Command::Migrate)));
        assert_eq!(cli.config.listen_addr.port(), 6000);
        assert_eq!(cli.config.max_attempts, 3);
        assert!(cli.config.migrate_on_start);
    }
}
