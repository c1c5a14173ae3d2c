//! The four roles of the contract and the principal a call is made by.

use std::fmt;
use std::sync::Arc;

/// What a principal may do; the method table ([`super::methods`]) says which
/// roles each method admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Enqueues tasks; sees and cancels only its own.
    Submitter,
    /// Reads every task.
    Reader,
    /// Everything but the dispatch stream.
    Operator,
    /// Attaches to the dispatch stream and reports under its leases.
    Worker,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Submitter, Role::Reader, Role::Operator, Role::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Reader => "reader",
            Role::Operator => "operator",
            Role::Worker => "worker",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Roles(u8);

impl Roles {
    pub const NONE: Roles = Roles(0);
    pub const ALL: Roles = Roles::of(&Role::ALL);

    pub const fn of(roles: &[Role]) -> Roles {
        let mut bits = 0;
        let mut i = 0;
        while i < roles.len() {
            bits |= roles[i].bit();
            i += 1;
        }
        Roles(bits)
    }

    pub fn with(self, role: Role) -> Roles {
        Roles(self.0 | role.bit())
    }

    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    pub fn intersects(self, other: Roles) -> bool {
        self.0 & other.0 != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL
            .into_iter()
            .filter(move |role| self.contains(*role))
    }
}

/// Who made a call, as the auth layer established it. Handlers find it in the
/// request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    name: Arc<str>,
    roles: Roles,
}

/// The principal of every caller when authentication is off.
pub const ANONYMOUS: &str = "anonymous";

impl Principal {
    pub fn new(name: impl Into<Arc<str>>, roles: Roles) -> Self {
        Self {
            name: name.into(),
            roles,
        }
    }

    /// Every caller without authentication: all roles, as before authentication existed.
    pub fn anonymous() -> Self {
        Self::new(ANONYMOUS, Roles::ALL)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn roles(&self) -> Roles {
        self.roles
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(role)
    }

    /// Whether the principal sees every task (reader or operator), rather than
    /// only those it submitted.
    pub fn sees_all_tasks(&self) -> bool {
        self.has(Role::Reader) || self.has(Role::Operator)
    }

    /// Whether the principal may act on every task (operator), rather than only
    /// those it submitted.
    pub fn manages_all_tasks(&self) -> bool {
        self.has(Role::Operator)
    }
}
