//! The replicated state: hosted zones and their record sets, changes, idempotency tokens. Pure
//! and deterministic: `apply` is a function of the state and one command; it returns the result,
//! the catalog delta for edges (if the catalog changed) and the keys to persist.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use meridian_core::Name;
use meridian_core::catalog::{
    CIDR_BLOCKS_MAX, CIDR_COLLECTIONS_MAX, HEALTH_CHECKS_MAX, RoutingState,
};
use meridian_core::change::{self, Mutation, RecordSet};
use meridian_core::policy::{CidrBlock, Policy};
use meridian_core::rdata::RType;
use meridian_core::routed::{self, ROUTED_TTL};
use meridian_core::zone::{rrset_checksum, zone_checksum_term};
use openraft::{BasicNode, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::types::{ChangeRecord, Command, CommandResult, LogId, NodeId};

/// Catalog deltas kept in memory for edges that reconnect. An edge further behind gets a full
/// catalog. 4,096 versions cover minutes of heavy change traffic at a few MB.
pub const DELTA_HISTORY_MAX: usize = 4096;
/// Changes remembered for `GetChange` and idempotency tokens; older ones are forgotten.
pub const CHANGES_KEPT_MAX: usize = 100_000;
/// Hosted zones per cluster.
pub const ZONES_MAX: usize = 100_000;
/// Staged imports at once: each holds a whole zone's new content in memory on every node (a
/// 1M-set zone is about 600 MB), so a few at a time.
pub const IMPORTS_MAX: usize = 4;
/// An import that receives nothing for this long (by the proposers' clocks in later entries)
/// is dropped when another import begins: a crashed or abandoned client frees its slot.
pub const IMPORT_IDLE_MAX_MS: u64 = 10 * 60 * 1000;
/// Chunks per import: at 5,000 sets each, far beyond the largest zone (`ZONE_RECORD_SETS_MAX`).
pub const IMPORT_CHUNKS_MAX: u64 = 100_000;
/// A committed import larger than this is not kept as a delta (it would hold a copy of the
/// zone in the history): edges receive a full catalog instead.
pub const DELTA_INLINE_SETS_MAX: usize = 10_000;

/// One record set's data.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetData {
    pub ttl: u32,
    pub rdatas: Vec<Vec<u8>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZoneMeta {
    pub name: Name,
    pub caller_reference: String,
    /// Catalog version of the zone's last change (compare-and-set target).
    pub version: u64,
    pub created_version: u64,
    /// Which stored copy of the sets is live: set keys carry it, so an import stages a new
    /// generation beside the live one and its commit switches by rewriting only this meta.
    #[serde(default)]
    pub generation: u64,
}

/// What is persisted about a staged import (its sets are stored under its generation).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportMeta {
    pub id: String,
    pub zone: Name,
    /// Generation the staged sets are stored under (the begin entry's log index).
    pub generation: u64,
    pub comment: String,
    pub expected_zone_version: Option<u64>,
    /// Sequence numbers of the chunks applied so far. Chunks may arrive in any order (a client
    /// keeps several in flight); a retried chunk is applied once; the commit names how many
    /// chunks there were, so a lost one is noticed.
    pub chunks_applied: std::collections::BTreeSet<u64>,
    /// Proposer's clock at the last entry for this import, for expiry.
    pub last_ms: u64,
}

/// A staged import: its meta and the zone content built so far.
#[derive(Clone, Debug)]
pub struct Import {
    pub meta: ImportMeta,
    pub data: ZoneData,
}

#[derive(Clone, Debug, Default)]
pub struct ZoneData {
    pub meta: Option<ZoneMeta>,
    /// (lowercase owner wire, type) → data.
    pub sets: BTreeMap<(Vec<u8>, u16), SetData>,
    /// Wrapping sum of `rrset_checksum` over `sets`; equals the edge's `Zone::checksum`.
    pub checksum: u64,
    /// Records over all sets.
    pub record_count: usize,
    /// DNAME sets in the zone (validation looks for one above written names only if any).
    pub dname_count: usize,
}

impl ZoneData {
    pub fn meta(&self) -> &ZoneMeta {
        self.meta.as_ref().expect("zone data always has its meta")
    }

    pub(crate) fn put(&mut self, name: Vec<u8>, rtype: u16, data: SetData) {
        let key = (name, rtype);
        self.record_count += data.rdatas.len();
        self.dname_count += usize::from(rtype == RType::DNAME.0);
        if let Some(old) = self.sets.get(&key) {
            self.dname_count -= usize::from(rtype == RType::DNAME.0);
            self.record_count -= old.rdatas.len();
            self.checksum = self.checksum.wrapping_sub(rrset_checksum(
                &key.0,
                RType(rtype),
                old.ttl,
                old.rdatas.iter().map(Vec::as_slice),
            ));
        }
        self.checksum = self.checksum.wrapping_add(rrset_checksum(
            &key.0,
            RType(rtype),
            data.ttl,
            data.rdatas.iter().map(Vec::as_slice),
        ));
        self.sets.insert(key, data);
    }

    fn remove(&mut self, name: &[u8], rtype: u16) {
        if let Some(old) = self.sets.remove(&(name.to_vec(), rtype)) {
            self.record_count -= old.rdatas.len();
            self.dname_count -= usize::from(rtype == RType::DNAME.0);
            self.checksum = self.checksum.wrapping_sub(rrset_checksum(
                name,
                RType(rtype),
                old.ttl,
                old.rdatas.iter().map(Vec::as_slice),
            ));
        }
    }
}

/// A registered health check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealthCheck {
    pub id: String,
    pub caller_reference: String,
    /// Route 53 `HealthCheckConfig`, JSON.
    pub config: String,
    /// Operator verdict; `None`: automatic (the probes' verdict).
    pub status_override: Option<bool>,
    pub created_version: u64,
    /// The probes' verdict by quorum of POPs; `None`: no data yet (healthy, as Route 53).
    #[serde(default)]
    pub probe_status: Option<bool>,
    /// Why the last probe transition happened.
    #[serde(default)]
    pub evidence: String,
}

impl HealthCheck {
    /// The verdict edges use: the operator's, else the probes', else none (healthy).
    pub fn verdict(&self) -> Option<bool> {
        self.status_override.or(self.probe_status)
    }
}

/// Health checks and CIDR collections: persisted together (small, rewritten whole on change).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoutingObjects {
    pub health_checks: BTreeMap<String, HealthCheck>,
    pub cidr: BTreeMap<String, Vec<CidrBlock>>,
    /// POP → check → smoothed RTT the POP's probes measure (latency records).
    #[serde(default)]
    pub rtt: BTreeMap<String, BTreeMap<String, u32>>,
    /// Drained POPs and edges (`pop/NAME`, `edge/ID`), as edges receive them.
    #[serde(default)]
    pub drained: std::collections::BTreeSet<String>,
}

impl RoutingObjects {
    /// What edges need of these objects.
    pub fn routing_state(&self) -> RoutingState {
        RoutingState {
            health: self
                .health_checks
                .values()
                .filter_map(|h| h.verdict().map(|v| (h.id.clone(), v)))
                .collect(),
            cidr: self.cidr.clone(),
            rtt: self.rtt.clone(),
            // Entries were validated when proposed; an unparsable one (never written) is skipped.
            drained: self.drained.iter().filter_map(|d| d.parse().ok()).collect(),
        }
    }
}

