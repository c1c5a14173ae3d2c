//! Unit tests of the policy gate against contract v1: every schema rule and its
//! boundaries, normalization, the policy table and its order, the repo/ref/path
//! safety rules, and a property test that `admit` never panics and only admits
//! tasks that satisfy the contract's invariants.

use jct::structs::NonFiniteNumber;
use proptest::prelude::*;
use serde_json::{Map, Value as Json, json};

use super::gate::{MAX_TIME_BUDGET_SECONDS, MIN_TIME_BUDGET_SECONDS};
use super::*;
use crate::task::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const PREFIXES: &str = "myorg/, partner";

fn config() -> PolicyConfig {
    PolicyConfig::from_prefix_list(PREFIXES)
}

fn object(value: Json) -> Map<String, Json> {
    match value {
        Json::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

/// A draft that passes every check with [`config`].
fn valid() -> TaskDraft {
    TaskDraft {
        version: "1.0".to_string(),
        idempotency_key: Some("key-1".to_string()),
        requested_by: Some(RequesterDraft {
            kind: "human".to_string(),
            id: "alice".to_string(),
            label: Some("Alice".to_string()),
        }),
        objective: "Fix the flaky parser test".to_string(),
        operation: "code_change".to_string(),
        target: Some(TargetDraft {
            repo: "myorg/app".to_string(),
            ref_name: "main".to_string(),
            path: "src/lib.rs".to_string(),
        }),
        constraints: ConstraintsDraft {
            time_budget_seconds: Some(600),
            allow_network: false,
            allow_secrets: false,
        },
        inputs: Ok(object(json!({"issue": 42, "tags": ["a", "b"]}))),
        metadata: Ok(object(json!({"source": "unit-test"}))),
    }
}

/// [`valid`] with one change applied.
fn with(change: impl FnOnce(&mut TaskDraft)) -> TaskDraft {
    let mut draft = valid();
    change(&mut draft);
    draft
}

fn target(draft: &mut TaskDraft) -> &mut TargetDraft {
    draft.target.as_mut().expect("valid() has a target")
}

fn requester(draft: &mut TaskDraft) -> &mut RequesterDraft {
    draft
        .requested_by
        .as_mut()
        .expect("valid() has a requester")
}

fn with_repo(repo: &str) -> TaskDraft {
    with(|d| target(d).repo = repo.to_string())
}

fn with_ref(ref_name: &str) -> TaskDraft {
    with(|d| target(d).ref_name = ref_name.to_string())
}

fn with_path(path: &str) -> TaskDraft {
    with(|d| target(d).path = path.to_string())
}

fn with_objective(objective: &str) -> TaskDraft {
    with(|d| d.objective = objective.to_string())
}

fn with_budget(budget: Option<i32>) -> TaskDraft {
    with(|d| d.constraints.time_budget_seconds = budget)
}

#[track_caller]
fn admitted(draft: TaskDraft) -> TaskSpec {
    admitted_with(draft, &config())
}

#[track_caller]
fn admitted_with(draft: TaskDraft, config: &PolicyConfig) -> TaskSpec {
    match admit(draft, config) {
        Ok(spec) => spec,
        Err(rejection) => panic!("expected the draft to be admitted, got {rejection:?}"),
    }
}

#[track_caller]
fn violations(draft: TaskDraft) -> Vec<FieldViolation> {
    match admit(draft, &config()) {
        Err(Rejection::Validation(violations)) => {
            assert!(!violations.is_empty(), "VALIDATION_FAILED with no field");
            for violation in &violations {
                assert!(
                    !violation.description.trim().is_empty(),
                    "violation on {} has no description",
                    violation.field
                );
            }
            violations
        }
        other => panic!("expected VALIDATION_FAILED, got {other:?}"),
    }
}

/// The offending field names, sorted (the contract fixes the set, not the order).
#[track_caller]
fn violated_fields(draft: TaskDraft) -> Vec<String> {
    let mut fields: Vec<String> = violations(draft).into_iter().map(|v| v.field).collect();
    fields.sort();
    fields
}

#[track_caller]
fn assert_only_violation(draft: TaskDraft, field: &str) {
    assert_eq!(violated_fields(draft), vec![field.to_string()]);
}

#[track_caller]
fn policy_violation_with(draft: TaskDraft, config: &PolicyConfig) -> PolicyViolation {
    match admit(draft, config) {
        Err(Rejection::Policy(violation)) => {
            assert!(
                !violation.message.trim().is_empty(),
                "policy violation without a message"
            );
            violation
        }
        other => panic!("expected a policy rejection, got {other:?}"),
    }
}

#[track_caller]
fn policy_reason(draft: TaskDraft) -> PolicyReason {
    policy_violation_with(draft, &config()).reason
}

#[track_caller]
fn policy_reason_with(draft: TaskDraft, config: &PolicyConfig) -> PolicyReason {
    policy_violation_with(draft, config).reason
}

/// Nested objects, `depth` levels deep as the gate counts them (a flat object is 1):
/// `{"n": {"n": … {"leaf": 1}}}`.
fn nested_objects(depth: usize) -> Map<String, Json> {
    assert!(depth >= 1);
    let mut value = json!({"leaf": 1});
    for _ in 1..depth {
        value = json!({ "n": value });
    }
    object(value)
}

/// An object holding nested arrays, `depth` levels deep: `{"a": [[…[1]…]]}`.
fn nested_arrays(depth: usize) -> Map<String, Json> {
    assert!(depth >= 2);
    let mut value = json!(1);
    for _ in 1..depth {
        value = json!([value]);
    }
    object(json!({ "a": value }))
}

/// An object whose compact JSON is exactly `bytes` long: `{"k":"xxx…"}`.
fn document_of_bytes(bytes: usize) -> Map<String, Json> {
    let map = object(json!({ "k": "x".repeat(bytes - 8) }));
    assert_eq!(serde_json::to_vec(&map).expect("serializes").len(), bytes);
    map
}

// ---------------------------------------------------------------------------
// The valid draft and the stored spec
// ---------------------------------------------------------------------------

#[test]
fn valid_draft_is_admitted_exactly_as_it_would_be_stored() {
    let spec = admitted(valid());
    assert_eq!(
        spec,
        TaskSpec {
            version: "1.0".to_string(),
            submitted_by: String::new(),
            idempotency_key: Some("key-1".to_string()),
            requested_by: Requester {
                kind: RequesterKind::Human,
                id: "alice".to_string(),
                label: Some("Alice".to_string()),
            },
            objective: "Fix the flaky parser test".to_string(),
            operation: Operation::CodeChange,
            target: Target {
                repo: "myorg/app".to_string(),
                ref_name: "main".to_string(),
                path: "src/lib.rs".to_string(),
            },
            constraints: Constraints {
                time_budget_seconds: 600,
                allow_network: false,
                allow_secrets: false,
            },
            inputs: object(json!({"issue": 42, "tags": ["a", "b"]})),
            metadata: object(json!({"source": "unit-test"})),
            traceparent: None,
        }
    );
}

#[test]
fn minimal_draft_gets_every_default() {
    let draft = TaskDraft {
        version: String::new(),
        idempotency_key: None,
        requested_by: Some(RequesterDraft {
            kind: "agent".to_string(),
            id: "a".to_string(),
            label: None,
        }),
        objective: "Write docs".to_string(),
        operation: "docs".to_string(),
        target: Some(TargetDraft {
            repo: "partner/site".to_string(),
            ref_name: String::new(),
            path: String::new(),
        }),
        ..TaskDraft::default()
    };
    let spec = admitted(draft);
    assert_eq!(spec.version, SPEC_VERSION);
    assert_eq!(spec.idempotency_key, None);
    assert_eq!(spec.requested_by.label, None);
    assert_eq!(spec.target.ref_name, DEFAULT_REF);
    assert_eq!(spec.target.ref_name, "main");
    assert_eq!(spec.target.path, "");
    assert_eq!(
        spec.constraints.time_budget_seconds,
        DEFAULT_TIME_BUDGET_SECONDS
    );
    assert_eq!(spec.constraints.time_budget_seconds, 900);
    assert!(!spec.constraints.allow_network);
    assert!(!spec.constraints.allow_secrets);
    assert!(spec.inputs.is_empty());
    assert!(spec.metadata.is_empty());
}

#[test]
fn every_operation_and_requester_kind_is_accepted() {
    let operations = [
        ("code_change", Operation::CodeChange),
        ("docs", Operation::Docs),
        ("analysis", Operation::Analysis),
        ("ops", Operation::Ops),
    ];
    for (text, operation) in operations {
        let spec = admitted(with(|d| d.operation = text.to_string()));
        assert_eq!(spec.operation, operation, "operation {text:?}");
    }
    let kinds = [
        ("human", RequesterKind::Human),
        ("agent", RequesterKind::Agent),
        ("system", RequesterKind::System),
    ];
    for (text, kind) in kinds {
        let spec = admitted(with(|d| requester(d).kind = text.to_string()));
        assert_eq!(spec.requested_by.kind, kind, "kind {text:?}");
    }
}

// ---------------------------------------------------------------------------
// Policy reasons
// ---------------------------------------------------------------------------

#[test]
fn policy_reasons_have_stable_codes_and_permission_classes() {
    // (reason, stable code, PERMISSION_DENIED rather than INVALID_ARGUMENT)
    let table = [
        (PolicyReason::InvalidOperation, "INVALID_OPERATION", false),
        (PolicyReason::RepoNotAllowed, "REPO_NOT_ALLOWED", true),
        (PolicyReason::TimeBudgetTooLow, "TIME_BUDGET_TOO_LOW", false),
        (
            PolicyReason::TimeBudgetTooHigh,
            "TIME_BUDGET_TOO_HIGH",
            false,
        ),
        (
            PolicyReason::NetworkAccessDenied,
            "NETWORK_ACCESS_DENIED",
            true,
        ),
        (
            PolicyReason::SecretsAccessDenied,
            "SECRETS_ACCESS_DENIED",
            true,
        ),
    ];
    for (reason, code, permission) in table {
        assert_eq!(reason.code(), code, "{reason:?}");
        assert_eq!(reason.is_permission_denial(), permission, "{reason:?}");
    }
    assert_eq!(
        PolicyReason::InvalidOperation.code(),
        jct::reasons::INVALID_OPERATION
    );
    assert_eq!(
        PolicyReason::RepoNotAllowed.code(),
        jct::reasons::REPO_NOT_ALLOWED
    );
    assert_eq!(
        PolicyReason::TimeBudgetTooLow.code(),
        jct::reasons::TIME_BUDGET_TOO_LOW
    );
    assert_eq!(
        PolicyReason::TimeBudgetTooHigh.code(),
        jct::reasons::TIME_BUDGET_TOO_HIGH
    );
    assert_eq!(
        PolicyReason::NetworkAccessDenied.code(),
        jct::reasons::NETWORK_ACCESS_DENIED
    );
    assert_eq!(
        PolicyReason::SecretsAccessDenied.code(),
        jct::reasons::SECRETS_ACCESS_DENIED
    );
}

#[test]
fn each_policy_reason_is_reached_through_admit() {
    let table: Vec<(&str, TaskDraft, PolicyReason)> = vec![
        (
            "unknown operation",
            with(|d| d.operation = "deploy".to_string()),
            PolicyReason::InvalidOperation,
        ),
        (
            "repo outside prefixes",
            with_repo("other/app"),
            PolicyReason::RepoNotAllowed,
        ),
        (
            "budget 29",
            with_budget(Some(29)),
            PolicyReason::TimeBudgetTooLow,
        ),
        (
            "budget 86401",
            with_budget(Some(86_401)),
            PolicyReason::TimeBudgetTooHigh,
        ),
        (
            "network",
            with(|d| d.constraints.allow_network = true),
            PolicyReason::NetworkAccessDenied,
        ),
        (
            "secrets",
            with(|d| d.constraints.allow_secrets = true),
            PolicyReason::SecretsAccessDenied,
        ),
    ];
    for (name, draft, expected) in table {
        let violation = policy_violation_with(draft, &config());
        assert_eq!(violation.reason, expected, "{name}");
    }
}

#[test]
fn policy_messages_name_the_offending_value() {
    let violation = policy_violation_with(with(|d| d.operation = "deploy".to_string()), &config());
    assert!(
        violation.message.contains("deploy"),
        "{}",
        violation.message
    );

    let violation = policy_violation_with(with_repo("Other/App.git"), &config());
    assert!(
        violation.message.contains("other/app"),
        "{}",
        violation.message
    );

    let violation = policy_violation_with(with_budget(Some(7)), &config());
    assert!(violation.message.contains('7'), "{}", violation.message);

    let violation = policy_violation_with(valid(), &PolicyConfig::from_prefix_list(""));
    assert_eq!(violation.reason, PolicyReason::RepoNotAllowed);
    assert!(
        violation.message.contains("JCT_ALLOWED_REPO_PREFIXES"),
        "{}",
        violation.message
    );
}

#[test]
fn policy_checks_run_in_the_contract_order() {
    let denied = PolicyConfig::from_prefix_list("");
    // (case, draft, config, first reason broken)
    let table: Vec<(&str, TaskDraft, PolicyConfig, PolicyReason)> = vec![
        (
            "invalid operation beats repo not allowed",
            with(|d| {
                d.operation = "Docs".to_string();
                target(d).repo = "other/app".to_string();
            }),
            config(),
            PolicyReason::InvalidOperation,
        ),
        (
            "invalid operation beats an empty allow list",
            with(|d| d.operation = "deploy".to_string()),
            denied,
            PolicyReason::InvalidOperation,
        ),
        (
            "invalid operation beats every constraint",
            with(|d| {
                d.operation = "deploy".to_string();
                d.constraints = ConstraintsDraft {
                    time_budget_seconds: Some(1),
                    allow_network: true,
                    allow_secrets: true,
                };
            }),
            config(),
            PolicyReason::InvalidOperation,
        ),
        (
            "repo not allowed beats network",
            with(|d| {
                target(d).repo = "other/app".to_string();
                d.constraints.allow_network = true;
            }),
            config(),
            PolicyReason::RepoNotAllowed,
        ),
        (
            "repo not allowed beats a low budget",
            with(|d| {
                target(d).repo = "other/app".to_string();
                d.constraints.time_budget_seconds = Some(0);
            }),
            config(),
            PolicyReason::RepoNotAllowed,
        ),
        (
            "budget too low beats network",
            with(|d| {
                d.constraints.time_budget_seconds = Some(29);
                d.constraints.allow_network = true;
            }),
            config(),
            PolicyReason::TimeBudgetTooLow,
        ),
        (
            "budget too high beats secrets",
            with(|d| {
                d.constraints.time_budget_seconds = Some(86_401);
                d.constraints.allow_secrets = true;
            }),
            config(),
            PolicyReason::TimeBudgetTooHigh,
        ),
        (
            "network beats secrets",
            with(|d| {
                d.constraints.allow_network = true;
                d.constraints.allow_secrets = true;
            }),
            config(),
            PolicyReason::NetworkAccessDenied,
        ),
    ];
    for (name, draft, config, expected) in table {
        assert_eq!(policy_reason_with(draft, &config), expected, "{name}");
    }
}

#[test]
fn schema_violations_win_over_policy_violations() {
    let table: Vec<(&str, TaskDraft, &str)> = vec![
        (
            "bad objective + network",
            with(|d| {
                d.objective = "abc".to_string();
                d.constraints.allow_network = true;
            }),
            "objective",
        ),
        (
            "bad objective + unknown operation",
            with(|d| {
                d.objective = "abc".to_string();
                d.operation = "deploy".to_string();
            }),
            "objective",
        ),
        (
            "bad ref + repo not allowed",
            with(|d| {
                target(d).ref_name = "a..b".to_string();
                target(d).repo = "other/app".to_string();
            }),
            "target.ref",
        ),
        (
            "bad path + budget too low + secrets",
            with(|d| {
                target(d).path = "../etc".to_string();
                d.constraints.time_budget_seconds = Some(1);
                d.constraints.allow_secrets = true;
            }),
            "target.path",
        ),
        (
            "bad idempotency key + budget too high",
            with(|d| {
                d.idempotency_key = Some(String::new());
                d.constraints.time_budget_seconds = Some(100_000);
            }),
            "idempotency_key",
        ),
    ];
    for (name, draft, field) in table {
        assert_eq!(violated_fields(draft), vec![field.to_string()], "{name}");
    }
}

// ---------------------------------------------------------------------------
// Version
// ---------------------------------------------------------------------------

#[test]
fn only_version_1_0_or_empty_is_supported() {
    for version in ["", "1.0"] {
        let spec = admitted(with(|d| d.version = version.to_string()));
        assert_eq!(spec.version, "1.0", "version {version:?}");
    }
    for version in [
        "2.0", "1", "1.0.0", "v1.0", " 1.0", "1.0 ", "1.1", "0.9", "\u{0}",
    ] {
        assert_eq!(
            admit(with(|d| d.version = version.to_string()), &config()),
            Err(Rejection::UnsupportedVersion(version.to_string())),
            "version {version:?}"
        );
    }
}

#[test]
fn unsupported_version_wins_over_everything() {
    let draft = TaskDraft {
        version: "2.0".to_string(),
        ..TaskDraft::default()
    };
    assert_eq!(
        admit(draft, &PolicyConfig::default()),
        Err(Rejection::UnsupportedVersion("2.0".to_string()))
    );
}

// ---------------------------------------------------------------------------
// VALIDATION_FAILED lists every bad field
// ---------------------------------------------------------------------------

#[test]
fn validation_lists_every_bad_field_at_once() {
    let draft = with(|d| {
        d.requested_by = None;
        d.objective = "abc".to_string();
        target(d).ref_name = "a..b".to_string();
    });
    assert_eq!(
        violated_fields(draft),
        vec!["objective", "requested_by", "target.ref"]
    );
}

#[test]
fn empty_draft_names_every_required_field() {
    assert_eq!(
        violated_fields(TaskDraft::default()),
        vec!["objective", "operation", "requested_by", "target"]
    );
}

#[test]
fn every_field_wrong_yields_one_violation_per_field() {
    let draft = TaskDraft {
        version: "1.0".to_string(),
        idempotency_key: Some("k".repeat(257)),
        requested_by: Some(RequesterDraft {
            kind: "robot".to_string(),
            id: String::new(),
            label: Some(String::new()),
        }),
        objective: "    ".to_string(),
        operation: String::new(),
        target: Some(TargetDraft {
            repo: "a/../b".to_string(),
            ref_name: "-x".to_string(),
            path: "/etc/passwd".to_string(),
        }),
        constraints: ConstraintsDraft {
            time_budget_seconds: Some(-5),
            allow_network: true,
            allow_secrets: true,
        },
        inputs: Err(NonFiniteNumber {
            path: "a.b".to_string(),
        }),
        metadata: Ok(nested_objects(MAX_DOCUMENT_DEPTH + 1)),
    };
    assert_eq!(
        violated_fields(draft),
        vec![
            "idempotency_key",
            "inputs.a.b",
            "metadata",
            "objective",
            "operation",
            "requested_by.id",
            "requested_by.kind",
            "requested_by.label",
            "target.path",
            "target.ref",
            "target.repo",
        ]
    );
}

#[test]
fn requester_kind_must_be_an_exact_spelling() {
    for kind in ["", "Human", "HUMAN", " human", "human ", "robot", "user"] {
        assert_only_violation(
            with(|d| requester(d).kind = kind.to_string()),
            "requested_by.kind",
        );
    }
}

#[test]
fn missing_target_is_a_violation_on_target() {
    assert_only_violation(with(|d| d.target = None), "target");
}

#[test]
fn missing_requester_is_a_violation_on_requested_by() {
    assert_only_violation(with(|d| d.requested_by = None), "requested_by");
}

// ---------------------------------------------------------------------------
// Boundaries
// ---------------------------------------------------------------------------

#[test]
fn objective_is_5_to_4000_chars_after_trimming() {
    let a4000 = "a".repeat(4000);
    let a4001 = "a".repeat(4001);
    let padded_4000 = format!(" \t\n{a4000}\r\n ");
    // (objective, stored objective when admitted)
    let table: Vec<(String, Option<String>)> = vec![
        ("abcd".to_string(), None),
        ("abcde".to_string(), Some("abcde".to_string())),
        ("  abcd  ".to_string(), None),
        ("\t\n abcd \n\t".to_string(), None),
        ("  abcde  ".to_string(), Some("abcde".to_string())),
        ("\n\tab de\t\n".to_string(), Some("ab de".to_string())),
        (
            "\u{3000}abcde\u{2003}".to_string(),
            Some("abcde".to_string()),
        ),
        ("        ".to_string(), None),
        (String::new(), None),
        (a4000.clone(), Some(a4000.clone())),
        (padded_4000, Some(a4000)),
        (a4001.clone(), None),
        (format!("  {a4001}  "), None),
        // multibyte: chars, not bytes
        ("éééé".to_string(), None),
        ("ééééé".to_string(), Some("ééééé".to_string())),
        ("日本語です".to_string(), Some("日本語です".to_string())),
        ("🦀🦀🦀🦀".to_string(), None),
        ("é".repeat(4000), Some("é".repeat(4000))),
        ("é".repeat(4001), None),
        ("🦀".repeat(4000), Some("🦀".repeat(4000))),
        ("🦀".repeat(4001), None),
    ];
    for (objective, expected) in table {
        let draft = with_objective(&objective);
        let shown = objective.chars().take(20).collect::<String>();
        match expected {
            Some(stored) => {
                assert_eq!(admitted(draft).objective, stored, "objective {shown:?}");
            }
            None => {
                assert_eq!(
                    violated_fields(draft),
                    vec!["objective"],
                    "objective {shown:?}"
                );
            }
        }
    }
}

#[test]
fn time_budget_is_30_to_86400_and_defaults_to_900() {
    assert_eq!(MIN_TIME_BUDGET_SECONDS, 30);
    assert_eq!(MAX_TIME_BUDGET_SECONDS, 86_400);
    // (budget, Ok(stored) or Err(reason))
    let table: Vec<(Option<i32>, Result<i32, PolicyReason>)> = vec![
        (None, Ok(900)),
        (Some(i32::MIN), Err(PolicyReason::TimeBudgetTooLow)),
        (Some(-1), Err(PolicyReason::TimeBudgetTooLow)),
        (Some(0), Err(PolicyReason::TimeBudgetTooLow)),
        (Some(29), Err(PolicyReason::TimeBudgetTooLow)),
        (Some(30), Ok(30)),
        (Some(31), Ok(31)),
        (Some(900), Ok(900)),
        (Some(86_399), Ok(86_399)),
        (Some(86_400), Ok(86_400)),
        (Some(86_401), Err(PolicyReason::TimeBudgetTooHigh)),
        (Some(i32::MAX), Err(PolicyReason::TimeBudgetTooHigh)),
    ];
    for (budget, expected) in table {
        match expected {
            Ok(stored) => assert_eq!(
                admitted(with_budget(budget))
                    .constraints
                    .time_budget_seconds,
                stored,
                "budget {budget:?}"
            ),
            Err(reason) => {
                assert_eq!(
                    policy_reason(with_budget(budget)),
                    reason,
                    "budget {budget:?}"
                );
            }
        }
    }
}

#[test]
fn requester_id_is_1_to_128_chars() {
    let table: Vec<(String, bool)> = vec![
        (String::new(), false),
        ("a".to_string(), true),
        ("a".repeat(127), true),
        ("a".repeat(128), true),
        ("a".repeat(129), false),
        ("é".repeat(128), true),
        ("é".repeat(129), false),
    ];
    for (id, ok) in table {
        let draft = with(|d| requester(d).id = id.clone());
        if ok {
            assert_eq!(admitted(draft).requested_by.id, id);
        } else {
            assert_only_violation(draft, "requested_by.id");
        }
    }
}

#[test]
fn requester_label_is_1_to_256_chars_when_set() {
    let table: Vec<(Option<String>, bool)> = vec![
        (None, true),
        (Some(String::new()), false),
        (Some("a".to_string()), true),
        (Some("a".repeat(256)), true),
        (Some("a".repeat(257)), false),
        (Some("ü".repeat(256)), true),
        (Some("ü".repeat(257)), false),
    ];
    for (label, ok) in table {
        let draft = with(|d| requester(d).label = label.clone());
        if ok {
            assert_eq!(admitted(draft).requested_by.label, label);
        } else {
            assert_only_violation(draft, "requested_by.label");
        }
    }
}

#[test]
fn idempotency_key_is_1_to_256_chars_when_set() {
    let table: Vec<(Option<String>, bool)> = vec![
        (None, true),
        (Some(String::new()), false),
        (Some("k".to_string()), true),
        (Some("k".repeat(256)), true),
        (Some("k".repeat(257)), false),
        (Some("ключ".repeat(64)), true),
        (Some(format!("{}x", "ключ".repeat(64))), false),
    ];
    for (key, ok) in table {
        let draft = with(|d| d.idempotency_key = key.clone());
        if ok {
            assert_eq!(admitted(draft).idempotency_key, key, "stored verbatim");
        } else {
            assert_only_violation(draft, "idempotency_key");
        }
    }
}

#[test]
fn repo_is_at_most_256_chars() {
    let repo_256 = format!("myorg/{}", "a".repeat(250));
    let repo_257 = format!("myorg/{}", "a".repeat(251));
    assert_eq!(repo_256.chars().count(), 256);
    assert_eq!(repo_257.chars().count(), 257);
    assert_eq!(admitted(with_repo(&repo_256)).target.repo, repo_256);
    assert_only_violation(with_repo(&repo_257), "target.repo");
    // surrounding whitespace is trimmed before the length counts
    assert_eq!(
        admitted(with_repo(&format!("  {repo_256}\n"))).target.repo,
        repo_256
    );
}

#[test]
fn ref_is_at_most_256_chars() {
    let ref_256 = "r".repeat(256);
    let ref_257 = "r".repeat(257);
    assert_eq!(admitted(with_ref(&ref_256)).target.ref_name, ref_256);
    assert_only_violation(with_ref(&ref_257), "target.ref");
    let nested_256 = format!("feature/{}", "x".repeat(248));
    assert_eq!(admitted(with_ref(&nested_256)).target.ref_name, nested_256);
}

#[test]
fn path_is_at_most_512_chars() {
    let table: Vec<(String, bool)> = vec![
        (String::new(), true),
        ("p".repeat(512), true),
        ("p".repeat(513), false),
        (format!("src/{}", "p".repeat(508)), true),
        (format!("src/{}", "p".repeat(509)), false),
        ("ü".repeat(512), true),
        ("ü".repeat(513), false),
    ];
    for (path, ok) in table {
        let draft = with_path(&path);
        if ok {
            assert_eq!(admitted(draft).target.path, path);
        } else {
            assert_only_violation(draft, "target.path");
        }
    }
}

// ---------------------------------------------------------------------------
// Normalization
// ---------------------------------------------------------------------------

#[test]
fn repo_is_trimmed_lowercased_and_loses_one_trailing_dot_git() {
    let table = [
        ("myorg/app", "myorg/app"),
        ("MyOrg/App", "myorg/app"),
        ("  MyOrg/App  ", "myorg/app"),
        ("\t\nmyorg/app\r\n", "myorg/app"),
        ("myorg/app.git", "myorg/app"),
        ("MyOrg/App.GIT", "myorg/app"),
        ("MyOrg/App.Git", "myorg/app"),
        ("  myorg/app.git  ", "myorg/app"),
        ("MyOrg/App.git.git", "myorg/app.git"),
        ("myorg/app.git.git.git", "myorg/app.git.git"),
        ("myorg/app.github", "myorg/app.github"),
        ("myorg/app-git", "myorg/app-git"),
        ("myorg/.gitignore", "myorg/.gitignore"),
        ("myorg/team/app.git", "myorg/team/app"),
        ("partner/x", "partner/x"),
        ("PARTNER/Some_Repo-1.2", "partner/some_repo-1.2"),
    ];
    for (raw, normalized) in table {
        assert_eq!(
            admitted(with_repo(raw)).target.repo,
            normalized,
            "repo {raw:?}"
        );
    }
}

#[test]
fn repo_that_normalizes_to_nothing_is_required() {
    for raw in ["", "   ", "\t\n", ".git", "  .GIT  "] {
        assert_only_violation(with_repo(raw), "target.repo");
    }
}

#[test]
fn ref_defaults_to_main_and_is_otherwise_kept() {
    let table = [
        ("", "main"),
        ("main", "main"),
        ("develop", "develop"),
        ("Feature/X", "Feature/X"),
        ("refs/heads/main", "refs/heads/main"),
    ];
    for (raw, stored) in table {
        assert_eq!(
            admitted(with_ref(raw)).target.ref_name,
            stored,
            "ref {raw:?}"
        );
    }
}

#[test]
fn path_objective_and_free_text_are_kept_verbatim() {
    for path in [
        "",
        "src/lib.rs",
        "Docs/README.md",
        "a b/c d.txt",
        "./src",
        "ünï/ファイル.txt",
    ] {
        assert_eq!(admitted(with_path(path)).target.path, path, "path {path:?}");
    }
    let spec = admitted(with(|d| {
        d.objective = "\n  Keep   inner   spacing \t".to_string();
        requester(d).id = " spaced id ".to_string();
        requester(d).label = Some(" Label ".to_string());
        d.idempotency_key = Some(" Key ".to_string());
    }));
    assert_eq!(spec.objective, "Keep   inner   spacing");
    assert_eq!(spec.requested_by.id, " spaced id ");
    assert_eq!(spec.requested_by.label.as_deref(), Some(" Label "));
    assert_eq!(spec.idempotency_key.as_deref(), Some(" Key "));
}

#[test]
fn normalization_is_idempotent() {
    let spec = admitted(with(|d| {
        target(d).repo = "  MyOrg/App.git ".to_string();
        target(d).ref_name = String::new();
        d.objective = "  Do the thing  ".to_string();
        d.constraints.time_budget_seconds = None;
    }));
    let again = admitted(draft_from_spec(&spec));
    assert_eq!(again, spec);

    // Only ONE trailing ".git" goes per pass (the contract's rule), so a stored repo
    // that still ends in ".git" is not a fixed point.
    let spec = admitted(with_repo("MyOrg/App.git.git"));
    assert_eq!(spec.target.repo, "myorg/app.git");
    assert_eq!(admitted(draft_from_spec(&spec)).target.repo, "myorg/app");
}

/// The draft a client would send to ask for exactly `spec` again.
fn draft_from_spec(spec: &TaskSpec) -> TaskDraft {
    TaskDraft {
        version: spec.version.clone(),
        idempotency_key: spec.idempotency_key.clone(),
        requested_by: Some(RequesterDraft {
            kind: spec.requested_by.kind.as_str().to_string(),
            id: spec.requested_by.id.clone(),
            label: spec.requested_by.label.clone(),
        }),
        objective: spec.objective.clone(),
        operation: spec.operation.as_str().to_string(),
        target: Some(TargetDraft {
            repo: spec.target.repo.clone(),
            ref_name: spec.target.ref_name.clone(),
            path: spec.target.path.clone(),
        }),
        constraints: ConstraintsDraft {
            time_budget_seconds: Some(spec.constraints.time_budget_seconds),
            allow_network: spec.constraints.allow_network,
            allow_secrets: spec.constraints.allow_secrets,
        },
        inputs: Ok(spec.inputs.clone()),
        metadata: Ok(spec.metadata.clone()),
    }
}

// ---------------------------------------------------------------------------
// Allowed repository prefixes
// ---------------------------------------------------------------------------

#[test]
fn prefix_list_is_trimmed_lowercased_and_skips_empty_entries() {
    let table: Vec<(&str, Vec<&str>)> = vec![
        ("myorg/, partner", vec!["myorg", "partner"]),
        ("  MyOrg/  ,  Partner ", vec!["myorg", "partner"]),
        ("myorg,,partner,", vec!["myorg", "partner"]),
        ("myorg/team/", vec!["myorg/team"]),
        ("", vec![]),
        (" , ", vec![]),
        (",,,", vec![]),
        ("/", vec![]),
    ];
    for (list, expected) in table {
        let config = PolicyConfig::from_prefix_list(list);
        assert_eq!(
            config.allowed_repo_prefixes(),
            expected.as_slice(),
            "list {list:?}"
        );
    }
    assert_eq!(
        PolicyConfig::from_prefixes([" MyOrg/ ", ""]).allowed_repo_prefixes(),
        ["myorg".to_string()].as_slice()
    );
    assert!(PolicyConfig::default().allowed_repo_prefixes().is_empty());
}

#[test]
fn prefixes_match_whole_segments() {
    // (prefix list, repo as sent, allowed)
    let table = [
        ("myorg", "myorg/app", true),
        ("myorg/", "myorg/app", true),
        ("myorg//", "myorg/app", true),
        ("myorg", "myorganization/app", false),
        ("myorg/", "myorganization/app", false),
        ("myorg", "my/app", false),
        ("myorg", "xmyorg/app", false),
        ("myorg", "other/myorg", false),
        // case-insensitive on both sides after normalization
        ("MyOrg/", "myorg/app", true),
        ("myorg", "MyOrg/App", true),
        ("MYORG", "MyOrg/App.git", true),
        // list syntax
        ("  myorg  ,  partner  ", "partner/x", true),
        ("  myorg  ,  partner  ", "myorg/x", true),
        ("other, myorg", "myorg/app", true),
        ("myorg/, partner", "partners/x", false),
        // multi-segment prefixes
        ("myorg/team", "myorg/team/app", true),
        ("myorg/team/", "myorg/team/app", true),
        ("myorg/team", "myorg/team/sub/app", true),
        ("myorg/team", "myorg/teamx/app", false),
        ("myorg/team", "myorg/app", false),
        ("myorg/team", "myorg/team", true),
        // a full repo name as prefix
        ("myorg/app", "myorg/app", true),
        ("myorg/app", "myorg/app.git", true),
        ("myorg/app", "myorg/app2", false),
        // nothing configured denies everything
        ("", "myorg/app", false),
        (" , ", "myorg/app", false),
        (",", "partner/x", false),
    ];
    for (list, repo, allowed) in table {
        let config = PolicyConfig::from_prefix_list(list);
        let result = admit(with_repo(repo), &config);
        if allowed {
            assert!(result.is_ok(), "{list:?} should allow {repo:?}: {result:?}");
        } else {
            assert_eq!(
                policy_reason_with(with_repo(repo), &config),
                PolicyReason::RepoNotAllowed,
                "{list:?} should deny {repo:?}"
            );
        }
    }
    assert_eq!(
        policy_reason_with(valid(), &PolicyConfig::default()),
        PolicyReason::RepoNotAllowed
    );
}

// ---------------------------------------------------------------------------
// Safety of repo, ref and path
// ---------------------------------------------------------------------------

#[test]
fn unsafe_repos_fail_validation_on_target_repo() {
    // allow everything these could be mistaken for, so only the schema can refuse
    let config = PolicyConfig::from_prefix_list("a, abs, myorg, .., .");
    let repos = [
        "..",
        ".",
        "a/..",
        "../a",
        "a/./b",
        "a//b",
        "/abs/x",
        "a",
        "myorg",
        "myorg/",
        "myorg/app/",
        "a/b c",
        "a/b;rm",
        "a/b;rm -rf /",
        "a/$(id)",
        "a/`id`",
        "a/b\\c",
        "a\\b",
        "a/b:c",
        "a/b@c",
        "a/b\u{0}",
        "a/b\u{7}c",
        "a/b\nc",
        "a/ä",
        "myorg/app.git/",
        "myorg/.git",
        "https://github.com/myorg/app",
        "git@github.com:myorg/app",
    ];
    for repo in repos {
        match admit(with_repo(repo), &config) {
            Err(Rejection::Validation(violations)) => {
                let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
                assert_eq!(fields, vec!["target.repo"], "repo {repo:?}");
            }
            other => panic!("repo {repo:?}: expected VALIDATION_FAILED, got {other:?}"),
        }
    }
}

#[test]
fn safe_repo_names_are_accepted() {
    let config = PolicyConfig::from_prefix_list("myorg, a");
    for repo in [
        "myorg/app",
        "myorg/a.b_c-d",
        "myorg/team/app",
        "a/b",
        "myorg/..app",
        "myorg/app..",
        "A/B",
    ] {
        assert!(admit(with_repo(repo), &config).is_ok(), "repo {repo:?}");
    }
}

#[test]
fn unsafe_refs_fail_validation_on_target_ref() {
    let refs = [
        "--upload-pack=x",
        "-x",
        "-",
        "a..b",
        "..",
        "a b",
        " main",
        "main ",
        "a\tb",
        "a\nb",
        "a\u{a0}b",
        "a~1",
        "a^",
        "a^{}",
        "a:b",
        "a?",
        "a*",
        "a[",
        "a\\b",
        "x.lock",
        "a/x.lock",
        "a.",
        "a/",
        "/a",
        "a//b",
        ".hidden",
        "a/.hidden",
        "@",
        "a@{1}",
        "@{-1}",
        "\u{7}",
        "a\u{0}b",
        "a\u{7f}",
        "a\u{1b}[31m",
    ];
    for ref_name in refs {
        assert_only_violation(with_ref(ref_name), "target.ref");
    }
}

#[test]
fn safe_refs_are_accepted_verbatim() {
    let refs = [
        "feature/x-1",
        "v1.2.3",
        "0123abcd",
        "0123456789abcdef0123456789abcdef01234567",
        "refs/heads/main",
        "release/2024.01",
        "a@b",
        "a./b",
        "HEAD",
        "ü/ñ",
    ];
    for ref_name in refs {
        assert_eq!(
            admitted(with_ref(ref_name)).target.ref_name,
            ref_name,
            "ref {ref_name:?}"
        );
    }
}

/// `git check-ref-format --allow-onelevel` refuses a ref with any slash-separated
/// component ending in `.lock` (not only the last one); the contract says `ref`
/// follows git's ref-name rules.
#[test]
fn ref_components_ending_in_dot_lock_are_refused() {
    for ref_name in ["a.lock/b", "a/b.lock/c", "x.lock/y/z"] {
        assert_only_violation(with_ref(ref_name), "target.ref");
    }
}

#[test]
fn unsafe_paths_fail_validation_on_target_path() {
    let paths = [
        "/etc/passwd",
        "/",
        "\\windows\\system32",
        "..",
        "../x",
        "a/..",
        "a/../b",
        "a/../../etc/passwd",
        "a\\..\\b",
        "a\0b",
        "\0",
        "a\nb",
        "a\rb",
        "a\tb",
        "\u{1b}[2J",
        "a\u{7f}",
        "a\u{85}b",
    ];
    for path in paths {
        assert_only_violation(with_path(path), "target.path");
    }
}

#[test]
fn safe_paths_are_accepted() {
    for path in [
        "src/lib.rs",
        "",
        "a/..b",
        "...",
        "a/b..",
        ".github/workflows/ci.yml",
        "a b/c",
    ] {
        assert_eq!(admitted(with_path(path)).target.path, path, "path {path:?}");
    }
}

// ---------------------------------------------------------------------------
// Operation
// ---------------------------------------------------------------------------

#[test]
fn empty_operation_is_a_schema_violation() {
    assert_only_violation(with(|d| d.operation = String::new()), "operation");
}

#[test]
fn unknown_operation_spellings_are_invalid_operation() {
    for operation in [
        "Docs",
        "DOCS",
        "Code_Change",
        "code-change",
        " docs",
        "docs ",
        "deploy",
        "\u{0}",
    ] {
        assert_eq!(
            policy_reason(with(|d| d.operation = operation.to_string())),
            PolicyReason::InvalidOperation,
            "operation {operation:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// inputs and metadata
// ---------------------------------------------------------------------------

#[test]
fn documents_may_nest_up_to_the_depth_limit() {
    assert_eq!(MAX_DOCUMENT_DEPTH, 32);
    let spec = admitted(with(|d| {
        d.inputs = Ok(nested_objects(MAX_DOCUMENT_DEPTH));
        d.metadata = Ok(nested_arrays(MAX_DOCUMENT_DEPTH));
    }));
    assert_eq!(spec.inputs, nested_objects(MAX_DOCUMENT_DEPTH));
    assert_eq!(spec.metadata, nested_arrays(MAX_DOCUMENT_DEPTH));
}

#[test]
fn documents_deeper_than_the_limit_are_refused() {
    let table: Vec<(&str, TaskDraft, Vec<&str>)> = vec![
        (
            "inputs, objects",
            with(|d| d.inputs = Ok(nested_objects(MAX_DOCUMENT_DEPTH + 1))),
            vec!["inputs"],
        ),
        (
            "inputs, arrays",
            with(|d| d.inputs = Ok(nested_arrays(MAX_DOCUMENT_DEPTH + 1))),
            vec!["inputs"],
        ),
        (
            "metadata, objects",
            with(|d| d.metadata = Ok(nested_objects(MAX_DOCUMENT_DEPTH + 1))),
            vec!["metadata"],
        ),
        (
            "both, very deep",
            with(|d| {
                d.inputs = Ok(nested_objects(500));
                d.metadata = Ok(nested_arrays(500));
            }),
            vec!["inputs", "metadata"],
        ),
    ];
    for (name, draft, fields) in table {
        assert_eq!(violated_fields(draft), fields, "{name}");
    }
}

/// `object_depth` counts the containers that hold a value, so an empty innermost
/// object or array is not a level: `{"a": {}}` has depth 1 like `{"a": 1}`, and
/// MAX_DOCUMENT_DEPTH + 1 nested containers pass when the innermost one is empty.
#[test]
fn an_empty_innermost_container_still_counts_as_a_level() {
    let mut value = json!({});
    for _ in 0..MAX_DOCUMENT_DEPTH {
        value = json!({ "n": value });
    }
    // MAX_DOCUMENT_DEPTH + 1 objects in all.
    assert_only_violation(with(|d| d.inputs = Ok(object(value))), "inputs");
}

#[test]
fn documents_are_limited_in_size() {
    assert_eq!(MAX_DOCUMENT_BYTES, 256 * 1024);
    let at_limit = document_of_bytes(MAX_DOCUMENT_BYTES);
    let spec = admitted(with(|d| {
        d.inputs = Ok(at_limit.clone());
        d.metadata = Ok(at_limit.clone());
    }));
    assert_eq!(spec.inputs, at_limit);

    let over = document_of_bytes(MAX_DOCUMENT_BYTES + 1);
    assert_only_violation(with(|d| d.inputs = Ok(over.clone())), "inputs");
    assert_only_violation(with(|d| d.metadata = Ok(over.clone())), "metadata");
    assert_eq!(
        violated_fields(with(|d| {
            d.inputs = Ok(over.clone());
            d.metadata = Ok(over.clone());
        })),
        vec!["inputs", "metadata"]
    );
}

#[test]
fn non_finite_numbers_are_named_by_their_path() {
    let table: Vec<(TaskDraft, Vec<&str>)> = vec![
        (
            with(|d| {
                d.inputs = Err(NonFiniteNumber {
                    path: "a.b".to_string(),
                })
            }),
            vec!["inputs.a.b"],
        ),
        (
            with(|d| {
                d.metadata = Err(NonFiniteNumber {
                    path: "x[0]".to_string(),
                })
            }),
            vec!["metadata.x[0]"],
        ),
        (
            with(|d| {
                d.inputs = Err(NonFiniteNumber {
                    path: "n".to_string(),
                });
                d.metadata = Err(NonFiniteNumber {
                    path: "m.k".to_string(),
                });
            }),
            vec!["inputs.n", "metadata.m.k"],
        ),
    ];
    for (draft, fields) in table {
        assert_eq!(violated_fields(draft), fields);
    }
}

#[test]
fn documents_are_stored_as_sent() {
    let inputs = object(json!({
        "n": null, "b": true, "i": -3, "f": 1.5, "s": "ü\u{1}\u{1b}[0m",
        "list": [1, "two", {"three": [3]}], "empty": {}
    }));
    let spec = admitted(with(|d| {
        d.inputs = Ok(inputs.clone());
        d.metadata = Ok(Map::new());
    }));
    assert_eq!(spec.inputs, inputs);
    assert!(spec.metadata.is_empty());
}

// ---------------------------------------------------------------------------
// Property test: admit never panics and only admits what the contract allows
// ---------------------------------------------------------------------------

/// Strings meant to break things: arbitrary unicode, control characters,
/// separators, and long runs (up to ~5000 chars).
fn weird_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<String>(),
        "\\PC{0,40}",
        "[\\x00-\\x1f\\x7f \\t\\n./\\\\:~^?*\\[@{}-]{0,24}",
        "[\\u{80}-\\u{10ffff}]{0,16}",
        proptest::collection::vec(any::<char>(), 0..5000)
            .prop_map(|chars| chars.into_iter().collect::<String>()),
        (0usize..5000, "\\PC").prop_map(|(n, s)| s.repeat(n)),
    ]
}

fn version_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["", "1.0"]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["2.0", "1", " 1.0"]).prop_map(str::to_string),
        1 => weird_string(),
    ]
}

