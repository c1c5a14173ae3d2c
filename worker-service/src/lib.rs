//! The JCT worker: attaches to the intake's dispatch stream, runs each assigned
//! task with an executor under the task's constraints, writes a trace folder per
//! attempt and reports the outcome under the task's lease.
//!
//! A task's path through the crate: [`session`] (the stream) → [`runner`] (one
//! attempt) → [`executor`] (record, or command in a [`executor::sandbox`]) →
//! [`trace`] (the folder) → back to [`session`] (the report).

pub mod command_attempt;
pub mod config;
pub mod executor;
pub mod health;
pub mod intake;
pub mod metrics;
pub mod outputs;
pub mod reporter;
pub mod runner;
pub mod session;
pub mod trace;
pub mod trace_sync;
pub mod worker;
pub mod workspace;

pub use jct::telemetry;
pub use worker::{WorkerError, run};
