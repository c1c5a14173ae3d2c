//! The program's pipes: the task in on stdin, stdout and stderr out into files
//! of the trace, each capped at the operator's limit and drained past it (so a
//! flood never blocks the program), with the start and end of stderr kept for
//! the error message.

use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::process::ChildStdin;

/// How much of the end of stderr is kept for the error message.
pub const STDERR_TAIL_BYTES: usize = 4096;
/// How much of the start of stderr is kept (bubblewrap's own errors come first).
const HEAD_BYTES: usize = 512;

/// Writes the task to the program's stdin and closes it. A program that does not
/// read its stdin is fine (the write fails with EPIPE once it exits).
pub async fn feed(stdin: Option<ChildStdin>, input: Vec<u8>) {
    let Some(mut stdin) = stdin else { return };
    if stdin.write_all(&input).await.is_ok() {
        let _ = stdin.shutdown().await;
    }
}

/// Copies a pipe into `file` up to the capture's limit and drains (and counts) the
/// rest, so the program never blocks on a full pipe.
pub async fn drain(
    pipe: Option<impl AsyncRead + Unpin>,
    mut file: tokio::fs::File,
    cap: &mut Capture,
) {
    use tokio::io::AsyncReadExt;
    if let Some(mut pipe) = pipe {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match pipe.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the program's output failed");
                    break;
                }
            };
            let chunk = &buf[..n];
            let keep = cap.accept(chunk);
            if keep > 0
                && !cap.write_failed
                && let Err(e) = file.write_all(&chunk[..keep]).await
            {
                tracing::warn!(error = %e, "writing the program's output failed");
                cap.write_failed = true;
                cap.truncated = true;
            }
        }
    }
    if let Err(e) = file.flush().await {
        tracing::warn!(error = %e, "writing the program's output failed");
        cap.truncated = true;
    }
}

/// Accounting for one output stream.
#[derive(Debug)]
pub struct Capture {
    limit: u64,
    kept: u64,
    pub seen: u64,
    pub truncated: bool,
    pub write_failed: bool,
    /// The first HEAD_BYTES of the stream.
    head: Vec<u8>,
    /// The end of the stream (for stderr), at most 2 × STDERR_TAIL_BYTES.
    tail: Option<Vec<u8>>,
}

impl Capture {
    pub fn new(limit: u64, tail: bool) -> Self {
        Self {
            limit,
            kept: 0,
            seen: 0,
            truncated: false,
            write_failed: false,
            head: Vec::new(),
            tail: tail.then(Vec::new),
        }
    }

    /// Counts `chunk` and returns how many of its first bytes to keep.
    pub fn accept(&mut self, chunk: &[u8]) -> usize {
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        self.seen = self.seen.saturating_add(len);
        if self.head.len() < HEAD_BYTES {
            let take = chunk.len().min(HEAD_BYTES - self.head.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        let room = self.limit.saturating_sub(self.kept);
        let keep = len.min(room);
        self.kept += keep;
        if keep < len {
            self.truncated = true;
        }
        if let Some(tail) = &mut self.tail {
            let start = chunk.len().saturating_sub(STDERR_TAIL_BYTES);
            tail.extend_from_slice(&chunk[start..]);
            if tail.len() > 2 * STDERR_TAIL_BYTES {
                tail.drain(..tail.len() - STDERR_TAIL_BYTES);
            }
        }
        usize::try_from(keep).unwrap_or(chunk.len())
    }

    /// The first bytes of the stream (lossy UTF-8).
    pub fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// The last STDERR_TAIL_BYTES of the stream, as (lossy) UTF-8 that does not start
    /// in the middle of a character.
    pub fn tail_text(&self) -> String {
        let Some(tail) = &self.tail else {
            return String::new();
        };
        let mut tail = &tail[tail.len().saturating_sub(STDERR_TAIL_BYTES)..];
        let cut = self.seen > u64::try_from(tail.len()).unwrap_or(u64::MAX);
        if cut {
            let partial = tail
                .iter()
                .take(3)
                .take_while(|b| *b & 0xC0 == 0x80)
                .count();
            tail = &tail[partial..];
        }
        String::from_utf8_lossy(tail).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_does_not_start_mid_character() {
        let mut cap = Capture::new(0, true);
        let mut text = "é".repeat(STDERR_TAIL_BYTES);
        text.push('!');
        cap.accept(text.as_bytes());
        let tail = cap.tail_text();
        assert!(!tail.contains('\u{FFFD}'));
        assert!(tail.ends_with("é!"));
        assert!(cap.truncated);
        assert_eq!(cap.seen, text.len() as u64);
    }
}
