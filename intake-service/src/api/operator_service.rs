//! `jct.v1.OperatorService`: what the original served as `/version` and `/status`.

use std::time::Instant;

use jct::v1 as pb;
use tonic::{Request, Response, Status};

use crate::dispatch::Dispatcher;
use crate::store::Store;

use super::errors;

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
        let counts = self.store.count_by_status().await;
        let reachable = counts.is_ok();
        let task_counts = match counts {
            Ok(counts) => counts
                .into_iter()
                .map(|(status, n)| (status.to_string(), n))
                .collect(),
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
        }))
    }
}
