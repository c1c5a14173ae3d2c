//! `intake-service`: serves jct.v1 over gRPC, or (`migrate`) applies migrations and exits.

use anyhow::Context;
use clap::Parser;
use intake_service::config::{Cli, Command};
use intake_service::server::{serve, shutdown_signal};
use intake_service::{store, telemetry};
use tracing::{info, warn};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config;
    let telemetry = telemetry::init(config.log_format, "jct-intake")?;

    if let Some(Command::Migrate) = cli.command {
        let migrated = store::migrate_only(&config.database_url).await;
        telemetry.shutdown();
        migrated.context("migration failed")?;
        info!(database = %store::redact(&config.database_url), "migrations applied");
        return Ok(());
    }

    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_addr))?;
    let address = listener.local_addr()?;
    info!(%address, database = %store::redact(&config.database_url), "intake-service listening (gRPC)");

    let shutdown = async {
        shutdown_signal().await;
        // a second signal while draining means the operator wants out now
        tokio::spawn(async {
            shutdown_signal().await;
            warn!("second signal: exiting without draining");
            std::process::exit(130);
        });
    };
    let served = serve(config, listener, shutdown).await;
    // the last spans (the drain's) are exported before the process ends
    telemetry.shutdown();
    served?;
    Ok(())
}
