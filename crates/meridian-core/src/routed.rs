//! Routed record sets in their compiled form: how a routing-policy group (the Route 53 record
//! sets that share one name and type, told apart by `SetIdentifier`) or an alias is stored as
//! one RRset of the zone, and read back in place on the query path.
//!
//! Invariant: a stored RRset whose TTL is [`ROUTED_TTL`] is a routed group. RFC 2181 §8 limits
//! real TTLs to 0..2^31−1, so no plain RRset can carry it. Each "record" of such an RRset is one
//! variant (one Route 53 record set), encoded by [`encode_variant`]. Keeping the group inside the
//! ordinary RRset means the state machine, the catalog stream, deltas and checksums carry
//! policies without knowing about them; only validation ([`crate::change`]), the answer path
//! ([`crate::answer`]) and `explain` look inside.
//!
//! The encoding is ours, versioned by its first byte, and decoded defensively: a malformed
//! variant decodes to `None` and is skipped, never a panic.

use crate::change::{AliasTarget, RecordSet};
use crate::name::{self, Name};
use crate::policy::{Candidate, Coordinates, FailoverRole, GeoKey, Policy};
use crate::rdata::RType;
use crate::zone::RRsetRef;

/// The TTL marking a stored RRset as a routed group (outside RFC 2181's TTL range).
pub const ROUTED_TTL: u32 = u32::MAX;
/// First byte of every encoded variant; bump on any layout change (edges refuse what they
/// cannot read by skipping it).
const FORMAT: u8 = 1;
/// Longest health check id (Route 53's are UUIDs: 36 characters).
pub const HEALTH_CHECK_ID_BYTES_MAX: usize = 64;
/// Aliases followed per answer: bounds the work of a policy tree (Route 53 traffic policies
/// nest a handful of levels); validation refuses deeper trees.
pub const ALIAS_DEPTH_MAX: usize = 8;

mod flag {
    pub const FAIL_CLOSED: u8 = 1;
    pub const ALIAS: u8 = 2;
    pub const EVALUATE_TARGET_HEALTH: u8 = 4;
    pub const HEALTH_CHECK: u8 = 8;
    pub const SET_IDENTIFIER: u8 = 16;
}

mod tag {
    pub const NONE: u8 = 0;
    pub const WEIGHTED: u8 = 1;
    pub const FAILOVER: u8 = 2;
    pub const MULTIVALUE: u8 = 3;
    pub const LATENCY: u8 = 4;
    pub const GEOLOCATION: u8 = 5;
    pub const GEOPROXIMITY: u8 = 6;
    pub const IP_BASED: u8 = 7;
}

/// Whether a set is routed: it has a set identifier or is an alias.
pub fn is_routed(set: &RecordSet) -> bool {
    set.set_identifier.is_some() || set.alias.is_some()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u8::MAX as usize)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

/// Encodes one variant (a routed Route 53 record set) as a record of its group's RRset.
/// Callers have validated lengths (labels ≤ [`crate::policy::POLICY_LABEL_BYTES_MAX`]).
pub fn encode_variant(set: &RecordSet) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + set.rdatas.iter().map(|r| r.len() + 2).sum::<usize>());
    out.push(FORMAT);
    let mut flags = 0;
    if set.fail_closed {
        flags |= flag::FAIL_CLOSED;
    }
    if let Some(a) = &set.alias {
        flags |= flag::ALIAS;
        if a.evaluate_target_health {
            flags |= flag::EVALUATE_TARGET_HEALTH;
        }
    }
    if set.health_check.is_some() {
        flags |= flag::HEALTH_CHECK;
    }
    if set.set_identifier.is_some() {
        flags |= flag::SET_IDENTIFIER;
    }
    out.push(flags);
    match &set.policy {
        None => out.push(tag::NONE),
        Some(Policy::Weighted { weight }) => out.extend_from_slice(&[tag::WEIGHTED, *weight]),
        Some(Policy::Failover(role)) => {
            out.extend_from_slice(&[tag::FAILOVER, u8::from(*role == FailoverRole::Secondary)])
        }
        Some(Policy::Multivalue) => out.push(tag::MULTIVALUE),
        Some(Policy::Latency { region }) => {
            out.push(tag::LATENCY);
            put_str(&mut out, region);
        }
        Some(Policy::Geolocation(key)) => {
            out.push(tag::GEOLOCATION);
            let (kind, a, b) = match key {
                GeoKey::Default => (0, "", ""),
                GeoKey::Continent(c) => (1, c.as_str(), ""),
                GeoKey::Country(c) => (2, c.as_str(), ""),
                GeoKey::Subdivision(c, s) => (3, c.as_str(), s.as_str()),
            };
            out.push(kind);
            put_str(&mut out, a);
            put_str(&mut out, b);
        }
        Some(Policy::Geoproximity { at, bias }) => {
            out.push(tag::GEOPROXIMITY);
            out.extend_from_slice(&at.latitude.to_be_bytes());
            out.extend_from_slice(&at.longitude.to_be_bytes());
            out.push(*bias as u8);
        }
        Some(Policy::IpBased {
            collection,
            location,
        }) => {
            out.push(tag::IP_BASED);
            put_str(&mut out, collection);
            put_str(&mut out, location);
        }
    }
    if let Some(id) = &set.set_identifier {
        put_str(&mut out, id);
    }
    if let Some(hc) = &set.health_check {
        put_str(&mut out, hc);
    }
    if let Some(a) = &set.alias {
        out.extend_from_slice(a.name.to_lowercase().wire());
    }
    out.extend_from_slice(&set.ttl.to_be_bytes());
    out.extend_from_slice(&(set.rdatas.len() as u16).to_be_bytes());
    for rd in &set.rdatas {
        out.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        out.extend_from_slice(rd);
    }
    out
}

