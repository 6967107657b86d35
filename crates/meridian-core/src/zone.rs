//! A compiled zone: every owner name and every empty non-terminal as one packed node.
//!
//! Answers need, per query, a handful of exact-name lookups (walking from the apex down the
//! query name: zone cuts, DNAMEs, the closest encloser, the wildcard). So nodes live in hash
//! tables keyed by the lowercase wire name, and every empty non-terminal (RFC 4592 §2.2.2) is a
//! node of its own: a random-subdomain flood costs O(labels) lookups, never a scan.
//!
//! Each node is a single allocation (name, flags, child count, RRsets, RDATA) to keep memory
//! per record low. Nodes are spread over shards behind `Arc`s: [`Zone::apply`] copies only the
//! shards a delta touches, so a one-record change to a million-record zone costs microseconds
//! and shares everything else with the previous version.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::Error;
use crate::name::{self, Name};
use crate::rdata::RType;
use crate::zonefile::Record;

/// Records per zone. Route 53 allows 10,000 by default; we promise 1M record sets, and cap well
/// above it so a runaway file fails loudly instead of exhausting memory.
pub const ZONE_RECORDS_MAX: usize = 16_000_000;
/// Records per RRset: answers above 64 KiB cannot be sent even over TCP.
pub const RRSET_RECORDS_MAX: usize = 65535;
/// RRsets per name: far above any real node (there are ~90 data types in use).
pub const NODE_RRSETS_MAX: usize = 1024;
/// Nodes per shard, on average. Bounds what one delta copies; small enough to copy in µs.
pub const SHARD_NODES_TARGET: usize = 256;
/// A zone grown by deltas is re-sharded once shards average this many times the target.
const SHARD_GROWTH_MAX: usize = 4;

/// Node flags, compiled at load time so the query path tests bits instead of scanning RRsets.
pub mod flags {
    /// The zone apex.
    pub const APEX: u8 = 1;
    /// NS at a name other than the apex: a delegation point; data below it is glue.
    pub const CUT: u8 = 2;
    /// Has a DNAME: names below are redirected (RFC 6672).
    pub const DNAME: u8 = 4;
    /// Has a CNAME (and, by validation, nothing else).
    pub const CNAME: u8 = 8;
    /// A child `*` label exists: the wildcard lookup is needed only then.
    pub const WILDCARD_CHILD: u8 = 16;
}

/// Fixed seed: zone contents come from operators, not attackers, and a fixed seed makes shard
/// placement reproducible.
const HASH_SEED: u64 = 0x6d65_7269_6469_616e;

fn hash_name(lower_wire: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(HASH_SEED).hash_one(lower_wire)
}

/// FNV-1a, 64 bits: a stable hash, identical on every platform and version, for checksums that
/// cross the network.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Checksum contribution of one RRset. A zone's checksum is the wrapping sum over its RRsets, so
/// a delta updates it in O(delta); the control plane computes the same figure from its state.
pub fn rrset_checksum<'a>(
    name: &[u8],
    rtype: RType,
    ttl: u32,
    rdatas: impl IntoIterator<Item = &'a [u8]>,
) -> u64 {
    let mut h = fnv1a(FNV_OFFSET, name);
    h = fnv1a(h, &rtype.0.to_be_bytes());
    h = fnv1a(h, &ttl.to_be_bytes());
    for rd in rdatas {
        h = fnv1a(h, &(rd.len() as u16).to_be_bytes());
        h = fnv1a(h, rd);
    }
    h
}

/// A zone's contribution to a catalog checksum.
pub fn zone_checksum_term(origin: &[u8], zone_checksum: u64) -> u64 {
    fnv1a(FNV_OFFSET, origin).rotate_left(17) ^ zone_checksum
}

/// Packed nodes (see [`NodeRef`]) keyed by their lowercase name.
type Shard = HashTable<Box<[u8]>>;

