//! Field rules and normalization. Every violation is collected, so a client fixes
//! its request in one round trip.

use serde_json::{Map, Value as Json};

use crate::task::{
    Constraints, DEFAULT_REF, DEFAULT_TIME_BUDGET_SECONDS, Operation, Requester, RequesterKind,
    SPEC_VERSION, Target, TaskSpec,
};

use super::draft::Document;
use super::{FieldViolation, TaskDraft};
use jct::{names, text};

/// Deepest nesting allowed in `inputs` and `metadata` (objects and arrays).
pub const MAX_DOCUMENT_DEPTH: usize = 32;
/// Largest `inputs` or `metadata`, as compact JSON.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

const OBJECTIVE_CHARS: (usize, usize) = (5, 4000);
const REQUESTER_ID_CHARS: usize = 128;
const LABEL_CHARS: usize = 256;
const IDEMPOTENCY_KEY_CHARS: usize = 256;
const REPO_CHARS: usize = 256;
const REF_CHARS: usize = 256;
const PATH_CHARS: usize = 512;

/// A request that passed the schema: a task, or one whose operation the policy
/// gate must refuse (an unknown operation is a policy reason, not a schema one).
pub(super) enum Checked {
    Spec(Box<TaskSpec>),
    UnknownOperation(String),
}

#[derive(Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Records the field's first problem only: one violation per field, so a
    /// value that is both too long and hostile reads as one fix to make.
    fn add(&mut self, field: &str, description: impl Into<String>) {
        if self.0.iter().any(|violation| violation.field == field) {
            return;
        }
        self.0.push(FieldViolation {
            field: field.to_string(),
            description: description.into(),
        });
    }

    fn check_length(&mut self, field: &str, value: &str, min: usize, max: usize) {
        let length = value.chars().count();
        if length < min || length > max {
            let bounds = if min == 0 {
                format!("at most {max}")
            } else {
                format!("{min}-{max}")
            };
            self.add(field, format!("must be {bounds} characters, got {length}"));
        }
    }

    /// Free text (newlines and tabs allowed): no control, bidi or invisible
    /// character.
    fn check_text(&mut self, field: &str, value: &str) {
        if let Some(problem) = text::text_problem(value) {
            self.add(field, problem.to_string());
        }
    }

    /// A single line (an id, a key, a label): as [`Self::check_text`], and no
    /// newline or tab.
    fn check_line(&mut self, field: &str, value: &str) {
        if let Some(problem) = text::line_problem(value) {
            self.add(field, problem.to_string());
        }
    }
}

pub(super) fn validate_and_normalize(draft: TaskDraft) -> Result<Checked, Vec<FieldViolation>> {
    let mut violations = Violations::default();

    if let Some(key) = &draft.idempotency_key {
        violations.check_length("idempotency_key", key, 1, IDEMPOTENCY_KEY_CHARS);
        violations.check_line("idempotency_key", key);
    }

    let requested_by = match &draft.requested_by {
        None => {
            violations.add("requested_by", "is required");
            None
        }
        Some(requester) => {
            let kind = RequesterKind::parse(&requester.kind);
            if kind.is_none() {
                violations.add(
                    "requested_by.kind",
                    format!(
                        "must be one of human, agent, system, got \"{}\"",
                        quoted(&requester.kind)
                    ),
                );
            }
            violations.check_length("requested_by.id", &requester.id, 1, REQUESTER_ID_CHARS);
            violations.check_line("requested_by.id", &requester.id);
            if let Some(label) = &requester.label {
                violations.check_length("requested_by.label", label, 1, LABEL_CHARS);
                violations.check_line("requested_by.label", label);
            }
            kind.map(|kind| Requester {
                kind,
                id: requester.id.clone(),
                label: requester.label.clone(),
            })
        }
    };

    let objective = draft.objective.trim().to_string();
    violations.check_length(
        "objective",
        &objective,
        OBJECTIVE_CHARS.0,
        OBJECTIVE_CHARS.1,
    );
    violations.check_text("objective", &objective);

    if draft.operation.is_empty() {
        violations.add(
            "operation",
            "is required: one of code_change, docs, analysis, ops",
        );
    }

    let target = match &draft.target {
        None => {
            violations.add("target", "is required");
            None
        }
        Some(target) => Some(normalize_target(target, &mut violations)),
    };

    let inputs = check_document("inputs", draft.inputs, &mut violations);
    let metadata = check_document("metadata", draft.metadata, &mut violations);
    for (field, document, strings) in [
        ("inputs", &inputs, Strings::Data),
        ("metadata", &metadata, Strings::Text),
    ] {
        if let Some(problem) = document
            .as_ref()
            .and_then(|map| document_text_problem(field, map, strings))
        {
            violations.0.push(problem);
        }
    }

    let (Some(requested_by), Some(target), Some(inputs), Some(metadata)) =
        (requested_by, target, inputs, metadata)
    else {
        return Err(violations.0);
    };
    if !violations.0.is_empty() {
        return Err(violations.0);
    }
    let Some(operation) = Operation::parse(&draft.operation) else {
        return Ok(Checked::UnknownOperation(draft.operation));
    };
    let constraints = Constraints {
        time_budget_seconds: draft
            .constraints
            .time_budget_seconds
            .unwrap_or(DEFAULT_TIME_BUDGET_SECONDS),
        allow_network: draft.constraints.allow_network,
        allow_secrets: draft.constraints.allow_secrets,
    };
    Ok(Checked::Spec(Box::new(TaskSpec {
        version: SPEC_VERSION.to_string(),
        // the caller, not the request, says who submits (the handler sets it)
        submitted_by: String::new(),
        idempotency_key: draft.idempotency_key,
        requested_by,
        objective,
        operation,
        target,
        constraints,
        inputs,
        metadata,
        // the caller's trace context, not the request body (the handler sets it)
        traceparent: None,
    })))
}

