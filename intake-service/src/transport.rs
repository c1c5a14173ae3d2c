//! How the intake is reached: TLS, and mutual TLS, on the API listener, and the
//! optional plaintext listener that serves only health for probes that cannot
//! speak TLS (a Kubernetes `grpc` probe connects in plaintext; the field's answer,
//! e.g. etcd's `--listen-metrics-urls`, is a separate health port).

use std::future::Future;
use std::time::Duration;

use jct::tls::{PemFile, TlsFileError};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::pb::health_server::{Health, HealthServer};

use crate::config::IntakeConfig;

/// A client that opens a connection and stalls the handshake holds a task and a
/// socket: give up on it after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error(transparent)]
    File(#[from] TlsFileError),
    #[error(
        "JCT_TLS_CLIENT_CA_FILE needs JCT_TLS_CERT_FILE and JCT_TLS_KEY_FILE: mutual TLS is \
         TLS whose clients also present certificates"
    )]
    ClientCaWithoutTls,
    #[error("JCT_TLS_CERT_FILE / JCT_TLS_KEY_FILE: {0}")]
    Rejected(String),
}

/// The TLS settings of the API listener, or `None` to serve plaintext h2. Every
/// file is read and checked here, at start.
pub fn server_tls(config: &IntakeConfig) -> Result<Option<ServerTlsConfig>, TlsConfigError> {
    let identity = jct::tls::optional_identity(
        ("JCT_TLS_CERT_FILE", config.tls_cert_file.as_deref()),
        ("JCT_TLS_KEY_FILE", config.tls_key_file.as_deref()),
    )?;
    let Some(identity) = identity else {
        if config.tls_client_ca_file.is_some() {
            return Err(TlsConfigError::ClientCaWithoutTls);
        }
        return Ok(None);
    };
    let mut tls = ServerTlsConfig::new()
        .identity(identity)
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(path) = &config.tls_client_ca_file {
        // client certificates become required (tonic's default), not optional
        tls = tls.client_ca_root(jct::tls::certificates(PemFile::new(
            "JCT_TLS_CLIENT_CA_FILE",
            path,
        ))?);
    }
    Ok(Some(tls))
}

/// Applies `tls` to a server builder; rustls checks here that the key belongs to
/// the certificate.
pub fn with_tls(server: Server, tls: Option<ServerTlsConfig>) -> Result<Server, TlsConfigError> {
    match tls {
        None => Ok(server),
        Some(tls) => server
            .tls_config(tls)
            .map_err(|error| TlsConfigError::Rejected(jct::tls::error_chain(&error))),
    }
}

/// Serves only grpc.health.v1 on `listener`, plaintext and open to all (health is
/// open on the API listener too), until `shutdown` resolves.
pub async fn serve_health<H: Health>(
    listener: TcpListener,
    health: HealthServer<H>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
}
