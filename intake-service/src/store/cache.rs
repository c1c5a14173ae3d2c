//! A read-through cache of tasks for GetTask, kept exact by the store's own write
//! paths: every statement that changes what GetTask shows returns the new row and
//! puts it here (renewals change only the lease expiry, which GetTask does not show).
//!
//! On SQLite the intake is the database's only writer (an exclusive lock file
//! enforces it), so every cached task is current. On Postgres other replicas
//! write too, so only terminal tasks — which never change again — are cached.
//!
//! The cache is bounded in bytes, not entries: a task's inputs, metadata and
//! result may be megabytes each (a request of 4 MiB of small numbers is several
//! times that once parsed), so a count of entries bounds nothing. Each task is
//! weighed once, when it is put, by an estimate of the memory it holds; the
//! least recently used tasks are evicted first (quick_cache's CLOCK-Pro, which
//! also keeps a task read once from pushing out the ones read often). A task
//! heavier than a shard of the cache is not cached at all: GetTask reads it from
//! the database.

use std::sync::{Arc, Mutex};

use quick_cache::sync::Cache;
use quick_cache::{OptionsBuilder, Weighter};
use serde_json::{Map, Value as Json};
use uuid::Uuid;

use crate::task::Task;

/// The default bound of the cache, in estimated bytes.
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// A task with the weight it was given when put (a weight must never change).
#[derive(Clone)]
struct Weighed {
    task: Arc<Task>,
    bytes: u64,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<Uuid, Weighed> for ByBytes {
    fn weight(&self, _id: &Uuid, value: &Weighed) -> u64 {
        value.bytes
    }
}

#[derive(Clone)]
pub(super) struct TaskCache {
    tasks: Arc<Cache<Uuid, Weighed, ByBytes>>,
    /// Serializes compare-and-put, so a slower writer never replaces a newer task.
    put_lock: Arc<Mutex<()>>,
    /// Whether non-terminal tasks may be cached (this process is the only writer).
    sole_writer: bool,
}

impl TaskCache {
    /// A cache of at most `max_bytes` estimated bytes of tasks (0 caches nothing:
    /// every task weighs more than the capacity of 1 left then).
    pub(super) fn new(sole_writer: bool, max_bytes: u64) -> Self {
        // sizes the index only; the weight is what bounds the cache
        const TYPICAL_TASK_BYTES: u64 = 4 * 1024;
        // few shards, so one shard (the largest task cached) is a quarter of the bound
        const SHARDS: usize = 4;
        let estimated_items = usize::try_from(max_bytes / TYPICAL_TASK_BYTES)
            .unwrap_or(usize::MAX)
            .clamp(SHARDS * 32, 1 << 20);
        let options = OptionsBuilder::new()
            .shards(SHARDS)
            .estimated_items_capacity(estimated_items)
            .weight_capacity(max_bytes.max(1))
            .build();
        let tasks = match options {
            Ok(options) => {
                Cache::with_options(options, ByBytes, Default::default(), Default::default())
            }
            // every field is set above; should the crate ever refuse them, the
            // crate's defaults with the same bound still bound the memory
            Err(_) => Cache::with_weighter(estimated_items, max_bytes.max(1), ByBytes),
        };
        Self {
            tasks: Arc::new(tasks),
            put_lock: Arc::new(Mutex::new(())),
            sole_writer,
        }
    }

    pub(super) fn get(&self, id: &Uuid) -> Option<Arc<Task>> {
        self.tasks.get(id).map(|weighed| weighed.task)
    }

    /// Records a task as a statement returned it. Every write sets `updated_at`,
    /// so of two racing puts the newer task wins, whatever order they arrive in.
    pub(super) fn put(&self, task: &Task) {
        let _serialized = self
            .put_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cached) = self.tasks.get(&task.id)
            && cached.task.updated_at > task.updated_at
        {
            return;
        }
        if self.sole_writer || task.status.is_terminal() {
            let weighed = Weighed {
                bytes: estimated_bytes(task),
                task: Arc::new(task.clone()),
            };
            // quick_cache drops (rather than stores) an entry heavier than its
            // shard; the stale entry must not survive that
            self.tasks.remove(&task.id);
            self.tasks.insert(task.id, weighed);
        } else {
            self.tasks.remove(&task.id);
        }
    }

    /// Estimated bytes of the tasks held now.
    #[cfg(test)]
    fn weight(&self) -> u64 {
        self.tasks.weight()
    }
}

