//! The authoritative answer algorithm (RFC 1034 §4.3.2 with RFC 2308, 4592, 6604, 6672, 6891,
//! 8482, 9471 and 5001), writing straight into the caller's buffer.
//!
//! No allocation: the query name, chain state and compression table live on the stack or in the
//! caller's [`Scratch`]. Every outcome is a reply length or "send nothing"; nothing here panics on
//! input (the fuzz target holds us to that).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::catalog::Catalog;
use crate::name::{self, NAME_BYTES_MAX, NAME_LABELS_MAX};
use crate::policy::{self, Environment, GeoLookup, Location, MULTIVALUE_ANSWERS_MAX};
use crate::query::{
    self, CLASS_CH, CLASS_IN, Edns, HEADER_BYTES, Malformed, OPCODE_NOTIFY, OPCODE_QUERY,
    OPCODE_UPDATE, Query, QueryBuffers,
};
use crate::rdata::RType;
use crate::routed::{self, ROUTED_TTL};
use crate::writer::{Full, Section, Writer};
use crate::zone::{NodeRef, RRsetRef, Zone, flags};

/// CNAME/DNAME links followed in one answer. Knot follows chains of this order; a longer chain is
/// a misconfiguration, and the resolver continues from where we stop.
pub const CNAME_CHAIN_MAX: usize = 16;
/// RRsets whose targets get additional-section processing (MX, SRV, NS), per answer.
pub const ADDITIONAL_SOURCES_MAX: usize = 4;
/// Target names given A/AAAA in the additional section, per answer (13 NS + slack).
pub const ADDITIONAL_TARGETS_MAX: usize = 32;
/// Default largest UDP answer: the DNS Flag Day 2020 value, which avoids IP fragmentation.
/// Knot uses the same default, so answers truncate where Knot's do.
pub const UDP_PAYLOAD_DEFAULT: u16 = 1232;
/// Bytes of identity we will put in NSID and CHAOS TXT (one character-string).
pub const IDENTITY_BYTES_MAX: usize = 255;
/// RFC 1035 §2.3.4: a UDP message without EDNS is at most 512 octets.
pub const UDP_PLAIN_BYTES_MAX: usize = 512;
/// The largest DNS message (TCP's 16-bit length prefix).
pub const MESSAGE_BYTES_MAX: usize = 65535;

pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    pub const YXDOMAIN: u16 = 6;
    pub const NOTAUTH: u16 = 9;
    pub const BADVERS: u16 = 16;
    /// TSIG error code (RFC 8945 §5.2.1), carried in the TSIG record.
    pub const BADKEY: u16 = 17;
}

const CLASS_ANY: u16 = 255;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What the answer engine needs besides the catalog.
#[derive(Clone)]
pub struct ServerConfig {
    /// Shown in NSID and CHAOS `id.server` / `hostname.bind`; empty disables both.
    pub identity: Vec<u8>,
    /// Largest UDP answer we send even when the client offers more.
    pub udp_payload_max: u16,
    /// Where clients are, for geolocation and geoproximity (none: those policies answer their
    /// default, or NODATA).
    pub geo: Option<Arc<dyn GeoLookup>>,
    /// This POP's RTT to each region, for latency records whose endpoint this POP does not
    /// probe (measured RTTs win).
    pub region_rtt_ms: Vec<(String, u32)>,
    /// This edge's POP: which measured RTTs of the catalog apply here.
    pub pop: String,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("identity", &String::from_utf8_lossy(&self.identity))
            .field("udp_payload_max", &self.udp_payload_max)
            .field("geo", &self.geo.is_some())
            .field("region_rtt_ms", &self.region_rtt_ms)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            identity: Vec::new(),
            udp_payload_max: UDP_PAYLOAD_DEFAULT,
            geo: None,
            region_rtt_ms: Vec::new(),
            pop: String::new(),
        }
    }
}

/// Per-worker scratch space, reused for every query.
pub struct Scratch {
    query: QueryBuffers,
    /// Per-worker PRNG state for weighted and multivalue draws (SplitMix64).
    rng: u64,
}

