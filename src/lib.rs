//! The JCT v1 contract: the protobuf messages and the gRPC clients and servers of
//! `jct.v1`, generated at build time from `proto/jct/v1/`, plus the encoded file
//! descriptor set that reflection and the contract snapshot test read.
//!
//! Every other crate of the workspace reaches tonic and prost through here, so the
//! whole tree speaks one version of them.

pub use prost;
pub use prost_types;
pub use tonic;

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("jct.v1");

    /// The encoded `FileDescriptorSet` of `jct.v1` (with the well-known types it imports).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/jct_v1_descriptor.bin"));
}

pub mod bearer;
pub mod codec;
#[cfg(feature = "telemetry")]
pub mod metrics_endpoint;
pub mod names;
pub mod reasons;
pub mod structs;
pub mod task_json;
#[cfg(feature = "telemetry")]
pub mod telemetry;
#[cfg(feature = "test-pki")]
pub mod test_pki;
pub mod text;
#[cfg(feature = "tls")]
pub mod tls;
pub mod traceparent;

#[cfg(test)]
mod contract_snapshot;