fn key_strategy() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        4 => "[A-Za-z0-9-]{0,260}",
        1 => weird_string(),
    ])
}

fn requester_strategy() -> impl Strategy<Value = Option<RequesterDraft>> {
    let kind = prop_oneof![
        6 => prop::sample::select(vec!["human", "agent", "system"]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["", "Human", "robot"]).prop_map(str::to_string),
        1 => weird_string(),
    ];
    let id = prop_oneof![4 => "\\PC{0,130}", 1 => weird_string()];
    let label = proptest::option::of(prop_oneof![4 => "\\PC{0,260}", 1 => weird_string()]);
    proptest::option::weighted(0.9, (kind, id, label))
        .prop_map(|r| r.map(|(kind, id, label)| RequesterDraft { kind, id, label }))
}

fn objective_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "\\s{0,3}\\PC{0,60}\\s{0,3}",
        1 => (3990usize..4010, "\\s{0,2}")
            .prop_map(|(n, pad)| format!("{pad}{}{pad}", "é".repeat(n))),
        1 => weird_string(),
    ]
}

fn operation_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["code_change", "docs", "analysis", "ops"])
            .prop_map(str::to_string),
        1 => prop::sample::select(vec!["", "Docs", "deploy"]).prop_map(str::to_string),
        1 => weird_string(),
    ]
}

