//! The authoritative answer algorithm (RFC 1034 §4.3.2 with RFC 2308, 4592, 6604, 6672, 6891,
//! 8482, 9471 and 5001), writing straight into the caller's buffer.
//!
//! No allocation: the query name, chain state and compression table live on the stack or in the
//! caller's [`Scratch`]. Every outcome is a reply length or "send nothing"; nothing here panics on
//! input (the fuzz target holds us to that).

use crate::catalog::Catalog;
use crate::name::{self, NAME_BYTES_MAX, NAME_LABELS_MAX};
use crate::query::{
    self, CLASS_CH, CLASS_IN, Edns, HEADER_BYTES, Malformed, OPCODE_NOTIFY, OPCODE_QUERY,
    OPCODE_UPDATE, Query, QueryBuffers,
};
use crate::rdata::RType;
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
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Shown in NSID and CHAOS `id.server` / `hostname.bind`; empty disables both.
    pub identity: Vec<u8>,
    /// Largest UDP answer we send even when the client offers more.
    pub udp_payload_max: u16,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            identity: Vec::new(),
            udp_payload_max: UDP_PAYLOAD_DEFAULT,
        }
    }
}

/// Per-worker scratch space, reused for every query.
#[derive(Default)]
pub struct Scratch {
    query: QueryBuffers,
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
}

/// Answers one query packet into `out` (at least [`UDP_PLAIN_BYTES_MAX`] bytes; 65535 for TCP).
pub fn respond(
    catalog: &Catalog,
    config: &ServerConfig,
    packet: &[u8],
    transport: Transport,
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
    let opt_bytes = if q.edns.is_some() { 11 + nsid_bytes } else { 0 };
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
            CLASS_IN => answer_in(catalog, &q, qname, transport, &mut w),
            CLASS_CH => answer_chaos(identity, &q, qname, &mut w),
            _ => plain(rcode::REFUSED),
        }
    };
    if let Some(e) = q.edns {
        w.set_limit(limit);
        let ext = (result.rcode >> 4) as u8;
        let mut opt = [0u8; 11 + 4 + IDENTITY_BYTES_MAX];
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

fn answer_in(
    catalog: &Catalog,
    q: &Query,
    qname: &[u8],
    transport: Transport,
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
                            rrset(w, Section::Answer, sname, &set)?;
                            if transport == Transport::Udp {
                                break;
                            }
                        }
                        return Ok(());
                    }
                    if let Some(set) = node.rrset(q.qtype) {
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
                        let set = node
                            .rrset(RType::CNAME)
                            .expect("CNAME flag implies a CNAME RRset");
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
                let Some(glue) = node.rrset(rtype) else {
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
