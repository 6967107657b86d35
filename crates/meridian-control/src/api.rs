//! The gRPC services of a control node: Zones (hosted zones, changes, reads), Cluster
//! (membership), Raft (peer traffic and forwarded writes) and EdgeSync (catalog streaming and
//! edge reports). All on one address.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use meridian_core::Name;
use meridian_core::rdata::RType;
use meridian_proto::v1::{
    self, cluster_server, edge_sync_server, raft_server, routing_server, zones_server,
};
use openraft::BasicNode;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::convert::{
    batch_from_proto, parse_name, parse_type, record_set_from_proto, stored_set_to_proto,
};
use crate::edges::{self, EdgeEntry};
use crate::node::{ControlNode, now_ms};
use crate::state::CatalogDelta;
use crate::types::{Command, CommandResult, Forwarded};
use meridian_core::catalog::{DrainTarget, RoutingState};
use meridian_core::change::{Action, COMMENT_CHARS_MAX, Change, ChangeBatch};

/// Record sets per `ListRecordSets` page when the client does not say; and the most it may ask.
pub const LIST_PAGE_DEFAULT: u32 = 1000;
pub const LIST_PAGE_MAX: u32 = 10_000;
/// Idempotency tokens and caller references are kept in the replicated state for every change
/// and zone; Route 53 caps CallerReference at 128 characters, so do we.
pub const CLIENT_TOKEN_BYTES_MAX: usize = 128;

/// Refuses an over-long idempotency token or caller reference before it reaches Raft.
fn check_client_token(field: &str, token: &str) -> Result<(), Status> {
    if token.len() > CLIENT_TOKEN_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "{field}: {} bytes, at most {CLIENT_TOKEN_BYTES_MAX}",
            token.len()
        )));
    }
    Ok(())
}
/// gRPC message size for API calls: a 10,000-set batch of long TXT records is several MB.
pub const API_MESSAGE_BYTES_MAX: usize = 64 << 20;
/// Full catalogs can be large (a 1M-record zone is ~60 MB encoded).
pub const CATALOG_MESSAGE_BYTES_MAX: usize = 1 << 30;

#[derive(Clone)]
pub struct Api {
    pub node: Arc<ControlNode>,
    /// Set when the server shuts down: catalog streams end so graceful shutdown can finish.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

fn status(e: Error) -> Status {
    match e {
        Error::NoLeader => Status::unavailable("no Raft leader; retry"),
        Error::Forward(m) => Status::unavailable(format!("forwarding to the leader failed: {m}")),
        other => Status::internal(other.to_string()),
    }
}

fn result_to_change(result: CommandResult, comment: &str) -> Result<v1::ChangeInfo, Status> {
    match result {
        CommandResult::Applied { change_id, version } => Ok(v1::ChangeInfo {
            id: change_id,
            status: v1::ChangeStatus::Pending as i32,
            version,
            comment: comment.to_string(),
            submitted_unix_ms: now_ms(),
            warnings: Vec::new(),
        }),
        CommandResult::Rejected { code, message } => {
            let msg = format!("{code}: {message}");
            Err(match code.as_str() {
                "NoSuchHostedZone"
                | "NoSuchChange"
                | "NoSuchImport"
                | "NoSuchHealthCheck"
                | "NoSuchCidrCollection" => Status::not_found(msg),
                "HealthCheckInUse" | "CidrCollectionInUse" | "HealthCheckAlreadyExists" => {
                    Status::failed_precondition(msg)
                }
                "ZoneAlreadyExists"
                | "ZoneVersionMismatch"
                | "HostedZoneNotEmpty"
                | "ImportIncomplete"
                | "LimitExceeded" => Status::failed_precondition(msg),
                _ => Status::invalid_argument(msg),
            })
        }
    }
}

impl Api {
    /// Membership changes run on the leader: a client for it when this node is not the leader
    /// (`None` when it is).
    async fn leader_client(
        &self,
    ) -> Result<Option<v1::cluster_client::ClusterClient<tonic::transport::Channel>>, Status> {
        let m = self.node.raft.metrics().borrow().clone();
        match m.current_leader {
            Some(id) if id == self.node.id => Ok(None),
            Some(id) => {
                let addr = m
                    .membership_config
                    .nodes()
                    .find(|(n, _)| **n == id)
                    .map(|(_, node)| node.addr.clone())
                    .ok_or_else(|| Status::unavailable("leader address unknown"))?;
                let endpoint =
                    crate::network::endpoint(&addr).map_err(|e| Status::internal(e.to_string()))?;
                Ok(Some(v1::cluster_client::ClusterClient::new(
                    endpoint.connect_lazy(),
                )))
            }
            None => Err(Status::unavailable("no Raft leader; retry")),
        }
    }

    async fn read_guard(&self, stale: bool) -> Result<(), Status> {
        if stale {
            Ok(())
        } else {
            self.node.linearizable().await.map_err(status)
        }
    }

