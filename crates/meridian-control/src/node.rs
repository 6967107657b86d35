//! A control node: RocksDB, the Raft instance, the state machine, the edge registry, and the
//! write path (propose here when leader, forward to the leader otherwise).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_proto::v1::RaftPayload;
use meridian_proto::v1::raft_client::RaftClient;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};
use rocksdb::{ColumnFamilyDescriptor, DB, Options};
use tonic::transport::Channel;

use crate::Error;
use crate::edges::EdgeRegistry;
use crate::log_store::{CF_LOG_META, CF_LOGS, LogStore};
use crate::network::{Network, raft_client};
use crate::sm_store::{SM_FAMILIES, StateMachine};
use crate::types::{Command, CommandResult, Forwarded, NodeId, Raft};

/// Log entries between snapshots; compaction keeps this many behind the snapshot for followers
/// that are slightly behind (they catch up from the log, not a snapshot).
pub const SNAPSHOT_EVERY_LOGS: u64 = 50_000;
pub const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 1_000;
/// Heartbeat and election timeouts for LAN/loopback clusters: a new leader in 1–2 s. openraft
/// also gives each AppendEntries one heartbeat interval before it times out and backs off for
/// 500 ms: at 100 ms, a follower sharing a loaded 2-core machine sometimes missed it and commit
/// latency spiked to ~600 ms; 200 ms leaves room for that without slowing failover much.
pub const HEARTBEAT_MS: u64 = 200;
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 800;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 1600;
/// How long a write waits for the leader before giving up (then the client retries).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ControlNode {
    pub id: NodeId,
    /// The address this node serves gRPC on (API and Raft), as peers reach it.
    pub addr: String,
    pub raft: Raft,
    pub sm: StateMachine,
    pub edges: Arc<EdgeRegistry>,
    /// API call counts and commit latency.
    pub metrics: crate::metrics::ApiMetrics,
    /// Highest committed log index this node knows.
    pub committed_index: Arc<AtomicU64>,
    /// Geo database for `explain --client/--ecs` (the same kind edges use); set once at start.
    pub geo: std::sync::OnceLock<Arc<dyn meridian_core::policy::GeoLookup>>,
    /// Every POP's probe results per health check, for the leader's decisions.
    pub health_views: crate::probes::HealthViews,
    change_counter: AtomicU64,
    /// The leader's address and a client for it, reused by forwarded writes and reads (a new
    /// HTTP/2 connection per forwarded write would cost a TCP handshake each).
    leader_client: std::sync::Mutex<Option<(String, RaftClient<Channel>)>>,
}

impl std::fmt::Debug for ControlNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ControlNode({} at {})", self.id, self.addr)
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn open_db(path: &Path) -> Result<DB, Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let families = [CF_LOGS, CF_LOG_META]
        .into_iter()
        .chain(SM_FAMILIES)
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    DB::open_cf_descriptors(&opts, path, families).map_err(|e| Error::Storage(e.to_string()))
}

impl ControlNode {
    /// Opens (or creates) the node's data directory and starts Raft. The caller serves gRPC.
    pub async fn open(id: NodeId, data: &Path, addr: String) -> Result<Arc<ControlNode>, Error> {
        std::fs::create_dir_all(data)
            .map_err(|e| Error::Storage(format!("{}: {e}", data.display())))?;
        let db = Arc::new(open_db(&data.join("rocksdb"))?);
        let config = Config {
            cluster_name: "meridian".to_string(),
            heartbeat_interval: HEARTBEAT_MS,
            election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
            // Staggered by node id so that the nodes of a cluster (often sharing a machine in
            // small deployments) do not all spend seconds building a snapshot at once.
            snapshot_policy: SnapshotPolicy::LogsSinceLast(
                SNAPSHOT_EVERY_LOGS + (id % 8) * SNAPSHOT_EVERY_LOGS / 8,
            ),
            max_in_snapshot_log_to_keep: LOGS_KEPT_AFTER_SNAPSHOT,
            snapshot_max_chunk_size: 4 << 20,
            install_snapshot_timeout: 10_000,
            ..Config::default()
        };
        let config = Arc::new(config.validate().map_err(|e| Error::Raft(e.to_string()))?);
        let log = LogStore::new(db.clone());
        let committed_index = log.committed_index.clone();
        let sm = StateMachine::open(db.clone()).map_err(|e| Error::Storage(e.to_string()))?;
        let raft = Raft::new(id, config, Network, log, sm.clone())
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        let node = Arc::new(ControlNode {
            id,
            addr,
            raft,
            sm,
            edges: Arc::new(EdgeRegistry::default()),
            committed_index,
            metrics: crate::metrics::ApiMetrics::default(),
            change_counter: AtomicU64::new(0),
            geo: std::sync::OnceLock::new(),
            health_views: crate::probes::HealthViews::default(),
            leader_client: std::sync::Mutex::new(None),
        });
        node.spawn_health_pass();
        Ok(node)
    }

