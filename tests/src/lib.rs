//! Both JCT services together, in one process: the harness behind the end-to-end
//! tests, the `jct-local` launcher (and `jct up`), the `jct-bench` load generator,
//! and the `jct` command-line client ([`cli`]).
//!
//! The intake binds its listener before it starts (port 0 in tests), and each
//! worker is the real `worker_service::run` attached over real gRPC.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use intake_service::config::IntakeConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use worker_service::config::WorkerConfig;

pub mod cli;
pub mod local;

/// A service on a tokio runtime of its own: stopped gracefully through its
/// shutdown signal, or dropped at once ([`Isolated::crash`]) — streams, tasks and
/// child processes with it — as a `kill -9` of its process would.
struct Isolated {
    name: &'static str,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<anyhow::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Isolated {
    /// Runs `service(shutdown)`; the service should stop when `shutdown` resolves.
    fn start<F, Fut>(name: &'static str, service: F) -> anyhow::Result<Isolated>
    where
        F: FnOnce(oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (finished, done) = oneshot::channel();
        runtime.spawn(async move {
            let _ = finished.send(service(stopped).await);
        });
        Ok(Isolated {
            name,
            stop: Some(stop),
            done: Some(done),
            runtime: Some(runtime),
        })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let outcome = match self.done.take() {
            Some(done) => done
                .await
                .map_err(|_| anyhow::anyhow!("the {} vanished", self.name))?,
            None => Ok(()),
        };
        self.crash();
        outcome
    }

    fn crash(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        self.crash();
    }
}

/// A running intake, on a runtime of its own.
pub struct IntakeHandle {
    pub addr: SocketAddr,
    service: Isolated,
}

impl IntakeHandle {
    /// Starts an intake with `config` on `addr` (port 0 for any free port).
    pub fn start(config: IntakeConfig, addr: SocketAddr) -> anyhow::Result<IntakeHandle> {
        let socket = std::net::TcpListener::bind(addr)?;
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        let service = Isolated::start("intake", move |stopped| async move {
            let listener = TcpListener::from_std(socket)?;
            intake_service::server::serve(config, listener, async {
                let _ = stopped.await;
            })
            .await?;
            Ok(())
        })?;
        Ok(IntakeHandle { addr, service })
    }

    /// Starts an intake and waits until its health says SERVING. The listener is
    /// bound before the service starts, so a start that fails afterwards (the
    /// previous intake's database lock not yet released, say) would otherwise
    /// look like a running intake that refuses connections.
    pub async fn start_serving(
        config: IntakeConfig,
        addr: SocketAddr,
        patience: Duration,
    ) -> anyhow::Result<IntakeHandle> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

        let mut intake = IntakeHandle::start(config, addr)?;
        let channel = tonic::transport::Endpoint::from_shared(intake.url())?.connect_lazy();
        let mut health = HealthClient::new(channel);
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(done) = intake.service.done.as_mut()
                && let Ok(outcome) = done.try_recv()
            {
                intake.service.done = None;
                outcome?;
                anyhow::bail!("the intake stopped while starting");
            }
            let serving = health
                .check(HealthCheckRequest::default())
                .await
                .is_ok_and(|answer| answer.into_inner().status == ServingStatus::Serving as i32);
            if serving {
                return Ok(intake);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("the intake did not become ready within {patience:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops gracefully (health NOT_SERVING, drain) and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.service.stop().await
    }

    /// Drops the intake at once: connections cut, nothing drained.
    pub fn crash(mut self) {
        self.service.crash();
    }
}

/// A running worker, on a runtime of its own.
pub struct WorkerHandle {
    service: Isolated,
}

impl WorkerHandle {
    pub fn start(config: WorkerConfig) -> WorkerHandle {
        let service = Isolated::start("worker", move |stopped| async move {
            worker_service::run(config, async {
                let _ = stopped.await;
            })
            .await?;
            Ok(())
        })
        .expect("worker runtime");
        WorkerHandle { service }
    }

    /// Asks the worker to drain (as SIGTERM does) and waits for it to exit.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.service.stop().await
    }