/// A zone ready to answer from. Cloning shares every node.
#[derive(Clone)]
pub struct Zone {
    /// Lowercase origin.
    origin: Name,
    /// Shards of nodes; index = hash >> shard_shift.
    shards: Box<[Arc<Shard>]>,
    shard_shift: u32,
    record_count: usize,
    node_count: usize,
    serial: u32,
    /// RFC 2308 §5: negative answers carry the SOA with TTL min(SOA TTL, SOA MINIMUM).
    negative_ttl: u32,
    /// Wrapping sum of [`rrset_checksum`] over every RRset.
    checksum: u64,
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Zone({}, {} records)", self.origin, self.record_count)
    }
}

/// Offsets inside a packed node after the name.
const FLAGS_AT: usize = 0;
const CHILDREN_AT: usize = 1;
const RRSET_COUNT_AT: usize = 5;
const RRSETS_AT: usize = 7;

/// A borrowed, packed node. Layout: `[name_len][name…][flags][children u32][rrset_count u16]`
/// then RRsets `[type u16][ttl u32][count u16][data_len u32][([rdlen u16][rdata…])…]`, sorted by
/// type.
#[derive(Clone, Copy)]
pub struct NodeRef<'a> {
    blob: &'a [u8],
}

/// A borrowed RRset inside a node.
#[derive(Clone, Copy, Debug)]
pub struct RRsetRef<'a> {
    pub rtype: RType,
    pub ttl: u32,
    pub count: u16,
    pub(crate) data: &'a [u8],
}

impl<'a> NodeRef<'a> {
    fn header(&self) -> usize {
        1 + self.blob[0] as usize
    }

    /// Lowercase wire name.
    pub fn name(&self) -> &'a [u8] {
        &self.blob[1..self.header()]
    }

    pub fn flags(&self) -> u8 {
        self.blob[self.header() + FLAGS_AT]
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags() & flag != 0
    }

    /// Nodes (names or empty non-terminals) directly below this one.
    pub fn children(&self) -> u32 {
        let at = self.header() + CHILDREN_AT;
        u32::from_be_bytes(self.blob[at..at + 4].try_into().expect("4 bytes"))
    }

    pub fn is_empty_non_terminal(&self) -> bool {
        self.rrset_count() == 0
    }

    fn rrset_count(&self) -> usize {
        let at = self.header() + RRSET_COUNT_AT;
        u16::from_be_bytes([self.blob[at], self.blob[at + 1]]) as usize
    }

    pub fn rrsets(&self) -> impl Iterator<Item = RRsetRef<'a>> + 'a {
        let blob = self.blob;
        let mut pos = self.header() + RRSETS_AT;
        let mut left = self.rrset_count();
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let h = &blob[pos..pos + 12];
            let data_len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
            let set = RRsetRef {
                rtype: RType(u16::from_be_bytes([h[0], h[1]])),
                ttl: u32::from_be_bytes([h[2], h[3], h[4], h[5]]),
                count: u16::from_be_bytes([h[6], h[7]]),
                data: &blob[pos + 12..pos + 12 + data_len],
            };
            pos += 12 + data_len;
            Some(set)
        })
    }

    pub fn rrset(&self, rtype: RType) -> Option<RRsetRef<'a>> {
        self.rrsets().find(|s| s.rtype == rtype)
    }
}

impl<'a> RRsetRef<'a> {
    /// Each record's RDATA in wire format.
    pub fn rdatas(&self) -> impl Iterator<Item = &'a [u8]> + Clone + 'a {
        let data = self.data;
        let mut pos = 0;
        std::iter::from_fn(move || {
            if pos >= data.len() {
                return None;
            }
            let len = u16::from_be_bytes([data[pos], data[pos + 1]]) as usize;
            let rd = &data[pos + 2..pos + 2 + len];
            pos += 2 + len;
            Some(rd)
        })
    }

    /// The first record's RDATA (the only one for SOA, CNAME and DNAME).
    pub fn first(&self) -> Option<&'a [u8]> {
        self.rdatas().next()
    }
}

