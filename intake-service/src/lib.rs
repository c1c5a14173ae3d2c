//! The JCT intake service: `jct.v1.TaskService` for clients, `jct.v1.DispatchService`
//! for workers and `jct.v1.OperatorService` for operators, in front of a task store
//! on SQLite or Postgres.
//!
//! A request's path through the crate: [`api`] (wire types in and out) →
//! [`policy`] (the pure gate) → [`store`] (durable state) → [`dispatch`] (pushing
//! queued tasks to connected workers under leases).

pub mod api;
pub mod auth;
pub mod config;
pub mod dispatch;
pub mod metrics;
pub mod policy;
pub mod rpc_metrics;
pub mod server;
pub mod store;
pub mod task;
pub mod transport;

pub use jct::telemetry;
