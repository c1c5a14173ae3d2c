//! `jct.v1.OperatorService`: what the original served as `/version` and `/status`.

use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jct::reasons;
use jct::v1 as pb;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::dispatch::Dispatcher;
use crate::store::Store;
use crate::store::audit::{AuditEvent, AuditFilter};

use super::convert::timestamp;
use super::errors;
use super::task_service::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct OperatorApi {
    store: Store,
    dispatcher: Dispatcher,
    started: Instant,
}

impl OperatorApi {
    pub fn new(store: Store, dispatcher: Dispatcher) -> Self {
        Self {
            store,
            dispatcher,
            started: Instant::now(),
        }
    }
}

#[tonic::async_trait]
impl pb::operator_service_server::OperatorService for OperatorApi {
    async fn get_version(
        &self,
        _: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::GetVersionResponse>, Status> {
        Ok(Response::new(pb::GetVersionResponse {
            version: SERVICE_VERSION.to_string(),
            api_version: "v1".to_string(),
            service: "intake-service".to_string(),
        }))
    }

    async fn get_system_status(
        &self,
        _: Request<pb::GetSystemStatusRequest>,
    ) -> Result<Response<pb::GetSystemStatusResponse>, Status> {
        let queue = tokio::try_join!(self.store.count_by_status(), self.store.oldest_queued_at());
        let reachable = queue.is_ok();
        let (task_counts, oldest_queued_at) = match queue {
            Ok((counts, oldest)) => (
                counts
                    .into_iter()
                    .map(|(status, n)| (status.to_string(), n))
                    .collect(),
                oldest.map(timestamp),
            ),
            Err(error) => {
                // status must answer precisely when the database does not
                let _ = errors::from_store(error);
                Default::default()
            }
        };
        Ok(Response::new(pb::GetSystemStatusResponse {
            database_backend: self.store.backend().as_str().to_string(),
            database_reachable: reachable,
            task_counts,
            workers: self
                .dispatcher
                .connected_workers()
                .into_iter()
                .map(|worker| pb::ConnectedWorker {
                    worker_id: worker.worker_id,
                    capacity: worker.capacity,
                    in_flight: worker.in_flight,
                    executor: worker.executor,
                    version: worker.version,
                    draining: worker.draining,
                })
                .collect(),
            uptime_seconds: i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX),
            version: SERVICE_VERSION.to_string(),
            oldest_queued_at,
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let request = request.into_inner();
        let task_id = match request.task_id.as_str() {
            "" => None,
            text => Some(Uuid::parse_str(text).map_err(|_| {
                errors::validation_failed([("task_id", "must be a task id (a UUID)")])
            })?),
        };
        let filter = AuditFilter {
            principal: Some(request.principal).filter(|p| !p.is_empty()),
            task_id,
        };
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size < 0 => {
                return Err(errors::validation_failed([(
                    "page_size",
                    "must not be negative",
                )]));
            }
            size => u64::try_from(size)
                .unwrap_or(MAX_PAGE_SIZE)
                .min(MAX_PAGE_SIZE),
        };
        let before = match request.page_token.as_str() {
            "" => None,
            token => Some(read_page_token(token)?),
        };
        let mut events = self
            .store
            .audit_events(&filter, before, page_size + 1)
            .await
            .map_err(errors::from_store)?;
        let has_more = events.len() as u64 > page_size;
        events.truncate(usize::try_from(page_size).unwrap_or(usize::MAX));
        let next_page_token = match (has_more, events.last()) {
            (true, Some(last)) => URL_SAFE_NO_PAD.encode(last.id.to_be_bytes()),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events.into_iter().map(event_to_pb).collect(),
            next_page_token,
        }))
    }
}

/// Audit page tokens name the last event's id; an operator, who may read the
/// whole trail, gains nothing by forging one, so they carry no MAC.
fn read_page_token(token: &str) -> Result<i64, Status> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map(i64::from_be_bytes)
        .ok_or_else(|| {
            errors::status(
                Code::InvalidArgument,
                reasons::INVALID_PAGE_TOKEN,
                "the page token is malformed: pass the next_page_token of a previous page as it was",
            )
        })
}

fn event_to_pb(event: AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: event.id,
        at: Some(timestamp(event.at)),
        principal: event.principal,
        method: event.method,
        action: event.action,
        task_id: event.task_id.map(|id| id.to_string()).unwrap_or_default(),
        reason: event.reason.unwrap_or_default(),
        count: event.count,
        worker_id: event.worker_id.unwrap_or_default(),
    }
}
