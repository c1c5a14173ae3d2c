//! `/metrics` on both services after real traffic: the pair runs with
//! JCT_METRICS_ADDR and JCT_WORKER_METRICS_ADDR set, tasks are enqueued (one
//! refused by policy, one a dry run) and run, and each exposition is scraped over
//! HTTP and parsed as Prometheus text: counters moved, gauges say what the store
//! and the dispatcher hold.

use std::collections::HashMap;
use std::time::Duration;

use jct_e2e::{
    IntakeHandle, WorkerHandle, enqueue_request, intake_config, task_client, worker_config,
};
use prometheus_parse::{Sample, Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATIENCE: Duration = Duration::from_secs(30);

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

/// `GET /metrics` over plain HTTP/1.1, parsed.
async fn scrape(addr: &str) -> Scrape {
    let body = jct_e2e::eventually(PATIENCE, || async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain"),
            "{head}"
        );
        Some(body.to_string())
    })
    .await
    .expect("the metrics endpoint answers");
    Scrape::parse(body.lines().map(|line| Ok(line.to_string()))).expect("Prometheus text")
}

/// The value of the one sample named `name` whose labels include `labels` (a
/// histogram's count). A missing sample fails the test: a renamed or
/// unregistered metric must not read as zero.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert!(matching.len() <= 1, "{name} {labels:?}: {matching:?}");
    let Some(sample) = matching.first() else {
        let names: std::collections::BTreeSet<&str> =
            scrape.samples.iter().map(|s| s.metric.as_str()).collect();
        panic!("no sample {name} {labels:?} in the scrape; it has {names:?}");
    };
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
        Value::Summary(_) => panic!("{name} is a summary, not a histogram"),
    }
}

fn types(scrape: &Scrape) -> HashMap<String, Sample> {
    scrape
        .samples
        .iter()
        .map(|s| (s.metric.clone(), s.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_export_what_happened() {
    let database = jct_migrations::test_database::TestDatabase::sqlite();
    let traces = tempfile::tempdir().expect("trace root");
    let (intake_metrics, worker_metrics) = (free_addr(), free_addr());
    let mut config = intake_config(&database.url);
    config.metrics_addr = Some(intake_metrics.clone());
    let intake = IntakeHandle::start(config, "127.0.0.1:0".parse().expect("addr")).expect("intake");
    let client = task_client(intake.addr);

    // a task waits with no worker attached: the queue gauges see it
    let waiting = client
        .clone()
        .enqueue(enqueue_request("Wait for a worker"))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    let before = scrape(&intake_metrics).await;
    assert_eq!(value(&before, "jct_tasks", &[("status", "queued")]), 1.0);
    assert!(value(&before, "jct_oldest_queued_age_seconds", &[]) > 0.0);
    assert_eq!(value(&before, "jct_workers_connected", &[]), 0.0);
    assert_eq!(value(&before, "jct_database_up", &[]), 1.0);

    let mut worker_config = worker_config(&intake.url(), traces.path());
    worker_config.capacity = 3;
    worker_config.metrics_addr = Some(worker_metrics.clone());
    let worker = WorkerHandle::start(worker_config);

    let mut ids = vec![waiting];
    for n in 0..2 {
        let enqueued = client
            .clone()
            .enqueue(enqueue_request(&format!("Metered task {n}")))
            .await
            .expect("enqueue")
            .into_inner();
        ids.push(enqueued.task_id);
    }
    let mut refused = enqueue_request("Not an allowed repository");
    refused.target = Some(jct::v1::Target {
        repo: "elsewhere/app".into(),
        ..Default::default()
    });
    let status = client.clone().enqueue(refused).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let mut dry = enqueue_request("Only a dry run");
    dry.validate_only = true;
    client.clone().enqueue(dry).await.expect("validated");

    for id in &ids {
        jct_e2e::wait_for_task(&client, id, PATIENCE, |t| t.status == "completed")
            .await
            .unwrap_or_else(|| panic!("{id} completes"));
    }
    // the worker counts a run once its report is acknowledged
    let worker_after = jct_e2e::eventually(PATIENCE, || async {
        let scraped = scrape(&worker_metrics).await;
        (value(
            &scraped,
            "jct_worker_runs_total",
            &[("outcome", "completed")],
        ) >= 3.0)
            .then_some(scraped)
    })
    .await
    .expect("the worker counted its runs");
    assert_eq!(value(&worker_after, "jct_worker_capacity", &[]), 3.0);
    assert_eq!(value(&worker_after, "jct_worker_running_tasks", &[]), 0.0);

    let after = scrape(&intake_metrics).await;
    let enqueue = "/jct.v1.TaskService/Enqueue";
    assert!(value(&after, "jct_enqueues_total", &[("result", "accepted")]) >= 3.0);
    assert!(value(&after, "jct_enqueues_total", &[("result", "validated")]) >= 1.0);
    assert!(
        value(
            &after,
            "jct_enqueues_total",
            &[("result", "rejected"), ("reason", "REPO_NOT_ALLOWED")]
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            "jct_rpc_requests_total",
            &[("method", enqueue), ("code", "OK")]
        ) >= 4.0
    );
    assert!(
        value(
            &after,
            "jct_rpc_requests_total",
            &[("method", enqueue), ("code", "PERMISSION_DENIED")]
        ) >= 1.0
    );
    assert!(value(&after, "jct_rpc_duration_seconds", &[("method", enqueue)]) >= 5.0);
    // exact, from the store and the dispatcher
    assert_eq!(value(&after, "jct_tasks", &[("status", "completed")]), 3.0);
    assert_eq!(value(&after, "jct_tasks", &[("status", "queued")]), 0.0);
    assert_eq!(value(&after, "jct_oldest_queued_age_seconds", &[]), 0.0);
    assert_eq!(value(&after, "jct_workers_connected", &[]), 1.0);
    assert_eq!(value(&after, "jct_worker_capacity_slots", &[]), 3.0);
    assert_eq!(value(&after, "jct_worker_slots_in_use", &[]), 0.0);
    // histograms, not summaries: they aggregate across replicas
    assert!(value(&after, "jct_queue_wait_seconds", &[]) >= 3.0);
    assert!(value(&after, "jct_task_run_seconds", &[("outcome", "completed")]) >= 3.0);
    let kinds = types(&after);
    for name in [
        "jct_queue_wait_seconds",
        "jct_task_run_seconds",
        "jct_rpc_duration_seconds",
    ] {
        assert!(
            matches!(kinds.get(name).map(|s| &s.value), Some(Value::Histogram(_))),
            "{name} is a histogram"
        );
    }

    worker.stop().await.expect("worker stops");
    intake.stop().await.expect("intake stops");
}
