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

/// Case-insensitive order of wire names, label bytes compared as lowercase. Only groups equal
/// owners together; it is not DNSSEC canonical order.
fn cmp_lower(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let la = a.iter().map(u8::to_ascii_lowercase);
    let lb = b.iter().map(u8::to_ascii_lowercase);
    la.cmp(lb)
}

/// RDATA sets larger than this are deduplicated with a hash set instead of a linear scan.
const DEDUP_LINEAR_MAX: usize = 16;

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
        let mut soa: Option<(u32, Vec<u8>)> = None;
        let mut idx = 0;
        let mut sets: Vec<(RType, u32, Vec<&[u8]>)> = Vec::new();
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
            let owner_text = || owner.to_string();
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
            let has = |t: RType| sets.iter().find(|(st, _, _)| *st == t);
            if let Some((_, ttl, rdatas)) = has(RType::SOA) {
                if !is_apex {
                    return Err(Error::SoaNotAtApex(owner_text()));
                }
                if rdatas.len() != 1 {
                    return Err(Error::SoaMultiple);
                }
                soa = Some((*ttl, rdatas[0].to_vec()));
            }
            if let Some((_, _, cnames)) = has(RType::CNAME) {
                if cnames.len() > 1 {
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
            let mut node_flags = 0u8;
            if is_apex {
                node_flags |= flags::APEX;
            }
            if !is_apex && has(RType::NS).is_some() {
                node_flags |= flags::CUT;
            }
            if has(RType::DNAME).is_some() {
                node_flags |= flags::DNAME;
            }
            if has(RType::CNAME).is_some() {
                node_flags |= flags::CNAME;
            }
            record_count += sets.iter().map(|(_, _, r)| r.len()).sum::<usize>();
            blobs.push(pack_node(owner.wire(), node_flags, &sets));
            idx = owner_end;
        }
        drop(seen);
        drop(records);
        let (soa_ttl, soa_rdata) = soa.ok_or(Error::SoaMissing)?;
        let mut spans = [(0, 0); 2];
        rdata_spans_check(RType::SOA, &soa_rdata, &mut spans)?;
        let fixed = &soa_rdata[spans[1].0 + spans[1].1..];
        let serial = u32::from_be_bytes(fixed[0..4].try_into().expect("SOA fixed fields"));
        let minimum = u32::from_be_bytes(fixed[16..20].try_into().expect("SOA fixed fields"));

        let node_estimate = blobs.len() + blobs.len() / 8;
        let shard_count = (node_estimate / SHARD_NODES_TARGET)
            .max(1)
            .next_power_of_two();
        let shard_shift = 64 - shard_count.trailing_zeros();
        let mut shards: Vec<Shard> = (0..shard_count)
            .map(|_| HashTable::with_capacity(node_estimate / shard_count + 8))
            .collect();
        // hashbrown's rehash callback hands us the stored element, a `&Box<[u8]>`.
        #[allow(clippy::borrowed_box)]
        let node_hash = |b: &Box<[u8]>| hash_name(NodeRef { blob: b }.name());
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
            serial,
            negative_ttl: soa_ttl.min(minimum),
        };
        // Empty non-terminals, DNAME children and wildcard parents: walk each owner's ancestors.
        let owners: Vec<Box<[u8]>> = shards
            .iter()
            .flat_map(|s| s.iter().map(|b| NodeRef { blob: b }.name().into()))
            .collect();
        let origin_len = zone.origin.wire().len();
        for owner in &owners {
            let mut pos = 0usize;
            while owner.len() - pos > origin_len {
                let label_len = owner[pos] as usize;
                let parent = &owner[pos + 1 + label_len..];
                let is_wildcard = label_len == 1 && owner[pos + 1] == b'*';
                let hash = hash_name(parent);
                let shard = &mut shards[shard_index(hash, shard_shift)];
                match shard.find_mut(hash, |b| NodeRef { blob: b }.name() == parent) {
                    Some(blob) => {
                        let flags_at = 1 + blob[0] as usize;
                        if blob[flags_at] & flags::DNAME != 0 {
                            return Err(Error::DnameHasChildren(name::wire_to_text(parent)));
                        }
                        if is_wildcard {
                            blob[flags_at] |= flags::WILDCARD_CHILD;
                        }
                    }
                    None => {
                        let node_flags = if is_wildcard {
                            flags::WILDCARD_CHILD
                        } else {
                            0
                        };
                        shard.insert_unique(hash, pack_node(parent, node_flags, &[]), node_hash);
                    }
                }
                pos += 1 + label_len;
            }
        }
        zone.node_count = shards.iter().map(|s| s.len()).sum();
        zone.shards = shards.into_iter().map(Arc::new).collect();
        Ok(zone)
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

fn pack_node(owner: &[u8], node_flags: u8, sets: &[(RType, u32, Vec<&[u8]>)]) -> Box<[u8]> {
    let mut size = 1 + owner.len() + 3;
    for (_, _, rdatas) in sets {
        size += 12 + rdatas.iter().map(|r| 2 + r.len()).sum::<usize>();
    }
    let mut blob = Vec::with_capacity(size);
    blob.push(owner.len() as u8);
    blob.extend_from_slice(owner);
    blob.push(node_flags);
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
