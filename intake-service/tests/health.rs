//! Health reflects readiness: SERVING with a reachable database, NOT_SERVING for
//! the task API while the database is gone (the operator API stays up, so a
//! liveness probe does not restart a healthy process), and the operator status
//! says why. Postgres only: the test takes the database away under the intake.

mod support;

use std::time::Duration;

use jct::v1 as pb;
use sea_orm::ConnectionTrait;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn status(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Option<ServingStatus> {
    let response = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_database() {
    let Some(database) = jct_migrations::test_database::TestDatabase::postgres().await else {
        return;
    };
    let intake = support::TestIntake::start(&database.url, "myorg/").await;
    let mut health = HealthClient::new(intake.channel().await);
    for service in [
        "",
        "jct.v1.TaskService",
        "jct.v1.DispatchService",
        "jct.v1.OperatorService",
    ] {
        assert_eq!(
            status(&mut health, service).await,
            Some(ServingStatus::Serving),
            "{service:?}"
        );
    }

    let admin_url = std::env::var(jct_migrations::test_database::PG_ENV).expect("admin url");
    let name = database
        .url
        .rsplit('/')
        .next()
        .expect("database name")
        .to_string();
    let admin = sea_orm::Database::connect(&admin_url).await.expect("admin");
    admin
        .execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("drop database");

    let mut went_down = false;
    for _ in 0..100 {
        if status(&mut health, "jct.v1.TaskService").await == Some(ServingStatus::NotServing) {
            went_down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        went_down,
        "jct.v1.TaskService must turn NOT_SERVING without its database"
    );
    assert_eq!(
        status(&mut health, "").await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(
        status(&mut health, "jct.v1.OperatorService").await,
        Some(ServingStatus::Serving)
    );

    let mut operator =
        pb::operator_service_client::OperatorServiceClient::new(intake.channel().await);
    let system = operator
        .get_system_status(pb::GetSystemStatusRequest {})
        .await
        .expect("status answers")
        .into_inner();
    assert!(!system.database_reachable);
    assert_eq!(system.database_backend, "postgres");

    // requests fail cleanly with a retryable status, never INTERNAL
    let mut client = intake.client.clone();
    let refused = client
        .enqueue(support::enqueue_request("No database"))
        .await
        .expect_err("no database");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(support::reason(&refused), "DATABASE_UNAVAILABLE");

    // recreate it so the intake's pools can reconnect and shut down cleanly
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("recreate");
    intake.stop().await;
}
