//! Who is calling, and may they? Callers present `authorization: Bearer <token>`;
//! the tokens file (`JCT_AUTH_TOKENS_FILE`) names each token's principal and
//! roles; one tower layer ([`layer::AuthLayer`]) decides every call from one
//! method → roles table ([`methods`]) and hands the [`Principal`] to handlers in
//! the request's extensions. Without a tokens file every caller is
//! [`Principal::anonymous`] with every role (the intake then serves loopback only,
//! see [`crate::server`]).
//!
//! Only SHA-256 digests of tokens are kept in memory, compared in constant time;
//! no token is ever logged, stored or echoed in an error.

pub mod layer;
pub mod methods;
pub mod refusals;
#[cfg(unix)]
pub mod reload;
pub mod roles;
pub mod tokens;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub use roles::{Principal, Role, Roles};
pub use tokens::{Callers, TokensFileError};

/// Why a call was refused before it reached a handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send `authorization: Bearer <token>`")]
    MissingToken,
    #[error("the authorization header is not `Bearer <token>`")]
    MalformedToken,
    #[error("the bearer token is not known")]
    UnknownToken,
    #[error("{principal} may not call {method}")]
    RoleNotAllowed { principal: String, method: String },
}

impl AuthError {
    /// A short, stable label for logs and the audit trail (never the token).
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::MalformedToken => "malformed_token",
            AuthError::UnknownToken => "unknown_token",
            AuthError::RoleNotAllowed { .. } => "role_not_allowed",
        }
    }
}

/// The callers currently allowed: swapped whole on reload, so a call sees either
/// the old set or the new one, never a mix.
#[derive(Clone)]
pub struct Authenticator {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    /// No tokens file: everyone is `anonymous` with every role.
    Open,
    Tokens {
        path: PathBuf,
        callers: Arc<RwLock<Arc<Callers>>>,
    },
}

impl Authenticator {
    /// No authentication: every caller is [`Principal::anonymous`].
    pub fn open() -> Self {
        Self { mode: Mode::Open }
    }

    /// Reads the tokens file; a bad file stops the intake with the line at fault.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, TokensFileError> {
        let path = path.into();
        let callers = Callers::read(&path)?;
        Ok(Self {
            mode: Mode::Tokens {
                path,
                callers: Arc::new(RwLock::new(Arc::new(callers))),
            },
        })
    }

    /// Whether callers must present a token.
    pub fn is_enforcing(&self) -> bool {
        matches!(self.mode, Mode::Tokens { .. })
    }

    /// Re-reads the tokens file. On error the current callers stay in force.
    /// Returns how many tokens are now accepted.
    pub fn reload(&self) -> Result<usize, TokensFileError> {
        let Mode::Tokens { path, callers } = &self.mode else {
            return Ok(0);
        };
        let fresh = Callers::read(path)?;
        let count = fresh.len();
        match callers.write() {
            Ok(mut current) => *current = Arc::new(fresh),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(fresh),
        }
        Ok(count)
    }

    /// Who presents `authorization` (the header's value, if any).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        let Mode::Tokens { callers, .. } = &self.mode else {
            return Ok(Principal::anonymous());
        };
        let token = bearer_token(authorization.ok_or(AuthError::MissingToken)?)?;
        let current = match callers.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        current.find(token).ok_or(AuthError::UnknownToken)
    }
}

/// The token of an `authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Result<&[u8], AuthError> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return Err(AuthError::MalformedToken);
    }
    let token = value[SCHEME.len()..].trim_ascii();
    if token.is_empty() || !token.iter().all(u8::is_ascii_graphic) {
        return Err(AuthError::MalformedToken);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values_are_read_strictly() {
        assert_eq!(bearer_token(b"Bearer abc"), Ok(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Ok(&b"abc"[..]));
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"Bearer a b",
            b"abc",
        ] {
            assert_eq!(bearer_token(bad), Err(AuthError::MalformedToken), "{bad:?}");
        }
    }

    #[test]
    fn open_mode_makes_everyone_anonymous_with_every_role() {
        let principal = Authenticator::open()
            .authenticate(None)
            .expect("open mode admits all");
        assert_eq!(principal.name(), "anonymous");
        assert_eq!(principal.roles(), Roles::ALL);
    }
}
