//! Parsing an incoming query: header, the one question, and the OPT / TSIG records.
//!
//! Only what answering needs is decoded, with no allocation: the question stays a slice of the
//! packet (echoed byte for byte, RFC 1035 §4.1.2 / RFC 4343 case preservation), the query name is
//! lowercased into a caller-owned buffer. A malformed packet is an outcome, never a panic.

use crate::name::{LABEL_BYTES_MAX, NAME_BYTES_MAX};
use crate::rdata::RType;

pub const HEADER_BYTES: usize = 12;
/// Records in the additional section we are willing to walk. A query carries at most an OPT and
/// a TSIG; a few more are tolerated, thousands are an attack on our parser's time.
pub const QUERY_ADDITIONAL_MAX: u16 = 8;
/// Compression pointers followed while reading one name: each must point strictly backwards, so
/// loops are impossible; this bounds the work anyway.
pub const NAME_POINTERS_MAX: usize = 32;

pub const OPCODE_QUERY: u8 = 0;
pub const OPCODE_NOTIFY: u8 = 4;
pub const OPCODE_UPDATE: u8 = 5;
pub const CLASS_IN: u16 = 1;
pub const CLASS_CH: u16 = 3;
/// RFC 5001.
pub const EDNS_OPTION_NSID: u16 = 3;
/// EDNS Client Subnet (RFC 7871).
pub const EDNS_OPTION_ECS: u16 = 8;

/// EDNS(0) state of a query (RFC 6891).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size, raised to 512 (RFC 6891 §6.2.5).
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// NSID requested (RFC 5001 §2.1).
    pub nsid: bool,
    /// EDNS Client Subnet: the client network a resolver asks on behalf of (RFC 7871).
    pub ecs: Option<ClientSubnet>,
}

/// An EDNS Client Subnet option of a query (RFC 7871 §6), validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSubnet {
    /// 1: IPv4, 2: IPv6 (IANA address family numbers).
    pub family: u16,
    pub source_prefix: u8,
    /// The address, zero-padded to 16 bytes; bits past `source_prefix` are zero.
    pub address: [u8; 16],
}

impl ClientSubnet {
    /// Address bytes on the wire: the prefix rounded up to whole octets (RFC 7871 §6).
    pub fn address_len(&self) -> usize {
        self.source_prefix.div_ceil(8) as usize
    }

    pub fn ip(&self) -> std::net::IpAddr {
        if self.family == 1 {
            let a = &self.address;
            std::net::IpAddr::from([a[0], a[1], a[2], a[3]])
        } else {
            std::net::IpAddr::from(self.address)
        }
    }

    /// Parses the option data; `None` if malformed (RFC 7871 §7.1.2: FORMERR).
    fn parse(data: &[u8]) -> Option<ClientSubnet> {
        let family = be16(data, 0)?;
        let source_prefix = *data.get(2)?;
        let scope_prefix = *data.get(3)?;
        let max = match family {
            1 => 32,
            2 => 128,
            _ => return None,
        };
        if source_prefix > max || scope_prefix != 0 {
            return None;
        }
        let addr = &data[4..];
        let want = source_prefix.div_ceil(8) as usize;
        if addr.len() != want {
            return None;
        }
        let mut address = [0u8; 16];
        address[..want].copy_from_slice(addr);
        // Bits past the source prefix must be zero (RFC 7871 §6).
        if source_prefix % 8 != 0 {
            let last = address[want - 1];
            if last & (0xffu8 >> (source_prefix % 8)) != 0 {
                return None;
            }
        }
        Some(ClientSubnet {
            family,
            source_prefix,
            address,
        })
    }
}

/// The parts of a TSIG record (RFC 8945) a BADKEY reply must echo: positions in the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tsig {
    /// Key name, decompressed, in the caller's buffer `tsig_name`.
    pub key_name_len: usize,
    /// Algorithm name range in the packet (uncompressed per RFC 8945 §4.2).
    pub algorithm: (usize, usize),
    /// Time Signed (48 bits) and Fudge, packet offset of 8 bytes.
    pub time_and_fudge: usize,
    pub original_id: u16,
}

