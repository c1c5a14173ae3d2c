//! Push dispatch: connected workers hold one bidirectional stream each
//! ([`session`]); the [`pump`] claims the oldest queued tasks for workers with free
//! slots as soon as a commit makes tasks available, and sends them down those
//! streams under leases. The [`rescuer`] returns tasks whose lease expired, and
//! cancellations reach the worker holding the task ([`cancels`]).
//!
//! Leases, not streams, are the truth: a task's lease lives in the database, so a
//! worker that reconnects (to this replica or another) keeps its tasks, and a
//! worker presumed dead cannot report over a newer attempt.
//!
//! Everything here speaks [`messages`]; the gRPC handler converts them to and
//! from the wire (`api::dispatch_service`).

mod answers;
mod cancels;
pub mod messages;
mod pump;
mod registry;
mod rescuer;
mod session;

pub use registry::WorkerIdTaken;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::store::{RetryPolicy, Store};

use messages::WorkerSummary;
use registry::Registry;

#[derive(Debug, Clone, Copy)]
pub struct DispatchConfig {
    /// How long a lease lasts without renewal.
    pub lease_ttl: Duration,
    pub retry: RetryPolicy,
    /// Most tasks claimed for one worker in one statement.
    pub max_claim_batch: u32,
    /// How long the dispatcher sleeps without a wake-up before it looks at the
    /// queue anyway (a safety net, not the dispatch path: commits wake it).
    pub idle_recheck: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(30),
            retry: RetryPolicy {
                backoff_base: Duration::from_secs(1),
                backoff_max: Duration::from_secs(300),
            },
            max_claim_batch: 64,
            idle_recheck: Duration::from_secs(5),
        }
    }
}

impl DispatchConfig {
    /// Workers renew three times per lease, so one lost heartbeat costs nothing.
    pub fn heartbeat_interval(&self) -> Duration {
        self.lease_ttl / 3
    }
}

/// The dispatcher of this intake. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: DispatchConfig,
    registry: Mutex<Registry>,
    /// Wakes the pump: tasks became available, or a worker gained free slots.
    wake: Arc<Notify>,
    shutdown: CancellationToken,
}

impl Dispatcher {
    pub fn new(store: Store, config: DispatchConfig, shutdown: CancellationToken) -> Self {
        let wake = store.events().task_queued.clone();
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                registry: Mutex::new(Registry::default()),
                wake,
                shutdown,
            }),
        }
    }

    /// Starts the pump, the rescuer and the cancellation forwarder; they stop with
    /// the shutdown token.
    pub fn spawn(&self, tasks: &mut JoinSet<()>) {
        tasks.spawn(pump::run(self.clone()));
        tasks.spawn(rescuer::run(self.clone()));
        tasks.spawn(cancels::run(self.clone()));
    }

    pub fn connected_workers(&self) -> Vec<WorkerSummary> {
        self.registry()
            .sessions()
            .map(|session| WorkerSummary {
                worker_id: session.worker_id.clone(),
                capacity: session.capacity,
                in_flight: u32::try_from(session.held.len()).unwrap_or(u32::MAX),
                executor: session.executor.clone(),
                version: session.version.clone(),
                draining: session.draining,
            })
            .collect()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // a panic while holding the lock leaves consistent maps (updates are single
        // inserts/removes), so a poisoned lock is still usable
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn config(&self) -> &DispatchConfig {
        &self.inner.config
    }

    fn wake_pump(&self) {
        self.inner.wake.notify_one();
    }
}
