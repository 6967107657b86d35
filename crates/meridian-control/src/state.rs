//! The replicated state: hosted zones and their record sets, changes, idempotency tokens. Pure
//! and deterministic: `apply` is a function of the state and one command; it returns the result,
//! the catalog delta for edges (if the catalog changed) and the keys to persist.

use std::collections::{BTreeMap, VecDeque};

use meridian_core::Name;
use meridian_core::change::{self, Mutation, RecordSet};
use meridian_core::rdata::RType;
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
}

impl ZoneData {
    pub fn meta(&self) -> &ZoneMeta {
        self.meta.as_ref().expect("zone data always has its meta")
    }

    fn put(&mut self, name: Vec<u8>, rtype: u16, data: SetData) {
        let key = (name, rtype);
        self.record_count += data.rdatas.len();
        if let Some(old) = self.sets.get(&key) {
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
            self.checksum = self.checksum.wrapping_sub(rrset_checksum(
                name,
                RType(rtype),
                old.ttl,
                old.rdatas.iter().map(Vec::as_slice),
            ));
        }
    }
}

/// Read-only view of a zone for change validation in the pure core.
struct ZoneView<'a> {
    origin: &'a Name,
    data: &'a ZoneData,
}

impl change::ZoneState for ZoneView<'_> {
    fn origin(&self) -> &Name {
        self.origin
    }

    fn get(&self, name: &Name, rtype: RType) -> Option<RecordSet> {
        let key = (name.to_lowercase().wire().to_vec(), rtype.0);
        self.data.sets.get(&key).map(|d| RecordSet {
            name: name.to_lowercase(),
            rtype,
            ttl: d.ttl,
            rdatas: d.rdatas.clone(),
            set_identifier: None,
        })
    }

    fn types_at(&self, name: &Name) -> Vec<RType> {
        let wire = name.to_lowercase().wire().to_vec();
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneDelta {
    pub origin: Name,
    pub create: bool,
    pub delete: bool,
    pub put: Vec<(Vec<u8>, u16, SetData)>,
    pub remove: Vec<(Vec<u8>, u16)>,
}

/// A key-value write the storage layer persists for an applied entry.
#[derive(Clone, Debug)]
pub enum Persist {
    Zone(Name),
    ZoneDeleted(Name),
    Set(Name, Vec<u8>, u16),
    Change(String),
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
                let base_version = self.catalog_version;
                let mut zone = ZoneData {
                    meta: Some(ZoneMeta {
                        name: origin.clone(),
                        caller_reference: caller_reference.clone(),
                        version: index,
                        created_version: index,
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
                let put = zone
                    .sets
                    .iter()
                    .map(|((n, t), d)| (n.clone(), *t, d.clone()))
                    .collect();
                persist.push(Persist::Zone(origin.clone()));
                for (n, t) in zone.sets.keys() {
                    persist.push(Persist::Set(origin.clone(), n.clone(), *t));
                }
                self.zones.insert(origin.clone(), zone);
                self.catalog_version = index;
                let record = ChangeRecord {
                    id: change_id.clone(),
                    version: index,
                    comment: format!("create zone {origin}"),
                    submitted_ms: *submitted_ms,
                    zone: origin.clone(),
                };
                let zone_delta = ZoneDelta {
                    origin,
                    create: true,
                    delete: false,
                    put,
                    remove: Vec::new(),
                };
                self.commit_change(base_version, record, zone_delta, persist)
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
                for (n, t) in zone.sets.keys() {
                    persist.push(Persist::Set(origin.clone(), n.clone(), *t));
                }
                persist.push(Persist::ZoneDeleted(origin.clone()));
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
        }
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

/// One zone in a snapshot: its meta and every (owner wire, type, data).
pub type ZoneDoc = (ZoneMeta, Vec<(Vec<u8>, u16, SetData)>);

/// The serializable form of a state, for Raft snapshots.
#[derive(Serialize, Deserialize)]
pub struct SnapshotDoc {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub catalog_version: u64,
    pub zones: Vec<ZoneDoc>,
    pub changes: Vec<ChangeRecord>,
    pub tokens: Vec<(String, String)>,
}

impl State {
    pub fn to_doc(&self) -> SnapshotDoc {
        SnapshotDoc {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            catalog_version: self.catalog_version,
            zones: self
                .zones
                .values()
                .map(|z| {
                    (
                        z.meta().clone(),
                        z.sets
                            .iter()
                            .map(|((n, t), d)| (n.clone(), *t, d.clone()))
                            .collect(),
                    )
                })
                .collect(),
            changes: self
                .change_order
                .iter()
                .filter_map(|id| self.changes.get(id).cloned())
                .collect(),
            tokens: self
                .tokens
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    pub fn from_doc(doc: SnapshotDoc) -> State {
        let mut state = State {
            last_applied: doc.last_applied,
            membership: doc.membership,
            catalog_version: doc.catalog_version,
            ..State::default()
        };
        for (meta, sets) in doc.zones {
            let mut zone = ZoneData::default();
            for (n, t, d) in sets {
                zone.put(n, t, d);
            }
            let origin = meta.name.clone();
            zone.meta = Some(meta);
            state.zones.insert(origin, zone);
        }
        for c in doc.changes {
            state.change_order.push_back(c.id.clone());
            state.changes.insert(c.id.clone(), c);
        }
        state.tokens = doc.tokens.into_iter().collect();
        state
    }
}