/// Read-only view of a zone for change validation in the pure core.
struct ZoneView<'a> {
    origin: &'a Name,
    data: &'a ZoneData,
    /// Every zone, for alias targets in other zones.
    zones: &'a BTreeMap<Name, ZoneData>,
    routing: &'a RoutingObjects,
}

/// A stored set as the change model sees it (routed groups stay encoded).
pub(crate) fn set_of(name: &Name, rtype: RType, d: &SetData) -> RecordSet {
    RecordSet {
        name: name.to_lowercase(),
        rtype,
        ttl: d.ttl,
        rdatas: d.rdatas.clone(),
        set_identifier: None,
        policy: None,
        health_check: None,
        alias: None,
        fail_closed: false,
    }
}

/// The zone holding `name` (longest origin), if any.
pub fn zone_of<'a>(
    zones: &'a BTreeMap<Name, ZoneData>,
    name: &Name,
) -> Option<(&'a Name, &'a ZoneData)> {
    let mut at = Some(name.to_lowercase());
    while let Some(n) = at {
        if let Some((origin, data)) = zones.get_key_value(&n) {
            return Some((origin, data));
        }
        at = n.parent();
    }
    None
}

impl change::ZoneState for ZoneView<'_> {
    fn origin(&self) -> &Name {
        self.origin
    }

    fn get(&self, name: &Name, rtype: RType) -> Option<RecordSet> {
        let key = (name.wire().to_vec(), rtype.0);
        self.data.sets.get(&key).map(|d| set_of(name, rtype, d))
    }

    fn routed_at(&self, name: &Name, rtype: RType) -> bool {
        let key = (name.wire().to_vec(), rtype.0);
        self.data
            .sets
            .get(&key)
            .is_some_and(|d| d.ttl == ROUTED_TTL)
    }

    fn health_check_exists(&self, id: &str) -> bool {
        self.routing.health_checks.contains_key(id)
    }

    fn cidr_collection_exists(&self, name: &str) -> bool {
        self.routing.cidr.contains_key(name)
    }

    fn resolve(&self, name: &Name, rtype: RType) -> Option<RecordSet> {
        let (_, data) = zone_of(self.zones, name)?;
        let key = (name.to_lowercase().wire().to_vec(), rtype.0);
        data.sets.get(&key).map(|d| set_of(name, rtype, d))
    }

    fn records_in(&self, name: &Name, rtype: RType) -> Option<usize> {
        let key = (name.wire().to_vec(), rtype.0);
        self.data.sets.get(&key).map(|d| d.rdatas.len())
    }

    fn types_at(&self, name: &Name) -> Vec<RType> {
        let wire = name.wire().to_vec();
        self.data
            .sets
            .range((wire.clone(), 0)..=(wire, u16::MAX))
            .map(|((_, t), _)| RType(*t))
            .collect()
    }

    fn record_set_count(&self) -> usize {
        self.data.sets.len()
    }

    fn record_count(&self) -> usize {
        self.data.record_count
    }

    fn may_have_dname(&self) -> bool {
        self.data.dname_count > 0
    }

    fn record_sets_below(&self, name: &Name) -> usize {
        // Wire names sort by their first label, not by ancestry: a scan, asked only when a
        // batch adds a DNAME.
        let below = name.to_lowercase();
        self.data
            .sets
            .keys()
            .filter(|(n, _)| {
                n.len() > below.wire().len() && meridian_core::name::is_subdomain(n, below.wire())
            })
            .count()
    }
}

/// What one applied entry did to the catalog, for edges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogDelta {
    pub version: u64,
    pub base_version: u64,
    pub checksum: u64,
    pub zones: Vec<ZoneDelta>,
    /// The routing state when this entry changed it (health verdicts, CIDR collections).
    pub routing: Option<Arc<RoutingState>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneDelta {
    pub origin: Name,
    pub create: bool,
    pub delete: bool,
    pub put: Vec<(Vec<u8>, u16, SetData)>,
    pub remove: Vec<(Vec<u8>, u16)>,
}

/// A key-value write the storage layer persists for an applied entry. Each names a key whose
/// value the storage layer reads from the state after the whole apply call (the latest value
/// wins), so the order of items only matters for range deletions, which come first.
#[derive(Clone, Debug)]
pub enum Persist {
    Zone(Name),
    /// The zone is gone: its meta and every set of this generation.
    ZoneDeleted(Name, u64),
    /// A set of the zone's live generation.
    Set(Name, Vec<u8>, u16),
    /// A set of a given generation: the live zone's or a staged import's.
    SetAt(Name, u64, Vec<u8>, u16),
    /// Every set stored under this zone generation is garbage (replaced by an import).
    GenerationDropped(Name, u64),
    Import(String),
    /// The import is gone (committed or dropped): its meta, and its sets unless committed.
    ImportDropped {
        id: String,
        zone: Name,
        generation: u64,
        committed: bool,
    },
    Change(String),
    /// Health checks and CIDR collections (one value).
    Routing,
}

#[derive(Debug, Default)]
pub struct State {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub catalog_version: u64,
    pub zones: BTreeMap<Name, ZoneData>,
    pub changes: BTreeMap<String, ChangeRecord>,
    /// Change ids in commit order, to forget the oldest.
    pub change_order: VecDeque<String>,
    pub tokens: BTreeMap<String, String>,
    pub deltas: VecDeque<CatalogDelta>,
    /// Staged imports by id.
    pub imports: BTreeMap<String, Import>,
    pub routing_objects: RoutingObjects,
    /// `routing_objects` as edges see them, rebuilt when they change.
    pub routing: Arc<RoutingState>,
}

fn rejected(code: &str, message: impl Into<String>) -> CommandResult {
    CommandResult::Rejected {
        code: code.to_string(),
        message: message.into(),
    }
}

impl State {
    /// Checksum of the whole catalog, as an edge computes it over its zones.
    pub fn catalog_checksum(&self) -> u64 {
        self.zones
            .iter()
            .map(|(origin, z)| zone_checksum_term(origin.wire(), z.checksum))
            .fold(0u64, u64::wrapping_add)
            .wrapping_add(self.routing.checksum())
    }

