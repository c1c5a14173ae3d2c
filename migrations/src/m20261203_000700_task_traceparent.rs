//! `tasks.traceparent`: the W3C trace context of the task's enqueue, so the
//! worker's run joins the enqueuing client's trace. NULL for tasks stored before
//! it existed (their runs start traces of their own).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Traceparent,
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    // a version-00 traceparent is exactly 55 characters
                    .add_column(ColumnDef::new(Tasks::Traceparent).string_len(55).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tasks::Table)
                    .drop_column(Tasks::Traceparent)
                    .to_owned(),
            )
            .await
    }
}
