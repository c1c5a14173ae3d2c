//! SIGHUP re-reads the tokens file: revoking or adding a caller needs no restart.
//! A file that does not parse is refused and logged, and the callers already in
//! force stay.

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Authenticator;

/// Listens for SIGHUP now (so a signal sent once the intake answers is never
/// the default "terminate"), and returns the task that reloads `auth` on each
/// one until `stopping`.
pub fn on_sighup(
    auth: Authenticator,
    stopping: CancellationToken,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    let hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            warn!(%error, "cannot listen for SIGHUP; the tokens file is read only at start");
            return None;
        }
    };
    Some(reload_loop(auth, hangups, stopping))
}

async fn reload_loop(
    auth: Authenticator,
    mut hangups: tokio::signal::unix::Signal,
    stopping: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            received = hangups.recv() => if received.is_none() { return },
        }
        match auth.reload() {
            Ok(tokens) => info!(tokens, "SIGHUP: tokens file reloaded"),
            Err(problem) => {
                error!(%problem, "SIGHUP: tokens file refused; the previous callers stay in force")
            }
        }
    }
}
