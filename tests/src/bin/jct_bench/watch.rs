//! WatchTask delivery delay with many watchers on one intake, two shapes:
//! N watchers each on its own task, the tasks cancelled one after another; and
//! N watchers on one task, cancelled once (fan-out), several times.
//!
//! Each delivery is timed three ways: from the Task's `updated_at` (stamped in
//! the committing transaction, on this machine's clock) to the arrival at the
//! watcher; from the UpdateStatus call's send; and the UpdateStatus ack from the
//! same send, for comparison. The watchers run in this process, so their own
//! wake-ups on the shared 2 cores are part of the figures.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::rounds::load_average;
use super::{TaskServiceClient, channels, enqueue_request, pb, start_intake};

/// HTTP/2 connections the watchers share (a server allows a bounded number of
/// streams per connection).
const CONNECTIONS: usize = 32;

/// When a watcher saw the change.
struct Seen {
    at: Instant,
    /// Microseconds since the epoch, this machine's clock.
    wall_us: i128,
    updated_us: i128,
}

#[derive(Default)]
struct Figures {
    commit_to_watcher: Vec<u64>,
    send_to_watcher: Vec<u64>,
    send_to_ack: Vec<u64>,
}

pub async fn bench_watch(
    bin_dir: &Path,
    backend: &str,
    watchers: usize,
    fanout_rounds: usize,
) -> anyhow::Result<()> {
    let (intake, address) = start_intake(bin_dir, backend).await?;
    let channels = channels(&address, CONNECTIONS).await?;
    // the changes go over a connection of their own
    let mut control = TaskServiceClient::new(super::channels(&address, 1).await?.remove(0));
    println!(
        "backend={backend} watchers={watchers} connections={CONNECTIONS} load_average={}",
        load_average()
    );

    // shape 1: a watcher per task, the tasks cancelled one after another
    let mut ids = Vec::new();
    for n in 0..watchers {
        ids.push(
            control
                .enqueue(enqueue_request(n))
                .await?
                .into_inner()
                .task_id,
        );
    }
    let (ready_tx, mut ready) = mpsc::channel(watchers);
    let mut watching = Vec::new();
    for (n, task_id) in ids.iter().enumerate() {
        watching.push(tokio::spawn(watch_one(
            TaskServiceClient::new(channels[n % channels.len()].clone()),
            task_id.clone(),
            ready_tx.clone(),
        )));
    }
    for _ in 0..watchers {
        ready
            .recv()
            .await
            .context("a watcher stopped before it was ready")?;
    }
    let (peak_watching, _) = intake.rss_kb();
    let mut sends = Vec::new();
    for task_id in &ids {
        let sent = Instant::now();
        cancel(&mut control, task_id).await?;
        sends.push((sent, sent.elapsed()));
        // one after another, not a burst
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut figures = Figures::default();
    for (watcher, (sent, ack)) in watching.into_iter().zip(sends) {
        let seen = watcher.await??;
        figures.add(&seen, sent, ack);
    }
    figures.print(&format!(
        "{watchers} watchers, one task each, sequential cancels"
    ))?;
    println!(
        "  intake rss with {watchers} watchers open: {:.1}MB",
        peak_watching as f64 / 1024.0
    );

    // shape 2: every watcher on one task (fan-out of one change)
    let mut fanout = Figures::default();
    for round in 0..fanout_rounds {
        let task_id = control
            .enqueue(enqueue_request(watchers + round))
            .await?
            .into_inner()
            .task_id;
        let (ready_tx, mut ready) = mpsc::channel(watchers);
        let mut watching = Vec::new();
        for n in 0..watchers {
            watching.push(tokio::spawn(watch_one(
                TaskServiceClient::new(channels[n % channels.len()].clone()),
                task_id.clone(),
                ready_tx.clone(),
            )));
        }
        for _ in 0..watchers {
            ready
                .recv()
                .await
                .context("a watcher stopped before it was ready")?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = Instant::now();
        cancel(&mut control, &task_id).await?;
        let ack = sent.elapsed();
        for watcher in watching {
            let seen = watcher.await??;
            fanout.add(&seen, sent, ack);
        }
    }
    fanout.print(&format!(
        "{watchers} watchers on one task, {fanout_rounds} cancels"
    ))?;
    let (_, peak) = intake.rss_kb();
    println!(
        "intake peak(VmHWM)={:.1}MB load_average={}",
        peak as f64 / 1024.0,
        load_average()
    );
    intake.stop().await;
    Ok(())
}

async fn cancel(client: &mut TaskServiceClient<Channel>, task_id: &str) -> anyhow::Result<()> {
    client
        .update_status(pb::UpdateStatusRequest {
            task_id: task_id.to_string(),
            status: "cancelled".into(),
            ..Default::default()
        })
        .await
        .context("UpdateStatus cancelled")?;
    Ok(())
}

/// Watches `task_id`: says ready once the current state has arrived, then
/// waits for the cancellation.
async fn watch_one(
    mut client: TaskServiceClient<Channel>,
    task_id: String,
    ready: mpsc::Sender<()>,
) -> anyhow::Result<Seen> {
    let mut stream = client
        .watch_task(pb::WatchTaskRequest { task_id })
        .await?
        .into_inner();
    stream
        .message()
        .await?
        .context("the watch ended before the current state")?;
    ready.send(()).await?;
    loop {
        let task = stream
            .message()
            .await?
            .context("the watch ended before the change")?;
        if task.status == "cancelled" {
            let at = Instant::now();
            let wall_us = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i128;
            let updated = task.updated_at.context("updated_at")?;
            let updated_us = updated.seconds as i128 * 1_000_000 + updated.nanos as i128 / 1000;
            return Ok(Seen {
                at,
                wall_us,
                updated_us,
            });
        }
    }
}

impl Figures {
    fn add(&mut self, seen: &Seen, sent: Instant, ack: Duration) {
        self.commit_to_watcher
            .push((seen.wall_us - seen.updated_us).max(0) as u64);
        self.send_to_watcher
            .push(seen.at.saturating_duration_since(sent).as_micros() as u64);
        self.send_to_ack.push(ack.as_micros() as u64);
    }

    fn print(&self, shape: &str) -> anyhow::Result<()> {
        println!("{shape}:");
        for (name, samples) in [
            ("updated_at (commit) -> watcher", &self.commit_to_watcher),
            ("UpdateStatus sent -> watcher", &self.send_to_watcher),
            ("UpdateStatus sent -> ack", &self.send_to_ack),
        ] {
            let mut histogram = Histogram::<u64>::new(3)?;
            for &sample in samples {
                histogram.record(sample)?;
            }
            println!(
                "  {name:<32} n={:<6} p50={:.3}ms p99={:.3}ms max={:.3}ms",
                histogram.len(),
                histogram.value_at_quantile(0.5) as f64 / 1000.0,
                histogram.value_at_quantile(0.99) as f64 / 1000.0,
                histogram.max() as f64 / 1000.0
            );
        }
        Ok(())
    }
}