    /// Drops the worker at once, without a drain: its streams close, its running
    /// programs are killed (kill_on_drop), nothing more is reported.
    pub fn crash(mut self) {
        self.service.crash();
    }
}

/// A worker configuration for `intake_url` with every other default, no health
/// endpoint, and the given trace root.
pub fn worker_config(intake_url: &str, trace_root: &std::path::Path) -> WorkerConfig {
    let mut config = WorkerConfig::defaults();
    config.intake_url = intake_url.to_string();
    config.trace_root = trace_root.to_path_buf();
    config.health_addr = String::new();
    config
}

/// A scratch directory for workspace roots: 0711, so that the sandbox's uid
/// (when the tests run as root) can reach the workspaces the worker makes below
/// it, as an operator's JCT_WORKSPACE_ROOT must let it.
pub fn scratch_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("scratch dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("scratch dir mode");
    dir
}

/// A loopback port that was free when checked and that no other caller in this
/// process has been given, for a service that must bind it later (a restart
/// binds the same port again).
///
/// Taken below the kernel's ephemeral range (32768 and up by default), not
/// from port 0: a port 0 hands out is ephemeral, and between this check and
/// the service's bind an outgoing connection (to Postgres, to the intake)
/// could be given it as its source port, failing the bind with "address in
/// use", as `a_watch_outlives_an_intake_restart` once did in CI.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // test binaries run one after another; each starts at its own place
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(FIRST + (start + offset) % SPAN) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free loopback port between 20000 and 32000",
    ))
}

/// Polls `check` until it yields a value or `patience` runs out.
pub async fn eventually<T, F, Fut>(patience: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub use jct_migrations::on_both_backends;
pub use jct_migrations::test_database::{PG_ENV, TestDatabase};

/// An intake configuration for tests: the given database, `myorg/` allowed,
/// fast retries.
pub fn intake_config(database_url: &str) -> IntakeConfig {
    let mut config = IntakeConfig::for_database(database_url);
    config.allowed_repo_prefixes = "myorg/".to_string();
    config.retry_backoff_base_ms = 50;
    config.retry_backoff_max_ms = 200;
    config.shutdown_grace_seconds = 5;
    // a claim whose assignment died with a crashed intake waits out its lease
    // before the rescuer returns it: keep that short in tests
    config.lease_ttl_seconds = 3;
    config
}

pub type TaskClient = jct::v1::task_service_client::TaskServiceClient<tonic::transport::Channel>;

/// Polls GetTask until the task satisfies `done` or `patience` runs out.
pub async fn wait_for_task(
    client: &TaskClient,
    id: &str,
    patience: Duration,
    done: impl Fn(&jct::v1::Task) -> bool,
) -> Option<jct::v1::Task> {
    eventually(patience, || {
        let mut client = client.clone();
        let task_id = id.to_string();
        let done = &done;
        async move {
            let task = client
                .get_task(jct::v1::GetTaskRequest { task_id })
                .await
                .ok()?
                .into_inner();
            done(&task).then_some(task)
        }
    })
    .await
}

/// A client for the intake at `addr`.
pub fn task_client(
    addr: SocketAddr,
) -> jct::v1::task_service_client::TaskServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect_lazy();
    jct::v1::task_service_client::TaskServiceClient::new(channel)
}

pub fn enqueue_request(objective: &str) -> jct::v1::EnqueueRequest {
    jct::v1::EnqueueRequest {
        requested_by: Some(jct::v1::RequestedBy {
            kind: "agent".into(),
            id: "e2e".into(),
            label: None,
        }),
        objective: objective.into(),
        operation: "code_change".into(),
        target: Some(jct::v1::Target {
            repo: "myorg/service".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `message` sent with `authorization: Bearer <token>`.
pub fn as_caller<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    match format!("Bearer {token}").parse() {
        Ok(value) => {
            request.metadata_mut().insert("authorization", value);
        }
        Err(_) => panic!("a token is printable ASCII"),
    }
    request
}
