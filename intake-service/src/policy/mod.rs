//! The policy gate: every decision about an Enqueue before the store sees it, as
//! pure functions (no I/O, no store, no gRPC types), so each rule is testable alone.
//!
//! The order is the contract's: the version, then the schema of every field (all
//! violations collected), then normalization, then the policy rules, first
//! violation wins. Legacy aliases are resolved when the draft is read off the wire.

mod draft;
mod gate;
mod schema;

pub use draft::{ConstraintsDraft, RequesterDraft, TargetDraft, TaskDraft};
pub use gate::{PolicyReason, PolicyViolation};
pub use schema::{MAX_DOCUMENT_BYTES, MAX_DOCUMENT_DEPTH, Strings, document_text_problem};

use crate::task::{SPEC_VERSION, TaskSpec};

/// One field that fails the schema, named by its path in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// Why a request is not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    UnsupportedVersion(String),
    Validation(Vec<FieldViolation>),
    Policy(PolicyViolation),
}

/// What the operator allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Normalized repository prefixes (lowercase, no trailing `/`). Empty denies all.
    allowed_repo_prefixes: Vec<String>,
}

impl PolicyConfig {
    /// Builds the config from `JCT_ALLOWED_REPO_PREFIXES` syntax: comma separated,
    /// spaces trimmed, empty entries ignored.
    pub fn from_prefix_list(list: &str) -> Self {
        Self::from_prefixes(list.split(','))
    }

    pub fn from_prefixes<'a>(prefixes: impl IntoIterator<Item = &'a str>) -> Self {
        let allowed_repo_prefixes = prefixes
            .into_iter()
            .map(|prefix| prefix.trim().trim_end_matches('/').to_lowercase())
            .filter(|prefix| !prefix.is_empty())
            .collect();
        Self {
            allowed_repo_prefixes,
        }
    }

    pub fn allowed_repo_prefixes(&self) -> &[String] {
        &self.allowed_repo_prefixes
    }
}

/// Runs the whole gate: returns the task exactly as it would be stored.
pub fn admit(draft: TaskDraft, config: &PolicyConfig) -> Result<TaskSpec, Rejection> {
    if !draft.version.is_empty() && draft.version != SPEC_VERSION {
        return Err(Rejection::UnsupportedVersion(draft.version));
    }
    match schema::validate_and_normalize(draft).map_err(Rejection::Validation)? {
        schema::Checked::UnknownOperation(operation) => {
            Err(Rejection::Policy(gate::invalid_operation(&operation)))
        }
        schema::Checked::Spec(spec) => {
            gate::check(&spec, config).map_err(Rejection::Policy)?;
            Ok(*spec)
        }
    }
}

#[cfg(test)]
mod tests;