fn target_strategy() -> impl Strategy<Value = Option<TargetDraft>> {
    let repo = prop_oneof![
        6 => "\\s{0,2}(myorg|MyOrg|partner|PARTNER|other|myorganization)(/[A-Za-z0-9._-]{1,12}){1,3}(\\.git|\\.GIT){0,2}\\s{0,2}",
        1 => "[a-z./ ]{0,12}",
        1 => weird_string(),
    ];
    let ref_name = prop_oneof![
        3 => prop::sample::select(vec!["", "main", "feature/x-1", "v1.2.3"]).prop_map(str::to_string),
        2 => "[A-Za-z0-9./_@{}~^:?*\\[\\\\ -]{1,20}",
        1 => weird_string(),
    ];
    let path = prop_oneof![
        3 => prop::sample::select(vec!["", "src/lib.rs", "docs"]).prop_map(str::to_string),
        2 => "[a-z./\\\\\\x00\\n]{0,30}",
        1 => weird_string(),
    ];
    proptest::option::weighted(0.9, (repo, ref_name, path)).prop_map(|t| {
        t.map(|(repo, ref_name, path)| TargetDraft {
            repo,
            ref_name,
            path,
        })
    })
}

fn constraints_strategy() -> impl Strategy<Value = ConstraintsDraft> {
    let budget = proptest::option::of(prop_oneof![
        3 => 0i32..100_000,
        1 => any::<i32>(),
        1 => prop::sample::select(vec![29, 30, 86_400, 86_401, i32::MIN, i32::MAX]),
    ]);
    (
        budget,
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(time_budget_seconds, allow_network, allow_secrets)| ConstraintsDraft {
                time_budget_seconds,
                allow_network,
                allow_secrets,
            },
        )
}

