//! How the worker reaches the intake: its URL and the bearer token from
//! `JCT_WORKER_TOKEN_FILE`. The file is read at every attach, so a rotated token
//! is picked up at the next reconnect without a restart. The token is never
//! logged: errors name the file, not its content.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// Where the intake is and how to prove who this worker is.
#[derive(Debug, Clone)]
pub struct IntakeLink {
    pub url: String,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot read the worker token file {path}: {reason}")]
    TokenUnreadable { path: String, reason: String },
    #[error("the worker token file {path} holds no usable token (one line of printable ASCII)")]
    TokenMalformed { path: String },
    #[error("cannot reach the intake: {0}")]
    Connect(#[from] tonic::transport::Error),
}

impl IntakeLink {
    /// The `authorization` value to send, if the worker has a token.
    pub fn authorization(&self) -> Result<Option<MetadataValue<Ascii>>, LinkError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        read_token(path).map(Some)
    }

    pub async fn connect(&self) -> Result<Channel, LinkError> {
        Ok(Endpoint::from_shared(self.url.clone())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // notices an intake that vanished without closing the stream
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect()
            .await?)
    }
}

fn read_token(path: &Path) -> Result<MetadataValue<Ascii>, LinkError> {
    let text = std::fs::read_to_string(path).map_err(|error| LinkError::TokenUnreadable {
        path: path.display().to_string(),
        reason: error.kind().to_string(),
    })?;
    let token = text.trim();
    let malformed = || LinkError::TokenMalformed {
        path: path.display().to_string(),
    };
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed());
    }
    let mut value: MetadataValue<Ascii> =
        format!("Bearer {token}").parse().map_err(|_| malformed())?;
    // keeps the token out of HPACK's dynamic table and of debug output
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_trimmed_and_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        let link = IntakeLink {
            url: "http://127.0.0.1:1".into(),
            token_file: Some(path.clone()),
        };
        let error = link.authorization().expect_err("absent");
        assert!(error.to_string().contains("token"), "{error}");
        std::fs::write(&path, "s3cret-w\n").expect("write");
        let value = link.authorization().expect("read").expect("some");
        assert_eq!(value.to_str().ok(), Some("Bearer s3cret-w"));
        assert!(!format!("{value:?}").contains("s3cret"));
        std::fs::write(&path, "two words\n").expect("write");
        let error = link.authorization().expect_err("malformed");
        assert!(!error.to_string().contains("two"), "{error}");
        let none = IntakeLink {
            url: "http://127.0.0.1:1".into(),
            token_file: None,
        };
        assert!(none.authorization().expect("no file").is_none());
    }
}