/// A parsed query. Borrowed from the packet.
#[derive(Clone, Copy, Debug)]
pub struct Query<'p> {
    pub id: u16,
    pub opcode: u8,
    pub recursion_desired: bool,
    /// The whole question section (name, type, class) as received.
    pub question: &'p [u8],
    pub qname_len: usize,
    pub qtype: RType,
    pub qclass: u16,
    pub edns: Option<Edns>,
    pub tsig: Option<Tsig>,
}

/// Why a packet gets no normal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Not worth a reply: too short for a header, or a response (QR=1, RFC 1035 §4.1.1).
    Drop,
    /// Header readable; reply FORMERR (RFC 1035 §4.1.1 rcode 1), with an OPT if the query
    /// carried a well-formed one (RFC 6891 §7).
    FormErr(Option<Edns>),
}

/// Scratch space a query is decoded into; one per worker, reused.
pub struct QueryBuffers {
    /// Lowercase query name in wire format.
    pub qname_lower: [u8; NAME_BYTES_MAX],
    /// Decompressed TSIG key name.
    pub tsig_name: [u8; NAME_BYTES_MAX],
}

impl Default for QueryBuffers {
    fn default() -> Self {
        QueryBuffers {
            qname_lower: [0; NAME_BYTES_MAX],
            tsig_name: [0; NAME_BYTES_MAX],
        }
    }
}

fn be16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Reads a possibly compressed name at `pos`, writing it decompressed into `out`.
/// Returns (position after the name in the packet, decompressed length).
pub fn read_name(
    packet: &[u8],
    mut pos: usize,
    out: &mut [u8; NAME_BYTES_MAX],
) -> Option<(usize, usize)> {
    let mut len = 0usize;
    let mut end_after: Option<usize> = None;
    let mut pointers = 0;
    // Pointers must go strictly backwards and never into the header.
    let mut lowest_target = pos;
    loop {
        let b = *packet.get(pos)?;
        match b & 0xC0 {
            0x00 => {
                let label_len = b as usize;
                if label_len > LABEL_BYTES_MAX || len + 1 + label_len > NAME_BYTES_MAX {
                    return None;
                }
                let label = packet.get(pos..pos + 1 + label_len)?;
                out[len..len + 1 + label_len].copy_from_slice(label);
                len += 1 + label_len;
                pos += 1 + label_len;
                if label_len == 0 {
                    return Some((end_after.unwrap_or(pos), len));
                }
            }
            0xC0 => {
                let target = (be16(packet, pos)? & 0x3FFF) as usize;
                pointers += 1;
                if pointers > NAME_POINTERS_MAX || target >= lowest_target || target < HEADER_BYTES
                {
                    return None;
                }
                end_after.get_or_insert(pos + 2);
                lowest_target = target;
                pos = target;
            }
            // 0x40 and 0x80: reserved label types (RFC 6891 §5 retired 0x40).
            _ => return None,
        }
    }
}

/// Skips an RR's owner name and returns the position of its type field.
fn skip_name(packet: &[u8], pos: usize) -> Option<usize> {
    let mut scratch = [0u8; NAME_BYTES_MAX];
    read_name(packet, pos, &mut scratch).map(|(end, _)| end)
}

/// Records walked looking for the OPT of a query we will FORMERR: a bound on wasted work.
const SCAN_RECORDS_MAX: usize = 16;