fn json_strategy() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Json::Number)),
        "\\PC{0,16}".prop_map(Json::from),
    ];
    leaf.prop_recursive(40, 96, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            proptest::collection::btree_map("\\PC{0,8}", inner, 0..4)
                .prop_map(|map| Json::Object(map.into_iter().collect())),
        ]
    })
}

fn document_strategy() -> impl Strategy<Value = Result<Map<String, Json>, NonFiniteNumber>> {
    prop_oneof![
        8 => proptest::collection::btree_map("\\PC{0,8}", json_strategy(), 0..4)
            .prop_map(|map| Ok(map.into_iter().collect())),
        1 => (1usize..40).prop_map(|depth| Ok(nested_objects(depth))),
        1 => "[a-z.\\[\\]0-9]{1,12}".prop_map(|path| Err(NonFiniteNumber { path })),
    ]
}

fn config_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just(PREFIXES.to_string()),
        1 => prop::sample::select(vec!["", " , ", "MYORG", "myorg/team", "other/, partner/"])
            .prop_map(str::to_string),
        1 => "[a-zA-Z/, ]{0,30}",
        1 => weird_string(),
    ]
}

prop_compose! {
    fn draft_strategy()(
        version in version_strategy(),
        idempotency_key in key_strategy(),
        requested_by in requester_strategy(),
        objective in objective_strategy(),
        operation in operation_strategy(),
        target in target_strategy(),
        constraints in constraints_strategy(),
        inputs in document_strategy(),
        metadata in document_strategy(),
    ) -> TaskDraft {
        TaskDraft {
            version,
            idempotency_key,
            requested_by,
            objective,
            operation,
            target,
            constraints,
            inputs,
            metadata,
        }
    }
}

