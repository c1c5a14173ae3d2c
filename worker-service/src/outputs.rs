//! The program's outputs folder: the files it leaves in `<workspace>/.jct-outputs/`
//! for the record are copied by the worker into the trace's `outputs/` once the
//! program's processes are dead — regular files only, opened without following
//! links (a link to a host file is skipped, never read), one level deep, the
//! total capped at the output limit with each cut recorded.
//!
//! Synchronous: callers run it on a blocking thread.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use serde::Serialize;

use crate::trace::OutputsDir;

/// The folder in the workspace (hidden, so that it rarely clashes with a
/// repository's own files; the diff leaves it out).
pub const WORKSPACE_DIR: &str = ".jct-outputs";
/// At most this many files are copied.
const MAX_FILES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copied {
    pub name: String,
    pub bytes: u64,
    pub truncated: bool,
}

/// What the manifest says about the outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutputsRecord {
    pub files: Vec<Copied>,
    /// Entries not copied, with why (a link, a directory, a FIFO, a bad name, …).
    pub skipped: Vec<String>,
}

/// Copies `<workspace>/.jct-outputs/*` into the trace, `limit` bytes in all.
pub fn copy(workspace: &Path, trace: &OutputsDir, limit: u64) -> io::Result<OutputsRecord> {
    let mut record = OutputsRecord::default();
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let workspace = rustix::fs::openat(rustix::fs::CWD, workspace, dir_flags, Mode::empty())?;
    let outputs = match rustix::fs::openat(&workspace, WORKSPACE_DIR, dir_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(record),
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
            record
                .skipped
                .push(format!("{WORKSPACE_DIR}: not a directory (not followed)"));
            return Ok(record);
        }
        Err(e) => return Err(e.into()),
    };
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&outputs)? {
        let entry = entry?;
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        let name = String::from_utf8_lossy(raw).into_owned();
        match name_problem(raw) {
            Some(why) => record
                .skipped
                .push(format!("{}: {why}", jct::text::escape(&name))),
            None => names.push(name),
        }
    }
    names.sort();
    let mut room = limit;
    for (index, name) in names.into_iter().enumerate() {
        if index >= MAX_FILES {
            record
                .skipped
                .push(format!("{name}: more than {MAX_FILES} files"));
            continue;
        }
        let Some(source) = open_regular(&outputs, &name, &mut record.skipped)? else {
            continue;
        };
        let target = trace.create(&name)?;
        let copied = copy_capped(source, target, room)?;
        room = room.saturating_sub(copied.0);
        record.files.push(Copied {
            name,
            bytes: copied.0,
            truncated: copied.1,
        });
    }
    Ok(record)
}

/// Names kept: plain ASCII, no leading dot, no separators.
fn name_problem(name: &[u8]) -> Option<&'static str> {
    if name.len() > 128 {
        return Some("name longer than 128 bytes");
    }
    if name.first() == Some(&b'.') {
        return Some("hidden name");
    }
    if !name
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
    {
        return Some("only letters, digits, `.`, `_` and `-` are copied");
    }
    None
}

/// Opens `name` if it is a regular file (never through a link; O_NONBLOCK so a
/// FIFO cannot hold the worker); otherwise records why it was skipped.
fn open_regular(dir: &OwnedFd, name: &str, skipped: &mut Vec<String>) -> io::Result<Option<File>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => {
            skipped.push(format!("{name}: a link (not followed)"));
            return Ok(None);
        }
        Err(e) => {
            skipped.push(format!("{name}: {e}"));
            return Ok(None);
        }
    };
    let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
    if kind != FileType::RegularFile {
        skipped.push(format!("{name}: not a regular file"));
        return Ok(None);
    }
    Ok(Some(File::from(fd)))
}

/// Copies at most `room` bytes; returns (bytes kept, whether the file was longer).
fn copy_capped(mut source: File, mut target: File, room: u64) -> io::Result<(u64, bool)> {
    let mut kept = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = source.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let keep = usize::try_from(room.saturating_sub(kept)).map_or(n, |r| n.min(r));
        target.write_all(&buf[..keep])?;
        kept += keep as u64;
        if keep < n {
            return Ok((kept, true));
        }
    }
    target.sync_data()?;
    Ok((kept, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_copied_capped_and_links_skipped() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let ws = root.path().join("ws");
        let out = ws.join(WORKSPACE_DIR);
        std::fs::create_dir_all(&out)?;
        let secret = root.path().join("secret");
        std::fs::write(&secret, "host secret")?;
        std::fs::write(out.join("a.txt"), "hello")?;
        std::fs::write(out.join("b.txt"), "x".repeat(100))?;
        std::os::unix::fs::symlink(&secret, out.join("link.txt"))?;
        std::fs::create_dir(out.join("sub"))?;
        let trace = crate::trace::TraceFolder::create(
            &crate::trace::TraceRoot::open(&root.path().canonicalize()?.join("t"))?,
            uuid::Uuid::now_v7(),
            1,
        )?;
        let record = copy(&ws, &trace.outputs()?, 50)?;
        let names: Vec<&str> = record.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "b.txt"]);
        assert_eq!(
            (record.files[1].bytes, record.files[1].truncated),
            (45, true)
        );
        assert_eq!(record.skipped.len(), 2, "{:?}", record.skipped);
        let copied = trace.dir().join("outputs");
        assert_eq!(std::fs::read_to_string(copied.join("a.txt"))?, "hello");
        assert!(!copied.join("link.txt").exists());
        Ok(())
    }
}
