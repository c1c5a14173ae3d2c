//! Sending a task's reports to the intake and acting on its answer.
//!
//! A report the intake could not take (database away, intake shutting down) is
//! sent again with capped backoff, but only for a bounded time and while the
//! lease is still this worker's: past that, the lease expires and the rescuer
//! decides, as for any lost worker. A report the intake refuses for what it
//! carries (an invalid field, a value the database refuses) fails the same way
//! however often it is sent, so the task is failed at once with
//! `REPORT_REFUSED`, naming the refused report and the reason but not its
//! content, instead of waiting for a lease expiry to call it `WORKER_LOST`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jct::reasons;
use jct::v1 as pb;
use jct::v1::ReportStatus;
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::runner::{StopReason, TaskControl};

/// How long a report the intake cannot take is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The first pause; each retry doubles it, up to `max_pause`.
    pub first_pause: Duration,
    pub max_pause: Duration,
    /// After this long the report is given up.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_pause: Duration::from_millis(500),
            max_pause: Duration::from_secs(10),
            // long enough for a database failover or an intake restart; past it
            // the worker stops renewing the lease and the rescuer takes over
            deadline: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (0-based), jittered to 50-100 %.
    fn pause(&self, retry: u32) -> Duration {
        let full = self
            .first_pause
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_pause);
        full.mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

/// A report on its way to the session loop; `ack` answers it.
pub(crate) struct PendingReport {
    pub(crate) report: pb::TaskReport,
    pub(crate) ack: Option<oneshot::Sender<pb::ReportAck>>,
}

/// The receiving end the session loop drains.
pub struct ReportQueue(pub(crate) mpsc::UnboundedReceiver<PendingReport>);

/// Sends task reports to the intake over whichever stream is current.
#[derive(Clone)]
pub struct Reporter {
    reports: mpsc::UnboundedSender<PendingReport>,
    next_id: Arc<AtomicU64>,
    stopped: CancellationToken,
    policy: RetryPolicy,
}

/// Makes the reporter and the queue the session loop drains.
pub fn reporter(stopped: CancellationToken, policy: RetryPolicy) -> (Reporter, ReportQueue) {
    let (reports, receiver) = mpsc::unbounded_channel();
    (
        Reporter {
            reports,
            next_id: Arc::new(AtomicU64::new(1)),
            stopped,
            policy,
        },
        ReportQueue(receiver),
    )
}

/// What the intake's answer to a report means for the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accepted,
    /// The intake could not take it now; the same report may succeed later.
    Retry,
    /// The task is no longer this worker's (lease lost, task finished or gone):
    /// there is nothing left to report.
    NotOurs,
    /// Refused for what the report carries: it fails the same way every time.
    Refused,
}

fn verdict(ack: &pb::ReportAck) -> Verdict {
    if ack.accepted {
        return Verdict::Accepted;
    }
    match ack.reason.as_str() {
        // an empty reason is an intake that could not say: treat it as transient
        reasons::DATABASE_UNAVAILABLE | reasons::SHUTTING_DOWN | "" => Verdict::Retry,
        reasons::LEASE_LOST | reasons::INVALID_TRANSITION | reasons::TASK_NOT_FOUND => {
            Verdict::NotOurs
        }
        _ => Verdict::Refused,
    }
}

impl Reporter {
    /// Delivers a task's report under its lease and waits for the answer: retried
    /// while the intake cannot take it (within the policy, while the lease is
    /// ours), and replaced by a `REPORT_REFUSED` failure when the intake refuses
    /// a final report for its content. Returns the last answer, `None` if the
    /// worker stopped first.
    pub async fn deliver(
        &self,
        report: pb::TaskReport,
        control: &TaskControl,
    ) -> Option<pb::ReportAck> {
        let ack = self.report(report.clone(), control).await?;
        if verdict(&ack) != Verdict::Refused || !is_final(report.status()) {
            return Some(ack);
        }
        warn!(task_id = %report.task_id, status = report.status().as_str_name(),
              reason = %ack.reason, message = %ack.message,
              "the intake refused the report; failing the task with REPORT_REFUSED");
        let mut last = ack.clone();
        for fallback in refused_fallbacks(&report, &ack) {
            last = self.report(fallback, control).await?;
            if verdict(&last) != Verdict::Refused {
                break;
            }
        }
        Some(last)
    }

    /// Sends one report until the intake answers it other than "retry later",
    /// the policy's deadline passes, or the lease is lost. `None` if the worker
    /// stops first.
    pub async fn report(
        &self,
        report: pb::TaskReport,
        control: &TaskControl,
    ) -> Option<pb::ReportAck> {
        let give_up_at = Instant::now() + self.policy.deadline;
        let mut retry = 0u32;
        loop {
            let ack = self.send_once(report.clone()).await?;
            if verdict(&ack) != Verdict::Retry {
                return Some(ack);
            }
            let pause = self.policy.pause(retry);
            retry = retry.saturating_add(1);
            let lease_lost = control.reason() == Some(StopReason::LeaseLost);
            if lease_lost || Instant::now() + pause > give_up_at {
                warn!(task_id = %report.task_id, status = report.status().as_str_name(),
                      reason = %ack.reason, attempts = retry, lease_lost,
                      "giving up on a report the intake could not take");
                return Some(ack);
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.stopped.cancelled() => return None,
            }
        }
    }