    /// Zones whose routed sets name this health check or CIDR collection (for in-use refusals).
    fn routing_users(&self, uses: impl Fn(&RecordSet) -> bool) -> Option<String> {
        for (origin, z) in &self.zones {
            for ((name, rtype), d) in z.sets.iter().filter(|(_, d)| d.ttl == ROUTED_TTL) {
                let Ok(name) = Name::from_wire(name) else {
                    continue;
                };
                let sets = routed::to_record_sets(&name, RType(*rtype), &d.rdatas);
                if let Some(v) = sets.iter().find(|v| uses(v)) {
                    return Some(format!(
                        "{} {} set {:?} (zone {origin})",
                        v.name,
                        v.rtype,
                        v.set_identifier.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        None
    }

    /// Commits a change to health checks or CIDR collections: a catalog version whose delta
    /// carries the new routing state.
    fn commit_routing(
        &mut self,
        index: u64,
        change_id: &str,
        comment: String,
        submitted_ms: u64,
        persist: &mut Vec<Persist>,
    ) -> (CommandResult, Option<CatalogDelta>) {
        let base_version = self.catalog_version;
        self.catalog_version = index;
        self.routing = Arc::new(self.routing_objects.routing_state());
        persist.push(Persist::Routing);
        let record = ChangeRecord {
            id: change_id.to_string(),
            version: index,
            comment,
            submitted_ms,
            zone: Name::root(),
        };
        let result = CommandResult::Applied {
            change_id: record.id.clone(),
            version: index,
        };
        let delta = CatalogDelta {
            version: index,
            base_version,
            checksum: self.catalog_checksum(),
            zones: Vec::new(),
            routing: Some(self.routing.clone()),
        };
        self.remember_change(record, persist);
        self.push_delta(delta.clone());
        (result, Some(delta))
    }

    fn apply_routing_command(
        &mut self,
        index: u64,
        command: &Command,
        persist: &mut Vec<Persist>,
    ) -> (CommandResult, Option<CatalogDelta>) {
        let objects = &mut self.routing_objects;
        let (change_id, submitted_ms, comment) = match command {
            Command::HealthCheckCreate {
                id,
                caller_reference,
                config,
                change_id,
                submitted_ms,
            } => {
                if objects.health_checks.contains_key(id) {
                    return (
                        rejected(
                            "HealthCheckAlreadyExists",
                            format!("health check {id} exists"),
                        ),
                        None,
                    );
                }
                if let Some(h) = objects.health_checks.values().find(|h| {
                    !caller_reference.is_empty() && h.caller_reference == *caller_reference
                }) {
                    return (
                        rejected(
                            "HealthCheckAlreadyExists",
                            format!(
                                "caller reference {caller_reference:?} already made health check {}",
                                h.id
                            ),
                        ),
                        None,
                    );
                }
                if objects.health_checks.len() >= HEALTH_CHECKS_MAX {
                    return (
                        rejected(
                            "TooManyHealthChecks",
                            format!("the limit is {HEALTH_CHECKS_MAX}"),
                        ),
                        None,
                    );
                }
                objects.health_checks.insert(
                    id.clone(),
                    HealthCheck {
                        id: id.clone(),
                        caller_reference: caller_reference.clone(),
                        config: config.clone(),
                        status_override: None,
                        created_version: index,
                        probe_status: None,
                        evidence: String::new(),
                    },
                );
                (
                    change_id,
                    *submitted_ms,
                    format!("create health check {id}"),
                )
            }
            Command::HealthCheckDelete {
                id,
                change_id,
                submitted_ms,
            } => {
                if !self.routing_objects.health_checks.contains_key(id) {
                    return (
                        rejected("NoSuchHealthCheck", format!("no health check {id}")),
                        None,
                    );
                }
                if let Some(user) = self.routing_users(|v| v.health_check.as_deref() == Some(id)) {
                    return (
                        rejected(
                            "HealthCheckInUse",
                            format!("health check {id} is used by {user}"),
                        ),
                        None,
                    );
                }
                self.routing_objects.health_checks.remove(id);
                (
                    change_id,
                    *submitted_ms,
                    format!("delete health check {id}"),
                )
            }
            Command::HealthStatusSet {
                id,
                healthy,
                change_id,
                submitted_ms,
            } => {
                let Some(h) = objects.health_checks.get_mut(id) else {
                    return (
                        rejected("NoSuchHealthCheck", format!("no health check {id}")),
                        None,
                    );
                };
                h.status_override = *healthy;
                let what = match healthy {
                    Some(true) => "healthy",
                    Some(false) => "unhealthy",
                    None => "automatic",
                };
                (
                    change_id,
                    *submitted_ms,
                    format!("health check {id} set {what}"),
                )
            }
            Command::HealthCheckUpdate {
                id,
                config,
                change_id,
                submitted_ms,
            } => {
                let Some(h) = objects.health_checks.get_mut(id) else {
                    return (
                        rejected("NoSuchHealthCheck", format!("no health check {id}")),
                        None,
                    );
                };
                h.config = config.clone();
                (
                    change_id,
                    *submitted_ms,
                    format!("update health check {id}"),
                )
            }
            Command::RttPublish {
                rtt,
                change_id,
                submitted_ms,
            } => {
                // Only checks that exist: a deleted check's RTTs go with it.
                objects.rtt = rtt
                    .iter()
                    .map(|(pop, m)| {
                        let kept: BTreeMap<String, u32> = m
                            .iter()
                            .filter(|(c, _)| objects.health_checks.contains_key(*c))
                            .map(|(c, ms)| (c.clone(), *ms))
                            .collect();
                        (pop.clone(), kept)
                    })
                    .filter(|(_, m)| !m.is_empty())
                    .collect();
                (change_id, *submitted_ms, "measured RTTs".to_string())
            }
            Command::HealthTransition {
                id,
                healthy,
                evidence,
                change_id,
                submitted_ms,
            } => {
                let Some(h) = objects.health_checks.get_mut(id) else {
                    return (
                        rejected("NoSuchHealthCheck", format!("no health check {id}")),
                        None,
                    );
                };
                if h.probe_status == Some(*healthy) {
                    return (
                        rejected("NoChange", format!("health check {id} is already so")),
                        None,
                    );
                }
                h.probe_status = Some(*healthy);
                h.evidence = evidence.clone();
                let what = if *healthy { "healthy" } else { "unhealthy" };
                (
                    change_id,
                    *submitted_ms,
                    format!("health check {id} {what}: {evidence}"),
                )
            }
            Command::CidrCollectionPut {
                name,
                blocks,
                change_id,
                submitted_ms,
            } => {
                if !objects.cidr.contains_key(name) && objects.cidr.len() >= CIDR_COLLECTIONS_MAX {
                    return (
                        rejected(
                            "TooManyCidrCollections",
                            format!("the limit is {CIDR_COLLECTIONS_MAX}"),
                        ),
                        None,
                    );
                }
                // The limit is on all collections together: edges receive them as one message.
                let others: usize = objects
                    .cidr
                    .iter()
                    .filter(|(n, _)| *n != name)
                    .map(|(_, b)| b.len())
                    .sum();
                if others + blocks.len() > CIDR_BLOCKS_MAX {
                    return (
                        rejected(
                            "TooManyCidrBlocks",
                            format!(
                                "CIDR blocks of all collections together are limited to {CIDR_BLOCKS_MAX}"
                            ),
                        ),
                        None,
                    );
                }
                objects.cidr.insert(name.clone(), blocks.clone());
                (
                    change_id,
                    *submitted_ms,
                    format!("put CIDR collection {name}"),
                )
            }
            Command::CidrCollectionDelete {
                name,
                change_id,
                submitted_ms,
            } => {
                if !self.routing_objects.cidr.contains_key(name) {
                    return (
                        rejected("NoSuchCidrCollection", format!("no CIDR collection {name}")),
                        None,
                    );
                }
                if let Some(user) = self.routing_users(|v| {
                    matches!(&v.policy, Some(Policy::IpBased { collection, .. }) if collection == name)
                }) {
                    return (rejected("CidrCollectionInUse", format!("CIDR collection {name} is used by {user}")), None);
                }
                self.routing_objects.cidr.remove(name);
                (
                    change_id,
                    *submitted_ms,
                    format!("delete CIDR collection {name}"),
                )
            }
            Command::DrainSet {
                target,
                drained,
                comment,
                change_id,
                submitted_ms,
            } => {
                if let Err(e) = target.parse::<meridian_core::catalog::DrainTarget>() {
                    return (rejected("InvalidDrainTarget", e), None);
                }
                if *drained
                    && !objects.drained.contains(target)
                    && objects.drained.len() >= meridian_core::catalog::DRAINED_MAX
                {
                    return (
                        rejected(
                            "TooManyDrains",
                            format!(
                                "{} POPs and edges are drained already",
                                meridian_core::catalog::DRAINED_MAX
                            ),
                        ),
                        None,
                    );
                }
                // Idempotent: draining a drained target (or undraining an undrained one) still
                // commits, so the caller gets a change id to wait on.
                let verb = if *drained {
                    objects.drained.insert(target.clone());
                    "drain"
                } else {
                    objects.drained.remove(target);
                    "undrain"
                };
                let what = if comment.is_empty() {
                    format!("{verb} {target}")
                } else {
                    format!("{verb} {target}: {comment}")
                };
                (change_id, *submitted_ms, what)
            }
            _ => unreachable!("only routing commands come here"),
        };
        let change_id = change_id.clone();
        self.commit_routing(index, &change_id, comment, submitted_ms, persist)
    }

    fn remember_change(&mut self, record: ChangeRecord, persist: &mut Vec<Persist>) {
        persist.push(Persist::Change(record.id.clone()));
        self.change_order.push_back(record.id.clone());
        self.changes.insert(record.id.clone(), record);
        while self.change_order.len() > CHANGES_KEPT_MAX {
            if let Some(old) = self.change_order.pop_front() {
                self.changes.remove(&old);
            }
        }
    }

    /// Records a committed change and its catalog delta (the catalog version is the change's).
    fn commit_change(
        &mut self,
        base_version: u64,
        record: ChangeRecord,
        zone_delta: ZoneDelta,
        persist: &mut Vec<Persist>,
    ) -> (CommandResult, Option<CatalogDelta>) {
        let result = CommandResult::Applied {
            change_id: record.id.clone(),
            version: record.version,
        };
        let delta = CatalogDelta {
            version: record.version,
            base_version,
            checksum: self.catalog_checksum(),
            zones: vec![zone_delta],
            routing: None,
        };
        self.remember_change(record, persist);
        self.push_delta(delta.clone());
        (result, Some(delta))
    }

    fn push_delta(&mut self, delta: CatalogDelta) {
        self.deltas.push_back(delta);
        while self.deltas.len() > DELTA_HISTORY_MAX {
            self.deltas.pop_front();
        }
    }

    /// Applies one command at log index `index`.
    pub fn apply(
        &mut self,
        index: u64,
        command: &Command,
        persist: &mut Vec<Persist>,
    ) -> (CommandResult, Option<CatalogDelta>) {
        // A proposer that lost the leader's answer retries with the same change id; the second
        // entry must not apply the change again.
        if let Some(first) = self.changes.get(command.change_id()) {
            return (
                CommandResult::Applied {
                    change_id: first.id.clone(),
                    version: first.version,
                },
                None,
            );
        }
        match command {
            Command::CreateZone {
                name,
                caller_reference,
                soa,
                ns,
                change_id,
                submitted_ms,
            } => {
                let origin = name.to_lowercase();
                if let Some(existing) = self.zones.get(&origin) {
                    let meta = existing.meta();
                    if !caller_reference.is_empty() && meta.caller_reference == *caller_reference {
                        // Idempotent retry: the same zone, the same answer.
                        return (
                            CommandResult::Applied {
                                change_id: format!("zone-{}", meta.created_version),
                                version: meta.created_version,
                            },
                            None,
                        );
                    }
                    return (
                        rejected("ZoneAlreadyExists", format!("zone {origin} already exists")),
                        None,
                    );
                }
                if self.zones.len() >= ZONES_MAX {
                    return (
                        rejected("LimitExceeded", format!("at most {ZONES_MAX} zones")),
                        None,
                    );
                }
                let mut zone = ZoneData {
                    meta: Some(ZoneMeta {
                        name: origin.clone(),
                        caller_reference: caller_reference.clone(),
                        version: index,
                        created_version: index,
                        generation: index,
                    }),
                    ..ZoneData::default()
                };
                zone.put(
                    origin.wire().to_vec(),
                    RType::SOA.0,
                    SetData {
                        ttl: 900,
                        rdatas: vec![soa.clone()],
                    },
                );
                zone.put(
                    origin.wire().to_vec(),
                    RType::NS.0,
                    SetData {
                        ttl: 172800,
                        rdatas: ns.clone(),
                    },
                );
                persist.push(Persist::Zone(origin.clone()));
                for (n, t) in zone.sets.keys() {
                    persist.push(Persist::Set(origin.clone(), n.clone(), *t));
                }
                self.install_zone(
                    index,
                    zone,
                    change_id,
                    format!("create zone {origin}"),
                    *submitted_ms,
                    persist,
                )
            }
            Command::DeleteZone {
                name,
                force,
                change_id,
                submitted_ms,
            } => {
                let origin = name.to_lowercase();
                let Some(zone) = self.zones.get(&origin) else {
                    return (
                        rejected("NoSuchHostedZone", format!("no zone {origin}")),
                        None,
                    );
                };
                let extra = zone.sets.keys().any(|(n, t)| {
                    !(n.as_slice() == origin.wire() && (*t == RType::SOA.0 || *t == RType::NS.0))
                });
                if extra && !force {
                    return (
                        rejected(
                            "HostedZoneNotEmpty",
                            format!("zone {origin} holds records beyond SOA and NS; use --force"),
                        ),
                        None,
                    );
                }
                let base_version = self.catalog_version;
                let zone = self.zones.remove(&origin).expect("checked above");
                persist.push(Persist::ZoneDeleted(origin.clone(), zone.meta().generation));
                let orphaned: Vec<String> = self
                    .imports
                    .values()
                    .filter(|i| i.meta.zone == origin)
                    .map(|i| i.meta.id.clone())
                    .collect();
                for id in orphaned {
                    self.drop_import(&id, false, persist);
                }
                self.catalog_version = index;
                let record = ChangeRecord {
                    id: change_id.clone(),
                    version: index,
                    comment: format!("delete zone {origin}"),
                    submitted_ms: *submitted_ms,
                    zone: origin.clone(),
                };
                let zone_delta = ZoneDelta {
                    origin,
                    create: false,
                    delete: true,
                    put: Vec::new(),
                    remove: Vec::new(),
                };
                self.commit_change(base_version, record, zone_delta, persist)
            }
            Command::ChangeBatch {
                zone,
                batch,
                idempotency_token,
                expected_zone_version,
                change_id,
                submitted_ms,
            } => {
                if let Some(token) = idempotency_token
                    && let Some(first) = self.tokens.get(token).and_then(|id| self.changes.get(id))
                {
                    return (
                        CommandResult::Applied {
                            change_id: first.id.clone(),
                            version: first.version,
                        },
                        None,
                    );
                }
                let origin = zone.to_lowercase();
                let Some(data) = self.zones.get(&origin) else {
                    return (
                        rejected("NoSuchHostedZone", format!("no zone {origin}")),
                        None,
                    );
                };
                if let Some(expected) = expected_zone_version
                    && data.meta().version != *expected
                {
                    return (
                        rejected(
                            "ZoneVersionMismatch",
                            format!(
                                "zone {origin} is at version {}, not {expected}",
                                data.meta().version
                            ),
                        ),
                        None,
                    );
                }
                let view = ZoneView {
                    origin: &origin,
                    data,
                    zones: &self.zones,
                    routing: &self.routing_objects,
                };
                let mutations = match change::apply_batch(&view, batch) {
                    Ok(m) => m,
                    Err(e) => return (rejected(e.code(), e.to_string()), None),
                };
                let base_version = self.catalog_version;
                let data = self.zones.get_mut(&origin).expect("checked above");
                let mut put = Vec::new();
                let mut remove = Vec::new();
                for m in mutations {
                    match m {
                        Mutation::Put(set) => {
                            let name = set.name.to_lowercase().wire().to_vec();
                            let d = SetData {
                                ttl: set.ttl,
                                rdatas: set.rdatas,
                            };
                            persist.push(Persist::Set(origin.clone(), name.clone(), set.rtype.0));
                            data.put(name.clone(), set.rtype.0, d.clone());
                            put.push((name, set.rtype.0, d));
                        }
                        Mutation::Remove { name, rtype } => {
                            let name = name.to_lowercase().wire().to_vec();
                            persist.push(Persist::Set(origin.clone(), name.clone(), rtype.0));
                            data.remove(&name, rtype.0);
                            remove.push((name, rtype.0));
                        }
                    }
                }
                if let Some(meta) = data.meta.as_mut() {
                    meta.version = index;
                }
                persist.push(Persist::Zone(origin.clone()));
                self.catalog_version = index;
                if let Some(token) = idempotency_token {
                    self.tokens.insert(token.clone(), change_id.clone());
                }
                let record = ChangeRecord {
                    id: change_id.clone(),
                    version: index,
                    comment: batch.comment.clone(),
                    submitted_ms: *submitted_ms,
                    zone: origin.clone(),
                };
                let zone_delta = ZoneDelta {
                    origin,
                    create: false,
                    delete: false,
                    put,
                    remove,
                };
                self.commit_change(base_version, record, zone_delta, persist)
            }
            Command::ImportBegin {
                zone,
                import_id,
                comment,
                expected_zone_version,
                submitted_ms,
            } => self.import_begin(
                index,
                zone,
                import_id,
                comment,
                *expected_zone_version,
                *submitted_ms,
                persist,
            ),
            Command::ImportChunk {
                import_id,
                seq,
                batch,
                submitted_ms,
            } => (
                self.import_chunk(import_id, *seq, batch, *submitted_ms, persist),
                None,
            ),
            Command::ImportCommit {
                import_id,
                chunks,
                change_id,
                submitted_ms,
            } => self.import_commit(index, import_id, *chunks, change_id, *submitted_ms, persist),
            Command::HealthCheckCreate { .. }
            | Command::HealthCheckDelete { .. }
            | Command::HealthStatusSet { .. }
            | Command::HealthTransition { .. }
            | Command::RttPublish { .. }
            | Command::HealthCheckUpdate { .. }
            | Command::CidrCollectionPut { .. }
            | Command::CidrCollectionDelete { .. }
            | Command::DrainSet { .. } => self.apply_routing_command(index, command, persist),
            Command::ImportAbort { import_id, .. } => {
                if self.imports.contains_key(import_id) {
                    self.drop_import(import_id, false, persist);
                }
                // Aborting an unknown (expired, committed, already aborted) import is a no-op:
                // the client's intent, "not this import", holds either way.
                (
                    CommandResult::Applied {
                        change_id: import_id.clone(),
                        version: self.catalog_version,
                    },
                    None,
                )
            }
        }
    }

    fn drop_import(&mut self, id: &str, committed: bool, persist: &mut Vec<Persist>) {
        if let Some(import) = self.imports.remove(id) {
            persist.push(Persist::ImportDropped {
                id: id.to_string(),
                zone: import.meta.zone.clone(),
                generation: import.meta.generation,
                committed,
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn import_begin(
        &mut self,
        index: u64,
        zone: &Name,
        import_id: &str,
        comment: &str,
        expected_zone_version: Option<u64>,
        submitted_ms: u64,
        persist: &mut Vec<Persist>,
    ) -> (CommandResult, Option<CatalogDelta>) {
        let applied = |version| CommandResult::Applied {
            change_id: import_id.to_string(),
            version,
        };
        if self.imports.contains_key(import_id) {
            // A retried proposal of the same begin.
            return (applied(self.catalog_version), None);
        }
        let origin = zone.to_lowercase();
        let Some(live_version) = self.zones.get(&origin).map(|z| z.meta().version) else {
            return (
                rejected("NoSuchHostedZone", format!("no zone {origin}")),
                None,
            );
        };
        if let Some(expected) = expected_zone_version
            && live_version != expected
        {
            return (
                rejected(
                    "ZoneVersionMismatch",
                    format!("zone {origin} is at version {live_version}, not {expected}"),
                ),
                None,
            );
        }
        let chars = comment.chars().count();
        if chars > change::COMMENT_CHARS_MAX {
            return (
                rejected(
                    "CommentTooLong",
                    format!(
                        "comment is {chars} characters; the limit is {}",
                        change::COMMENT_CHARS_MAX
                    ),
                ),
                None,
            );
        }
        // One import per zone: a new one replaces an older one (its client gave up or is
        // superseded); imports idle too long free their slots.
        let stale: Vec<String> = self
            .imports
            .values()
            .filter(|i| {
                i.meta.zone == origin
                    || submitted_ms.saturating_sub(i.meta.last_ms) > IMPORT_IDLE_MAX_MS
            })
            .map(|i| i.meta.id.clone())
            .collect();
        for id in stale {
            self.drop_import(&id, false, persist);
        }
        if self.imports.len() >= IMPORTS_MAX {
            return (
                rejected(
                    "LimitExceeded",
                    format!("{IMPORTS_MAX} imports are in progress; retry when one ends"),
                ),
                None,
            );
        }
        let data = self.zones.get(&origin).expect("checked above");
        let mut staged = ZoneData {
            meta: Some(ZoneMeta {
                generation: index,
                ..data.meta().clone()
            }),
            ..ZoneData::default()
        };
        for rtype in [RType::SOA.0, RType::NS.0] {
            if let Some(d) = data.sets.get(&(origin.wire().to_vec(), rtype)) {
                staged.put(origin.wire().to_vec(), rtype, d.clone());
                persist.push(Persist::SetAt(
                    origin.clone(),
                    index,
                    origin.wire().to_vec(),
                    rtype,
                ));
            }
        }
        let meta = ImportMeta {
            id: import_id.to_string(),
            zone: origin,
            generation: index,
            comment: comment.to_string(),
            expected_zone_version,
            chunks_applied: Default::default(),
            last_ms: submitted_ms,
        };
        persist.push(Persist::Import(import_id.to_string()));
        self.imports
            .insert(import_id.to_string(), Import { meta, data: staged });
        (applied(self.catalog_version), None)
    }

    fn import_chunk(
        &mut self,
        import_id: &str,
        seq: u64,
        batch: &change::ChangeBatch,
        submitted_ms: u64,
        persist: &mut Vec<Persist>,
    ) -> CommandResult {
        let Some(import) = self.imports.get_mut(import_id) else {
            return rejected(
                "NoSuchImport",
                format!("no import {import_id} in progress (committed, aborted or expired)"),
            );
        };
        let applied = CommandResult::Applied {
            change_id: import_id.to_string(),
            version: import.data.sets.len() as u64,
        };
        if import.meta.chunks_applied.contains(&seq) {
            return applied;
        }
        if seq >= IMPORT_CHUNKS_MAX {
            return rejected(
                "LimitExceeded",
                format!("an import has at most {IMPORT_CHUNKS_MAX} chunks"),
            );
        }
        if let Some(c) = batch
            .changes
            .iter()
            .position(|c| c.action != change::Action::Upsert)
        {
            return rejected(
                "InvalidChangeBatch",
                format!("changes[{c}]: an import chunk holds UPSERTs only"),
            );
        }
        let origin = import.meta.zone.clone();
        let view = ZoneView {
            origin: &origin,
            data: &import.data,
            zones: &self.zones,
            routing: &self.routing_objects,
        };
        let mutations = match change::apply_batch(&view, batch) {
            Ok(m) => m,
            Err(e) => return rejected(e.code(), e.to_string()),
        };
        let generation = import.meta.generation;
        for m in mutations {
            if let Mutation::Put(set) = m {
                let name = set.name.to_lowercase().wire().to_vec();
                persist.push(Persist::SetAt(
                    origin.clone(),
                    generation,
                    name.clone(),
                    set.rtype.0,
                ));
                import.data.put(
                    name,
                    set.rtype.0,
                    SetData {
                        ttl: set.ttl,
                        rdatas: set.rdatas,
                    },
                );
            }
        }
        import.meta.chunks_applied.insert(seq);
        import.meta.last_ms = submitted_ms;
        persist.push(Persist::Import(import_id.to_string()));
        CommandResult::Applied {
            change_id: import_id.to_string(),
            version: import.data.sets.len() as u64,
        }
    }

    fn import_commit(
        &mut self,
        index: u64,
        import_id: &str,
        chunks: u64,
        change_id: &str,
        submitted_ms: u64,
        persist: &mut Vec<Persist>,
    ) -> (CommandResult, Option<CatalogDelta>) {
        let Some(import) = self.imports.get(import_id) else {
            return (
                rejected(
                    "NoSuchImport",
                    format!("no import {import_id} in progress (aborted or expired)"),
                ),
                None,
            );
        };
        let applied = &import.meta.chunks_applied;
        let complete =
            applied.len() as u64 == chunks && applied.last().is_none_or(|l| l + 1 == chunks);
        if !complete {
            let missing = (0..chunks).find(|c| !applied.contains(c));
            return (
                rejected(
                    "ImportIncomplete",
                    format!(
                        "import {import_id} has {} of its {chunks} chunks (first missing: {missing:?})",
                        applied.len()
                    ),
                ),
                None,
            );
        }
        let origin = import.meta.zone.clone();
        let Some(live) = self.zones.get(&origin) else {
            return (
                rejected("NoSuchHostedZone", format!("no zone {origin}")),
                None,
            );
        };
        if let Some(expected) = import.meta.expected_zone_version
            && live.meta().version != expected
        {
            let message = format!(
                "zone {origin} changed during the import (now at version {}, not {expected})",
                live.meta().version
            );
            self.drop_import(import_id, false, persist);
            return (rejected("ZoneVersionMismatch", message), None);
        }
        let old_generation = live.meta().generation;
        let live_meta = live.meta().clone();
        let mut import = self.imports.remove(import_id).expect("checked above");
        persist.push(Persist::ImportDropped {
            id: import_id.to_string(),
            zone: origin.clone(),
            generation: import.meta.generation,
            committed: true,
        });
        persist.push(Persist::GenerationDropped(origin.clone(), old_generation));
        persist.push(Persist::Zone(origin.clone()));
        import.data.meta = Some(ZoneMeta {
            version: index,
            generation: import.meta.generation,
            ..live_meta
        });
        self.install_zone(
            index,
            import.data,
            change_id,
            import.meta.comment,
            submitted_ms,
            persist,
        )
    }

    /// Puts a whole zone in place (new, or replacing one) as the change at `index`: the edges'
    /// delta rebuilds it from its full content, or, past `DELTA_INLINE_SETS_MAX` sets, is not
    /// kept and edges behind this version get a full catalog. The caller has listed the keys
    /// to persist.
    fn install_zone(
        &mut self,
        index: u64,
        zone: ZoneData,
        change_id: &str,
        comment: String,
        submitted_ms: u64,
        persist: &mut Vec<Persist>,
    ) -> (CommandResult, Option<CatalogDelta>) {
        let origin = zone.meta().name.clone();
        let base_version = self.catalog_version;
        let inline = zone.sets.len() <= DELTA_INLINE_SETS_MAX;
        let put = if inline {
            zone.sets
                .iter()
                .map(|((n, t), d)| (n.clone(), *t, d.clone()))
                .collect()
        } else {
            Vec::new()
        };
        self.zones.insert(origin.clone(), zone);
        self.catalog_version = index;
        let record = ChangeRecord {
            id: change_id.to_string(),
            version: index,
            comment,
            submitted_ms,
            zone: origin.clone(),
        };
        let zone_delta = ZoneDelta {
            origin,
            create: true,
            delete: false,
            put,
            remove: Vec::new(),
        };
        let result = self.commit_change(base_version, record, zone_delta, persist);
        if !inline {
            self.deltas.clear();
            return (result.0, None);
        }
        result
    }

    /// Deltas after `have_version`, if the history still holds all of them.
    pub fn deltas_since(&self, have_version: u64) -> Option<Vec<CatalogDelta>> {
        if have_version == self.catalog_version {
            return Some(Vec::new());
        }
        let first = self
            .deltas
            .iter()
            .position(|d| d.base_version == have_version)?;
        Some(self.deltas.iter().skip(first).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::change::{Action, Change, ChangeBatch, RecordSet};

    fn name(text: &str) -> Name {
        Name::parse(text, None).unwrap()
    }

    fn origin() -> Name {
        name("example.com.")
    }

    fn soa(serial: u8) -> Vec<u8> {
        let mut rdata = name("ns1.example.com.").wire().to_vec();
        rdata.extend_from_slice(name("h.example.com.").wire());
        rdata.extend_from_slice(&[0, 0, 0, serial]);
        rdata.extend_from_slice(&[0; 16]);
        rdata
    }

    fn set(owner: &str, rtype: RType, rdata: Vec<u8>) -> Change {
        Change {
            action: Action::Upsert,
            record_set: RecordSet {
                name: name(owner),
                rtype,
                ttl: 60,
                rdatas: vec![rdata],
                set_identifier: None,
                policy: None,
                health_check: None,
                alias: None,
                fail_closed: false,
            },
        }
    }

    fn a(owner: &str, octet: u8) -> Change {
        set(owner, RType::A, vec![192, 0, 2, octet])
    }

    fn batch(changes: Vec<Change>) -> ChangeBatch {
        ChangeBatch {
            comment: String::new(),
            changes,
        }
    }

    /// A state with example.com. holding `old` A, at log index 2; returns it and the next index.
    fn state_with_zone() -> (State, u64) {
        let mut state = State::default();
        let mut persist = Vec::new();
        let create = Command::CreateZone {
            name: origin(),
            caller_reference: String::new(),
            soa: soa(1),
            ns: vec![name("ns1.example.com.").wire().to_vec()],
            change_id: "create".into(),
            submitted_ms: 0,
        };
        assert!(matches!(
            state.apply(1, &create, &mut persist).0,
            CommandResult::Applied { .. }
        ));
        let old = Command::ChangeBatch {
            zone: origin(),
            batch: batch(vec![a("old.example.com.", 1)]),
            idempotency_token: None,
            expected_zone_version: None,
            change_id: "old".into(),
            submitted_ms: 0,
        };
        assert!(matches!(
            state.apply(2, &old, &mut persist).0,
            CommandResult::Applied { .. }
        ));
        (state, 3)
    }

    fn begin(
        state: &mut State,
        index: u64,
        id: &str,
        expected: Option<u64>,
        ms: u64,
    ) -> CommandResult {
        let command = Command::ImportBegin {
            zone: origin(),
            import_id: id.into(),
            comment: "import".into(),
            expected_zone_version: expected,
            submitted_ms: ms,
        };
        state.apply(index, &command, &mut Vec::new()).0
    }

    fn chunk(
        state: &mut State,
        index: u64,
        id: &str,
        seq: u64,
        changes: Vec<Change>,
    ) -> CommandResult {
        let command = Command::ImportChunk {
            import_id: id.into(),
            seq,
            batch: batch(changes),
            submitted_ms: 0,
        };
        state.apply(index, &command, &mut Vec::new()).0
    }

    fn commit(state: &mut State, index: u64, id: &str, chunks: u64) -> CommandResult {
        let command = Command::ImportCommit {
            import_id: id.into(),
            chunks,
            change_id: format!("commit-{index}"),
            submitted_ms: 0,
        };
        state.apply(index, &command, &mut Vec::new()).0
    }

    fn code(result: &CommandResult) -> &str {
        match result {
            CommandResult::Rejected { code, .. } => code,
            CommandResult::Applied { .. } => "Applied",
        }
    }

    fn owners(state: &State) -> Vec<(String, u16)> {
        state.zones[&origin()]
            .sets
            .keys()
            .map(|(n, t)| (meridian_core::name::wire_to_text(n), *t))
            .collect()
    }

    #[test]
    fn a_committed_import_replaces_the_zone_and_keeps_unsent_apex_sets() {
        let (mut state, i) = state_with_zone();
        let checksum_before = state.catalog_checksum();
        assert_eq!(code(&begin(&mut state, i, "I1", None, 0)), "Applied");
        // Chunks may commit out of order, and a retried chunk applies once.
        assert_eq!(
            code(&chunk(
                &mut state,
                i + 1,
                "I1",
                1,
                vec![a("b.example.com.", 2)]
            )),
            "Applied"
        );
        assert_eq!(
            code(&chunk(
                &mut state,
                i + 2,
                "I1",
                0,
                vec![a("a.example.com.", 3)]
            )),
            "Applied"
        );
        assert_eq!(
            code(&chunk(
                &mut state,
                i + 3,
                "I1",
                0,
                vec![a("zzz.example.com.", 9)]
            )),
            "Applied"
        );
        // Staging leaves the live zone alone.
        assert_eq!(state.catalog_checksum(), checksum_before);
        assert!(owners(&state).contains(&("old.example.com.".into(), 1)));
        assert_eq!(code(&commit(&mut state, i + 4, "I1", 2)), "Applied");
        let sets = owners(&state);
        assert!(!sets.contains(&("old.example.com.".into(), 1)), "{sets:?}");
        assert!(
            !sets.contains(&("zzz.example.com.".into(), 1)),
            "a retried seq applied twice"
        );
        assert!(sets.contains(&("a.example.com.".into(), 1)));
        assert!(sets.contains(&("b.example.com.".into(), 1)));
        assert!(sets.contains(&("example.com.".into(), RType::SOA.0)));
        assert!(sets.contains(&("example.com.".into(), RType::NS.0)));
        assert_eq!(state.catalog_version, i + 4);
        assert_eq!(state.zones[&origin()].meta().version, i + 4);
        assert_eq!(state.zones[&origin()].meta().generation, i);
        assert!(state.imports.is_empty());
        // The delta edges get rebuilds the zone from its full content.
        let delta = state.deltas.back().unwrap();
        assert!(delta.zones[0].create);
        assert_eq!(delta.zones[0].put.len(), 4);
        assert_eq!(delta.checksum, state.catalog_checksum());
    }

    #[test]
    fn the_file_soa_replaces_the_zone_soa() {
        let (mut state, i) = state_with_zone();
        begin(&mut state, i, "I1", None, 0);
        chunk(
            &mut state,
            i + 1,
            "I1",
            0,
            vec![set("example.com.", RType::SOA, soa(7))],
        );
        assert_eq!(code(&commit(&mut state, i + 2, "I1", 1)), "Applied");
        let z = &state.zones[&origin()];
        assert_eq!(
            z.sets[&(origin().wire().to_vec(), RType::SOA.0)].rdatas[0],
            soa(7)
        );
    }

    #[test]
    fn an_invalid_chunk_is_refused_with_its_rule_and_the_commit_then_too() {
        let (mut state, i) = state_with_zone();
        let before = owners(&state);
        begin(&mut state, i, "I1", None, 0);
        assert_eq!(
            code(&chunk(
                &mut state,
                i + 1,
                "I1",
                0,
                vec![a("x.example.com.", 1)]
            )),
            "Applied"
        );
        assert_eq!(
            code(&chunk(&mut state, i + 2, "I1", 1, vec![a("x.other.", 1)])),
            "NameOutsideZone"
        );
        // A CNAME beside data staged by an earlier chunk is caught across chunks.
        let cname = set(
            "x.example.com.",
            RType::CNAME,
            name("y.example.com.").wire().to_vec(),
        );
        assert_eq!(
            code(&chunk(&mut state, i + 3, "I1", 1, vec![cname])),
            "CnameAndOtherData"
        );
        assert_eq!(
            code(&commit(&mut state, i + 4, "I1", 2)),
            "ImportIncomplete"
        );
        assert_eq!(owners(&state), before);
        // Only UPSERTs stage.
        let mut create = a("z.example.com.", 1);
        create.action = Action::Create;
        assert_eq!(
            code(&chunk(&mut state, i + 5, "I1", 1, vec![create])),
            "InvalidChangeBatch"
        );
    }

    #[test]
    fn compare_and_set_is_checked_at_begin_and_at_commit() {
        let (mut state, i) = state_with_zone();
        assert_eq!(
            code(&begin(&mut state, i, "I1", Some(1), 0)),
            "ZoneVersionMismatch"
        );
        assert_eq!(code(&begin(&mut state, i + 1, "I2", Some(2), 0)), "Applied");
        chunk(&mut state, i + 2, "I2", 0, vec![a("n.example.com.", 1)]);
        let other = Command::ChangeBatch {
            zone: origin(),
            batch: batch(vec![a("other.example.com.", 1)]),
            idempotency_token: None,
            expected_zone_version: None,
            change_id: "other".into(),
            submitted_ms: 0,
        };
        state.apply(i + 3, &other, &mut Vec::new());
        let before = owners(&state);
        assert_eq!(
            code(&commit(&mut state, i + 4, "I2", 1)),
            "ZoneVersionMismatch"
        );
        assert_eq!(owners(&state), before);
        assert!(
            state.imports.is_empty(),
            "a refused commit drops its import"
        );
    }

    #[test]
    fn abort_supersede_expiry_and_zone_deletion_drop_imports() {
        let (mut state, i) = state_with_zone();
        let before = owners(&state);
        begin(&mut state, i, "I1", None, 0);
        let abort = Command::ImportAbort {
            import_id: "I1".into(),
            submitted_ms: 0,
        };
        assert_eq!(
            code(&state.apply(i + 1, &abort, &mut Vec::new()).0),
            "Applied"
        );
        assert_eq!(code(&commit(&mut state, i + 2, "I1", 0)), "NoSuchImport");
        assert_eq!(owners(&state), before);

        // A second import of the same zone supersedes the first.
        begin(&mut state, i + 3, "I2", None, 0);
        begin(&mut state, i + 4, "I3", None, 0);
        assert_eq!(
            code(&chunk(
                &mut state,
                i + 5,
                "I2",
                0,
                vec![a("n.example.com.", 1)]
            )),
            "NoSuchImport"
        );
        assert_eq!(state.imports.len(), 1);

        // Imports idle longer than IMPORT_IDLE_MAX_MS are dropped when another begins.
        let mut persist = Vec::new();
        let create = Command::CreateZone {
            name: name("example.net."),
            caller_reference: String::new(),
            soa: soa(1),
            ns: vec![name("ns1.example.com.").wire().to_vec()],
            change_id: "create-net".into(),
            submitted_ms: 0,
        };
        state.apply(i + 6, &create, &mut persist);
        let late = Command::ImportBegin {
            zone: name("example.net."),
            import_id: "I4".into(),
            comment: String::new(),
            expected_zone_version: None,
            submitted_ms: IMPORT_IDLE_MAX_MS + 1,
        };
        assert_eq!(code(&state.apply(i + 7, &late, &mut persist).0), "Applied");
        assert_eq!(state.imports.keys().collect::<Vec<_>>(), vec!["I4"]);

        // Deleting the zone drops its import.
        let delete = Command::DeleteZone {
            name: name("example.net."),
            force: true,
            change_id: "delete-net".into(),
            submitted_ms: 0,
        };
        state.apply(i + 8, &delete, &mut persist);
        assert!(state.imports.is_empty());
    }

    #[test]
    fn imports_are_limited() {
        let mut state = State::default();
        for z in 0..=IMPORTS_MAX {
            let zone = name(&format!("z{z}.example."));
            let create = Command::CreateZone {
                name: zone.clone(),
                caller_reference: String::new(),
                soa: soa(1),
                ns: vec![name("ns1.example.com.").wire().to_vec()],
                change_id: format!("c{z}"),
                submitted_ms: 0,
            };
            state.apply(z as u64 * 2 + 1, &create, &mut Vec::new());
            let begin = Command::ImportBegin {
                zone,
                import_id: format!("I{z}"),
                comment: String::new(),
                expected_zone_version: None,
                submitted_ms: 0,
            };
            let result = state.apply(z as u64 * 2 + 2, &begin, &mut Vec::new()).0;
            let expected = if z < IMPORTS_MAX {
                "Applied"
            } else {
                "LimitExceeded"
            };
            assert_eq!(code(&result), expected, "import {z}");
        }
    }

    #[test]
    fn a_large_import_sends_edges_a_full_catalog() {
        let (mut state, i) = state_with_zone();
        begin(&mut state, i, "I1", None, 0);
        let mut seq = 0;
        let mut index = i + 1;
        let total = DELTA_INLINE_SETS_MAX + 1;
        let names: Vec<Change> = (0..total)
            .map(|n| a(&format!("h{n}.example.com."), (n % 250) as u8))
            .collect();
        for part in names.chunks(5_000) {
            assert_eq!(
                code(&chunk(&mut state, index, "I1", seq, part.to_vec())),
                "Applied"
            );
            seq += 1;
            index += 1;
        }
        let version_before = state.catalog_version;
        assert_eq!(code(&commit(&mut state, index, "I1", seq)), "Applied");
        assert_eq!(state.zones[&origin()].sets.len(), total + 2);
        assert!(state.deltas.is_empty());
        assert_eq!(state.deltas_since(version_before), None);
        assert_eq!(state.deltas_since(state.catalog_version), Some(Vec::new()));
    }

    fn drain(state: &mut State, index: u64, target: &str, drained: bool) -> CommandResult {
        let command = Command::DrainSet {
            target: target.into(),
            drained,
            comment: String::new(),
            change_id: format!("drain-{index}"),
            submitted_ms: 0,
        };
        state.apply(index, &command, &mut Vec::new()).0
    }

    #[test]
    fn drains_travel_in_the_routing_state_and_change_the_checksum() {
        let (mut state, i) = state_with_zone();
        let checksum_before = state.catalog_checksum();
        assert_eq!(code(&drain(&mut state, i, "pop/fra", true)), "Applied");
        let routing = state.routing_objects.routing_state();
        assert!(routing.is_drained("fra", "fra-e1"));
        assert!(!routing.is_drained("iad", "iad-e1"));
        assert_ne!(state.catalog_checksum(), checksum_before);
        // The delta carries the new routing state, so edges learn of the drain in the stream.
        let delta = state.deltas.back().unwrap();
        assert_eq!(delta.version, i);
        assert!(delta.routing.as_ref().unwrap().is_drained("fra", "x"));
        // One edge alone, by id.
        assert_eq!(
            code(&drain(&mut state, i + 1, "edge/iad-e2", true)),
            "Applied"
        );
        let routing = state.routing_objects.routing_state();
        assert!(routing.is_drained("iad", "iad-e2"));
        assert!(!routing.is_drained("iad", "iad-e1"));
        // Idempotent both ways, each with its own change id to wait on.
        assert_eq!(code(&drain(&mut state, i + 2, "pop/fra", true)), "Applied");
        assert_eq!(code(&drain(&mut state, i + 3, "pop/fra", false)), "Applied");
        assert_eq!(code(&drain(&mut state, i + 4, "pop/fra", false)), "Applied");
        assert!(
            !state
                .routing_objects
                .routing_state()
                .is_drained("fra", "fra-e1")
        );
        assert_eq!(
            code(&drain(&mut state, i + 5, "edge/iad-e2", false)),
            "Applied"
        );
        assert_eq!(state.catalog_checksum(), checksum_before);
    }

    #[test]
    fn malformed_drain_targets_are_refused() {
        let (mut state, i) = state_with_zone();
        for (n, bad) in ["fra", "site/fra", "pop/", "edge/a\nb"].iter().enumerate() {
            assert_eq!(
                code(&drain(&mut state, i + n as u64, bad, true)),
                "InvalidDrainTarget",
                "{bad:?}"
            );
        }
        assert!(state.routing_objects.drained.is_empty());
    }
}
