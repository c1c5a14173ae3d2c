//! Test harness: a real intake on an ephemeral port (bound before it starts, so no
//! port race and no sleep), a tonic client, and a database per test on SQLite
//! (always) or Postgres (when `JCT_TEST_DATABASE_URL` is set).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use intake_service::config::IntakeConfig;
use jct::v1 as pb;
use jct::v1::task_service_client::TaskServiceClient;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub struct TestIntake {
    pub addr: SocketAddr,
    pub client: TaskServiceClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl TestIntake {
    pub async fn start(database_url: &str, prefixes: &str) -> TestIntake {
        let mut config = IntakeConfig::for_database(database_url);
        config.allowed_repo_prefixes = prefixes.to_string();
        config.shutdown_grace_seconds = 5;
        Self::start_with(config).await
    }

    /// An intake that authenticates callers against the tokens file at `tokens`.
    pub async fn start_with_tokens(
        database_url: &str,
        prefixes: &str,
        tokens: &std::path::Path,
    ) -> TestIntake {
        let mut config = IntakeConfig::for_database(database_url);
        config.allowed_repo_prefixes = prefixes.to_string();
        config.shutdown_grace_seconds = 5;
        config.auth_tokens_file = Some(tokens.to_path_buf());
        Self::start_with(config).await
    }

    pub async fn start_with(config: IntakeConfig) -> TestIntake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = intake_service::server::serve(config, listener, shutdown).await {
                panic!("intake failed: {error}");
            }
        });
        let client = TaskServiceClient::new(channel(addr).await);
        TestIntake {
            addr,
            client,
            stop: Some(stop),
            server: Some(server),
        }
    }

    pub async fn channel(&self) -> Channel {
        channel(self.addr).await
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("intake stops")
                .expect("intake task");
        }
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy()
}

pub fn enqueue_request(objective: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        requested_by: Some(pb::RequestedBy {
            kind: "agent".into(),
            id: "bot-1".into(),
            label: None,
        }),
        objective: objective.into(),
        operation: "code_change".into(),
        target: Some(pb::Target {
            repo: "myorg/service".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `message` sent with `authorization: Bearer <token>`.
pub fn as_caller<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// The stable reason in a status's ErrorInfo.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// A scripted worker speaking DispatchService over real gRPC.
pub struct FakeWorker {
    pub outbox: tokio::sync::mpsc::Sender<pb::WorkerMessage>,
    pub inbound: tonic::Streaming<pb::DispatchMessage>,
}

impl FakeWorker {
    pub async fn attach(
        channel: Channel,
        worker_id: &str,
        capacity: u32,
        held: Vec<pb::LeaseRef>,
    ) -> FakeWorker {
        Self::attach_as(channel, None, worker_id, capacity, held)
            .await
            .expect("attach")
    }

    /// Attaches presenting `token` (if any); the intake's refusal, if it refuses.
    pub async fn attach_as(
        channel: Channel,
        token: Option<&str>,
        worker_id: &str,
        capacity: u32,
        held: Vec<pb::LeaseRef>,
    ) -> Result<FakeWorker, tonic::Status> {
        let (outbox, outbound) = tokio::sync::mpsc::channel(64);
        let hello = pb::WorkerHello {
            worker_id: worker_id.into(),
            capacity,
            executor: "fake".into(),
            version: "test".into(),
            held,
        };
        outbox
            .send(pb::WorkerMessage {
                kind: Some(pb::worker_message::Kind::Hello(hello)),
            })
            .await
            .expect("hello");
        let mut client = pb::dispatch_service_client::DispatchServiceClient::new(channel);
        let stream = tokio_stream::wrappers::ReceiverStream::new(outbound);
        let request = match token {
            Some(token) => as_caller(stream, token),
            None => tonic::Request::new(stream),
        };
        let inbound = client.attach(request).await?.into_inner();
        Ok(FakeWorker { outbox, inbound })
    }

    /// The next message, or `None` after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<pb::dispatch_message::Kind> {
        match tokio::time::timeout(wait, self.inbound.message()).await {
            Ok(Ok(Some(message))) => message.kind,
            _ => None,
        }
    }

    pub async fn next_assignment(&mut self) -> pb::Assignment {
        loop {
            match self.next(Duration::from_secs(10)).await {
                Some(pb::dispatch_message::Kind::Assignment(assignment)) => return assignment,
                Some(_) => continue,
                None => panic!("no assignment arrived"),
            }
        }
    }

    pub async fn send(&self, kind: pb::worker_message::Kind) {
        self.outbox
            .send(pb::WorkerMessage { kind: Some(kind) })
            .await
            .expect("send");
    }

    /// Reports and waits for the acknowledgement.
    pub async fn report(&mut self, report: pb::TaskReport) -> pb::ReportAck {
        let id = report.report_id;
        self.send(pb::worker_message::Kind::Report(report)).await;
        loop {
            match self.next(Duration::from_secs(10)).await {
                Some(pb::dispatch_message::Kind::ReportAck(ack)) if ack.report_id == id => {
                    return ack;
                }
                Some(_) => continue,
                None => panic!("no acknowledgement for report {id}"),
            }
        }
    }
}

pub fn completed(assignment: &pb::Assignment, report_id: u64) -> pb::TaskReport {
    pb::TaskReport {
        report_id,
        task_id: assignment
            .task
            .as_ref()
            .map(|t| t.id.clone())
            .unwrap_or_default(),
        lease_token: assignment.lease_token.clone(),
        status: pb::ReportStatus::Completed.into(),
        result: Some(prost_types::Struct::default()),
        ..Default::default()
    }
}
