//! Intake peak memory under hostile sizes, default bounds (JCT_MAX_REQUEST_BYTES
//! 4 MiB, JCT_TASK_CACHE_BYTES 32 MiB, JCT_LIST_MAX_RESPONSE_BYTES 512 KiB):
//! Enqueues carrying a few MB of numbers in `inputs` (under the request limit,
//! refused by the 256 KiB document limit after decoding); then Enqueues with
//! inputs and metadata each just under that limit, and ListTasks (page size 10,
//! and the default) and GetTask over them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use prost_types::value::Kind;

use super::rounds::load_average;
use super::{TaskServiceClient, channels, enqueue_request, pb, start_intake};

/// Callers at once in every phase.
const CALLERS: usize = 8;
/// How long each read phase runs.
const PHASE: Duration = Duration::from_secs(5);

pub async fn bench_hostile(
    bin_dir: &Path,
    backend: &str,
    tasks: usize,
    numbers: usize,
) -> anyhow::Result<()> {
    let (intake, address) = start_intake(bin_dir, backend).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = |phase: &str| {
        let (rss, peak) = intake.rss_kb();
        println!(
            "{phase:<44} rss={:>7.1}MB peak(VmHWM)={:>7.1}MB load_average={}",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0,
            load_average()
        );
    };
    report("idle");
    let channels = channels(&address, CALLERS).await?;
    let clients: Vec<TaskServiceClient<_>> = channels
        .iter()
        .map(|channel| {
            TaskServiceClient::new(channel.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20)
        })
        .collect();

    // refused: inputs past the 256 KiB document limit, decoded and measured first
    let refused = big_request(numbers, false);
    println!(
        "backend={backend} refused: {tasks} Enqueues from {CALLERS} callers, {} bytes each ({numbers} numbers in inputs)",
        prost::Message::encoded_len(&refused)
    );
    let outcomes = enqueue_all(&clients, &refused, tasks).await?;
    println!(
        "  accepted {} refused {}",
        outcomes.iter().filter(|o| o.is_ok()).count(),
        outcomes.iter().filter(|o| o.is_err()).count()
    );
    report("after the refused Enqueues");

    // accepted: inputs and metadata each just under the limit
    let fitting = fitting_numbers();
    let accepted = big_request(fitting, true);
    println!(
        "accepted: {tasks} Enqueues of {} bytes ({fitting} numbers in inputs and in metadata, each under 256 KiB as JSON)",
        prost::Message::encoded_len(&accepted)
    );
    let started = Instant::now();
    let mut ids = Vec::new();
    for outcome in enqueue_all(&clients, &accepted, tasks).await? {
        ids.push(outcome.context("an Enqueue under the limits was refused")?);
    }
    println!(
        "  enqueued {} in {:.2}s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    report("after the accepted Enqueues");

    for (name, page_size) in [("ListTasks page_size=10", 10), ("ListTasks default", 0)] {
        let (calls, tasks_seen, largest) = list_phase(&clients, page_size).await?;
        report(&format!("after {name}"));
        println!("  {calls} pages, {tasks_seen} tasks returned, largest response {largest} bytes");
    }
    let (calls, largest) = get_phase(&clients, &ids).await?;
    report("after GetTask");
    println!("  {calls} calls, largest response {largest} bytes");
    // a few small Enqueues: the intake still answers
    let mut client = clients[0].clone();
    client
        .enqueue(enqueue_request(0))
        .await
        .context("a small Enqueue after the hostile load")?;
    intake.stop().await;
    Ok(())
}

/// An Enqueue whose inputs (and metadata, when `metadata`) hold `numbers`
/// non-round numbers.
fn big_request(numbers: usize, metadata: bool) -> pb::EnqueueRequest {
    let document = numbers_document(numbers);
    let mut request = enqueue_request(0);
    if metadata {
        request.metadata = Some(document.clone());
    }
    request.inputs = Some(document);
    request
}

fn numbers_document(numbers: usize) -> prost_types::Struct {
    let values = (0..numbers)
        .map(|n| prost_types::Value {
            kind: Some(Kind::NumberValue(n as f64 * 1.000_001 + 0.123)),
        })
        .collect();
    prost_types::Struct {
        fields: [(
            "numbers".to_string(),
            prost_types::Value {
                kind: Some(Kind::ListValue(prost_types::ListValue { values })),
            },
        )]
        .into(),
    }
}

/// The most numbers whose JSON stays under the 256 KiB document limit (with
/// 1 KiB to spare).
fn fitting_numbers() -> usize {
    let json_len = |count: usize| {
        let numbers: Vec<f64> = (0..count).map(|n| n as f64 * 1.000_001 + 0.123).collect();
        serde_json::json!({ "numbers": numbers }).to_string().len()
    };
    let mut count = 20_000;
    while count > 0 && json_len(count) > 255 * 1024 {
        count -= 250;
    }
    count
}

/// `total` Enqueues of `request` (objectives made distinct) from CALLERS callers.
async fn enqueue_all(
    clients: &[TaskServiceClient<tonic::transport::Channel>],
    request: &pb::EnqueueRequest,
    total: usize,
) -> anyhow::Result<Vec<Result<String, tonic::Status>>> {
    let mut callers = Vec::new();
    for (caller, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        let request = request.clone();
        callers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for n in (caller..total).step_by(CALLERS) {
                let mut request = request.clone();
                request.objective = format!("Hostile-size task {n}");
                outcomes.push(
                    client
                        .enqueue(request)
                        .await
                        .map(|response| response.into_inner().task_id),
                );
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::new();
    for caller in callers {
        outcomes.extend(caller.await?);
    }
    Ok(outcomes)
}

/// CALLERS callers paging through every task, from the top again at the end,
/// for PHASE. Returns pages, tasks returned and the largest response.
async fn list_phase(
    clients: &[TaskServiceClient<tonic::transport::Channel>],
    page_size: i32,
) -> anyhow::Result<(u64, u64, usize)> {
    let deadline = Instant::now() + PHASE;
    let mut callers = Vec::new();
    for client in clients {
        let mut client = client.clone();
        callers.push(tokio::spawn(async move {
            let (mut pages, mut seen, mut largest) = (0u64, 0u64, 0usize);
            let mut page_token = String::new();
            while Instant::now() < deadline {
                let page = client
                    .list_tasks(pb::ListTasksRequest {
                        page_size,
                        page_token: page_token.clone(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                pages += 1;
                seen += page.tasks.len() as u64;
                largest = largest.max(prost::Message::encoded_len(&page));
                page_token = page.next_page_token;
            }
            anyhow::Ok((pages, seen, largest))
        }));
    }
    let (mut pages, mut seen, mut largest) = (0, 0, 0);
    for caller in callers {
        let (p, s, l) = caller.await??;
        pages += p;
        seen += s;
        largest = largest.max(l);
    }
    Ok((pages, seen, largest))
}

/// CALLERS callers reading every task in turn for PHASE.
async fn get_phase(
    clients: &[TaskServiceClient<tonic::transport::Channel>],
    ids: &[String],
) -> anyhow::Result<(u64, usize)> {
    let deadline = Instant::now() + PHASE;
    let mut callers = Vec::new();
    for (caller, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        let ids = ids.to_vec();
        callers.push(tokio::spawn(async move {
            let (mut calls, mut largest) = (0u64, 0usize);
            let mut n = caller;
            while Instant::now() < deadline {
                let task_id = ids[n % ids.len()].clone();
                let task = client
                    .get_task(pb::GetTaskRequest { task_id })
                    .await?
                    .into_inner();
                calls += 1;
                largest = largest.max(prost::Message::encoded_len(&task));
                n += 1;
            }
            anyhow::Ok((calls, largest))
        }));
    }
    let (mut calls, mut largest) = (0, 0);
    for caller in callers {
        let (c, l) = caller.await??;
        calls += c;
        largest = largest.max(l);
    }
    Ok((calls, largest))
}