    /// A change id unique across the cluster: node id, time, counter.
    pub fn next_change_id(&self) -> String {
        let n = self.change_counter.fetch_add(1, Ordering::Relaxed);
        format!("C{:x}{:x}{:04x}", self.id, now_ms(), n & 0xffff)
    }

    /// Proposes a command: through our Raft if we lead, else forwarded to the leader. Returns
    /// once a majority has it durably and it is applied.
    pub async fn write(&self, command: Command) -> Result<CommandResult, Error> {
        let started = std::time::Instant::now();
        let result = self.write_inner(command).await;
        if result.is_ok() {
            self.metrics.commit(started.elapsed());
        }
        result
    }

    async fn write_inner(&self, command: Command) -> Result<CommandResult, Error> {
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        loop {
            let leader_seen = match self.raft.client_write(command.clone()).await {
                Ok(resp) => return Ok(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                    if let Some(node) = &fwd.leader_node {
                        match self.forward(node, &command).await {
                            Ok(result) => return Ok(result),
                            // The leader we know may have just died: wait for the cluster to
                            // elect another and retry. A retry is safe: the state machine
                            // applies a change id once (see `State::apply`).
                            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                            Err(e) => {
                                tracing::debug!(error = %e, "forwarding failed; waiting for a leader");
                                fwd.leader_id
                            }
                        }
                    } else {
                        None
                    }
                }
                Err(e) => return Err(Error::Raft(e.to_string())),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::NoLeader);
            }
            self.wait_for_new_leader(leader_seen, deadline).await?;
        }
    }

    /// Waits until a leader other than `old` is known (or, with `old` None, any leader); gives
    /// up after a short while so a leader that was merely unreachable is tried again.
    async fn wait_for_new_leader(
        &self,
        old: Option<NodeId>,
        deadline: tokio::time::Instant,
    ) -> Result<(), Error> {
        /// Retry the same leader after this long: the failure may have been transient.
        const RETRY_AFTER: Duration = Duration::from_millis(300);
        let retry_at = (tokio::time::Instant::now() + RETRY_AFTER).min(deadline);
        let mut metrics = self.raft.metrics();
        loop {
            let leader = metrics.borrow().current_leader;
            if leader.is_some() && leader != old {
                return Ok(());
            }
            tokio::select! {
                r = metrics.changed() => r.map_err(|_| Error::Raft("raft stopped".into()))?,
                _ = tokio::time::sleep_until(retry_at) => return Ok(()),
            }
        }
    }

    /// Waits until this node can serve a linearizable read (read index through the leader).
    pub async fn linearizable(&self) -> Result<(), Error> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(e)) => {
                // Not the leader: ask the leader for its read index, then wait to apply it.
                let leader = match &e {
                    openraft::error::CheckIsLeaderError::ForwardToLeader(f) => {
                        f.leader_node.clone()
                    }
                    _ => None,
                };
                let Some(leader) = leader else {
                    return Err(Error::NoLeader);
                };
                let mut client = self.client_for(&leader)?;
                let reply = client
                    .forward_write(RaftPayload {
                        data: crate::codec::encode(&Forwarded::ReadIndex)
                            .map_err(|e| Error::Forward(e.to_string()))?,
                        blob: Vec::new(),
                    })
                    .await
                    .map_err(|s| Error::Forward(s.message().to_string()))?;
                let index: u64 = crate::codec::decode(&reply.into_inner().data)
                    .map_err(|e| Error::Forward(e.to_string()))?;
                let mut metrics = self.raft.metrics();
                let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
                loop {
                    if metrics.borrow().last_applied.map(|l| l.index).unwrap_or(0) >= index {
                        return Ok(());
                    }
                    tokio::select! {
                        r = metrics.changed() => r.map_err(|_| Error::Raft("raft stopped".into()))?,
                        _ = tokio::time::sleep_until(deadline) => return Err(Error::NoLeader),
                    }
                }
            }
            Err(e) => Err(Error::Raft(e.to_string())),
        }
    }

    /// The leader's read index: applied index that covers every committed write.
    pub async fn read_index(&self) -> Result<u64, Error> {
        let log_id = self
            .raft
            .ensure_linearizable()
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        Ok(log_id.map(|l| l.index).unwrap_or(0))
    }

    pub async fn initialize(&self, nodes: BTreeMap<NodeId, BasicNode>) -> Result<(), Error> {
        self.raft
            .initialize(nodes)
            .await
            .map_err(|e| Error::Raft(e.to_string()))
    }

    /// Peers (id, addr) from the current membership, including this node.
    pub fn members(&self) -> Vec<(NodeId, String)> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    }

    /// A client for `leader`, cached while the leader stays the same.
    fn client_for(&self, leader: &BasicNode) -> Result<RaftClient<Channel>, Error> {
        let mut cached = self.leader_client.lock().expect("leader client lock");
        if let Some((addr, client)) = cached.as_ref()
            && *addr == leader.addr
        {
            return Ok(client.clone());
        }
        let client = raft_client(&leader.addr).map_err(|e| Error::Forward(e.to_string()))?;
        *cached = Some((leader.addr.clone(), client.clone()));
        Ok(client)
    }

    async fn forward(&self, leader: &BasicNode, command: &Command) -> Result<CommandResult, Error> {
        let mut client = self.client_for(leader)?;
        let data = crate::codec::encode(&Forwarded::Write(command.clone()))
            .map_err(|e| Error::Forward(e.to_string()))?;
        let mut request = tonic::Request::new(RaftPayload {
            data,
            blob: Vec::new(),
        });
        request.set_timeout(WRITE_TIMEOUT);
        let reply = client
            .forward_write(request)
            .await
            .map_err(|s| Error::Forward(s.message().to_string()))?;
        crate::codec::decode(&reply.into_inner().data).map_err(|e| Error::Forward(e.to_string()))
    }
}

