//! The bearer token a client reads from a file (the worker's
//! `JCT_WORKER_TOKEN_FILE`, `jct`'s `JCT_TOKEN_FILE`) and sends as
//! `authorization: Bearer <token>`. Errors name the file, never its content.

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("the token file {path} holds no usable token (one line of printable ASCII)")]
    Malformed { path: String },
}

/// The `authorization` value for the token in `path`: the file's content with
/// surrounding whitespace trimmed, which must be printable ASCII without spaces.
/// The value is marked sensitive, which keeps it out of HPACK's dynamic table and
/// of debug output.
pub fn authorization_from_file(path: &Path) -> Result<MetadataValue<Ascii>, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| TokenFileError::Unreadable {
        path: path.display().to_string(),
        reason: error.kind().to_string(),
    })?;
    let token = text.trim();
    let malformed = || TokenFileError::Malformed {
        path: path.display().to_string(),
    };
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed());
    }
    let mut value: MetadataValue<Ascii> =
        format!("Bearer {token}").parse().map_err(|_| malformed())?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_trimmed_checked_and_never_echoed() {
        let dir = std::env::temp_dir().join(format!("jct-bearer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token");
        assert!(matches!(
            authorization_from_file(&path),
            Err(TokenFileError::Unreadable { .. })
        ));
        std::fs::write(&path, "s3cret\n").expect("write");
        let value = authorization_from_file(&path).expect("token");
        assert_eq!(value.to_str().ok(), Some("Bearer s3cret"));
        assert!(!format!("{value:?}").contains("s3cret"));
        for bad in ["", "  \n", "two words-s3cret", "s3cret\u{e9}"] {
            std::fs::write(&path, bad).expect("write");
            let error = authorization_from_file(&path).expect_err(bad);
            assert!(matches!(error, TokenFileError::Malformed { .. }), "{bad:?}");
            assert!(!error.to_string().contains("s3cret"), "{error}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