    /// Every control node's edge table, merged (peers that do not answer are skipped).
    async fn cluster_edges(&self) -> Vec<EdgeEntry> {
        let mut all = self.node.edges.list();
        for (id, addr) in self.node.members() {
            if id == self.node.id {
                continue;
            }
            let Ok(endpoint) = crate::network::endpoint(&addr) else {
                continue;
            };
            let mut client = v1::edge_sync_client::EdgeSyncClient::new(endpoint.connect_lazy());
            let mut req = Request::new(v1::ListEdgesRequest { local: true });
            req.set_timeout(std::time::Duration::from_millis(500));
            if let Ok(resp) = client.list_edges(req).await {
                all.extend(resp.into_inner().edges.into_iter().map(|e| EdgeEntry {
                    edge_id: e.edge_id,
                    pop: e.pop,
                    applied_version: e.applied_version,
                    addresses: e.addresses,
                    last_seen_ms: e.last_seen_unix_ms,
                    region_rtt_ms: e.region_rtt_ms.into_iter().collect(),
                    announced: e.announced,
                    announce_reason: e.announce_reason,
                }));
            }
        }
        edges::merge(all)
    }
}

#[tonic::async_trait]
impl zones_server::Zones for Api {
    async fn create_zone(
        &self,
        request: Request<v1::CreateZoneRequest>,
    ) -> Result<Response<v1::Zone>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            let name = parse_name(&req.name, None)?;
            let ns_names: Vec<Name> = if req.name_servers.is_empty() {
                vec![
                    name.prepend(b"ns1")
                        .map_err(|e| Status::invalid_argument(e.to_string()))?,
                ]
            } else {
                req.name_servers
                    .iter()
                    .map(|n| parse_name(n, Some(&name)))
                    .collect::<Result<_, _>>()?
            };
            let mname = if req.soa_mname.is_empty() {
                ns_names[0].clone()
            } else {
                parse_name(&req.soa_mname, Some(&name))?
            };
            let rname = if req.soa_rname.is_empty() {
                name.prepend(b"hostmaster")
                    .map_err(|e| Status::invalid_argument(e.to_string()))?
            } else {
                parse_name(&req.soa_rname, Some(&name))?
            };
            let mut soa = mname.wire().to_vec();
            soa.extend_from_slice(rname.wire());
            // serial, refresh, retry, expire, minimum (Route 53's defaults).
            for v in [1u32, 7200, 900, 1_209_600, 86400] {
                soa.extend_from_slice(&v.to_be_bytes());
            }
            check_client_token("caller_reference", &req.caller_reference)?;
            let command = Command::CreateZone {
                name: name.clone(),
                caller_reference: req.caller_reference.clone(),
                soa,
                ns: ns_names.iter().map(|n| n.wire().to_vec()).collect(),
                change_id: self.node.next_change_id(),
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            result_to_change(result, "")?;
            let state = self.node.sm.state.read().expect("state lock");
            let zone = state
                .zones
                .get(&name)
                .ok_or_else(|| Status::internal("zone missing after create"))?;
            Ok(Response::new(zone_info(zone)))
        }
        .await;
        self.node.metrics.call("CreateZone", code_of(&result));
        result
    }

    async fn list_zones(
        &self,
        request: Request<v1::ListZonesRequest>,
    ) -> Result<Response<v1::ListZonesResponse>, Status> {
        let result: Result<_, Status> = async move {
            self.read_guard(request.get_ref().stale).await?;
            let state = self.node.sm.state.read().expect("state lock");
            Ok(Response::new(v1::ListZonesResponse {
                zones: state.zones.values().map(zone_info).collect(),
            }))
        }
        .await;
        self.node.metrics.call("ListZones", code_of(&result));
        result
    }

