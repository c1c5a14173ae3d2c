//! What became of a lease its worker still presents but that could no longer be
//! renewed or released: the answer decides what the worker is told (stop because
//! the task was cancelled, the task is already finished, or the lease is gone).

use sea_orm::EntityTrait;
use uuid::Uuid;

use crate::task::Status;

use super::entity::Entity;
use super::{Store, StoreError};

/// The state of a task seen from one of its leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseFate {
    /// Still running under this lease.
    Current,
    /// A client cancelled the task while this lease held it.
    Cancelled,
    /// The task finished (completed or failed) under this lease.
    Finished(Status),
    /// The lease is gone: the task was taken back (rescued, handed to another
    /// worker) or never held under it.
    Lost {
        holder: Option<String>,
    },
    NoSuchTask,
}

impl Store {
    /// Reads the task fresh from the database (the cache may not have seen another
    /// replica's change) and says what the presented lease now means.
    pub async fn lease_fate(
        &self,
        task_id: Uuid,
        lease_token: Uuid,
    ) -> Result<LeaseFate, StoreError> {
        let Some(model) = Entity::find_by_id(task_id).one(&self.reader).await? else {
            return Ok(LeaseFate::NoSuchTask);
        };
        if model.lease_token != Some(lease_token) {
            return Ok(LeaseFate::Lost {
                holder: model.worker_id,
            });
        }
        Ok(match Status::parse(&model.status) {
            Some(Status::Running) => LeaseFate::Current,
            Some(Status::Cancelled) => LeaseFate::Cancelled,
            Some(status @ (Status::Completed | Status::Failed)) => LeaseFate::Finished(status),
            _ => LeaseFate::Lost {
                holder: model.worker_id,
            },
        })
    }
}