/// One RRset replaced or removed by a delta. Names are lowercase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RRsetUpdate {
    pub name: Name,
    pub rtype: RType,
    /// New TTL and records; `None` removes the RRset.
    pub data: Option<(u32, Vec<Vec<u8>>)>,
}

/// Case-insensitive order of wire names, label bytes compared as lowercase. Only groups equal
/// owners together; it is not DNSSEC canonical order.
fn cmp_lower(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let la = a.iter().map(u8::to_ascii_lowercase);
    let lb = b.iter().map(u8::to_ascii_lowercase);
    la.cmp(lb)
}

/// RDATA sets larger than this are deduplicated with a hash set instead of a linear scan.
const DEDUP_LINEAR_MAX: usize = 16;

/// RRsets of one owner while building or editing a node.
type NodeSets<'r> = Vec<(RType, u32, Vec<&'r [u8]>)>;

/// Semantic checks on one owner's RRsets (Knot's mandatory checks).
fn check_node(owner: &[u8], is_apex: bool, sets: &[(RType, u32, Vec<&[u8]>)]) -> Result<(), Error> {
    let owner_text = || name::wire_to_text(owner);
    let has = |t: RType| sets.iter().find(|(st, _, _)| *st == t);
    if let Some((_, _, rdatas)) = has(RType::SOA) {
        if !is_apex {
            return Err(Error::SoaNotAtApex(owner_text()));
        }
        if rdatas.len() != 1 {
            return Err(Error::SoaMultiple);
        }
        let mut spans = [(0, 0); 2];
        rdata_spans_check(RType::SOA, rdatas[0], &mut spans)?;
    }
    if let Some((_, ttl, cnames)) = has(RType::CNAME) {
        // A routed group (crate::routed) holds one variant per record, each with one CNAME.
        if cnames.len() > 1 && *ttl != crate::routed::ROUTED_TTL {
            return Err(Error::CnameMultiple(owner_text()));
        }
        // RFC 2181 §10.1; DNSSEC types may sit beside a CNAME (RFC 4035 §2.5).
        if sets
            .iter()
            .any(|(t, _, _)| !matches!(*t, RType::CNAME | RType::RRSIG | RType::NSEC))
        {
            return Err(Error::CnameAndOtherData(owner_text()));
        }
    }
    if has(RType::DNAME).is_some_and(|(_, _, d)| d.len() > 1) {
        return Err(Error::DnameMultiple(owner_text()));
    }
    if sets.len() > NODE_RRSETS_MAX {
        return Err(Error::LimitExceeded("RRsets per name", NODE_RRSETS_MAX));
    }
    Ok(())
}

fn node_flags(is_apex: bool, sets: &[(RType, u32, Vec<&[u8]>)], keep: u8) -> u8 {
    let has = |t: RType| sets.iter().any(|(st, _, _)| *st == t);
    let mut f = keep & flags::WILDCARD_CHILD;
    if is_apex {
        f |= flags::APEX;
    }
    if !is_apex && has(RType::NS) {
        f |= flags::CUT;
    }
    if has(RType::DNAME) {
        f |= flags::DNAME;
    }
    if has(RType::CNAME) {
        f |= flags::CNAME;
    }
    f
}

fn sets_checksum(owner: &[u8], sets: &[(RType, u32, Vec<&[u8]>)]) -> u64 {
    sets.iter()
        .map(|(t, ttl, rds)| rrset_checksum(owner, *t, *ttl, rds.iter().copied()))
        .fold(0u64, u64::wrapping_add)
}