impl Default for Scratch {
    fn default() -> Self {
        // Distinct streams per worker; no clock, so the core stays deterministic given its
        // inputs (tests seed through the query ids they send).
        static STREAMS: AtomicU64 = AtomicU64::new(0x243f_6a88_85a3_08d3);
        Scratch {
            query: QueryBuffers::default(),
            rng: STREAMS.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed),
        }
    }
}

/// The result of answering: bytes to send, or nothing. Carries the rcode for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Reply { len: usize, rcode: u16 },
    Drop,
}

struct Flags {
    rcode: u16,
    aa: bool,
    tc: bool,
    /// A routing decision depended on the client's address (ECS scope, RFC 7871 §7.2.1).
    used_location: bool,
}

/// Answers one query packet into `out` (at least [`UDP_PLAIN_BYTES_MAX`] bytes; 65535 for TCP).
/// `client` is the query's source address: routing decisions use it when the query carries no
/// EDNS Client Subnet.
pub fn respond(
    catalog: &Catalog,
    config: &ServerConfig,
    packet: &[u8],
    transport: Transport,
    client: IpAddr,
    scratch: &mut Scratch,
    out: &mut [u8],
) -> Outcome {
    let q = match query::parse(packet, &mut scratch.query) {
        Ok(q) => q,
        Err(Malformed::Drop) => return Outcome::Drop,
        Err(Malformed::FormErr(edns)) => return formerr(packet, edns, config.udp_payload_max, out),
    };
    let qname = &scratch.query.qname_lower[..q.qname_len];
    let limit = match (transport, q.edns) {
        (Transport::Tcp, _) => MESSAGE_BYTES_MAX,
        (Transport::Udp, None) => UDP_PLAIN_BYTES_MAX,
        (Transport::Udp, Some(e)) => {
            (e.payload.min(config.udp_payload_max) as usize).max(UDP_PLAIN_BYTES_MAX)
        }
    }
    .min(out.len());
    let identity = &config.identity[..config.identity.len().min(IDENTITY_BYTES_MAX)];
    let nsid_bytes = match q.edns {
        Some(e) if e.nsid && !identity.is_empty() => 4 + identity.len(),
        _ => 0,
    };
    // ECS echoed with its scope (RFC 7871 §7.2.1): family, prefixes, the source address bytes.
    let ecs_bytes = match q.edns.and_then(|e| e.ecs) {
        Some(ecs) => 8 + ecs.address_len(),
        None => 0,
    };
    let opt_bytes = if q.edns.is_some() {
        11 + nsid_bytes + ecs_bytes
    } else {
        0
    };
    let start = HEADER_BYTES + q.question.len();
    if start + opt_bytes > limit {
        return formerr(packet, q.edns, config.udp_payload_max, out);
    }
    out[HEADER_BYTES..start].copy_from_slice(q.question);
    let mut w = Writer::new(out, start, limit - opt_bytes);
    w.remember_name_at(HEADER_BYTES);

    let result = if q.opcode != OPCODE_QUERY {
        // We accept neither NOTIFY nor UPDATE: refuse them; other opcodes are not implemented.
        let rcode = if matches!(q.opcode, OPCODE_NOTIFY | OPCODE_UPDATE) {
            rcode::REFUSED
        } else {
            rcode::NOTIMP
        };
        plain(rcode)
    } else if q.edns.is_some_and(|e| e.version > 0) {
        plain(rcode::BADVERS)
    } else if q.tsig.is_some() {
        // RFC 8945 §5.2: we hold no keys, so every key is unknown: NOTAUTH, TSIG error BADKEY.
        // The TSIG record goes in last, after the OPT.
        plain(rcode::NOTAUTH)
    } else {
        match q.qclass {
            CLASS_IN => {
                scratch.rng ^= u64::from(q.id);
                let mut env = QueryEnv {
                    catalog,
                    geo: config.geo.as_deref(),
                    region_rtt_ms: &config.region_rtt_ms,
                    pop: &config.pop,
                    // ECS /0: the resolver asks us not to tailor by client (RFC 7871 §7.1.2).
                    client: q
                        .edns
                        .and_then(|e| e.ecs)
                        .filter(|e| e.source_prefix > 0)
                        .map_or(client, |e| e.ip()),
                    rng: &mut scratch.rng,
                    used_location: false,
                };
                answer_in(catalog, &q, qname, transport, &mut env, &mut w)
            }
            CLASS_CH => answer_chaos(identity, &q, qname, &mut w),
            _ => plain(rcode::REFUSED),
        }
    };
    if let Some(e) = q.edns {
        w.set_limit(limit);
        let ext = (result.rcode >> 4) as u8;
        let mut opt = [0u8; 11 + 4 + IDENTITY_BYTES_MAX + 8 + 16];
        opt[1..3].copy_from_slice(&RType::OPT.0.to_be_bytes());
        opt[3..5].copy_from_slice(&config.udp_payload_max.to_be_bytes());
        opt[5] = ext;
        opt[6] = 0; // version 0 (RFC 6891 §6.1.3), also in BADVERS replies
        opt[7] = if e.dnssec_ok { 0x80 } else { 0 };
        let mut rdlen = 0;
        if nsid_bytes > 0 {
            opt[11..13].copy_from_slice(&query::EDNS_OPTION_NSID.to_be_bytes());
            opt[13..15].copy_from_slice(&(identity.len() as u16).to_be_bytes());
            opt[15..15 + identity.len()].copy_from_slice(identity);
            rdlen = nsid_bytes;
        }
        if let Some(ecs) = e.ecs {
            let at = 11 + rdlen;
            let addr_len = ecs.address_len();
            opt[at..at + 2].copy_from_slice(&query::EDNS_OPTION_ECS.to_be_bytes());
            opt[at + 2..at + 4].copy_from_slice(&((4 + addr_len) as u16).to_be_bytes());
            opt[at + 4..at + 6].copy_from_slice(&ecs.family.to_be_bytes());
            opt[at + 6] = ecs.source_prefix;
            // Scope: the whole source prefix when the answer was chosen by client location,
            // 0 (valid for every client) otherwise.
            opt[at + 7] = if result.used_location && ecs.source_prefix > 0 {
                ecs.source_prefix
            } else {
                0
            };
            opt[at + 8..at + 8 + addr_len].copy_from_slice(&ecs.address[..addr_len]);
            rdlen += ecs_bytes;
        }
        opt[9..11].copy_from_slice(&(rdlen as u16).to_be_bytes());
        w.raw(Section::Additional, &opt[..11 + rdlen])
            .expect("room for OPT was reserved");
    }
    if let (Some(tsig), rcode::NOTAUTH) = (q.tsig, result.rcode) {
        w.set_limit(limit);
        // Without room for the TSIG record the client still sees NOTAUTH in the header.
        let _ = write_tsig_badkey(
            &mut w,
            packet,
            &scratch.query.tsig_name[..tsig.key_name_len],
            &tsig,
        );
    }
    let counts = w.counts();
    let len = w.len();
    let buf = w.buffer();
    write_header(buf, &q, &result, counts);
    Outcome::Reply {
        len,
        rcode: result.rcode,
    }
}

