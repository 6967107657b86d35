//! Conversions between the API's messages and domain types. Record data crosses the API in
//! presentation format (what operators write) and is stored in wire format.

use meridian_core::change::{Action, AliasTarget, Change, ChangeBatch, RecordSet};
use meridian_core::policy::{Coordinates, FailoverRole, GeoKey, Policy};
use meridian_core::rdata::{self, RType};
use meridian_core::routed::{self, ROUTED_TTL};
use meridian_core::{Name, zonefile};
use meridian_proto::v1;
use tonic::Status;

pub fn parse_name(text: &str, origin: Option<&Name>) -> Result<Name, Status> {
    let absolute = if text.ends_with('.') || origin.is_none() {
        Name::parse(
            if text.ends_with('.') {
                text.to_string()
            } else {
                format!("{text}.")
            }
            .as_str(),
            None,
        )
    } else {
        Name::parse(text, origin)
    };
    absolute
        .map(|n| n.to_lowercase())
        .map_err(|e| Status::invalid_argument(format!("name {text:?}: {e}")))
}

pub fn parse_type(text: &str) -> Result<RType, Status> {
    RType::from_text(text)
        .ok_or_else(|| Status::invalid_argument(format!("unknown record type {text:?}")))
}

pub fn record_set_from_proto(set: &v1::RecordSet, origin: &Name) -> Result<RecordSet, Status> {
    let name = parse_name(&set.name, Some(origin))?;
    let rtype = parse_type(&set.r#type)?;
    let mut rdatas = Vec::with_capacity(set.values.len());
    for value in &set.values {
        let tokens = zonefile::tokenize(value)
            .map_err(|e| Status::invalid_argument(format!("{} {rtype} {value:?}: {e}", name)))?;
        let rd = rdata::parse_rdata(rtype, &tokens, origin).map_err(|e| {
            Status::invalid_argument(format!("RdataInvalid: {name} {rtype} {value:?}: {e}"))
        })?;
        rdatas.push(rd);
    }
    let nonempty = |s: &String| (!s.is_empty()).then(|| s.clone());
    let alias = match &set.alias_target {
        None => None,
        Some(a) => Some(AliasTarget {
            name: parse_name(&a.dns_name, None)?,
            evaluate_target_health: a.evaluate_target_health,
        }),
    };
    Ok(RecordSet {
        name,
        rtype,
        ttl: set.ttl,
        rdatas,
        set_identifier: nonempty(&set.set_identifier),
        policy: set.policy.as_ref().map(policy_from_proto).transpose()?,
        health_check: nonempty(&set.health_check_id),
        alias,
        fail_closed: set.fail_closed,
    })
}

fn policy_from_proto(p: &v1::RoutingPolicy) -> Result<Policy, Status> {
    use v1::routing_policy::Kind;
    let bad = |m: &str| Status::invalid_argument(format!("routing policy: {m}"));
    Ok(match p.kind.as_ref().ok_or_else(|| bad("empty"))? {
        Kind::Weight(w) => Policy::Weighted {
            weight: u8::try_from(*w).map_err(|_| bad("Weight is outside 0..=255"))?,
        },
        Kind::Failover(f) => Policy::Failover(match f.to_ascii_uppercase().as_str() {
            "PRIMARY" => FailoverRole::Primary,
            "SECONDARY" => FailoverRole::Secondary,
            _ => return Err(bad("Failover is PRIMARY or SECONDARY")),
        }),
        Kind::Multivalue(_) => Policy::Multivalue,
        Kind::Region(r) => Policy::Latency { region: r.clone() },
        Kind::Geolocation(g) => Policy::Geolocation(
            match (
                g.continent_code.as_str(),
                g.country_code.as_str(),
                g.subdivision_code.as_str(),
            ) {
                ("", "*", "") => GeoKey::Default,
                (c, "", "") if !c.is_empty() => GeoKey::Continent(c.to_ascii_uppercase()),
                ("", c, "") if !c.is_empty() => GeoKey::Country(c.to_ascii_uppercase()),
                ("", c, s) if !c.is_empty() => {
                    GeoKey::Subdivision(c.to_ascii_uppercase(), s.to_ascii_uppercase())
                }
                _ => {
                    return Err(bad(
                        "GeoLocation: ContinentCode, or CountryCode [SubdivisionCode]",
                    ));
                }
            },
        ),
        Kind::Geoproximity(g) => Policy::Geoproximity {
            at: Coordinates {
                latitude: g.latitude,
                longitude: g.longitude,
            },
            bias: i8::try_from(g.bias).map_err(|_| bad("Bias is outside -99..=99"))?,
        },
        Kind::Cidr(c) => Policy::IpBased {
            collection: c.collection_id.clone(),
            location: c.location_name.clone(),
        },
    })
}

fn policy_to_proto(p: &Policy) -> v1::RoutingPolicy {
    use v1::routing_policy::Kind;
    let kind = match p {
        Policy::Weighted { weight } => Kind::Weight(u32::from(*weight)),
        Policy::Failover(FailoverRole::Primary) => Kind::Failover("PRIMARY".into()),
        Policy::Failover(FailoverRole::Secondary) => Kind::Failover("SECONDARY".into()),
        Policy::Multivalue => Kind::Multivalue(true),
        Policy::Latency { region } => Kind::Region(region.clone()),
        Policy::Geolocation(k) => {
            let (continent_code, country_code, subdivision_code) = match k {
                GeoKey::Default => (String::new(), "*".to_string(), String::new()),
                GeoKey::Continent(c) => (c.clone(), String::new(), String::new()),
                GeoKey::Country(c) => (String::new(), c.clone(), String::new()),
                GeoKey::Subdivision(c, s) => (String::new(), c.clone(), s.clone()),
            };
            Kind::Geolocation(v1::GeoLocation {
                continent_code,
                country_code,
                subdivision_code,
            })
        }
        Policy::Geoproximity { at, bias } => Kind::Geoproximity(v1::GeoProximity {
            latitude: at.latitude,
            longitude: at.longitude,
            bias: i32::from(*bias),
        }),
        Policy::IpBased {
            collection,
            location,
        } => Kind::Cidr(v1::CidrRouting {
            collection_id: collection.clone(),
            location_name: location.clone(),
        }),
    };
    v1::RoutingPolicy { kind: Some(kind) }
}

/// One domain record set (plain, or a variant of a routed group) as the API shows it.
pub fn domain_set_to_proto(set: &RecordSet) -> v1::RecordSet {
    let rtype = set.rtype;
    v1::RecordSet {
        name: set.name.to_string(),
        r#type: rtype.to_string(),
        ttl: set.ttl,
        values: set
            .rdatas
            .iter()
            .map(|rd| rdata::rdata_to_text(rtype, rd))
            .collect(),
        set_identifier: set.set_identifier.clone().unwrap_or_default(),
        policy: set.policy.as_ref().map(policy_to_proto),
        health_check_id: set.health_check.clone().unwrap_or_default(),
        alias_target: set.alias.as_ref().map(|a| v1::AliasTarget {
            dns_name: a.name.to_string(),
            evaluate_target_health: a.evaluate_target_health,
        }),
        fail_closed: set.fail_closed,
    }
}

/// A stored set as the API shows it: one message, or one per variant of a routed group.
pub fn stored_set_to_proto(
    name: &[u8],
    rtype: u16,
    ttl: u32,
    rdatas: &[Vec<u8>],
) -> Vec<v1::RecordSet> {
    if ttl != ROUTED_TTL {
        return vec![record_set_to_proto(name, rtype, ttl, rdatas)];
    }
    let Ok(name) = Name::from_wire(name) else {
        return Vec::new();
    };
    routed::to_record_sets(&name, RType(rtype), rdatas)
        .iter()
        .map(domain_set_to_proto)
        .collect()
}

pub fn record_set_to_proto(name: &[u8], rtype: u16, ttl: u32, rdatas: &[Vec<u8>]) -> v1::RecordSet {
    let rtype = RType(rtype);
    v1::RecordSet {
        name: meridian_core::name::wire_to_text(name),
        r#type: rtype.to_string(),
        ttl,
        values: rdatas
            .iter()
            .map(|rd| rdata::rdata_to_text(rtype, rd))
            .collect(),
        ..Default::default()
    }
}

pub fn batch_from_proto(
    req: &v1::ChangeRecordSetsRequest,
    origin: &Name,
) -> Result<ChangeBatch, Status> {
    let mut changes = Vec::with_capacity(req.changes.len());
    for (idx, c) in req.changes.iter().enumerate() {
        let action = match v1::Action::try_from(c.action) {
            Ok(v1::Action::Create) => Action::Create,
            Ok(v1::Action::Delete) => Action::Delete,
            Ok(v1::Action::Upsert) => Action::Upsert,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "changes[{idx}]: action must be CREATE, DELETE or UPSERT"
                )));
            }
        };
        let set = c.record_set.as_ref().ok_or_else(|| {
            Status::invalid_argument(format!("changes[{idx}]: record_set missing"))
        })?;
        let record_set = record_set_from_proto(set, origin)
            .map_err(|s| Status::invalid_argument(format!("changes[{idx}]: {}", s.message())))?;
        changes.push(Change { action, record_set });
    }
    Ok(ChangeBatch {
        comment: req.comment.clone(),
        changes,
    })
}

pub fn batch_to_proto(zone: &Name, batch: &ChangeBatch) -> v1::ChangeRecordSetsRequest {
    v1::ChangeRecordSetsRequest {
        zone: zone.to_string(),
        comment: batch.comment.clone(),
        changes: batch
            .changes
            .iter()
            .map(|c| v1::Change {
                action: match c.action {
                    Action::Create => v1::Action::Create,
                    Action::Delete => v1::Action::Delete,
                    Action::Upsert => v1::Action::Upsert,
                } as i32,
                record_set: Some(domain_set_to_proto(&c.record_set)),
            })
            .collect(),
        idempotency_token: String::new(),
        expected_zone_version: None,
    }
}
