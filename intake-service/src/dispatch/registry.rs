//! The workers connected to this intake, what each holds, and how to reach it.
//! Behind one mutex held only for map updates, never across an await.

use std::collections::HashMap;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::messages::ToWorker;

/// Identifies one stream (a worker may reconnect under the same worker id).
pub type SessionId = u64;

pub type Outbox = mpsc::Sender<ToWorker>;

pub struct Session {
    /// The authenticated caller that attached it; only it may use the worker id.
    pub principal: String,
    pub worker_id: String,
    pub capacity: u32,
    pub executor: String,
    pub version: String,
    pub draining: bool,
    /// Held tasks and their lease tokens.
    pub held: HashMap<Uuid, Uuid>,
    pub outbox: Outbox,
}

impl Session {
    pub fn free_slots(&self) -> u32 {
        if self.draining {
            return 0;
        }
        let held = u32::try_from(self.held.len()).unwrap_or(u32::MAX);
        self.capacity.saturating_sub(held)
    }
}

/// Another principal's worker is attached under the requested worker id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the worker id is attached by another principal")]
pub struct WorkerIdTaken;

#[derive(Default)]
pub struct Registry {
    next_id: SessionId,
    sessions: HashMap<SessionId, Session>,
    holder_of: HashMap<Uuid, SessionId>,
}

/// A session that wants work.
pub struct Hungry {
    pub session: SessionId,
    pub worker_id: String,
    pub free: u32,
}

// === impl Registry ===

impl Registry {
    /// Adds a session; returns its id and the session it replaces (same worker
    /// id, same principal). A worker id attached by another principal is not
    /// taken over: that would hand its tasks to whoever claims the id.
    pub fn register(
        &mut self,
        session: Session,
    ) -> Result<(SessionId, Option<Session>), WorkerIdTaken> {
        let existing = self
            .sessions
            .iter()
            .find(|(_, existing)| existing.worker_id == session.worker_id)
            .map(|(id, existing)| (*id, existing.principal == session.principal));
        let replaced = match existing {
            Some((_, false)) => return Err(WorkerIdTaken),
            Some((id, true)) => self.remove(id),
            None => None,
        };
        self.next_id += 1;
        let id = self.next_id;
        self.sessions.insert(id, session);
        Ok((id, replaced))
    }

    /// Whether `task` is held here by a session of another principal than
    /// `session`'s: such a lease is not this worker's to renew or report under.
    pub fn held_by_another(&self, session: SessionId, task: Uuid) -> bool {
        let Some(holder) = self.holder_of.get(&task) else {
            return false;
        };
        let principal = |id| {
            self.sessions
                .get(id)
                .map(|s: &Session| s.principal.as_str())
        };
        *holder != session && principal(holder) != principal(&session)
    }

    /// Removes a session and everything it held.
    pub fn remove(&mut self, id: SessionId) -> Option<Session> {
        let session = self.sessions.remove(&id)?;
        for task in session.held.keys() {
            if self.holder_of.get(task) == Some(&id) {
                self.holder_of.remove(task);
            }
        }
        Some(session)
    }

    pub fn hold(&mut self, id: SessionId, task: Uuid, lease: Uuid) -> bool {
        let Some(session) = self.sessions.get_mut(&id) else {
            return false;
        };
        session.held.insert(task, lease);
        if let Some(previous) = self.holder_of.insert(task, id)
            && previous != id
            && let Some(other) = self.sessions.get_mut(&previous)
        {
            other.held.remove(&task);
        }
        true
    }

