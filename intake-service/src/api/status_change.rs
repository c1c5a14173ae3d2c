//! Reading a status change off the wire, the same way whether a client sends it
//! (`TaskService/UpdateStatus`) or a worker does (`TaskReport` over the dispatch
//! stream): every field checked against the target status, every violation named.

use jct::structs::struct_to_json;
use jct::text;
use jct::v1 as pb;
use uuid::Uuid;

use crate::policy::{self, FieldViolation};
use crate::store::Transition;
use crate::task::{Status, TaskError};

const MAX_TRACE_URI_CHARS: usize = 2048;
const MAX_ERROR_CODE_CHARS: usize = 64;
const MAX_ERROR_MESSAGE_CHARS: usize = 16 * 1024;

/// The fields a status change carries, borrowed from either wire message.
#[derive(Debug, Clone, Copy)]
pub struct StatusFields<'a> {
    pub task_id: &'a str,
    pub status: &'a str,
    pub result: Option<&'a prost_types::Struct>,
    pub error: Option<&'a pb::TaskError>,
    pub trace_uri: &'a str,
    pub lease_token: &'a str,
}

impl<'a> From<&'a pb::UpdateStatusRequest> for StatusFields<'a> {
    fn from(request: &'a pb::UpdateStatusRequest) -> Self {
        Self {
            task_id: &request.task_id,
            status: &request.status,
            result: request.result.as_ref(),
            error: request.error.as_ref(),
            trace_uri: &request.trace_uri,
            lease_token: &request.lease_token,
        }
    }
}

/// A worker's report status, typed. A worker of the previous release spelled
/// it in `legacy_status`; that spelling is read here and nowhere else.
pub fn report_status(report: &pb::TaskReport) -> pb::ReportStatus {
    use pb::ReportStatus as R;
    match report.status() {
        #[allow(deprecated)]
        R::Unspecified => match report.legacy_status.as_str() {
            "running" => R::Running,
            "completed" => R::Completed,
            "failed" => R::Failed,
            "cancelled" => R::Cancelled,
            "released" => R::Released,
            _ => R::Unspecified,
        },
        typed => typed,
    }
}

impl<'a> From<&'a pb::TaskReport> for StatusFields<'a> {
    fn from(report: &'a pb::TaskReport) -> Self {
        use pb::ReportStatus as R;
        let status = match report_status(report) {
            R::Running => Status::Running.as_str(),
            R::Completed => Status::Completed.as_str(),
            R::Failed => Status::Failed.as_str(),
            R::Cancelled => Status::Cancelled.as_str(),
            // a release is not a status change (read before this), and an
            // unspecified one is refused by `read_transition`
            R::Released | R::Unspecified => "",
        };
        Self {
            task_id: &report.task_id,
            status,
            result: report.result.as_ref(),
            error: report.error.as_ref(),
            trace_uri: &report.trace_uri,
            lease_token: &report.lease_token,
        }
    }
}

/// Reads a status change; field names in violations start with `prefix`.
pub fn read_transition(
    fields: &StatusFields<'_>,
    prefix: &str,
) -> Result<Transition, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    // one violation per field: its first problem
    let mut violation = |field: &str, description: String| {
        let field = format!("{prefix}{field}");
        if !violations.iter().any(|v: &FieldViolation| v.field == field) {
            violations.push(FieldViolation { field, description });
        }
    };
    let task_id = Uuid::parse_str(fields.task_id);
    if task_id.is_err() {
        violation("task_id", "must be a task id (a UUID)".to_string());
    }
    let to = Status::parse(fields.status);
    if to.is_none() {
        violation(
            "status",
            format!(
                "must be one of running, completed, failed, cancelled, got \"{}\"",
                short(fields.status)
            ),
        );
    }
    let lease_token = match fields.lease_token {
        "" => None,
        text => match Uuid::parse_str(text) {
            Ok(token) => Some(token),
            Err(_) => {
                violation(
                    "lease_token",
                    "must be the lease token of an assignment".to_string(),
                );
                None
            }
        },
    };
    let result = match fields.result {
        None => None,
        Some(result) => match struct_to_json(result) {
            Ok(map) => Some(map),
            Err(bad) => {
                violation(
                    "result",
                    format!("has a non-finite number at {}", short(&bad.path)),
                );
                None
            }
        },
    };
    if let Some(size) = result
        .as_ref()
        .map(|map| serde_json::to_vec(map).map_or(usize::MAX, |b| b.len()))
        && size > policy::MAX_DOCUMENT_BYTES
    {
        violation(
            "result",
            format!(
                "is {size} bytes as JSON; the limit is {}",
                policy::MAX_DOCUMENT_BYTES
            ),
        );
    }
    if let Some(problem) = result
        .as_ref()
        .and_then(|map| policy::document_text_problem("result", map, policy::Strings::Data))
    {
        violation(&problem.field, problem.description);
    }
    let error = fields.error.map(|error| TaskError {
        code: error.code.clone(),
        message: error
            .message
            .chars()
            .take(MAX_ERROR_MESSAGE_CHARS)
            .collect(),
    });
    if let Some(error) = &error {
        if error.code.is_empty() || error.code.chars().count() > MAX_ERROR_CODE_CHARS {
            violation(
                "error.code",
                format!("must be 1-{MAX_ERROR_CODE_CHARS} characters"),
            );
        }
        if let Some(problem) = text::line_problem(&error.code) {
            violation("error.code", problem.to_string());
        }
        if let Some(problem) = text::text_problem(&error.message) {
            violation("error.message", problem.to_string());
        }
    }
    if fields.trace_uri.chars().count() > MAX_TRACE_URI_CHARS {
        violation(
            "trace_uri",
            format!("must be at most {MAX_TRACE_URI_CHARS} characters"),
        );
    }
    if let Some(problem) = text::line_problem(fields.trace_uri) {
        violation("trace_uri", problem.to_string());
    }
    match to {
        Some(Status::Completed) => {
            if fields.result.is_none() {
                violation("result", "is required to complete a task".to_string());
            }
            if fields.error.is_some() {
                violation("error", "must be unset for a completed task".to_string());
            }
        }
        Some(Status::Failed) => {
            if fields.error.is_none() {
                violation("error", "is required to fail a task".to_string());
            }
            if fields.result.is_some() {
                violation("result", "must be unset for a failed task".to_string());
            }
        }
        Some(other) => {
            if fields.result.is_some() {
                violation("result", format!("must be unset for status {other}"));
            }
            if fields.error.is_some() && other != Status::Cancelled {
                violation("error", format!("must be unset for status {other}"));
            }
        }
        None => {}
    }
    let (Ok(task_id), Some(to), true) = (task_id, to, violations.is_empty()) else {
        return Err(violations);
    };
    Ok(Transition {
        task_id,
        to,
        result,
        error,
        trace_uri: Some(fields.trace_uri.to_string()).filter(|uri| !uri.is_empty()),
        lease_token,
        actor: None,
    })
}

/// A sent value quoted in a description: cut short and escaped.
fn short(value: &str) -> String {
    text::escape(&value.chars().take(64).collect::<String>())
}