    async fn get_zone(
        &self,
        request: Request<v1::GetZoneRequest>,
    ) -> Result<Response<v1::Zone>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            self.read_guard(req.stale).await?;
            let name = parse_name(&req.name, None)?;
            let state = self.node.sm.state.read().expect("state lock");
            let zone = state
                .zones
                .get(&name)
                .ok_or_else(|| Status::not_found(format!("NoSuchHostedZone: no zone {name}")))?;
            Ok(Response::new(zone_info(zone)))
        }
        .await;
        self.node.metrics.call("GetZone", code_of(&result));
        result
    }

    async fn delete_zone(
        &self,
        request: Request<v1::DeleteZoneRequest>,
    ) -> Result<Response<v1::ChangeInfo>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            let name = parse_name(&req.name, None)?;
            let command = Command::DeleteZone {
                name,
                force: req.force,
                change_id: self.node.next_change_id(),
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            Ok(Response::new(result_to_change(result, "")?))
        }
        .await;
        self.node.metrics.call("DeleteZone", code_of(&result));
        result
    }

    async fn change_record_sets(
        &self,
        request: Request<v1::ChangeRecordSetsRequest>,
    ) -> Result<Response<v1::ChangeInfo>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            check_client_token("idempotency_token", &req.idempotency_token)?;
            let zone = parse_name(&req.zone, None)?;
            let batch = batch_from_proto(&req, &zone)?;
            let comment = batch.comment.clone();
            let warnings = meridian_core::change::batch_warnings(&batch);
            let command = Command::ChangeBatch {
                zone,
                batch,
                idempotency_token: (!req.idempotency_token.is_empty())
                    .then(|| req.idempotency_token.clone()),
                expected_zone_version: req.expected_zone_version,
                change_id: self.node.next_change_id(),
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            let mut info = result_to_change(result, &comment)?;
            info.warnings = warnings;
            Ok(Response::new(info))
        }
        .await;
        self.node.metrics.call("ChangeRecordSets", code_of(&result));
        result
    }

    async fn list_record_sets(
        &self,
        request: Request<v1::ListRecordSetsRequest>,
    ) -> Result<Response<v1::ListRecordSetsResponse>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            self.read_guard(req.stale).await?;
            let zone_name = parse_name(&req.zone, None)?;
            let name_filter = if req.name.is_empty() {
                None
            } else {
                Some(parse_name(&req.name, Some(&zone_name))?)
            };
            let type_filter: Option<RType> = if req.r#type.is_empty() {
                None
            } else {
                Some(parse_type(&req.r#type)?)
            };
            let max = match req.max_items {
                0 => LIST_PAGE_DEFAULT,
                n => n.min(LIST_PAGE_MAX),
            } as usize;
            let after: Option<(Vec<u8>, u16)> = if req.start_after.is_empty() {
                None
            } else {
                let (n, t) = req
                    .start_after
                    .rsplit_once(' ')
                    .ok_or_else(|| Status::invalid_argument("start_after is \"NAME TYPE\""))?;
                Some((parse_name(n, None)?.wire().to_vec(), parse_type(t)?.0))
            };
            let state = self.node.sm.state.read().expect("state lock");
            let zone = state.zones.get(&zone_name).ok_or_else(|| {
                Status::not_found(format!("NoSuchHostedZone: no zone {zone_name}"))
            })?;
            let range: Box<dyn Iterator<Item = (&(Vec<u8>, u16), &crate::state::SetData)>> =
                match (&after, &name_filter) {
                    (Some(a), _) => Box::new(zone.sets.range((
                        std::ops::Bound::Excluded(a.clone()),
                        std::ops::Bound::Unbounded,
                    ))),
                    (None, Some(n)) => Box::new(zone.sets.range((n.wire().to_vec(), 0)..)),
                    (None, None) => Box::new(zone.sets.iter()),
                };
            let mut out = Vec::new();
            let mut next_cursor = String::new();
            for ((n, t), d) in range {
                if let Some(f) = &name_filter
                    && n.as_slice() != f.wire()
                {
                    if n.as_slice() > f.wire() {
                        break;
                    }
                    continue;
                }
                if type_filter.is_some_and(|tf| tf.0 != *t) {
                    continue;
                }
                if out.len() == max {
                    let last: &v1::RecordSet = out.last().expect("page not empty");
                    next_cursor = format!("{} {}", last.name, last.r#type);
                    break;
                }
                out.extend(stored_set_to_proto(n, *t, d.ttl, &d.rdatas));
            }
            Ok(Response::new(v1::ListRecordSetsResponse {
                record_sets: out,
                next_cursor,
            }))
        }
        .await;
        self.node.metrics.call("ListRecordSets", code_of(&result));
        result
    }

    async fn get_change(
        &self,
        request: Request<v1::GetChangeRequest>,
    ) -> Result<Response<v1::ChangeInfo>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            self.read_guard(req.stale).await?;
            let record = {
                let state = self.node.sm.state.read().expect("state lock");
                state.changes.get(&req.id).cloned()
            };
            let record = record
                .ok_or_else(|| Status::not_found(format!("NoSuchChange: no change {}", req.id)))?;
            let all = self.cluster_edges().await;
            let status =
                if self.node.edges.is_warm() && edges::in_sync(&all, record.version, now_ms()) {
                    v1::ChangeStatus::Insync
                } else {
                    v1::ChangeStatus::Pending
                };
            Ok(Response::new(v1::ChangeInfo {
                id: record.id,
                status: status as i32,
                version: record.version,
                comment: record.comment,
                submitted_unix_ms: record.submitted_ms,
                warnings: Vec::new(),
            }))
        }
        .await;
        self.node.metrics.call("GetChange", code_of(&result));
        result
    }

    async fn begin_import(
        &self,
        request: Request<v1::BeginImportRequest>,
    ) -> Result<Response<v1::ImportInfo>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            let zone = parse_name(&req.zone, None)?;
            let import_id = format!("I{}", self.node.next_change_id());
            let command = Command::ImportBegin {
                zone: zone.clone(),
                import_id: import_id.clone(),
                comment: req.comment,
                expected_zone_version: req.expected_zone_version,
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            result_to_change(result, "")?;
            Ok(Response::new(self.import_info(&import_id, &zone)))
        }
        .await;
        self.node.metrics.call("BeginImport", code_of(&result));
        result
    }

    async fn import_record_sets(
        &self,
        request: Request<v1::ImportRecordSetsRequest>,
    ) -> Result<Response<v1::ImportInfo>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            let lookup = || {
                let state = self.node.sm.state.read().expect("state lock");
                state
                    .imports
                    .get(&req.import_id)
                    .map(|i| i.meta.zone.clone())
            };
            let zone = match lookup() {
                Some(zone) => Some(zone),
                // A follower may not have applied the begin its leader acknowledged yet.
                None => {
                    self.read_guard(false).await?;
                    lookup()
                }
            }
            .ok_or_else(|| {
                Status::not_found(format!(
                    "NoSuchImport: no import {} in progress",
                    req.import_id
                ))
            })?;
            let mut changes = Vec::with_capacity(req.record_sets.len());
            for (idx, set) in req.record_sets.iter().enumerate() {
                let record_set = record_set_from_proto(set, &zone).map_err(|s| {
                    Status::invalid_argument(format!("record_sets[{idx}]: {}", s.message()))
                })?;
                changes.push(Change {
                    action: Action::Upsert,
                    record_set,
                });
            }
            let command = Command::ImportChunk {
                import_id: req.import_id.clone(),
                seq: req.seq,
                batch: ChangeBatch {
                    comment: String::new(),
                    changes,
                },
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            let staged = result_to_change(result, "")?.version;
            Ok(Response::new(v1::ImportInfo {
                import_id: req.import_id,
                zone: zone.to_string(),
                staged_record_sets: staged,
            }))
        }
        .await;
        self.node.metrics.call("ImportRecordSets", code_of(&result));
        result
    }

    async fn commit_import(
        &self,
        request: Request<v1::CommitImportRequest>,
    ) -> Result<Response<v1::ChangeInfo>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            let comment = {
                let state = self.node.sm.state.read().expect("state lock");
                state
                    .imports
                    .get(&req.import_id)
                    .map(|i| i.meta.comment.clone())
                    .unwrap_or_default()
            };
            let command = Command::ImportCommit {
                import_id: req.import_id,
                chunks: req.chunks,
                change_id: self.node.next_change_id(),
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            Ok(Response::new(result_to_change(result, &comment)?))
        }
        .await;
        self.node.metrics.call("CommitImport", code_of(&result));
        result
    }

    async fn abort_import(
        &self,
        request: Request<v1::ImportIdRequest>,
    ) -> Result<Response<v1::ImportInfo>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            let command = Command::ImportAbort {
                import_id: req.import_id.clone(),
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            result_to_change(result, "")?;
            Ok(Response::new(v1::ImportInfo {
                import_id: req.import_id,
                zone: String::new(),
                staged_record_sets: 0,
            }))
        }
        .await;
        self.node.metrics.call("AbortImport", code_of(&result));
        result
    }
}

fn code_of<T>(result: &Result<T, Status>) -> tonic::Code {
    result
        .as_ref()
        .map_or_else(|s| s.code(), |_| tonic::Code::Ok)
}

impl Api {
    fn import_info(&self, import_id: &str, zone: &Name) -> v1::ImportInfo {
        let state = self.node.sm.state.read().expect("state lock");
        v1::ImportInfo {
            import_id: import_id.to_string(),
            zone: zone.to_string(),
            staged_record_sets: state
                .imports
                .get(import_id)
                .map_or(0, |i| i.data.sets.len() as u64),
        }
    }
}

