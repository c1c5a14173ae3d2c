//! A database for one test: a SQLite file in a temp dir, or — when
//! `JCT_TEST_DATABASE_URL` names a Postgres server, as `.ci/run` does — a fresh
//! Postgres database dropped afterwards. Shared by the intake's integration tests
//! and the end-to-end tests (which cannot depend on each other).

use sea_orm_migration::sea_orm::{ConnectionTrait, Database};

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

/// Stamps out an async test body `fn(url: &str)` for SQLite and for Postgres
/// (the Postgres one skips with a note when no server is configured).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let database = $crate::test_database::TestDatabase::sqlite();
                    super::$name(&database.url).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(database) = $crate::test_database::TestDatabase::postgres().await else { return };
                    super::$name(&database.url).await;
                }
            )+
        }
    };
}
