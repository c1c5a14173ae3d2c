//! TLS and mutual TLS on the intake, over real gRPC with certificates made at run
//! time: a TLS client is served; a plaintext client, a client that does not
//! trust the intake's CA, a client without a certificate and a client whose
//! certificate another CA signed are all refused; a good certificate still needs
//! its token; bad TLS files stop the intake at start naming the variable; the
//! plaintext health listener serves health and nothing else.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use intake_service::config::IntakeConfig;
use jct::test_pki::{IssuedFiles, TestCa};
use jct::v1 as pb;
use jct::v1::operator_service_client::OperatorServiceClient;
use jct::v1::task_service_client::TaskServiceClient;
use jct_migrations::test_database::TestDatabase;
use support::{TestIntake, as_caller, enqueue_request, reason};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const TOKENS: &str = "tok-olga,olga,operator\n";

/// A CA, the intake's certificate for 127.0.0.1 and localhost, and a client
/// certificate, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: TestCa,
    ca_file: PathBuf,
    server: IssuedFiles,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("dir");
        let ca = TestCa::new("jct test CA").expect("CA");
        let ca_file = ca.write_cert(dir.path(), "ca").expect("CA file");
        let server = ca
            .write_issued(dir.path(), "intake", &["127.0.0.1", "localhost"])
            .expect("server certificate");
        Pki {
            dir,
            ca,
            ca_file,
            server,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn tokens_file(&self) -> PathBuf {
        let path = self.path().join("tokens.csv");
        std::fs::write(&path, TOKENS).expect("tokens");
        path
    }

    /// The intake's configuration: TLS, and mutual TLS when `client_ca` is given.
    fn config(&self, database: &TestDatabase, client_ca: Option<&Path>) -> IntakeConfig {
        let mut config = IntakeConfig::for_database(&database.url);
        config.allowed_repo_prefixes = "myorg/".into();
        config.shutdown_grace_seconds = 5;
        config.auth_tokens_file = Some(self.tokens_file());
        config.tls_cert_file = Some(self.server.cert.clone());
        config.tls_key_file = Some(self.server.key.clone());
        config.tls_client_ca_file = client_ca.map(Path::to_path_buf);
        config
    }
}

