//! The worker's stream to the intake: attach, receive assignments, send reports
//! and heartbeats, and reconnect with backoff whenever the stream breaks (intake
//! restart, network), presenting the leases of the tasks still running so the
//! intake lets the worker keep them.
//!
//! Reports survive reconnects: each waits for its acknowledgement and is sent
//! again on the next stream until the intake answers it (what an answer means is
//! [`crate::reporter`]'s business).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jct::v1 as pb;
use jct::v1::dispatch_message::Kind as Inbound;
use jct::v1::dispatch_service_client::DispatchServiceClient;
use jct::v1::worker_message::Kind as Outbound;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::health::Health;
use crate::intake::IntakeLink;
use crate::reporter::{PendingReport, ReportQueue};
use crate::runner::{self, RunnerContext, StopReason, TaskControl};

const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Until the first assignment says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// A task running on this worker.
pub struct Running {
    pub lease_token: String,
    pub control: Arc<TaskControl>,
}

/// Tasks running now, by id.
pub type RunningTasks = Arc<Mutex<HashMap<Uuid, Running>>>;

/// Everything the stream loop needs.
pub struct Session {
    pub intake: IntakeLink,
    pub worker_id: String,
    pub capacity: u32,
    pub executor: String,
    pub running: RunningTasks,
    pub runner: Arc<RunnerContext>,
    pub draining: Arc<AtomicBool>,
    pub drain_requested: Arc<tokio::sync::Notify>,
    pub health: Health,
    reports: mpsc::UnboundedReceiver<PendingReport>,
    pending: HashMap<u64, PendingReport>,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        intake: IntakeLink,
        worker_id: String,
        capacity: u32,
        executor: String,
        running: RunningTasks,
        runner: Arc<RunnerContext>,
        queue: ReportQueue,
        health: Health,
    ) -> Self {
        Self {
            intake,
            worker_id,
            capacity,
            executor,
            running,
            runner,
            draining: Arc::new(AtomicBool::new(false)),
            drain_requested: Arc::new(tokio::sync::Notify::new()),
            health,
            reports: queue.0,
            pending: HashMap::new(),
        }
    }

    /// Runs until `stopped`: attaches, serves the stream, reattaches.
    pub async fn run(mut self, stopped: CancellationToken) {
        let mut failures = 0u32;
        while !stopped.is_cancelled() {
            match self.attach_once(&stopped).await {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_multiple_of(20) {
                        warn!(intake = %self.intake.url, %error, failures, "intake unreachable; retrying");
                    }
                }
            }
            self.health.set_attached(false).await;
            if stopped.is_cancelled() {
                break;
            }
            let pause = backoff(failures);
            tokio::select! {
                _ = stopped.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn attach_once(&mut self, stopped: &CancellationToken) -> Result<(), tonic::Status> {
        let authorization = self
            .intake
            .authorization()
            .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
        let channel = self
            .intake
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = DispatchServiceClient::new(channel);
        let (outbox, outbound) = mpsc::channel::<pb::WorkerMessage>(self.capacity as usize + 256);
        let held = self.leases();
        let hello = pb::WorkerHello {
            worker_id: self.worker_id.clone(),
            capacity: self.capacity,
            executor: self.executor.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            held,
        };
        let _ = outbox.send(message(Outbound::Hello(hello))).await;
        if self.draining.load(Ordering::SeqCst) {
            let _ = outbox.send(message(Outbound::Drain(pb::Drain {}))).await;
        }
        // reports not yet acknowledged go again on the new stream
        for pending in self.pending.values() {
            let _ = outbox.try_send(message(Outbound::Report(pending.report.clone())));
        }
        let mut request = tonic::Request::new(ReceiverStream::new(outbound));
        if let Some(authorization) = authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization);
        }
        let mut inbound = client.attach(request).await?.into_inner();
        info!(intake = %self.intake.url, worker_id = %self.worker_id, "attached to the intake");
        self.health
            .set_attached(!self.draining.load(Ordering::SeqCst))
            .await;

        let mut heartbeat_every = DEFAULT_HEARTBEAT;
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let drain_requested = self.drain_requested.clone();
        loop {
            tokio::select! {
                _ = stopped.cancelled() => return Ok(()),
                message = inbound.message() => {
                    let Some(message) = message? else { return Ok(()) };
                    if let Some(interval) = self.handle(message, &outbox).await
                        && interval != heartbeat_every
                    {
                        heartbeat_every = interval;
                        heartbeat = tokio::time::interval(interval);
                        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
                Some(pending) = self.reports.recv() => {
                    let report = pending.report.clone();
                    if pending.ack.is_some() {
                        self.pending.insert(report.report_id, pending);
                    }
                    if outbox.send(message(Outbound::Report(report))).await.is_err() {
                        return Ok(());
                    }
                }
                _ = heartbeat.tick() => {
                    let leases = self.leases();
                    if !leases.is_empty() {
                        let _ = outbox.send(message(Outbound::Heartbeat(pb::Heartbeat { leases }))).await;
                    }
                }
                _ = drain_requested.notified() => {
                    let _ = outbox.send(message(Outbound::Drain(pb::Drain {}))).await;
                    self.health.set_attached(false).await;
                }
            }
        }
    }

    /// Handles one message from the intake; returns a new heartbeat interval if
    /// an assignment carried one.
    async fn handle(
        &mut self,
        message: pb::DispatchMessage,
        outbox: &mpsc::Sender<pb::WorkerMessage>,
    ) -> Option<Duration> {
        match message.kind? {
            Inbound::Assignment(assignment) => {
                let interval =
                    Duration::from_millis(u64::from(assignment.heartbeat_interval_ms.max(100)));
                self.start(assignment, outbox).await;
                Some(interval)
            }
            Inbound::ReportAck(ack) => {
                if let Some(pending) = self.pending.remove(&ack.report_id)
                    && let Some(reply) = pending.ack
                {
                    if !ack.accepted {
                        debug!(task_id = %ack.task_id, reason = %ack.reason, message = %ack.message, "report refused");
                    }
                    let _ = reply.send(ack);
                }
                None
            }
            Inbound::Cancel(cancel) => {
                self.stop_task(&cancel.task_id, &cancel.lease_token, StopReason::Cancelled);
                None
            }
            Inbound::LeaseLost(lost) => {
                self.stop_task(&lost.task_id, &lost.lease_token, StopReason::LeaseLost);
                None
            }
        }
    }

    async fn start(
        &mut self,
        assignment: pb::Assignment,
        outbox: &mpsc::Sender<pb::WorkerMessage>,
    ) {
        let Some(task_id) = assignment
            .task
            .as_ref()
            .and_then(|t| Uuid::parse_str(&t.id).ok())
        else {
            return;
        };
        if self.draining.load(Ordering::SeqCst) {
            // assigned before the intake saw our Drain: hand it straight back
            let released = pb::TaskReport {
                task_id: task_id.to_string(),
                lease_token: assignment.lease_token.clone(),
                status: pb::ReportStatus::Released.into(),
                ..Default::default()
            };
            let _ = outbox.send(message(Outbound::Report(released))).await;
            return;
        }
        let received_at = crate::trace::now_rfc3339();
        let control = Arc::new(TaskControl::default());
        if let Ok(mut running) = self.running.lock() {
            if running.contains_key(&task_id) {
                return; // a re-delivery of a task already running here
            }
            running.insert(
                task_id,
                Running {
                    lease_token: assignment.lease_token.clone(),
                    control: control.clone(),
                },
            );
        }
        let (context, running) = (self.runner.clone(), self.running.clone());
        tokio::spawn(async move {
            let _slot = crate::metrics::SlotInUse::take();
            runner::run(context, assignment, control, received_at).await;
            if let Ok(mut running) = running.lock() {
                running.remove(&task_id);
            }
        });
    }

    fn stop_task(&self, task_id: &str, lease_token: &str, reason: StopReason) {
        let Ok(id) = Uuid::parse_str(task_id) else {
            return;
        };
        if let Ok(running) = self.running.lock()
            && let Some(task) = running.get(&id)
            && task.lease_token == lease_token
        {
            info!(%task_id, ?reason, "stopping task");
            task.control.stop(reason);
        }
    }

    fn leases(&self) -> Vec<pb::LeaseRef> {
        self.running
            .lock()
            .map(|running| {
                running
                    .iter()
                    .map(|(id, task)| pb::LeaseRef {
                        task_id: id.to_string(),
                        lease_token: task.lease_token.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn message(kind: Outbound) -> pb::WorkerMessage {
    pb::WorkerMessage { kind: Some(kind) }
}

/// Capped exponential backoff with jitter.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.min(16);
    let delay = RECONNECT_MIN
        .saturating_mul(1u32 << exponent.min(10))
        .min(RECONNECT_MAX);
    delay.mul_f64(rand::rng().random_range(0.5..=1.0))
}
