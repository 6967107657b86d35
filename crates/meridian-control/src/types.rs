//! What goes through Raft: commands (log entries) and their results. Every command carries all
//! it needs (ids, timestamps chosen by the proposer), so applying it is deterministic and every
//! node ends with the same state at the same index.

use std::io::Cursor;

use meridian_core::Name;
use meridian_core::change::ChangeBatch;
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// Meridian's Raft types.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;

/// A replicated write.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Command {
    CreateZone {
        name: Name,
        caller_reference: String,
        /// Apex SOA and NS RDATA (wire), chosen by the proposer.
        soa: Vec<u8>,
        ns: Vec<Vec<u8>>,
        change_id: String,
        submitted_ms: u64,
    },
    DeleteZone {
        name: Name,
        force: bool,
        change_id: String,
        submitted_ms: u64,
    },
    ChangeBatch {
        zone: Name,
        batch: ChangeBatch,
        idempotency_token: Option<String>,
        expected_zone_version: Option<u64>,
        change_id: String,
        submitted_ms: u64,
    },
}

impl Command {
    pub fn change_id(&self) -> &str {
        match self {
            Command::CreateZone { change_id, .. }
            | Command::DeleteZone { change_id, .. }
            | Command::ChangeBatch { change_id, .. } => change_id,
        }
    }
}

/// The committed outcome of a command. A rejected command is committed too (it is a no-op):
/// validation happens in log order, so concurrent batches are serialized, never refused for
/// being concurrent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum CommandResult {
    Applied {
        change_id: String,
        /// Catalog version the change committed at (its log index).
        version: u64,
    },
    Rejected {
        /// Stable short code (e.g. `CnameAndOtherData`), for clients and metrics.
        code: String,
        message: String,
    },
}

/// A change's record, kept in the state machine for `GetChange`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChangeRecord {
    pub id: String,
    pub version: u64,
    pub comment: String,
    pub submitted_ms: u64,
    pub zone: Name,
}

/// What a follower sends the leader on the internal `ForwardWrite` call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Forwarded {
    /// Propose this command.
    Write(Command),
    /// Confirm leadership and return the read index (for a follower's linearizable read).
    ReadIndex,
}
