//! One trace per task, proven with an in-memory span exporter installed in this
//! process (as `OTEL_EXPORTER_OTLP_ENDPOINT` installs the OTLP one): the client's
//! `traceparent` is the parent of the intake's Enqueue span, whose context is
//! stored with the task; the worker's `jct.task.run` span is that span's child and
//! its own spans are the run's children — all one trace id, which the trace
//! folder's manifest records. Without a header the Enqueue span starts the trace
//! and the run still joins it. On SQLite and on Postgres.

use std::sync::OnceLock;
use std::time::Duration;

use jct::telemetry::{self, LogFormat, Telemetry};
use jct::traceparent::Traceparent;
use jct::v1 as pb;
use jct_e2e::{
    IntakeHandle, WorkerHandle, enqueue_request, eventually, intake_config, on_both_backends,
    task_client, wait_for_task, worker_config,
};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::Value as Json;
use tracing_subscriber::EnvFilter;

on_both_backends!(
    the_run_is_a_child_of_the_enqueue_in_the_clients_trace,
    without_a_header_the_enqueue_starts_the_trace_the_run_joins,
);

const PATIENCE: Duration = Duration::from_secs(30);

/// The process's exporter: one global subscriber serves every test here (each
/// test reads only its own trace).
fn exporter() -> &'static InMemorySpanExporter {
    static INSTALLED: OnceLock<(InMemorySpanExporter, Telemetry)> = OnceLock::new();
    &INSTALLED
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let filter = EnvFilter::new("warn,intake_service=info,worker_service=info");
            let telemetry = telemetry::init_with_provider(LogFormat::Text, filter, provider);
            assert!(telemetry.exporting());
            (exporter, telemetry)
        })
        .0
}

/// The ended spans of `trace`, once `ready` holds for them.
async fn spans_of(trace: TraceId, ready: impl Fn(&[SpanData]) -> bool) -> Vec<SpanData> {
    eventually(PATIENCE, || async {
        let spans: Vec<SpanData> = exporter()
            .get_finished_spans()
            .ok()?
            .into_iter()
            .filter(|span| span.span_context.trace_id() == trace)
            .collect();
        ready(&spans).then_some(spans)
    })
    .await
    .unwrap_or_else(|| panic!("the spans of trace {trace} did not all end"))
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|span| span.name == name).collect()
}

fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    match named(spans, name).as_slice() {
        [span] => span,
        other => panic!("{} spans named {name}: {spans:#?}", other.len()),
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

const ENQUEUE: &str = "jct.v1.TaskService/Enqueue";
const RUN: &str = "jct.task.run";

fn complete(spans: &[SpanData]) -> bool {
    ["jct.task.execute", "jct.task.report", RUN]
        .iter()
        .all(|name| !named(spans, name).is_empty())
}

/// Runs one task on a fresh pair; returns it completed and its manifest.
async fn run_one(url: &str, request: tonic::Request<pb::EnqueueRequest>) -> (pb::Task, Json, Json) {
    exporter();
    let traces = tempfile::tempdir().expect("trace root");
    let intake = IntakeHandle::start(intake_config(url), "127.0.0.1:0".parse().expect("addr"))
        .expect("intake");
    let worker = WorkerHandle::start(worker_config(&intake.url(), traces.path()));
    let mut client = task_client(intake.addr);
    let id = client
        .enqueue(request)
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    let task = wait_for_task(&client, &id, PATIENCE, |task| task.status == "completed")
        .await
        .expect("the task completes");
    let folder = traces.path().join(&id);
    let read = |name: &str| -> Json {
        let text = std::fs::read_to_string(folder.join(name)).expect(name);
        serde_json::from_str(&text).expect("json")
    };
    let (manifest, task_json) = (read("manifest.json"), read("task.json"));
    worker.stop().await.expect("worker stops");
    intake.stop().await.expect("intake stops");
    (task, manifest, task_json)
}

/// The run's spans hang off `enqueue` and the manifest names their trace.
fn assert_the_run_joins(spans: &[SpanData], enqueue: &SpanData, task: &pb::Task, manifest: &Json) {
    let trace = enqueue.span_context.trace_id();
    let stored = Traceparent::parse(&task.traceparent).expect("a stored traceparent");
    assert_eq!(
        (
            TraceId::from_bytes(stored.trace_id),
            SpanId::from_bytes(stored.parent_id)
        ),
        (trace, enqueue.span_context.span_id()),
        "the task keeps the Enqueue span's context"
    );

    let run = one(spans, RUN);
    assert_eq!(run.parent_span_id, enqueue.span_context.span_id());
    assert!(
        run.parent_span_is_remote,
        "the run's parent is another process's"
    );
    assert_eq!(attribute(run, "task_id").as_deref(), Some(task.id.as_str()));
    assert_eq!(attribute(run, "attempt").as_deref(), Some("1"));
    for child in ["jct.task.execute", "jct.task.report"] {
        assert_eq!(
            one(spans, child).parent_span_id,
            run.span_context.span_id(),
            "{child} is a child of the run"
        );
    }
    assert_eq!(
        manifest["trace_id"].as_str(),
        Some(trace.to_string().as_str())
    );
    assert_eq!(
        manifest["traceparent"].as_str(),
        Some(task.traceparent.as_str())
    );
}

async fn the_run_is_a_child_of_the_enqueue_in_the_clients_trace(url: &str) {
    let sent = client_span();
    let mut request = tonic::Request::new(enqueue_request("Trace me from end to end"));
    request
        .metadata_mut()
        .insert("traceparent", sent.to_string().parse().expect("ascii"));
    let (task, manifest, task_json) = run_one(url, request).await;

    let trace = TraceId::from_bytes(sent.trace_id);
    let spans = spans_of(trace, complete).await;
    let enqueue = one(&spans, ENQUEUE);
    assert_eq!(
        enqueue.parent_span_id,
        SpanId::from_bytes(sent.parent_id),
        "the Enqueue span is a child of the client's span"
    );
    assert_eq!(
        attribute(enqueue, "task_id").as_deref(),
        Some(task.id.as_str())
    );
    assert_the_run_joins(&spans, enqueue, &task, &manifest);
    assert_eq!(
        manifest["trace_id"].as_str(),
        Some(sent.trace_id_hex().as_str())
    );
    assert_eq!(
        task_json["traceparent"].as_str(),
        Some(task.traceparent.as_str())
    );
}

async fn without_a_header_the_enqueue_starts_the_trace_the_run_joins(url: &str) {
    let request = tonic::Request::new(enqueue_request("Start a trace for me"));
    let (task, manifest, _) = run_one(url, request).await;

    let stored = Traceparent::parse(&task.traceparent).expect("a fresh traceparent");
    let spans = spans_of(TraceId::from_bytes(stored.trace_id), complete).await;
    let enqueue = one(&spans, ENQUEUE);
    assert_eq!(
        enqueue.parent_span_id,
        SpanId::INVALID,
        "the Enqueue span is the trace's root"
    );
    assert_the_run_joins(&spans, enqueue, &task, &manifest);
}

/// Random ids, as a client's tracer makes them.
fn client_span() -> Traceparent {
    let span = uuid::Uuid::new_v4().as_u64_pair().0.to_be_bytes();
    Traceparent::new(*uuid::Uuid::new_v4().as_bytes(), span).expect("non-zero ids")
}
