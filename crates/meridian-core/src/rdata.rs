//! Record types and record data: presentation format ⇄ uncompressed wire format.
//!
//! Record data is kept in uncompressed wire format everywhere in the core (zone model, catalog,
//! deltas); only the answer writer compresses the names of the RFC 1035 types. Text parsing is
//! written here for the types we serve, because hickory-proto 0.26 lacks DNAME, DS, DNSKEY and SPF
//! text parsing and cannot resolve relative names in record data; SVCB/HTTPS parameter syntax
//! (RFC 9460) is delegated to hickory-proto.

use data_encoding::{BASE64, HEXUPPER_PERMISSIVE};
use hickory_proto::rr::{RData, RecordType as HickoryType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

use crate::Error;
use crate::name::{self, Name};

/// RFC 1035 §3.2.1: RDLENGTH is 16 bits.
pub const RDATA_BYTES_MAX: usize = 65535;
/// RFC 1035 §3.3: a <character-string> is a length octet and at most 255 octets.
pub const CHARSTRING_BYTES_MAX: usize = 255;

/// A record type code (RFC 1035 §3.2.2 and later registrations).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RType(pub u16);

impl RType {
    pub const A: RType = RType(1);
    pub const NS: RType = RType(2);
    pub const CNAME: RType = RType(5);
    pub const SOA: RType = RType(6);
    pub const PTR: RType = RType(12);
    pub const MX: RType = RType(15);
    pub const TXT: RType = RType(16);
    pub const AAAA: RType = RType(28);
    pub const SRV: RType = RType(33);
    pub const NAPTR: RType = RType(35);
    pub const DNAME: RType = RType(39);
    pub const OPT: RType = RType(41);
    pub const DS: RType = RType(43);
    pub const SSHFP: RType = RType(44);
    pub const RRSIG: RType = RType(46);
    pub const NSEC: RType = RType(47);
    pub const DNSKEY: RType = RType(48);
    pub const TLSA: RType = RType(52);
    pub const SVCB: RType = RType(64);
    pub const HTTPS: RType = RType(65);
    pub const SPF: RType = RType(99);
    pub const TKEY: RType = RType(249);
    pub const TSIG: RType = RType(250);
    pub const IXFR: RType = RType(251);
    pub const AXFR: RType = RType(252);
    pub const MAILB: RType = RType(253);
    pub const MAILA: RType = RType(254);
    pub const ANY: RType = RType(255);
    pub const CAA: RType = RType(257);

    const NAMES: &'static [(RType, &'static str)] = &[
        (RType::A, "A"),
        (RType::NS, "NS"),
        (RType::CNAME, "CNAME"),
        (RType::SOA, "SOA"),
        (RType::PTR, "PTR"),
        (RType::MX, "MX"),
        (RType::TXT, "TXT"),
        (RType::AAAA, "AAAA"),
        (RType::SRV, "SRV"),
        (RType::NAPTR, "NAPTR"),
        (RType::DNAME, "DNAME"),
        (RType::OPT, "OPT"),
        (RType::DS, "DS"),
        (RType::SSHFP, "SSHFP"),
        (RType::RRSIG, "RRSIG"),
        (RType::NSEC, "NSEC"),
        (RType::DNSKEY, "DNSKEY"),
        (RType::TLSA, "TLSA"),
        (RType::SVCB, "SVCB"),
        (RType::HTTPS, "HTTPS"),
        (RType::SPF, "SPF"),
        (RType::TSIG, "TSIG"),
        (RType::IXFR, "IXFR"),
        (RType::AXFR, "AXFR"),
        (RType::ANY, "ANY"),
        (RType::CAA, "CAA"),
    ];

    /// Mnemonic or RFC 3597 `TYPEnnn`.
    pub fn from_text(text: &str) -> Option<RType> {
        if let Some((found, _)) = Self::NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(text))
        {
            return Some(*found);
        }
        let digits = text
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("TYPE"))
            .map(|_| &text[4..])?;
        digits.parse::<u16>().ok().map(RType)
    }

    /// Types that may only appear in queries or in transit, never as zone data.
    pub fn is_meta(self) -> bool {
        matches!(self.0, 0 | 41 | 128..=255)
    }

    /// RFC 3597 §4: only the RFC 1035 types may have names compressed in RDATA.
    pub fn rdata_names_compressible(self) -> bool {
        matches!(
            self,
            RType::NS | RType::CNAME | RType::SOA | RType::PTR | RType::MX
        )
    }
}

