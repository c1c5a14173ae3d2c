//! Live views of single tasks, for `WatchTask`. The store's own write paths publish
//! every task they commit (the batch writer, claims, releases); on Postgres the
//! `jct_task_changed` notification (a trigger on `tasks`) brings other replicas'
//! commits. Nothing polls the database per watcher.
//!
//! Each watched task has one `tokio::sync::watch` channel shared by its watchers:
//! it holds only the latest state, so a slow watcher skips to the newest task and
//! can never make the intake buffer more than one task per watched id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sea_orm::EntityTrait;
use tokio::sync::watch;
use uuid::Uuid;

use crate::task::{Micros, Task};

use super::entity::Entity;
use super::{Store, StoreError};

type Latest = Option<Arc<Task>>;

/// The channels of the tasks someone is watching, by task id.
#[derive(Clone, Default)]
pub(super) struct Watchers {
    channels: Arc<Mutex<HashMap<Uuid, watch::Sender<Latest>>>>,
}

impl Watchers {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, watch::Sender<Latest>>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn subscribe(&self, task_id: Uuid) -> watch::Receiver<Latest> {
        self.lock()
            .entry(task_id)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// Hands a committed task to its watchers, if it has any. Of two racing
    /// publications the newer task wins whatever order they arrive in (every write
    /// sets `updated_at`); an equal one that changed nothing wakes nobody.
    pub(super) fn publish(&self, task: &Task) {
        let channels = self.lock();
        let Some(sender) = channels.get(&task.id) else {
            return;
        };
        sender.send_if_modified(|latest| {
            let newer = match latest {
                None => true,
                Some(current) => {
                    current.updated_at < task.updated_at
                        || (current.updated_at == task.updated_at && **current != *task)
                }
            };
            if newer {
                *latest = Some(Arc::new(task.clone()));
            }
            newer
        });
    }

    /// The `updated_at` of the latest published state of a watched task; `None`
    /// when nobody watches it.
    pub(super) fn version(&self, task_id: &Uuid) -> Option<Option<Micros>> {
        self.lock()
            .get(task_id)
            .map(|sender| sender.borrow().as_ref().map(|task| task.updated_at))
    }

    pub(super) fn watched(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    fn unsubscribe(&self, task_id: Uuid, receiver: watch::Receiver<Latest>) {
        let mut channels = self.lock();
        drop(receiver);
        if channels
            .get(&task_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(&task_id);
        }
    }

    #[cfg(test)]
    pub(super) fn channel_count(&self) -> usize {
        self.lock().len()
    }
}

/// One watcher of one task: yields the task as it is now, then after every change,
/// and ends after a terminal state.
pub struct TaskWatch {
    task_id: Uuid,
    receiver: Option<watch::Receiver<Latest>>,
    watchers: Watchers,
    started: bool,
    finished: bool,
}

impl TaskWatch {
    /// The next state to show; `None` once a terminal state was shown.
    pub async fn next(&mut self) -> Option<Arc<Task>> {
        if self.finished {
            return None;
        }
        let receiver = self.receiver.as_mut()?;
        if self.started {
            // an Err means the store is gone: nothing more will come
            receiver.changed().await.ok()?;
        }
        self.started = true;
        let task = receiver.borrow_and_update().clone()?;
        self.finished = task.status.is_terminal();
        Some(task)
    }
}

impl Drop for TaskWatch {
    fn drop(&mut self) {
        if let Some(receiver) = self.receiver.take() {
            self.watchers.unsubscribe(self.task_id, receiver);
        }
    }
}

// === impl Store ===

impl Store {
    /// Starts watching a task; `None` when there is no such task.
    pub async fn watch(&self, task_id: Uuid) -> Result<Option<TaskWatch>, StoreError> {
        // subscribe before reading, so a commit between the read and the
        // subscription cannot be missed; the newer of the two wins
        let watch = TaskWatch {
            task_id,
            receiver: Some(self.watchers.subscribe(task_id)),
            watchers: self.watchers.clone(),
            started: false,
            finished: false,
        };
        let Some(current) = self.get(task_id).await? else {
            return Ok(None);
        };
        self.watchers.publish(&current);
        Ok(Some(watch))
    }

    /// Reads a watched task from the database and publishes it: another replica
    /// changed it (Postgres), or a notification may have been missed.
    pub(super) async fn refresh_watched(&self, task_id: Uuid) -> Result<(), StoreError> {
        if let Some(model) = Entity::find_by_id(task_id).one(&self.reader).await? {
            let task = model.into_task()?;
            self.cache.put(&task);
            self.watchers.publish(&task);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Status;

    fn task(id: Uuid, status: Status, updated_at: Micros) -> Task {
        Task {
            updated_at,
            ..Task::example(id, status)
        }
    }

    fn watch_of(watchers: &Watchers, id: Uuid) -> TaskWatch {
        TaskWatch {
            task_id: id,
            receiver: Some(watchers.subscribe(id)),
            watchers: watchers.clone(),
            started: false,
            finished: false,
        }
    }

    #[tokio::test]
    async fn an_older_state_never_replaces_a_newer_one() {
        let watchers = Watchers::default();
        let id = Uuid::now_v7();
        let mut watch = watch_of(&watchers, id);
        watchers.publish(&task(id, Status::Running, 20));
        watchers.publish(&task(id, Status::Queued, 10));
        let first = watch.next().await.expect("current state");
        assert_eq!(first.status, Status::Running);
        watchers.publish(&task(id, Status::Completed, 30));
        let last = watch.next().await.expect("the change");
        assert_eq!(last.status, Status::Completed);
        assert!(watch.next().await.is_none(), "ends after a terminal state");
    }

    #[tokio::test]
    async fn a_slow_watcher_gets_the_latest_state_only() {
        let watchers = Watchers::default();
        let id = Uuid::now_v7();
        let mut watch = watch_of(&watchers, id);
        watchers.publish(&task(id, Status::Queued, 1));
        assert_eq!(watch.next().await.map(|t| t.status), Some(Status::Queued));
        // a thousand changes while the watcher is not reading: one state is kept
        for at in 2..1002 {
            watchers.publish(&task(id, Status::Running, at));
        }
        let latest = watch.next().await.expect("latest");
        assert_eq!(latest.updated_at, 1001);
    }

    #[tokio::test]
    async fn the_last_watcher_leaving_removes_the_channel() {
        let watchers = Watchers::default();
        let id = Uuid::now_v7();
        let first = watch_of(&watchers, id);
        let second = watch_of(&watchers, id);
        assert_eq!(watchers.channel_count(), 1);
        drop(first);
        assert_eq!(watchers.channel_count(), 1);
        drop(second);
        assert_eq!(watchers.channel_count(), 0);
        // publishing for an unwatched task keeps nothing
        watchers.publish(&task(id, Status::Queued, 1));
        assert_eq!(watchers.channel_count(), 0);
        assert!(watchers.version(&id).is_none());
    }
}