/// Every field name a VALIDATION_FAILED may carry.
const KNOWN_FIELDS: &[&str] = &[
    "idempotency_key",
    "requested_by",
    "requested_by.kind",
    "requested_by.id",
    "requested_by.label",
    "objective",
    "operation",
    "target",
    "target.repo",
    "target.ref",
    "target.path",
    "inputs",
    "metadata",
];

/// The contract's normalization of a repo, written independently of the gate.
fn expected_repo(raw: &str) -> String {
    let lowered = raw.trim().to_lowercase();
    lowered
        .strip_suffix(".git")
        .map(str::to_string)
        .unwrap_or(lowered)
}

/// Checks one outcome of `admit` against the contract; `Err` describes a breach.
fn check_outcome(
    draft: &TaskDraft,
    list: &str,
    outcome: &Result<TaskSpec, Rejection>,
) -> Result<(), String> {
    let config = PolicyConfig::from_prefix_list(list);
    match outcome {
        Ok(spec) => check_admitted(draft, &config, spec),
        Err(Rejection::UnsupportedVersion(version)) => {
            if version != &draft.version || version.is_empty() || version == "1.0" {
                return Err(format!("bad UNSUPPORTED_VERSION {version:?}"));
            }
            Ok(())
        }
        Err(Rejection::Validation(violations)) => {
            if violations.is_empty() {
                return Err("VALIDATION_FAILED without a field".to_string());
            }
            for violation in violations {
                let field = violation.field.as_str();
                let known = KNOWN_FIELDS.contains(&field)
                    || field.starts_with("inputs.")
                    || field.starts_with("metadata.");
                if !known || violation.description.trim().is_empty() {
                    return Err(format!("bad field violation {violation:?}"));
                }
            }
            Ok(())
        }
        Err(Rejection::Policy(violation)) => {
            if violation.message.trim().is_empty() {
                return Err(format!("policy violation without a message: {violation:?}"));
            }
            if violation.reason == PolicyReason::InvalidOperation
                && (draft.operation.is_empty() || Operation::parse(&draft.operation).is_some())
            {
                return Err(format!("INVALID_OPERATION for {:?}", draft.operation));
            }
            Ok(())
        }
    }
}

