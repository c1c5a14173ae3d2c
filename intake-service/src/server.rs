//! Assembling and running the intake: store, dispatcher, gRPC services, health and
//! reflection on one pre-bound listener, with a graceful shutdown.

use std::future::Future;
use std::time::Duration;

use jct::v1::dispatch_service_server::DispatchServiceServer;
use jct::v1::operator_service_server::OperatorServiceServer;
use jct::v1::task_service_server::TaskServiceServer;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::api::dispatch_service::DispatchApi;
use crate::api::operator_service::OperatorApi;
use crate::api::page_token::PageTokens;
use crate::api::task_service::TaskApi;
use crate::auth::layer::{AuthLayer, DenialSink};
use crate::auth::refusals::RefusalLog;
use crate::auth::{Authenticator, TokensFileError};
use crate::config::IntakeConfig;
use crate::dispatch::Dispatcher;
use crate::policy::PolicyConfig;
use crate::rpc_metrics::RpcMetricsLayer;
use crate::store::{Store, StoreError};
use crate::transport::{self, TlsConfigError};

/// The health service names clients may check besides the overall "".
pub const TASK_SERVICE_NAME: &str = "jct.v1.TaskService";
pub const DISPATCH_SERVICE_NAME: &str = "jct.v1.DispatchService";
pub const OPERATOR_SERVICE_NAME: &str = "jct.v1.OperatorService";

const DATABASE_PROBE_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("could not open the database: {0}")]
    Store(#[from] StoreError),
    #[error("could not build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("JCT_AUTH_TOKENS_FILE: {0}")]
    Tokens(#[from] TokensFileError),
    #[error(
        "refusing to serve {0} without authentication: set JCT_AUTH_TOKENS_FILE to a tokens \
         file (TOKEN,PRINCIPAL,ROLE per line), listen on a loopback address \
         (JCT_INTAKE_ADDR=127.0.0.1:50051), or set JCT_INSECURE=true to let every caller in \
         as `anonymous`"
    )]
    Insecure(std::net::SocketAddr),
    #[error("JCT_PAGE_TOKEN_KEY_FILE: {0}")]
    PageTokenKey(String),
    #[error("the listener has no local address: {0}")]
    Listener(std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    #[error("cannot listen for health probes on {0} (JCT_HEALTH_ADDR): {1}")]
    HealthListener(std::net::SocketAddr, std::io::Error),
    #[error("JCT_METRICS_ADDR {0}: {1}")]
    Metrics(String, std::io::Error),
}

fn page_tokens(config: &IntakeConfig) -> Result<PageTokens, ServeError> {
    let Some(path) = &config.page_token_key_file else {
        return Ok(PageTokens::random());
    };
    let secret = std::fs::read(path).map_err(|error| {
        ServeError::PageTokenKey(format!("cannot read {}: {}", path.display(), error.kind()))
    })?;
    if secret.len() < 32 {
        return Err(ServeError::PageTokenKey(format!(
            "{} holds {} bytes; use at least 32 random bytes",
            path.display(),
            secret.len()
        )));
    }
    Ok(PageTokens::from_secret(&secret))
}

/// Secure by default: the callers from the tokens file, or (without one) nobody
/// beyond this host unless the operator said JCT_INSECURE=true.
fn authenticator(
    config: &IntakeConfig,
    address: std::net::SocketAddr,
) -> Result<Authenticator, ServeError> {
    match &config.auth_tokens_file {
        Some(path) => {
            let auth = Authenticator::from_file(path)?;
            info!(path = %path.display(), "authentication on: callers from the tokens file");
            Ok(auth)
        }
        None if address.ip().is_loopback() => Ok(Authenticator::open()),
        None if config.insecure => {
            warn!(%address, "JCT_INSECURE=true: serving without authentication beyond loopback");
            Ok(Authenticator::open())
        }
        None => Err(ServeError::Insecure(address)),
    }
}

/// Runs the intake on `listener` until `shutdown` resolves, then drains: health
/// turns NOT_SERVING, worker streams close (their leases are kept), new calls are
/// refused and in-flight calls get `grace` to finish. With JCT_HEALTH_ADDR, a
/// plaintext health listener is bound there too.
pub async fn serve(
    config: IntakeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let health_listener = match config.health_addr {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|error| ServeError::HealthListener(address, error))?,
        ),
        None => None,
    };
    serve_with_health(config, listener, health_listener, shutdown).await
}

