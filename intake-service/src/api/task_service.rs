//! `jct.v1.TaskService`: thin handlers that read the request, ask the policy gate
//! and the store, and write the answer.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use jct::reasons;
use jct::telemetry;
use jct::traceparent::Traceparent;
use jct::v1 as pb;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use crate::auth::Principal;
use crate::auth::refusals::RefusalLog;
use crate::metrics;
use crate::policy::{self, PolicyConfig};
use crate::store::{Actor, ListFilter, Store, TaskWatch, Transition};
use crate::task::Status as TaskStatus;

use super::caller::{caller, may_cancel, may_see, shown_to};
use super::convert::{draft_from_request, spec_to_pb};
use super::errors::{self, validation_failed};
use super::list_page;
use super::page_token::{PageTokenError, PageTokens};
use super::status_change::{StatusFields, read_transition};
use super::trace_context;

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 500;

/// What every TaskService call needs.
pub struct TaskApi {
    store: Store,
    policy: Arc<PolicyConfig>,
    max_attempts: i32,
    /// Cancelled when the intake drains: open watches end so the drain can finish.
    stopping: CancellationToken,
    page_tokens: PageTokens,
    refusals: RefusalLog,
    /// Bound of a ListTasks response, in bytes.
    list_max_bytes: usize,
}

