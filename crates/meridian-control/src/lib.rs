//! The control plane: hosted zones and change batches replicated with Raft (openraft, RocksDB
//! for the log and the state machine), the gRPC API, and catalog streaming to edges.
//!
//! Boundary: this crate owns the cluster's durable state and its network services. It decides
//! nothing about DNS answers (the core does) and never serves DNS. Validation of change batches
//! is the pure core's (`meridian_core::change`), run inside the state machine in log order.

// openraft's storage traits fix the error type (`StorageError`, ~224 bytes); our helpers return
// the same type so `?` carries it through unchanged.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod codec;
pub mod convert;
pub mod edges;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod node;
pub mod probes;
pub mod sm_store;
pub mod state;
pub mod types;

pub use node::ControlNode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("no Raft leader")]
    NoLeader,
    #[error("forwarding to the leader: {0}")]
    Forward(String),
    #[error("serving gRPC: {0}")]
    Serve(String),
}
