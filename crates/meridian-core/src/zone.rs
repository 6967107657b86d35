//! A compiled zone: every owner name and every empty non-terminal as one packed node.
//!
//! Answers need, per query, a handful of exact-name lookups (walking from the apex down the
//! query name: zone cuts, DNAMEs, the closest encloser, the wildcard). So nodes live in hash
//! tables keyed by the lowercase wire name, and every empty non-terminal (RFC 4592 §2.2.2) is a
//! node of its own: a random-subdomain flood costs O(labels) lookups, never a scan.
//!
//! Each node is a single allocation (name, flags, RRsets, RDATA) to keep memory per record
//! low, and nodes are spread over shards behind `Arc`s so that a later delta copies only the
//! shards it touches, not the zone.

use std::collections::BTreeMap;
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
/// Nodes per shard, on average. Bounds what one delta copies; small enough to copy in µs.
pub const SHARD_NODES_TARGET: usize = 256;

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

/// Packed nodes (see [`NodeRef`]) keyed by their lowercase name.
type Shard = HashTable<Box<[u8]>>;

/// A zone ready to answer from.
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
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Zone({}, {} records)", self.origin, self.record_count)
    }
}

/// A borrowed, packed node. Layout: `[name_len][name…][flags][rrset_count u16]` then RRsets
/// `[type u16][ttl u32][count u16][data_len u32][([rdlen u16][rdata…])…]`.
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
    data: &'a [u8],
}

impl<'a> NodeRef<'a> {
    fn name_end(&self) -> usize {
        1 + self.blob[0] as usize
    }

