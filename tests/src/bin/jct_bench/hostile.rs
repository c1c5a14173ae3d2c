//! Intake peak memory under hostile sizes: Enqueues each carrying a few MB of
//! numbers in `inputs` (under the 4 MiB request limit), then ListTasks (page
//! size 10, and the default) and GetTask over them, with the default bounds
//! (JCT_TASK_CACHE_BYTES 32 MiB, JCT_LIST_MAX_RESPONSE_BYTES 512 KiB).

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

    let request = big_request(numbers);
    let wire = prost::Message::encoded_len(&request);
    println!("backend={backend} tasks={tasks} numbers_per_task={numbers} request_bytes={wire}");
    let started = Instant::now();
    let mut callers = Vec::new();
    for (caller, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        let request = request.clone();
        callers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (caller..tasks).step_by(CALLERS) {
                let mut request = request.clone();
                request.objective = format!("Hostile-size task {n}");
                let response = client.enqueue(request).await?.into_inner();
                ids.push(response.task_id);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for caller in callers {
        ids.extend(caller.await??);
    }
    println!(
        "enqueued {} in {:.2}s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );
    report("after the Enqueues");

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

/// An Enqueue whose inputs hold `numbers` non-round numbers.
fn big_request(numbers: usize) -> pb::EnqueueRequest {
    let values = (0..numbers)
        .map(|n| prost_types::Value {
            kind: Some(Kind::NumberValue(n as f64 * 1.000_001 + 0.123)),
        })
        .collect();
    let mut request = enqueue_request(0);
    request.inputs = Some(prost_types::Struct {
        fields: [(
            "numbers".to_string(),
            prost_types::Value {
                kind: Some(Kind::ListValue(prost_types::ListValue { values })),
            },
        )]
        .into(),
    });
    request
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