fn plain(rcode: u16) -> Flags {
    Flags {
        rcode,
        aa: false,
        tc: false,
        used_location: false,
    }
}

fn write_header(buf: &mut [u8], q: &Query, f: &Flags, counts: [u16; 3]) {
    let mut flags: u16 = 0x8000 | ((q.opcode as u16) << 11) | (f.rcode & 0xF);
    if f.aa {
        flags |= 0x0400;
    }
    if f.tc {
        flags |= 0x0200;
    }
    if q.recursion_desired {
        flags |= 0x0100;
    }
    buf[0..2].copy_from_slice(&q.id.to_be_bytes());
    buf[2..4].copy_from_slice(&flags.to_be_bytes());
    buf[4..6].copy_from_slice(&1u16.to_be_bytes());
    buf[6..8].copy_from_slice(&counts[0].to_be_bytes());
    buf[8..10].copy_from_slice(&counts[1].to_be_bytes());
    buf[10..12].copy_from_slice(&counts[2].to_be_bytes());
}

/// FORMERR without the question (it may be what was malformed), with an OPT when the query had
/// a readable one (RFC 6891 §7).
fn formerr(packet: &[u8], edns: Option<Edns>, payload: u16, out: &mut [u8]) -> Outcome {
    const OPT_BYTES: usize = 11;
    if packet.len() < HEADER_BYTES || out.len() < HEADER_BYTES + OPT_BYTES {
        return Outcome::Drop;
    }
    out[..HEADER_BYTES].fill(0);
    out[0..2].copy_from_slice(&packet[0..2]);
    // QR, the opcode and RD copied; rcode FORMERR.
    out[2] = 0x80 | (packet[2] & 0x79);
    out[3] = rcode::FORMERR as u8;
    let mut len = HEADER_BYTES;
    if let Some(e) = edns {
        out[11] = 1;
        let opt = &mut out[HEADER_BYTES..HEADER_BYTES + OPT_BYTES];
        opt.fill(0);
        opt[1..3].copy_from_slice(&RType::OPT.0.to_be_bytes());
        opt[3..5].copy_from_slice(&payload.to_be_bytes());
        opt[7] = if e.dnssec_ok { 0x80 } else { 0 };
        len += OPT_BYTES;
    }
    Outcome::Reply {
        len,
        rcode: rcode::FORMERR,
    }
}

