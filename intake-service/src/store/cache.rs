//! A read-through cache of tasks for GetTask, kept exact by the store's own write
//! paths: every statement that changes what GetTask shows returns the new row and
//! puts it here (renewals change only the lease expiry, which GetTask does not show).
//!
//! On SQLite the intake is the database's only writer (an exclusive lock file
//! enforces it), so every cached task is current. On Postgres other replicas
//! write too, so only terminal tasks — which never change again — are cached.

use std::sync::{Arc, Mutex};

use quick_cache::sync::Cache;
use uuid::Uuid;

use crate::task::Task;

/// Tasks kept; a task is a few KiB at most (inputs and metadata are bounded).
const CAPACITY: usize = 10_000;

#[derive(Clone)]
pub(super) struct TaskCache {
    tasks: Arc<Cache<Uuid, Arc<Task>>>,
    /// Serializes compare-and-put, so a slower writer never replaces a newer task.
    put_lock: Arc<Mutex<()>>,
    /// Whether non-terminal tasks may be cached (this process is the only writer).
    sole_writer: bool,
}

impl TaskCache {
    pub(super) fn new(sole_writer: bool) -> Self {
        Self {
            tasks: Arc::new(Cache::new(CAPACITY)),
            put_lock: Arc::new(Mutex::new(())),
            sole_writer,
        }
    }

    pub(super) fn get(&self, id: &Uuid) -> Option<Arc<Task>> {
        self.tasks.get(id)
    }

    /// Records a task as a statement returned it. Every write sets `updated_at`,
    /// so of two racing puts the newer task wins, whatever order they arrive in.
    pub(super) fn put(&self, task: &Task) {
        let _serialized = self
            .put_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cached) = self.tasks.get(&task.id)
            && cached.updated_at > task.updated_at
        {
            return;
        }
        if self.sole_writer || task.status.is_terminal() {
            self.tasks.insert(task.id, Arc::new(task.clone()));
        } else {
            self.tasks.remove(&task.id);
        }
    }
}