    /// Forgets a task its session no longer holds.
    pub fn release(&mut self, id: SessionId, task: Uuid) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.held.remove(&task);
        }
        if self.holder_of.get(&task) == Some(&id) {
            self.holder_of.remove(&task);
        }
    }

    /// The session holding a task under a lease, if it is connected here.
    pub fn holder(&self, task: Uuid, lease: Uuid) -> Option<(SessionId, &Session)> {
        let id = *self.holder_of.get(&task)?;
        let session = self.sessions.get(&id)?;
        (session.held.get(&task) == Some(&lease)).then_some((id, session))
    }

    pub fn get(&self, id: SessionId) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn set_draining(&mut self, id: SessionId) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.draining = true;
        }
    }

    pub fn hungry(&self) -> Vec<Hungry> {
        let mut hungry: Vec<Hungry> = self
            .sessions
            .iter()
            .filter(|(_, session)| session.free_slots() > 0)
            .map(|(id, session)| Hungry {
                session: *id,
                worker_id: session.worker_id.clone(),
                free: session.free_slots(),
            })
            .collect();
        // most free first, so load spreads across workers
        hungry.sort_by_key(|h| std::cmp::Reverse(h.free));
        hungry
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(worker: &str, capacity: u32) -> Session {
        owned_session("p", worker, capacity)
    }

    fn owned_session(principal: &str, worker: &str, capacity: u32) -> Session {
        Session {
            principal: principal.to_string(),
            worker_id: worker.to_string(),
            capacity,
            executor: "record".into(),
            version: "test".into(),
            draining: false,
            held: HashMap::new(),
            outbox: mpsc::channel(1).0,
        }
    }

    #[test]
    fn free_slots_follow_holds_and_draining() {
        let mut registry = Registry::default();
        let (id, _) = registry.register(session("w1", 2)).expect("registered");
        let (task, lease) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(registry.hold(id, task, lease));
        assert_eq!(registry.hungry()[0].free, 1);
        assert!(registry.holder(task, lease).is_some());
        assert!(registry.holder(task, Uuid::now_v7()).is_none());
        registry.release(id, task);
        assert_eq!(registry.hungry()[0].free, 2);
        registry.set_draining(id);
        assert!(registry.hungry().is_empty());
    }

    #[test]
    fn a_reconnecting_worker_replaces_its_old_session() {
        let mut registry = Registry::default();
        let (old, _) = registry.register(session("w1", 2)).expect("registered");
        let task = Uuid::now_v7();
        registry.hold(old, task, Uuid::now_v7());
        let (new, replaced) = registry.register(session("w1", 2)).expect("registered");
        assert_ne!(old, new);
        assert_eq!(replaced.map(|s| s.held.len()), Some(1));
        assert!(registry.get(old).is_none());
    }

    #[test]
    fn another_principal_cannot_take_a_worker_id() {
        let mut registry = Registry::default();
        let (real, _) = registry
            .register(owned_session("alice", "w1", 2))
            .expect("registered");
        let (task, lease) = (Uuid::now_v7(), Uuid::now_v7());
        registry.hold(real, task, lease);
        assert!(
            registry
                .register(owned_session("mallory", "w1", 2))
                .is_err()
        );
        assert_eq!(registry.holder(task, lease).map(|(id, _)| id), Some(real));
        let (other, _) = registry
            .register(owned_session("mallory", "w2", 2))
            .expect("own id");
        assert!(registry.held_by_another(other, task));
        assert!(!registry.held_by_another(real, task));
        let (sibling, _) = registry
            .register(owned_session("alice", "w3", 2))
            .expect("own id");
        assert!(!registry.held_by_another(sibling, task), "same principal");
    }

    #[test]
    fn adopting_a_task_moves_it_between_sessions() {
        let mut registry = Registry::default();
        let (a, _) = registry.register(session("a", 1)).expect("registered");
        let (b, _) = registry.register(session("b", 1)).expect("registered");
        let (task, lease) = (Uuid::now_v7(), Uuid::now_v7());
        registry.hold(a, task, lease);
        registry.hold(b, task, lease);
        assert_eq!(registry.get(a).map(|s| s.held.len()), Some(0));
        assert_eq!(registry.holder(task, lease).map(|(id, _)| id), Some(b));
    }
}
