//! The peer measured beside `dispatch` (issue 12): dramatiq on Redis, run by
//! `tests/bench/peers/dramatiq_peer.py` against a redis-server started here for
//! the round and stopped after it.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{DispatchFigures, Service, free_port};

/// Built into the binary, so that jct-bench runs the peer it was built with
/// from wherever it is copied to.
const DRAMATIQ_SCRIPT: &str = include_str!("../../../bench/peers/dramatiq_peer.py");
/// The worker processes import the script under this name.
const DRAMATIQ_MODULE_FILE: &str = "dramatiq_peer.py";
/// 2 processes x 8 threads: the 16 in flight of the comparison.
const PROCESSES: usize = 2;
const THREADS: usize = 8;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Peer {
    /// dramatiq on Redis, 2 processes x 8 threads.
    Dramatiq,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Dramatiq => "dramatiq",
        }
    }
}

pub struct PeerFigures {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Fails before any measuring when the peer cannot run, naming what to install.
pub async fn check_installed(peer: Peer) -> anyhow::Result<()> {
    match peer {
        Peer::Dramatiq => {
            let redis = Command::new("redis-server")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .await;
            if !matches!(redis, Ok(status) if status.success()) {
                bail!(
                    "--peer dramatiq needs redis-server on PATH: apt-get install redis-server \
                     (no service needs to run; jct-bench starts its own)"
                );
            }
            let python = Command::new("python3")
                .args(["-c", "import dramatiq, redis"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            match python {
                Ok(status) if status.success() => Ok(()),
                Ok(_) => bail!(
                    "--peer dramatiq needs dramatiq for python3: pip install 'dramatiq[redis]'"
                ),
                Err(error) => bail!("--peer dramatiq needs python3 on PATH: {error}"),
            }
        }
    }
}

/// One round of the peer: its burst of `tasks`, then `latency_tasks` sent 20 ms
/// apart, each on a fresh Redis.
pub async fn run(peer: Peer, tasks: usize, latency_tasks: usize) -> anyhow::Result<PeerFigures> {
    match peer {
        Peer::Dramatiq => run_dramatiq(tasks, latency_tasks).await,
    }
}

async fn run_dramatiq(tasks: usize, latency_tasks: usize) -> anyhow::Result<PeerFigures> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join(DRAMATIQ_MODULE_FILE);
    let (redis, port) = start_redis().await?;
    let measured = async {
        std::fs::write(&script, DRAMATIQ_SCRIPT)
            .with_context(|| format!("write {}", script.display()))?;
        let output = Command::new("python3")
            .arg(&script)
            .arg("--redis-url")
            .arg(format!("redis://127.0.0.1:{port}/0"))
            .args(["--tasks", &tasks.to_string()])
            .args(["--processes", &PROCESSES.to_string()])
            .args(["--threads", &THREADS.to_string()])
            .args(["--latency-tasks", &latency_tasks.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .context("run python3 dramatiq_peer.py")?;
        if !output.status.success() {
            bail!(
                "the dramatiq peer failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut burst = None;
        let mut latency = None;
        for line in stdout.lines().filter(|line| line.starts_with('{')) {
            let figures: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("peer output {line}"))?;
            match figures["mode"].as_str() {
                Some("burst") => burst = Some(figures),
                Some("latency") => latency = Some(figures),
                _ => {}
            }
        }
        let (Some(burst), Some(latency)) = (burst, latency) else {
            bail!("the dramatiq peer printed no burst and latency lines: {stdout}");
        };
        Ok((burst, latency))
    }
    .await;
    redis.stop().await;
    let (burst, latency) = measured?;
    let number = |figures: &serde_json::Value, key: &str| {
        figures[key]
            .as_f64()
            .with_context(|| format!("no {key} in the peer's {figures}"))
    };
    let figures = PeerFigures {
        rate: number(&burst, "rate")?,
        p50_ms: number(&latency, "p50_ms")?,
        p99_ms: number(&latency, "p99_ms")?,
    };
    println!(
        "dramatiq burst: tasks={tasks} in_flight={} ({PROCESSES} processes x {THREADS} threads) \
         drain={:.2}s rate={:.0} tasks/s (enqueue {:.0}/s)",
        PROCESSES * THREADS,
        number(&burst, "drain_s")?,
        figures.rate,
        number(&burst, "enqueue_rate")?,
    );
    println!(
        "dramatiq latency: tasks={latency_tasks} send-to-actor-start p50={:.3}ms p99={:.3}ms max={:.3}ms",
        figures.p50_ms,
        figures.p99_ms,
        number(&latency, "max_ms")?,
    );
    Ok(figures)
}

/// A throwaway Redis on a free loopback port: no snapshots, no append-only file.
async fn start_redis() -> anyhow::Result<(Service, u16)> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("start redis-server (apt-get install redis-server)")?;
    let pid = child.id().context("redis-server pid")?;
    for _ in 0..100 {
        if ping(port).await {
            let redis = Service {
                child,
                pid,
                _dir: dir,
            };
            return Ok((redis, port));
        }
        if let Some(status) = child.try_wait()? {
            bail!("redis-server on port {port} exited at start ({status})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("redis-server on port {port} did not answer PING within 5 s")
}

async fn ping(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).await.is_ok() && &answer == b"+PONG\r\n"
}

/// Each figure's range over the rounds; a ratio is taken within its round first.
pub fn summary(peer: Peer, rounds: &[(DispatchFigures, PeerFigures)], capacity: u32) {
    let range = |values: Vec<f64>, decimals: usize| {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{low:.decimals$}-{high:.decimals$}")
    };
    let name = peer.name();
    println!("== {} rounds, min-max", rounds.len());
    let Some((first, _)) = rounds.first() else {
        return;
    };
    for (index, &(workers, _)) in first.bursts.iter().enumerate() {
        let rates: Vec<f64> = rounds.iter().map(|(jct, _)| jct.bursts[index].1).collect();
        let ratios = rounds
            .iter()
            .map(|(jct, other)| jct.bursts[index].1 / other.rate)
            .collect();
        println!(
            "JCT {workers} workers x {capacity} ({} in flight): {} tasks/s, ratio to {name} {}",
            workers * capacity as usize,
            range(rates, 0),
            range(ratios, 2)
        );
    }
    println!(
        "{name} {PROCESSES} processes x {THREADS} threads ({} in flight): {} tasks/s",
        PROCESSES * THREADS,
        range(rounds.iter().map(|(_, other)| other.rate).collect(), 0)
    );
    println!(
        "start latency p50 / p99: JCT {} / {} ms; {name} {} / {} ms",
        range(rounds.iter().map(|(jct, _)| jct.p50_ms).collect(), 3),
        range(rounds.iter().map(|(jct, _)| jct.p99_ms).collect(), 3),
        range(rounds.iter().map(|(_, other)| other.p50_ms).collect(), 3),
        range(rounds.iter().map(|(_, other)| other.p99_ms).collect(), 3),
    );
}
