//! `jct trace ID`: the manifest and events of a task's trace folder when its
//! `trace_uri` (`file://…`, written by the worker) is reachable from this
//! machine; otherwise where it lives. Nothing from the folder reaches the
//! terminal unescaped: a task program's output is hostile text.

use std::io::Read;
use std::path::{Path, PathBuf};

use jct::v1 as pb;
use serde_json::{Value as Json, json};

use super::client::Connection;
use super::error::CliError;
use super::output::Out;
use super::{exit, render};

const MANIFEST: &str = "manifest.json";
const EVENTS: &str = "events.jsonl";
/// Most bytes read of one trace file (the worker bounds what programs write, not
/// the operator's terminal).
const MAX_READ_BYTES: u64 = 4 << 20;

pub async fn trace(connection: &Connection, out: &Out, id: String) -> Result<u8, CliError> {
    let task = connection
        .tasks()
        .get_task(pb::GetTaskRequest { task_id: id })
        .await
        .map_err(CliError::rpc("trace"))?
        .into_inner();
    let folder = Folder::of(&task);
    if out.is_json() {
        out.json(&folder.to_json(&task))?;
    } else {
        out.raw(&folder.to_text(&task))?;
    }
    Ok(exit::SUCCESS)
}

/// What could be read of the trace folder from here.
enum Folder {
    /// The task has no trace yet.
    None,
    /// The URI is not a local path, or the path is not here.
    Elsewhere { why: String },
    /// Read: the manifest (if written yet) and the events.
    Here {
        path: PathBuf,
        manifest: Option<Json>,
        events: Vec<Json>,
        files: Vec<String>,
    },
}

impl Folder {
    fn of(task: &pb::Task) -> Folder {
        if task.trace_uri.is_empty() {
            return Folder::None;
        }
        let Some(path) = task.trace_uri.strip_prefix("file://").map(PathBuf::from) else {
            return Folder::Elsewhere {
                why: "it is not a file:// folder".into(),
            };
        };
        if !path.is_absolute() {
            return Folder::Elsewhere {
                why: "its path is relative to the worker's directory".into(),
            };
        }
        let files = match std::fs::read_dir(&path) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                names
            }
            Err(error) => {
                return Folder::Elsewhere {
                    why: format!("it cannot be read from here ({})", error.kind()),
                };
            }
        };
        let manifest = read_capped(&path.join(MANIFEST))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok());
        let events = read_capped(&path.join(EVENTS))
            .map(|text| {
                text.lines()
                    .filter(|line| !line.trim().is_empty())
                    .map(|line| {
                        serde_json::from_str(line).unwrap_or_else(|_| json!({ "unparsed": line }))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Folder::Here {
            path,
            manifest,
            events,
            files,
        }
    }

    fn to_json(&self, task: &pb::Task) -> Json {
        let mut value = json!({
            "task_id": task.id,
            "status": task.status,
            "trace_uri": task.trace_uri,
            "worker_id": task.worker_id,
            "reachable": matches!(self, Folder::Here { .. }),
            "path": Json::Null,
            "files": [],
            "manifest": Json::Null,
            "events": [],
        });
        if let Folder::Here {
            path,
            manifest,
            events,
            files,
        } = self
        {
            value["path"] = Json::from(path.display().to_string());
            value["files"] = json!(files);
            value["manifest"] = manifest.clone().unwrap_or(Json::Null);
            value["events"] = Json::Array(events.clone());
        }
        value
    }

    fn to_text(&self, task: &pb::Task) -> String {
        let id = render::cell(&task.id);
        let uri = render::cell(&task.trace_uri);
        match self {
            Folder::None => format!(
                "{id} has no trace yet (status {}): the worker writes one when it runs the task\n",
                render::cell(&task.status)
            ),
            Folder::Elsewhere { why } => {
                let host = if task.worker_id.is_empty() {
                    "the worker's machine".to_string()
                } else {
                    format!("worker {}", render::cell(&task.worker_id))
                };
                format!("the trace of {id} lives at {uri} on {host}; {why}\n")
            }
            Folder::Here {
                path,
                manifest,
                events,
                files,
            } => {
                let mut text = format!(
                    "trace of {id} ({}): {}\nfiles: {}\n",
                    render::cell(&task.status),
                    render::cell(&path.display().to_string()),
                    render::cell(&files.join(", "))
                );
                text.push_str("\nmanifest:\n");
                match manifest {
                    Some(manifest) => {
                        let pretty = serde_json::to_string_pretty(manifest).unwrap_or_default();
                        for line in pretty.lines() {
                            text.push_str(&format!("  {}\n", render::cell(line)));
                        }
                    }
                    None => text.push_str("  (not written yet)\n"),
                }
                text.push_str("\nevents:\n");
                for event in events {
                    text.push_str(&format!("  {}\n", event_line(event)));
                }
                text
            }
        }
    }
}

/// `ts  event  {other fields}` on one safe line.
fn event_line(event: &Json) -> String {
    let mut rest = event.as_object().cloned().unwrap_or_default();
    let ts = rest.remove("ts");
    let kind = rest.remove("event");
    let text = |v: Option<Json>| match v {
        Some(Json::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let mut line = format!("{}  {}", text(ts), text(kind));
    if !rest.is_empty() {
        line.push_str(&format!("  {}", Json::Object(rest)));
    }
    render::cell(&line)
}

fn read_capped(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_READ_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_escaped_line() {
        let event = json!({"ts": "2026-12-03T10:00:00Z", "event": "exited", "code": 1, "note": "a\u{1b}[2Jb"});
        let line = event_line(&event);
        assert!(
            line.starts_with("2026-12-03T10:00:00Z  exited  {"),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "{line:?}");
    }

    #[test]
    fn a_trace_elsewhere_says_where() {
        let task = pb::Task {
            id: "t".into(),
            trace_uri: "file:///nonexistent-jct-trace/t".into(),
            worker_id: "w9".into(),
            ..Default::default()
        };
        let text = Folder::of(&task).to_text(&task);
        assert!(
            text.starts_with(
                "the trace of t lives at file:///nonexistent-jct-trace/t on worker w9"
            ),
            "{text}"
        );
        let no_trace = pb::Task::default();
        assert!(matches!(Folder::of(&no_trace), Folder::None));
    }
}