/// One variant read in place from a compiled group.
#[derive(Clone, Copy, Debug)]
pub struct VariantRef<'a> {
    pub set_identifier: Option<&'a str>,
    pub policy: Option<Policy<&'a str>>,
    pub health_check: Option<&'a str>,
    pub fail_closed: bool,
    /// Alias target (lowercase wire name) and EvaluateTargetHealth.
    pub alias: Option<(&'a [u8], bool)>,
    pub ttl: u32,
    count: u16,
    /// Records packed as in a zone node: `([rdlen u16][rdata…])…`.
    data: &'a [u8],
}

impl<'a> VariantRef<'a> {
    /// The variant's own records as an RRset of `rtype` (empty for an alias).
    pub fn rrset(&self, rtype: RType) -> RRsetRef<'a> {
        RRsetRef {
            rtype,
            ttl: self.ttl,
            count: self.count,
            data: self.data,
        }
    }

    /// The variant as a decision candidate; `target_healthy` comes from the caller, which can
    /// see the alias target.
    pub fn candidate(&self, target_healthy: bool) -> Candidate<&'a str> {
        Candidate {
            set_identifier: self.set_identifier.unwrap_or(""),
            // A group without a policy (a simple alias) has one variant: any kind decides it.
            policy: self.policy.unwrap_or(Policy::Multivalue),
            health_check: self.health_check,
            target_healthy,
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn str(&mut self) -> Option<&'a str> {
        let n = self.u8()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Decodes one encoded variant; `None` if it is not a variant this build can read.
pub fn decode_variant(b: &[u8]) -> Option<VariantRef<'_>> {
    let mut r = Reader { b, pos: 0 };
    if r.u8()? != FORMAT {
        return None;
    }
    let flags = r.u8()?;
    let policy = match r.u8()? {
        tag::NONE => None,
        tag::WEIGHTED => Some(Policy::Weighted { weight: r.u8()? }),
        tag::FAILOVER => Some(Policy::Failover(if r.u8()? == 0 {
            FailoverRole::Primary
        } else {
            FailoverRole::Secondary
        })),
        tag::MULTIVALUE => Some(Policy::Multivalue),
        tag::LATENCY => Some(Policy::Latency { region: r.str()? }),
        tag::GEOLOCATION => {
            let kind = r.u8()?;
            let (a, s) = (r.str()?, r.str()?);
            Some(Policy::Geolocation(match kind {
                0 => GeoKey::Default,
                1 => GeoKey::Continent(a),
                2 => GeoKey::Country(a),
                3 => GeoKey::Subdivision(a, s),
                _ => return None,
            }))
        }
        tag::GEOPROXIMITY => {
            let at = Coordinates {
                latitude: r.f64()?,
                longitude: r.f64()?,
            };
            Some(Policy::Geoproximity {
                at,
                bias: r.u8()? as i8,
            })
        }
        tag::IP_BASED => Some(Policy::IpBased {
            collection: r.str()?,
            location: r.str()?,
        }),
        _ => return None,
    };
    let set_identifier = if flags & flag::SET_IDENTIFIER != 0 {
        Some(r.str()?)
    } else {
        None
    };
    let health_check = if flags & flag::HEALTH_CHECK != 0 {
        Some(r.str()?)
    } else {
        None
    };
    let alias = if flags & flag::ALIAS != 0 {
        let len = name::wire_name_len(&b[r.pos..])?;
        Some((r.take(len)?, flags & flag::EVALUATE_TARGET_HEALTH != 0))
    } else {
        None
    };
    let ttl = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
    let count = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
    let data = &b[r.pos..];
    // The records must be exactly `count` well-framed RDATAs.
    let mut p = 0usize;
    for _ in 0..count {
        let len = u16::from_be_bytes(data.get(p..p + 2)?.try_into().ok()?) as usize;
        p += 2 + len;
        if p > data.len() {
            return None;
        }
    }
    if p != data.len() {
        return None;
    }
    Some(VariantRef {
        set_identifier,
        policy,
        health_check,
        fail_closed: flags & flag::FAIL_CLOSED != 0,
        alias,
        ttl,
        count,
        data,
    })
}

