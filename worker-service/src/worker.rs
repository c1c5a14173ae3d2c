//! Assembling and running the worker, and its two-stage shutdown: stop taking
//! work and let running tasks finish within the grace period; then stop what is
//! left and hand it back to the queue, so no task stays `running` forever.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::WorkerConfig;
use crate::executor::ExecutorKind;
use crate::health;
use crate::runner::{RunnerContext, StopReason};
use crate::session::{RunningTasks, Session};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot prepare {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// How long stopped tasks get to write their trace and hand themselves back.
const HAND_BACK_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the worker until `shutdown` resolves, then drains.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let command = match config.executor {
        ExecutorKind::Command => Some(config.command_config().map_err(WorkerError::Config)?),
        ExecutorKind::Record => None,
    };
    if let Some(command) = &command {
        let reaped = crate::executor::reap_stale_sandboxes(&command.sandbox).await;
        if reaped > 0 {
            warn!(
                reaped,
                "killed the programs a previous worker left in its task cgroups"
            );
        }
    }
    // TLS files and a token file that cannot be used are configuration errors,
    // said at start
    let intake = config
        .intake_link()
        .map_err(|error| WorkerError::Config(error.to_string()))?;
    intake
        .authorization()
        .map_err(|error| WorkerError::Config(error.to_string()))?;
    let trace_root = std::fs::create_dir_all(&config.trace_root)
        .and_then(|()| config.trace_root.canonicalize())
        .and_then(|path| crate::trace::TraceRoot::open(&path))
        .map_err(|source| WorkerError::Io {
            what: format!("the trace root {}", config.trace_root.display()),
            source,
        })?;

    let stopped = CancellationToken::new();
    let health_addr = config.health_addr().map_err(WorkerError::Config)?;
    let (health, health_addr) =
        health::start(health_addr, stopped.clone())
            .await
            .map_err(|source| WorkerError::Io {
                what: "the health endpoint".into(),
                source,
            })?;
    if let Some(addr) = &config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| WorkerError::Io {
                what: format!("the metrics endpoint JCT_WORKER_METRICS_ADDR={addr}"),
                source,
            })?;
        info!(addr = ?listener.local_addr().ok(), "serving metrics at /metrics");
        let stop = stopped.clone();
        tokio::spawn(async move {
            let served = jct::metrics_endpoint::serve(
                listener,
                jct::metrics_endpoint::no_refresh(),
                async move { stop.cancelled().await },
            )
            .await;
            if let Err(error) = served {
                warn!(%error, "the metrics endpoint stopped");
            }
        });
    }
    crate::metrics::capacity(config.capacity);
    let (reporter, report_queue) =
        crate::reporter::reporter(stopped.clone(), crate::reporter::RetryPolicy::default());
    let worker_id = config.worker_id();
    let runner = Arc::new(RunnerContext {
        worker_id: worker_id.clone(),
        trace_root: trace_root.clone(),
        executor: config.executor,
        command,
        workspace_root: config.workspace_root(),
        git_base: config.git_base.clone(),
        max_task_seconds: config.max_task_seconds,
        reporter,
    });
    let running = RunningTasks::default();
    let session = Session::new(
        intake,
        worker_id.clone(),
        config.capacity,
        config.executor.as_str().to_string(),
        running.clone(),
        runner,
        report_queue,
        health,
    );
    let (draining, drain_requested) = (session.draining.clone(), session.drain_requested.clone());
    info!(
        %worker_id, intake = %config.intake_url, executor = config.executor.as_str(),
        capacity = config.capacity, trace_root = %trace_root.path().display(),
        health = ?health_addr, network_isolation = ?config.network_isolation,
        "worker-service started"
    );
    let session_task = tokio::spawn(session.run(stopped.clone()));

    shutdown.await;
    info!(grace = ?config.shutdown_grace(), "draining: taking no more tasks");
    draining.store(true, Ordering::SeqCst);
    drain_requested.notify_one();

    if !wait_until_idle(&running, config.shutdown_grace()).await {
        let left = stop_all(&running, StopReason::Shutdown);
        warn!(
            tasks = left,
            "grace period over: stopping tasks and handing them back"
        );
        if !wait_until_idle(&running, HAND_BACK_TIMEOUT).await {
            warn!(
                "tasks did not hand back in time; their leases will expire and they will be retried"
            );
        }
    }
    stopped.cancel();
    let _ = session_task.await;
    info!("worker stopped");
    Ok(())
}

async fn wait_until_idle(running: &RunningTasks, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let busy = running
            .lock()
            .map(|tasks| !tasks.is_empty())
            .unwrap_or(false);
        if !busy {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stop_all(running: &RunningTasks, reason: StopReason) -> usize {
    let Ok(tasks) = running.lock() else { return 0 };
    for task in tasks.values() {
        task.control.stop(reason);
    }
    tasks.len()
}
