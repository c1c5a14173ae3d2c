//! Prometheus text exposition at `/metrics`, shared by both services: one
//! process-wide recorder of the `metrics` crate (installed on first use), rendered
//! by `metrics-exporter-prometheus` on a small axum route. A service passes a
//! `refresh` that sets the gauges read from state at scrape time (queue depth,
//! connected workers) just before the text is rendered.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Seconds: from a millisecond (an RPC, a claim) to a day (a task's budget).
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

/// Sets scrape-time gauges before a scrape is rendered.
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The process's recorder. Installed once; later calls (a test process running an
/// intake and a worker, or several intakes) share it. When another global
/// recorder was installed first, this one still renders, empty.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            // histograms (names ending in _seconds) as Prometheus histograms,
            // which aggregate across replicas; summaries do not
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics will be empty");
        }
        handle
    })
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    refresh: Refresh,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = handle();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let refresh = Arc::clone(&refresh);
            async move {
                refresh().await;
                // drains histogram samples recorded since the last scrape
                handle.run_upkeep();
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
                    .into_response()
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A refresh that sets nothing (a service with no scrape-time gauges).
pub fn no_refresh() -> Refresh {
    Arc::new(|| Box::pin(async {}))
}
