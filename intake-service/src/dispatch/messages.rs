//! What the dispatcher and a worker say to each other, in domain terms. The wire
//! form (`jct.v1.DispatchService`) is read and written in one place,
//! `api::dispatch_service`; nothing under `dispatch/` sees protobuf or gRPC.

use std::time::Duration;

use uuid::Uuid;

use crate::policy::FieldViolation;
use crate::store::{StoreError, Transition, TransitionError};
use crate::task::{Micros, Status, Task};

/// The most tasks one worker may run at once.
pub const MAX_CAPACITY: u32 = 1024;

/// One lease: a task and the token its holder presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRef {
    pub task_id: Uuid,
    pub lease_token: Uuid,
}

/// The first message on a stream, already checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Who authenticated the stream: a worker id belongs to one principal.
    pub principal: String,
    pub worker_id: String,
    pub capacity: u32,
    pub executor: String,
    pub version: String,
    /// Tasks the worker still runs from an earlier stream.
    pub held: Vec<LeaseRef>,
}

/// Everything a worker sends after its hello.
#[derive(Debug)]
pub enum FromWorker {
    Report(Report),
    Heartbeat(Vec<LeaseRef>),
    Drain,
    /// A second hello on one stream: a protocol error that ends the stream.
    HelloAgain,
}

/// A worker's report, read off the wire. A report that fails validation still
/// carries its id so that the refusal can be acknowledged.
#[derive(Debug)]
pub struct Report {
    pub report_id: u64,
    /// As the worker sent it (echoed in the acknowledgement).
    pub task_id: String,
    pub change: Result<ReportChange, Vec<FieldViolation>>,
}

/// What a valid report asks for.
#[derive(Debug)]
pub enum ReportChange {
    /// A status change under the worker's lease.
    Transition(Transition),
    /// The worker hands the task back unfinished (it is shutting down).
    Release(LeaseRef),
}

/// Everything the dispatcher sends to a worker.
#[derive(Debug)]
pub enum ToWorker {
    // boxed: a task is large, and every message in an outbox is the size of the largest
    Assign(Box<Assignment>),
    Ack(Ack),
    Cancel(LeaseRef),
    LeaseLost(LeaseRef),
    /// The stream ends with this error.
    Close(Closing),
}

/// A claimed task handed to a worker.
#[derive(Debug)]
pub struct Assignment {
    pub task: Task,
    pub lease_token: Uuid,
    pub lease_expires_at: Micros,
    pub attempt: i32,
    pub heartbeat_interval: Duration,
}

/// The answer to one report.
#[derive(Debug)]
pub struct Ack {
    pub report_id: u64,
    pub task_id: String,
    pub outcome: Result<(), Refusal>,
}

/// Why a report changed nothing.
#[derive(Debug)]
pub enum Refusal {
    Invalid(Vec<FieldViolation>),
    Transition(TransitionError),
    /// `released` for a task that has already reached `status` under this lease:
    /// nothing to hand back.
    AlreadyFinished {
        status: Status,
    },
}

impl From<TransitionError> for Refusal {
    fn from(error: TransitionError) -> Self {
        Refusal::Transition(error)
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        Refusal::Transition(TransitionError::Store(error))
    }
}

/// Why the dispatcher ends a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The intake is stopping: reconnect (to it or another replica) and present
    /// the leases.
    ShuttingDown,
    /// The worker sent a second hello.
    HelloTwice,
}

/// A connected worker, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSummary {
    pub worker_id: String,
    pub capacity: u32,
    pub in_flight: u32,
    pub executor: String,
    pub version: String,
    pub draining: bool,
}