/// Memory a cached task holds, estimated: the struct, its strings and its JSON
/// trees walked node by node (a number is a whole `Value` in memory, however few
/// digits it had in the request).
fn estimated_bytes(task: &Task) -> u64 {
    /// The task struct, its Arc and the cache's own entry.
    const FIXED: usize = std::mem::size_of::<Task>() + 128;
    let spec = &task.spec;
    let strings = [
        spec.version.len(),
        spec.submitted_by.len(),
        spec.idempotency_key.as_ref().map_or(0, String::len),
        spec.requested_by.id.len(),
        spec.requested_by.label.as_ref().map_or(0, String::len),
        spec.objective.len(),
        spec.target.repo.len(),
        spec.target.ref_name.len(),
        spec.target.path.len(),
        spec.traceparent.as_ref().map_or(0, String::len),
        task.worker_id.as_ref().map_or(0, String::len),
        task.trace_uri.as_ref().map_or(0, String::len),
        task.error
            .as_ref()
            .map_or(0, |error| error.code.len() + error.message.len()),
    ];
    let json = object_bytes(&spec.inputs)
        + object_bytes(&spec.metadata)
        + task.result.as_ref().map_or(0, object_bytes);
    u64::try_from(FIXED + strings.iter().sum::<usize>() + json).unwrap_or(u64::MAX)
}

/// A map entry: its key string, its value and the tree node's share.
const MAP_ENTRY_OVERHEAD: usize = std::mem::size_of::<String>() + 16;

fn object_bytes(object: &Map<String, Json>) -> usize {
    object
        .iter()
        .map(|(key, value)| MAP_ENTRY_OVERHEAD + key.len() + value_bytes(value))
        .sum()
}

/// One JSON value: the `Value` itself and what it owns on the heap.
fn value_bytes(value: &Json) -> usize {
    const VALUE: usize = std::mem::size_of::<Json>();
    VALUE
        + match value {
            Json::Null | Json::Bool(_) | Json::Number(_) => 0,
            Json::String(text) => text.len(),
            Json::Array(items) => items.iter().map(value_bytes).sum(),
            Json::Object(object) => object_bytes(object),
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Status;

    fn task_with_numbers(count: usize) -> Task {
        let numbers: Vec<Json> = (0..count).map(|n| Json::from(n as f64 / 7.0)).collect();
        let mut task = Task::example(Uuid::now_v7(), Status::Queued);
        task.spec
            .inputs
            .insert("numbers".into(), Json::Array(numbers));
        task
    }

    #[test]
    fn a_task_weighs_what_its_parsed_json_holds() {
        let small = estimated_bytes(&task_with_numbers(0));
        let big = estimated_bytes(&task_with_numbers(100_000));
        // a number is a whole Value in memory, not its few digits of text
        assert!(
            big - small >= 100_000 * std::mem::size_of::<Json>() as u64,
            "{big} - {small}"
        );
        assert!(small < 4096, "{small}");
    }

    #[test]
    fn the_cache_holds_no_more_bytes_than_its_bound() {
        let bound = 8 * 1024 * 1024;
        let cache = TaskCache::new(true, bound);
        let tasks: Vec<Task> = (0..40).map(|_| task_with_numbers(20_000)).collect();
        for task in &tasks {
            cache.put(task);
            assert!(cache.weight() <= bound, "{} > {bound}", cache.weight());
        }
        let held = tasks.iter().filter(|t| cache.get(&t.id).is_some()).count();
        assert!(held > 0 && held < tasks.len(), "held {held} of 40");
        // the newest task is there (the oldest ones went first)
        assert!(cache.get(&tasks[39].id).is_some());
    }

    #[test]
    fn a_task_heavier_than_the_cache_replaces_its_stale_entry_with_nothing() {
        let cache = TaskCache::new(true, 64 * 1024);
        let mut task = task_with_numbers(0);
        cache.put(&task);
        assert!(cache.get(&task.id).is_some());
        task = Task {
            updated_at: 2,
            ..task_with_numbers(50_000)
        }
        .with_id(task.id);
        cache.put(&task);
        assert!(
            cache.get(&task.id).is_none(),
            "a stale copy would be served"
        );
    }

    #[test]
    fn a_zero_bound_caches_nothing() {
        let cache = TaskCache::new(true, 0);
        let task = task_with_numbers(1);
        cache.put(&task);
        assert!(cache.get(&task.id).is_none());
    }

    impl Task {
        fn with_id(mut self, id: Uuid) -> Task {
            self.id = id;
            self
        }
    }
}
