//! The worker ↔ intake pair over mutual TLS with tokens, end to end (the real
//! worker, certificates made at run time), and the worker's side of the
//! handshake: it refuses an intake whose certificate its CA did not sign, and
//! refuses to start on TLS files that cannot work.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jct::test_pki::{IssuedFiles, MutualTlsFiles, TestCa};
use jct::v1 as pb;
use jct_e2e::{IntakeHandle, WorkerHandle, enqueue_request, intake_config, worker_config};
use jct_migrations::test_database::TestDatabase;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

const TOKENS: &str = "tok-olga,olga,operator\ntok-walt,walt,worker\n";

/// Server CA + intake certificate, client CA + the worker's and a caller's certificates.
struct Pki {
    dir: tempfile::TempDir,
    server_ca: TestCa,
    server_ca_file: PathBuf,
    intake: IssuedFiles,
    client_ca_file: PathBuf,
    worker: IssuedFiles,
    caller: (String, String),
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("dir");
        let MutualTlsFiles {
            server_ca,
            server_ca_file,
            intake,
            client_ca,
            client_ca_file,
        } = MutualTlsFiles::write(dir.path()).expect("certificates");
        let worker = client_ca
            .write_issued(dir.path(), "worker", &["worker-a"])
            .expect("worker certificate");
        let caller = client_ca.issue(&["olga"]).expect("caller certificate");
        Pki {
            dir,
            server_ca,
            server_ca_file,
            intake,
            client_ca_file,
            worker,
            caller,
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

fn mtls_intake(pki: &Pki, database: &TestDatabase) -> IntakeHandle {
    let mut config = intake_config(&database.url);
    config.auth_tokens_file = Some(pki.write("tokens.csv", TOKENS));
    config.tls_cert_file = Some(pki.intake.cert.clone());
    config.tls_key_file = Some(pki.intake.key.clone());
    config.tls_client_ca_file = Some(pki.client_ca_file.clone());
    IntakeHandle::start(config, "127.0.0.1:0".parse().expect("addr")).expect("intake")
}

fn mtls_worker_config(pki: &Pki, url: &str, traces: &Path) -> worker_service::config::WorkerConfig {
    let mut config = worker_config(url, traces);
    config.worker_id = Some("worker-a".into());
    config.worker_token_file = Some(pki.write("worker-token", "tok-walt\n"));
    config.tls_ca_file = Some(pki.server_ca_file.clone());
    config.tls_cert_file = Some(pki.worker.cert.clone());
    config.tls_key_file = Some(pki.worker.key.clone());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_end_to_end_over_mutual_tls() {
    let pki = Pki::new();
    let database = TestDatabase::sqlite();
    let traces = tempfile::tempdir().expect("traces");
    let intake = mtls_intake(&pki, &database);
    let url = format!("https://{}", intake.addr);
    let worker = WorkerHandle::start(mtls_worker_config(&pki, &url, traces.path()));

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.server_ca.cert_pem()))
        .identity(Identity::from_pem(&pki.caller.0, &pki.caller.1));
    let channel = Endpoint::from_shared(url)
        .expect("endpoint")
        .tls_config(tls)
        .expect("client TLS")
        .connect_lazy();
    let mut client = pb::task_service_client::TaskServiceClient::new(channel);
    let id = client
        .enqueue(jct_e2e::as_caller(
            enqueue_request("Run me over mutual TLS"),
            "tok-olga",
        ))
        .await
        .expect("enqueue")
        .into_inner()
        .task_id;
    let task = jct_e2e::eventually(Duration::from_secs(30), || {
        let mut client = client.clone();
        let task_id = id.clone();
        async move {
            let task = client
                .get_task(jct_e2e::as_caller(
                    pb::GetTaskRequest { task_id },
                    "tok-olga",
                ))
                .await
                .ok()?
                .into_inner();
            (task.status == "completed").then_some(task)
        }
    })
    .await
    .expect("the worker completes the task over mutual TLS");
    assert_eq!(task.worker_id, "worker-a");
    assert_eq!(task.attempt, 1);

    worker.stop().await.expect("worker stops");
    intake.stop().await.expect("intake stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_refuses_an_intake_its_ca_did_not_sign() {
    let pki = Pki::new();
    let database = TestDatabase::sqlite();
    let traces = tempfile::tempdir().expect("traces");
    let intake = mtls_intake(&pki, &database);
    let url = format!("https://{}", intake.addr);

    let mut config = mtls_worker_config(&pki, &url, traces.path());
    let impostor_ca = TestCa::new("not the intake's CA").expect("CA");
    config.tls_ca_file = Some(
        impostor_ca
            .write_cert(pki.dir.path(), "impostor-ca")
            .expect("write"),
    );
    let link = config.intake_link().expect("the files themselves are fine");
    let error = link.connect().await.expect_err("untrusted intake refused");
    let message = error.to_string();
    assert!(message.contains("certificate"), "{message}");

    // the right CA connects, over the same files otherwise
    let link = mtls_worker_config(&pki, &url, traces.path())
        .intake_link()
        .expect("link");
    link.connect().await.expect("trusted intake");
    intake.stop().await.expect("intake stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_refuses_to_start_on_tls_files_that_cannot_work() {
    let pki = Pki::new();
    let traces = tempfile::tempdir().expect("traces");
    let garbage = pki.write("garbage.pem", "not PEM\n");

    let start_error = |config: worker_service::config::WorkerConfig| async move {
        match tokio::time::timeout(
            Duration::from_secs(10),
            worker_service::run(config, std::future::pending()),
        )
        .await
        {
            Ok(Err(error)) => error.to_string(),
            Ok(Ok(())) => panic!("the worker stopped without an error"),
            Err(_) => panic!("the worker started"),
        }
    };

    let mut config = mtls_worker_config(&pki, "https://127.0.0.1:1", traces.path());
    config.tls_ca_file = Some(garbage.clone());
    let error = start_error(config).await;
    assert!(error.contains("JCT_TLS_CA_FILE: "), "{error}");

    let mut config = mtls_worker_config(&pki, "https://127.0.0.1:1", traces.path());
    config.tls_key_file = None;
    let error = start_error(config).await;
    assert!(error.contains("JCT_TLS_KEY_FILE is not"), "{error}");

    // TLS files with a plaintext URL: refused, not silently ignored
    let config = mtls_worker_config(&pki, "http://127.0.0.1:1", traces.path());
    let error = start_error(config).await;
    assert!(error.contains("not https://"), "{error}");
}