/// Best effort: the OPT of a packet whose section counts we reject, if every section parses.
fn scan_opt(packet: &[u8], counts: [u16; 4]) -> Option<Edns> {
    let records = counts[1] as usize + counts[2] as usize + counts[3] as usize;
    if counts[0] as usize + records > SCAN_RECORDS_MAX {
        return None;
    }
    let mut pos = HEADER_BYTES;
    for _ in 0..counts[0] {
        pos = skip_name(packet, pos)? + 4;
    }
    let mut edns = None;
    for idx in 0..records {
        let owner = pos;
        let at = skip_name(packet, pos)?;
        let rdlen = be16(packet, at + 8)? as usize;
        packet.get(at + 10..at + 10 + rdlen)?;
        if idx >= records - counts[3] as usize && be16(packet, at)? == RType::OPT.0 {
            if edns.is_some() || packet[owner] != 0 {
                return None;
            }
            edns = Some(Edns {
                payload: be16(packet, at + 2)?.max(512),
                version: packet[at + 5],
                dnssec_ok: packet[at + 6] & 0x80 != 0,
                nsid: false,
                ecs: None,
            });
        }
        pos = at + 10 + rdlen;
    }
    edns
}

/// Parses a query. `Err(Drop)` means send nothing.
pub fn parse<'p>(packet: &'p [u8], bufs: &mut QueryBuffers) -> Result<Query<'p>, Malformed> {
    if packet.len() < HEADER_BYTES {
        return Err(Malformed::Drop);
    }
    let flags = be16(packet, 2).ok_or(Malformed::Drop)?;
    if flags & 0x8000 != 0 {
        return Err(Malformed::Drop);
    }
    let qdcount = be16(packet, 4).ok_or(Malformed::Drop)?;
    let ancount = be16(packet, 6).ok_or(Malformed::Drop)?;
    let nscount = be16(packet, 8).ok_or(Malformed::Drop)?;
    let arcount = be16(packet, 10).ok_or(Malformed::Drop)?;
    // RFC 9619: exactly one question. A query carries no answer records and at most one
    // authority record, the client's SOA of an IXFR request (RFC 1995 §3), checked below once
    // the type is known. UPDATE and NOTIFY use more, and we implement neither.
    if qdcount != 1 || ancount != 0 || nscount > 1 || arcount > QUERY_ADDITIONAL_MAX {
        return Err(Malformed::FormErr(scan_opt(
            packet,
            [qdcount, ancount, nscount, arcount],
        )));
    }
    let (name_end, qname_len) =
        read_name(packet, HEADER_BYTES, &mut bufs.qname_lower).ok_or(Malformed::FormErr(None))?;
    // A question name never needs compression; a pointer there is malformed.
    if name_end - HEADER_BYTES != qname_len {
        return Err(Malformed::FormErr(None));
    }
    bufs.qname_lower[..qname_len].make_ascii_lowercase();
    let qtype = be16(packet, name_end).ok_or(Malformed::FormErr(None))?;
    let qclass = be16(packet, name_end + 2).ok_or(Malformed::FormErr(None))?;
    let question_end = name_end + 4;

    let mut pos = question_end;
    if nscount == 1 {
        // Only an IXFR request carries an authority record; elsewhere it is malformed.
        if RType(qtype) != RType::IXFR {
            return Err(Malformed::FormErr(scan_opt(
                packet,
                [qdcount, ancount, nscount, arcount],
            )));
        }
        let type_at = skip_name(packet, pos).ok_or(Malformed::FormErr(None))?;
        let rdlen = be16(packet, type_at + 8).ok_or(Malformed::FormErr(None))? as usize;
        pos = type_at + 10 + rdlen;
        if pos > packet.len() {
            return Err(Malformed::FormErr(None));
        }
    }

    let mut edns = None;
    let mut tsig = None;
    for idx in 0..arcount {
        if tsig.is_some() {
            // RFC 8945 §5.1: TSIG must be the last record.
            return Err(Malformed::FormErr(None));
        }
        let owner_start = pos;
        let type_at = skip_name(packet, pos).ok_or(Malformed::FormErr(None))?;
        let rtype = be16(packet, type_at).ok_or(Malformed::FormErr(None))?;
        let class = be16(packet, type_at + 2).ok_or(Malformed::FormErr(None))?;
        let ttl_hi = be16(packet, type_at + 4).ok_or(Malformed::FormErr(None))?;
        let ttl_lo = be16(packet, type_at + 6).ok_or(Malformed::FormErr(None))?;
        let rdlen = be16(packet, type_at + 8).ok_or(Malformed::FormErr(None))? as usize;
        let rdata_at = type_at + 10;
        let rdata = packet
            .get(rdata_at..rdata_at + rdlen)
            .ok_or(Malformed::FormErr(None))?;
        pos = rdata_at + rdlen;
        match RType(rtype) {
            RType::OPT => {
                // RFC 6891 §6.1.1: one OPT, owner the root.
                if edns.is_some() || type_at != owner_start + 1 || packet[owner_start] != 0 {
                    return Err(Malformed::FormErr(None));
                }
                let mut nsid = false;
                let mut ecs = None;
                let mut at = 0;
                while at < rdata.len() {
                    let code = be16(rdata, at).ok_or(Malformed::FormErr(None))?;
                    let len = be16(rdata, at + 2).ok_or(Malformed::FormErr(None))? as usize;
                    if at + 4 + len > rdata.len() {
                        return Err(Malformed::FormErr(None));
                    }
                    if code == EDNS_OPTION_NSID {
                        nsid = true;
                    }
                    if code == EDNS_OPTION_ECS {
                        let parsed = ClientSubnet::parse(&rdata[at + 4..at + 4 + len]);
                        if parsed.is_none() || ecs.is_some() {
                            let edns = Edns {
                                payload: class.max(512),
                                version: (ttl_hi & 0xFF) as u8,
                                dnssec_ok: ttl_lo & 0x8000 != 0,
                                nsid: false,
                                ecs: None,
                            };
                            return Err(Malformed::FormErr(Some(edns)));
                        }
                        ecs = parsed;
                    }
                    at += 4 + len;
                }
                edns = Some(Edns {
                    payload: class.max(512),
                    version: (ttl_hi & 0xFF) as u8,
                    dnssec_ok: ttl_lo & 0x8000 != 0,
                    nsid,
                    ecs,
                });
            }
            RType::TSIG => {
                let (_, key_len) = read_name(packet, owner_start, &mut bufs.tsig_name)
                    .ok_or(Malformed::FormErr(None))?;
                let mut alg = [0u8; NAME_BYTES_MAX];
                let (alg_end, alg_len) =
                    read_name(packet, rdata_at, &mut alg).ok_or(Malformed::FormErr(None))?;
                if alg_end - rdata_at != alg_len {
                    return Err(Malformed::FormErr(None));
                }
                // time(6) fudge(2) mac_size(2) mac original_id(2) error(2) other_len(2) other
                let mac_size = be16(packet, alg_end + 8).ok_or(Malformed::FormErr(None))? as usize;
                let after_mac = alg_end + 10 + mac_size;
                let original_id = be16(packet, after_mac).ok_or(Malformed::FormErr(None))?;
                let other_len =
                    be16(packet, after_mac + 4).ok_or(Malformed::FormErr(None))? as usize;
                if after_mac + 6 + other_len != pos {
                    return Err(Malformed::FormErr(None));
                }
                tsig = Some(Tsig {
                    key_name_len: key_len,
                    algorithm: (rdata_at, alg_len),
                    time_and_fudge: alg_end,
                    original_id,
                });
            }
            _ => {}
        }
        let _ = idx;
    }
    Ok(Query {
        id: be16(packet, 0).ok_or(Malformed::Drop)?,
        opcode: ((flags >> 11) & 0xF) as u8,
        recursion_desired: flags & 0x0100 != 0,
        question: &packet[HEADER_BYTES..question_end],
        qname_len,
        qtype: RType(qtype),
        qclass,
        edns,
        tsig,
    })
}
