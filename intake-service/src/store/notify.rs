//! Postgres LISTEN/NOTIFY: a task enqueued or cancelled through any replica wakes
//! the dispatchers of all of them, and a task changed through any replica reaches
//! its watchers on all of them. Commits NOTIFY (see the batch writer; task changes
//! through a trigger on `tasks`); this listens and turns notifications into the same
//! process events local commits use.

use std::future::Future;
use std::time::Duration;

use sea_orm::sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use super::{Backend, CancelNotice, Store};

pub(super) const QUEUED_CHANNEL: &str = "jct_task_queued";
pub(super) const CANCELLED_CHANNEL: &str = "jct_task_cancelled";
/// Sent by the `tasks` trigger for every change a client can see, with the payload
/// `<task id>:<updated_at>` (see the `m20261202_000200` migration).
const CHANGED_CHANNEL: &str = "jct_task_changed";
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
                // dispatcher's periodic recheck, and by this wake-up; watchers
                // get their tasks read again
                store.events.task_queued.notify_one();
                for task_id in store.watchers.watched() {
                    store.spawn_refresh(task_id);
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        })
    }

    async fn listen(&self) -> Result<(), sea_orm::sqlx::Error> {
        let pool = self.writer.get_postgres_connection_pool();
        let mut listener = PgListener::connect_with(pool).await?;
        listener
            .listen_all([QUEUED_CHANNEL, CANCELLED_CHANNEL, CHANGED_CHANNEL])
            .await?;
        info!("listening for task notifications from all replicas");
        loop {
            let notification = listener.recv().await?;
            match notification.channel() {
                QUEUED_CHANNEL => self.events.task_queued.notify_one(),
                CANCELLED_CHANNEL => {
                    if let Some(notice) = parse_cancel(notification.payload()) {
                        let _ = self.events.task_cancelled.send(notice);
                    }
                }
                _ => self.task_changed(notification.payload()),
            }
        }
    }

    /// A task changed, maybe through another replica: if someone here watches it
    /// and has not seen that version yet, read it once for all its watchers.
    fn task_changed(&self, payload: &str) {
        let Some((task_id, updated_at)) = parse_changed(payload) else {
            return;
        };
        match self.watchers.version(&task_id) {
            None => {}
            Some(Some(seen)) if seen >= updated_at => {}
            Some(_) => self.spawn_refresh(task_id),
        }
    }

    /// Reads a watched task off the listener's loop, which must keep draining.
    fn spawn_refresh(&self, task_id: Uuid) {
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(error) = store.refresh_watched(task_id).await {
                warn!(%error, %task_id, "could not read a watched task after a change");
            }
        });
    }
}

fn parse_changed(payload: &str) -> Option<(Uuid, i64)> {
    let (task, updated_at) = payload.split_once(':')?;
    Some((Uuid::parse_str(task).ok()?, updated_at.parse().ok()?))
}

fn parse_cancel(payload: &str) -> Option<CancelNotice> {
    let (task, lease) = payload.split_once(':')?;
    Some(CancelNotice {
        task_id: Uuid::parse_str(task).ok()?,
        lease_token: Uuid::parse_str(lease).ok()?,
    })
}