fn check_admitted(draft: &TaskDraft, config: &PolicyConfig, spec: &TaskSpec) -> Result<(), String> {
    let fail = |what: &str| Err(format!("admitted spec breaks: {what}; spec = {spec:?}"));
    let (Some(requester), Some(target)) = (&draft.requested_by, &draft.target) else {
        return fail("admitted without requester or target");
    };
    if !(draft.version.is_empty() || draft.version == "1.0") || spec.version != "1.0" {
        return fail("version");
    }
    // idempotency key
    if spec.idempotency_key != draft.idempotency_key {
        return fail("idempotency_key not kept");
    }
    if let Some(key) = &spec.idempotency_key
        && !(1..=256).contains(&key.chars().count())
    {
        return fail("idempotency_key length");
    }
    // requester
    if spec.requested_by.kind.as_str() != requester.kind
        || spec.requested_by.id != requester.id
        || spec.requested_by.label != requester.label
    {
        return fail("requested_by not kept");
    }
    if !(1..=128).contains(&spec.requested_by.id.chars().count()) {
        return fail("requested_by.id length");
    }
    if let Some(label) = &spec.requested_by.label
        && !(1..=256).contains(&label.chars().count())
    {
        return fail("requested_by.label length");
    }
    // objective
    if spec.objective != draft.objective.trim() || spec.objective.trim() != spec.objective {
        return fail("objective not trimmed");
    }
    if !(5..=4000).contains(&spec.objective.chars().count()) {
        return fail("objective length");
    }
    // text a person reads: no control, bidi or invisible character; ids one line
    if jct::text::text_problem(&spec.objective).is_some()
        || jct::text::line_problem(&spec.requested_by.id).is_some()
        || spec
            .requested_by
            .label
            .iter()
            .chain(&spec.idempotency_key)
            .any(|text| jct::text::line_problem(text).is_some())
        || jct::text::line_problem(&spec.target.ref_name).is_some()
        || jct::text::line_problem(&spec.target.path).is_some()
    {
        return fail("hostile text admitted");
    }
    if spec.target.repo.split('/').any(|s| s.starts_with('-')) {
        return fail("a repo segment git could read as an option");
    }
    // operation
    if spec.operation.as_str() != draft.operation {
        return fail("operation");
    }
    // repo
    let repo = &spec.target.repo;
    if repo != &expected_repo(&target.repo) {
        return fail("repo not normalized as the contract says");
    }
    if repo != &repo.to_lowercase() || repo.trim() != repo {
        return fail("repo not lowercased/trimmed");
    }
    if !(1..=256).contains(&repo.chars().count()) {
        return fail("repo length");
    }
    let segments: Vec<&str> = repo.split('/').collect();
    if segments.len() < 2
        || segments.iter().any(|s| {
            s.is_empty()
                || *s == "."
                || *s == ".."
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
    {
        return fail("repo is not a safe owner/name");
    }
    let allowed = config
        .allowed_repo_prefixes()
        .iter()
        .any(|prefix| repo == prefix || repo.starts_with(&format!("{prefix}/")));
    if !allowed {
        return fail("repo not under an allowed prefix");
    }
    // ref
    let ref_name = &spec.target.ref_name;
    let expected_ref = if target.ref_name.is_empty() {
        "main"
    } else {
        target.ref_name.as_str()
    };
    if ref_name != expected_ref {
        return fail("ref not kept / defaulted");
    }
    if !(1..=256).contains(&ref_name.chars().count())
        || ref_name.starts_with('-')
        || ref_name.starts_with('/')
        || ref_name.ends_with('/')
        || ref_name.ends_with('.')
        || ref_name.ends_with(".lock")
        || ref_name.contains("..")
        || ref_name.contains("//")
        || ref_name.contains("@{")
        || ref_name == "@"
        || ref_name.split('/').any(|c| c.starts_with('.'))
        || ref_name.chars().any(|c| {
            c.is_control()
                || c.is_whitespace()
                || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        })
    {
        return fail("unsafe ref");
    }
    // path
    let path = &spec.target.path;
    if path != &target.path {
        return fail("path not kept");
    }
    if path.chars().count() > 512
        || path.starts_with('/')
        || path.starts_with('\\')
        || path.chars().any(char::is_control)
        || path.split(['/', '\\']).any(|s| s == "..")
    {
        return fail("unsafe path");
    }
    // constraints
    let budget = spec.constraints.time_budget_seconds;
    if !(30..=86_400).contains(&budget)
        || budget != draft.constraints.time_budget_seconds.unwrap_or(900)
    {
        return fail("time budget");
    }
    if spec.constraints.allow_network || spec.constraints.allow_secrets {
        return fail("network or secrets allowed");
    }
    // documents
    if draft.inputs.as_ref().ok() != Some(&spec.inputs)
        || draft.metadata.as_ref().ok() != Some(&spec.metadata)
    {
        return fail("documents not kept");
    }
    for document in [&spec.inputs, &spec.metadata] {
        let bytes = serde_json::to_vec(document)
            .map_err(|e| e.to_string())?
            .len();
        if bytes > MAX_DOCUMENT_BYTES {
            return fail("document too large");
        }
    }
    // normalization is a fixed point, except that only one trailing ".git" goes
    // per pass ("a/b.git.git" -> "a/b.git" -> "a/b")
    if repo.ends_with(".git") {
        return Ok(());
    }
    match admit(draft_from_spec(spec), config) {
        Ok(again) if &again == spec => Ok(()),
        other => Err(format!("re-admitting the normalized spec gave {other:?}")),
    }
}

proptest! {
    // Default case count; no regression files written into the source tree.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn admit_never_panics_and_only_admits_valid_tasks(
        draft in draft_strategy(),
        list in config_strategy(),
    ) {
        let config = PolicyConfig::from_prefix_list(&list);
        let outcome = admit(draft.clone(), &config);
        if let Err(breach) = check_outcome(&draft, &list, &outcome) {
            prop_assert!(false, "{}", breach);
        }
        // deterministic
        prop_assert_eq!(admit(draft, &config), outcome);
    }

    #[test]
    fn any_prefix_list_parses_to_normalized_prefixes(list in weird_string()) {
        let config = PolicyConfig::from_prefix_list(&list);
        for prefix in config.allowed_repo_prefixes() {
            prop_assert!(!prefix.is_empty());
            prop_assert!(!prefix.ends_with('/'));
            prop_assert_eq!(prefix, &prefix.to_lowercase());
        }
    }
}

/// Guards the property test against a generator that never reaches the
/// interesting outcomes: a fixed-seed sample must hit each kind of answer.
#[test]
fn property_generator_reaches_every_kind_of_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = (draft_strategy(), config_strategy());
    let (mut ok, mut version, mut validation, mut policy) = (0, 0, 0, 0);
    for _ in 0..512 {
        let (draft, list) = strategy.new_tree(&mut runner).expect("generates").current();
        match admit(draft, &PolicyConfig::from_prefix_list(&list)) {
            Ok(_) => ok += 1,
            Err(Rejection::UnsupportedVersion(_)) => version += 1,
            Err(Rejection::Validation(_)) => validation += 1,
            Err(Rejection::Policy(_)) => policy += 1,
        }
    }
    assert!(
        ok > 0 && version > 0 && validation > 0 && policy > 0,
        "ok {ok}, version {version}, validation {validation}, policy {policy}"
    );
}