fn zone_info(zone: &crate::state::ZoneData) -> v1::Zone {
    let meta = zone.meta();
    v1::Zone {
        name: meta.name.to_string(),
        caller_reference: meta.caller_reference.clone(),
        record_set_count: zone.sets.len() as u64,
        version: meta.version,
        created_version: meta.created_version,
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for Api {
    async fn init(
        &self,
        request: Request<v1::InitRequest>,
    ) -> Result<Response<v1::ClusterStatus>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            let mut nodes = BTreeMap::new();
            if req.nodes.is_empty() {
                nodes.insert(
                    self.node.id,
                    BasicNode {
                        addr: self.node.addr.clone(),
                    },
                );
            }
            for n in req.nodes {
                nodes.insert(n.id, BasicNode { addr: n.addr });
            }
            self.node
                .initialize(nodes)
                .await
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            self.status(Request::new(v1::StatusRequest {})).await
        }
        .await;
        self.node.metrics.call("Init", code_of(&result));
        result
    }

    async fn add_node(
        &self,
        request: Request<v1::AddNodeRequest>,
    ) -> Result<Response<v1::ClusterStatus>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            if let Some(mut leader) = self.leader_client().await? {
                return leader.add_node(req).await;
            }
            let node = req
                .node
                .ok_or_else(|| Status::invalid_argument("node missing"))?;
            let raft = &self.node.raft;
            raft.add_learner(
                node.id,
                BasicNode {
                    addr: node.addr.clone(),
                },
                true,
            )
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
            let mut voters: std::collections::BTreeSet<u64> = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            voters.insert(node.id);
            raft.change_membership(voters, false)
                .await
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            self.status(Request::new(v1::StatusRequest {})).await
        }
        .await;
        self.node.metrics.call("AddNode", code_of(&result));
        result
    }

    async fn remove_node(
        &self,
        request: Request<v1::RemoveNodeRequest>,
    ) -> Result<Response<v1::ClusterStatus>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            if let Some(mut leader) = self.leader_client().await? {
                return leader.remove_node(req).await;
            }
            let id = req.id;
            let raft = &self.node.raft;
            let mut voters: std::collections::BTreeSet<u64> = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect();
            if !voters.remove(&id) {
                return Err(Status::not_found(format!("node {id} is not a voter")));
            }
            raft.change_membership(voters, false)
                .await
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            self.status(Request::new(v1::StatusRequest {})).await
        }
        .await;
        self.node.metrics.call("RemoveNode", code_of(&result));
        result
    }

    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::ClusterStatus>, Status> {
        let result: Result<_, Status> = async move {
            let m = self.node.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            let voter_ids: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
            let mut voters = Vec::new();
            let mut learners = Vec::new();
            for (id, node) in membership.nodes() {
                let n = v1::Node {
                    id: *id,
                    addr: node.addr.clone(),
                };
                if voter_ids.contains(id) {
                    voters.push(n)
                } else {
                    learners.push(n)
                }
            }
            let catalog_version = self
                .node
                .sm
                .state
                .read()
                .expect("state lock")
                .catalog_version;
            Ok(Response::new(v1::ClusterStatus {
                node_id: self.node.id,
                leader: m.current_leader,
                term: m.current_term,
                commit_index: self
                    .node
                    .committed_index
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .max(m.last_applied.map(|l| l.index).unwrap_or(0)),
                applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
                voters,
                learners,
                role: format!("{:?}", m.state),
                catalog_version,
            }))
        }
        .await;
        self.node.metrics.call("Status", code_of(&result));
        result
    }
}

fn raft_reply<T: serde::Serialize>(value: &T) -> Result<Response<v1::RaftPayload>, Status> {
    let data = crate::codec::encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(v1::RaftPayload {
        data,
        blob: Vec::new(),
    }))
}

fn raft_decode<T: serde::de::DeserializeOwned>(payload: &v1::RaftPayload) -> Result<T, Status> {
    crate::codec::decode(&payload.data)
        .map_err(|e| Status::invalid_argument(format!("bad Raft payload: {e}")))
}

#[tonic::async_trait]
impl raft_server::Raft for Api {
    async fn append_entries(
        &self,
        request: Request<v1::RaftPayload>,
    ) -> Result<Response<v1::RaftPayload>, Status> {
        let req = raft_decode(request.get_ref())?;
        raft_reply(&self.node.raft.append_entries(req).await)
    }