impl std::fmt::Display for RType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match Self::NAMES.iter().find(|(t, _)| t == self) {
            Some((_, n)) => f.write_str(n),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

/// The mnemonic (`"MX"`, `"TYPE65280"`) in human-readable formats such as JSON; the type code in
/// binary formats. Either form, or a bare number, reads back.
impl serde::Serialize for RType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_u16(self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for RType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RType, D::Error> {
        struct RTypeVisitor;

        impl serde::de::Visitor<'_> for RTypeVisitor {
            type Value = RType;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a record type mnemonic or code")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RType, E> {
                RType::from_text(text)
                    .ok_or_else(|| E::custom(Error::TypeUnknown(text.to_string())))
            }

            fn visit_u64<E: serde::de::Error>(self, code: u64) -> Result<RType, E> {
                u16::try_from(code)
                    .map(RType)
                    .map_err(|_| E::custom(format_args!("record type {code} is over 65535")))
            }
        }

        if deserializer.is_human_readable() {
            deserializer.deserialize_any(RTypeVisitor)
        } else {
            deserializer.deserialize_u16(RTypeVisitor)
        }
    }
}

/// One token of record data in presentation format, escapes still in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    /// Written inside double quotes: always a <character-string>, never a name or number.
    pub quoted: bool,
}

impl Token {
    pub fn bare(text: &str) -> Token {
        Token {
            text: text.to_string(),
            quoted: false,
        }
    }
}

/// Parses record data of type `rtype` from tokens into uncompressed wire format.
pub fn parse_rdata(rtype: RType, tokens: &[Token], origin: &Name) -> Result<Vec<u8>, Error> {
    if tokens.first().is_some_and(|t| !t.quoted && t.text == "\\#") {
        return parse_generic(rtype, &tokens[1..]);
    }
    let mut p = Fields {
        tokens,
        next: 0,
        origin,
        out: Vec::with_capacity(32),
    };
    match rtype {
        RType::A => {
            let addr: std::net::Ipv4Addr = p
                .bare()?
                .parse()
                .map_err(|_| Error::RdataInvalid("IPv4 address"))?;
            p.out.extend_from_slice(&addr.octets());
        }
        RType::AAAA => {
            let addr: std::net::Ipv6Addr = p
                .bare()?
                .parse()
                .map_err(|_| Error::RdataInvalid("IPv6 address"))?;
            p.out.extend_from_slice(&addr.octets());
        }
        RType::NS | RType::CNAME | RType::PTR | RType::DNAME => p.name()?,
        RType::SOA => {
            p.name()?;
            p.name()?;
            p.u32()?;
            for _ in 0..4 {
                p.ttl_like()?;
            }
        }
        RType::MX => {
            p.u16()?;
            p.name()?;
        }
        RType::TXT | RType::SPF => {
            if tokens.is_empty() {
                return Err(Error::RdataInvalid("TXT needs at least one string"));
            }
            while p.next < tokens.len() {
                p.charstring()?;
            }
        }
        RType::SRV => {
            p.u16()?;
            p.u16()?;
            p.u16()?;
            p.name()?;
        }
        RType::CAA => {
            p.u8()?;
            let tag = p.bare()?.to_string();
            if tag.is_empty() || tag.len() > 255 || !tag.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(Error::RdataInvalid("CAA tag"));
            }
            p.out.push(tag.len() as u8);
            p.out.extend_from_slice(tag.as_bytes());
            let value = p.token()?;
            let bytes = unescape(&value.text)?;
            p.out.extend_from_slice(&bytes);
        }
        RType::NAPTR => {
            p.u16()?;
            p.u16()?;
            p.charstring()?;
            p.charstring()?;
            p.charstring()?;
            p.name()?;
        }
        RType::DS => {
            p.u16()?;
            p.u8()?;
            p.u8()?;
            p.hex_rest(false)?;
        }
        RType::DNSKEY => {
            p.u16()?;
            p.u8()?;
            p.u8()?;
            p.base64_rest()?;
        }
        RType::TLSA => {
            p.u8()?;
            p.u8()?;
            p.u8()?;
            p.hex_rest(false)?;
        }
        RType::SSHFP => {
            p.u8()?;
            p.u8()?;
            p.hex_rest(false)?;
        }
        RType::SVCB | RType::HTTPS => return parse_svcb(rtype, tokens, origin),
        _ => return Err(Error::RdataTypeUnsupported(rtype.0)),
    }
    if p.next != tokens.len() {
        return Err(Error::RdataInvalid("trailing data"));
    }
    if p.out.len() > RDATA_BYTES_MAX {
        return Err(Error::RdataTooLong);
    }
    Ok(p.out)
}

