//! Certificates made at run time for tests and the benchmark (feature
//! `test-pki`): a certificate authority, and server or client certificates it
//! signs, written as PEM files the services read like an operator's.
//!
//! Never for production: keys are generated fresh and written unencrypted.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority that lives as long as the test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// PEM files of a certificate signed by a [`TestCa`] and of its key.
#[derive(Debug, Clone)]
pub struct IssuedFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TestPkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

impl TestCa {
    /// A new CA whose certificate names `common_name`.
    pub fn new(common_name: &str) -> Result<TestCa, TestPkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(TestCa { issuer })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `names` (DNS names or IP addresses), good for both
    /// server and client authentication: (certificate PEM, key PEM).
    pub fn issue(&self, names: &[&str]) -> Result<(String, String), TestPkiError> {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes the CA certificate to `dir/<name>.pem`.
    pub fn write_cert(&self, dir: &Path, name: &str) -> Result<PathBuf, TestPkiError> {
        write(dir.join(format!("{name}.pem")), &self.cert_pem())
    }

    /// Issues a certificate for `names` and writes it to `dir/<name>.pem` and its
    /// key to `dir/<name>-key.pem`.
    pub fn write_issued(
        &self,
        dir: &Path,
        name: &str,
        names: &[&str],
    ) -> Result<IssuedFiles, TestPkiError> {
        let (cert, key) = self.issue(names)?;
        Ok(IssuedFiles {
            cert: write(dir.join(format!("{name}.pem")), &cert)?,
            key: write(dir.join(format!("{name}-key.pem")), &key)?,
        })
    }
}

/// What a mutual-TLS intake needs, written to a directory: a server CA and the
/// intake's certificate for loopback, and a client CA to issue callers' and
/// workers' certificates from.
pub struct MutualTlsFiles {
    pub server_ca: TestCa,
    pub server_ca_file: PathBuf,
    pub intake: IssuedFiles,
    pub client_ca: TestCa,
    pub client_ca_file: PathBuf,
}

impl MutualTlsFiles {
    pub fn write(dir: &Path) -> Result<MutualTlsFiles, TestPkiError> {
        let server_ca = TestCa::new("jct intake CA")?;
        let server_ca_file = server_ca.write_cert(dir, "ca")?;
        let intake = server_ca.write_issued(dir, "intake", &["127.0.0.1", "localhost"])?;
        let client_ca = TestCa::new("jct client CA")?;
        let client_ca_file = client_ca.write_cert(dir, "client-ca")?;
        Ok(MutualTlsFiles {
            server_ca,
            server_ca_file,
            intake,
            client_ca,
            client_ca_file,
        })
    }
}

fn write(path: PathBuf, text: &str) -> Result<PathBuf, TestPkiError> {
    std::fs::write(&path, text).map_err(|error| TestPkiError::Write(path.clone(), error))?;
    Ok(path)
}
