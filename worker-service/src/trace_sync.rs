//! Group sync of the trace file system: a trace folder is durable before its
//! task's outcome is reported, and the runs that finish together share one
//! `syncfs(2)` instead of paying a flush per file.
//!
//! Per-file `fdatasync` cost five device flushes per task (task.json, stdout,
//! stderr, result, manifest), left the folder's directory entries unsynced, and
//! was most of the worker's system time in the drain benchmark. `syncfs` writes
//! back every dirty file and directory of the file system holding the trace root
//! and flushes the device once; since Linux 5.8 it reports writeback errors of
//! that file system. This is a database's group commit: a caller whose writes are
//! done needs a `syncfs` that *starts* after them; if one is already running,
//! it waits for that one to end and for the next, which it (or another waiter)
//! leads and which covers everyone who arrived meanwhile.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Condvar, Mutex, MutexGuard};

/// How the file system is synced: `syncfs(2)`, or a stand-in in tests.
type SyncFs = fn(&OwnedFd) -> rustix::io::Result<()>;

pub struct GroupSync {
    fd: OwnedFd,
    syncfs: SyncFs,
    state: Mutex<State>,
    finished: Condvar,
}

#[derive(Default)]
struct State {
    /// `syncfs` calls begun so far; the number of the latest is its generation.
    started: u64,
    /// The latest generation that has ended.
    ended: u64,
    running: bool,
    /// The latest generation whose `syncfs` failed, with the raw OS error. A
    /// waiter fails when it or any later generation failed: a writeback error
    /// is never lost to a waiter that looks late, at the cost of a rare
    /// error for a folder a failed sync did not need to cover.
    last_failure: Option<(u64, i32)>,
}

impl GroupSync {
    /// Syncs the file system holding `fd` (a directory on it).
    pub fn new(fd: OwnedFd) -> Self {
        Self::with_syncfs(fd, |fd| rustix::fs::syncfs(fd))
    }

    fn with_syncfs(fd: OwnedFd, syncfs: SyncFs) -> Self {
        Self {
            fd,
            syncfs,
            state: Mutex::new(State::default()),
            finished: Condvar::new(),
        }
    }

    /// Returns once everything the caller wrote before calling is on the device.
    /// Blocks: call it from a blocking thread.
    pub fn sync(&self) -> io::Result<()> {
        let mut state = self.lock();
        // a syncfs already running may have started before our last write
        let needed = state.started + 1;
        loop {
            if state.ended >= needed {
                return match state.last_failure {
                    Some((generation, code)) if generation >= needed => {
                        Err(io::Error::from_raw_os_error(code))
                    }
                    _ => Ok(()),
                };
            }
            if state.running {
                state = self
                    .finished
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            // lead: this syncfs covers every waiter that arrived before it starts
            state.running = true;
            state.started += 1;
            let generation = state.started;
            drop(state);
            let outcome = (self.syncfs)(&self.fd);
            state = self.lock();
            state.running = false;
            state.ended = generation;
            if let Err(errno) = outcome {
                state.last_failure = Some((generation, errno.raw_os_error()));
            }
            self.finished.notify_all();
        }
    }

    /// `syncfs` calls made so far (for tests and benchmarks).
    pub fn generations(&self) -> u64 {
        self.lock().started
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // the state is a few counters updated together under the lock: still
        // consistent after a panic elsewhere
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::Barrier;

    fn group(dir: &std::path::Path) -> io::Result<GroupSync> {
        let fd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )?;
        Ok(GroupSync::new(fd))
    }

    /// A writeback error reaches the caller whose sync it was, and does not
    /// stick to the callers after a sync that succeeded.
    #[test]
    fn a_failed_syncfs_fails_its_caller_and_not_later_ones() -> io::Result<()> {
        use std::sync::atomic::{AtomicBool, Ordering};
        static FAIL: AtomicBool = AtomicBool::new(true);
        let dir = tempfile::tempdir()?;
        let fd = group(dir.path())?.fd;
        let sync = GroupSync::with_syncfs(fd, |_| {
            if FAIL.load(Ordering::SeqCst) {
                Err(rustix::io::Errno::IO)
            } else {
                Ok(())
            }
        });
        let error = sync
            .sync()
            .expect_err("the failed syncfs must fail its caller");
        assert_eq!(
            error.raw_os_error(),
            Some(rustix::io::Errno::IO.raw_os_error())
        );
        FAIL.store(false, Ordering::SeqCst);
        sync.sync()?;
        Ok(())
    }

    #[test]
    fn a_lone_caller_runs_one_syncfs() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let sync = group(dir.path())?;
        sync.sync()?;
        sync.sync()?;
        assert_eq!(sync.generations(), 2);
        Ok(())
    }

    /// Callers arriving together share syncfs calls: 16 threads, each syncing 20
    /// times, need fewer than the 320 calls one-per-caller would make, and each
    /// call returns only after a syncfs that began after it was made.
    #[test]
    fn concurrent_callers_share_a_syncfs() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let sync = Arc::new(group(dir.path())?);
        let start = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (sync, start) = (sync.clone(), start.clone());
                std::thread::spawn(move || -> io::Result<()> {
                    start.wait();
                    for _ in 0..20 {
                        let before = sync.lock().started;
                        sync.sync()?;
                        let state = sync.lock();
                        assert!(
                            state.ended > before,
                            "returned before a syncfs that started after the call"
                        );
                    }
                    Ok(())
                })
            })
            .collect();
        for thread in threads {
            thread
                .join()
                .map_err(|_| io::Error::other("a syncing thread panicked"))??;
        }
        assert!(
            sync.generations() < 320,
            "{} syncfs calls",
            sync.generations()
        );
        Ok(())
    }
}
