//! The local pair behind `jct-local` and `jct up`: the intake and one worker on
//! the embedded defaults (a SQLite file, a local trace folder, the `record`
//! executor), ready for grpcurl and `jct`. Ctrl-C or SIGTERM stops both cleanly.
//! Every setting of both services is read from the environment as they read it
//! (see `intake-service --help`, `worker-service --help`).

use std::time::Duration;

use anyhow::Context;
use intake_service::config::IntakeConfig;
use tracing::info;
use worker_service::config::WorkerConfig;

use crate::{IntakeHandle, WorkerHandle};

/// Without JCT_ALLOWED_REPO_PREFIXES every repository is denied; locally the
/// launcher allows this one prefix so the printed example works.
const LOCAL_PREFIX: &str = "myorg/";

/// Runs the pair until Ctrl-C or SIGTERM.
pub async fn run() -> anyhow::Result<()> {
    let worker_config = WorkerConfig::defaults();
    let telemetry = jct::telemetry::init(worker_config.log_format, "jct-local")?;
    let mut intake_config = IntakeConfig::for_database(
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| intake_service::config::DEFAULT_DATABASE_URL.to_string()),
    );
    if intake_config.allowed_repo_prefixes.trim().is_empty() {
        info!(
            prefix = LOCAL_PREFIX,
            "JCT_ALLOWED_REPO_PREFIXES is unset: allowing {LOCAL_PREFIX} for this local run"
        );
        intake_config.allowed_repo_prefixes = LOCAL_PREFIX.to_string();
    }
    let listen = intake_config.listen_addr;
    let prefixes = intake_config.allowed_repo_prefixes.clone();
    let intake = IntakeHandle::start(intake_config, listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = intake.addr;

    let mut worker_config = worker_config;
    worker_config.intake_url = format!("http://{addr}");
    let trace_root = worker_config.trace_root.clone();
    let worker = WorkerHandle::start(worker_config);

    let repo = prefixes
        .split(',')
        .next()
        .unwrap_or(LOCAL_PREFIX)
        .trim()
        .trim_end_matches('/');
    println!(
        "{}",
        banner(&addr.to_string(), repo, &trace_root.display().to_string())
    );

    wait_for_ctrl_c_or_sigterm().await;
    info!("stopping: worker first (drains), then the intake");
    tokio::time::timeout(Duration::from_secs(60), worker.stop())
        .await
        .context("worker did not stop")??;
    let stopped = intake.stop().await;
    telemetry.shutdown();
    stopped
}

/// What to try, with grpcurl and with `jct`.
fn banner(addr: &str, repo: &str, traces: &str) -> String {
    // `jct` defaults to 127.0.0.1:50051; another address needs JCT_ADDR
    let jct = if addr == "127.0.0.1:50051" {
        "jct".to_string()
    } else {
        format!("JCT_ADDR=http://{addr} jct")
    };
    format!(
        "\nJCT is running: intake on {addr} (gRPC, plaintext), one worker (record executor),\n\
         traces under {traces}. Try:\n\n\
         grpcurl -plaintext {addr} list\n\
         grpcurl -plaintext -d '{{\"requested_by\":{{\"kind\":\"human\",\"id\":\"you\"}},\"objective\":\"Add a CONTRIBUTING guide\",\"operation\":\"docs\",\"target\":{{\"repo\":\"{repo}/service\"}}}}' {addr} jct.v1.TaskService/Enqueue\n\
         grpcurl -plaintext -d '{{\"page_size\":5}}' {addr} jct.v1.TaskService/ListTasks\n\
         grpcurl -plaintext -d '{{\"task_id\":\"<task_id from Enqueue>\"}}' {addr} jct.v1.TaskService/GetTask\n\
         grpcurl -plaintext {addr} jct.v1.OperatorService/GetSystemStatus\n\n\
         or with the jct CLI:\n\n\
         {jct} enqueue --objective 'Add a CONTRIBUTING guide' --operation docs --repo {repo}/service --wait\n\
         {jct} list --limit 5\n\
         {jct} get <task_id>\n\
         {jct} watch <task_id>\n\
         {jct} trace <task_id>\n\
         {jct} status\n\n\
         Ctrl-C stops both services.\n"
    )
}

async fn wait_for_ctrl_c_or_sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