fn write_tsig_badkey(
    w: &mut Writer,
    packet: &[u8],
    key_name: &[u8],
    tsig: &query::Tsig,
) -> Result<(), Full> {
    let mut rdata = [0u8; NAME_BYTES_MAX + 16];
    let (alg_at, alg_len) = tsig.algorithm;
    rdata[..alg_len].copy_from_slice(&packet[alg_at..alg_at + alg_len]);
    let mut at = alg_len;
    rdata[at..at + 8].copy_from_slice(&packet[tsig.time_and_fudge..tsig.time_and_fudge + 8]);
    at += 8;
    rdata[at..at + 2].copy_from_slice(&0u16.to_be_bytes()); // MAC size 0: the reply is unsigned
    rdata[at + 2..at + 4].copy_from_slice(&tsig.original_id.to_be_bytes());
    rdata[at + 4..at + 6].copy_from_slice(&rcode::BADKEY.to_be_bytes());
    rdata[at + 6..at + 8].copy_from_slice(&0u16.to_be_bytes());
    at += 8;
    w.record(
        Section::Additional,
        Some(key_name),
        RType::TSIG,
        CLASS_ANY,
        0,
        &rdata[..at],
    )
}

/// CHAOS class: `id.server.` and `hostname.bind.` (RFC 4892) name the node; nothing else.
fn answer_chaos(identity: &[u8], q: &Query, qname: &[u8], w: &mut Writer) -> Flags {
    const ID_SERVER: &[u8] = b"\x02id\x06server\x00";
    const HOSTNAME_BIND: &[u8] = b"\x08hostname\x04bind\x00";
    if identity.is_empty() || !(qname == ID_SERVER || qname == HOSTNAME_BIND) {
        return plain(rcode::REFUSED);
    }
    if !matches!(q.qtype, RType::TXT | RType::ANY) {
        return Flags {
            rcode: rcode::NOERROR,
            aa: true,
            tc: false,
            used_location: false,
        };
    }
    let mut rdata = [0u8; 1 + IDENTITY_BYTES_MAX];
    rdata[0] = identity.len() as u8;
    rdata[1..1 + identity.len()].copy_from_slice(identity);
    let tc = w
        .record(
            Section::Answer,
            None,
            RType::TXT,
            CLASS_CH,
            0,
            &rdata[..1 + identity.len()],
        )
        .is_err();
    Flags {
        rcode: rcode::NOERROR,
        aa: true,
        tc,
        used_location: false,
    }
}

