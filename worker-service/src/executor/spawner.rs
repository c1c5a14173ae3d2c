//! Every program process is forked by one thread that lives as long as the
//! worker.
//!
//! The parent-death signal that takes a sandbox down with a SIGKILLed worker
//! (`PR_SET_PDEATHSIG`, set in the child before exec) fires when the *thread*
//! that forked the child exits, not only the process. A fork from whatever
//! thread polls the task — a blocking-pool thread that exits when idle, a
//! thread left by `block_in_place`, a test's short-lived runtime — would kill
//! a healthy program at a random moment. This thread never returns (its
//! channel's sender is a static), so the signal fires only with the worker.

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::runtime::Handle;

/// A spawn request: the command, the runtime its child is registered with
/// (for reaping), and where the child goes back.
type Job = (Command, Handle, mpsc::SyncSender<io::Result<Child>>);

/// Spawns `cmd` from the spawner thread. Blocks the caller for as long as the
/// fork and exec take (as `Command::spawn` would).
pub fn spawn(cmd: Command) -> io::Result<Child> {
    let handle = Handle::try_current().map_err(io::Error::other)?;
    let (reply, answer) = mpsc::sync_channel(1);
    spawner()?
        .send((cmd, handle, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

fn spawner() -> io::Result<&'static mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Result<mpsc::Sender<Job>, String>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (jobs, queue) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("jct-spawner".into())
                .spawn(move || {
                    // ends only if every sender is dropped: never (the static)
                    for (mut cmd, handle, reply) in queue {
                        let _runtime = handle.enter();
                        let _ = reply.send(cmd.spawn());
                    }
                })
                .map(|_| jobs)
                .map_err(|e| format!("cannot start the spawner thread: {e}"))
        })
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))
}
