//! Text for people (`-o text`). Everything a task or the intake says is escaped
//! with `jct::text::escape` first: a task's objective must not be able to drive
//! the operator's terminal.

use std::time::{Duration, SystemTime};

use jct::structs::struct_to_json;
use jct::v1 as pb;

use super::json::system_time;

/// Longest objective shown in a table row, in characters.
const OBJECTIVE_WIDTH: usize = 48;

/// One line of safe text: escaped, line breaks and tabs as spaces.
pub fn cell(text: &str) -> String {
    jct::text::escape(text).replace(['\n', '\t'], " ")
}

/// At most `width` characters, cut with `…`.
pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Columns padded to their widest cell (the last column is not padded), two
/// spaces apart, one row a line.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(value.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, value) in cells.into_iter().enumerate() {
            out.push_str(value);
            if i < last {
                let pad = widths[i] - value.chars().count() + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `3s`, `4m 05s`, `2h 10m`, `3d 4h`: a duration at a glance.
pub fn age(duration: Duration) -> String {
    let s = duration.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

fn ago(at: Option<&prost_types::Timestamp>, now: SystemTime) -> String {
    match system_time(at) {
        Some(at) => format!("{} ago", age(now.duration_since(at).unwrap_or_default())),
        None => "-".to_string(),
    }
}

fn timestamp(at: Option<&prost_types::Timestamp>) -> String {
    system_time(at).map_or_else(
        || "-".to_string(),
        |at| humantime::format_rfc3339_seconds(at).to_string(),
    )
}

fn requester(task: &pb::Task) -> String {
    task.requested_by
        .as_ref()
        .map_or_else(String::new, |r| cell(&format!("{}:{}", r.kind, r.id)))
}

fn repo(task: &pb::Task) -> String {
    task.target
        .as_ref()
        .map_or_else(String::new, |t| cell(&t.repo))
}

/// The `jct list` table.
pub fn task_table(tasks: &[pb::Task], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|task| {
            vec![
                cell(&task.id),
                cell(&task.status),
                cell(&task.operation),
                repo(task),
                requester(task),
                ago(task.created_at.as_ref(), now),
                truncate(&cell(&task.objective), OBJECTIVE_WIDTH),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATUS",
            "OPERATION",
            "REPO",
            "REQUESTED BY",
            "CREATED",
            "OBJECTIVE",
        ],
        &rows,
    )
}

/// `jct get`: one task, a field a line.
pub fn task_detail(task: &pb::Task) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        ("id", cell(&task.id)),
        ("status", cell(&task.status)),
        ("operation", cell(&task.operation)),
        ("objective", cell(&task.objective)),
    ];
    if let Some(target) = &task.target {
        let mut text = format!("{} @ {}", cell(&target.repo), cell(&target.r#ref));
        if !target.path.is_empty() {
            text.push_str(&format!(" ({})", cell(&target.path)));
        }
        lines.push(("target", text));
    }
    let mut by = requester(task);
    if let Some(label) = task.requested_by.as_ref().and_then(|r| r.label.as_ref()) {
        by.push_str(&format!(" ({})", cell(label)));
    }
    lines.push(("requested by", by));
    if !task.submitted_by.is_empty() {
        lines.push(("submitted by", cell(&task.submitted_by)));
    }
    if let Some(key) = &task.idempotency_key {
        lines.push(("idempotency key", cell(key)));
    }
    if let Some(c) = &task.constraints {
        lines.push((
            "constraints",
            format!(
                "budget {}s, network {}, secrets {}",
                c.time_budget_seconds.unwrap_or_default(),
                yes_no(c.allow_network),
                yes_no(c.allow_secrets)
            ),
        ));
    }
    for (name, value) in [("inputs", &task.inputs), ("metadata", &task.metadata)] {
        if let Some(text) = value.as_ref().and_then(compact_struct) {
            lines.push((name, text));
        }
    }
    lines.push(("created", timestamp(task.created_at.as_ref())));
    for (name, at) in [
        ("started", &task.started_at),
        ("completed", &task.completed_at),
    ] {
        if at.is_some() {
            lines.push((name, timestamp(at.as_ref())));
        }
    }
    lines.push((
        "attempt",
        if task.max_attempts > 0 {
            format!("{} of {}", task.attempt, task.max_attempts)
        } else {
            task.attempt.to_string()
        },
    ));
    if !task.worker_id.is_empty() {
        lines.push(("worker", cell(&task.worker_id)));
    }
    if !task.trace_uri.is_empty() {
        lines.push(("trace", cell(&task.trace_uri)));
    }
    // the id to search a tracing backend for
    if let Some(context) = jct::traceparent::Traceparent::parse(&task.traceparent) {
        lines.push(("trace id", context.trace_id_hex()));
    }
    if let Some(text) = task.result.as_ref().and_then(compact_struct) {
        lines.push(("result", text));
    }
    if let Some(error) = &task.error {
        lines.push((
            "error",
            format!("{}: {}", cell(&error.code), cell(&error.message)),
        ));
    }
    let width = lines.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    lines
        .into_iter()
        .map(|(name, value)| format!("{name:<width$}  {value}\n"))
        .collect()
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// A non-empty Struct as compact JSON on one safe line.
fn compact_struct(value: &prost_types::Struct) -> Option<String> {
    if value.fields.is_empty() {
        return None;
    }
    let json = struct_to_json(value).ok()?;
    Some(cell(&serde_json::Value::Object(json).to_string()))
}

/// One line of `jct watch`: when, id, status, attempt, worker, outcome.
pub fn watch_line(task: &pb::Task) -> String {
    let at = task.updated_at.as_ref().or(task.created_at.as_ref());
    let mut line = format!(
        "{}  {}  {}",
        timestamp(at),
        cell(&task.id),
        cell(&task.status)
    );
    if task.attempt > 0 {
        line.push_str(&format!("  attempt {}", task.attempt));
    }
    if !task.worker_id.is_empty() {
        line.push_str(&format!("  on {}", cell(&task.worker_id)));
    }
    if let Some(error) = &task.error {
        line.push_str(&format!(
            "  {}: {}",
            cell(&error.code),
            truncate(&cell(&error.message), 120)
        ));
    } else if let Some(summary) = task
        .result
        .as_ref()
        .and_then(|r| r.fields.get("summary"))
        .and_then(|v| match &v.kind {
            Some(prost_types::value::Kind::StringValue(s)) => Some(s),
            _ => None,
        })
    {
        line.push_str(&format!("  {}", truncate(&cell(summary), 120)));
    }
    line
}

/// The live line of `jct watch` on a terminal: the status first (what the eye
/// looks for), then the id, attempt and worker; no timestamp, the line is now.
pub fn live_line(task: &pb::Task) -> String {
    let mut line = format!("{}  {}", cell(&task.status), cell(&task.id));
    if task.attempt > 0 {
        line.push_str(&format!("  attempt {}", task.attempt));
    }
    if !task.worker_id.is_empty() {
        line.push_str(&format!("  on {}", cell(&task.worker_id)));
    }
    line
}

/// `jct status`.
pub fn system_status(
    version: &pb::GetVersionResponse,
    status: &pb::GetSystemStatusResponse,
    oldest_queued: Option<Duration>,
) -> String {
    let mut out = format!(
        "intake    {} {} (api {}), up {}\n",
        cell(&version.service),
        cell(&version.version),
        cell(&version.api_version),
        age(Duration::from_secs(
            u64::try_from(status.uptime_seconds).unwrap_or(0)
        )),
    );
    out.push_str(&format!(
        "database  {} ({})\n",
        cell(&status.database_backend),
        if status.database_reachable {
            "reachable"
        } else {
            "UNREACHABLE"
        }
    ));
    const ORDER: [&str; 6] = [
        "pending",
        "queued",
        "running",
        "completed",
        "failed",
        "cancelled",
    ];
    let mut counts: Vec<String> = ORDER
        .iter()
        .map(|s| format!("{s} {}", status.task_counts.get(*s).copied().unwrap_or(0)))
        .collect();
    let mut others: Vec<_> = status
        .task_counts
        .iter()
        .filter(|(s, _)| !ORDER.contains(&s.as_str()))
        .collect();
    others.sort();
    counts.extend(others.into_iter().map(|(s, n)| format!("{} {n}", cell(s))));
    out.push_str(&format!("tasks     {}\n", counts.join(", ")));
    let queued = status.task_counts.get("queued").copied().unwrap_or(0);
    out.push_str(&format!(
        "oldest queued  {}\n",
        match oldest_queued {
            Some(age_of) => age(age_of),
            None if queued == 0 => "none queued".to_string(),
            // queued tasks but no timestamp: the database did not answer
            None => "unknown (the intake could not read it)".to_string(),
        }
    ));
    let capacity: u32 = status.workers.iter().map(|w| w.capacity).sum();
    let in_flight: u32 = status.workers.iter().map(|w| w.in_flight).sum();
    out.push_str(&format!(
        "workers   {} connected, {in_flight} of {capacity} slots in use\n",
        status.workers.len()
    ));
    if !status.workers.is_empty() {
        let rows: Vec<Vec<String>> = status
            .workers
            .iter()
            .map(|w| {
                vec![
                    cell(&w.worker_id),
                    cell(&w.executor),
                    format!("{}/{}", w.in_flight, w.capacity),
                    cell(&w.version),
                    if w.draining { "draining" } else { "ready" }.to_string(),
                ]
            })
            .collect();
        for line in table(&["WORKER", "EXECUTOR", "LOAD", "VERSION", "STATE"], &rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, objective: &str) -> pb::Task {
        pb::Task {
            id: id.into(),
            status: "queued".into(),
            operation: "docs".into(),
            objective: objective.into(),
            target: Some(pb::Target {
                repo: "myorg/service".into(),
                ..Default::default()
            }),
            requested_by: Some(pb::RequestedBy {
                kind: "human".into(),
                id: "alice".into(),
                label: None,
            }),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_000,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_table_aligns_columns_and_cuts_long_objectives() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_125);
        let long = "x".repeat(80);
        let out = task_table(&[task("a", "Short one"), task("bbbb", &long)], now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "ID    STATUS  OPERATION  REPO           REQUESTED BY  CREATED     OBJECTIVE"
        );
        assert_eq!(
            lines[1],
            "a     queued  docs       myorg/service  human:alice   2m 05s ago  Short one"
        );
        let cut = format!("{}…", "x".repeat(OBJECTIVE_WIDTH - 1));
        assert!(lines[2].ends_with(&cut), "{}", lines[2]);
        assert_eq!(
            lines[2].chars().count(),
            lines[1].chars().count() - 9 + OBJECTIVE_WIDTH
        );
    }

    #[test]
    fn terminal_controls_in_task_text_are_escaped() {
        let now = SystemTime::UNIX_EPOCH;
        let out = task_table(&[task("a", "hi\u{1b}]8;;https://evil\u{7}x\nnext")], now);
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
        assert!(
            out.contains("hi\\u{001b}]8;;https://evil\\u{0007}x next"),
            "{out}"
        );
        let detail = task_detail(&task("a", "\u{202e}evil"));
        assert!(!detail.contains('\u{202e}'), "{detail:?}");
    }

    #[test]
    fn empty_tables_still_have_headers() {
        assert_eq!(table(&["A", "BB"], &[]), "A  BB\n");
        assert_eq!(
            table(&["A", "BB"], &[vec!["long".into(), "x".into()]]),
            "A     BB\nlong  x\n"
        );
    }

    #[test]
    fn the_live_line_leads_with_the_status() {
        let mut t = task("t1", "x");
        t.status = "running".into();
        t.attempt = 2;
        t.worker_id = "w\u{1b}1".into();
        assert_eq!(live_line(&t), "running  t1  attempt 2  on w\\u{001b}1");
    }

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(Duration::from_secs(7)), "7s");
        assert_eq!(age(Duration::from_secs(125)), "2m 05s");
        assert_eq!(age(Duration::from_secs(7_800)), "2h 10m");
        assert_eq!(age(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d 4h");
    }

    #[test]
    fn status_shows_counts_in_lifecycle_order_and_worker_load() {
        let version = pb::GetVersionResponse {
            version: "0.1.0".into(),
            api_version: "v1".into(),
            service: "intake-service".into(),
        };
        // fields the intake adds later must leave this test as it is
        #[allow(clippy::needless_update)]
        let status = pb::GetSystemStatusResponse {
            database_backend: "sqlite".into(),
            database_reachable: true,
            task_counts: [("queued".to_string(), 2), ("completed".to_string(), 5)].into(),
            workers: vec![pb::ConnectedWorker {
                worker_id: "w1".into(),
                capacity: 4,
                in_flight: 1,
                executor: "record".into(),
                version: "0.1.0".into(),
                draining: false,
            }],
            uptime_seconds: 65,
            version: "0.1.0".into(),
            ..Default::default()
        };
        let out = system_status(&version, &status, Some(Duration::from_secs(3)));
        assert!(out.contains(
            "tasks     pending 0, queued 2, running 0, completed 5, failed 0, cancelled 0\n"
        ));
        assert!(out.contains("oldest queued  3s\n"), "{out}");
        assert!(out.contains("workers   1 connected, 1 of 4 slots in use\n"));
        assert!(
            out.contains("  w1      record    1/4   0.1.0    ready\n"),
            "{out}"
        );
    }
}
