//! The one table of who may call what: every method of every service the intake
//! serves, by its gRPC path. The auth layer consults nothing else, and a test
//! checks that every method in the served descriptor sets is here, so a new RPC
//! cannot ship unguarded. A path that is not in the table is refused (fail closed).
//!
//! Finer rules live with the data they guard: a submitter reaches `GetTask` here,
//! and the handler then shows it only the tasks it submitted.

use super::roles::{Role, Roles};

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a token (health probes).
    Open,
    /// Any caller with a valid token, whatever its roles (reflection).
    Authenticated,
    /// A caller holding at least one of these roles.
    AnyOf(Roles),
}

use Role::{Operator, Reader, Submitter, Worker};

const CLIENTS_READ: Access = Access::AnyOf(Roles::of(&[Submitter, Reader, Operator]));
const CLIENTS_WRITE: Access = Access::AnyOf(Roles::of(&[Submitter, Operator]));
const WORKERS: Access = Access::AnyOf(Roles::of(&[Worker]));
const OPERATORS: Access = Access::AnyOf(Roles::of(&[Operator]));

/// Every method the intake serves: `/package.Service/Method` → access.
pub const METHODS: &[(&str, Access)] = &[
    ("/jct.v1.TaskService/Enqueue", CLIENTS_WRITE),
    ("/jct.v1.TaskService/GetTask", CLIENTS_READ),
    ("/jct.v1.TaskService/ListTasks", CLIENTS_READ),
    ("/jct.v1.TaskService/WatchTask", CLIENTS_READ),
    // only to `cancelled`, and a submitter only its own tasks (the handler decides)
    ("/jct.v1.TaskService/UpdateStatus", CLIENTS_WRITE),
    ("/jct.v1.DispatchService/Attach", WORKERS),
    ("/jct.v1.OperatorService/GetVersion", OPERATORS),
    ("/jct.v1.OperatorService/GetSystemStatus", OPERATORS),
    ("/jct.v1.OperatorService/ListAuditEvents", OPERATORS),
    ("/grpc.health.v1.Health/Check", Access::Open),
    ("/grpc.health.v1.Health/Watch", Access::Open),
    // the schema is not secret, but who may list it is still a caller we know
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::Authenticated,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Access::Authenticated,
    ),
];

/// The access rule of a gRPC path; `None` for a path the intake does not serve.
pub fn access(path: &str) -> Option<Access> {
    METHODS
        .iter()
        .find(|(method, _)| *method == path)
        .map(|(_, access)| *access)
}

/// Whether `roles` may call a method with `access` (for a caller with a token).
pub fn allows(access: Access, roles: Roles) -> bool {
    match access {
        Access::Open | Access::Authenticated => true,
        Access::AnyOf(allowed) => allowed.intersects(roles),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jct::prost::Message;

    /// Every method of every service in the descriptor sets the intake serves.
    fn served_methods() -> Vec<String> {
        let sets = [
            jct::v1::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut methods = Vec::new();
        for bytes in sets {
            let set = prost_types::FileDescriptorSet::decode(bytes).expect("descriptor set");
            for file in set.file {
                let package = file.package();
                for service in &file.service {
                    for method in &service.method {
                        methods.push(format!("/{package}.{}/{}", service.name(), method.name()));
                    }
                }
            }
        }
        methods
    }

    #[test]
    fn every_served_method_has_a_rule() {
        let served = served_methods();
        assert!(served.len() >= 10, "{served:?}");
        for method in &served {
            assert!(access(method).is_some(), "{method} is not in METHODS");
        }
    }

    #[test]
    fn the_table_names_each_method_once() {
        let mut paths: Vec<&str> = METHODS.iter().map(|(path, _)| *path).collect();
        paths.sort_unstable();
        let before = paths.len();
        paths.dedup();
        assert_eq!(before, paths.len());
    }

    #[test]
    fn unknown_paths_have_no_rule() {
        assert_eq!(access("/jct.v1.TaskService/DropAll"), None);
        assert_eq!(access(""), None);
    }
}