    async fn vote(
        &self,
        request: Request<v1::RaftPayload>,
    ) -> Result<Response<v1::RaftPayload>, Status> {
        let req = raft_decode(request.get_ref())?;
        raft_reply(&self.node.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<v1::RaftPayload>,
    ) -> Result<Response<v1::RaftPayload>, Status> {
        let payload = request.into_inner();
        let mut req: openraft::raft::InstallSnapshotRequest<crate::types::TypeConfig> =
            raft_decode(&payload)?;
        req.data = payload.blob;
        raft_reply(&self.node.raft.install_snapshot(req).await)
    }

    async fn forward_write(
        &self,
        request: Request<v1::RaftPayload>,
    ) -> Result<Response<v1::RaftPayload>, Status> {
        match raft_decode::<Forwarded>(request.get_ref())? {
            Forwarded::Write(command) => {
                // Only the leader proposes forwarded writes; no second hop.
                let result = self
                    .node
                    .raft
                    .client_write(command)
                    .await
                    .map_err(|e| Status::unavailable(format!("not the leader: {e}")))?;
                raft_reply(&result.data)
            }
            Forwarded::ReadIndex => {
                let index = self
                    .node
                    .read_index()
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                raft_reply(&index)
            }
        }
    }
}

type CatalogStream = Pin<Box<dyn Stream<Item = Result<v1::CatalogUpdate, Status>> + Send>>;

/// Catalog updates an edge needs to go from `have` to the current version: deltas if the
/// history covers the gap, else a full catalog.
pub fn updates_since(node: &ControlNode, have: u64) -> Vec<v1::CatalogUpdate> {
    let state = node.sm.state.read().expect("state lock");
    let newest = state.catalog_version;
    if have > 0
        && let Some(deltas) = state.deltas_since(have)
    {
        return deltas.iter().map(|d| delta_update(d, newest)).collect();
    }
    if have == newest && have > 0 {
        return Vec::new();
    }
    vec![full_update(&state)]
}

fn wire_set(name: &[u8], rtype: u16, ttl: u32, rdatas: &[Vec<u8>]) -> v1::WireRecordSet {
    v1::WireRecordSet {
        name: name.to_vec(),
        r#type: rtype as u32,
        ttl,
        rdata: rdatas.to_vec(),
    }
}

fn full_update(state: &crate::state::State) -> v1::CatalogUpdate {
    v1::CatalogUpdate {
        schema: meridian_proto::CATALOG_SCHEMA,
        version: state.catalog_version,
        base_version: 0,
        checksum: state.catalog_checksum(),
        full: true,
        zones: state
            .zones
            .iter()
            .map(|(origin, z)| v1::ZoneContent {
                origin: origin.wire().to_vec(),
                record_sets: z
                    .sets
                    .iter()
                    .map(|((n, t), d)| wire_set(n, *t, d.ttl, &d.rdatas))
                    .collect(),
            })
            .collect(),
        deltas: Vec::new(),
        newest_version: state.catalog_version,
        routing: Some(routing_to_proto(&state.routing)),
    }
}

/// The routing state as edges receive it.
pub fn routing_to_proto(r: &RoutingState) -> v1::WireRoutingState {
    meridian_proto::routing_to_wire(r)
}

fn delta_update(d: &CatalogDelta, newest: u64) -> v1::CatalogUpdate {
    v1::CatalogUpdate {
        schema: meridian_proto::CATALOG_SCHEMA,
        version: d.version,
        base_version: d.base_version,
        checksum: d.checksum,
        full: false,
        zones: Vec::new(),
        deltas: d
            .zones
            .iter()
            .map(|z| v1::ZoneDelta {
                origin: z.origin.wire().to_vec(),
                delete_zone: z.delete,
                create_zone: z.create,
                put: z
                    .put
                    .iter()
                    .map(|(n, t, s)| wire_set(n, *t, s.ttl, &s.rdatas))
                    .collect(),
                remove: z
                    .remove
                    .iter()
                    .map(|(n, t)| wire_set(n, *t, 0, &[]))
                    .collect(),
            })
            .collect(),
        newest_version: newest,
        routing: d.routing.as_deref().map(routing_to_proto),
    }
}

#[tonic::async_trait]
impl edge_sync_server::EdgeSync for Api {
    type SubscribeStream = CatalogStream;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        if req.schema != meridian_proto::CATALOG_SCHEMA {
            return Err(Status::failed_precondition(format!(
                "catalog schema {} not served (this node serves {})",
                req.schema,
                meridian_proto::CATALOG_SCHEMA
            )));
        }
        tracing::info!(edge = %req.edge_id, pop = %req.pop, have = req.have_version, "edge subscribed");
        let node = self.node.clone();
        let mut version_rx = node.sm.version_tx.subscribe();
        let mut stopping = self.stopping.clone();
        let stream = async_stream(move |tx| async move {
            let mut have = req.have_version;
            loop {
                if *stopping.borrow() {
                    return;
                }
                let updates = updates_since(&node, have);
                for u in updates {
                    have = u.version;
                    if tx.send(Ok(u)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    r = version_rx.changed() => if r.is_err() { return },
                    _ = stopping.changed() => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn report(
        &self,
        request: Request<v1::EdgeReport>,
    ) -> Result<Response<v1::ReportReply>, Status> {
        let result: Result<_, Status> = async move {
            let r = request.into_inner();
            self.node.edges.report(EdgeEntry {
                edge_id: r.edge_id,
                pop: r.pop,
                applied_version: r.applied_version,
                addresses: r.addresses,
                last_seen_ms: 0,
                region_rtt_ms: r.region_rtt_ms.into_iter().collect(),
                announced: r.announced,
                announce_reason: r.announce_reason,
            });
            Ok(Response::new(v1::ReportReply {}))
        }
        .await;
        self.node.metrics.call("Report", code_of(&result));
        result
    }

    async fn set_drain(
        &self,
        request: Request<v1::SetDrainRequest>,
    ) -> Result<Response<v1::ChangeInfo>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            let target: DrainTarget = req.target.parse().map_err(Status::invalid_argument)?;
            if req.comment.chars().count() > COMMENT_CHARS_MAX {
                return Err(Status::invalid_argument(format!(
                    "comment is longer than {COMMENT_CHARS_MAX} characters"
                )));
            }
            let command = Command::DrainSet {
                target: target.to_string(),
                drained: req.drained,
                comment: req.comment,
                change_id: self.node.next_change_id(),
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            Ok(Response::new(result_to_change(result, "")?))
        }
        .await;
        self.node.metrics.call("SetDrain", code_of(&result));
        result
    }

    async fn probe_assignments(
        &self,
        request: Request<v1::ProbeAssignmentsRequest>,
    ) -> Result<Response<v1::ProbeAssignmentsResponse>, Status> {
        let req = request.into_inner();
        let now = now_ms();
        // The POP's live edges, this one included: each check goes to one of them.
        let mut in_pop: Vec<String> = self
            .node
            .edges
            .list()
            .into_iter()
            .filter(|e| e.pop == req.pop && !e.is_stale(now))
            .map(|e| e.edge_id)
            .collect();
        if !in_pop.contains(&req.edge_id) {
            in_pop.push(req.edge_id.clone());
        }
        in_pop.sort();
        let me = in_pop.iter().position(|e| *e == req.edge_id).unwrap_or(0);
        let state = self.node.sm.state.read().expect("state lock");
        let checks = state
            .routing_objects
            .health_checks
            .values()
            .filter(|h| {
                let Ok(spec) = meridian_core::health::parse_config(&h.config) else {
                    return false;
                };
                spec.kind != meridian_core::health::CheckKind::Calculated
                    && !spec.disabled
                    && (spec.pops.is_empty() || spec.pops.contains(&req.pop))
                    && stable_hash(&h.id) as usize % in_pop.len() == me
            })
            .map(|h| v1::ProbeAssignment {
                check_id: h.id.clone(),
                config_json: h.config.clone(),
            })
            .collect();
        Ok(Response::new(v1::ProbeAssignmentsResponse { checks }))
    }

    async fn report_probes(
        &self,
        request: Request<v1::ProbeReport>,
    ) -> Result<Response<v1::ReportReply>, Status> {
        let r = request.into_inner();
        let outcomes: Vec<crate::probes::ProbeOutcome> = r
            .results
            .into_iter()
            .map(|p| crate::probes::ProbeOutcome {
                check_id: p.check_id,
                ok: p.ok,
                rtt_ms: p.rtt_ms,
                detail: p.detail,
                at_ms: p.at_unix_ms,
            })
            .collect();
        let touched = {
            let state = self.node.sm.state.read().expect("state lock");
            self.node.health_views.observe(&state, &r.pop, &outcomes)
        };
        self.node.propose_health_transitions(Some(&touched));
        Ok(Response::new(v1::ReportReply {}))
    }

    async fn list_edges(
        &self,
        request: Request<v1::ListEdgesRequest>,
    ) -> Result<Response<v1::ListEdgesResponse>, Status> {
        let result: Result<_, Status> = async move {
            let local = request.into_inner().local;
            let entries = if local {
                self.node.edges.list()
            } else {
                self.cluster_edges().await
            };
            let now = now_ms();
            let (catalog_version, routing) = {
                let state = self.node.sm.state.read().expect("state lock");
                (state.catalog_version, state.routing_objects.routing_state())
            };
            Ok(Response::new(v1::ListEdgesResponse {
                edges: entries
                    .into_iter()
                    .map(|e| v1::EdgeInfo {
                        stale: e.is_stale(now),
                        drained: routing.is_drained(&e.pop, &e.edge_id),
                        announced: e.announced,
                        announce_reason: e.announce_reason,
                        edge_id: e.edge_id,
                        pop: e.pop,
                        applied_version: e.applied_version,
                        addresses: e.addresses,
                        last_seen_unix_ms: e.last_seen_ms,
                        region_rtt_ms: e.region_rtt_ms.into_iter().collect(),
                    })
                    .collect(),
                catalog_version,
            }))
        }
        .await;
        self.node.metrics.call("ListEdges", code_of(&result));
        result
    }
}

/// FNV-1a: the same check goes to the same edge on every control node.
fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Health check ids: random enough to be unique across the cluster, as Route 53's UUIDs.
fn new_health_check_id(node: &ControlNode) -> String {
    let n = node.next_change_id();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in n.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("hc-{:016x}", h ^ now_ms().rotate_left(29))
}

/// Longest health check config accepted.
const HEALTH_CHECK_CONFIG_BYTES_MAX: usize = 16 * 1024;

/// Validates a `HealthCheckConfig` (the core's rules) and returns it as stored: JSON, without
/// a `HealthCheckConfig` wrapper.
fn health_config(text: &str) -> Result<String, Status> {
    if text.len() > HEALTH_CHECK_CONFIG_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "HealthCheckConfig is over {HEALTH_CHECK_CONFIG_BYTES_MAX} bytes"
        )));
    }
    meridian_core::health::parse_config(text)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    // Parsed once more only to store the operator's fields as given (validation passed).
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| Status::invalid_argument(e.to_string()))?
    } else {
        serde_yaml::from_str(text).map_err(|e| Status::invalid_argument(e.to_string()))?
    };
    Ok(value.get("HealthCheckConfig").unwrap_or(&value).to_string())
}

