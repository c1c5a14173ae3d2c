//! The worker's Prometheus metrics, every name in one place (the dashboard check
//! reads them from here). Served at `/metrics` on `JCT_WORKER_METRICS_ADDR`.

use metrics::{counter, gauge};

/// Runs that ended, by `outcome` (`completed`, `failed`, `cancelled`, `released`,
/// `lease_lost`).
pub const RUNS: &str = "jct_worker_runs_total";
/// Programs the executor killed, by `cause` (`time_budget`, `stopped`: cancelled,
/// lease lost or the worker draining).
pub const EXECUTOR_KILLS: &str = "jct_worker_executor_kills_total";
/// Trace writes that failed (each is also listed in the run's manifest).
pub const TRACE_WRITE_FAILURES: &str = "jct_worker_trace_write_failures_total";
/// Tasks this worker is running now.
pub const SLOTS_IN_USE: &str = "jct_worker_running_tasks";
/// Tasks this worker runs at once.
pub const CAPACITY: &str = "jct_worker_capacity";

pub const ALL: &[&str] = &[
    RUNS,
    EXECUTOR_KILLS,
    TRACE_WRITE_FAILURES,
    SLOTS_IN_USE,
    CAPACITY,
];

pub fn run_ended(outcome: &'static str) {
    counter!(RUNS, "outcome" => outcome).increment(1);
}

pub fn executor_killed(cause: &'static str) {
    counter!(EXECUTOR_KILLS, "cause" => cause).increment(1);
}

pub fn trace_write_failed() {
    counter!(TRACE_WRITE_FAILURES).increment(1);
}

pub fn capacity(slots: u32) {
    gauge!(CAPACITY).set(f64::from(slots));
}

/// Counts a run in the slots in use for as long as it lives.
pub struct SlotInUse(());

impl SlotInUse {
    pub fn take() -> Self {
        gauge!(SLOTS_IN_USE).increment(1.0);
        SlotInUse(())
    }
}

impl Drop for SlotInUse {
    fn drop(&mut self) {
        gauge!(SLOTS_IN_USE).decrement(1.0);
    }
}