impl Zone {
    /// Compiles records into a zone, enforcing the checks every authoritative server makes
    /// (Knot's mandatory semantic checks): one SOA at the apex, no CNAME beside other data,
    /// nothing below a DNAME, no data outside the zone.
    ///
    /// Records are sorted by owner and type and packed group by group, so the transient memory
    /// is the records themselves plus the packed nodes, whatever the zone's size.
    pub fn build(origin: &Name, mut records: Vec<Record>) -> Result<Zone, Error> {
        if records.len() > ZONE_RECORDS_MAX {
            return Err(Error::LimitExceeded("records per zone", ZONE_RECORDS_MAX));
        }
        let origin = origin.to_lowercase();
        for r in &records {
            if !r.owner.is_subdomain_of(&origin) {
                return Err(Error::OutOfZone(r.owner.to_string()));
            }
        }
        // Stable: records of one RRset keep their file order.
        records
            .sort_by(|a, b| cmp_lower(a.owner.wire(), b.owner.wire()).then(a.rtype.cmp(&b.rtype)));

        let mut blobs: Vec<Box<[u8]>> = Vec::new();
        let mut record_count = 0usize;
        let mut checksum = 0u64;
        let mut idx = 0;
        let mut sets: NodeSets = Vec::new();
        let mut seen: hashbrown::HashSet<&[u8]> = hashbrown::HashSet::new();
        while idx < records.len() {
            let owner_end = idx
                + records[idx..]
                    .iter()
                    .take_while(|r| {
                        r.owner
                            .wire()
                            .eq_ignore_ascii_case(records[idx].owner.wire())
                    })
                    .count();
            let owner = records[idx].owner.to_lowercase();
            let is_apex = owner == origin;
            sets.clear();
            for r in &records[idx..owner_end] {
                match sets.last_mut() {
                    Some((t, _, rdatas)) if *t == r.rtype => {
                        let duplicate = if rdatas.len() < DEDUP_LINEAR_MAX {
                            rdatas.contains(&r.rdata.as_slice())
                        } else {
                            if seen.is_empty() {
                                seen.extend(rdatas.iter().copied());
                            }
                            !seen.insert(r.rdata.as_slice())
                        };
                        // RFC 2181 §5: an RRset holds no duplicates. The first TTL wins, as in Knot.
                        if !duplicate {
                            if rdatas.len() >= RRSET_RECORDS_MAX {
                                return Err(Error::LimitExceeded(
                                    "records per RRset",
                                    RRSET_RECORDS_MAX,
                                ));
                            }
                            rdatas.push(&r.rdata);
                        }
                    }
                    _ => {
                        seen.clear();
                        sets.push((r.rtype, r.ttl, vec![r.rdata.as_slice()]));
                    }
                }
            }
            check_node(owner.wire(), is_apex, &sets)?;
            record_count += sets.iter().map(|(_, _, r)| r.len()).sum::<usize>();
            checksum = checksum.wrapping_add(sets_checksum(owner.wire(), &sets));
            blobs.push(pack_node(
                owner.wire(),
                node_flags(is_apex, &sets, 0),
                0,
                &sets,
            ));
            idx = owner_end;
        }
        drop(seen);
        drop(records);

        let node_estimate = blobs.len() + blobs.len() / 8;
        let (shard_count, shard_shift) = shard_geometry(node_estimate);
        let mut shards: Vec<Shard> = (0..shard_count)
            .map(|_| HashTable::with_capacity(node_estimate / shard_count + 8))
            .collect();
        let owners: Vec<Box<[u8]>> = blobs
            .iter()
            .map(|b| NodeRef { blob: b }.name().into())
            .collect();
        for blob in blobs {
            let hash = node_hash(&blob);
            shards[shard_index(hash, shard_shift)].insert_unique(hash, blob, node_hash);
        }
        let mut zone = Zone {
            origin,
            shards: Box::new([]),
            shard_shift,
            record_count,
            node_count: 0,
            serial: 0,
            negative_ttl: 0,
            checksum,
        };
        // Link every node to its parent once: child counts, empty non-terminals, wildcard
        // flags, and no data below a DNAME. A walk stops at the first parent that already
        // existed, whose own walk covers the ancestors above it.
        let origin_len = zone.origin.wire().len();
        for owner in &owners {
            let mut child: &[u8] = owner;
            while child.len() > origin_len {
                let label_len = child[0] as usize;
                let parent = &child[1 + label_len..];
                let is_wildcard = label_len == 1 && child[1] == b'*';
                let hash = hash_name(parent);
                let shard = &mut shards[shard_index(hash, shard_shift)];
                match shard.find_mut(hash, |b| NodeRef { blob: b }.name() == parent) {
                    Some(blob) => {
                        link_child(blob, is_wildcard, 1)
                            .map_err(|()| Error::DnameHasChildren(name::wire_to_text(parent)))?;
                        break;
                    }
                    None => {
                        let node_flags = if is_wildcard {
                            flags::WILDCARD_CHILD
                        } else {
                            0
                        };
                        shard.insert_unique(hash, pack_node(parent, node_flags, 1, &[]), node_hash);
                    }
                }
                child = parent;
            }
        }
        zone.node_count = shards.iter().map(|s| s.len()).sum();
        zone.shards = shards.into_iter().map(Arc::new).collect();
        zone.refresh_soa()?;
        Ok(zone)
    }

