//! `jct watch ID` (and `enqueue --wait`): follows a task over `WatchTask` until it
//! reaches a terminal state, and exits with that outcome. On a terminal the
//! status is one line redrawn in place; piped, every change is its own line
//! (`-o json`: one task object a line).
//!
//! A dropped stream is reopened: the first message of a watch is always the task
//! as it is now, so nothing that matters is missed.

use std::time::Duration;

use jct::v1 as pb;

use super::client::Connection;
use super::error::CliError;
use super::output::Out;
use super::{exit, json, render};

/// Reopenings tried, one after another without a message in between, before
/// giving up (about half a minute in all).
const MAX_REOPENS: u32 = 8;

pub async fn watch(connection: &Connection, out: &Out, id: String) -> Result<u8, CliError> {
    follow(connection, out, id).await
}

pub async fn follow(connection: &Connection, out: &Out, id: String) -> Result<u8, CliError> {
    let live = out.is_terminal();
    let mut client = connection.tasks();
    let mut failures = 0u32;
    let mut last: Option<pb::Task> = None;
    loop {
        let opened = client
            .watch_task(pb::WatchTaskRequest {
                task_id: id.clone(),
            })
            .await;
        let mut stream = match opened {
            Ok(response) => response.into_inner(),
            Err(status) if retryable(&status) && failures < MAX_REOPENS => {
                failures += 1;
                backoff(failures).await;
                continue;
            }
            Err(status) => return Err(ended(live, out, CliError::rpc("watch")(status))),
        };
        loop {
            match stream.message().await {
                Ok(Some(task)) => {
                    failures = 0;
                    show(out, live, &task)?;
                    if let Some(code) = exit::for_task_status(&task.status) {
                        if live {
                            out.raw("\n")?;
                        }
                        return Ok(code);
                    }
                    last = Some(task);
                }
                // the intake closed the stream before the end (it is draining):
                // reopen, the first message says where the task is now
                Ok(None) => break,
                Err(status) if retryable(&status) => break,
                Err(status) => return Err(ended(live, out, CliError::rpc("watch")(status))),
            }
        }
        if failures >= MAX_REOPENS {
            let state = last
                .as_ref()
                .map_or_else(|| "unknown".to_string(), |t| render::cell(&t.status));
            return Err(ended(
                live,
                out,
                CliError::Interrupted(format!(
                    "lost the watch of {} (last seen {state}); it may still be running: \
                     `jct watch {}` again",
                    render::cell(&id),
                    render::cell(&id)
                )),
            ));
        }
        failures += 1;
        backoff(failures).await;
    }
}

fn show(out: &Out, live: bool, task: &pb::Task) -> Result<(), CliError> {
    if out.is_json() {
        out.json(&json::task(task))
    } else if live {
        if exit::for_task_status(&task.status).is_some() {
            // the last redraw, with the outcome: it may wrap, nothing redraws over it
            out.redraw(&render::watch_line(task))
        } else {
            // a line wider than the terminal wraps, and the next redraw would
            // only erase its last row
            out.redraw(&render::truncate(&render::live_line(task), live_width()))
        }
    } else {
        out.raw(&format!("{}\n", render::watch_line(task)))
    }
}

/// Ends the live line before an error is printed below it.
fn ended(live: bool, out: &Out, error: CliError) -> CliError {
    if live {
        let _ = out.raw("\n");
    }
    error
}

/// Columns a live line may take: the shell's COLUMNS when exported, else 100.
fn live_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 20)
        .map_or(100, |c| c - 1)
}

fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

async fn backoff(failures: u32) {
    let millis = 250u64.saturating_mul(1 << failures.min(4)).min(5_000);
    tokio::time::sleep(Duration::from_millis(millis)).await;
}
