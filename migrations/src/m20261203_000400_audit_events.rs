//! The audit trail. Every task insert and every status change writes an
//! `audit_events` row from a trigger, so the event commits in the same
//! transaction as the change, whatever path made it (a batch's events in the
//! batch's commit). `tasks.changed_by` / `tasks.changed_via` name the principal
//! and method of the latest change; the intake's own moves (claims, releases,
//! rescues) leave them NULL and are recorded as `system`. Refused calls
//! (unauthenticated, denied, rejected enqueues) are written by the intake,
//! aggregated per principal, method and reason (`count`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    ChangedBy,
    ChangedVia,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    At,
    Principal,
    Method,
    Action,
    TaskId,
    Reason,
    Count,
}

const SQLITE_TRIGGERS: &str = "
CREATE TRIGGER tasks_audit_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO audit_events (at, principal, method, action, task_id, reason, count)
    VALUES (NEW.created_at, NEW.submitted_by, '/jct.v1.TaskService/Enqueue', 'enqueued', NEW.id, NULL, 1);
END;
CREATE TRIGGER tasks_audit_status AFTER UPDATE OF status ON tasks
WHEN OLD.status <> NEW.status BEGIN
    INSERT INTO audit_events (at, principal, method, action, task_id, reason, count)
    VALUES (NEW.updated_at, COALESCE(NEW.changed_by, 'system'), COALESCE(NEW.changed_via, 'dispatcher'),
            OLD.status || ' -> ' || NEW.status, NEW.id, NEW.error_code, 1);
END;
";

const POSTGRES_TRIGGERS: &str = "
CREATE OR REPLACE FUNCTION jct_audit_task() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_events (at, principal, method, action, task_id, reason, count)
        VALUES (NEW.created_at, NEW.submitted_by, '/jct.v1.TaskService/Enqueue', 'enqueued', NEW.id, NULL, 1);
    ELSIF OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO audit_events (at, principal, method, action, task_id, reason, count)
        VALUES (NEW.updated_at, COALESCE(NEW.changed_by, 'system'), COALESCE(NEW.changed_via, 'dispatcher'),
                OLD.status || ' -> ' || NEW.status, NEW.id, NEW.error_code, 1);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER tasks_audit AFTER INSERT OR UPDATE OF status ON tasks
    FOR EACH ROW EXECUTE FUNCTION jct_audit_task();
";

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AuditEvents::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AuditEvents::At).big_integer().not_null())
                    .col(
                        ColumnDef::new(AuditEvents::Principal)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::Method)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::Action)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(AuditEvents::TaskId).uuid().null())
                    .col(ColumnDef::new(AuditEvents::Reason).string_len(64).null())
                    .col(
                        ColumnDef::new(AuditEvents::Count)
                            .big_integer()
                            .not_null()
                            .default(1),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("ix_audit_events_principal_id", AuditEvents::Principal),
            ("ix_audit_events_task_id_id", AuditEvents::TaskId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(AuditEvents::Table)
                        .col(column)
                        .col(AuditEvents::Id)
                        .to_owned(),
                )
                .await?;
        }
        for column in [Tasks::ChangedBy, Tasks::ChangedVia] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tasks::Table)
                        .add_column(ColumnDef::new(column).string_len(128).null())
                        .to_owned(),
                )
                .await?;
        }
        let triggers = match manager.get_database_backend() {
            DatabaseBackend::Postgres => POSTGRES_TRIGGERS,
            _ => SQLITE_TRIGGERS,
        };
        manager
            .get_connection()
            .execute_unprepared(triggers)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let drop = match manager.get_database_backend() {
            DatabaseBackend::Postgres => {
                "DROP TRIGGER IF EXISTS tasks_audit ON tasks; DROP FUNCTION IF EXISTS jct_audit_task();"
            }
            _ => {
                "DROP TRIGGER IF EXISTS tasks_audit_insert; DROP TRIGGER IF EXISTS tasks_audit_status;"
            }
        };
        manager.get_connection().execute_unprepared(drop).await?;
        for column in [Tasks::ChangedVia, Tasks::ChangedBy] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tasks::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(
                Table::drop()
                    .table(AuditEvents::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
