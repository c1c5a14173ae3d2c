//! OTLP export for real: `jct-local` (intake and worker in one process, with the
//! telemetry set-up the service binaries use) runs with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a collector stub served here over
//! gRPC. A task enqueued with a client `traceparent` runs; after SIGTERM (the
//! flush on graceful shutdown) the collector holds the Enqueue span and the run's
//! spans, all in the client's trace, under `service.name` `jct-local`.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jct::traceparent::Traceparent;
use jct_e2e::{enqueue_request, eventually, task_client, wait_for_task};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::{Request, Response, Status};

const PATIENCE: Duration = Duration::from_secs(60);

/// Every span received, with the `service.name` of its resource.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = self.spans.lock().expect("collector lock");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|value| match value {
                    Value::StringValue(name) => name.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push((service.clone(), span));
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn free_port() -> u16 {
    jct_e2e::free_port().expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jct_local_exports_one_trace_per_task_over_otlp() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let collector_addr = listener.local_addr().expect("addr");
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut local = tokio::process::Command::new(env!("CARGO_BIN_EXE_jct-local"))
        .current_dir(dir.path())
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        )
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env("JCT_INTAKE_ADDR", format!("127.0.0.1:{port}"))
        .env("JCT_WORKER_HEALTH_ADDR", "")
        .env_remove("DATABASE_URL")
        .env_remove("JCT_ALLOWED_REPO_PREFIXES")
        .env_remove("JCT_TRACE_ROOT")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("jct-local starts");

    let sent = Traceparent::new(
        *uuid::Uuid::new_v4().as_bytes(),
        uuid::Uuid::new_v4().as_u64_pair().0.to_be_bytes(),
    )
    .expect("non-zero ids");
    let client = task_client(format!("127.0.0.1:{port}").parse().expect("addr"));
    let id = eventually(PATIENCE, || {
        let mut client = client.clone();
        let sent = sent.to_string();
        async move {
            let mut request = tonic::Request::new(enqueue_request("Export my trace"));
            request
                .metadata_mut()
                .insert("traceparent", sent.parse().ok()?);
            Some(client.enqueue(request).await.ok()?.into_inner().task_id)
        }
    })
    .await
    .expect("the intake answers");
    let task = wait_for_task(&client, &id, PATIENCE, |task| task.status == "completed")
        .await
        .expect("the task completes");

    // a graceful stop flushes what the batch exporter still holds
    let pid = local.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(PATIENCE, local.wait())
        .await
        .expect("jct-local stops")
        .expect("exit status");
    assert!(status.success(), "{status:?}");
    serving.abort();

    let received = collector.spans.lock().expect("collector lock").clone();
    let in_trace: HashMap<String, &(String, Span)> = received
        .iter()
        .filter(|(_, span)| span.trace_id == sent.trace_id)
        .map(|entry| (entry.1.name.clone(), entry))
        .collect();
    for name in [
        "jct.v1.TaskService/Enqueue",
        "jct.task.run",
        "jct.task.execute",
        "jct.task.report",
    ] {
        let Some((service, _)) = in_trace.get(name) else {
            let names: Vec<&str> = received.iter().map(|(_, s)| s.name.as_str()).collect();
            panic!("no {name} span in the client's trace; received {names:?}");
        };
        assert_eq!(service, "jct-local");
    }
    let enqueue = &in_trace["jct.v1.TaskService/Enqueue"].1;
    let run = &in_trace["jct.task.run"].1;
    assert_eq!(enqueue.parent_span_id, sent.parent_id);
    assert_eq!(run.parent_span_id, enqueue.span_id);
    let stored = Traceparent::parse(&task.traceparent).expect("stored traceparent");
    assert_eq!(stored.parent_id.as_slice(), enqueue.span_id.as_slice());
}
