//! `jct-bench`: load generator for the intake and the dispatch path, over real gRPC
//! against the real binaries (spawned from the same target directory).
//!
//!   jct-bench intake   [--backend sqlite|postgres] [--concurrency 1,16,64] [--seconds 5]
//!   jct-bench dispatch [--backend sqlite|postgres] [--tasks 5000] [--workers 1,4] [--capacity N] [--peer dramatiq] [--rounds 1]
//!   jct-bench sandbox  [--runs 300]
//!   jct-bench identity [--backend sqlite|postgres] [--concurrency 64] [--seconds 5] [--rounds 3] [--audit-reader [--audit-pages-per-second N]]
//!   jct-bench poison   [--backend sqlite|postgres] [--concurrency 64] [--seconds 5] [--rounds 3]
//!   jct-bench metrics  [--backend sqlite|postgres] [--concurrency 64] [--seconds 5] [--rounds 3]
//!   jct-bench hostile  [--backend sqlite|postgres] [--tasks 400] [--numbers 240000]
//!   jct-bench watch    [--backend sqlite|postgres] [--watchers 1000] [--fanout-rounds 5]
//!   jct-bench depth    [--backend sqlite|postgres] [--rows 1000000] [--samples 30]
//!
//! Every figure is printed next to a baseline measured in the same run: the no-op
//! unary RPC (grpc.health.v1 Check on the same server) for the intake.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use jct::v1 as pb;
use jct::v1::operator_service_client::OperatorServiceClient;
use jct::v1::task_service_client::TaskServiceClient;
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

mod depth;
mod hostile;
mod peer;
mod rounds;
mod watch;

