//! Refused calls in the audit trail, bounded: a flood of denied calls or rejected
//! enqueues must not fill the disk. Refusals are AGGREGATED, not sampled: each
//! flush interval writes at most one row per (principal, method, action,
//! reason) carrying the count, and at most [`MAX_KEYS`] distinct keys per
//! interval (further keys fold into one `*` row). A token-less caller is
//! recorded as `unauthenticated`; the token itself never is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::store::Store;
use crate::store::audit::Refused;
use crate::task::now_micros;

use super::layer::DenialSink;
use super::{AuthError, Principal};

/// Distinct (principal, method, action, reason) keys kept per interval.
pub const MAX_KEYS: usize = 1024;

type Key = (String, String, &'static str, String);

#[derive(Clone)]
pub struct RefusalLog {
    pending: Arc<Mutex<HashMap<Key, (i64, i64)>>>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self::new()
    }
}

impl RefusalLog {
    pub fn new() -> Self {
        Self {
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Counts one refusal.
    pub fn note(&self, principal: &str, method: &str, action: &'static str, reason: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = (
            principal.to_string(),
            method.to_string(),
            action,
            reason.to_string(),
        );
        if !pending.contains_key(&key) && pending.len() >= MAX_KEYS {
            key = ("*".to_string(), "*".to_string(), action, "*".to_string());
        }
        let entry = pending.entry(key).or_insert((now_micros(), 0));
        entry.1 += 1;
    }

    /// Writes what was counted since the last flush.
    pub async fn flush(&self, store: &Store) {
        let rows: Vec<Refused> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending
                .drain()
                .map(
                    |((principal, method, action, reason), (at, count))| Refused {
                        at,
                        principal,
                        method,
                        action,
                        reason,
                        count,
                    },
                )
                .collect()
        };
        if let Err(error) = store.record_refused(&rows).await {
            warn!(%error, rows = rows.len(), "could not record refused calls in the audit trail");
        }
    }

    /// Flushes every `interval` until `stopping`, then once more.
    pub async fn run(self, store: Store, interval: Duration, stopping: CancellationToken) {
        loop {
            tokio::select! {
                _ = stopping.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            self.flush(&store).await;
        }
        self.flush(&store).await;
    }
}

impl DenialSink for RefusalLog {
    fn denied(&self, principal: Option<&Principal>, method: &str, error: &AuthError) {
        let name = principal.map_or("unauthenticated", |p| p.name());
        self.note(name, method, "denied", error.label());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_counted_not_stored_row_by_row() {
        let log = RefusalLog::new();
        for _ in 0..10_000 {
            log.note("mallory", "/m", "denied", "unknown_token");
        }
        for i in 0..(MAX_KEYS * 3) {
            log.note(&format!("p{i}"), "/m", "denied", "r");
        }
        let pending = log.pending.lock().expect("lock");
        assert!(pending.len() <= MAX_KEYS + 1, "{}", pending.len());
        assert_eq!(
            pending
                .get(&(
                    "mallory".into(),
                    "/m".into(),
                    "denied",
                    "unknown_token".into()
                ))
                .map(|(_, count)| *count),
            Some(10_000)
        );
    }
}
