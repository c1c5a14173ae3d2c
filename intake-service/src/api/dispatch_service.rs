//! `jct.v1.DispatchService/Attach`, the wire side of a worker's stream: the one
//! place where worker messages are read into the dispatcher's domain messages
//! (checked field by field) and its answers written back as protobuf and gRPC
//! statuses. The dispatcher itself knows no wire type.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use jct::v1 as pb;
use jct::v1::worker_message::Kind as Inbound;
use jct::{reasons, text};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::auth::refusals::RefusalLog;
use crate::dispatch::messages::{
    Ack, Assignment, Closing, FromWorker, Hello, LeaseRef, MAX_CAPACITY, Refusal, Report,
    ReportChange, ToWorker,
};
use crate::dispatch::{Dispatcher, WorkerIdTaken};
use crate::policy::FieldViolation;
use crate::store::audit::ATTACH_METHOD;

use super::caller::caller;
use super::convert::{task_to_pb, timestamp};
use super::errors::{Failure, status, transition_failure, validation_failed, validation_message};
use super::status_change::{StatusFields, read_transition, report_status};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_WORKER_ID_CHARS: usize = 256;
/// Longest executor name or version a worker may announce.
const MAX_LABEL_CHARS: usize = 128;

pub struct DispatchApi {
    dispatcher: Dispatcher,
    /// A refused takeover of another principal's worker id is a denied call.
    refusals: RefusalLog,
}

impl DispatchApi {
    pub fn new(dispatcher: Dispatcher, refusals: RefusalLog) -> Self {
        Self {
            dispatcher,
            refusals,
        }
    }
}