/// Trims and lowercases the repo and drops one trailing `.git`; defaults the ref.
fn normalize_target(target: &super::TargetDraft, violations: &mut Violations) -> Target {
    let lowered = target.repo.trim().to_lowercase();
    let repo = lowered.strip_suffix(".git").unwrap_or(&lowered).to_string();
    if repo.is_empty() {
        violations.add("target.repo", "is required (owner/name)");
    } else {
        violations.check_length("target.repo", &repo, 1, REPO_CHARS);
        if let Err(problem) = names::check_repo(&repo) {
            violations.add("target.repo", problem.to_string());
        }
    }

    let ref_name = if target.ref_name.is_empty() {
        DEFAULT_REF.to_string()
    } else {
        target.ref_name.clone()
    };
    violations.check_length("target.ref", &ref_name, 1, REF_CHARS);
    if let Err(problem) = names::check_ref(&ref_name) {
        violations.add("target.ref", problem.to_string());
    }

    violations.check_length("target.path", &target.path, 0, PATH_CHARS);
    if let Err(problem) = names::check_path(&target.path) {
        violations.add("target.path", problem.to_string());
    }
    Target {
        repo,
        ref_name,
        path: target.path.clone(),
    }
}

fn check_document(
    field: &str,
    document: Document,
    violations: &mut Violations,
) -> Option<Map<String, Json>> {
    let map = match document {
        Ok(map) => map,
        Err(non_finite) => {
            violations.add(
                &format!("{field}.{}", non_finite.path),
                "numbers must be finite (JSON has no NaN or infinity)",
            );
            return None;
        }
    };
    let depth = object_depth(&map);
    if depth > MAX_DOCUMENT_DEPTH {
        violations.add(
            field,
            format!("nests {depth} levels deep; the limit is {MAX_DOCUMENT_DEPTH}"),
        );
        return None;
    }
    let size = serde_json::to_vec(&map)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX);
    if size > MAX_DOCUMENT_BYTES {
        violations.add(
            field,
            format!("is {size} bytes as JSON; the limit is {MAX_DOCUMENT_BYTES}"),
        );
        return None;
    }
    Some(map)
}

/// What the string values of a document may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strings {
    /// Data for or from a program (`inputs`, a result): anything but NUL, which
    /// no database stores in text. It is JSON-escaped wherever it is shown.
    Data,
    /// Labels people read (`metadata`): free text, as `objective`.
    Text,
}

/// The first text problem of a document, named by its path under `field`: keys
/// are single lines everywhere, string values follow `strings`. Iterative, so
/// hostile depth costs no stack.
pub fn document_text_problem(
    field: &str,
    map: &Map<String, Json>,
    strings: Strings,
) -> Option<FieldViolation> {
    let mut pending: Vec<(String, &Json)> = Vec::new();
    if let Some(problem) = push_members(field, map, &mut pending) {
        return Some(problem);
    }
    while let Some((path, value)) = pending.pop() {
        match value {
            Json::String(value) => {
                let problem = match strings {
                    Strings::Data => value
                        .contains('\0')
                        .then(|| "must not contain NUL (U+0000)".to_string()),
                    Strings::Text => text::text_problem(value).map(|p| p.to_string()),
                };
                if let Some(description) = problem {
                    return Some(FieldViolation {
                        field: path,
                        description,
                    });
                }
            }
            Json::Object(inner) => {
                if let Some(problem) = push_members(&path, inner, &mut pending) {
                    return Some(problem);
                }
            }
            Json::Array(items) => pending.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (format!("{path}[{i}]"), item)),
            ),
            _ => {}
        }
    }
    None
}

/// Queues an object's members by path; a key that is not one clean line is the
/// problem found.
fn push_members<'a>(
    parent: &str,
    object: &'a Map<String, Json>,
    pending: &mut Vec<(String, &'a Json)>,
) -> Option<FieldViolation> {
    for (key, value) in object {
        let path = format!("{parent}.{}", quoted(key));
        if let Some(problem) = text::line_problem(key) {
            return Some(FieldViolation {
                field: path,
                description: format!("has a key that {problem}"),
            });
        }
        pending.push((path, value));
    }
    None
}

/// A client's string shown in a field path or description: short, and escaped
/// so that it cannot carry what the text rules refuse.
fn quoted(value: &str) -> String {
    let short: String = value.chars().take(64).collect();
    text::escape(&short)
}

/// Nesting depth of an object: 1 for a flat one; every object or array, empty or
/// not, is a level. Iterative, so hostile depth costs no stack.
fn object_depth(map: &Map<String, Json>) -> usize {
    let mut deepest = 1;
    let mut pending: Vec<(&Json, usize)> = map.values().map(|value| (value, 1)).collect();
    while let Some((value, depth)) = pending.pop() {
        match value {
            Json::Object(inner) => {
                deepest = deepest.max(depth + 1);
                pending.extend(inner.values().map(|v| (v, depth + 1)));
            }
            Json::Array(items) => {
                deepest = deepest.max(depth + 1);
                pending.extend(items.iter().map(|v| (v, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}