/// How long a transition's detection time waits for INSYNC before it is recorded anyway.
const HEALTH_INSYNC_WAIT_MS: u64 = 10_000;

/// The in-flight key of an RTT publication (not a valid check id: those start with `hc-`).
const RTT_IN_FLIGHT: &str = " rtt";

impl ControlNode {
    /// Whether this node leads now (only the leader proposes health transitions).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Proposes the health transitions this node's views call for (leader only). `only`: the
    /// checks a report touched; `None`: all (the periodic pass).
    pub fn propose_health_transitions(
        self: &Arc<Self>,
        only: Option<&std::collections::BTreeSet<String>>,
    ) {
        if !self.is_leader() {
            return;
        }
        let decisions = {
            let state = self.sm.state.read().expect("state lock");
            self.health_views.decide(&state, now_ms(), only)
        };
        for t in decisions {
            let node = self.clone();
            tokio::spawn(async move {
                let command = crate::types::Command::HealthTransition {
                    id: t.id.clone(),
                    healthy: t.healthy,
                    evidence: t.evidence.clone(),
                    change_id: node.next_change_id(),
                    submitted_ms: now_ms(),
                };
                let written = node.write(command).await;
                // The next transition of this check may be decided from now on.
                node.health_views.done(&t.id);
                match written {
                    Ok(result) => {
                        // Detection ends when every live edge serves the transition (INSYNC),
                        // waited for at most HEALTH_INSYNC_WAIT.
                        if let crate::types::CommandResult::Applied { version, .. } = result {
                            let deadline = now_ms() + HEALTH_INSYNC_WAIT_MS;
                            while now_ms() < deadline
                                && !crate::edges::in_sync(&node.edges.list(), version, now_ms())
                            {
                                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            }
                        }
                        let took = now_ms().saturating_sub(t.run_started_ms);
                        node.metrics
                            .health_transitions
                            .fetch_add(1, Ordering::Relaxed);
                        node.metrics
                            .health_detect_millis_last
                            .store(took, Ordering::Relaxed);
                        tracing::info!(check = %t.id, healthy = t.healthy, evidence = %t.evidence, detect_ms = took, "health transition");
                    }
                    Err(e) => {
                        tracing::warn!(check = %t.id, error = %e, "health transition not written")
                    }
                }
            });
        }
    }

    /// Publishes measured RTTs when they moved (leader only; at most one in flight).
    pub fn publish_rtt(self: &Arc<Self>) {
        if !self.is_leader() {
            return;
        }
        let rtt = {
            let state = self.sm.state.read().expect("state lock");
            self.health_views.rtt_to_publish(&state, now_ms())
        };
        let Some(rtt) = rtt else {
            return;
        };
        // One publication at a time, under the in-flight key of no real check.
        if !self.health_views.try_begin(RTT_IN_FLIGHT) {
            return;
        }
        let node = self.clone();
        tokio::spawn(async move {
            let command = crate::types::Command::RttPublish {
                rtt,
                change_id: node.next_change_id(),
                submitted_ms: now_ms(),
            };
            if let Err(e) = node.write(command).await {
                tracing::warn!(error = %e, "measured RTTs not published");
            }
            node.health_views.done(RTT_IN_FLIGHT);
        });
    }

    /// The periodic pass: POPs that went quiet and calculated checks (every second).
    pub fn spawn_health_pass(self: &Arc<Self>) {
        /// How often every check is re-decided (reports decide their own checks at once).
        const HEALTH_PASS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEALTH_PASS_INTERVAL);
            loop {
                tick.tick().await;
                let Some(node) = node.upgrade() else {
                    return;
                };
                node.propose_health_transitions(None);
                node.publish_rtt();
            }
        });
    }
}