/// RFC 3597 §5: `\# <length> <hex…>`.
fn parse_generic(rtype: RType, tokens: &[Token]) -> Result<Vec<u8>, Error> {
    let len: usize = tokens
        .first()
        .and_then(|t| t.text.parse().ok())
        .ok_or(Error::RdataInvalid("generic rdata length"))?;
    if len > RDATA_BYTES_MAX {
        return Err(Error::RdataTooLong);
    }
    let hex: String = tokens[1..].iter().map(|t| t.text.as_str()).collect();
    let data = HEXUPPER_PERMISSIVE
        .decode(hex.as_bytes())
        .map_err(|_| Error::RdataInvalid("generic rdata hex"))?;
    if data.len() != len {
        return Err(Error::RdataInvalid(
            "generic rdata length does not match its data",
        ));
    }
    let fixed = match rtype {
        RType::A => Some(4),
        RType::AAAA => Some(16),
        _ => None,
    };
    if fixed.is_some_and(|n| n != data.len()) {
        return Err(Error::RdataInvalid(
            "generic rdata length wrong for its type",
        ));
    }
    Ok(data)
}

fn parse_svcb(rtype: RType, tokens: &[Token], origin: &Name) -> Result<Vec<u8>, Error> {
    // hickory parses SvcParams but resolves no relative target: make it absolute first.
    let mut text = String::new();
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        if i == 1 && !t.quoted {
            text.push_str(&Name::parse(&t.text, Some(origin))?.to_string());
        } else if t.quoted {
            text.push('"');
            text.push_str(&t.text);
            text.push('"');
        } else {
            text.push_str(&t.text);
        }
    }
    let hickory_type = HickoryType::from(rtype.0);
    let rdata = RData::try_from_str(hickory_type, &text)
        .map_err(|_| Error::RdataInvalid("SVCB parameters"))?;
    let mut out = Vec::new();
    let mut encoder = BinEncoder::new(&mut out);
    encoder.set_canonical_form(true);
    rdata
        .emit(&mut encoder)
        .map_err(|_| Error::RdataInvalid("SVCB parameters"))?;
    Ok(out)
}

/// Decodes the escapes of a token into raw octets.
pub(crate) fn unescape(text: &str) -> Result<Vec<u8>, Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let (value, used) = name::parse_escape(&bytes[i + 1..])?;
            out.push(value);
            i += 1 + used;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

struct Fields<'a> {
    tokens: &'a [Token],
    next: usize,
    origin: &'a Name,
    out: Vec<u8>,
}

impl<'a> Fields<'a> {
    fn token(&mut self) -> Result<&'a Token, Error> {
        let t = self
            .tokens
            .get(self.next)
            .ok_or(Error::RdataInvalid("missing field"))?;
        self.next += 1;
        Ok(t)
    }

    fn bare(&mut self) -> Result<&'a str, Error> {
        let t = self.token()?;
        if t.quoted {
            return Err(Error::RdataInvalid("unexpected quoted string"));
        }
        Ok(&t.text)
    }

    fn number(&mut self, max: u64) -> Result<u64, Error> {
        let v: u64 = self
            .bare()?
            .parse()
            .map_err(|_| Error::RdataInvalid("number"))?;
        if v > max {
            return Err(Error::RdataInvalid("number out of range"));
        }
        Ok(v)
    }

    fn u8(&mut self) -> Result<(), Error> {
        let v = self.number(u8::MAX as u64)?;
        self.out.push(v as u8);
        Ok(())
    }

    fn u16(&mut self) -> Result<(), Error> {
        let v = self.number(u16::MAX as u64)?;
        self.out.extend_from_slice(&(v as u16).to_be_bytes());
        Ok(())
    }

    fn u32(&mut self) -> Result<(), Error> {
        let v = self.number(u32::MAX as u64)?;
        self.out.extend_from_slice(&(v as u32).to_be_bytes());
        Ok(())
    }

    /// SOA timers accept BIND's unit suffixes (`1h`, `2w`) like TTLs.
    fn ttl_like(&mut self) -> Result<(), Error> {
        let v = parse_ttl(self.bare()?).ok_or(Error::RdataInvalid("SOA timer"))?;
        self.out.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }

    fn name(&mut self) -> Result<(), Error> {
        let name = Name::parse(self.bare()?, Some(self.origin))?;
        self.out.extend_from_slice(name.wire());
        Ok(())
    }

    fn charstring(&mut self) -> Result<(), Error> {
        let bytes = unescape(&self.token()?.text)?;
        if bytes.len() > CHARSTRING_BYTES_MAX {
            return Err(Error::RdataInvalid(
                "character-string longer than 255 octets",
            ));
        }
        self.out.push(bytes.len() as u8);
        self.out.extend_from_slice(&bytes);
        Ok(())
    }

    fn hex_rest(&mut self, allow_empty: bool) -> Result<(), Error> {
        let mut hex = String::new();
        while self.next < self.tokens.len() {
            hex.push_str(self.bare()?);
        }
        if hex.is_empty() && !allow_empty {
            return Err(Error::RdataInvalid("missing hex data"));
        }
        let data = HEXUPPER_PERMISSIVE
            .decode(hex.as_bytes())
            .map_err(|_| Error::RdataInvalid("hex data"))?;
        self.out.extend_from_slice(&data);
        Ok(())
    }

    fn base64_rest(&mut self) -> Result<(), Error> {
        let mut text = String::new();
        while self.next < self.tokens.len() {
            text.push_str(self.bare()?);
        }
        let data = BASE64
            .decode(text.as_bytes())
            .map_err(|_| Error::RdataInvalid("base64 data"))?;
        self.out.extend_from_slice(&data);
        Ok(())
    }
}

