//! Logging and tracing set-up shared by both service binaries.
//!
//! Logs: human-readable by default, JSON lines when asked (log collectors in
//! Kubernetes), filtered by `RUST_LOG`.
//!
//! Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the same `tracing` spans are
//! also exported as OpenTelemetry spans over OTLP/gRPC (batched, on the SDK's own
//! thread; the standard `OTEL_*` variables — endpoint, headers, timeout, sampler,
//! `OTEL_SERVICE_NAME` — are read by the SDK). When it is unset there is no
//! exporter, no provider and no background thread: spans stay log context only.
//! Either way a span can be given a task's stored `traceparent` as its parent
//! ([`set_remote_parent`]); without an exporter that is a no-op.

use std::collections::HashMap;
use std::io::IsTerminal;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::traceparent::{self, Traceparent};

/// The variable whose presence turns OTLP export on (the OpenTelemetry name).
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP span exporter ({OTLP_ENDPOINT_ENV}): {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// What [`init`] installed; [`Telemetry::shutdown`] flushes it.
#[must_use = "call shutdown() on exit, or spans still batched are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported (an OpenTelemetry provider is installed).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is still batched and stops the exporter; call after the
    /// service has drained, so the last runs' spans are not lost.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "the span exporter did not shut down cleanly");
        }
    }
}

/// Installs the global subscriber: logs, plus OTLP span export for
/// `service_name` (`jct-intake`, `jct-worker`) when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// is set. Must run inside the tokio runtime (the gRPC exporter's channel lives
/// on it). A second call in one process (tests) installs nothing.
pub fn init(format: LogFormat, service_name: &'static str) -> Result<Telemetry, TelemetryError> {
    let provider = match otlp_endpoint(std::env::var(OTLP_ENDPOINT_ENV).ok()) {
        Some(_) => Some(otlp_provider(service_name)?),
        None => None,
    };
    install(format, env_filter(), provider.clone());
    if provider.is_some() {
        tracing::info!(service = service_name, "exporting spans over OTLP");
    }
    Ok(Telemetry { provider })
}

/// Installs the global subscriber with `provider` (any exporter: tests use an
/// in-memory one) and `filter`.
pub fn init_with_provider(
    format: LogFormat,
    filter: EnvFilter,
    provider: SdkTracerProvider,
) -> Telemetry {
    install(format, filter, Some(provider.clone()));
    Telemetry {
        provider: Some(provider),
    }
}

/// The endpoint when export is asked for: set and not blank.
fn otlp_endpoint(value: Option<String>) -> Option<String> {
    value.filter(|endpoint| !endpoint.trim().is_empty())
}

fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

fn otlp_provider(service_name: &'static str) -> Result<SdkTracerProvider, TelemetryError> {
    // endpoint, headers, timeout and compression come from the OTEL_* variables
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let mut resource = Resource::builder();
    // an operator's OTEL_SERVICE_NAME (read by the builder) wins over ours
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

fn install(format: LogFormat, filter: EnvFilter, provider: Option<SdkTracerProvider>) {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().flatten_event(true).boxed(),
    };
    let spans = provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("jct"))
            // which file and thread made a span is noise in a task's trace
            .with_location(false)
            .with_threads(false)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init();
}

/// Makes the remote span `parent` names the parent of `span` (which must not
/// have been entered yet). Returns whether it took: false when no OpenTelemetry
/// layer is installed.
pub fn set_remote_parent(span: &tracing::Span, parent: &Traceparent) -> bool {
    let carrier = HashMap::from([(traceparent::HEADER.to_string(), parent.to_string())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    span.set_parent(context).is_ok()
}

/// The trace context `span` passes on to its children elsewhere: its own trace
/// id and span id. `None` when no OpenTelemetry layer records it (export off, or
/// the span filtered out). Builds the span: give it its parent first.
pub fn traceparent_of(span: &tracing::Span) -> Option<Traceparent> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return None;
    }
    Some(Traceparent {
        trace_id: span_context.trace_id().to_bytes(),
        parent_id: span_context.span_id().to_bytes(),
        flags: span_context.trace_flags().to_u8(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_is_on_only_with_an_endpoint() {
        assert_eq!(otlp_endpoint(None), None);
        assert_eq!(otlp_endpoint(Some(String::new())), None);
        assert_eq!(otlp_endpoint(Some("  ".into())), None);
        assert_eq!(
            otlp_endpoint(Some("http://collector:4317".into())).as_deref(),
            Some("http://collector:4317")
        );
    }

    #[test]
    fn without_a_layer_spans_have_no_trace_context() {
        // no subscriber with an OpenTelemetry layer in this test: parents do not
        // take and a span names no trace
        let span = tracing::info_span!("unrecorded");
        let parent = Traceparent::new([1; 16], [2; 8]).expect("valid");
        assert!(!set_remote_parent(&span, &parent));
        assert_eq!(traceparent_of(&span), None);
    }
}