impl TaskApi {
    pub fn new(
        store: Store,
        policy: PolicyConfig,
        max_attempts: i32,
        stopping: CancellationToken,
        page_tokens: PageTokens,
        refusals: RefusalLog,
    ) -> Self {
        Self {
            store,
            policy: Arc::new(policy),
            max_attempts,
            stopping,
            page_tokens,
            refusals,
            list_max_bytes: list_page::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Bounds ListTasks responses to `bytes` (at most 4 MiB).
    pub fn with_list_max_bytes(mut self, bytes: usize) -> Self {
        self.list_max_bytes = bytes.min(list_page::MAX_RESPONSE_BYTES);
        self
    }

    /// Enqueue's work; the trait method counts its outcome.
    /// `run_parent` is the trace context a stored task keeps for its runs.
    async fn admit_and_store(
        &self,
        request: Request<pb::EnqueueRequest>,
        run_parent: Traceparent,
    ) -> RpcResult<pb::EnqueueResponse> {
        let principal = caller(&request)?;
        let request = request.into_inner();
        let draft = draft_from_request(&request);
        let mut spec = policy::admit(draft, &self.policy).map_err(|rejection| {
            let status = errors::from_rejection(rejection);
            let reason = errors::reason_of(&status);
            self.refusals.note(
                principal.name(),
                "/jct.v1.TaskService/Enqueue",
                "rejected",
                &reason,
            );
            status
        })?;
        spec.submitted_by = principal.name().to_string();
        if request.validate_only {
            let mut task = spec_to_pb(&spec);
            task.status = TaskStatus::Queued.as_str().to_string();
            return Ok(Response::new(pb::EnqueueResponse {
                task_id: String::new(),
                status: TaskStatus::Queued.as_str().to_string(),
                task: Some(task),
                created: false,
            }));
        }
        // a dry run starts no run, so it names no trace; a stored task always does
        spec.traceparent = Some(run_parent.to_string());
        let enqueued = self
            .store
            .enqueue(spec, self.max_attempts)
            .await
            .map_err(|error| {
                let status = errors::from_store(error);
                // a key reused for another request is a rejected enqueue too
                if status.code() == tonic::Code::AlreadyExists {
                    self.refusals.note(
                        principal.name(),
                        "/jct.v1.TaskService/Enqueue",
                        "rejected",
                        &errors::reason_of(&status),
                    );
                }
                status
            })?;
        Ok(Response::new(pb::EnqueueResponse {
            task_id: enqueued.task.id.to_string(),
            status: enqueued.task.status.as_str().to_string(),
            task: Some(shown_to(&principal, &enqueued.task)),
            created: enqueued.created,
        }))
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

/// A task's states as `WatchTask` streams them.
pub type TaskStream = Pin<Box<dyn Stream<Item = Result<pb::Task, Status>> + Send>>;

#[tonic::async_trait]
impl pb::task_service_server::TaskService for TaskApi {
    type WatchTaskStream = TaskStream;
    async fn enqueue(
        &self,
        request: Request<pb::EnqueueRequest>,
    ) -> RpcResult<pb::EnqueueResponse> {
        let validate_only = request.get_ref().validate_only;
        let sent = trace_context::from_caller(request.metadata());
        let span = tracing::info_span!(
            "jct.v1.TaskService/Enqueue",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = "jct.v1.TaskService",
            rpc.method = "Enqueue",
            task_id = tracing::field::Empty,
        );
        if let Some(sent) = &sent {
            telemetry::set_remote_parent(&span, sent);
        }
        // the task's runs are children of this span when it is exported, so the
        // trace reads client → Enqueue → run; otherwise of the caller's span
        let run_parent = telemetry::traceparent_of(&span)
            .or(sent)
            .unwrap_or_else(trace_context::fresh);
        let answer = self
            .admit_and_store(request, run_parent)
            .instrument(span.clone())
            .await;
        if let Ok(response) = &answer
            && !response.get_ref().task_id.is_empty()
        {
            span.record("task_id", response.get_ref().task_id.as_str());
        }
        match &answer {
            Ok(_) if validate_only => metrics::enqueue("validated", ""),
            Ok(_) => metrics::enqueue("accepted", ""),
            Err(status) => metrics::enqueue("rejected", &errors::reason_of(status)),
        }
        answer
    }

    async fn get_task(&self, request: Request<pb::GetTaskRequest>) -> RpcResult<pb::Task> {
        let principal = caller(&request)?;
        let task_id = request.into_inner().task_id;
        let id = parse_task_id(&task_id)?;
        match self.store.get(id).await.map_err(errors::from_store)? {
            // another submitter's task is as absent as one that never existed
            Some(task) if may_see(&principal, &task) => {
                Ok(Response::new(shown_to(&principal, &task)))
            }
            _ => Err(errors::not_found(&task_id)),
        }
    }

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> RpcResult<Self::WatchTaskStream> {
        let principal = caller(&request)?;
        let task_id = request.into_inner().task_id;
        let id = parse_task_id(&task_id)?;
        // the owner never changes, so one look before the watch decides it
        let visible = self
            .store
            .get(id)
            .await
            .map_err(errors::from_store)?
            .is_some_and(|task| may_see(&principal, &task));
        if !visible {
            return Err(errors::not_found(&task_id));
        }
        match self.store.watch(id).await.map_err(errors::from_store)? {
            Some(watch) => Ok(Response::new(watch_stream(
                watch,
                principal,
                self.stopping.clone(),
            ))),
            None => Err(errors::not_found(&task_id)),
        }
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> RpcResult<pb::ListTasksResponse> {
        let principal = caller(&request)?;
        let request = request.into_inner();
        check_filters(&request)?;
        let filter = ListFilter {
            submitted_by: (!principal.sees_all_tasks()).then(|| principal.name().to_string()),
            status: non_empty(request.status),
            operation: non_empty(request.operation),
            requester_kind: non_empty(request.requester_kind),
            target_repo: non_empty(request.target_repo),
        };
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size < 0 => {
                return Err(validation_failed([("page_size", "must not be negative")]));
            }
            size => u64::try_from(size)
                .unwrap_or(MAX_PAGE_SIZE)
                .min(MAX_PAGE_SIZE),
        };
        let before = if request.page_token.is_empty() {
            None
        } else {
            Some(
                self.page_tokens
                    .decode(&request.page_token, principal.name(), &filter)
                    .map_err(|error| {
                        let hint = match error {
                            PageTokenError::Malformed => {
                                "pass the next_page_token of a previous page as it was"
                            }
                            PageTokenError::NotIssuedForThis => {
                                "keep the filters of the first page while paging, and page \
                                 only with tokens issued to you"
                            }
                        };
                        errors::status(
                            Code::InvalidArgument,
                            reasons::INVALID_PAGE_TOKEN,
                            format!("{error}: {hint}"),
                        )
                    })?,
            )
        };
        let view = list_page::view_of(request.view)?;
        let page = self
            .store
            .list(&filter, before, page_size, view, self.list_max_bytes as u64)
            .await
            .map_err(errors::from_store)?;
        let shown = list_page::fit(page, view, self.list_max_bytes, |task| {
            shown_to(&principal, task)
        });
        let next_page_token = shown
            .continue_after
            .map(|last| self.page_tokens.encode(last, principal.name(), &filter))
            .unwrap_or_default();
        Ok(Response::new(pb::ListTasksResponse {
            tasks: shown.tasks,
            next_page_token,
        }))
    }

    async fn update_status(
        &self,
        request: Request<pb::UpdateStatusRequest>,
    ) -> RpcResult<pb::Task> {
        let principal = caller(&request)?;
        let request = request.into_inner();
        // running, completed and failed come from the lease holder over the
        // dispatch stream; a client saying so could forge a result or strand a
        // task in `running` with no lease for the rescuer to expire. The contract
        // admits `cancelled` and nothing else, so any other status, spelled as a
        // status or not, is the worker's; only a missing one is a schema error.
        if !request.status.is_empty() && request.status != TaskStatus::Cancelled.as_str() {
            return Err(errors::worker_only_transition(&request.status));
        }
        let change = read_transition(&StatusFields::from(&request), "").map_err(|violations| {
            validation_failed(violations.iter().map(|v| {
                let description = match v.field.as_str() {
                    "status" => "is required; clients may set only \"cancelled\"",
                    _ => v.description.as_str(),
                };
                (v.field.as_str(), description)
            }))
        })?;
        // a lease and a trace location are a worker's to present
        let change = Transition {
            lease_token: None,
            trace_uri: None,
            actor: Some(Actor {
                principal: principal.name().to_string(),
                method: "/jct.v1.TaskService/UpdateStatus",
            }),
            ..change
        };
        if !principal.manages_all_tasks() {
            let own = self
                .store
                .get(change.task_id)
                .await
                .map_err(errors::from_store)?
                .is_some_and(|task| may_cancel(&principal, &task));
            if !own {
                return Err(errors::not_found(&request.task_id));
            }
        }
        let task = self
            .store
            .transition(change)
            .await
            .map_err(|error| errors::from_transition(error, &request.task_id))?;
        Ok(Response::new(shown_to(&principal, &task)))
    }
}

/// The watch as a response stream: a state is taken from the watch only when the
/// client has read the previous one (HTTP/2 flow control pulls the stream), so a
/// slow client holds one task, the latest. A draining intake ends the stream with
/// SHUTTING_DOWN, which tells the client to watch again elsewhere.
fn watch_stream(watch: TaskWatch, principal: Principal, stopping: CancellationToken) -> TaskStream {
    Box::pin(futures::stream::unfold(
        Some((watch, principal, stopping)),
        |state| async move {
            let (mut watch, principal, stopping) = state?;
            tokio::select! {
                next = watch.next() => {
                    let task = next?;
                    let shown = shown_to(&principal, &task);
                    Some((Ok(shown), Some((watch, principal, stopping))))
                }
                _ = stopping.cancelled() => Some((Err(errors::shutting_down()), None)),
            }
        },
    ))
}

/// Filters are matched exactly against stored values, which pass the text rules;
/// a filter that breaks them (or is longer than any stored value) is a client
/// error, never a query (a NUL would fail it on Postgres).
fn check_filters(request: &pb::ListTasksRequest) -> Result<(), Status> {
    const MAX_FILTER_CHARS: usize = 256;
    let filters = [
        ("status", &request.status),
        ("operation", &request.operation),
        ("requester_kind", &request.requester_kind),
        ("target_repo", &request.target_repo),
    ];
    let mut violations = Vec::new();
    for (field, value) in filters {
        let Some(value) = value else { continue };
        if value.chars().count() > MAX_FILTER_CHARS {
            violations.push((
                field,
                format!("must be at most {MAX_FILTER_CHARS} characters"),
            ));
        } else if let Some(problem) = jct::text::line_problem(value) {
            violations.push((field, problem.to_string()));
        }
    }
    if violations.is_empty() {
        return Ok(());
    }
    Err(validation_failed(
        violations.iter().map(|(f, d)| (*f, d.as_str())),
    ))
}

pub fn parse_task_id(task_id: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(task_id).map_err(|_| {
        let description = if task_id.is_empty() {
            "is required"
        } else {
            "must be a task id (a UUID)"
        };
        validation_failed([("task_id", description)])
    })
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|text| !text.is_empty())
}
