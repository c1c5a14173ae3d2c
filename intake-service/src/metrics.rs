//! The intake's Prometheus metrics: every name in one place (the Grafana dashboard
//! and `deploy/check-dashboard.py` read them from here), recorded through the
//! `metrics` crate facade. Without `JCT_METRICS_ADDR` nothing is rendered and a
//! recording is a no-op lookup.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::dispatch::Dispatcher;
use crate::store::Store;
use crate::task::{Micros, Status, Task};

/// RPCs served, by `method` (the gRPC path) and `code` (the gRPC status name).
pub const RPCS: &str = "jct_rpc_requests_total";
/// Time from a call's request to its final status, by `method` (a stream's
/// lifetime for streaming methods).
pub const RPC_DURATION: &str = "jct_rpc_duration_seconds";
/// Enqueue calls by `result` (`accepted`, `validated`, `rejected`) and `reason`.
pub const ENQUEUES: &str = "jct_enqueues_total";
/// Tasks by `status`, read from the store at scrape time.
pub const TASKS: &str = "jct_tasks";
/// Seconds the longest-waiting queued task has been queued (0: nothing queued).
pub const OLDEST_QUEUED_AGE: &str = "jct_oldest_queued_age_seconds";
/// Whether the store answered the last scrape's queries (1) or not (0).
pub const DATABASE_UP: &str = "jct_database_up";
/// From entering the queue to being claimed for a worker.
pub const QUEUE_WAIT: &str = "jct_queue_wait_seconds";
/// From start to a terminal state, by `outcome` (`completed`, `failed`, `cancelled`).
pub const RUN_TIME: &str = "jct_task_run_seconds";
/// Workers attached to this intake.
pub const WORKERS: &str = "jct_workers_connected";
/// Task slots the attached workers offer, and how many hold a task.
pub const CAPACITY: &str = "jct_worker_capacity_slots";
pub const SLOTS_IN_USE: &str = "jct_worker_slots_in_use";
/// Leases that expired (their worker stopped renewing).
pub const LEASE_EXPIRIES: &str = "jct_lease_expiries_total";
/// Running tasks put back in the queue, by `why` (`undelivered`, `handed_back`,
/// `worker_lost`).
pub const REQUEUES: &str = "jct_requeues_total";
/// Tasks failed with `WORKER_LOST` after their last allowed attempt.
pub const WORKER_LOST: &str = "jct_worker_lost_total";

/// Every name above, for the dashboard check and the metrics test.
pub const ALL: &[&str] = &[
    RPCS,
    RPC_DURATION,
    ENQUEUES,
    TASKS,
    OLDEST_QUEUED_AGE,
    DATABASE_UP,
    QUEUE_WAIT,
    RUN_TIME,
    WORKERS,
    CAPACITY,
    SLOTS_IN_USE,
    LEASE_EXPIRIES,
    REQUEUES,
    WORKER_LOST,
];

fn seconds_between(from: Micros, to: Micros) -> f64 {
    to.saturating_sub(from).max(0) as f64 / 1e6
}

pub fn rpc(method: &'static str, code: tonic::Code, elapsed: Duration) {
    counter!(RPCS, "method" => method, "code" => jct::reasons::code_name(code)).increment(1);
    histogram!(RPC_DURATION, "method" => method).record(elapsed.as_secs_f64());
}

/// `reason` is a stable reason (a closed set), empty when accepted.
pub fn enqueue(result: &'static str, reason: &str) {
    counter!(ENQUEUES, "result" => result, "reason" => reason.to_string()).increment(1);
}

/// A task claimed for a worker: how long it waited in the queue.
pub fn claimed(task: &Task) {
    if let (Some(queued), Some(started)) = (task.queued_at, task.started_at) {
        histogram!(QUEUE_WAIT).record(seconds_between(queued, started));
    }
}

/// A task reached a terminal state: how long it ran, if it started.
pub fn finished(task: &Task) {
    if !task.status.is_terminal() {
        return;
    }
    if let (Some(started), Some(done)) = (task.started_at, task.completed_at) {
        histogram!(RUN_TIME, "outcome" => task.status.as_str())
            .record(seconds_between(started, done));
    }
}

pub fn requeued(why: &'static str) {
    counter!(REQUEUES, "why" => why).increment(1);
}

pub fn worker_lost() {
    counter!(WORKER_LOST).increment(1);
}

pub fn lease_expired() {
    counter!(LEASE_EXPIRIES).increment(1);
}

/// Sets the gauges read from state: the queue from the store (two index-backed
/// queries) and the attached workers from the dispatcher.
pub async fn refresh(store: &Store, dispatcher: &Dispatcher) {
    let workers = dispatcher.connected_workers();
    gauge!(WORKERS).set(workers.len() as f64);
    gauge!(CAPACITY).set(workers.iter().map(|w| f64::from(w.capacity)).sum::<f64>());
    gauge!(SLOTS_IN_USE).set(workers.iter().map(|w| f64::from(w.in_flight)).sum::<f64>());

    match tokio::try_join!(store.count_by_status(), store.oldest_queued_at()) {
        Ok((counts, oldest)) => {
            gauge!(DATABASE_UP).set(1.0);
            for status in Status::ALL {
                let n = counts.get(status.as_str()).copied().unwrap_or(0);
                gauge!(TASKS, "status" => status.as_str()).set(n as f64);
            }
            let age = oldest.map_or(0.0, |queued| {
                seconds_between(queued, crate::task::now_micros())
            });
            gauge!(OLDEST_QUEUED_AGE).set(age);
        }
        // the last known queue stays; the outage is its own series
        Err(_) => gauge!(DATABASE_UP).set(0.0),
    }
}