type DispatchStream = Pin<Box<dyn Stream<Item = Result<pb::DispatchMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::dispatch_service_server::DispatchService for DispatchApi {
    type AttachStream = DispatchStream;

    async fn attach(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<DispatchStream>, Status> {
        // a worker id belongs to the principal that attaches it
        let principal = caller(&request)?.name().to_string();
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
        let hello = read_hello(principal.clone(), hello).map_err(|violations| {
            validation_failed(
                violations
                    .iter()
                    .map(|v| (v.field.as_str(), v.description.as_str())),
            )
        })?;
        // a broken stream ends the session like a closed one
        let messages = inbound
            .take_while(|message| std::future::ready(message.is_ok()))
            .filter_map(|message| std::future::ready(message.ok().and_then(read_message)));
        let outbound = self.dispatcher.attach(hello, Box::pin(messages)).map_err(
            |WorkerIdTaken| {
                self.refusals.note(
                    &principal,
                    ATTACH_METHOD,
                    "denied",
                    reasons::WORKER_ID_TAKEN,
                );
                status(
                    Code::PermissionDenied,
                    reasons::WORKER_ID_TAKEN,
                    "this worker id is attached by another principal; use a worker id of your own",
                )
            },
        )?;
        let stream = ReceiverStream::new(outbound).map(write_message);
        Ok(Response::new(Box::pin(stream)))
    }
}

// === wire → domain ===

fn read_hello(principal: String, hello: pb::WorkerHello) -> Result<Hello, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    if hello.worker_id.is_empty() || hello.worker_id.chars().count() > MAX_WORKER_ID_CHARS {
        violations.push(violation(
            "hello.worker_id",
            format!("must be 1-{MAX_WORKER_ID_CHARS} characters"),
        ));
    } else if let Some(problem) = text::line_problem(&hello.worker_id) {
        // a worker id is written into every log line about the worker
        violations.push(violation("hello.worker_id", problem.to_string()));
    }
    for (field, value) in [
        ("hello.executor", &hello.executor),
        ("hello.version", &hello.version),
    ] {
        if value.chars().count() > MAX_LABEL_CHARS {
            violations.push(violation(
                field,
                format!("must be at most {MAX_LABEL_CHARS} characters"),
            ));
        } else if let Some(problem) = text::line_problem(value) {
            violations.push(violation(field, problem.to_string()));
        }
    }
    if hello.capacity == 0 || hello.capacity > MAX_CAPACITY {
        violations.push(violation(
            "hello.capacity",
            format!("must be 1-{MAX_CAPACITY}"),
        ));
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(Hello {
        principal,
        worker_id: hello.worker_id,
        capacity: hello.capacity,
        executor: hello.executor,
        version: hello.version,
        held: read_leases(&hello.held),
    })
}

/// Leases whose ids are not UUIDs cannot be current: they are left out.
fn read_leases(leases: &[pb::LeaseRef]) -> Vec<LeaseRef> {
    leases
        .iter()
        .filter_map(|lease| {
            Some(LeaseRef {
                task_id: Uuid::parse_str(&lease.task_id).ok()?,
                lease_token: Uuid::parse_str(&lease.lease_token).ok()?,
            })
        })
        .collect()
}

fn read_message(message: pb::WorkerMessage) -> Option<FromWorker> {
    Some(match message.kind? {
        Inbound::Report(report) => FromWorker::Report(read_report(report)),
        Inbound::Heartbeat(heartbeat) => FromWorker::Heartbeat(read_leases(&heartbeat.leases)),
        Inbound::Drain(_) => FromWorker::Drain,
        Inbound::Hello(_) => FromWorker::HelloAgain,
    })
}

fn read_report(report: pb::TaskReport) -> Report {
    let change = if report_status(&report) == pb::ReportStatus::Released {
        match (
            Uuid::parse_str(&report.task_id),
            Uuid::parse_str(&report.lease_token),
        ) {
            (Ok(task_id), Ok(lease_token)) => Ok(ReportChange::Release(LeaseRef {
                task_id,
                lease_token,
            })),
            _ => Err(vec![violation(
                "report",
                "task_id and lease_token must be UUIDs",
            )]),
        }
    } else {
        read_transition(&StatusFields::from(&report), "report.").and_then(|transition| {
            if transition.lease_token.is_none() {
                return Err(vec![violation(
                    "report.lease_token",
                    "is required on a worker's report",
                )]);
            }
            Ok(ReportChange::Transition(transition))
        })
    };
    Report {
        report_id: report.report_id,
        task_id: report.task_id,
        change,
    }
}

fn violation(field: &str, description: impl Into<String>) -> FieldViolation {
    FieldViolation {
        field: field.to_string(),
        description: description.into(),
    }
}

// === domain → wire ===

fn write_message(message: ToWorker) -> Result<pb::DispatchMessage, Status> {
    use pb::dispatch_message::Kind;
    let kind = match message {
        ToWorker::Assign(assignment) => Kind::Assignment(write_assignment(*assignment)),
        ToWorker::Ack(ack) => Kind::ReportAck(write_ack(ack)),
        ToWorker::Cancel(lease) => Kind::Cancel(pb::CancelTask {
            task_id: lease.task_id.to_string(),
            lease_token: lease.lease_token.to_string(),
        }),
        ToWorker::LeaseLost(lease) => Kind::LeaseLost(pb::LeaseLost {
            task_id: lease.task_id.to_string(),
            lease_token: lease.lease_token.to_string(),
        }),
        ToWorker::Close(closing) => return Err(write_closing(closing)),
    };
    Ok(pb::DispatchMessage { kind: Some(kind) })
}

fn write_assignment(assignment: Assignment) -> pb::Assignment {
    pb::Assignment {
        task: Some(task_to_pb(&assignment.task)),
        lease_token: assignment.lease_token.to_string(),
        lease_expires_at: Some(timestamp(assignment.lease_expires_at)),
        attempt: assignment.attempt,
        heartbeat_interval_ms: u32::try_from(assignment.heartbeat_interval.as_millis())
            .unwrap_or(u32::MAX),
    }
}

fn write_ack(ack: Ack) -> pb::ReportAck {
    let (accepted, reason, message) = match ack.outcome {
        Ok(()) => (true, String::new(), String::new()),
        Err(refusal) => {
            let failure = refusal_failure(refusal, &ack.task_id);
            (false, failure.reason.to_string(), failure.message)
        }
    };
    pb::ReportAck {
        report_id: ack.report_id,
        task_id: ack.task_id,
        accepted,
        reason,
        message,
    }
}

fn refusal_failure(refusal: Refusal, task_id: &str) -> Failure {
    match refusal {
        Refusal::Invalid(violations) => Failure::new(
            Code::InvalidArgument,
            reasons::VALIDATION_FAILED,
            validation_message(
                violations
                    .iter()
                    .map(|v| (v.field.as_str(), v.description.as_str())),
            ),
        ),
        Refusal::Transition(error) => transition_failure(error, task_id),
        Refusal::AlreadyFinished { status } => Failure::new(
            Code::FailedPrecondition,
            reasons::INVALID_TRANSITION,
            format!("task {task_id} is already {status}; there is nothing to release"),
        ),
    }
}

fn write_closing(closing: Closing) -> Status {
    match closing {
        Closing::ShuttingDown => status(
            Code::Unavailable,
            reasons::SHUTTING_DOWN,
            "the intake is shutting down; reconnect and present your leases",
        ),
        Closing::HelloTwice => validation_failed([("hello", "sent twice on one stream")]),
    }
}
