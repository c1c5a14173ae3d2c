//! Why a `jct` command failed, and how that is shown: on stderr, as text for
//! people or as one JSON object for scripts, always with the exit code of
//! [`super::exit`].

use jct::reasons::code_name;
use serde_json::{Value as Json, json};
use tonic::Code;
use tonic_types::StatusExt;

use super::exit;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line, or a file it names, cannot be used.
    #[error("{0}")]
    Usage(String),
    /// The intake cannot be reached at all.
    #[error("cannot reach the intake at {addr}: {detail}")]
    Unreachable { addr: String, detail: String },
    /// The intake answered with an error status.
    #[error("{action} failed: {}", .status.message())]
    Rpc {
        action: &'static str,
        status: tonic::Status,
    },
    /// A watch ended without the task reaching a terminal state.
    #[error("{0}")]
    Interrupted(String),
    /// Anything else (local I/O).
    #[error("{0}")]
    Other(String),
    /// Whoever read our output went away (`jct list | head`): stop quietly.
    #[error("the output was closed")]
    OutputClosed,
}

impl CliError {
    pub fn rpc(action: &'static str) -> impl FnOnce(tonic::Status) -> CliError {
        move |status| CliError::Rpc { action, status }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Unreachable { .. } | CliError::Interrupted(_) => exit::UNAVAILABLE,
            CliError::Rpc { status, .. } => {
                exit::for_status(effective_code(status), reason(status).as_deref())
            }
            CliError::Other(_) => exit::FAILURE,
            CliError::OutputClosed => exit::SUCCESS,
        }
    }

    /// The error as the JSON object `-o json` prints on stderr.
    pub fn to_json(&self) -> Json {
        let mut error = json!({
            "exit_code": self.exit_code(),
            "message": self.to_string(),
        });
        if let CliError::Rpc { status, .. } = self {
            error["code"] = Json::from(code_name(effective_code(status)));
            error["reason"] = reason(status).map_or(Json::Null, Json::from);
            error["violations"] = Json::Array(
                violations(status)
                    .into_iter()
                    .map(|(field, description)| json!({"field": field, "description": description}))
                    .collect(),
            );
        }
        json!({ "error": error })
    }

    /// The error as lines for a person: what happened, then what to do.
    pub fn to_text(&self) -> String {
        let safe = |text: &str| jct::text::escape(text);
        match self {
            CliError::Rpc { action, status } => {
                let reason = reason(status);
                let mut text = format!(
                    "error: {action} failed: {} ({}{})\n",
                    safe(status.message()),
                    code_name(effective_code(status)),
                    reason
                        .as_deref()
                        .map(|r| format!(", reason {}", safe(r)))
                        .unwrap_or_default(),
                );
                for (field, description) in violations(status) {
                    text.push_str(&format!("  {}: {}\n", safe(&field), safe(&description)));
                }
                text.push_str(&format!(
                    "hint: {}\n",
                    exit::advice(effective_code(status), reason.as_deref())
                ));
                text
            }
            CliError::Unreachable { .. } => format!(
                "error: {}\nhint: is the intake running? `jct up` starts a local pair; \
                 --addr or JCT_ADDR point elsewhere\n",
                safe(&self.to_string())
            ),
            other => format!("error: {}\n", safe(&other.to_string())),
        }
    }
}

/// The status's code, except that a call the connection failed under (tonic
/// reports it as UNKNOWN "transport error", e.g. when a TLS peer rejects our
/// certificate after the handshake seemed done) is UNAVAILABLE: the intake
/// never answered, so it is not "something the intake got wrong".
pub fn effective_code(status: &tonic::Status) -> Code {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if status.code() == Code::Unknown && error.is::<tonic::transport::Error>() {
            return Code::Unavailable;
        }
        source = error.source();
    }
    status.code()
}

/// The stable reason of the status's `google.rpc.ErrorInfo`, if it has one.
pub fn reason(status: &tonic::Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

/// The `google.rpc.BadRequest` violations: (field, description).
fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default()
}
