//! The tokens file: `TOKEN,PRINCIPAL,ROLE[,ROLE…]` per line (the Kubernetes
//! static-token-file shape), `#` comments and blank lines ignored. `TOKEN` is the
//! bearer token or `sha256:<64 hex digits>` of it, so the file need not hold a
//! usable secret. Only digests are kept; a presented token is hashed and compared
//! against every digest in constant time.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::roles::{Principal, Role, Roles};

const HASH_PREFIX: &str = "sha256:";
const MAX_PRINCIPAL_CHARS: usize = 128;

/// A tokens file that cannot be used. Never carries a token or a line's text:
/// only where the problem is and what it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokensFileError {
    #[error("cannot read the tokens file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("tokens file line {line}: {problem}")]
    Line { line: usize, problem: String },
    #[error("tokens file line {line}: the same token is already on line {first}")]
    DuplicateToken { line: usize, first: usize },
}

type TokenDigest = [u8; 32];

struct Entry {
    digest: TokenDigest,
    principal: Principal,
    line: usize,
}

/// The parsed tokens file.
pub struct Callers {
    entries: Vec<Entry>,
}

impl Callers {
    pub fn read(path: &Path) -> Result<Callers, TokensFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| TokensFileError::Unreadable {
            path: path.display().to_string(),
            reason: error.kind().to_string(),
        })?;
        Callers::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Callers, TokensFileError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let entry = parse_line(content, line)?;
            if let Some(first) = entries.iter().find(|e| e.digest == entry.digest) {
                return Err(TokensFileError::DuplicateToken {
                    line,
                    first: first.line,
                });
            }
            entries.push(entry);
        }
        Ok(Callers { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal holding `token`. Every digest is compared, in constant
    /// time, so the answer's timing says nothing about which entry (if any) was
    /// close.
    pub fn find(&self, token: &[u8]) -> Option<Principal> {
        let presented: TokenDigest = Sha256::digest(token).into();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, entry) in self.entries.iter().enumerate() {
            let hit = entry.digest.ct_eq(&presented);
            index.conditional_assign(&u32::try_from(i).unwrap_or(u32::MAX), hit);
            found |= hit;
        }
        if bool::from(found) {
            self.entries
                .get(index as usize)
                .map(|entry| entry.principal.clone())
        } else {
            None
        }
    }
}

fn parse_line(content: &str, line: usize) -> Result<Entry, TokensFileError> {
    let problem = |problem: &str| TokensFileError::Line {
        line,
        problem: problem.to_string(),
    };
    let mut fields = content.split(',').map(str::trim);
    let token = fields.next().unwrap_or_default();
    let principal = fields.next().unwrap_or_default();
    let digest = token_digest(token).map_err(&problem)?;
    if principal.is_empty() {
        return Err(problem(
            "expected TOKEN,PRINCIPAL,ROLE[,ROLE…]: the principal is missing",
        ));
    }
    if principal.chars().count() > MAX_PRINCIPAL_CHARS || principal.chars().any(|c| c.is_control())
    {
        return Err(problem("the principal must be 1-128 printable characters"));
    }
    let mut roles = Roles::NONE;
    for name in fields {
        match Role::parse(name) {
            Some(role) => roles = roles.with(role),
            None => {
                // a role name is not secret, and naming it is what makes the error useful
                return Err(TokensFileError::Line {
                    line,
                    problem: format!(
                        "unknown role {name:?} (roles: submitter, reader, operator, worker)"
                    ),
                });
            }
        }
    }
    if roles == Roles::NONE {
        return Err(problem(
            "expected TOKEN,PRINCIPAL,ROLE[,ROLE…]: no role given",
        ));
    }
    Ok(Entry {
        digest,
        principal: Principal::new(principal, roles),
        line,
    })
}

fn token_digest(token: &str) -> Result<TokenDigest, &'static str> {
    if let Some(hex_digest) = token.strip_prefix(HASH_PREFIX) {
        let mut digest = [0u8; 32];
        if hex_digest.len() != 64 || hex::decode_to_slice(hex_digest, &mut digest).is_err() {
            return Err("a hashed token must be sha256: followed by 64 hex digits");
        }
        return Ok(digest);
    }
    if token.is_empty() {
        return Err("the token is empty");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be printable ASCII without spaces");
    }
    Ok(Sha256::digest(token.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_error(text: &str) -> (usize, String) {
        match Callers::parse(text) {
            Err(TokensFileError::Line { line, problem }) => (line, problem),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("{text:?} should be refused"),
        }
    }

    #[test]
    fn reads_plain_and_hashed_tokens_with_comments_and_blanks() {
        let hashed = hex::encode(Sha256::digest(b"s3cret-2"));
        let text = format!(
            "# callers\n\ns3cret-1, alice, submitter\nsha256:{hashed},ops,operator,reader\n"
        );
        let callers = Callers::parse(&text).expect("valid file");
        assert_eq!(callers.len(), 2);
        let alice = callers.find(b"s3cret-1").expect("alice");
        assert_eq!(alice.name(), "alice");
        assert_eq!(alice.roles(), Roles::of(&[Role::Submitter]));
        let ops = callers.find(b"s3cret-2").expect("ops by hash");
        assert_eq!(ops.roles(), Roles::of(&[Role::Operator, Role::Reader]));
        assert!(callers.find(b"s3cret-3").is_none());
        assert!(
            callers
                .find(format!("sha256:{hashed}").as_bytes())
                .is_none()
        );
    }

    #[test]
    fn bad_lines_are_named_by_number_without_the_token() {
        let (line, problem) = line_error("ok,alice,submitter\n\nsecret-x,bob,admin\n");
        assert_eq!(line, 3);
        assert!(problem.contains("\"admin\""), "{problem}");
        assert!(!problem.contains("secret-x"));
        assert_eq!(line_error("secret-y,bob").0, 1);
        assert_eq!(line_error("secret-y,,reader").0, 1);
        assert_eq!(line_error(",bob,reader").0, 1);
        assert_eq!(line_error("sha256:abc,bob,reader").0, 1);
        assert_eq!(line_error("sec ret,bob,reader").0, 1);
        assert!(!line_error("secret-z,bob,reader,").1.contains("secret-z"));
    }

    #[test]
    fn a_duplicate_token_is_refused_even_when_one_is_hashed() {
        let hashed = hex::encode(Sha256::digest(b"same"));
        let error = Callers::parse(&format!("same,a,reader\n#\nsha256:{hashed},b,worker"))
            .err()
            .expect("duplicate");
        assert_eq!(error, TokensFileError::DuplicateToken { line: 3, first: 1 });
    }

    #[test]
    fn one_principal_may_hold_two_tokens_for_rotation() {
        let callers = Callers::parse("old,alice,submitter\nnew,alice,submitter").expect("valid");
        assert_eq!(
            callers.find(b"old").map(|p| p.name().to_string()),
            Some("alice".into())
        );
        assert_eq!(
            callers.find(b"new").map(|p| p.name().to_string()),
            Some("alice".into())
        );
    }
}