/// A TLS channel trusting `ca_pem`, presenting `identity` (certificate, key) if any.
fn tls_channel(addr: SocketAddr, ca_pem: &str, identity: Option<(String, String)>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("client TLS")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

async fn get_version(
    channel: Channel,
    token: Option<&str>,
) -> Result<pb::GetVersionResponse, tonic::Status> {
    let mut client = OperatorServiceClient::new(channel);
    let request = match token {
        Some(token) => as_caller(pb::GetVersionRequest {}, token),
        None => tonic::Request::new(pb::GetVersionRequest {}),
    };
    tokio::time::timeout(Duration::from_secs(10), client.get_version(request))
        .await
        .expect("an answer, not a hang")
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_tls_clients_and_refuses_plaintext_and_untrusting_ones() {
    let pki = Pki::new();
    let database = TestDatabase::sqlite();
    let intake = TestIntake::start_with(pki.config(&database, None)).await;

    // a TLS client that trusts the CA: served, with token authentication on top
    let channel = tls_channel(intake.addr, &pki.ca.cert_pem(), None);
    let mut tasks = TaskServiceClient::new(channel.clone());
    let enqueued = tasks
        .enqueue(as_caller(enqueue_request("Over TLS, please"), "tok-olga"))
        .await
        .expect("enqueue over TLS")
        .into_inner();
    assert!(enqueued.created);
    let refused = get_version(channel.clone(), None)
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(reason(&refused), "UNAUTHENTICATED");

    // plaintext h2 to the TLS listener: no answer from the API
    let plaintext = support::channel(intake.addr).await;
    let error = get_version(plaintext, Some("tok-olga"))
        .await
        .expect_err("plaintext client refused");
    assert_ne!(error.code(), Code::Ok);

    // a client that trusts another CA does not accept the intake's certificate
    let stranger = TestCa::new("someone else").expect("CA");
    let error = get_version(
        tls_channel(intake.addr, &stranger.cert_pem(), None),
        Some("tok-olga"),
    )
    .await
    .expect_err("untrusted server certificate");
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");

    // the TLS listener still serves after the refused handshakes
    let version = get_version(channel, Some("tok-olga"))
        .await
        .expect("served");
    assert!(!version.version.is_empty());
    intake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let pki = Pki::new();
    let clients = TestCa::new("jct client CA").expect("client CA");
    let clients_file = clients
        .write_cert(pki.path(), "client-ca")
        .expect("client CA file");
    let database = TestDatabase::sqlite();
    let intake = TestIntake::start_with(pki.config(&database, Some(&clients_file))).await;
    let server_ca = pki.ca.cert_pem();

    // no client certificate: refused in the handshake, before any token is read
    let error = get_version(tls_channel(intake.addr, &server_ca, None), Some("tok-olga"))
        .await
        .expect_err("no client certificate");
    assert_ne!(error.code(), Code::Ok);

    // a certificate signed by another CA (here: the server's own CA): refused
    let foreign = pki.ca.issue(&["mallory"]).expect("foreign certificate");
    let error = get_version(
        tls_channel(intake.addr, &server_ca, Some(foreign)),
        Some("tok-olga"),
    )
    .await
    .expect_err("certificate from another CA");
    assert_ne!(error.code(), Code::Ok);

    // a good certificate: the call reaches the token check, and the token decides
    let good = clients.issue(&["olga-laptop"]).expect("client certificate");
    let channel = tls_channel(intake.addr, &server_ca, Some(good));
    let refused = get_version(channel.clone(), None)
        .await
        .expect_err("a certificate is not a token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let version = get_version(channel.clone(), Some("tok-olga"))
        .await
        .expect("good certificate and token");
    assert!(!version.version.is_empty());
    let enqueued = TaskServiceClient::new(channel)
        .enqueue(as_caller(enqueue_request("Over mutual TLS"), "tok-olga"))
        .await
        .expect("enqueue over mutual TLS");
    assert!(enqueued.into_inner().created);
    intake.stop().await;
}

/// The intake's start error for `config`, which must not start.
async fn start_error(config: IntakeConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let served = intake_service::server::serve(config, listener, std::future::pending());
    match tokio::time::timeout(Duration::from_secs(10), served).await {
        Ok(Err(error)) => error.to_string(),
        Ok(Ok(())) => panic!("the intake stopped without an error"),
        Err(_) => panic!("the intake started"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_stop_the_intake_at_start_naming_the_variable() {
    let pki = Pki::new();
    let database = TestDatabase::sqlite();
    let garbage = pki.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").expect("write");
    let missing = pki.path().join("missing.pem");
    let other = pki
        .ca
        .write_issued(pki.path(), "other", &["127.0.0.1"])
        .expect("other certificate");

    let mut config = pki.config(&database, None);
    config.tls_cert_file = Some(missing.clone());
    let error = start_error(config).await;
    assert!(
        error.starts_with("JCT_TLS_CERT_FILE: cannot read"),
        "{error}"
    );

    let mut config = pki.config(&database, None);
    config.tls_key_file = Some(garbage.clone());
    let error = start_error(config).await;
    assert!(error.starts_with("JCT_TLS_KEY_FILE: "), "{error}");
    assert!(error.contains("private key"), "{error}");

    let mut config = pki.config(&database, None);
    config.tls_cert_file = Some(pki.server.key.clone());
    let error = start_error(config).await;
    assert!(error.starts_with("JCT_TLS_CERT_FILE: "), "{error}");
    assert!(!error.contains("PRIVATE KEY-----"), "{error}");

    let mut config = pki.config(&database, None);
    config.tls_key_file = None;
    let error = start_error(config).await;
    assert!(error.contains("JCT_TLS_KEY_FILE is not"), "{error}");

    // a key that is not the certificate's: rustls notices when the intake starts
    let mut config = pki.config(&database, None);
    config.tls_key_file = Some(other.key.clone());
    let error = start_error(config).await;
    assert!(
        error.starts_with("JCT_TLS_CERT_FILE / JCT_TLS_KEY_FILE: "),
        "{error}"
    );

    let mut config = pki.config(&database, Some(&garbage));
    let error = start_error(config.clone()).await;
    assert!(error.starts_with("JCT_TLS_CLIENT_CA_FILE: "), "{error}");
    config.tls_client_ca_file = Some(missing);
    let error = start_error(config.clone()).await;
    assert!(
        error.starts_with("JCT_TLS_CLIENT_CA_FILE: cannot read"),
        "{error}"
    );

    config.tls_client_ca_file = Some(pki.ca_file.clone());
    config.tls_cert_file = None;
    config.tls_key_file = None;
    let error = start_error(config).await;
    assert!(error.starts_with("JCT_TLS_CLIENT_CA_FILE needs"), "{error}");
}

/// An intake serving TLS on one port and plaintext health probes on another;
/// sending on the returned channel starts its graceful stop.
async fn start_with_probe_port(
    config: IntakeConfig,
) -> (
    SocketAddr,
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), intake_service::server::ServeError>>,
) {
    let api = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_addr = api.local_addr().expect("addr");
    let health = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let health_addr = health.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(intake_service::server::serve_with_health(
        config,
        api,
        Some(health),
        async {
            let _ = stopped.await;
        },
    ));
    (api_addr, health_addr, stop, server)
}

async fn health_of(channel: Channel, service: &str) -> Result<i32, tonic::Status> {
    let mut health = HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    };
    tokio::time::timeout(Duration::from_secs(10), health.check(request))
        .await
        .expect("an answer")
        .map(|response| response.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_listener_answers_plaintext_probes_and_serves_nothing_else() {
    let pki = Pki::new();
    let database = TestDatabase::sqlite();
    let config = pki.config(&database, None);
    let (api_addr, health_addr, stop, server) = start_with_probe_port(config).await;

    let plaintext = support::channel(health_addr).await;
    for service in ["", "jct.v1.TaskService"] {
        // the listener is bound before the intake starts: the call waits for it
        let status = health_of(plaintext.clone(), service)
            .await
            .expect("health over plaintext");
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    // only health: the API is not reachable through the probe port
    let error = get_version(plaintext, Some("tok-olga"))
        .await
        .expect_err("no API on the health port");
    assert_eq!(error.code(), Code::Unimplemented, "{error:?}");
    // and health is still on the TLS listener
    let status = health_of(tls_channel(api_addr, &pki.ca.cert_pem(), None), "")
        .await
        .expect("health over TLS");
    assert_eq!(status, ServingStatus::Serving as i32);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops")
        .expect("task")
        .expect("served");
}

/// While the intake drains, the plaintext probe port says NOT_SERVING, as the
/// API port does, so that Kubernetes takes the pod out of its Service before
/// it stops. It used to close at once: a probe then failed to connect, which
/// reads as a dead pod, not a draining one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_listener_says_not_serving_while_the_intake_drains() {
    let pki = Pki::new();
    let database = TestDatabase::sqlite();
    let mut config = pki.config(&database, None);
    config.shutdown_grace_seconds = 20;
    let (api_addr, health_addr, stop, server) = start_with_probe_port(config).await;
    let status = health_of(support::channel(health_addr).await, "")
        .await
        .expect("health over plaintext");
    assert_eq!(status, ServingStatus::Serving as i32);

    // a call in flight on the API port keeps the intake draining
    let mut watcher = HealthClient::new(tls_channel(api_addr, &pki.ca.cert_pem(), None));
    let mut watch = watcher
        .watch(tonic_health::pb::HealthCheckRequest { service: "".into() })
        .await
        .expect("watch")
        .into_inner();
    let first = watch
        .message()
        .await
        .expect("first status")
        .expect("a status");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let _ = stop.send(());
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        // a fresh connection per probe, as the kubelet makes
        let probe = health_of(support::channel(health_addr).await, "").await;
        match probe {
            Ok(status) if status == ServingStatus::NotServing as i32 => break,
            other => seen.push(format!("{other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tokio::time::Instant::now() < deadline,
        "the probe port never said NOT_SERVING during the drain ({} probes); last: {:?}",
        seen.len(),
        seen.last()
    );

    drop(watch);
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("stops")
        .expect("task")
        .expect("served");
}
