//! The age of the oldest queued task (`GetSystemStatus`, the queue metrics) is read
//! as "the first `queued_at` among queued tasks": with `(status, queued_at)` that
//! is one index seek, not a scan of the queue, however many tasks wait. The
//! dispatch index leads with `available_at` (retry backoff), so it cannot answer
//! it in order.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Status,
    QueuedAt,
}

const INDEX: &str = "ix_tasks_status_queued_at";

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Tasks::Table)
                    .col(Tasks::Status)
                    .col(Tasks::QueuedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Tasks::Table).to_owned())
            .await
    }
}
