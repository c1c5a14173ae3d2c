//! Trace folders: the record of one attempt of one task, complete on disk before
//! the outcome is reported. `$JCT_TRACE_ROOT/<task_id>/` holds the first attempt;
//! a retry writes `$JCT_TRACE_ROOT/<task_id>/attempt-<n>/`. Paths are built only
//! from the server-made task id (a parsed UUID) and the attempt number.
//!
//! The folder is written by the worker alone: directories are 0700, every file
//! is created 0600 through the folder's descriptor with O_NOFOLLOW | O_EXCL
//! (whatever was at the name is unlinked first, never followed), and the manifest
//! is sealed with the SHA-256 of each artifact once the program's processes are
//! proven dead.
//!
//! Writes are synchronous: callers run them on blocking threads.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustix::fs::{AtFlags, Mode, OFlags};
use serde::Serialize;
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::trace_sync::GroupSync;

pub const TASK_FILE: &str = "task.json";
pub const EVENTS_FILE: &str = "events.jsonl";
pub const STDOUT_FILE: &str = "stdout.log";
pub const STDERR_FILE: &str = "stderr.log";
pub const RESULT_FILE: &str = "result.json";
pub const ERROR_FILE: &str = "error.json";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const DIFF_FILE: &str = "diff.patch";
/// The program's outputs, copied by the worker (see `crate::outputs`).
pub const OUTPUTS_DIR: &str = "outputs";

/// The files whose digests the manifest holds (events.jsonl goes on after it).
const SEALED: &[&str] = &[
    TASK_FILE,
    STDOUT_FILE,
    STDERR_FILE,
    DIFF_FILE,
    RESULT_FILE,
    ERROR_FILE,
];

/// The trace root, opened once: every folder is made under its descriptor, and
/// folders are made durable together ([`GroupSync`]).
pub struct TraceRoot {
    path: PathBuf,
    fd: OwnedFd,
    durable: GroupSync,
}

