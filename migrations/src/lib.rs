//! Schema migrations of the intake database. The same migrations run on SQLite and
//! Postgres; the intake applies them on start and `intake-service migrate` applies
//! them alone (a Kubernetes init container). Migrations are never edited once
//! landed: a change is a new file.

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_create_tasks;
mod m20261202_000200_task_changed_notify;
mod m20261203_000300_submitted_by;
mod m20261203_000400_audit_events;
mod m20261203_000500_queued_at_index;
mod m20261203_000600_audit_worker_id;
mod m20261203_000700_task_traceparent;
mod m20261203_000800_queue_order_index;
#[cfg(feature = "test-util")]
pub mod test_database;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_create_tasks::Migration),
            Box::new(m20261202_000200_task_changed_notify::Migration),
            Box::new(m20261203_000300_submitted_by::Migration),
            Box::new(m20261203_000400_audit_events::Migration),
            Box::new(m20261203_000500_queued_at_index::Migration),
            Box::new(m20261203_000600_audit_worker_id::Migration),
            Box::new(m20261203_000700_task_traceparent::Migration),
            Box::new(m20261203_000800_queue_order_index::Migration),
        ]
    }
}
