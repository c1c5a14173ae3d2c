//! How the worker reaches the intake: its URL, TLS (the CA that must have signed
//! the intake's certificate, and the worker's own certificate for mutual TLS),
//! and the bearer token from `JCT_WORKER_TOKEN_FILE`. The token file is read at
//! every attach, so a rotated token is picked up at the next reconnect without a
//! restart. The token is never logged: errors name the file, not its content.

use std::path::PathBuf;
use std::time::Duration;

use jct::bearer::TokenFileError;
use jct::tls::{PemFile, TlsFileError};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Where the intake is and how to prove who this worker is.
#[derive(Debug, Clone)]
pub struct IntakeLink {
    pub url: String,
    pub token_file: Option<PathBuf>,
    /// Set for an `https://` URL: whom to trust, and what to present.
    pub tls: Option<ClientTlsConfig>,
}

/// The TLS files of the worker, as configured (paths not yet read).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The worker's TLS settings for `url`, every file read and checked now: an
/// `https://` intake is verified against JCT_TLS_CA_FILE (or, without it, the
/// system's roots) and gets the client certificate when one is configured. TLS
/// files with an `http://` URL are refused rather than ignored: the operator
/// meant the token to travel encrypted.
pub fn client_tls(url: &str, files: &TlsFiles) -> Result<Option<ClientTlsConfig>, LinkError> {
    let https = url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    let identity = jct::tls::optional_identity(
        ("JCT_TLS_CERT_FILE", files.cert.as_deref()),
        ("JCT_TLS_KEY_FILE", files.key.as_deref()),
    )?;
    if !https {
        if files.ca.is_some() || identity.is_some() {
            return Err(LinkError::TlsWithoutHttps);
        }
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    tls = match &files.ca {
        Some(path) => tls.ca_certificate(jct::tls::certificates(PemFile::new(
            "JCT_TLS_CA_FILE",
            path,
        ))?),
        None => tls.with_native_roots(),
    };
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Ok(Some(tls))
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("JCT_WORKER_TOKEN_FILE: {0}")]
    Token(#[from] TokenFileError),
    #[error("cannot reach the intake: {}", jct::tls::error_chain(.0))]
    Connect(#[from] tonic::transport::Error),
    #[error(transparent)]
    TlsFile(#[from] TlsFileError),
    #[error(
        "JCT_TLS_CA_FILE / JCT_TLS_CERT_FILE are for an https:// intake, but JCT_INTAKE_URL \
         is not https://"
    )]
    TlsWithoutHttps,
}

impl IntakeLink {
    /// The `authorization` value to send, if the worker has a token.
    pub fn authorization(&self) -> Result<Option<MetadataValue<Ascii>>, LinkError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        Ok(Some(jct::bearer::authorization_from_file(path)?))
    }

    pub async fn connect(&self) -> Result<Channel, LinkError> {
        let mut endpoint = Endpoint::from_shared(self.url.clone())?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        Ok(endpoint
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
            tls: None,
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
            tls: None,
        };
        assert!(none.authorization().expect("no file").is_none());
    }
}
