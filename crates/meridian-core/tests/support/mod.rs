//! Test support: build query packets and render responses as readable text, so golden tests
//! read like dig output and fail with a clear diff.
#![allow(dead_code)]

use std::sync::Arc;

use meridian_core::name::NAME_BYTES_MAX;
use meridian_core::query::read_name;
use meridian_core::rdata::{RType, rdata_name_spans, rdata_to_text};
use meridian_core::{
    Catalog, Name, Outcome, Scratch, ServerConfig, Transport, Zone, respond, zonefile,
};

pub fn catalog(zones: &[(&str, &str)]) -> Catalog {
    let mut catalog = Catalog::new();
    for (origin, text) in zones {
        let origin = Name::parse(origin, None).unwrap();
        let records = zonefile::parse(text, &origin, None).unwrap();
        catalog
            .insert(Arc::new(Zone::build(&origin, records).unwrap()))
            .unwrap();
    }
    catalog
}

/// Query options, parsed from words like dig's: `tcp`, `noedns`, `edns=4096`, `do`, `nsid`,
/// `v=1`, `class=3`, `opcode=N`, `rd`.
pub fn query(qname: &str, qtype: &str, opts: &str) -> (Vec<u8>, Transport) {
    let mut edns: Option<u16> = Some(1232);
    let mut dnssec_ok = false;
    let mut nsid = false;
    let mut version = 0u8;
    let mut class = 1u16;
    let mut opcode = 0u16;
    let mut rd = false;
    let mut ecs: Option<(std::net::IpAddr, u8)> = None;
    let mut transport = Transport::Udp;
    for w in opts.split_whitespace() {
        match w {
            "tcp" => transport = Transport::Tcp,
            "noedns" => edns = None,
            "do" => dnssec_ok = true,
            "nsid" => nsid = true,
            "rd" => rd = true,
            _ if w.starts_with("edns=") => edns = Some(w[5..].parse().unwrap()),
            _ if w.starts_with("v=") => version = w[2..].parse().unwrap(),
            _ if w.starts_with("class=") => class = w[6..].parse().unwrap(),
            _ if w.starts_with("opcode=") => opcode = w[7..].parse().unwrap(),
            _ if w.starts_with("ecs=") => {
                let (a, l) = w[4..].split_once('/').unwrap();
                ecs = Some((a.parse().unwrap(), l.parse().unwrap()));
            }
            _ => panic!("unknown option {w}"),
        }
    }
    let mut p = vec![0x12, 0x34];
    let flags: u16 = (opcode << 11) | if rd { 0x0100 } else { 0 };
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, if edns.is_some() { 1 } else { 0 }]);
    // Keep the qname's case as written: the answer must echo it.
    let name = Name::parse(qname, None).unwrap();
    p.extend_from_slice(name.wire());
    let rtype = RType::from_text(qtype).unwrap();
    p.extend_from_slice(&rtype.0.to_be_bytes());
    p.extend_from_slice(&class.to_be_bytes());
    if let Some(payload) = edns {
        p.push(0);
        p.extend_from_slice(&41u16.to_be_bytes());
        p.extend_from_slice(&payload.to_be_bytes());
        p.extend_from_slice(&[0, version, if dnssec_ok { 0x80 } else { 0 }, 0]);
        let mut options = Vec::new();
        if nsid {
            options.extend_from_slice(&[0, 3, 0, 0]);
        }
        if let Some((addr, len)) = ecs {
            // RFC 7871 §6: family, source prefix, scope 0, the prefix's octets.
            let (family, bytes): (u16, Vec<u8>) = match addr {
                std::net::IpAddr::V4(a) => (1, a.octets().to_vec()),
                std::net::IpAddr::V6(a) => (2, a.octets().to_vec()),
            };
            let n = (len as usize).div_ceil(8);
            options.extend_from_slice(&8u16.to_be_bytes());
            options.extend_from_slice(&((4 + n) as u16).to_be_bytes());
            options.extend_from_slice(&family.to_be_bytes());
            options.extend_from_slice(&[len, 0]);
            options.extend_from_slice(&bytes[..n]);
        }
        p.extend_from_slice(&(options.len() as u16).to_be_bytes());
        p.extend_from_slice(&options);
    }
    (p, transport)
}

pub fn ask(
    catalog: &Catalog,
    packet: &[u8],
    transport: Transport,
    identity: &str,
) -> Option<Vec<u8>> {
    let config = ServerConfig {
        identity: identity.as_bytes().to_vec(),
        ..ServerConfig::default()
    };
    let mut out = vec![0u8; 65535];
    let mut scratch = Scratch::default();
    match respond(
        catalog,
        &config,
        packet,
        transport,
        std::net::IpAddr::from([127, 0, 0, 1]),
        &mut scratch,
        &mut out,
    ) {
        Outcome::Reply { len, .. } => Some(out[..len].to_vec()),
        Outcome::Drop => None,
    }
}

fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