/// A TTL: seconds, or BIND's `1w2d3h4m5s` units. `None` if malformed or over u32.
pub fn parse_ttl(text: &str) -> Option<u32> {
    if text.is_empty() {
        return None;
    }
    if let Ok(v) = text.parse::<u32>() {
        return Some(v);
    }
    let mut total: u64 = 0;
    let mut current: u64 = 0;
    let mut have_digit = false;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            current = current.checked_mul(10)?.checked_add(d as u64)?;
            have_digit = true;
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            _ => return None,
        };
        if !have_digit {
            return None;
        }
        total = total.checked_add(current.checked_mul(unit)?)?;
        current = 0;
        have_digit = false;
    }
    if have_digit {
        total = total.checked_add(current)?;
    }
    u32::try_from(total).ok()
}

/// The embedded names of an RDATA that answer processing follows or compresses.
/// Returns (offset, length) of each name inside the wire RDATA.
pub fn rdata_name_spans(rtype: RType, rdata: &[u8], out: &mut [(usize, usize); 2]) -> usize {
    let at = |offset: usize| name::wire_name_len(rdata.get(offset..)?).map(|len| (offset, len));
    let spans: [Option<(usize, usize)>; 2] = match rtype {
        RType::NS | RType::CNAME | RType::PTR | RType::DNAME => [at(0), None],
        RType::MX => [at(2), None],
        RType::SRV => [at(6), None],
        RType::SOA => {
            let first = at(0);
            let second = first.and_then(|(o, l)| at(o + l));
            [first, second]
        }
        _ => [None, None],
    };
    let mut count = 0;
    for span in spans.into_iter().flatten() {
        out[count] = span;
        count += 1;
    }
    count
}

/// Presentation format of wire RDATA (for zone export and diagnostics). Types without a text form
/// here are written in RFC 3597 generic form, which every server reads back.
pub fn rdata_to_text(rtype: RType, rdata: &[u8]) -> String {
    rdata_to_text_known(rtype, rdata).unwrap_or_else(|| generic_text(rdata))
}

fn generic_text(rdata: &[u8]) -> String {
    if rdata.is_empty() {
        return "\\# 0".to_string();
    }
    format!(
        "\\# {} {}",
        rdata.len(),
        data_encoding::HEXUPPER.encode(rdata)
    )
}

fn charstring_text(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
}

