//! The command line of `jct` (clap derive). Names, flags and environment
//! variables are fixed by the contract ("The operator surface").

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  jct up                                   # intake + one worker on this machine
  jct enqueue --objective 'Add a CONTRIBUTING guide' --operation docs --repo myorg/service
  jct enqueue -f task.json --wait          # V1 JSON (aliases accepted); exit code of the outcome
  jct enqueue -f task.json --validate-only # every check, nothing stored
  jct list --status queued --limit 20
  jct watch TASK_ID                        # live until it finishes: exit 0 / 20 failed / 21 cancelled
  jct get TASK_ID -o json | jq .status
  jct cancel TASK_ID
  jct trace TASK_ID
  jct status
  JCT_ADDR=http://intake:50051 JCT_TOKEN_FILE=~/.jct-token jct list
  jct --addr https://intake:50051 --tls-ca-file ca.pem status   # TLS (and --tls-cert-file/--tls-key-file for mTLS)

Exit codes: 0 success (watch: completed), 2 usage, 3 rejected request (invalid, policy,
conflict), 4 not found, 5 unauthenticated or denied, 6 unreachable or unavailable,
20 the watched task failed, 21 it was cancelled, 1 anything else.";

/// jct: the command-line client of JCT (intake-service's TaskService and OperatorService).
#[derive(Debug, Parser)]
#[command(name = "jct", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Where the intake is [default: http://127.0.0.1:50051]
    // no clap default: a global argument with one shows up in every usage line
    #[arg(long, env = "JCT_ADDR", global = true)]
    pub addr: Option<String>,
    /// File holding the bearer token (sent as `authorization: Bearer <token>`)
    #[arg(long, env = "JCT_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// CA certificates (PEM) an https:// intake's certificate must be signed by
    /// [default: the system's roots]
    #[arg(long, env = "JCT_TLS_CA_FILE", global = true)]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), for an intake that asks for mutual TLS
    #[arg(
        long,
        env = "JCT_TLS_CERT_FILE",
        global = true,
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM)
    #[arg(
        long,
        env = "JCT_TLS_KEY_FILE",
        global = true,
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// Output: `text` for people, `json` (stable: one JSON object per result,
    /// JSON lines for `list` and `watch`) for scripts
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
}

/// Where `jct` looks for the intake unless told otherwise.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";

impl Global {
    pub fn addr(&self) -> &str {
        self.addr.as_deref().unwrap_or(DEFAULT_ADDR)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit a task (flags, or a V1 JSON file with -f)
    Enqueue(EnqueueArgs),
    /// Show one task
    Get { id: String },
    /// List tasks, newest first, across pages
    List(ListArgs),
    /// Follow a task live until it finishes (exit 0 completed, 20 failed, 21 cancelled)
    Watch { id: String },
    /// Cancel a queued or running task
    Cancel { id: String },
    /// Show a task's trace folder: manifest and events (or where it lives)
    Trace { id: String },
    /// Version, task counts by status, oldest queued task, workers and their load
    Status,
    /// Run the intake and one worker here, as `jct-local` does (Ctrl-C stops both)
    Up,
    /// Print a shell completion script (e.g. `jct completions bash > /etc/bash_completion.d/jct`)
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// A task in the V1 JSON shape (`-` for stdin); flags given too override its fields
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// What the task must achieve (5–4000 characters)
    #[arg(long)]
    pub objective: Option<String>,
    /// code_change, docs, analysis or ops
    #[arg(long)]
    pub operation: Option<String>,
    /// Target repository, owner/name
    #[arg(long)]
    pub repo: Option<String>,
    /// Git ref (the intake defaults it to main)
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// Path inside the repository
    #[arg(long)]
    pub path: Option<String>,
    /// Whom the task is for, KIND:ID (kind human, agent or system); default human:$USER
    #[arg(long, value_name = "KIND:ID")]
    pub requested_by: Option<String>,
    /// A label for the requester
    #[arg(long)]
    pub label: Option<String>,
    /// Makes retries safe: the same key and request return the same task
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Time budget in seconds (30–86400; the intake defaults it to 900)
    #[arg(long, value_name = "SECONDS")]
    pub time_budget: Option<i32>,
    /// Ask for network access (denied by v1 policy)
    #[arg(long)]
    pub allow_network: bool,
    /// Ask for secrets (denied by v1 policy)
    #[arg(long)]
    pub allow_secrets: bool,
    /// An input, KEY=VALUE (VALUE is JSON if it parses, else a string); repeatable
    #[arg(long = "input", value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// A metadata entry, KEY=VALUE (as --input); repeatable
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Run every check and the policy gate, store nothing
    #[arg(long)]
    pub validate_only: bool,
    /// Then watch the task until it finishes; exit with its outcome (0, 20, 21)
    #[arg(long, conflicts_with = "validate_only")]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks in this status (pending, queued, running, completed, failed, cancelled)
    #[arg(long)]
    pub status: Option<String>,
    /// Only this operation
    #[arg(long)]
    pub operation: Option<String>,
    /// Only tasks requested by this kind (human, agent, system)
    #[arg(long)]
    pub requester_kind: Option<String>,
    /// Only tasks on this repository (normalized: lowercase, no .git)
    #[arg(long)]
    pub repo: Option<String>,
    /// Show at most this many tasks, fetching as many pages as needed
    #[arg(long, default_value_t = 50, conflicts_with = "all")]
    pub limit: usize,
    /// Every matching task, however many pages
    #[arg(long)]
    pub all: bool,
    /// Tasks per request (1–500)
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i32).range(1..=500))]
    pub page_size: i32,
    /// Continue from a `next page` token an earlier list printed
    #[arg(long)]
    pub page_token: Option<String>,
}
