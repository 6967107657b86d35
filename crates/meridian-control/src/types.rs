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
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Command {
    /// Registers a health check. Until probing decides, its verdict is "no data" (healthy, as
    /// Route 53) unless an operator sets one with `HealthStatusSet`.
    HealthCheckCreate {
        id: String,
        caller_reference: String,
        /// Route 53 `HealthCheckConfig`, JSON, as validated by the proposer.
        config: String,
        change_id: String,
        submitted_ms: u64,
    },
    /// Replaces a check's config (validated by the proposer); status and evidence carry over.
    HealthCheckUpdate {
        id: String,
        config: String,
        change_id: String,
        submitted_ms: u64,
    },
    /// Removes a health check no record set uses.
    HealthCheckDelete {
        id: String,
        change_id: String,
        submitted_ms: u64,
    },
    /// Operator verdict for a check: `Some` forces healthy/unhealthy, `None` returns it to
    /// automatic (no data until probes exist).
    HealthStatusSet {
        id: String,
        healthy: Option<bool>,
        change_id: String,
        submitted_ms: u64,
    },
    /// A check's probe verdict changed (decided by the leader from the POPs' results). Only
    /// transitions are written; `evidence` says which POPs saw what.
    HealthTransition {
        id: String,
        healthy: bool,
        evidence: String,
        change_id: String,
        submitted_ms: u64,
    },
    /// The measured RTTs latency records use: POP → check → smoothed ms, replaced whole (the
    /// leader publishes it when a value moves by more than its hysteresis).
    RttPublish {
        rtt: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u32>>,
        change_id: String,
        submitted_ms: u64,
    },
    /// Creates or replaces a CIDR collection whole (IP-based routing).
    CidrCollectionPut {
        name: String,
        blocks: Vec<meridian_core::policy::CidrBlock>,
        change_id: String,
        submitted_ms: u64,
    },
    /// Drains (`drained`) or undrains a POP or an edge: its edges withdraw their anycast routes
    /// and keep answering. `target` is `pop/NAME` or `edge/ID` ([`DrainTarget`] text).
    ///
    /// [`DrainTarget`]: meridian_core::catalog::DrainTarget
    DrainSet {
        target: String,
        drained: bool,
        comment: String,
        change_id: String,
        submitted_ms: u64,
    },
    /// Removes a CIDR collection no record set uses.
    CidrCollectionDelete {
        name: String,
        change_id: String,
        submitted_ms: u64,
    },
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
    /// Starts a staged zone import: the zone's new content is built up by `ImportChunk`s beside
    /// the live zone (which keeps serving and taking changes) and switched in by `ImportCommit`.
    /// Staging starts from the zone's apex SOA and NS, so a file without them keeps them.
    ImportBegin {
        zone: Name,
        /// The import's id (chosen by the proposer, unique like a change id).
        import_id: String,
        comment: String,
        /// Compare-and-set: checked at begin and again at commit.
        expected_zone_version: Option<u64>,
        submitted_ms: u64,
    },
    /// Adds record sets to a staged import. `seq` numbers chunks from 0 so that a retried
    /// proposal is applied once and a lost one is noticed (chunks may commit in any order).
    ImportChunk {
        import_id: String,
        seq: u64,
        /// UPSERTs only, validated against the staged content.
        batch: ChangeBatch,
        submitted_ms: u64,
    },
    /// Replaces the zone's content by the staged content in one entry.
    ImportCommit {
        import_id: String,
        /// How many chunks the client sent: the commit is refused unless all were applied.
        chunks: u64,
        change_id: String,
        submitted_ms: u64,
    },
    /// Drops a staged import; the zone is left as it was.
    ImportAbort {
        import_id: String,
        submitted_ms: u64,
    },
}

impl Command {
    /// The change id a committed command is remembered by; empty for commands that make no
    /// catalog change of their own (import staging).
    pub fn change_id(&self) -> &str {
        match self {
            Command::CreateZone { change_id, .. }
            | Command::DeleteZone { change_id, .. }
            | Command::ChangeBatch { change_id, .. }
            | Command::ImportCommit { change_id, .. }
            | Command::HealthCheckCreate { change_id, .. }
            | Command::HealthCheckDelete { change_id, .. }
            | Command::HealthStatusSet { change_id, .. }
            | Command::HealthTransition { change_id, .. }
            | Command::HealthCheckUpdate { change_id, .. }
            | Command::RttPublish { change_id, .. }
            | Command::CidrCollectionPut { change_id, .. }
            | Command::CidrCollectionDelete { change_id, .. }
            | Command::DrainSet { change_id, .. } => change_id,
            Command::ImportBegin { .. }
            | Command::ImportChunk { .. }
            | Command::ImportAbort { .. } => "",
        }
    }

    /// A cheap over-estimate of the command's size in a Raft message, to bound how many
    /// entries one AppendEntries carries (JSON spells each RDATA byte as up to 4 characters).
    pub fn approx_bytes(&self) -> usize {
        let batch_bytes = |b: &ChangeBatch| {
            b.comment.len()
                + b.changes
                    .iter()
                    .map(|c| {
                        64 + c.record_set.name.wire().len() * 4
                            + c.record_set
                                .rdatas
                                .iter()
                                .map(|r| 8 + r.len() * 4)
                                .sum::<usize>()
                    })
                    .sum::<usize>()
        };
        256 + match self {
            Command::ChangeBatch { batch, .. } | Command::ImportChunk { batch, .. } => {
                batch_bytes(batch)
            }
            Command::CreateZone { soa, ns, .. } => {
                soa.len() * 4 + ns.iter().map(|n| n.len() * 4).sum::<usize>()
            }
            Command::HealthCheckCreate { config, .. } => config.len() * 2,
            Command::CidrCollectionPut { blocks, .. } => blocks.len() * 96,
            _ => 0,
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