fn health_status_text(h: &crate::state::HealthCheck) -> &'static str {
    match (h.status_override, h.probe_status) {
        (Some(true), _) => "healthy (operator)",
        (Some(false), _) => "unhealthy (operator)",
        (None, Some(true)) => "healthy (probes)",
        (None, Some(false)) => "unhealthy (probes)",
        (None, None) => "no data: healthy",
    }
}

fn parse_cidr(text: &str) -> Result<(std::net::IpAddr, u8), Status> {
    let bad = || Status::invalid_argument(format!("{text:?} is not a CIDR block (ADDR/LEN)"));
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    let block = meridian_core::policy::CidrBlock {
        network: addr,
        prefix_len: len,
        location: String::new(),
    };
    // The network address must have no host bits (as Route 53 requires).
    if !block.contains(addr) || masked(addr, len) != addr {
        return Err(Status::invalid_argument(format!(
            "{text:?} has host bits set; the network is {}/{len}",
            masked(addr, len)
        )));
    }
    Ok((addr, len))
}

fn masked(addr: std::net::IpAddr, len: u8) -> std::net::IpAddr {
    match addr {
        std::net::IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            std::net::IpAddr::from((u32::from(a) & m).to_be_bytes())
        }
        std::net::IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            std::net::IpAddr::from((u128::from(a) & m).to_be_bytes())
        }
    }
}

/// What `explain` consults: the replicated routing state, the client's location from this
/// node's geo database, and the RTT table edges of the chosen POP report.
struct ExplainEnv<'a> {
    routing: &'a RoutingState,
    client: Option<std::net::IpAddr>,
    location: Option<meridian_core::policy::Location>,
    rtt: BTreeMap<String, u32>,
    /// The POP asked about (measured RTTs are per POP).
    pop: String,
    rng: u64,
}