    /// Serial and negative TTL from the apex SOA; errors if the apex has none.
    fn refresh_soa(&mut self) -> Result<(), Error> {
        let apex = self.node(self.origin.wire()).ok_or(Error::SoaMissing)?;
        let soa = apex.rrset(RType::SOA).ok_or(Error::SoaMissing)?;
        let rdata = soa.first().ok_or(Error::SoaMissing)?;
        let mut spans = [(0, 0); 2];
        rdata_spans_check(RType::SOA, rdata, &mut spans)?;
        let fixed = &rdata[spans[1].0 + spans[1].1..];
        let serial = u32::from_be_bytes(fixed[0..4].try_into().expect("SOA fixed fields"));
        let minimum = u32::from_be_bytes(fixed[16..20].try_into().expect("SOA fixed fields"));
        let negative_ttl = soa.ttl.min(minimum);
        self.serial = serial;
        self.negative_ttl = negative_ttl;
        Ok(())
    }

    /// A new zone with `updates` applied, sharing every shard they do not touch with `self`.
    /// Costs O(updates × (labels + shard size)), independent of the zone's size. The same checks
    /// as [`Zone::build`] hold afterwards, or an error is returned and `self` is unchanged.
    pub fn apply(&self, updates: &[RRsetUpdate]) -> Result<Zone, Error> {
        let mut next = self.clone();
        for u in updates {
            next.apply_one(u)?;
        }
        next.refresh_soa()?;
        if next.node_count > next.shards.len() * SHARD_NODES_TARGET * SHARD_GROWTH_MAX {
            next.reshard();
        }
        Ok(next)
    }

    fn shard_mut(&mut self, hash: u64) -> &mut Shard {
        Arc::make_mut(&mut self.shards[shard_index(hash, self.shard_shift)])
    }

    fn take_node(&mut self, name: &[u8]) -> Option<Box<[u8]>> {
        let hash = hash_name(name);
        let shard = self.shard_mut(hash);
        shard
            .find_entry(hash, |b| NodeRef { blob: b }.name() == name)
            .ok()
            .map(|e| e.remove().0)
    }

    fn put_node(&mut self, blob: Box<[u8]>) {
        let hash = node_hash(&blob);
        self.shard_mut(hash).insert_unique(hash, blob, node_hash);
    }

