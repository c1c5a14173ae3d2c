//! Postgres only: a trigger that announces every change a client can see of a task
//! on the `jct_task_changed` channel, payload `<task id>:<updated_at>`, so the
//! `WatchTask` watchers on every intake replica hear of commits made through any of
//! them. Lease renewals leave `updated_at` alone and announce nothing. The
//! notification is sent at commit, only if the transaction commits. SQLite has a
//! single intake, whose own commits reach its watchers.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = "
CREATE OR REPLACE FUNCTION jct_notify_task_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('jct_task_changed', NEW.id::text || ':' || NEW.updated_at::text);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER tasks_changed_notify
    AFTER UPDATE ON tasks
    FOR EACH ROW
    WHEN (OLD.updated_at IS DISTINCT FROM NEW.updated_at)
    EXECUTE FUNCTION jct_notify_task_changed();
";

const DROP: &str = "
DROP TRIGGER IF EXISTS tasks_changed_notify ON tasks;
DROP FUNCTION IF EXISTS jct_notify_task_changed();
";

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager.get_connection().execute_unprepared(CREATE).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager.get_connection().execute_unprepared(DROP).await?;
        }
        Ok(())
    }
}
