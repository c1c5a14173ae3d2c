//! Test harness: a real intake on an ephemeral port (bound before it starts, so no
//! port race and no sleep), a tonic client, and a database per test on SQLite
//! (always) or Postgres (when `JCT_TEST_DATABASE_URL` is set).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use intake_service::config::IntakeConfig;
use jct::v1 as pb;
use jct::v1::task_service_client::TaskServiceClient;
use sea_orm::{ConnectionTrait, Database};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const PG_ENV: &str = "JCT_TEST_DATABASE_URL";

/// A database for one test, removed when dropped (Postgres) or with its temp dir.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_admin: Option<(String, String)>,
}

impl TestDatabase {
    pub fn sqlite() -> TestDatabase {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("jct-test.db").display()
        );
        TestDatabase {
            url,
            _dir: Some(dir),
            pg_admin: None,
        }
    }

    /// A fresh Postgres database, or `None` (with a note) when no server is configured.
    pub async fn postgres() -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var(PG_ENV) else {
            eprintln!("skipping the Postgres variant: set {PG_ENV} (as .ci/run does) to run it");
            return None;
        };
        let name = format!("jct_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url)
            .await
            .expect("connect to the Postgres admin database");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&admin_url);
        Some(TestDatabase {
            url: format!("{base}/{name}"),
            _dir: None,
            pg_admin: Some((admin_url, name)),
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.pg_admin.take() else {
            return;
        };
        // best effort, outside the test's runtime
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let admin = Database::connect(&admin_url).await.ok()?;
                admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()?;
                let _ = admin.close().await;
                Some(())
            })
        })
        .join();
    }
}

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

/// The stable reason in a status's ErrorInfo.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// Stamps out a test body for SQLite and for Postgres.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let database = $crate::support::TestDatabase::sqlite();
                    super::$name(&database.url).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(database) = $crate::support::TestDatabase::postgres().await else { return };
                    super::$name(&database.url).await;
                }
            )+
        }
    };
}