enum Lookup<'z> {
    /// The name exists (or a DS query at a zone cut, answered from the parent side).
    Exact(NodeRef<'z>),
    /// RFC 4592: synthesized from this wildcard node.
    Wildcard(NodeRef<'z>),
    /// At or below a zone cut.
    Referral(NodeRef<'z>),
    /// Below a DNAME owner (RFC 6672).
    Dname(NodeRef<'z>),
    NxDomain,
}

/// Walks from the apex down the name, one exact lookup per label below the apex.
fn lookup<'z>(zone: &'z Zone, sname: &[u8], qtype: RType) -> Lookup<'z> {
    let mut offsets = [0u8; NAME_LABELS_MAX];
    let label_count = name::label_offsets(sname, &mut offsets) - 1;
    let origin_labels = zone.origin().label_count();
    let below = label_count - origin_labels;
    let apex = zone.apex();
    if below == 0 {
        return Lookup::Exact(apex);
    }
    if apex.has(flags::DNAME) {
        return Lookup::Dname(apex);
    }
    let mut encloser = apex;
    for depth in 1..=below {
        let suffix = &sname[offsets[below - depth] as usize..];
        let Some(node) = zone.node(suffix) else {
            return wildcard_or_nx(zone, encloser);
        };
        if depth == below {
            if node.has(flags::CUT) && qtype != RType::DS {
                return Lookup::Referral(node);
            }
            return Lookup::Exact(node);
        }
        if node.has(flags::CUT) {
            return Lookup::Referral(node);
        }
        if node.has(flags::DNAME) {
            return Lookup::Dname(node);
        }
        encloser = node;
    }
    unreachable!("the loop returns at depth == below")
}

fn wildcard_or_nx<'z>(zone: &'z Zone, closest_encloser: NodeRef<'z>) -> Lookup<'z> {
    if !closest_encloser.has(flags::WILDCARD_CHILD) {
        return Lookup::NxDomain;
    }
    let parent = closest_encloser.name();
    if parent.len() + 2 > NAME_BYTES_MAX {
        return Lookup::NxDomain;
    }
    let mut key = [0u8; NAME_BYTES_MAX];
    key[0] = 1;
    key[1] = b'*';
    key[2..2 + parent.len()].copy_from_slice(parent);
    match zone.node(&key[..2 + parent.len()]) {
        Some(node) => Lookup::Wildcard(node),
        None => Lookup::NxDomain,
    }
}

/// Work deferred to the additional section, which is written last.
struct Additional<'z> {
    sources: [Option<(RRsetRef<'z>, bool)>; ADDITIONAL_SOURCES_MAX],
    count: usize,
    /// For a referral: targets at or below this cut are in-domain glue, which must fit (RFC 9471).
    cut: Option<&'z [u8]>,
}

fn answer_in<'z>(
    catalog: &'z Catalog,
    q: &Query,
    qname: &[u8],
    transport: Transport,
    env: &mut QueryEnv<'z, '_>,
    w: &mut Writer,
) -> Flags {
    if matches!(q.qtype, RType::AXFR | RType::IXFR) {
        // Zone transfers are not offered by the edge; the control plane holds the zones.
        return plain(rcode::REFUSED);
    }
    if matches!(q.qtype, RType::OPT | RType(0)) {
        return plain(rcode::FORMERR);
    }
    if matches!(
        q.qtype,
        RType::TKEY | RType::TSIG | RType::MAILA | RType::MAILB
    ) {
        return plain(rcode::NOTIMP);
    }
    // DS lives on the parent side of a cut (RFC 4035 §3.1.4.1): prefer the parent zone.
    let zone = if q.qtype == RType::DS {
        catalog
            .find(qname, true)
            .or_else(|| catalog.find(qname, false))
    } else {
        catalog.find(qname, false)
    };
    let Some(zone) = zone else {
        return plain(rcode::REFUSED);
    };
    let mut result = Flags {
        rcode: rcode::NOERROR,
        aa: true,
        tc: false,
        used_location: false,
    };
    let mut extra = Additional {
        sources: [None; ADDITIONAL_SOURCES_MAX],
        count: 0,
        cut: None,
    };
    let mut sname_buf = [0u8; NAME_BYTES_MAX];
    sname_buf[..qname.len()].copy_from_slice(qname);
    let mut sname_len = qname.len();
    let mut links = 0usize;
    let mut visited: [&[u8]; CNAME_CHAIN_MAX] = [&[]; CNAME_CHAIN_MAX];
    let start = w.mark();

    let outcome: Result<(), Full> = (|| {
        loop {
            let sname = &sname_buf[..sname_len];
            match lookup(zone, sname, q.qtype) {
                Lookup::Exact(node) | Lookup::Wildcard(node) => {
                    if q.qtype == RType::ANY && !node.is_empty_non_terminal() {
                        // RFC 8482 §4.2: over UDP one RRset is enough; over TCP give them all.
                        for set in node.rrsets() {
                            if set.ttl == ROUTED_TTL {
                                routed_answer(env, w, sname, set)?;
                            } else {
                                rrset(w, Section::Answer, sname, &set)?;
                            }
                            if transport == Transport::Udp {
                                break;
                            }
                        }
                        return Ok(());
                    }
                    if let Some(set) = node.rrset(q.qtype) {
                        if set.ttl == ROUTED_TTL {
                            if routed_answer(env, w, sname, set)? == 0 {
                                return negative(w, zone);
                            }
                            return Ok(());
                        }
                        rrset(w, Section::Answer, sname, &set)?;
                        if matches!(q.qtype, RType::MX | RType::SRV | RType::NS)
                            && extra.count < ADDITIONAL_SOURCES_MAX
                        {
                            extra.sources[extra.count] = Some((set, false));
                            extra.count += 1;
                        }
                        return Ok(());
                    }
                    if node.has(flags::CNAME) && q.qtype != RType::CNAME {
                        // A loop ends the chain the second time we reach a node.
                        if visited[..links].contains(&node.name()) {
                            return Ok(());
                        }
                        visited[links] = node.name();
                        let mut set = node
                            .rrset(RType::CNAME)
                            .expect("CNAME flag implies a CNAME RRset");
                        if set.ttl == ROUTED_TTL {
                            let mut picked = Picked::default();
                            pick(env, set, 0, &mut picked);
                            match picked.sets[0] {
                                Some(chosen) if picked.len > 0 => set = chosen,
                                _ => return negative(w, zone),
                            }
                        }
                        rrset(w, Section::Answer, sname, &set)?;
                        let target = set.first().unwrap_or(&[0]);
                        if !follow(zone, target, &mut links, &mut sname_buf, &mut sname_len) {
                            return Ok(());
                        }
                        continue;
                    }
                    return negative(w, zone);
                }
                Lookup::NxDomain => {
                    result.rcode = rcode::NXDOMAIN;
                    return negative(w, zone);
                }
                Lookup::Referral(cut) => {
                    if w.counts()[0] == 0 {
                        result.aa = false;
                    }
                    let ns = cut.rrset(RType::NS).expect("a cut has NS");
                    rrset(w, Section::Authority, cut.name(), &ns)?;
                    extra.sources[extra.count] = Some((ns, true));
                    extra.count += 1;
                    extra.cut = Some(cut.name());
                    return Ok(());
                }
                Lookup::Dname(node) => {
                    let set = node
                        .rrset(RType::DNAME)
                        .expect("DNAME flag implies a DNAME RRset");
                    rrset(w, Section::Answer, node.name(), &set)?;
                    let target = set.first().unwrap_or(&[0]);
                    // RFC 6672 §2.2: replace the owner suffix with the target.
                    let prefix = sname.len() - node.name().len();
                    let new_len = prefix + target.len();
                    if new_len > NAME_BYTES_MAX {
                        result.rcode = rcode::YXDOMAIN;
                        return Ok(());
                    }
                    let mut synth = [0u8; NAME_BYTES_MAX];
                    synth[..prefix].copy_from_slice(&sname[..prefix]);
                    synth[prefix..new_len].copy_from_slice(target);
                    w.record(
                        Section::Answer,
                        Some(sname),
                        RType::CNAME,
                        CLASS_IN,
                        set.ttl,
                        &synth[..new_len],
                    )?;
                    let synth = &synth[..new_len];
                    // The synthesized CNAME is the CNAME at the query name: it is the answer.
                    if q.qtype == RType::CNAME && links == 0 {
                        return Ok(());
                    }
                    visited[links] = node.name();
                    if !follow(zone, synth, &mut links, &mut sname_buf, &mut sname_len) {
                        return Ok(());
                    }
                }
            }
        }
    })();
    result.used_location = env.used_location;
    if outcome.is_err() {
        w.rollback(start);
        result.tc = true;
        return result;
    }
    if additional(w, zone, &extra).is_err() {
        result.tc = true;
    }
    result
}

/// Moves the chain to `target` if it stays in this zone, is new, and the chain is not too long.
fn follow(
    zone: &Zone,
    target: &[u8],
    links: &mut usize,
    sname_buf: &mut [u8; NAME_BYTES_MAX],
    sname_len: &mut usize,
) -> bool {
    *links += 1;
    if *links >= CNAME_CHAIN_MAX || !name::is_subdomain(target, zone.origin().wire()) {
        return false;
    }
    sname_buf[..target.len()].copy_from_slice(target);
    sname_buf[..target.len()].make_ascii_lowercase();
    *sname_len = target.len();
    true
}

fn rrset(w: &mut Writer, section: Section, owner: &[u8], set: &RRsetRef) -> Result<(), Full> {
    for rd in set.rdatas() {
        w.record(section, Some(owner), set.rtype, CLASS_IN, set.ttl, rd)?;
    }
    Ok(())
}

/// NXDOMAIN / NODATA: the SOA in authority with the RFC 2308 §5 TTL.
fn negative(w: &mut Writer, zone: &Zone) -> Result<(), Full> {
    let apex = zone.apex();
    let soa = apex
        .rrset(RType::SOA)
        .expect("zone has an SOA by construction");
    let rd = soa.first().expect("SOA RRset has one record");
    w.record(
        Section::Authority,
        Some(apex.name()),
        RType::SOA,
        CLASS_IN,
        zone.negative_ttl(),
        rd,
    )
}

/// A/AAAA for the targets of NS, MX and SRV records found in this zone. Only in-domain glue of a
/// referral is mandatory (TC when it does not fit); the rest is dropped silently when full.
fn additional(w: &mut Writer, zone: &Zone, extra: &Additional) -> Result<(), Full> {
    let mut done: [&[u8]; ADDITIONAL_TARGETS_MAX] = [&[]; ADDITIONAL_TARGETS_MAX];
    let mut done_count = 0;
    let mut lower = [0u8; NAME_BYTES_MAX];
    for (set, _) in extra.sources[..extra.count].iter().flatten() {
        for rd in set.rdatas() {
            let mut spans = [(0, 0); 2];
            let found = crate::rdata::rdata_name_spans(set.rtype, rd, &mut spans);
            if found == 0 {
                continue;
            }
            let (offset, len) = spans[0];
            let target = &mut lower[..len];
            target.copy_from_slice(&rd[offset..offset + len]);
            target.make_ascii_lowercase();
            if !name::is_subdomain(target, zone.origin().wire()) {
                continue;
            }
            let Some(node) = zone.node(target) else {
                continue;
            };
            if done[..done_count].contains(&node.name()) || done_count == ADDITIONAL_TARGETS_MAX {
                continue;
            }
            done[done_count] = node.name();
            done_count += 1;
            let required = extra
                .cut
                .is_some_and(|cut| name::is_subdomain(node.name(), cut));
            for rtype in [RType::A, RType::AAAA] {
                // Routed addresses are chosen per query for the names asked, not as extras.
                let Some(glue) = node.rrset(rtype).filter(|g| g.ttl != ROUTED_TTL) else {
                    continue;
                };
                let mark = w.mark();
                if rrset(w, Section::Additional, node.name(), &glue).is_err() {
                    w.rollback(mark);
                    if required {
                        return Err(Full);
                    }
                }
            }
        }
    }
    Ok(())
}

/// What routing decisions consult while answering one query.
struct QueryEnv<'z, 's> {
    catalog: &'z Catalog,
    geo: Option<&'z dyn GeoLookup>,
    region_rtt_ms: &'z [(String, u32)],
    /// This edge's POP (measured RTTs are per POP).
    pop: &'z str,
    /// The ECS address when given, else the query's source.
    client: IpAddr,
    rng: &'s mut u64,
    used_location: bool,
}

impl Environment for QueryEnv<'_, '_> {
    fn healthy(&self, check: &str) -> Option<bool> {
        self.catalog.routing().health.get(check).copied()
    }
    fn location(&self) -> Option<Location<&str>> {
        self.geo?.locate(self.client)
    }
    fn cidr_location(&self, collection: &str) -> Option<&str> {
        self.catalog
            .routing()
            .cidr_location(collection, self.client)
    }
    fn rtt_ms(&self, region: &str, check: Option<&str>) -> Option<u32> {
        if let Some(ms) = check.and_then(|c| {
            self.catalog
                .routing()
                .rtt
                .get(self.pop)
                .and_then(|m| m.get(c))
        }) {
            return Some(*ms);
        }
        self.region_rtt_ms
            .iter()
            .find(|(r, _)| r == region)
            .map(|(_, ms)| *ms)
    }
    fn random(&mut self) -> u64 {
        // SplitMix64.
        *self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Plain RRsets a routing decision chose (aliases resolved), at most a multivalue answer's worth.
#[derive(Default)]
struct Picked<'z> {
    sets: [Option<RRsetRef<'z>>; MULTIVALUE_ANSWERS_MAX],
    len: usize,
}

/// Decides a routed group and collects the plain RRsets that answer, following aliases (to any
/// zone of the catalog) up to [`routed::ALIAS_DEPTH_MAX`] deep.
fn pick<'z>(env: &mut QueryEnv<'z, '_>, set: RRsetRef<'z>, depth: usize, out: &mut Picked<'z>) {
    if depth > routed::ALIAS_DEPTH_MAX {
        return;
    }
    let catalog = env.catalog;
    let rtype = set.rtype;
    let candidates = routed::variants(&set).map(move |v| {
        let target_ok = match v.alias {
            Some((target, true)) => target_healthy(catalog, target, rtype, depth + 1),
            _ => true,
        };
        v.candidate(target_ok)
    });
    let chosen = policy::decide_iter(candidates, env, routed::fails_closed(&set), None);
    env.used_location |= chosen.used_location;
    for &i in chosen.as_slice() {
        let Some(v) = routed::variants(&set).nth(i as usize) else {
            continue;
        };
        match v.alias {
            None => {
                if out.len < out.sets.len() {
                    out.sets[out.len] = Some(v.rrset(rtype));
                    out.len += 1;
                }
            }
            Some((target, _)) => {
                if let Some(target_set) = alias_target(catalog, target, rtype) {
                    if target_set.ttl == ROUTED_TTL {
                        pick(env, target_set, depth + 1, out);
                    } else if out.len < out.sets.len() {
                        out.sets[out.len] = Some(target_set);
                        out.len += 1;
                    }
                }
            }
        }
    }
}

/// The RRset of `rtype` at `target` (lowercase wire name) in whichever zone holds it.
fn alias_target<'z>(catalog: &'z Catalog, target: &[u8], rtype: RType) -> Option<RRsetRef<'z>> {
    catalog.find(target, false)?.node(target)?.rrset(rtype)
}