/// [`serve`] with the health listener bound by the caller (port 0 in tests).
pub async fn serve_with_health(
    config: IntakeConfig,
    listener: TcpListener,
    health_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let auth = authenticator(
        &config,
        listener.local_addr().map_err(ServeError::Listener)?,
    )?;
    // every TLS file is checked before the database is touched
    let tls = transport::server_tls(&config)?;
    if tls.is_some() {
        let mutual = config.tls_client_ca_file.is_some();
        info!(mutual, "TLS on: h2 over rustls");
    }
    let store = Store::open(config.store_options()).await?;
    info!(backend = store.backend().as_str(), "database ready");
    let stopping = CancellationToken::new();
    let mut background = JoinSet::new();
    if let Some(listener) = store.notification_listener(stopping.clone()) {
        background.spawn(listener);
    }

    #[cfg(unix)]
    if auth.is_enforcing()
        && let Some(reloader) = crate::auth::reload::on_sighup(auth.clone(), stopping.clone())
    {
        background.spawn(reloader);
    }
    let refusals = RefusalLog::new();
    background.spawn(refusals.clone().run(
        store.clone(),
        Duration::from_millis(config.audit_flush_ms),
        stopping.clone(),
    ));
    let denials: std::sync::Arc<dyn DenialSink> = std::sync::Arc::new(refusals.clone());

    let dispatcher = Dispatcher::new(store.clone(), config.dispatch_config(), stopping.clone());
    dispatcher.spawn(&mut background);

    if let Some(addr) = &config.metrics_addr {
        background.spawn(serve_metrics(
            addr,
            store.clone(),
            dispatcher.clone(),
            stopping.clone(),
        )?);
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving, true).await;
    background.spawn(watch_database(
        store.clone(),
        health.clone(),
        stopping.clone(),
    ));
    // the probe port outlives the drain: it answers NOT_SERVING while calls
    // finish, instead of refusing connections, which reads as a dead pod
    let health_stop = CancellationToken::new();
    if let Some(health_listener) = health_listener {
        let address = health_listener.local_addr().map_err(ServeError::Listener)?;
        info!(%address, "health listener (plaintext, grpc.health.v1 only)");
        let served = transport::serve_health(
            health_listener,
            health_service.clone(),
            health_stop.clone().cancelled_owned(),
        );
        background.spawn(async move {
            if let Err(error) = served.await {
                warn!(%error, "health listener stopped");
            }
        });
    }

    let reflection_v1 = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;

    let max_request = config.max_request_bytes as usize;
    let policy = PolicyConfig::from_prefix_list(&config.allowed_repo_prefixes);
    if policy.allowed_repo_prefixes().is_empty() {
        warn!(
            "JCT_ALLOWED_REPO_PREFIXES is empty: every Enqueue will be refused with REPO_NOT_ALLOWED"
        );
    }
    let task_api = TaskApi::new(
        store.clone(),
        policy,
        config.max_attempts,
        stopping.clone(),
        page_tokens(&config)?,
        refusals.clone(),
    )
    .with_list_max_bytes(config.list_max_response_bytes as usize);
    let operator_api = OperatorApi::new(store.clone(), dispatcher.clone());

    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = transport::with_tls(Server::builder(), tls)?
        // detects workers that vanished without closing their stream
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        // outside authentication: refused calls are counted too
        .layer(RpcMetricsLayer)
        .layer(AuthLayer::new(auth, denials))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(TaskServiceServer::new(task_api).max_decoding_message_size(max_request))
        .add_service(
            DispatchServiceServer::new(DispatchApi::new(dispatcher, refusals))
                .max_decoding_message_size(max_request),
        )
        .add_service(
            OperatorServiceServer::new(operator_api).max_decoding_message_size(max_request),
        )
        .serve_with_incoming_shutdown(incoming, async {
            let _ = server_stopped.await;
        });
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => {
            stopping.cancel();
            health_stop.cancel();
            return result.map_err(ServeError::from);
        }
        _ = shutdown => {}
    }
    info!("shutting down: health NOT_SERVING, draining calls");
    set_health(&health, ServingStatus::NotServing, true).await;
    stopping.cancel();
    let _ = stop_server.send(());
    match tokio::time::timeout(config.shutdown_grace(), &mut server).await {
        Ok(result) => result?,
        Err(_) => {
            warn!(grace = ?config.shutdown_grace(), "calls still in flight after the grace period")
        }
    }
    health_stop.cancel();
    background.shutdown().await;
    store.close().await;
    info!("intake stopped");
    Ok(())
}

/// Binds `JCT_METRICS_ADDR` now (a bad address stops the start) and returns the
/// server of `/metrics`, which sets the queue and worker gauges at each scrape.
fn serve_metrics(
    addr: &str,
    store: Store,
    dispatcher: Dispatcher,
    stopping: CancellationToken,
) -> Result<impl Future<Output = ()> + Send + 'static, ServeError> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .map_err(|error| ServeError::Metrics(addr.to_string(), error))?;
    let refresh: jct::metrics_endpoint::Refresh = std::sync::Arc::new(move || {
        let (store, dispatcher) = (store.clone(), dispatcher.clone());
        Box::pin(async move { crate::metrics::refresh(&store, &dispatcher).await })
    });
    Ok(async move {
        let local = listener.local_addr().ok();
        let served = match TcpListener::from_std(listener) {
            Ok(listener) => {
                info!(addr = ?local, "serving metrics at /metrics");
                jct::metrics_endpoint::serve(listener, refresh, async move {
                    stopping.cancelled().await
                })
                .await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = served {
            warn!(%error, "the metrics endpoint stopped");
        }
    })
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    // both builders need every set, including both reflection protos, or grpcurl's
    // v1alpha client lists an incomplete set of services
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(jct::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// Sets the services that need the database; with `process_too`, also
/// `jct.v1.OperatorService`, which otherwise answers (and stays SERVING, for a
/// liveness probe) while the database is down.
async fn set_health(health: &HealthReporter, status: ServingStatus, process_too: bool) {
    for service in ["", TASK_SERVICE_NAME, DISPATCH_SERVICE_NAME] {
        health.set_service_status(service, status).await;
    }
    if process_too {
        health
            .set_service_status(OPERATOR_SERVICE_NAME, status)
            .await;
    }
}

/// Health follows the database: NOT_SERVING while it does not answer.
async fn watch_database(store: Store, health: HealthReporter, stopping: CancellationToken) {
    let mut serving = true;
    let mut ticker = tokio::time::interval(DATABASE_PROBE_INTERVAL);
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let reachable = tokio::time::timeout(DATABASE_PROBE_INTERVAL, store.ping())
            .await
            .unwrap_or(false);
        if reachable != serving && !stopping.is_cancelled() {
            serving = reachable;
            if reachable {
                info!("database reachable again: SERVING");
                set_health(&health, ServingStatus::Serving, false).await;
            } else {
                warn!("database unreachable: NOT_SERVING");
                set_health(&health, ServingStatus::NotServing, false).await;
            }
        }
    }
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => info!("SIGINT received"),
            _ = terminate.recv() => info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