    fn apply_one(&mut self, u: &RRsetUpdate) -> Result<(), Error> {
        let name = u.name.to_lowercase();
        let owner = name.wire();
        if !name.is_subdomain_of(&self.origin) {
            return Err(Error::OutOfZone(name.to_string()));
        }
        if u.rtype.is_meta() {
            return Err(Error::TypeNotData(u.rtype.0));
        }
        let is_apex = owner == self.origin.wire();
        let old = self.take_node(owner);
        let existed = old.is_some();
        let (old_flags, children) = old
            .as_deref()
            .map(|b| (NodeRef { blob: b }.flags(), NodeRef { blob: b }.children()))
            .unwrap_or((0, 0));
        let mut sets: NodeSets = old
            .as_deref()
            .map(|b| {
                NodeRef { blob: b }
                    .rrsets()
                    .map(|s| (s.rtype, s.ttl, s.rdatas().collect()))
                    .collect()
            })
            .unwrap_or_default();
        let old_checksum = sets_checksum(owner, &sets);
        let old_records: usize = sets.iter().map(|(_, _, r)| r.len()).sum();
        let pos = sets.iter().position(|(t, _, _)| *t == u.rtype);
        match (&u.data, pos) {
            (Some((ttl, rdatas)), _) if !rdatas.is_empty() => {
                if rdatas.len() > RRSET_RECORDS_MAX {
                    return Err(Error::LimitExceeded("records per RRset", RRSET_RECORDS_MAX));
                }
                let entry = (u.rtype, *ttl, rdatas.iter().map(Vec::as_slice).collect());
                match pos {
                    Some(i) => sets[i] = entry,
                    None => {
                        let at = sets.partition_point(|(t, _, _)| *t < u.rtype);
                        sets.insert(at, entry);
                    }
                }
            }
            (_, Some(i)) => {
                sets.remove(i);
            }
            (_, None) => {}
        }
        check_node(owner, is_apex, &sets)?;
        if sets.iter().any(|(t, _, _)| *t == RType::DNAME) && children > 0 {
            return Err(Error::DnameHasChildren(name.to_string()));
        }
        let new_records: usize = sets.iter().map(|(_, _, r)| r.len()).sum();
        self.checksum = self
            .checksum
            .wrapping_sub(old_checksum)
            .wrapping_add(sets_checksum(owner, &sets));
        self.record_count = self.record_count - old_records + new_records;
        if sets.is_empty() && children == 0 && !is_apex {
            drop(old);
            if existed {
                self.node_count -= 1;
                self.unlink_from_parent(owner)?;
            }
            return Ok(());
        }
        let blob = pack_node(
            owner,
            node_flags(is_apex, &sets, old_flags),
            children,
            &sets,
        );
        drop(sets);
        drop(old);
        self.put_node(blob);
        if !existed {
            self.node_count += 1;
            self.link_to_parent(owner)?;
        }
        Ok(())
    }

    /// A node was created: count it in its parent, creating empty non-terminals as needed.
    fn link_to_parent(&mut self, owner: &[u8]) -> Result<(), Error> {
        let origin_len = self.origin.wire().len();
        let mut child = owner;
        while child.len() > origin_len {
            let label_len = child[0] as usize;
            let parent = &child[1 + label_len..];
            let is_wildcard = label_len == 1 && child[1] == b'*';
            let hash = hash_name(parent);
            let shard = self.shard_mut(hash);
            match shard.find_mut(hash, |b| NodeRef { blob: b }.name() == parent) {
                Some(blob) => {
                    return link_child(blob, is_wildcard, 1)
                        .map_err(|()| Error::DnameHasChildren(name::wire_to_text(parent)));
                }
                None => {
                    let node_flags = if is_wildcard {
                        flags::WILDCARD_CHILD
                    } else {
                        0
                    };
                    shard.insert_unique(hash, pack_node(parent, node_flags, 1, &[]), node_hash);
                    self.node_count += 1;
                }
            }
            child = parent;
        }
        Ok(())
    }

    /// A node was removed: uncount it, removing empty non-terminals left without children.
    fn unlink_from_parent(&mut self, owner: &[u8]) -> Result<(), Error> {
        let origin_len = self.origin.wire().len();
        let mut child = owner;
        while child.len() > origin_len {
            let label_len = child[0] as usize;
            let parent = &child[1 + label_len..];
            let is_wildcard = label_len == 1 && child[1] == b'*';
            let hash = hash_name(parent);
            let is_apex = parent == self.origin.wire();
            let shard = self.shard_mut(hash);
            let entry = shard
                .find_entry(hash, |b| NodeRef { blob: b }.name() == parent)
                .map_err(|_| Error::Directive("zone structure: parent node missing"))?;
            let (blob, _) = entry.remove();
            let node = NodeRef { blob: &blob };
            let children = node.children().saturating_sub(1);
            if children == 0 && node.is_empty_non_terminal() && !is_apex {
                self.node_count -= 1;
                child = parent;
                continue;
            }
            let mut blob = blob;
            let header = 1 + blob[0] as usize;
            blob[header + CHILDREN_AT..header + CHILDREN_AT + 4]
                .copy_from_slice(&children.to_be_bytes());
            if is_wildcard {
                blob[header + FLAGS_AT] &= !flags::WILDCARD_CHILD;
            }
            self.put_node(blob);
            return Ok(());
        }
        Ok(())
    }

