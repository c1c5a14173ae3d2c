//! Tenancy: every task records the principal that enqueued it (`anonymous` for
//! tasks from before authentication, and for callers of an intake without a
//! tokens file), and an idempotency key is scoped to that principal, so one caller
//! cannot squat or read back another's key. `(submitted_by, id)` serves a
//! submitter's own list, newest first.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Id,
    IdempotencyKey,
    SubmittedBy,
}

const OLD_KEY_INDEX: &str = "ux_tasks_idempotency_key";
const KEY_INDEX: &str = "ux_tasks_submitted_by_idempotency_key";
const LIST_INDEX: &str = "ix_tasks_submitted_by_id";

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .add_column(
                        ColumnDef::new(Tasks::SubmittedBy)
                            .string_len(128)
                            .not_null()
                            .default("anonymous"),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(OLD_KEY_INDEX)
                    .table(Tasks::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(KEY_INDEX)
                    .table(Tasks::Table)
                    .col(Tasks::SubmittedBy)
                    .col(Tasks::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(LIST_INDEX)
                    .table(Tasks::Table)
                    .col(Tasks::SubmittedBy)
                    .col(Tasks::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in [LIST_INDEX, KEY_INDEX] {
            manager
                .drop_index(Index::drop().name(name).table(Tasks::Table).to_owned())
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(OLD_KEY_INDEX)
                    .table(Tasks::Table)
                    .col(Tasks::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .drop_column(Tasks::SubmittedBy)
                    .to_owned(),
            )
            .await
    }
}