    async fn send_once(&self, mut report: pb::TaskReport) -> Option<pb::ReportAck> {
        let (ack, answer) = oneshot::channel();
        report.report_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.reports
            .send(PendingReport {
                report,
                ack: Some(ack),
            })
            .ok()?;
        tokio::select! {
            ack = answer => ack.ok(),
            _ = self.stopped.cancelled() => None,
        }
    }

    /// Reports without waiting (progress a later report supersedes).
    pub fn notify(&self, mut report: pb::TaskReport) {
        report.report_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.reports.send(PendingReport { report, ack: None });
    }
}

/// Reports that end the task: a refusal of one must not leave it running.
fn is_final(status: ReportStatus) -> bool {
    matches!(
        status,
        ReportStatus::Completed | ReportStatus::Failed | ReportStatus::Cancelled
    )
}

/// What is sent instead of a refused final report, in order until one is taken:
/// the task failed (a cancelled one stays cancelled) with `REPORT_REFUSED` and
/// the trace URI, then the same without the trace URI (in case that was what the
/// intake refused). None carries the refused result or error.
fn refused_fallbacks(refused: &pb::TaskReport, ack: &pb::ReportAck) -> Vec<pb::TaskReport> {
    let status = match refused.status() {
        ReportStatus::Cancelled => ReportStatus::Cancelled,
        _ => ReportStatus::Failed,
    };
    let error = pb::TaskError {
        code: reasons::task_error::REPORT_REFUSED.to_string(),
        message: refusal_message(refused.status(), ack),
    };
    let with_trace = pb::TaskReport {
        report_id: 0,
        task_id: refused.task_id.clone(),
        lease_token: refused.lease_token.clone(),
        status: status.into(),
        result: None,
        error: Some(error),
        trace_uri: refused.trace_uri.clone(),
        ..Default::default()
    };
    let without_trace = pb::TaskReport {
        trace_uri: String::new(),
        ..with_trace.clone()
    };
    if refused.trace_uri.is_empty() {
        vec![without_trace]
    } else {
        vec![with_trace, without_trace]
    }
}

/// Longest part of the intake's explanation quoted in the task's error.
const MAX_QUOTED_CHARS: usize = 1024;

