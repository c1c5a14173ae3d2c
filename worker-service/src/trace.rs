//! Trace folders: the record of one attempt of one task, complete on disk before
//! the outcome is reported. `$JCT_TRACE_ROOT/<task_id>/` holds the first attempt;
//! a retry writes `$JCT_TRACE_ROOT/<task_id>/attempt-<n>/`. Paths are built only
//! from the server-made task id (a parsed UUID) and the attempt number.
//!
//! Writes are synchronous (std::fs): callers run them on blocking threads.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Value as Json, json};
use uuid::Uuid;

pub const TASK_FILE: &str = "task.json";
pub const EVENTS_FILE: &str = "events.jsonl";
pub const STDOUT_FILE: &str = "stdout.log";
pub const STDERR_FILE: &str = "stderr.log";
pub const RESULT_FILE: &str = "result.json";
pub const ERROR_FILE: &str = "error.json";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const DIFF_FILE: &str = "diff.patch";

pub struct TraceFolder {
    dir: PathBuf,
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
    /// under `root`, which the worker canonicalized once at start (so `uri` is an
    /// absolute path without resolving it again per task).
    pub fn create(root: &Path, task_id: Uuid, attempt: i32) -> io::Result<TraceFolder> {
        let dir = root.join(Self::relative_dir(task_id, attempt));
        fs::create_dir_all(&dir)?;
        let events = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(EVENTS_FILE))?;
        Ok(TraceFolder { dir, events })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `file://` URI of the folder, for `Task.trace_uri`.
    pub fn uri(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
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
        fs::write(self.path(name), bytes)
    }

    pub fn write_text(&self, name: &str, text: &str) -> io::Result<()> {
        fs::write(self.path(name), text)
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> io::Result<()> {
        self.events.sync_data()
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn events_are_json_lines_with_timestamps() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let mut trace = TraceFolder::create(&root.path().canonicalize()?, Uuid::now_v7(), 1)?;
        trace.event("assigned", json!({"attempt": 1}))?;
        trace.event("started", json!({}))?;
        let text = fs::read_to_string(trace.path(EVENTS_FILE))?;
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
}
