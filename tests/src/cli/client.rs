//! The connection to the intake: the address, and the bearer token read from the
//! token file. The token is never printed: errors name the file, not its content.

use std::path::Path;
use std::time::Duration;

use jct::v1::operator_service_client::OperatorServiceClient;
use jct::v1::task_service_client::TaskServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use worker_service::intake::{LinkError, TlsFiles, client_tls};

use super::args::Global;
use super::error::CliError;

pub type Tasks = TaskServiceClient<InterceptedService<Channel, Bearer>>;
pub type Operator = OperatorServiceClient<InterceptedService<Channel, Bearer>>;

/// A connected channel and the credentials every call carries.
pub struct Connection {
    channel: Channel,
    bearer: Bearer,
}

impl Connection {
    /// Reads the token and connects (an unreachable intake fails here, not later).
    pub async fn open(global: &Global) -> Result<Connection, CliError> {
        let bearer = Bearer(match &global.token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        });
        let addr = normalize_addr(global.addr());
        let mut endpoint = Endpoint::from_shared(addr.clone())
            .map_err(|_| CliError::Usage(format!("--addr {addr:?} is not a URL")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if let Some(tls) = tls_config(&addr, global)? {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|error| CliError::Usage(jct::tls::error_chain(&error)))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| CliError::Unreachable {
                addr,
                detail: jct::tls::error_chain(&error),
            })?;
        Ok(Connection { channel, bearer })
    }

    pub fn tasks(&self) -> Tasks {
        TaskServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub fn operator(&self) -> Operator {
        OperatorServiceClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }
}

/// TLS for an `https://` address, read the way the worker reads its own (one
/// reader: `worker_service::intake::client_tls`); TLS files with a plaintext
/// address are refused, since the token was meant to travel encrypted.
fn tls_config(addr: &str, global: &Global) -> Result<Option<ClientTlsConfig>, CliError> {
    let files = TlsFiles {
        ca: global.tls_ca_file.clone(),
        cert: global.tls_cert_file.clone(),
        key: global.tls_key_file.clone(),
    };
    client_tls(addr, &files).map_err(|error| match error {
        LinkError::TlsWithoutHttps => CliError::Usage(format!(
            "--tls-ca-file / --tls-cert-file are for an https:// intake, but --addr is {addr}"
        )),
        other => CliError::Usage(other.to_string()),
    })
}

/// `host:port` means `http://host:port`.
fn normalize_addr(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Adds `authorization: Bearer <token>` to every call when there is a token.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

fn read_token(path: &Path) -> Result<MetadataValue<Ascii>, CliError> {
    jct::bearer::authorization_from_file(path).map_err(|error| CliError::Usage(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_host_port_is_http() {
        assert_eq!(normalize_addr("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(normalize_addr("https://jct:443"), "https://jct:443");
    }
}