/// Which report was refused and the intake's reason and explanation. The
/// explanation names fields and problems, never the values (the intake quotes
/// none of a report's content); it is escaped and cut short all the same.
fn refusal_message(status: ReportStatus, ack: &pb::ReportAck) -> String {
    let status = match status {
        ReportStatus::Completed => "completed",
        ReportStatus::Failed => "failed",
        ReportStatus::Cancelled => "cancelled",
        _ => "final",
    };
    let explanation: String = ack.message.chars().take(MAX_QUOTED_CHARS).collect();
    format!(
        "the intake refused the worker's {status} report ({reason}): {explanation}; \
         the outcome is in the trace folder",
        reason = jct::text::escape(&ack.reason),
        explanation = jct::text::escape(&explanation),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(reason: &str, message: &str) -> pb::ReportAck {
        pb::ReportAck {
            accepted: false,
            reason: reason.to_string(),
            message: message.to_string(),
            ..Default::default()
        }
    }

    fn completed() -> pb::TaskReport {
        pb::TaskReport {
            task_id: "t".into(),
            lease_token: "l".into(),
            status: ReportStatus::Completed.into(),
            result: Some(prost_types::Struct::default()),
            trace_uri: "file:///traces/t".into(),
            ..Default::default()
        }
    }

    /// The intake stand-in: answers every report with `answer(n, report)`.
    fn intake(
        mut queue: ReportQueue,
        answer: impl Fn(usize, &pb::TaskReport) -> pb::ReportAck + Send + 'static,
    ) -> tokio::task::JoinHandle<Vec<pb::TaskReport>> {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(pending) = queue.0.recv().await {
                let mut ack = answer(seen.len(), &pending.report);
                ack.report_id = pending.report.report_id;
                seen.push(pending.report);
                if let Some(reply) = pending.ack {
                    let _ = reply.send(ack);
                }
            }
            seen
        })
    }

    fn quick(deadline_ms: u64) -> RetryPolicy {
        RetryPolicy {
            first_pause: Duration::from_millis(5),
            max_pause: Duration::from_millis(20),
            deadline: Duration::from_millis(deadline_ms),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let policy = RetryPolicy::default();
        assert!(policy.pause(0) <= Duration::from_millis(500));
        assert!(policy.pause(0) >= Duration::from_millis(250));
        assert!(policy.pause(3) >= Duration::from_secs(2));
        assert!(policy.pause(40) <= Duration::from_secs(10));
        assert!(policy.pause(40) >= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn an_unavailable_intake_is_retried_for_a_bounded_time() {
        let stopped = CancellationToken::new();
        let (reporter, queue) = reporter(stopped.clone(), quick(200));
        let seen = intake(queue, |_, _| refused(reasons::DATABASE_UNAVAILABLE, "down"));
        let started = std::time::Instant::now();
        let ack = reporter
            .report(completed(), &TaskControl::default())
            .await
            .expect("an answer");
        assert_eq!(ack.reason, reasons::DATABASE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(reporter);
        let sent = seen.await.expect("intake").len();
        assert!((3..=60).contains(&sent), "{sent} attempts");
    }

    #[tokio::test]
    async fn retries_stop_when_the_lease_is_lost() {
        let (reporter, queue) = reporter(CancellationToken::new(), quick(60_000));
        let seen = intake(queue, |_, _| refused(reasons::DATABASE_UNAVAILABLE, "down"));
        let control = TaskControl::default();
        control.stop(StopReason::LeaseLost);
        let ack = reporter.report(completed(), &control).await.expect("ack");
        assert!(!ack.accepted);
        drop(reporter);
        assert_eq!(seen.await.expect("intake").len(), 1);
    }

    #[tokio::test]
    async fn a_retry_that_gets_through_is_accepted() {
        let (reporter, queue) = reporter(CancellationToken::new(), quick(10_000));
        let _seen = intake(queue, |n, _| match n {
            0 | 1 => refused(reasons::DATABASE_UNAVAILABLE, "down"),
            _ => pb::ReportAck {
                accepted: true,
                ..Default::default()
            },
        });
        let ack = reporter.deliver(completed(), &TaskControl::default()).await;
        assert!(ack.is_some_and(|ack| ack.accepted));
    }

    #[tokio::test]
    async fn a_refused_completion_becomes_a_report_refused_failure_without_its_content() {
        let (reporter, queue) = reporter(CancellationToken::new(), quick(10_000));
        // the intake refuses anything that carries the trace uri
        let seen = intake(queue, |_, report| {
            if report.trace_uri.is_empty() {
                pb::ReportAck {
                    accepted: true,
                    ..Default::default()
                }
            } else {
                refused(
                    reasons::VALIDATION_FAILED,
                    "the request has invalid fields: report.trace_uri contains U+202E",
                )
            }
        });
        let ack = reporter.deliver(completed(), &TaskControl::default()).await;
        assert!(ack.is_some_and(|ack| ack.accepted));
        drop(reporter);
        let sent = seen.await.expect("intake");
        assert_eq!(sent.len(), 3, "completion, failure with trace, failure");
        let last = &sent[2];
        assert_eq!(last.status(), ReportStatus::Failed);
        assert!(last.result.is_none() && last.trace_uri.is_empty());
        let error = last.error.as_ref().expect("error");
        assert_eq!(error.code, "REPORT_REFUSED");
        assert!(
            error
                .message
                .contains("completed report (VALIDATION_FAILED)")
                && error.message.contains("report.trace_uri"),
            "{}",
            error.message
        );
        assert!(!error.message.contains("file://"), "{}", error.message);
    }

    #[tokio::test]
    async fn a_report_refused_because_the_task_moved_on_is_not_replaced() {
        let (reporter, queue) = reporter(CancellationToken::new(), quick(10_000));
        let seen = intake(queue, |_, _| refused(reasons::LEASE_LOST, "not yours"));
        let ack = reporter.deliver(completed(), &TaskControl::default()).await;
        assert!(ack.is_some_and(|ack| ack.reason == reasons::LEASE_LOST));
        drop(reporter);
        assert_eq!(seen.await.expect("intake").len(), 1);
    }

    #[tokio::test]
    async fn a_refused_cancellation_stays_a_cancellation() {
        let (reporter, queue) = reporter(CancellationToken::new(), quick(10_000));
        let seen = intake(queue, |n, _| match n {
            0 => refused(reasons::REJECTED_BY_DATABASE, "refused a value"),
            _ => pb::ReportAck {
                accepted: true,
                ..Default::default()
            },
        });
        let cancelled = pb::TaskReport {
            status: ReportStatus::Cancelled.into(),
            result: None,
            ..completed()
        };
        reporter
            .deliver(cancelled, &TaskControl::default())
            .await
            .expect("ack");
        drop(reporter);
        let sent = seen.await.expect("intake");
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].status(), ReportStatus::Cancelled);
        assert_eq!(
            sent[1].error.as_ref().map(|e| e.code.as_str()),
            Some("REPORT_REFUSED")
        );
    }
}
