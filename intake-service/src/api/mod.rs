//! The gRPC surface: wire types in, domain types to the gate and the store, wire
//! types out. Handlers stay thin; every mapping lives in [`convert`] and [`errors`].

pub mod caller;
pub mod convert;
pub mod dispatch_service;
pub mod errors;
pub mod list_page;
pub mod operator_service;
pub mod page_token;
pub mod status_change;
pub mod task_service;
pub mod trace_context;