#[derive(Parser)]
#[command(
    name = "jct-bench",
    about = "Throughput and latency of the JCT intake and dispatch path"
)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
    /// sqlite, or postgres (uses JCT_BENCH_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test,
    /// to create a fresh database per run).
    #[arg(long, global = true, default_value = "sqlite")]
    backend: String,
    /// Directory holding the intake-service and worker-service binaries (default: next to this one).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Where dispatch runs write their trace folders (kept afterwards: deleting
    /// tens of thousands of files between runs makes ext4's inode allocator scan
    /// recently deleted inodes, which then dominates the next run's profile).
    #[arg(long, global = true)]
    trace_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Mode {
    /// Enqueue and GetTask against the no-op RPC at several concurrencies.
    Intake {
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        concurrency: Vec<usize>,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Burst drain with N workers, and enqueue-to-start latency with one worker.
    Dispatch {
        #[arg(long, default_value_t = 5000)]
        tasks: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 300)]
        latency_tasks: usize,
        /// JCT_WORKER_CAPACITY of each worker (default: unset, the worker's own).
        #[arg(long, env = "JCT_BENCH_CAPACITY")]
        capacity: Option<u32>,
        /// Also measure this peer in each round, after JCT's runs.
        #[arg(long, value_enum)]
        peer: Option<peer::Peer>,
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// Enqueue without authentication, with token authentication, and with tokens
    /// over mutual TLS, in rounds (each round runs the three in turn, each against
    /// an intake of its own with a fresh database; audit writes are on in all).
    Identity {
        #[command(flatten)]
        load: rounds::Load,
        /// Also run token and token+mTLS with one operator paging
        /// `ListAuditEvents` in a loop beside the Enqueue callers.
        #[arg(long)]
        audit_reader: bool,
        /// Pages a second the audit reader asks for; 0: as fast as answered.
        #[arg(long, default_value_t = 0)]
        audit_pages_per_second: u32,
    },
    /// Enqueue clean, and with 1 % poisoned requests (a NUL in the objective, a
    /// bidi control in the ref, an oversize objective, in turn), in rounds.
    Poison {
        #[command(flatten)]
        load: rounds::Load,
    },
    /// Enqueue with no metrics listener, and with `/metrics` served and scraped
    /// every second, in rounds.
    Metrics {
        #[command(flatten)]
        load: rounds::Load,
    },
    /// Intake peak memory (VmHWM) under Enqueues with large inputs, then
    /// ListTasks and GetTask over them.
    Hostile {
        /// Enqueues of each kind (refused, accepted).
        #[arg(long, default_value_t = 400)]
        tasks: usize,
        /// Numbers in each refused Enqueue's inputs (240,000 is about 2.6 MB on the wire).
        #[arg(long, default_value_t = 240_000)]
        numbers: usize,
    },
    /// WatchTask: commit-to-subscriber delay with N watchers, each on its own
    /// task, then N watchers on one task.
    Watch {
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        #[arg(long, default_value_t = 5)]
        fanout_rounds: usize,
    },
    /// GetSystemStatus and a /metrics scrape over a bulk-loaded table.
    Depth {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 30)]
        samples: usize,
    },
    /// Start-to-exit of /bin/true through the sandboxed `command` executor, beside a
    /// plain spawn and a bare `bwrap --unshare-all … true` in the same run.
    Sandbox {
        #[arg(long, default_value_t = 300)]
        runs: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin_dir = match cli.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .to_path_buf(),
    };
    match cli.command {
        Mode::Intake {
            concurrency,
            seconds,
        } => bench_intake(&bin_dir, &cli.backend, &concurrency, seconds).await,
        Mode::Sandbox { runs } => bench_sandbox(runs).await,
        Mode::Identity {
            load,
            audit_reader,
            audit_pages_per_second,
        } => {
            let reader = audit_reader.then_some(audit_pages_per_second);
            rounds::bench_identity(&bin_dir, &cli.backend, &load, reader).await
        }
        Mode::Poison { load } => rounds::bench_poison(&bin_dir, &cli.backend, &load).await,
        Mode::Metrics { load } => rounds::bench_metrics(&bin_dir, &cli.backend, &load).await,
        Mode::Hostile { tasks, numbers } => {
            hostile::bench_hostile(&bin_dir, &cli.backend, tasks, numbers).await
        }
        Mode::Watch {
            watchers,
            fanout_rounds,
        } => watch::bench_watch(&bin_dir, &cli.backend, watchers, fanout_rounds).await,
        Mode::Depth { rows, samples } => {
            depth::bench_depth(&bin_dir, &cli.backend, rows, samples).await
        }
        Mode::Dispatch {
            tasks,
            workers,
            latency_tasks,
            capacity,
            peer,
            rounds,
        } => {
            let trace_dir = cli
                .trace_dir
                .unwrap_or_else(|| std::env::temp_dir().join("jct-bench-traces"));
            std::fs::create_dir_all(&trace_dir)?;
            println!("trace folders kept under {}", trace_dir.display());
            let run = Dispatch {
                bin_dir: &bin_dir,
                backend: &cli.backend,
                tasks,
                worker_counts: &workers,
                latency_tasks,
                trace_dir: &trace_dir,
                capacity,
            };
            bench_dispatch(&run, peer, rounds).await
        }
    }
}

// === the services under test ===

struct Service {
    child: Child,
    pid: u32,
    _dir: tempfile::TempDir,
}