/// The readable variants of a routed RRset, in stored order.
pub fn variants<'a>(set: &RRsetRef<'a>) -> impl Iterator<Item = VariantRef<'a>> + Clone + 'a {
    set.rdatas().filter_map(decode_variant)
}

/// Whether any variant of the group says fail-closed: then the whole group does.
pub fn fails_closed(set: &RRsetRef<'_>) -> bool {
    variants(set).any(|v| v.fail_closed)
}

/// A stored group back in the change model: one [`RecordSet`] per variant, named `name`/`rtype`.
pub fn to_record_sets(name: &Name, rtype: RType, encoded: &[Vec<u8>]) -> Vec<RecordSet> {
    encoded
        .iter()
        .filter_map(|b| decode_variant(b))
        .map(|v| RecordSet {
            name: name.clone(),
            rtype,
            ttl: v.ttl,
            rdatas: v.rrset(rtype).rdatas().map(<[u8]>::to_vec).collect(),
            set_identifier: v.set_identifier.map(str::to_string),
            policy: v.policy.map(|p| owned_policy(&p)),
            health_check: v.health_check.map(str::to_string),
            alias: v.alias.and_then(|(wire, evaluate_target_health)| {
                Some(AliasTarget {
                    name: Name::from_wire(wire).ok()?,
                    evaluate_target_health,
                })
            }),
            fail_closed: v.fail_closed,
        })
        .collect()
}

fn owned_policy(p: &Policy<&str>) -> Policy {
    match *p {
        Policy::Weighted { weight } => Policy::Weighted { weight },
        Policy::Failover(r) => Policy::Failover(r),
        Policy::Multivalue => Policy::Multivalue,
        Policy::Latency { region } => Policy::Latency {
            region: region.into(),
        },
        Policy::Geolocation(k) => Policy::Geolocation(match k {
            GeoKey::Default => GeoKey::Default,
            GeoKey::Continent(c) => GeoKey::Continent(c.into()),
            GeoKey::Country(c) => GeoKey::Country(c.into()),
            GeoKey::Subdivision(c, s) => GeoKey::Subdivision(c.into(), s.into()),
        }),
        Policy::Geoproximity { at, bias } => Policy::Geoproximity { at, bias },
        Policy::IpBased {
            collection,
            location,
        } => Policy::IpBased {
            collection: collection.into(),
            location: location.into(),
        },
    }
}

/// What `explain` found: the answer records and the path taken.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Explanation {
    /// Records of the answer (owner is the query name), plain sets only.
    pub answer: Vec<RecordSet>,
    /// The path, one line per step, indented two spaces per alias level.
    pub steps: Vec<String>,
}