    fn reshard(&mut self) {
        let (count, shift) = shard_geometry(self.node_count);
        let mut shards: Vec<Shard> = (0..count)
            .map(|_| HashTable::with_capacity(self.node_count / count + 8))
            .collect();
        for shard in self.shards.iter() {
            for blob in shard.iter() {
                let hash = node_hash(blob);
                shards[shard_index(hash, shift)].insert_unique(hash, blob.clone(), node_hash);
            }
        }
        self.shards = shards.into_iter().map(Arc::new).collect();
        self.shard_shift = shift;
    }

    pub fn origin(&self) -> &Name {
        &self.origin
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    pub fn record_count(&self) -> usize {
        self.record_count
    }

    pub fn node_count(&self) -> usize {
        self.node_count
    }

    pub fn negative_ttl(&self) -> u32 {
        self.negative_ttl
    }

    /// Wrapping sum of [`rrset_checksum`] over every RRset.
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// The node for a lowercase wire name, if it exists (empty non-terminals included).
    #[inline]
    pub fn node(&self, lower_wire: &[u8]) -> Option<NodeRef<'_>> {
        let hash = hash_name(lower_wire);
        let shard = &self.shards[shard_index(hash, self.shard_shift)];
        shard
            .find(hash, |b| NodeRef { blob: b }.name() == lower_wire)
            .map(|b| NodeRef { blob: b })
    }

    pub fn apex(&self) -> NodeRef<'_> {
        self.node(self.origin.wire())
            .expect("apex node exists by construction")
    }

    /// Every node, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeRef<'_>> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|blob| NodeRef { blob }))
    }

    /// Every record, for export and for comparing zones in tests. Order: by name, then type.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.record_count);
        for node in self.nodes() {
            let owner = Name::from_wire(node.name()).expect("valid name in node");
            for set in node.rrsets() {
                for rd in set.rdatas() {
                    out.push(Record {
                        owner: owner.clone(),
                        rtype: set.rtype,
                        ttl: set.ttl,
                        rdata: rd.to_vec(),
                    });
                }
            }
        }
        out.sort_by(|a, b| cmp_lower(a.owner.wire(), b.owner.wire()).then(a.rtype.cmp(&b.rtype)));
        out
    }

    /// Heap bytes held by nodes and tables (for the memory benchmark and metrics).
    pub fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.capacity() * (std::mem::size_of::<Box<[u8]>>() + 1)
                    + s.iter().map(|b| b.len()).sum::<usize>()
            })
            .sum()
    }

    /// Structural self-check for tests: child counts, flags, empty non-terminals.
    pub fn verify_structure(&self) -> Result<(), String> {
        let mut children: hashbrown::HashMap<Vec<u8>, u32> = hashbrown::HashMap::new();
        let mut wild: hashbrown::HashSet<Vec<u8>> = hashbrown::HashSet::new();
        let origin_len = self.origin.wire().len();
        for node in self.nodes() {
            let n = node.name();
            if n.len() > origin_len {
                let parent = &n[1 + n[0] as usize..];
                if self.node(parent).is_none() {
                    return Err(format!("{} has no parent node", name::wire_to_text(n)));
                }
                *children.entry(parent.to_vec()).or_default() += 1;
                if n[0] == 1 && n[1] == b'*' {
                    wild.insert(parent.to_vec());
                }
            }
        }
        let mut count = 0;
        for node in self.nodes() {
            count += 1;
            let n = node.name();
            let expected = children.get(n).copied().unwrap_or(0);
            if node.children() != expected {
                return Err(format!(
                    "{}: children {} != {expected}",
                    name::wire_to_text(n),
                    node.children()
                ));
            }
            if node.is_empty_non_terminal() && expected == 0 && n != self.origin.wire() {
                return Err(format!("{}: empty leaf", name::wire_to_text(n)));
            }
            if node.has(flags::WILDCARD_CHILD) != wild.contains(n) {
                return Err(format!("{}: wildcard flag", name::wire_to_text(n)));
            }
        }
        if count != self.node_count {
            return Err(format!("node count {} != {count}", self.node_count));
        }
        Ok(())
    }
}

