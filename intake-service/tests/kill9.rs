//! Durable before acknowledged, for real: every Enqueue the intake answered is
//! still there after `kill -9` of the intake-service process.

mod support;

use std::process::Stdio;
use std::time::Duration;

use jct::v1 as pb;
use support::{channel, enqueue_request};

async fn start(database_url: &str, port: u16) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_intake-service"))
        .env("DATABASE_URL", database_url)
        .env("JCT_INTAKE_ADDR", format!("127.0.0.1:{port}"))
        .env("JCT_ALLOWED_REPO_PREFIXES", "myorg/")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("intake-service starts")
}

async fn connect(
    port: u16,
) -> pb::task_service_client::TaskServiceClient<tonic::transport::Channel> {
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut client = pb::task_service_client::TaskServiceClient::new(channel(addr).await);
    for _ in 0..200 {
        if client
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .is_ok()
        {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("intake-service did not come up");
}

async fn survives_kill_9(database_url: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut intake = start(database_url, port).await;
    let client = connect(port).await;
    // concurrent enqueues, so acknowledged tasks include ones committed in batches
    let enqueues = (0..64).map(|n| {
        let mut client = client.clone();
        async move {
            client
                .enqueue(enqueue_request(&format!("Durable {n}")))
                .await
                .map(|r| r.into_inner().task_id)
        }
    });
    let acknowledged: Vec<String> = futures::future::join_all(enqueues)
        .await
        .into_iter()
        .map(|r| r.expect("acknowledged"))
        .collect();
    intake.start_kill().expect("SIGKILL"); // kill -9: no drain, no shutdown hook
    let _ = intake.wait().await;

    let _restarted = start(database_url, port).await;
    let mut client = connect(port).await;
    for id in &acknowledged {
        let task = client
            .get_task(pb::GetTaskRequest {
                task_id: id.clone(),
            })
            .await
            .expect("survived kill -9");
        assert_eq!(task.into_inner().status, "queued");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_tasks_survive_kill_9() {
    let database = jct_migrations::test_database::TestDatabase::sqlite();
    survives_kill_9(&database.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_acknowledged_tasks_survive_kill_9() {
    let Some(database) = jct_migrations::test_database::TestDatabase::postgres().await else {
        return;
    };
    survives_kill_9(&database.url).await;
}