impl Service {
    fn rss_kb(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// CPU time the process has used so far (user + system), in milliseconds:
    /// a cost per task that holds when other work shares the cores.
    fn cpu_ms(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // fields after the command name, which is in parentheses and may hold spaces
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name
        // in USER_HZ, which Linux fixes at 100 for user space on every architecture
        (ticks(11) + ticks(12)) as f64 * 10.0
    }

    async fn stop(mut self) {
        // SIGTERM, then wait (the services drain)
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

async fn database_url(backend: &str, dir: &Path) -> anyhow::Result<String> {
    match backend {
        "sqlite" => Ok(format!(
            "sqlite://{}?mode=rwc",
            dir.join("bench.db").display()
        )),
        "postgres" => {
            let admin = std::env::var("JCT_BENCH_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
            let name = format!("jct_bench_{}", uuid::Uuid::new_v4().simple());
            let status = Command::new("psql")
                .arg(&admin)
                .arg("-q")
                .arg("-c")
                .arg(format!("CREATE DATABASE {name}"))
                .status()
                .await?;
            if !status.success() {
                bail!("could not create the bench database with psql");
            }
            let base = admin
                .rsplit_once('/')
                .map(|(base, _)| base)
                .unwrap_or(&admin);
            Ok(format!("{base}/{name}"))
        }
        other => bail!("unknown backend {other}"),
    }
}

async fn start_intake(bin_dir: &Path, backend: &str) -> anyhow::Result<(Service, String)> {
    start_intake_with(bin_dir, backend, &[], None).await
}

/// An intake with extra settings; `health_port`, when given, is its plaintext
/// health listener (JCT_HEALTH_ADDR), which readiness is checked on (for TLS).
async fn start_intake_with(
    bin_dir: &Path,
    backend: &str,
    extra_env: &[(&str, String)],
    health_port: Option<u16>,
) -> anyhow::Result<(Service, String)> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let url = match extra_env.iter().find(|(key, _)| *key == "DATABASE_URL") {
        Some((_, url)) => url.clone(),
        None => database_url(backend, dir.path()).await?,
    };
    let mut command = Command::new(bin_dir.join("intake-service"));
    command
        .env("DATABASE_URL", &url)
        .env("JCT_INTAKE_ADDR", format!("127.0.0.1:{port}"))
        .env("JCT_ALLOWED_REPO_PREFIXES", "bench/")
        .env("RUST_LOG", "warn");
    // after the defaults, so that a mode may name its own database
    for (key, value) in extra_env {
        command.env(key, value);
    }
    if let Some(health_port) = health_port {
        command.env("JCT_HEALTH_ADDR", format!("127.0.0.1:{health_port}"));
    }
    let child = command
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start intake-service (build it: cargo build --release --bins)")?;
    let pid = child.id().context("intake pid")?;
    let address = format!("http://127.0.0.1:{port}");
    match health_port {
        Some(health_port) => wait_healthy(&format!("http://127.0.0.1:{health_port}")).await?,
        None => wait_healthy(&address).await?,
    }
    Ok((
        Service {
            child,
            pid,
            _dir: dir,
        },
        address,
    ))
}

/// `capacity` None leaves JCT_WORKER_CAPACITY unset: the worker's default.
fn start_worker(
    bin_dir: &Path,
    intake: &str,
    trace_root: &Path,
    id: usize,
    capacity: Option<u32>,
) -> anyhow::Result<Service> {
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(bin_dir.join("worker-service"));
    command
        .env("JCT_INTAKE_URL", intake)
        .env("JCT_TRACE_ROOT", trace_root)
        .env("JCT_WORKER_ID", format!("bench-worker-{id}"))
        .env_remove("JCT_WORKER_CAPACITY")
        .env("JCT_WORKER_HEALTH_ADDR", "")
        .env("RUST_LOG", "warn");
    if let Some(capacity) = capacity {
        command.env("JCT_WORKER_CAPACITY", capacity.to_string());
    }
    let child = command
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start worker-service")?;
    let pid = child.id().context("worker pid")?;
    Ok(Service {
        child,
        pid,
        _dir: dir,
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(jct_e2e::free_port()?)
}

async fn wait_healthy(address: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        if let Ok(channel) = Channel::from_shared(address.to_string())?.connect().await {
            let mut health = HealthClient::new(channel);
            if health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the intake did not become healthy")
}

async fn channels(address: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..count.max(1) {
        channels.push(
            Channel::from_shared(address.to_string())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

fn enqueue_request(n: usize) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        requested_by: Some(pb::RequestedBy {
            kind: "system".into(),
            id: "bench".into(),
            label: None,
        }),
        objective: format!("Benchmark task number {n}"),
        operation: "analysis".into(),
        target: Some(pb::Target {
            repo: "bench/service".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A request the intake must refuse, one flaw each, in turn: a NUL in the
/// objective, a bidi control in the ref, an objective past its 4,000 characters.
fn poisoned_request(n: usize) -> pb::EnqueueRequest {
    let mut request = enqueue_request(n);
    match (n / 100) % 3 {
        0 => request.objective = format!("Benchmark task\0number {n}"),
        1 => {
            if let Some(target) = request.target.as_mut() {
                target.r#ref = "main\u{202e}txt.exe".into();
            }
        }
        _ => request.objective = "x".repeat(4001),
    }
    request
}

// === closed-loop load ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Noop,
    Enqueue,
    /// Enqueue with one request in a hundred poisoned (see [`poisoned_request`]).
    EnqueuePoisoned,
    GetTask,
}

#[derive(Clone, Copy)]
struct Measured {
    per_second: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
}

/// `concurrency` callers, each sending its next request when the last answers.
async fn closed_loop(
    channels: &[Channel],
    call: Call,
    concurrency: usize,
    duration: Duration,
    ids: Arc<Vec<String>>,
    token: Option<&str>,
) -> anyhow::Result<Measured> {
    let authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = match token
    {
        Some(token) => Some(format!("Bearer {token}").parse()?),
        None => None,
    };
    let deadline = Instant::now() + duration;
    let mut callers = Vec::new();
    for caller in 0..concurrency {
        let channel = channels[caller % channels.len()].clone();
        let ids = ids.clone();
        let authorization = authorization.clone();
        callers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3).expect("histogram");
            let mut errors = 0u64;
            let mut health = HealthClient::new(channel.clone());
            let mut tasks = TaskServiceClient::new(channel);
            let mut n = caller;
            while Instant::now() < deadline {
                let started = Instant::now();
                let ok = match call {
                    Call::Noop => health
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .is_ok(),
                    Call::Enqueue => tasks
                        .enqueue(with_token(enqueue_request(n), &authorization))
                        .await
                        .is_ok(),
                    Call::EnqueuePoisoned => {
                        let request = if n % 100 == 0 {
                            poisoned_request(n)
                        } else {
                            enqueue_request(n)
                        };
                        tasks
                            .enqueue(with_token(request, &authorization))
                            .await
                            .is_ok()
                    }
                    Call::GetTask => {
                        let task_id = ids[n % ids.len()].clone();
                        tasks
                            .get_task(with_token(pb::GetTaskRequest { task_id }, &authorization))
                            .await
                            .is_ok()
                    }
                };
                let _ = histogram.record(started.elapsed().as_micros() as u64);
                if !ok {
                    errors += 1;
                }
                n += concurrency;
            }
            (histogram, errors)
        }));
    }
    let mut total = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for caller in callers {
        let (histogram, caller_errors) = caller.await?;
        total.add(&histogram)?;
        errors += caller_errors;
    }
    Ok(Measured {
        per_second: total.len() as f64 / duration.as_secs_f64(),
        p50_us: total.value_at_quantile(0.5),
        p99_us: total.value_at_quantile(0.99),
        errors,
    })
}

/// `message` with the bearer token, if there is one.
fn with_token<T>(
    message: T,
    authorization: &Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
    }
    request
}

async fn bench_intake(
    bin_dir: &Path,
    backend: &str,
    concurrencies: &[usize],
    seconds: u64,
) -> anyhow::Result<()> {
    let (intake, address) = start_intake(bin_dir, backend).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle_rss, _) = intake.rss_kb();
    let channels = channels(&address, 4).await?;
    let duration = Duration::from_secs(seconds);

    // ids to read back
    let mut client = TaskServiceClient::new(channels[0].clone());
    let mut ids = Vec::new();
    for n in 0..1000 {
        ids.push(
            client
                .enqueue(enqueue_request(n))
                .await?
                .into_inner()
                .task_id,
        );
    }
    let ids = Arc::new(ids);

    println!(
        "backend={backend} duration={seconds}s idle_rss={:.1}MB",
        idle_rss as f64 / 1024.0
    );
    println!(
        "{:<8} {:>5} {:>10} {:>9} {:>9} {:>8} {:>7}",
        "call", "conc", "req/s", "p50(ms)", "p99(ms)", "ratio", "errors"
    );
    for &concurrency in concurrencies {
        let noop = closed_loop(
            &channels,
            Call::Noop,
            concurrency,
            duration,
            ids.clone(),
            None,
        )
        .await?;
        for call in [Call::Noop, Call::Enqueue, Call::GetTask] {
            let measured = if call == Call::Noop {
                noop
            } else {
                closed_loop(&channels, call, concurrency, duration, ids.clone(), None).await?
            };
            println!(
                "{:<8} {:>5} {:>10.0} {:>9.3} {:>9.3} {:>7.1}% {:>7}",
                format!("{call:?}"),
                concurrency,
                measured.per_second,
                measured.p50_us as f64 / 1000.0,
                measured.p99_us as f64 / 1000.0,
                100.0 * measured.per_second / noop.per_second,
                measured.errors
            );
        }
    }
    let (rss, peak) = intake.rss_kb();
    println!(
        "intake rss_end={:.1}MB peak(VmHWM)={:.1}MB",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    intake.stop().await;
    Ok(())
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

// === dispatch ===

struct Dispatch<'a> {
    bin_dir: &'a Path,
    backend: &'a str,
    tasks: usize,
    worker_counts: &'a [usize],
    latency_tasks: usize,
    trace_dir: &'a Path,
    capacity: Option<u32>,
}

/// What a round of JCT measured, to set beside the peer's.
struct DispatchFigures {
    /// (workers, tasks/s) for each burst.
    bursts: Vec<(usize, f64)>,
    p50_ms: f64,
    p99_ms: f64,
}

/// Rounds of JCT's bursts and latency, each followed by the peer's, so that
/// both meet the same load on the machine.
async fn bench_dispatch(
    run: &Dispatch<'_>,
    peer: Option<peer::Peer>,
    rounds: usize,
) -> anyhow::Result<()> {
    if let Some(peer) = peer {
        peer::check_installed(peer).await?;
    }
    let capacity = run
        .capacity
        .unwrap_or(worker_service::config::WorkerConfig::defaults().capacity);
    println!(
        "backend={} capacity={capacity}{}",
        run.backend,
        if run.capacity.is_none() {
            " (the worker's default)"
        } else {
            ""
        }
    );
    let mut measured = Vec::new();
    for round in 1..=rounds.max(1) {
        println!("== round {round}/{}", rounds.max(1));
        let jct = dispatch_round(run).await?;
        let Some(peer) = peer else { continue };
        let other = peer::run(peer, run.tasks, run.latency_tasks).await?;
        for &(workers, rate) in &jct.bursts {
            println!(
                "ratio: JCT {workers} workers x {capacity} ({} in flight) / {} drain rate = {:.2}",
                workers * capacity as usize,
                peer.name(),
                rate / other.rate
            );
        }
        measured.push((jct, other));
    }
    if let Some(peer) = peer.filter(|_| measured.len() > 1) {
        peer::summary(peer, &measured, capacity);
    }
    Ok(())
}

async fn dispatch_round(run: &Dispatch<'_>) -> anyhow::Result<DispatchFigures> {
    let Dispatch {
        bin_dir,
        backend,
        tasks,
        worker_counts,
        latency_tasks,
        trace_dir,
        capacity,
    } = *run;
    let mut bursts = Vec::new();
    for &workers in worker_counts {
        let (intake, address) = start_intake(bin_dir, backend).await?;
        let channel = channels(&address, 1).await?.remove(0);
        let mut client = TaskServiceClient::new(channel.clone());
        let enqueue_started = Instant::now();
        let mut pending = Vec::new();
        for n in 0..tasks {
            let mut client = client.clone();
            pending.push(tokio::spawn(async move {
                client
                    .enqueue(enqueue_request(n))
                    .await
                    .map(|answer| answer.into_inner().task_id)
            }));
            if pending.len() >= 64 {
                for task in pending.drain(..) {
                    task.await??;
                }
            }
        }
        // the last tasks enqueued are claimed last (oldest first): the drain is
        // watched through them, so the watching costs the intake a cached
        // GetTask, not a count of the whole table every few milliseconds
        let mut last_enqueued = Vec::new();
        for task in pending.drain(..) {
            last_enqueued.push(task.await??);
        }
        let enqueue_secs = enqueue_started.elapsed().as_secs_f64();
        let traces = tempfile::Builder::new()
            .prefix("burst-")
            .tempdir_in(trace_dir)?
            .keep();
        let intake_cpu_before = intake.cpu_ms();
        let started = Instant::now();
        let mut running = Vec::new();
        for id in 0..workers {
            running.push(start_worker(bin_dir, &address, &traces, id, capacity)?);
        }
        for task_id in &last_enqueued {
            loop {
                let task = client
                    .get_task(pb::GetTaskRequest {
                        task_id: task_id.clone(),
                    })
                    .await?
                    .into_inner();
                if matches!(task.status.as_str(), "completed" | "failed" | "cancelled") {
                    break;
                }
                if started.elapsed() > Duration::from_secs(600) {
                    bail!("drain did not finish: task {task_id} is {}", task.status);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let mut operator = OperatorServiceClient::new(channel.clone());
        loop {
            let status = operator
                .get_system_status(pb::GetSystemStatusRequest {})
                .await?
                .into_inner();
            let done = status.task_counts.get("completed").copied().unwrap_or(0) as usize;
            if done >= tasks {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!("drain did not finish: {done}/{tasks}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let drain = started.elapsed().as_secs_f64();
        let intake_cpu = intake.cpu_ms() - intake_cpu_before;
        let workers_cpu: f64 = running.iter().map(Service::cpu_ms).sum();
        let folders = std::fs::read_dir(&traces)?.count();
        let worker_peaks: Vec<String> = running
            .iter()
            .map(|w| format!("{:.1}MB", w.rss_kb().1 as f64 / 1024.0))
            .collect();
        let (_, intake_peak) = intake.rss_kb();
        println!(
            "burst: tasks={tasks} workers={workers} drain={drain:.2}s rate={:.0} tasks/s trace_folders={folders} \
             (enqueue {:.0}/s) intake_peak={:.1}MB worker_peaks={}",
            tasks as f64 / drain,
            tasks as f64 / enqueue_secs,
            intake_peak as f64 / 1024.0,
            worker_peaks.join(",")
        );
        println!(
            "burst cpu per task: intake {:.1} µs, workers {:.1} µs (user + system, from /proc)",
            intake_cpu * 1000.0 / tasks as f64,
            workers_cpu * 1000.0 / tasks as f64,
        );
        bursts.push((workers, tasks as f64 / drain));
        for worker in running {
            worker.stop().await;
        }
        intake.stop().await;
        let _ = client
            .get_task(pb::GetTaskRequest {
                task_id: String::new(),
            })
            .await;
    }

    // latency: one worker, tasks enqueued one at a time 20 ms apart
    let (intake, address) = start_intake(bin_dir, backend).await?;
    let traces = tempfile::Builder::new()
        .prefix("latency-")
        .tempdir_in(trace_dir)?
        .keep();
    let worker = start_worker(bin_dir, &address, &traces, 0, capacity)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (worker_idle, _) = worker.rss_kb();
    let mut client = TaskServiceClient::new(channels(&address, 1).await?.remove(0));
    let mut enqueued = Vec::new();
    for n in 0..latency_tasks {
        let response = client.enqueue(enqueue_request(n)).await?.into_inner();
        let task = response.task.context("task")?;
        let created = task.created_at.context("created_at")?;
        enqueued.push((response.task_id, created));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut histogram = Histogram::<u64>::new(3)?;
    for (task_id, created) in &enqueued {
        let events = std::fs::read_to_string(traces.join(task_id).join("events.jsonl"))
            .with_context(|| format!("trace of {task_id}"))?;
        let started_line = events
            .lines()
            .find(|line| line.contains("\"started\""))
            .context("started event")?;
        let event: serde_json::Value = serde_json::from_str(started_line)?;
        let ts = event["ts"].as_str().context("ts")?;
        let started = humantime_parse(ts)?;
        let created_us = created.seconds as i128 * 1_000_000 + created.nanos as i128 / 1000;
        let latency_us = (started - created_us).max(0) as u64;
        histogram.record(latency_us)?;
    }
    println!(
        "latency: tasks={latency_tasks} enqueue-to-worker-start p50={:.3}ms p99={:.3}ms max={:.3}ms worker_idle_rss={:.1}MB",
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0,
        worker_idle as f64 / 1024.0
    );
    let figures = DispatchFigures {
        bursts,
        p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
    };
    worker.stop().await;
    intake.stop().await;
    Ok(figures)
}

/// Microseconds since the epoch of an RFC 3339 UTC timestamp as the trace writes it.
fn humantime_parse(text: &str) -> anyhow::Result<i128> {
    let at = humantime::parse_rfc3339(text)?;
    Ok(at.duration_since(std::time::UNIX_EPOCH)?.as_micros() as i128)
}

// === the sandbox: start-to-exit of /bin/true ===

async fn bench_sandbox(runs: usize) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use worker_service::executor::{self, CommandEnd};
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
    let workspace = dir.path().join("ws");
    std::fs::create_dir(&workspace)?;
    // the worker's own defaults, limits included: a start pays for its cgroup
    let mut worker = worker_service::config::WorkerConfig::defaults();
    worker.executor_command = Some("/bin/true".into());
    let config = worker.command_config().map_err(anyhow::Error::msg)?;
    if let Some(uid) = executor::sandbox::workspace_owner(&config.sandbox) {
        std::os::unix::fs::lchown(&workspace, Some(uid), Some(uid))?;
    }
    let bare: Vec<&str> = vec![
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--ro-bind",
        "/etc",
        "/etc",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--",
        "true",
    ];
    let mut plain = Histogram::<u64>::new(3)?;
    let mut bwrap = Histogram::<u64>::new(3)?;
    let mut sandboxed = Histogram::<u64>::new(3)?;
    // interleaved, so that drift on a shared machine hits all three alike
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let status = Command::new("/bin/true").status().await?;
        plain.record(started.elapsed().as_micros() as u64)?;
        anyhow::ensure!(status.success(), "/bin/true failed");

        let started = Instant::now();
        let status = Command::new("bwrap").args(&bare).status().await?;
        bwrap.record(started.elapsed().as_micros() as u64)?;
        anyhow::ensure!(status.success(), "bare bwrap failed");

        let run = executor::CommandRun {
            task_json: b"{}".to_vec(),
            task_env: Vec::new(),
            workspace: workspace.clone(),
            stdout: std::fs::File::create(dir.path().join("stdout.log"))?,
            stderr: std::fs::File::create(dir.path().join("stderr.log"))?,
            time_budget: Duration::from_secs(30),
            allow_network: false,
            allow_secrets: false,
            cancel: tokio_util::sync::CancellationToken::new(),
        };
        let started = Instant::now();
        let report = executor::command::run(&config, run).await;
        sandboxed.record(started.elapsed().as_micros() as u64)?;
        anyhow::ensure!(
            report.end == CommandEnd::Exited { code: 0 } && report.tree_dead,
            "the sandboxed run failed: {report:?}"
        );
    }
    let base = bwrap.value_at_quantile(0.5) as f64;
    println!("runs: {runs} each, interleaved; times are start to exit (reaped)");
    println!("executor limits: {:?}", config.limits);
    println!("| run | p50 ms | p99 ms | p50 ratio to bare bwrap |");
    println!("|---|---|---|---|");
    for (name, h) in [
        ("plain spawn of /bin/true", &plain),
        ("bare `bwrap --unshare-all … true`", &bwrap),
        ("/bin/true through the sandboxed executor", &sandboxed),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.0} % |",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            100.0 * h.value_at_quantile(0.5) as f64 / base
        );
    }
    Ok(())
}