fn rdata_to_text_known(rtype: RType, rdata: &[u8]) -> Option<String> {
    let mut r = Reader {
        data: rdata,
        pos: 0,
    };
    let mut out = String::new();
    match rtype {
        RType::A => {
            let b: [u8; 4] = rdata.try_into().ok()?;
            return Some(std::net::Ipv4Addr::from(b).to_string());
        }
        RType::AAAA => {
            let b: [u8; 16] = rdata.try_into().ok()?;
            return Some(std::net::Ipv6Addr::from(b).to_string());
        }
        RType::NS | RType::CNAME | RType::PTR | RType::DNAME => out += &r.name()?,
        RType::MX => out = format!("{} {}", r.u16()?, r.name()?),
        RType::SRV => out = format!("{} {} {} {}", r.u16()?, r.u16()?, r.u16()?, r.name()?),
        RType::SOA => {
            out = format!(
                "{} {} {} {} {} {} {}",
                r.name()?,
                r.name()?,
                r.u32()?,
                r.u32()?,
                r.u32()?,
                r.u32()?,
                r.u32()?
            )
        }
        RType::TXT | RType::SPF => {
            while r.pos < rdata.len() {
                if !out.is_empty() {
                    out.push(' ');
                }
                let s = r.charstring()?;
                charstring_text(&mut out, s);
            }
        }
        RType::CAA => {
            let flags = r.u8()?;
            let tag_len = r.u8()? as usize;
            let tag = r.bytes(tag_len)?;
            if !tag.iter().all(|b| b.is_ascii_alphanumeric()) || tag.is_empty() {
                return None;
            }
            out = format!("{flags} {} ", String::from_utf8_lossy(tag));
            charstring_text(&mut out, r.bytes(rdata.len() - r.pos)?);
        }
        RType::NAPTR => {
            out = format!("{} {} ", r.u16()?, r.u16()?);
            for _ in 0..3 {
                let s = r.charstring()?;
                charstring_text(&mut out, s);
                out.push(' ');
            }
            out += &r.name()?;
        }
        RType::DS | RType::TLSA | RType::SSHFP | RType::DNSKEY => {
            let head = match rtype {
                RType::DS => format!("{} {} {}", r.u16()?, r.u8()?, r.u8()?),
                RType::DNSKEY => format!("{} {} {}", r.u16()?, r.u8()?, r.u8()?),
                RType::TLSA => format!("{} {} {}", r.u8()?, r.u8()?, r.u8()?),
                _ => format!("{} {}", r.u8()?, r.u8()?),
            };
            let rest = r.bytes(rdata.len() - r.pos)?;
            if rest.is_empty() {
                return None;
            }
            let tail = if rtype == RType::DNSKEY {
                BASE64.encode(rest)
            } else {
                data_encoding::HEXUPPER.encode(rest)
            };
            out = format!("{head} {tail}");
        }
        _ => return None,
    }
    (r.pos == rdata.len()).then_some(out)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.data.get(self.pos..self.pos + n)?;
        self.pos += n;
        Some(b)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.bytes(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn name(&mut self) -> Option<String> {
        let len = name::wire_name_len(&self.data[self.pos..])?;
        let text = name::wire_to_text(self.bytes(len)?);
        Some(text)
    }
    fn charstring(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()? as usize;
        self.bytes(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Token> {
        s.split_whitespace().map(Token::bare).collect()
    }

    #[test]
    fn round_trips_through_text() {
        let origin = Name::parse("example.", None).unwrap();
        for (t, text, expected) in [
            (RType::MX, "10 mail", "10 mail.example."),
            (
                RType::SOA,
                "ns1 host 1 2 3 4 5",
                "ns1.example. host.example. 1 2 3 4 5",
            ),
            (RType::SRV, "1 2 3 .", "1 2 3 ."),
            (RType::DS, "12345 8 2 ABCDEF01", "12345 8 2 ABCDEF01"),
            (RType::SSHFP, "1 1 0123456789ABCDEF", "1 1 0123456789ABCDEF"),
            (RType::AAAA, "2001:db8::1", "2001:db8::1"),
        ] {
            let wire = parse_rdata(t, &toks(text), &origin).unwrap();
            assert_eq!(rdata_to_text(t, &wire), expected, "{t}");
        }
    }

    #[test]
    fn generic_rdata_checks_length() {
        let origin = Name::root();
        assert_eq!(
            parse_rdata(RType(65280), &toks("\\# 2 0a0b"), &origin).unwrap(),
            vec![10, 11]
        );
        assert!(parse_rdata(RType(65280), &toks("\\# 3 0a0b"), &origin).is_err());
        assert!(parse_rdata(RType::A, &toks("\\# 3 0a0b0c"), &origin).is_err());
    }

    #[test]
    fn rtype_serde() {
        assert_eq!(serde_json::to_string(&RType::MX).unwrap(), r#""MX""#);
        assert_eq!(
            serde_json::to_string(&RType(65280)).unwrap(),
            r#""TYPE65280""#
        );
        assert_eq!(serde_json::from_str::<RType>(r#""mx""#).unwrap(), RType::MX);
        assert_eq!(
            serde_json::from_str::<RType>(r#""TYPE65280""#).unwrap(),
            RType(65280)
        );
        assert_eq!(serde_json::from_str::<RType>("28").unwrap(), RType::AAAA);
        assert!(serde_json::from_str::<RType>(r#""NOPE""#).is_err());
        assert!(serde_json::from_str::<RType>("70000").is_err());
    }

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("1h30m"), Some(5400));
        assert_eq!(parse_ttl("2147483647"), Some(2147483647));
        assert_eq!(parse_ttl("h"), None);
        assert_eq!(parse_ttl("99999999999"), None);
    }
}