    /// Lowercase wire name.
    pub fn name(&self) -> &'a [u8] {
        &self.blob[1..self.name_end()]
    }

    pub fn flags(&self) -> u8 {
        self.blob[self.name_end()]
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags() & flag != 0
    }

    pub fn is_empty_non_terminal(&self) -> bool {
        self.rrset_count() == 0
    }

    fn rrset_count(&self) -> usize {
        let at = self.name_end() + 1;
        u16::from_be_bytes([self.blob[at], self.blob[at + 1]]) as usize
    }

    pub fn rrsets(&self) -> impl Iterator<Item = RRsetRef<'a>> + 'a {
        let blob = self.blob;
        let mut pos = self.name_end() + 3;
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
    pub fn rdatas(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
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

/// RRsets of one owner while building: type → (TTL, RDATAs in file order, deduplicated).
type Building = BTreeMap<u16, (u32, Vec<Vec<u8>>)>;

impl Zone {
    /// Compiles records into a zone, enforcing the checks every authoritative server makes
    /// (Knot's mandatory semantic checks): one SOA at the apex, no CNAME beside other data,
    /// nothing below a DNAME, no data outside the zone.
    pub fn build(origin: &Name, records: Vec<Record>) -> Result<Zone, Error> {
        if records.len() > ZONE_RECORDS_MAX {
            return Err(Error::LimitExceeded("records per zone", ZONE_RECORDS_MAX));
        }
        let origin = origin.to_lowercase();
        let mut names: hashbrown::HashMap<Box<[u8]>, Building, foldhash::fast::FixedState> =
            hashbrown::HashMap::with_capacity_and_hasher(
                records.len(),
                foldhash::fast::FixedState::with_seed(HASH_SEED),
            );
        let mut record_count = 0;
        for r in records {
            if !r.owner.is_subdomain_of(&origin) {
                return Err(Error::OutOfZone(r.owner.to_string()));
            }
            let key: Box<[u8]> = r.owner.to_lowercase().wire().into();
            let sets = names.entry(key).or_default();
            let (_, rdatas) = sets.entry(r.rtype.0).or_insert_with(|| (r.ttl, Vec::new()));
            // RFC 2181 §5: an RRset holds no duplicates. The first TTL wins, as in Knot.
            if !rdatas.contains(&r.rdata) {
                if rdatas.len() >= RRSET_RECORDS_MAX {
                    return Err(Error::LimitExceeded("records per RRset", RRSET_RECORDS_MAX));
                }
                rdatas.push(r.rdata);
                record_count += 1;
            }
        }
        let apex = names.get(origin.wire()).ok_or(Error::SoaMissing)?;
        let soa = apex.get(&RType::SOA.0).ok_or(Error::SoaMissing)?;
        if soa.1.len() != 1 {
            return Err(Error::SoaMultiple);
        }
        let soa_rdata = &soa.1[0];
        let mut spans = [(0, 0); 2];
        rdata_spans_check(RType::SOA, soa_rdata, &mut spans)?;
        let fixed = &soa_rdata[spans[1].0 + spans[1].1..];
        let serial = u32::from_be_bytes(fixed[0..4].try_into().expect("SOA fixed fields"));
        let minimum = u32::from_be_bytes(fixed[16..20].try_into().expect("SOA fixed fields"));
        let negative_ttl = soa.0.min(minimum);

        // Semantic checks, per owner.
        for (owner, sets) in &names {
            let owner_text = || name::wire_to_text(owner);
            if sets.contains_key(&RType::SOA.0) && owner.as_ref() != origin.wire() {
                return Err(Error::SoaNotAtApex(owner_text()));
            }
            if let Some((_, cnames)) = sets.get(&RType::CNAME.0) {
                if cnames.len() > 1 {
                    return Err(Error::CnameMultiple(owner_text()));
                }
                // RFC 2181 §10.1; DNSSEC types may sit beside a CNAME (RFC 4035 §2.5).
                let others = sets
                    .keys()
                    .any(|&t| !matches!(RType(t), RType::CNAME | RType::RRSIG | RType::NSEC));
                if others {
                    return Err(Error::CnameAndOtherData(owner_text()));
                }
            }
            if sets.get(&RType::DNAME.0).is_some_and(|(_, d)| d.len() > 1) {
                return Err(Error::DnameMultiple(owner_text()));
            }
        }
        // Empty non-terminals and DNAME children, walking each name's ancestors up to the apex.
        let mut ents: Vec<Box<[u8]>> = Vec::new();
        let mut wildcard_parents: hashbrown::HashSet<Box<[u8]>> = hashbrown::HashSet::new();
        for owner in names.keys() {
            let mut pos = 0usize;
            let origin_len = origin.wire().len();
            while owner.len() - pos > origin_len {
                let label_len = owner[pos] as usize;
                let parent = &owner[pos + 1 + label_len..];
                if label_len == 1 && owner[pos + 1] == b'*' {
                    wildcard_parents.insert(parent.into());
                }
                match names.get(parent) {
                    Some(sets) => {
                        if sets.contains_key(&RType::DNAME.0) {
                            return Err(Error::DnameHasChildren(name::wire_to_text(parent)));
                        }
                    }
                    None => ents.push(parent.into()),
                }
                pos += 1 + label_len;
            }
        }
        for ent in ents {
            names.entry(ent).or_default();
        }

        let node_count = names.len();
        let shard_count = (node_count / SHARD_NODES_TARGET).max(1).next_power_of_two();
        let shard_shift = 64 - shard_count.trailing_zeros();
        let mut shards: Vec<HashTable<Box<[u8]>>> = (0..shard_count)
            .map(|_| HashTable::with_capacity(node_count / shard_count + 8))
            .collect();
        for (owner, sets) in names {
            let mut node_flags = 0u8;
            let is_apex = owner.as_ref() == origin.wire();
            if is_apex {
                node_flags |= flags::APEX;
            }
            if !is_apex && sets.contains_key(&RType::NS.0) {
                node_flags |= flags::CUT;
            }
            if sets.contains_key(&RType::DNAME.0) {
                node_flags |= flags::DNAME;
            }
            if sets.contains_key(&RType::CNAME.0) {
                node_flags |= flags::CNAME;
            }
            if wildcard_parents.contains(&owner) {
                node_flags |= flags::WILDCARD_CHILD;
            }
            let blob = pack_node(&owner, node_flags, &sets)?;
            let hash = hash_name(&owner);
            let shard = shard_index(hash, shard_shift);
            shards[shard].insert_unique(hash, blob, |b| hash_name(NodeRef { blob: b }.name()));
        }
        Ok(Zone {
            origin,
            shards: shards.into_iter().map(Arc::new).collect(),
            shard_shift,
            record_count,
            node_count,
            serial,
            negative_ttl,
        })
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

    /// Every record, for export and for comparing zones in tests. Order: by name, then type.
    pub fn records(&self) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.record_count);
        for shard in self.shards.iter() {
            for blob in shard.iter() {
                let node = NodeRef { blob };
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
        }
        out.sort_by(|a, b| {
            (a.owner.wire().iter().rev().collect::<Vec<_>>(), a.rtype)
                .cmp(&(b.owner.wire().iter().rev().collect::<Vec<_>>(), b.rtype))
        });
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

fn pack_node(owner: &[u8], node_flags: u8, sets: &Building) -> Result<Box<[u8]>, Error> {
    let mut size = 1 + owner.len() + 3;
    for (_, rdatas) in sets.values() {
        size += 12 + rdatas.iter().map(|r| 2 + r.len()).sum::<usize>();
    }
    let mut blob = Vec::with_capacity(size);
    blob.push(owner.len() as u8);
    blob.extend_from_slice(owner);
    blob.push(node_flags);
    blob.extend_from_slice(&(sets.len() as u16).to_be_bytes());
    for (&rtype, (ttl, rdatas)) in sets {
        let data_len: usize = rdatas.iter().map(|r| 2 + r.len()).sum();
        blob.extend_from_slice(&rtype.to_be_bytes());
        blob.extend_from_slice(&ttl.to_be_bytes());
        blob.extend_from_slice(&(rdatas.len() as u16).to_be_bytes());
        blob.extend_from_slice(&(data_len as u32).to_be_bytes());
        for rd in rdatas {
            blob.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            blob.extend_from_slice(rd);
        }
    }
    debug_assert_eq!(blob.len(), size);
    Ok(blob.into_boxed_slice())
}
