//! Postgres LISTEN/NOTIFY: a task enqueued or cancelled through any replica wakes
//! the dispatchers of all of them. Commits NOTIFY (see the batch writer); this
//! listens and turns notifications into the same process events local commits use.

use std::future::Future;
use std::time::Duration;

use sea_orm::sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use super::{Backend, CancelNotice, Store};

pub(super) const QUEUED_CHANNEL: &str = "jct_task_queued";
pub(super) const CANCELLED_CHANNEL: &str = "jct_task_cancelled";
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

impl Store {
    /// On Postgres, the listener task to run until `stopping`; `None` elsewhere
    /// (a SQLite database has one intake, whose own commits wake it).
    pub fn notification_listener(
        &self,
        stopping: CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        if self.backend != Backend::Postgres {
            return None;
        }
        let store = self.clone();
        Some(async move {
            loop {
                tokio::select! {
                    _ = stopping.cancelled() => return,
                    outcome = store.listen() => {
                        if let Err(error) = outcome {
                            warn!(%error, "postgres notification listener failed; reconnecting");
                        }
                    }
                }
                // a notification missed while reconnecting is covered by the
                // dispatcher's periodic recheck, and by this wake-up
                store.events.task_queued.notify_one();
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        })
    }

    async fn listen(&self) -> Result<(), sea_orm::sqlx::Error> {
        let pool = self.writer.get_postgres_connection_pool();
        let mut listener = PgListener::connect_with(pool).await?;
        listener
            .listen_all([QUEUED_CHANNEL, CANCELLED_CHANNEL])
            .await?;
        info!("listening for task notifications from all replicas");
        loop {
            let notification = listener.recv().await?;
            if notification.channel() == QUEUED_CHANNEL {
                self.events.task_queued.notify_one();
            } else if let Some(notice) = parse_cancel(notification.payload()) {
                let _ = self.events.task_cancelled.send(notice);
            }
        }
    }
}

fn parse_cancel(payload: &str) -> Option<CancelNotice> {
    let (task, lease) = payload.split_once(':')?;
    Some(CancelNotice {
        task_id: Uuid::parse_str(task).ok()?,
        lease_token: Uuid::parse_str(lease).ok()?,
    })
}
