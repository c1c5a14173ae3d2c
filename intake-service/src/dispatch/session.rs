//! `jct.v1.DispatchService/Attach`: one bidirectional stream per worker. The
//! worker says hello (id, capacity, tasks it still holds), then reports and
//! heartbeats; the intake sends assignments, acknowledgements and cancellations.
//!
//! A stream that ends while the intake runs means the worker is gone: its tasks
//! return to the queue (after a backoff). A stream cut by the intake's own
//! shutdown hands back nothing: the worker reconnects, presents its leases and
//! keeps its tasks.

use std::collections::HashMap;
use std::time::Duration;

use jct::reasons;
use jct::v1 as pb;
use jct::v1::worker_message::Kind as Inbound;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};
use uuid::Uuid;

use crate::api::errors::{status, validation_failed};
use crate::api::task_service::transition_from_request;
use crate::store::Release;

use super::Dispatcher;
use super::registry::{Outbox, Session, SessionId};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CAPACITY: u32 = 1024;
/// Room for every assignment a worker may hold plus acks and control messages.
const OUTBOX_SLACK: usize = 256;

pub struct DispatchApi {
    dispatcher: Dispatcher,
}

impl DispatchApi {
    pub fn new(dispatcher: Dispatcher) -> Self {
        Self { dispatcher }
    }
}

type DispatchStream = ReceiverStream<Result<pb::DispatchMessage, Status>>;

#[tonic::async_trait]
impl pb::dispatch_service_server::DispatchService for DispatchApi {
    type AttachStream = DispatchStream;

    async fn attach(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<DispatchStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(pb::WorkerMessage {
                kind: Some(Inbound::Hello(hello)),
            }))) => hello,
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(Status::deadline_exceeded("no WorkerHello within 10 s")),
            Ok(Ok(_)) => {
                return Err(validation_failed([(
                    "hello",
                    "the first message must be a WorkerHello",
                )]));
            }
        };
        check_hello(&hello)?;

        let capacity = hello.capacity;
        let (outbox, receiver) = mpsc::channel(capacity as usize + OUTBOX_SLACK);
        let session = Session {
            worker_id: hello.worker_id.clone(),
            capacity,
            executor: hello.executor.clone(),
            version: hello.version.clone(),
            draining: false,
            held: HashMap::new(),
            outbox: outbox.clone(),
        };
        let (session_id, replaced) = self.dispatcher.registry().register(session);
        info!(worker_id = %hello.worker_id, capacity, "worker attached");

        let dispatcher = self.dispatcher.clone();
        tokio::spawn(async move {
            adopt(&dispatcher, session_id, &outbox, &hello.held, replaced).await;
            dispatcher.wake_pump();
            serve(&dispatcher, session_id, &outbox, inbound).await;
            detach(&dispatcher, session_id, &hello.worker_id).await;
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

fn check_hello(hello: &pb::WorkerHello) -> Result<(), Status> {
    let mut violations = Vec::new();
    if hello.worker_id.is_empty() || hello.worker_id.chars().count() > 256 {
        violations.push(("hello.worker_id", "must be 1-256 characters"));
    }
    if hello.capacity == 0 || hello.capacity > MAX_CAPACITY {
        violations.push(("hello.capacity", "must be 1-1024"));
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(validation_failed(violations))
    }
}

/// Takes over the tasks a reconnecting worker still runs, if their leases are
/// current; tasks of a replaced session that the worker no longer runs are lost.
async fn adopt(
    dispatcher: &Dispatcher,
    session: SessionId,
    outbox: &Outbox,
    held: &[pb::LeaseRef],
    replaced: Option<Session>,
) {
    let presented: Vec<(Uuid, Uuid)> = held
        .iter()
        .filter_map(|lease| {
            Some((
                Uuid::parse_str(&lease.task_id).ok()?,
                Uuid::parse_str(&lease.lease_token).ok()?,
            ))
        })
        .collect();
    let renewed = match dispatcher
        .store()
        .renew(&presented, dispatcher.config().lease_ttl)
        .await
    {
        Ok(renewed) => renewed,
        Err(error) => {
            // leave them unadopted; the worker's reports still carry the leases
            warn!(%error, "could not renew presented leases");
            Vec::new()
        }
    };
    {
        let mut registry = dispatcher.registry();
        for (task, lease) in &presented {
            if renewed.contains(task) {
                registry.hold(session, *task, *lease);
            } else {
                let _ = outbox.try_send(Ok(lease_lost(*task, *lease)));
            }
        }
    }
    let Some(old) = replaced else { return };
    for (task, lease) in old.held {
        if !presented.iter().any(|(t, _)| *t == task) {
            release(dispatcher, task, lease, Release::WorkerLost).await;
        }
    }
}

async fn serve(
    dispatcher: &Dispatcher,
    session: SessionId,
    outbox: &Outbox,
    mut inbound: Streaming<pb::WorkerMessage>,
) {
    let shutdown = dispatcher.inner.shutdown.clone();
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = outbox.try_send(Err(status(
                    tonic::Code::Unavailable,
                    reasons::SHUTTING_DOWN,
                    "the intake is shutting down; reconnect and present your leases",
                )));
                return;
            }
            _ = outbox.closed() => return,
            message = inbound.message() => message,
        };
        let kind = match message {
            Ok(Some(pb::WorkerMessage { kind: Some(kind) })) => kind,
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return,
        };
        match kind {
            Inbound::Report(report) => {
                let (dispatcher, outbox) = (dispatcher.clone(), outbox.clone());
                // reports of one worker commit concurrently (and batch together)
                tokio::spawn(
                    async move { handle_report(&dispatcher, session, &outbox, report).await },
                );
            }
            Inbound::Heartbeat(heartbeat) => {
                let (dispatcher, outbox) = (dispatcher.clone(), outbox.clone());
                tokio::spawn(async move { renew(&dispatcher, session, &outbox, heartbeat).await });
            }
            Inbound::Drain(_) => {
                info!(session, "worker draining");
                dispatcher.registry().set_draining(session);
            }
            Inbound::Hello(_) => {
                let _ = outbox.try_send(Err(validation_failed([(
                    "hello",
                    "sent twice on one stream",
                )])));
                return;
            }
        }
    }
}

