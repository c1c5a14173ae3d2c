//! Who is calling, as the auth layer established it, and what of a task that
//! caller may see. Tenancy is decided here, once, for every TaskService handler.

use jct::v1 as pb;
use tonic::{Request, Status};

use crate::auth::{AuthError, Principal, Role};
use crate::task::Task;

use super::convert::task_to_pb;
use super::errors;

/// The principal on the request. The auth layer puts one on every call it lets
/// through; none means the layer is not in front of this service, and the call
/// is refused rather than served to nobody in particular.
pub fn caller<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| errors::from_auth(&AuthError::MissingToken))
}

/// Whether `principal` may see `task`: readers and operators see every task, a
/// submitter only those it submitted.
pub fn may_see(principal: &Principal, task: &Task) -> bool {
    principal.sees_all_tasks() || task.spec.submitted_by == principal.name()
}

/// Whether `principal` may cancel `task`: operators any, a submitter its own.
pub fn may_cancel(principal: &Principal, task: &Task) -> bool {
    principal.manages_all_tasks() || task.spec.submitted_by == principal.name()
}

/// The task as `principal` is shown it: which worker runs what is for operators.
pub fn shown_to(principal: &Principal, task: &Task) -> pb::Task {
    let mut shown = task_to_pb(task);
    if !principal.has(Role::Operator) {
        shown.worker_id.clear();
    }
    shown
}