/// Route 53's EvaluateTargetHealth: a target is healthy when it exists and, if routed, has at
/// least one healthy variant.
fn target_healthy(catalog: &Catalog, target: &[u8], rtype: RType, depth: usize) -> bool {
    if depth > routed::ALIAS_DEPTH_MAX {
        return false;
    }
    let Some(set) = alias_target(catalog, target, rtype) else {
        return false;
    };
    if set.ttl != ROUTED_TTL {
        return true;
    }
    routed::variants(&set).any(|v| {
        let own = v
            .health_check
            .is_none_or(|id| catalog.routing().health.get(id) != Some(&false));
        own && match v.alias {
            Some((t, true)) => target_healthy(catalog, t, rtype, depth + 1),
            _ => true,
        }
    })
}

/// Writes the answer of a routed group under `owner`; returns how many RRsets were written
/// (0: NODATA).
fn routed_answer<'z>(
    env: &mut QueryEnv<'z, '_>,
    w: &mut Writer,
    owner: &[u8],
    set: RRsetRef<'z>,
) -> Result<usize, Full> {
    let mut picked = Picked::default();
    pick(env, set, 0, &mut picked);
    for chosen in picked.sets[..picked.len].iter().flatten() {
        rrset(w, Section::Answer, owner, chosen)?;
    }
    Ok(picked.len)
}
