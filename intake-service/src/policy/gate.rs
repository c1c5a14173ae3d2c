//! The contract's policy table, applied to a normalized task. The first rule
//! broken decides the answer.

use crate::task::{Constraints, TaskSpec};

use super::PolicyConfig;

pub const MIN_TIME_BUDGET_SECONDS: i32 = 30;
pub const MAX_TIME_BUDGET_SECONDS: i32 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyReason {
    InvalidOperation,
    RepoNotAllowed,
    TimeBudgetTooLow,
    TimeBudgetTooHigh,
    NetworkAccessDenied,
    SecretsAccessDenied,
}

impl PolicyReason {
    /// The stable code clients match on.
    pub fn code(self) -> &'static str {
        use jct::reasons::*;
        match self {
            PolicyReason::InvalidOperation => INVALID_OPERATION,
            PolicyReason::RepoNotAllowed => REPO_NOT_ALLOWED,
            PolicyReason::TimeBudgetTooLow => TIME_BUDGET_TOO_LOW,
            PolicyReason::TimeBudgetTooHigh => TIME_BUDGET_TOO_HIGH,
            PolicyReason::NetworkAccessDenied => NETWORK_ACCESS_DENIED,
            PolicyReason::SecretsAccessDenied => SECRETS_ACCESS_DENIED,
        }
    }

    /// Denials of something well-formed (as opposed to a malformed value).
    pub fn is_permission_denial(self) -> bool {
        matches!(
            self,
            PolicyReason::RepoNotAllowed
                | PolicyReason::NetworkAccessDenied
                | PolicyReason::SecretsAccessDenied
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyViolation {
    pub reason: PolicyReason,
    pub message: String,
}

impl PolicyViolation {
    fn new(reason: PolicyReason, message: String) -> Self {
        Self { reason, message }
    }
}

pub(super) fn check(spec: &TaskSpec, config: &PolicyConfig) -> Result<(), PolicyViolation> {
    check_repo(&spec.target.repo, config)?;
    check_constraints(&spec.constraints)
}

/// Operations are an enum once normalized; this is the rule for the raw string.
pub(super) fn invalid_operation(operation: &str) -> PolicyViolation {
    PolicyViolation::new(
        PolicyReason::InvalidOperation,
        format!(
            "operation \"{}\" is not allowed; use one of code_change, docs, analysis, ops",
            jct::text::escape(&operation.chars().take(64).collect::<String>())
        ),
    )
}

fn check_repo(repo: &str, config: &PolicyConfig) -> Result<(), PolicyViolation> {
    let allowed = config
        .allowed_repo_prefixes()
        .iter()
        .any(|prefix| prefix_matches(prefix, repo));
    if allowed {
        return Ok(());
    }
    let message = if config.allowed_repo_prefixes().is_empty() {
        format!(
            "repository {repo:?} is not allowed: no repository prefixes are configured \
             (JCT_ALLOWED_REPO_PREFIXES is empty), so every repository is denied"
        )
    } else {
        format!(
            "repository {repo:?} is not under an allowed prefix ({})",
            config.allowed_repo_prefixes().join(", ")
        )
    };
    Err(PolicyViolation::new(PolicyReason::RepoNotAllowed, message))
}

/// Whole-segment prefix match: `myorg` allows `myorg/app`, never `myorganization/app`.
fn prefix_matches(prefix: &str, repo: &str) -> bool {
    match repo.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn check_constraints(constraints: &Constraints) -> Result<(), PolicyViolation> {
    let budget = constraints.time_budget_seconds;
    if budget < MIN_TIME_BUDGET_SECONDS {
        return Err(PolicyViolation::new(
            PolicyReason::TimeBudgetTooLow,
            format!(
                "time_budget_seconds {budget} is below the minimum of {MIN_TIME_BUDGET_SECONDS}"
            ),
        ));
    }
    if budget > MAX_TIME_BUDGET_SECONDS {
        return Err(PolicyViolation::new(
            PolicyReason::TimeBudgetTooHigh,
            format!(
                "time_budget_seconds {budget} is above the maximum of {MAX_TIME_BUDGET_SECONDS}"
            ),
        ));
    }
    if constraints.allow_network {
        return Err(PolicyViolation::new(
            PolicyReason::NetworkAccessDenied,
            "allow_network is denied in v1: tasks run without network access".to_string(),
        ));
    }
    if constraints.allow_secrets {
        return Err(PolicyViolation::new(
            PolicyReason::SecretsAccessDenied,
            "allow_secrets is denied in v1: tasks run without the worker's secrets".to_string(),
        ));
    }
    Ok(())
}
