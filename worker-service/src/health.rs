//! The worker's grpc.health.v1 endpoint: "" is SERVING while the process runs
//! (liveness); `jct.v1.Worker` is SERVING while the worker is attached to the
//! intake and taking work (readiness).

use std::net::SocketAddr;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub const READY_SERVICE: &str = "jct.v1.Worker";

#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
}

impl Health {
    pub async fn set_attached(&self, attached: bool) {
        let status = if attached {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter
            .set_service_status(READY_SERVICE, status)
            .await;
    }
}

/// Starts the health server (if an address is configured) and returns its handle.
pub async fn start(
    address: Option<SocketAddr>,
    stopped: tokio_util::sync::CancellationToken,
) -> std::io::Result<(Health, Option<SocketAddr>)> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(READY_SERVICE, ServingStatus::NotServing)
        .await;
    let health = Health { reporter };
    let Some(address) = address else {
        return Ok((health, None));
    };
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let served = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stopped.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "health server stopped");
        }
    });
    Ok((health, Some(bound)))
}
