//! The `tasks` table: one row per task, holding the normalized request, its place in
//! the state machine and the lease of the worker running it.
//!
//! Timestamps are integers (microseconds since the Unix epoch), so both backends
//! store, compare and index them the same way and nothing is lost in a round trip.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Id,
    Version,
    IdempotencyKey,
    RequestedByKind,
    RequestedById,
    RequestedByLabel,
    Objective,
    Operation,
    TargetRepo,
    TargetRef,
    TargetPath,
    TimeBudgetSeconds,
    AllowNetwork,
    AllowSecrets,
    Inputs,
    Metadata,
    Status,
    CreatedAt,
    QueuedAt,
    StartedAt,
    CompletedAt,
    UpdatedAt,
    AvailableAt,
    Attempt,
    MaxAttempts,
    WorkerId,
    LeaseToken,
    LeaseExpiresAt,
    TraceUri,
    Result,
    ErrorCode,
    ErrorMessage,
}

const STATUSES: [&str; 6] = [
    "pending",
    "queued",
    "running",
    "completed",
    "failed",
    "cancelled",
];

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tasks::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Tasks::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Tasks::Version).string_len(16).not_null())
                    .col(ColumnDef::new(Tasks::IdempotencyKey).string_len(256).null())
                    .col(
                        ColumnDef::new(Tasks::RequestedByKind)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Tasks::RequestedById)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Tasks::RequestedByLabel)
                            .string_len(256)
                            .null(),
                    )
                    .col(ColumnDef::new(Tasks::Objective).text().not_null())
                    .col(ColumnDef::new(Tasks::Operation).string_len(32).not_null())
                    .col(ColumnDef::new(Tasks::TargetRepo).string_len(256).not_null())
                    .col(ColumnDef::new(Tasks::TargetRef).string_len(256).not_null())
                    .col(ColumnDef::new(Tasks::TargetPath).string_len(512).not_null())
                    .col(
                        ColumnDef::new(Tasks::TimeBudgetSeconds)
                            .integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Tasks::AllowNetwork).boolean().not_null())
                    .col(ColumnDef::new(Tasks::AllowSecrets).boolean().not_null())
                    // JSON objects as text: never queried into, and identical on both backends
                    .col(ColumnDef::new(Tasks::Inputs).text().not_null())
                    .col(ColumnDef::new(Tasks::Metadata).text().not_null())
                    .col(
                        ColumnDef::new(Tasks::Status)
                            .string_len(16)
                            .not_null()
                            .check(Expr::col(Tasks::Status).is_in(STATUSES)),
                    )
                    .col(ColumnDef::new(Tasks::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Tasks::QueuedAt).big_integer().null())
                    .col(ColumnDef::new(Tasks::StartedAt).big_integer().null())
                    .col(ColumnDef::new(Tasks::CompletedAt).big_integer().null())
                    .col(ColumnDef::new(Tasks::UpdatedAt).big_integer().not_null())
                    // a queued task is not dispatched before this (retry backoff)
                    .col(ColumnDef::new(Tasks::AvailableAt).big_integer().not_null())
                    .col(
                        ColumnDef::new(Tasks::Attempt)
                            .integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(Tasks::MaxAttempts).integer().not_null())
                    .col(ColumnDef::new(Tasks::WorkerId).string_len(256).null())
                    .col(ColumnDef::new(Tasks::LeaseToken).uuid().null())
                    .col(ColumnDef::new(Tasks::LeaseExpiresAt).big_integer().null())
                    .col(ColumnDef::new(Tasks::TraceUri).text().null())
                    .col(ColumnDef::new(Tasks::Result).text().null())
                    .col(ColumnDef::new(Tasks::ErrorCode).string_len(64).null())
                    .col(ColumnDef::new(Tasks::ErrorMessage).text().null())
                    .to_owned(),
            )
            .await?;

        // Idempotency is the database's job: concurrent enqueues with one key race
        // on this index, and exactly one insert wins.
        manager
            .create_index(
                Index::create()
                    .name("ux_tasks_idempotency_key")
                    .table(Tasks::Table)
                    .col(Tasks::IdempotencyKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        // Every list filter pairs with the id (time-ordered) so a filtered page is
        // one index range scan; (status, id) also serves the dispatch queue.
        let filtered_by = [
            ("ix_tasks_status_id", Tasks::Status),
            ("ix_tasks_operation_id", Tasks::Operation),
            ("ix_tasks_requested_by_kind_id", Tasks::RequestedByKind),
            ("ix_tasks_target_repo_id", Tasks::TargetRepo),
        ];
        for (name, column) in filtered_by {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Tasks::Table)
                        .col(column)
                        .col(Tasks::Id)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }

        // The dispatch queue in the order it is read: queued, available, oldest first.
        manager
            .create_index(
                Index::create()
                    .name("ix_tasks_dispatch")
                    .table(Tasks::Table)
                    .col(Tasks::Status)
                    .col(Tasks::AvailableAt)
                    .col(Tasks::QueuedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        // The rescuer looks for running tasks whose lease has expired.
        manager
            .create_index(
                Index::create()
                    .name("ix_tasks_lease_expiry")
                    .table(Tasks::Table)
                    .col(Tasks::Status)
                    .col(Tasks::LeaseExpiresAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Tasks::Table).if_exists().to_owned())
            .await
    }
}