impl TraceRoot {
    /// Opens (making it if needed) the trace root; `path` must be canonical, so a
    /// folder's `uri` is an absolute path without resolving it again per task.
    pub fn open(path: &Path) -> io::Result<Arc<TraceRoot>> {
        fs::create_dir_all(path)?;
        let fd = open_dir(rustix::fs::CWD, path)?;
        let durable = GroupSync::new(fd.try_clone()?);
        Ok(Arc::new(TraceRoot {
            path: path.to_path_buf(),
            fd,
            durable,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `syncfs` calls made so far.
    pub fn syncs(&self) -> u64 {
        self.durable.generations()
    }
}

pub struct TraceFolder {
    root: Arc<TraceRoot>,
    dir: PathBuf,
    fd: OwnedFd,
    events: File,
}

impl TraceFolder {
    /// The folder of an attempt, relative to the trace root.
    pub fn relative_dir(task_id: Uuid, attempt: i32) -> PathBuf {
        let task_dir = PathBuf::from(task_id.to_string());
        if attempt <= 1 {
            task_dir
        } else {
            task_dir.join(format!("attempt-{attempt}"))
        }
    }

    /// Creates (or, for a re-delivered attempt, reopens) the folder of an attempt
    /// under `root`.
    pub fn create(root: &Arc<TraceRoot>, task_id: Uuid, attempt: i32) -> io::Result<TraceFolder> {
        let mut fd = subdir(&root.fd, &task_id.to_string())?;
        if attempt > 1 {
            fd = subdir(&fd, &format!("attempt-{attempt}"))?;
        }
        let events = File::from(rustix::fs::openat(
            &fd,
            EVENTS_FILE,
            OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?);
        if !events.metadata()?.is_file() {
            return Err(io::Error::other("events.jsonl is not a regular file"));
        }
        Ok(TraceFolder {
            root: root.clone(),
            dir: root.path.join(Self::relative_dir(task_id, attempt)),
            fd,
            events,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `file://` URI of the folder, for `Task.trace_uri`.
    pub fn uri(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// Creates `name` afresh (0600): whatever was there is unlinked, never
    /// followed, and the new file is made with O_EXCL | O_NOFOLLOW.
    pub fn create_file(&self, name: &str) -> io::Result<File> {
        create_in(&self.fd, name)
    }

    /// The folder (0700) the program's outputs are copied into.
    pub fn outputs(&self) -> io::Result<OutputsDir> {
        Ok(OutputsDir {
            fd: subdir(&self.fd, OUTPUTS_DIR)?,
        })
    }

    /// Appends one event line: `{"ts": …, "event": kind, …fields}`.
    pub fn event(&mut self, kind: &str, fields: Json) -> io::Result<()> {
        self.event_at(now_rfc3339(), kind, fields)
    }

    /// Appends an event that happened at `ts` (e.g. an assignment received before
    /// its folder existed).
    pub fn event_at(&mut self, ts: String, kind: &str, fields: Json) -> io::Result<()> {
        let mut line = json!({ "ts": ts, "event": kind });
        if let (Some(line), Json::Object(fields)) = (line.as_object_mut(), fields) {
            line.extend(fields);
        }
        let mut bytes = serde_json::to_vec(&line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.events.write_all(&bytes)
    }

    pub fn write_json(&self, name: &str, value: &impl Serialize) -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.write_bytes(name, &bytes)
    }

    pub fn write_text(&self, name: &str, text: &str) -> io::Result<()> {
        self.write_bytes(name, text.as_bytes())
    }

    /// Written, not yet durable: [`TraceFolder::sync`] makes the folder durable
    /// as a whole before the outcome is reported.
    fn write_bytes(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut file = self.create_file(name)?;
        file.write_all(bytes)
    }

    /// Size and SHA-256 of every artifact present, read without following links:
    /// `{"stdout.log": {"bytes": N, "sha256": "…"}, …}`.
    pub fn digests(&self) -> io::Result<Json> {
        let mut artifacts = Map::new();
        for name in SEALED {
            if let Some(entry) = digest(&self.fd, name)? {
                artifacts.insert((*name).to_string(), entry);
            }
        }
        let outputs = match open_dir(&self.fd, Path::new(OUTPUTS_DIR)) {
            Ok(dir) => Some(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(dir) = outputs {
            let mut names = Vec::new();
            for entry in rustix::fs::Dir::read_from(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name != "." && name != ".." {
                    names.push(name);
                }
            }
            names.sort();
            for name in names {
                if let Some(entry) = digest(&dir, &name)? {
                    artifacts.insert(format!("{OUTPUTS_DIR}/{name}"), entry);
                }
            }
        }
        Ok(Json::Object(artifacts))
    }

    /// Makes everything written so far durable: the files, the events and the
    /// directory entries, shared with the other folders finishing now.
    pub fn sync(&self) -> io::Result<()> {
        self.root.durable.sync()
    }
}

/// The trace's `outputs/`, written by the worker alone.
pub struct OutputsDir {
    fd: OwnedFd,
}

impl OutputsDir {
    /// Creates `name` afresh (0600), as [`TraceFolder::create_file`] does.
    pub fn create(&self, name: &str) -> io::Result<File> {
        create_in(&self.fd, name)
    }
}

fn create_in(dir: &OwnedFd, name: &str) -> io::Result<File> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(File::from(fd))
}

/// Size and SHA-256 of the file `name` in `dir`, read without following links;
/// `None` when there is none.
fn digest(dir: &OwnedFd, name: &str) -> io::Result<Option<Json>> {
    let fd = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut file = File::from(fd);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Some(json!({ "bytes": bytes, "sha256": digest })))
}

fn open_dir(at: impl rustix::fd::AsFd, path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Makes (0700) or opens the directory `name` under `parent`, refusing a link,
/// and makes sure it is the worker's alone.
fn subdir(parent: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = open_dir(parent, Path::new(name))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))?;
    Ok(fd)
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn attempts_after_the_first_get_subfolders() {
        let id = Uuid::now_v7();
        assert_eq!(
            TraceFolder::relative_dir(id, 1),
            PathBuf::from(id.to_string())
        );
        assert_eq!(
            TraceFolder::relative_dir(id, 2),
            PathBuf::from(format!("{id}/attempt-2"))
        );
    }

    /// A folder's sync goes through its root's group sync (one `syncfs`), not
    /// a flush per file: writing files alone syncs nothing.
    #[test]
    fn a_folder_is_made_durable_through_the_roots_group_sync() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = TraceRoot::open(&dir.path().canonicalize()?)?;
        let mut trace = TraceFolder::create(&root, Uuid::now_v7(), 1)?;
        trace.write_json(RESULT_FILE, &json!({"ok": true}))?;
        trace.write_text(STDOUT_FILE, "out")?;
        trace.event("finished", json!({}))?;
        assert_eq!(root.syncs(), 0);
        trace.sync()?;
        assert_eq!(root.syncs(), 1);
        Ok(())
    }

    #[test]
    fn events_are_json_lines_with_timestamps() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let mut trace = TraceFolder::create(
            &TraceRoot::open(&root.path().canonicalize()?)?,
            Uuid::now_v7(),
            1,
        )?;
        trace.event("assigned", json!({"attempt": 1}))?;
        trace.event("started", json!({}))?;
        let text = fs::read_to_string(trace.dir().join(EVENTS_FILE))?;
        let lines: Vec<Json> = text
            .lines()
            .map(|l| serde_json::from_str(l).map_err(io::Error::other))
            .collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "assigned");
        assert_eq!(lines[0]["attempt"], 1);
        assert!(lines[1]["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')));
        assert!(trace.uri().starts_with("file:///"));
        Ok(())
    }

    #[test]
    fn files_are_private_and_links_are_replaced_not_followed() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let trace = TraceFolder::create(
            &TraceRoot::open(&root.path().canonicalize()?)?,
            Uuid::now_v7(),
            2,
        )?;
        let victim = root.path().join("victim");
        fs::write(&victim, "original")?;
        std::os::unix::fs::symlink(&victim, trace.dir().join(RESULT_FILE))?;
        trace.write_json(RESULT_FILE, &json!({"ok": true}))?;
        assert_eq!(fs::read_to_string(&victim)?, "original");
        let meta = fs::symlink_metadata(trace.dir().join(RESULT_FILE))?;
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir = fs::metadata(trace.dir())?;
        assert_eq!(dir.permissions().mode() & 0o777, 0o700);
        let digests = trace.digests()?;
        assert_eq!(digests[RESULT_FILE]["bytes"], 17);
        assert_eq!(
            digests[RESULT_FILE]["sha256"].as_str().map(str::len),
            Some(64)
        );
        Ok(())
    }
}