/// The stream ended: unless the intake is shutting down, the worker is gone.
async fn detach(dispatcher: &Dispatcher, session: SessionId, worker_id: &str) {
    let Some(gone) = dispatcher.registry().remove(session) else {
        return; // replaced by a newer session of the same worker
    };
    if dispatcher.inner.shutdown.is_cancelled() {
        info!(%worker_id, held = gone.held.len(), "worker detached at shutdown; leases kept");
        return;
    }
    info!(%worker_id, held = gone.held.len(), "worker detached; its tasks return to the queue");
    for (task, lease) in gone.held {
        release(dispatcher, task, lease, Release::WorkerLost).await;
    }
    dispatcher.wake_pump();
}

async fn release(dispatcher: &Dispatcher, task: Uuid, lease: Uuid, why: Release) {
    if let Err(error) = dispatcher
        .store()
        .release(task, lease, why, &dispatcher.config().retry)
        .await
    {
        // the lease expires and the rescuer queues the task again
        warn!(task_id = %task, %error, "could not release a task");
    }
}

async fn handle_report(
    dispatcher: &Dispatcher,
    session: SessionId,
    outbox: &Outbox,
    report: pb::TaskReport,
) {
    let task_id = report.task_id.clone();
    let outcome = apply_report(dispatcher, &report).await;
    let (accepted, reason, message, settled) = match outcome {
        Ok(final_report) => (true, String::new(), String::new(), final_report),
        Err(status) => {
            let reason = tonic_types::StatusExt::get_details_error_info(&status)
                .map(|info| info.reason)
                .unwrap_or_default();
            // unavailability is worth a retry; any other refusal is final
            let retryable = status.code() == tonic::Code::Unavailable;
            (false, reason, status.message().to_string(), !retryable)
        }
    };
    if settled && let Ok(id) = Uuid::parse_str(&task_id) {
        dispatcher.registry().release(session, id);
        dispatcher.wake_pump();
    }
    let ack = pb::DispatchMessage {
        kind: Some(pb::dispatch_message::Kind::ReportAck(pb::ReportAck {
            report_id: report.report_id,
            task_id,
            accepted,
            reason,
            message,
        })),
    };
    let _ = outbox.send(Ok(ack)).await;
}

/// Applies one report; returns whether the worker is done with the task.
async fn apply_report(dispatcher: &Dispatcher, report: &pb::TaskReport) -> Result<bool, Status> {
    if report.status == "released" {
        let (Ok(task), Ok(lease)) = (
            Uuid::parse_str(&report.task_id),
            Uuid::parse_str(&report.lease_token),
        ) else {
            return Err(validation_failed([(
                "report",
                "task_id and lease_token must be UUIDs",
            )]));
        };
        dispatcher
            .store()
            .release(task, lease, Release::HandedBack, &dispatcher.config().retry)
            .await
            .map_err(crate::api::errors::from_store)?;
        return Ok(true);
    }
    let request = pb::UpdateStatusRequest {
        task_id: report.task_id.clone(),
        status: report.status.clone(),
        result: report.result.clone(),
        error: report.error.clone(),
        trace_uri: report.trace_uri.clone(),
        lease_token: report.lease_token.clone(),
    };
    let change = transition_from_request(&request)?;
    if change.lease_token.is_none() {
        return Err(validation_failed([(
            "report.lease_token",
            "is required on a worker's report",
        )]));
    }
    let settles = change.to.is_terminal();
    dispatcher
        .store()
        .transition(change)
        .await
        .map(|_| settles)
        .map_err(|error| crate::api::errors::from_transition(error, &report.task_id))
}

async fn renew(
    dispatcher: &Dispatcher,
    session: SessionId,
    outbox: &Outbox,
    heartbeat: pb::Heartbeat,
) {
    let leases: Vec<(Uuid, Uuid)> = heartbeat
        .leases
        .iter()
        .filter_map(|l| {
            Some((
                Uuid::parse_str(&l.task_id).ok()?,
                Uuid::parse_str(&l.lease_token).ok()?,
            ))
        })
        .collect();
    let renewed = match dispatcher
        .store()
        .renew(&leases, dispatcher.config().lease_ttl)
        .await
    {
        Ok(renewed) => renewed,
        Err(error) => {
            warn!(%error, "lease renewal failed; the worker will retry");
            return;
        }
    };
    let mut registry = dispatcher.registry();
    for (task, lease) in leases {
        if renewed.contains(&task) {
            continue;
        }
        let _ = outbox.try_send(Ok(lease_lost(task, lease)));
        registry.release(session, task);
    }
    drop(registry);
    dispatcher.wake_pump();
}

fn lease_lost(task: Uuid, lease: Uuid) -> pb::DispatchMessage {
    pb::DispatchMessage {
        kind: Some(pb::dispatch_message::Kind::LeaseLost(pb::LeaseLost {
            task_id: task.to_string(),
            lease_token: lease.to_string(),
        })),
    }
}
