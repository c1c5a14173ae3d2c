//! Any EnqueueRequest — arbitrary strings, numbers, nesting, aliases — is either
//! admitted or refused with one of the contract's documented reasons and codes,
//! through the same conversion and gate the server runs. Never a panic.

use intake_service::api::convert::draft_from_request;
use intake_service::api::errors::from_rejection;
use intake_service::policy::{PolicyConfig, admit};
use jct::v1 as pb;
use proptest::prelude::*;
use prost_types::value::Kind;
use prost_types::{Struct, Value};
use tonic::Code;
use tonic_types::StatusExt;

const DOCUMENTED: &[(&str, Code)] = &[
    ("VALIDATION_FAILED", Code::InvalidArgument),
    ("UNSUPPORTED_VERSION", Code::InvalidArgument),
    ("INVALID_OPERATION", Code::InvalidArgument),
    ("REPO_NOT_ALLOWED", Code::PermissionDenied),
    ("TIME_BUDGET_TOO_LOW", Code::InvalidArgument),
    ("TIME_BUDGET_TOO_HIGH", Code::InvalidArgument),
    ("NETWORK_ACCESS_DENIED", Code::PermissionDenied),
    ("SECRETS_ACCESS_DENIED", Code::PermissionDenied),
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("myorg/app".to_string()),
        Just("MyOrg/App.git ".to_string()),
        Just("docs".to_string()),
        Just("code_change".to_string()),
        Just("1.0".to_string()),
        Just("human".to_string()),
        Just("../etc".to_string()),
        Just("--upload-pack=x".to_string()),
        "\\PC{0,40}",
        ".{0,12}",
        "[a-z/._-]{0,300}",
        Just("x".repeat(4001)),
    ]
}

fn value(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Kind::NullValue(0)),
        any::<bool>().prop_map(Kind::BoolValue),
        any::<f64>().prop_map(Kind::NumberValue),
        ".{0,8}".prop_map(Kind::StringValue),
    ];
    if depth == 0 {
        return leaf.prop_map(|kind| Value { kind: Some(kind) }).boxed();
    }
    prop_oneof![
        leaf.prop_map(|kind| Value { kind: Some(kind) }),
        structure(depth - 1).prop_map(|s| Value {
            kind: Some(Kind::StructValue(s))
        }),
        proptest::collection::vec(value(depth - 1), 0..3).prop_map(|values| Value {
            kind: Some(Kind::ListValue(prost_types::ListValue { values }))
        }),
    ]
    .boxed()
}

fn structure(depth: u32) -> BoxedStrategy<Struct> {
    proptest::collection::btree_map(".{0,6}", value(depth), 0..4)
        .prop_map(|fields| Struct { fields })
        .boxed()
}

prop_compose! {
    fn request()(
        version in text(), key in proptest::option::of(text()),
        requester in proptest::option::of((text(), text(), proptest::option::of(text()))),
        objective in text(), operation in text(), legacy_type in text(),
        target in proptest::option::of((text(), text(), text(), text())),
        constraints in proptest::option::of((proptest::option::of(any::<i32>()), any::<bool>(), any::<bool>())),
        inputs in proptest::option::of(structure(3)), metadata in proptest::option::of(structure(3)),
        payload in proptest::option::of(structure(2)), validate_only in any::<bool>(),
    ) -> pb::EnqueueRequest {
        #[allow(deprecated)]
        pb::EnqueueRequest {
            version, idempotency_key: key,
            requested_by: requester.map(|(kind, id, label)| pb::RequestedBy { kind, id, label }),
            objective, operation, r#type: legacy_type,
            target: target.map(|(repo, r#ref, path, repository)| pb::Target { repo, r#ref, path, repository }),
            constraints: constraints.map(|(time_budget_seconds, allow_network, allow_secrets)| pb::Constraints { time_budget_seconds, allow_network, allow_secrets }),
            inputs, metadata, payload, validate_only,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_request_is_admitted_or_refused_with_a_documented_reason(request in request()) {
        let config = PolicyConfig::from_prefix_list("myorg/, partner");
        match admit(draft_from_request(&request), &config) {
            Ok(spec) => {
                prop_assert!((30..=86_400).contains(&spec.constraints.time_budget_seconds));
                prop_assert!(!spec.constraints.allow_network && !spec.constraints.allow_secrets);
                prop_assert!(spec.target.repo.starts_with("myorg/") || spec.target.repo.starts_with("partner/"));
            }
            Err(rejection) => {
                let status = from_rejection(rejection);
                let reason = status.get_details_error_info().map(|info| info.reason).unwrap_or_default();
                let documented = DOCUMENTED.iter().find(|(r, _)| *r == reason);
                prop_assert!(documented.is_some(), "undocumented reason {reason:?}");
                prop_assert_eq!(documented.map(|(_, code)| *code), Some(status.code()));
                prop_assert!(!status.message().is_empty());
            }
        }
    }
}
