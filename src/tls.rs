//! TLS material from PEM files, read and checked when a service starts, so that a
//! wrong path or a file that holds no certificate (or no key) stops the service
//! with the variable that named it, instead of failing later at the first
//! handshake. The intake and the worker both read their certificates here; TLS
//! itself is tonic's rustls support (the `ring` provider).
//!
//! Errors never quote a file's content: a key file's lines are secrets.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity};

/// A PEM file and the setting (environment variable) that named it.
#[derive(Debug, Clone, Copy)]
pub struct PemFile<'a> {
    pub variable: &'static str,
    pub path: &'a Path,
}

impl<'a> PemFile<'a> {
    pub fn new(variable: &'static str, path: &'a Path) -> Self {
        Self { variable, path }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("{variable}: cannot read {}: {reason}", path.display())]
    Unreadable {
        variable: &'static str,
        path: PathBuf,
        reason: std::io::ErrorKind,
    },
    #[error("{variable}: {} is not a PEM certificate file (no readable CERTIFICATE block)", path.display())]
    NoCertificate {
        variable: &'static str,
        path: PathBuf,
    },
    #[error(
        "{variable}: {} is not a PEM private key file (no readable PKCS#8, RSA or EC PRIVATE KEY block)",
        path.display()
    )]
    NoPrivateKey {
        variable: &'static str,
        path: PathBuf,
    },
    #[error(
        "{present} is set but {missing} is not: TLS needs both the certificate chain and its key"
    )]
    Incomplete {
        present: &'static str,
        missing: &'static str,
    },
}

fn read(file: PemFile<'_>) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(file.path).map_err(|error| TlsFileError::Unreadable {
        variable: file.variable,
        path: file.path.to_path_buf(),
        reason: error.kind(),
    })
}

/// One or more certificates (a chain, or the CAs to trust).
pub fn certificates(file: PemFile<'_>) -> Result<Certificate, TlsFileError> {
    let pem = read(file)?;
    let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match parsed {
        Ok(chain) if !chain.is_empty() => Ok(Certificate::from_pem(pem)),
        _ => Err(TlsFileError::NoCertificate {
            variable: file.variable,
            path: file.path.to_path_buf(),
        }),
    }
}

/// A certificate chain and its private key (a server's, or a client's for
/// mutual TLS). Whether the key belongs to the certificate is checked by rustls
/// when the configuration is built.
pub fn identity(cert: PemFile<'_>, key: PemFile<'_>) -> Result<Identity, TlsFileError> {
    let chain = certificates(cert)?;
    let key_pem = read(key)?;
    if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
        return Err(TlsFileError::NoPrivateKey {
            variable: key.variable,
            path: key.path.to_path_buf(),
        });
    }
    Ok(Identity::from_pem(chain.into_inner(), key_pem))
}

/// The identity named by an optional certificate and key pair: both or neither.
pub fn optional_identity(
    cert: (&'static str, Option<&Path>),
    key: (&'static str, Option<&Path>),
) -> Result<Option<Identity>, TlsFileError> {
    match (cert.1, key.1) {
        (None, None) => Ok(None),
        (Some(cert_path), Some(key_path)) => identity(
            PemFile::new(cert.0, cert_path),
            PemFile::new(key.0, key_path),
        )
        .map(Some),
        (Some(_), None) => Err(TlsFileError::Incomplete {
            present: cert.0,
            missing: key.0,
        }),
        (None, Some(_)) => Err(TlsFileError::Incomplete {
            present: key.0,
            missing: cert.0,
        }),
    }
}

/// The message of an error and of every error beneath it (tonic's transport
/// errors say only "transport error" at the top).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_LINE: &str = "MC4CAQAwBQYDK2VwBCIEIPrivateKeyMaterialDoNotLeakxxxxxxxxxxxxxxx";

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn bad_files_are_named_by_their_variable_and_never_quoted() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("absent.pem");
        let error = certificates(PemFile::new("JCT_TLS_CA_FILE", &missing)).expect_err("absent");
        assert!(matches!(error, TlsFileError::Unreadable { .. }));
        assert!(
            error.to_string().starts_with("JCT_TLS_CA_FILE: "),
            "{error}"
        );

        let garbage = file(dir.path(), "garbage.pem", "not pem at all\n");
        let error = certificates(PemFile::new("JCT_TLS_CERT_FILE", &garbage)).expect_err("garbage");
        assert!(
            matches!(error, TlsFileError::NoCertificate { .. }),
            "{error}"
        );

        let key_text =
            format!("-----BEGIN PRIVATE KEY-----\n{KEY_LINE}\n-----END CERTIFICATE-----\n");
        let key = file(dir.path(), "key.pem", &key_text);
        let error = certificates(PemFile::new("JCT_TLS_CERT_FILE", &key)).expect_err("a key");
        assert!(!error.to_string().contains(KEY_LINE), "{error}");
        let error = identity(
            PemFile::new("JCT_TLS_CERT_FILE", &key),
            PemFile::new("JCT_TLS_KEY_FILE", &key),
        )
        .expect_err("no certificate");
        assert!(!error.to_string().contains(KEY_LINE), "{error}");
    }

    #[test]
    fn a_certificate_needs_its_key() {
        let path = Path::new("/nonexistent");
        let error = optional_identity(
            ("JCT_TLS_CERT_FILE", Some(path)),
            ("JCT_TLS_KEY_FILE", None),
        )
        .expect_err("half");
        assert_eq!(
            error.to_string(),
            "JCT_TLS_CERT_FILE is set but JCT_TLS_KEY_FILE is not: TLS needs both the \
             certificate chain and its key"
        );
        assert!(
            optional_identity(("A", None), ("B", None))
                .expect("neither")
                .is_none()
        );
    }
}