impl meridian_core::policy::Environment for ExplainEnv<'_> {
    fn healthy(&self, check: &str) -> Option<bool> {
        self.routing.health.get(check).copied()
    }
    fn location(&self) -> Option<meridian_core::policy::Location<&str>> {
        self.location.as_ref().map(|l| l.as_ref())
    }
    fn cidr_location(&self, collection: &str) -> Option<&str> {
        self.routing.cidr_location(collection, self.client?)
    }
    fn rtt_ms(&self, region: &str, check: Option<&str>) -> Option<u32> {
        if let Some(ms) = check.and_then(|c| self.routing.rtt.get(&self.pop)?.get(c)) {
            return Some(*ms);
        }
        self.rtt.get(region).copied()
    }
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[tonic::async_trait]
impl routing_server::Routing for Api {
    async fn create_health_check(
        &self,
        request: Request<v1::CreateHealthCheckRequest>,
    ) -> Result<Response<v1::HealthCheck>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            check_client_token("caller_reference", &req.caller_reference)?;
            let config = health_config(&req.config_json)?;
            let id = new_health_check_id(&self.node);
            let command = Command::HealthCheckCreate {
                id: id.clone(),
                caller_reference: req.caller_reference.clone(),
                config: config.clone(),
                change_id: self.node.next_change_id(),
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            let info = result_to_change(result, "")?;
            Ok(Response::new(v1::HealthCheck {
                id,
                caller_reference: req.caller_reference,
                config_json: config,
                status: "no data: healthy".into(),
                version: info.version,
                evidence: String::new(),
                pops: Vec::new(),
            }))
        }
        .await;
        self.node
            .metrics
            .call("CreateHealthCheck", code_of(&result));
        result
    }

    async fn delete_health_check(
        &self,
        request: Request<v1::HealthCheckIdRequest>,
    ) -> Result<Response<v1::ChangeInfo>, Status> {
        let result: Result<_, Status> = async move {
            let command = Command::HealthCheckDelete {
                id: request.into_inner().id,
                change_id: self.node.next_change_id(),
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            Ok(Response::new(result_to_change(result, "")?))
        }
        .await;
        self.node
            .metrics
            .call("DeleteHealthCheck", code_of(&result));
        result
    }

    async fn update_health_check(
        &self,
        request: Request<v1::UpdateHealthCheckRequest>,
    ) -> Result<Response<v1::ChangeInfo>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            let config = health_config(&req.config_json)?;
            let command = Command::HealthCheckUpdate {
                id: req.id,
                config,
                change_id: self.node.next_change_id(),
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            Ok(Response::new(result_to_change(result, "")?))
        }
        .await;
        self.node
            .metrics
            .call("UpdateHealthCheck", code_of(&result));
        result
    }

    async fn list_health_checks(
        &self,
        request: Request<v1::ListHealthChecksRequest>,
    ) -> Result<Response<v1::ListHealthChecksResponse>, Status> {
        let result: Result<_, Status> = async move {
            self.read_guard(request.into_inner().stale).await?;
            let state = self.node.sm.state.read().expect("state lock");
            Ok(Response::new(v1::ListHealthChecksResponse {
                health_checks: state
                    .routing_objects
                    .health_checks
                    .values()
                    .map(|h| v1::HealthCheck {
                        id: h.id.clone(),
                        caller_reference: h.caller_reference.clone(),
                        config_json: h.config.clone(),
                        status: {
                            let seen = self.node.health_views.of(&h.id);
                            // Healthy is the starting status, so the first healthy verdict is
                            // not written; say it comes from the probes once they have spoken.
                            if h.status_override.is_none()
                                && h.probe_status.is_none()
                                && seen.values().any(|v| v.healthy.is_some())
                            {
                                "healthy (probes)".into()
                            } else {
                                health_status_text(h).into()
                            }
                        },
                        version: h.created_version,
                        evidence: h.evidence.clone(),
                        pops: self
                            .node
                            .health_views
                            .of(&h.id)
                            .into_iter()
                            .map(|(pop, v)| v1::PopHealth {
                                pop,
                                verdict: match v.healthy {
                                    Some(true) => "healthy",
                                    Some(false) => "unhealthy",
                                    None => "no data",
                                }
                                .into(),
                                last_ok: v.last_ok,
                                last_rtt_ms: v.last_rtt_ms,
                                last_detail: v.last_detail,
                                last_unix_ms: v.last_ms,
                                consecutive_failures: v.consecutive_failures,
                                consecutive_successes: v.consecutive_successes,
                            })
                            .collect(),
                    })
                    .collect(),
            }))
        }
        .await;
        self.node.metrics.call("ListHealthChecks", code_of(&result));
        result
    }

    async fn set_health_status(
        &self,
        request: Request<v1::SetHealthStatusRequest>,
    ) -> Result<Response<v1::ChangeInfo>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            let healthy = match req.status.to_ascii_lowercase().as_str() {
                "healthy" => Some(true),
                "unhealthy" => Some(false),
                "auto" => None,
                other => {
                    return Err(Status::invalid_argument(format!(
                        "status {other:?} is healthy, unhealthy or auto"
                    )));
                }
            };
            let command = Command::HealthStatusSet {
                id: req.id,
                healthy,
                change_id: self.node.next_change_id(),
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            Ok(Response::new(result_to_change(result, "")?))
        }
        .await;
        self.node.metrics.call("SetHealthStatus", code_of(&result));
        result
    }

    async fn put_cidr_collection(
        &self,
        request: Request<v1::CidrCollection>,
    ) -> Result<Response<v1::ChangeInfo>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            if req.name.is_empty() || req.name.len() > meridian_core::policy::POLICY_LABEL_BYTES_MAX
            {
                return Err(Status::invalid_argument(
                    "collection name is 1 to 128 bytes",
                ));
            }
            let mut blocks = Vec::with_capacity(req.blocks.len());
            for b in &req.blocks {
                let (network, prefix_len) = parse_cidr(&b.cidr)?;
                if b.location_name.is_empty()
                    || b.location_name.len() > meridian_core::policy::POLICY_LABEL_BYTES_MAX
                {
                    return Err(Status::invalid_argument("location name is 1 to 128 bytes"));
                }
                if blocks.iter().any(|o: &meridian_core::policy::CidrBlock| {
                    o.network == network && o.prefix_len == prefix_len
                }) {
                    return Err(Status::invalid_argument(format!(
                        "{} is given twice",
                        b.cidr
                    )));
                }
                blocks.push(meridian_core::policy::CidrBlock {
                    network,
                    prefix_len,
                    location: b.location_name.clone(),
                });
            }
            let command = Command::CidrCollectionPut {
                name: req.name,
                blocks,
                change_id: self.node.next_change_id(),
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            Ok(Response::new(result_to_change(result, "")?))
        }
        .await;
        self.node
            .metrics
            .call("PutCidrCollection", code_of(&result));
        result
    }

    async fn delete_cidr_collection(
        &self,
        request: Request<v1::CidrCollectionIdRequest>,
    ) -> Result<Response<v1::ChangeInfo>, Status> {
        let result: Result<_, Status> = async move {
            let command = Command::CidrCollectionDelete {
                name: request.into_inner().name,
                change_id: self.node.next_change_id(),
                submitted_ms: now_ms(),
            };
            let result = self.node.write(command).await.map_err(status)?;
            Ok(Response::new(result_to_change(result, "")?))
        }
        .await;
        self.node
            .metrics
            .call("DeleteCidrCollection", code_of(&result));
        result
    }

    async fn list_cidr_collections(
        &self,
        request: Request<v1::ListCidrCollectionsRequest>,
    ) -> Result<Response<v1::ListCidrCollectionsResponse>, Status> {
        let result: Result<_, Status> = async move {
            self.read_guard(request.into_inner().stale).await?;
            let state = self.node.sm.state.read().expect("state lock");
            Ok(Response::new(v1::ListCidrCollectionsResponse {
                collections: state
                    .routing_objects
                    .cidr
                    .iter()
                    .map(|(name, blocks)| v1::CidrCollection {
                        name: name.clone(),
                        blocks: blocks
                            .iter()
                            .map(|b| v1::CidrBlock {
                                cidr: b.to_string(),
                                location_name: b.location.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
            }))
        }
        .await;
        self.node
            .metrics
            .call("ListCidrCollections", code_of(&result));
        result
    }

    async fn explain(
        &self,
        request: Request<v1::ExplainRequest>,
    ) -> Result<Response<v1::ExplainResponse>, Status> {
        let result: Result<_, Status> = async move {
            let req = request.into_inner();
            let name = parse_name(&req.name, None)?;
            let rtype = parse_type(&req.r#type)?;
            let client: Option<std::net::IpAddr> = if !req.ecs.is_empty() {
                Some(parse_cidr(&req.ecs)?.0)
            } else if !req.client.is_empty() {
                Some(req.client.parse().map_err(|_| {
                    Status::invalid_argument(format!("client {:?} is not an address", req.client))
                })?)
            } else {
                None
            };
            let rtt: BTreeMap<String, u32> = if req.pop.is_empty() {
                BTreeMap::new()
            } else {
                let edges = self.cluster_edges().await;
                let in_pop: Vec<_> = edges.iter().filter(|e| e.pop == req.pop).collect();
                if in_pop.is_empty() {
                    return Err(Status::not_found(format!(
                        "no edge reports POP {:?}",
                        req.pop
                    )));
                }
                in_pop
                    .iter()
                    .max_by_key(|e| e.last_seen_ms)
                    .map(|e| e.region_rtt_ms.clone())
                    .unwrap_or_default()
            };
            self.read_guard(false).await?;
            let mut steps = Vec::new();
            let location = match (client, self.node.geo.get()) {
                (Some(ip), Some(geo)) => {
                    let l = geo.locate(ip).map(|l| meridian_core::policy::Location {
                        continent: l.continent.map(str::to_string),
                        country: l.country.map(str::to_string),
                        subdivision: l.subdivision.map(str::to_string),
                        coordinates: l.coordinates,
                    });
                    match &l {
                        Some(l) => steps.push(format!("client {ip}: {l}")),
                        None => steps.push(format!("client {ip}: not in the geo database")),
                    }
                    l
                }
                (Some(ip), None) => {
                    steps.push(format!(
                        "client {ip}: this control node has no geo database"
                    ));
                    None
                }
                (None, _) => {
                    steps.push("no client address given: location unknown".into());
                    None
                }
            };
            if !req.pop.is_empty() {
                steps.push(format!("POP {} RTTs: {:?}", req.pop, rtt));
            }
            let state = self.node.sm.state.read().expect("state lock");
            let lookup = |n: &Name, t: RType| {
                let (_, z) = crate::state::zone_of(&state.zones, n)?;
                let key = (n.to_lowercase().wire().to_vec(), t.0);
                z.sets.get(&key).map(|d| crate::state::set_of(n, t, d))
            };
            if crate::state::zone_of(&state.zones, &name).is_none() {
                return Err(Status::not_found(format!("no hosted zone holds {name}")));
            }
            let mut env = ExplainEnv {
                routing: &state.routing,
                client,
                location,
                rtt,
                pop: req.pop.clone(),
                rng: now_ms(),
            };
            let e = meridian_core::routed::explain(&lookup, &name, rtype, &mut env);
            steps.extend(e.steps);
            let answer: Vec<String> = e
                .answer
                .iter()
                .flat_map(|s| {
                    s.rdatas.iter().map(move |rd| {
                        format!(
                            "{} {} IN {} {}",
                            s.name,
                            s.ttl,
                            s.rtype,
                            meridian_core::rdata::rdata_to_text(s.rtype, rd)
                        )
                    })
                })
                .collect();
            Ok(Response::new(v1::ExplainResponse {
                rcode: "NOERROR".into(),
                answer,
                steps,
            }))
        }
        .await;
        self.node.metrics.call("Explain", code_of(&result));
        result
    }
}

/// A stream fed by a task through a bounded channel (backpressure: a slow edge slows its own
/// stream only).
fn async_stream<F, Fut>(f: F) -> CatalogStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<v1::CatalogUpdate, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    /// Updates queued per subscriber before the producer waits.
    const SUBSCRIBER_QUEUE_MAX: usize = 64;
    let (tx, rx) = tokio::sync::mpsc::channel(SUBSCRIBER_QUEUE_MAX);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Serves every service of `node` on `listener` until `shutdown` resolves.
pub async fn serve(
    node: Arc<ControlNode>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    /// After the shutdown signal, connections get this long to finish before we stop anyway.
    const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let api = Api { node, stopping };
    let (grace_tx, grace_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
        let _ = grace_tx.send(());
    };
    // Nagle off on every accepted connection: tonic's `tcp_nodelay` does not apply to an
    // incoming stream we hand it, and Nagle + delayed ACKs add ~40 ms to small replies (commit
    // acknowledgements, catalog deltas).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(
            zones_server::ZonesServer::new(api.clone())
                .max_decoding_message_size(API_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(API_MESSAGE_BYTES_MAX),
        )
        .add_service(cluster_server::ClusterServer::new(api.clone()))
        .add_service(routing_server::RoutingServer::new(api.clone()))
        .add_service(
            raft_server::RaftServer::new(api.clone())
                .max_decoding_message_size(crate::network::RAFT_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(crate::network::RAFT_MESSAGE_BYTES_MAX),
        )
        .add_service(
            edge_sync_server::EdgeSyncServer::new(api)
                .max_encoding_message_size(CATALOG_MESSAGE_BYTES_MAX)
                .max_decoding_message_size(API_MESSAGE_BYTES_MAX),
        )
        .serve_with_incoming_shutdown(incoming, shutdown);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r.map_err(|e| Error::Serve(e.to_string())),
        _ = async {
            let _ = grace_rx.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("connections still open after the shutdown grace period; stopping anyway");
            Ok(())
        }
    }
}