/// Evaluates a query for `name`/`rtype` as an edge would, on stored sets (`lookup` gives the set
/// of a name and type in whichever zone holds it), with an explanation: Route 53's
/// TestDNSAnswer, with reasons. The same decision code as the edge's answer path.
pub fn explain<E: crate::policy::Environment + ?Sized>(
    lookup: &dyn Fn(&Name, RType) -> Option<RecordSet>,
    name: &Name,
    rtype: RType,
    env: &mut E,
) -> Explanation {
    let mut out = Explanation::default();
    let name = name.to_lowercase();
    match lookup(&name, rtype) {
        Some(_) => walk(lookup, &name, &name, rtype, env, 0, &mut out),
        None => match lookup(&name, RType::CNAME) {
            Some(_) => {
                out.steps.push(format!(
                    "{name} has no {rtype} set but a CNAME: answering it"
                ));
                walk(lookup, &name, &name, RType::CNAME, env, 0, &mut out)
            }
            None => out
                .steps
                .push(format!("{name} has no {rtype} set: NODATA or NXDOMAIN")),
        },
    }
    out
}

fn walk<E: crate::policy::Environment + ?Sized>(
    lookup: &dyn Fn(&Name, RType) -> Option<RecordSet>,
    owner: &Name,
    at: &Name,
    rtype: RType,
    env: &mut E,
    depth: usize,
    out: &mut Explanation,
) {
    let indent = "  ".repeat(depth);
    if depth > ALIAS_DEPTH_MAX {
        out.steps.push(format!(
            "{indent}stop: aliases nest deeper than {ALIAS_DEPTH_MAX}"
        ));
        return;
    }
    let Some(set) = lookup(at, rtype) else {
        out.steps.push(format!(
            "{indent}{at} {rtype}: no such set (the branch answers nothing)"
        ));
        return;
    };
    if set.ttl != ROUTED_TTL {
        out.steps.push(format!(
            "{indent}{at} {rtype}: simple set of {} record(s), TTL {}",
            set.rdatas.len(),
            set.ttl
        ));
        out.answer.push(RecordSet {
            name: owner.clone(),
            ..set
        });
        return;
    }
    let variants = to_record_sets(at, rtype, &set.rdatas);
    let fail_closed = variants.iter().any(|v| v.fail_closed);
    let kind = variants
        .first()
        .and_then(|v| v.policy.as_ref())
        .map_or("alias", |p| p.kind());
    out.steps.push(format!(
        "{indent}{at} {rtype}: {kind} group of {} set(s){}",
        variants.len(),
        if fail_closed { ", fail-closed" } else { "" }
    ));
    let owned: Vec<crate::policy::Candidate> = variants
        .iter()
        .map(|v| crate::policy::Candidate {
            set_identifier: v.set_identifier.clone().unwrap_or_else(|| "(alias)".into()),
            policy: v.policy.clone().unwrap_or(Policy::Multivalue),
            health_check: v.health_check.clone(),
            target_healthy: match &v.alias {
                Some(a) if a.evaluate_target_health => {
                    target_healthy(lookup, &a.name, rtype, env, depth + 1)
                }
                _ => true,
            },
        })
        .collect();
    let decision = crate::policy::decide_traced(
        owned.iter().map(crate::policy::Candidate::as_ref),
        env,
        fail_closed,
    );
    for step in &decision.steps {
        out.steps.push(format!("{indent}  {step}"));
    }
    for i in decision.chosen {
        let v = &variants[i];
        match &v.alias {
            Some(a) => {
                out.steps.push(format!(
                    "{indent}  {} is an alias to {} {rtype}",
                    owned[i].set_identifier, a.name
                ));
                walk(lookup, owner, &a.name, rtype, env, depth + 1, out);
            }
            None => out.answer.push(RecordSet {
                name: owner.clone(),
                set_identifier: None,
                policy: None,
                health_check: None,
                alias: None,
                fail_closed: false,
                ..v.clone()
            }),
        }
    }
}

fn target_healthy<E: crate::policy::Environment + ?Sized>(
    lookup: &dyn Fn(&Name, RType) -> Option<RecordSet>,
    at: &Name,
    rtype: RType,
    env: &E,
    depth: usize,
) -> bool {
    if depth > ALIAS_DEPTH_MAX {
        return false;
    }
    let Some(set) = lookup(at, rtype) else {
        return false;
    };
    if set.ttl != ROUTED_TTL {
        return true;
    }
    to_record_sets(at, rtype, &set.rdatas).iter().any(|v| {
        let own = v
            .health_check
            .as_deref()
            .is_none_or(|id| env.healthy(id) != Some(false));
        own && match &v.alias {
            Some(a) if a.evaluate_target_health => {
                target_healthy(lookup, &a.name, rtype, env, depth + 1)
            }
            _ => true,
        }
    })
}