/// Renders a response: header line, then one line per record, sections in order.
pub fn render(resp: &[u8]) -> String {
    let flags = be16(resp, 2);
    let rcode_low = flags & 0xF;
    let mut names = Vec::new();
    for (bit, n) in [
        (0x0400, "aa"),
        (0x0200, "tc"),
        (0x0100, "rd"),
        (0x0080, "ra"),
        (0x0010, "cd"),
    ] {
        if flags & bit != 0 {
            names.push(n);
        }
    }
    let counts = [be16(resp, 4), be16(resp, 6), be16(resp, 8), be16(resp, 10)];
    let mut lines = Vec::new();
    let mut pos = 12;
    let mut buf = [0u8; NAME_BYTES_MAX];
    for _ in 0..counts[0] {
        let (end, _) = read_name(resp, pos, &mut buf).expect("question name");
        pos = end + 4;
    }
    let mut ext_rcode = 0u16;
    for (section, count) in ["an", "ns", "ar"].iter().zip(&counts[1..]) {
        for _ in 0..*count {
            let (end, len) = read_name(resp, pos, &mut buf).expect("owner name");
            let owner = meridian_core::name::wire_to_text(&buf[..len]);
            let rtype = RType(be16(resp, end));
            let class = be16(resp, end + 2);
            let ttl = u32::from_be_bytes(resp[end + 4..end + 8].try_into().unwrap());
            let rdlen = be16(resp, end + 8) as usize;
            let rdata_at = end + 10;
            pos = rdata_at + rdlen;
            if rtype == RType::OPT {
                ext_rcode = (ttl >> 24) as u16;
                let dnssec_ok = ttl & 0x8000 != 0;
                let opts: Vec<String> = {
                    let rd = &resp[rdata_at..pos];
                    let mut v = Vec::new();
                    let mut i = 0;
                    while i < rd.len() {
                        let code = be16(rd, i);
                        let l = be16(rd, i + 2) as usize;
                        let data = &rd[i + 4..i + 4 + l];
                        if code == 8 && l >= 4 {
                            // ECS: family/source/scope.
                            v.push(format!("ecs:{}/{}/{}", be16(data, 0), data[2], data[3]));
                        } else {
                            v.push(format!("{code}:{}", String::from_utf8_lossy(data)));
                        }
                        i += 4 + l;
                    }
                    v
                };
                lines.push(format!(
                    "{section} OPT payload={class} do={} v={} opts=[{}]",
                    dnssec_ok as u8,
                    (ttl >> 16) & 0xFF,
                    opts.join(",")
                ));
                continue;
            }
            // Decompress names inside RDATA for rendering.
            let rdata = decompress_rdata(resp, rtype, rdata_at, rdlen);
            let class_text = match class {
                1 => "IN".to_string(),
                3 => "CH".to_string(),
                255 => "ANY".to_string(),
                c => format!("CLASS{c}"),
            };
            lines.push(format!(
                "{section} {owner} {ttl} {class_text} {rtype} {}",
                rdata_to_text(rtype, &rdata)
            ));
        }
    }
    let rcode = rcode_low | (ext_rcode << 4);
    let rcode_text = match rcode {
        0 => "NOERROR".to_string(),
        1 => "FORMERR".to_string(),
        3 => "NXDOMAIN".to_string(),
        4 => "NOTIMP".to_string(),
        5 => "REFUSED".to_string(),
        6 => "YXDOMAIN".to_string(),
        9 => "NOTAUTH".to_string(),
        16 => "BADVERS".to_string(),
        r => format!("RCODE{r}"),
    };
    let mut out = format!("{rcode_text} {}", names.join(" "))
        .trim_end()
        .to_string();
    for l in lines {
        out.push('\n');
        out.push_str(&l);
    }
    out
}

fn decompress_rdata(resp: &[u8], rtype: RType, at: usize, len: usize) -> Vec<u8> {
    let mut buf = [0u8; NAME_BYTES_MAX];
    let raw = &resp[at..at + len];
    match rtype {
        RType::NS | RType::CNAME | RType::PTR => {
            let (_, l) = read_name(resp, at, &mut buf).unwrap();
            buf[..l].to_vec()
        }
        RType::MX => {
            let (_, l) = read_name(resp, at + 2, &mut buf).unwrap();
            let mut v = raw[..2].to_vec();
            v.extend_from_slice(&buf[..l]);
            v
        }
        RType::SOA => {
            let (e1, l1) = read_name(resp, at, &mut buf).unwrap();
            let mut v = buf[..l1].to_vec();
            let (e2, l2) = read_name(resp, e1, &mut buf).unwrap();
            v.extend_from_slice(&buf[..l2]);
            v.extend_from_slice(&resp[e2..e2 + 20]);
            v
        }
        _ => {
            let mut spans = [(0, 0); 2];
            let _ = rdata_name_spans(rtype, raw, &mut spans);
            raw.to_vec()
        }
    }
}

/// Runs a query and renders the response ("DROP" when nothing is sent).
pub fn check_text(catalog: &Catalog, qname: &str, qtype: &str, opts: &str) -> String {
    let (packet, transport) = query(qname, qtype, opts);
    match ask(catalog, &packet, transport, "edge-1.test") {
        Some(resp) => {
            assert_eq!(be16(&resp, 0), 0x1234, "ID echoed");
            assert_eq!(resp[2] & 0x80, 0x80, "QR set");
            if be16(&resp, 4) == 1 {
                let qlen = packet.len()
                    - 12
                    - if packet[11] == 1 {
                        11 + if opts.contains("nsid") { 4 } else { 0 }
                    } else {
                        0
                    };
                assert_eq!(
                    &resp[12..12 + qlen],
                    &packet[12..12 + qlen],
                    "question echoed byte for byte"
                );
            }
            if transport == Transport::Udp {
                let limit = match () {
                    _ if packet[11] == 0 => 512,
                    _ => 512.max(u16::from_be_bytes([
                        packet[packet.len() - 11 + 3],
                        packet[packet.len() - 11 + 4],
                    ]) as usize),
                };
                let limit = if opts.contains("nsid") {
                    512.max(be16(&packet, packet.len() - 15 + 3) as usize)
                } else {
                    limit
                };
                assert!(
                    resp.len() <= limit.max(512),
                    "UDP answer {} > {limit}",
                    resp.len()
                );
            }
            render(&resp)
        }
        None => "DROP".to_string(),
    }
}