// hashbrown's rehash callback hands us the stored element, a `&Box<[u8]>`.
#[allow(clippy::borrowed_box)]
fn node_hash(b: &Box<[u8]>) -> u64 {
    hash_name(NodeRef { blob: b }.name())
}

/// Adds `delta` children to a parent blob in place; sets the wildcard flag. `Err` if the parent
/// has a DNAME (nothing may exist below one).
fn link_child(blob: &mut [u8], is_wildcard: bool, delta: u32) -> Result<(), ()> {
    let header = 1 + blob[0] as usize;
    if blob[header + FLAGS_AT] & flags::DNAME != 0 {
        return Err(());
    }
    if is_wildcard {
        blob[header + FLAGS_AT] |= flags::WILDCARD_CHILD;
    }
    let at = header + CHILDREN_AT;
    let children = u32::from_be_bytes(blob[at..at + 4].try_into().expect("4 bytes")) + delta;
    blob[at..at + 4].copy_from_slice(&children.to_be_bytes());
    Ok(())
}

fn shard_geometry(nodes: usize) -> (usize, u32) {
    let count = (nodes / SHARD_NODES_TARGET).max(1).next_power_of_two();
    (count, 64 - count.trailing_zeros())
}

fn shard_index(hash: u64, shift: u32) -> usize {
    if shift >= 64 {
        0
    } else {
        (hash >> shift) as usize
    }
}

fn rdata_spans_check(
    rtype: RType,
    rdata: &[u8],
    spans: &mut [(usize, usize); 2],
) -> Result<(), Error> {
    let n = crate::rdata::rdata_name_spans(rtype, rdata, spans);
    if rtype == RType::SOA && (n != 2 || rdata.len() != spans[1].0 + spans[1].1 + 20) {
        return Err(Error::RdataInvalid("SOA"));
    }
    Ok(())
}

fn pack_node(
    owner: &[u8],
    node_flags: u8,
    children: u32,
    sets: &[(RType, u32, Vec<&[u8]>)],
) -> Box<[u8]> {
    let mut size = 1 + owner.len() + RRSETS_AT;
    for (_, _, rdatas) in sets {
        size += 12 + rdatas.iter().map(|r| 2 + r.len()).sum::<usize>();
    }
    let mut blob = Vec::with_capacity(size);
    blob.push(owner.len() as u8);
    blob.extend_from_slice(owner);
    blob.push(node_flags);
    blob.extend_from_slice(&children.to_be_bytes());
    blob.extend_from_slice(&(sets.len() as u16).to_be_bytes());
    for (rtype, ttl, rdatas) in sets {
        let data_len: usize = rdatas.iter().map(|r| 2 + r.len()).sum();
        blob.extend_from_slice(&rtype.0.to_be_bytes());
        blob.extend_from_slice(&ttl.to_be_bytes());
        blob.extend_from_slice(&(rdatas.len() as u16).to_be_bytes());
        blob.extend_from_slice(&(data_len as u32).to_be_bytes());
        for rd in rdatas {
            blob.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            blob.extend_from_slice(rd);
        }
    }
    debug_assert_eq!(blob.len(), size);
    blob.into_boxed_slice()
}
