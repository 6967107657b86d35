//! Generated gRPC code for the public API (`proto/meridian/v1`). This is the only crate that
//! sees prost and tonic message types; the control plane, the edge and the CLI convert to and
//! from domain types at their boundary with it; conversions both sides share (the routing state
//! edges receive) live here, once.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("meridian.v1");
}

/// Catalog schema carried by `SubscribeRequest.schema` and `CatalogUpdate.schema`; bump on any
/// incompatible change to how catalogs are encoded.
pub const CATALOG_SCHEMA: u32 = 1;

/// The routing state as edges receive it (and as the edge's cache stores it).
pub fn routing_to_wire(r: &meridian_core::catalog::RoutingState) -> v1::WireRoutingState {
    v1::WireRoutingState {
        health: r
            .health
            .iter()
            .map(|(id, healthy)| v1::HealthVerdict {
                id: id.clone(),
                healthy: *healthy,
            })
            .collect(),
        cidr: r
            .cidr
            .iter()
            .flat_map(|(collection, blocks)| {
                blocks.iter().map(move |b| v1::CidrEntry {
                    collection: collection.clone(),
                    location: b.location.clone(),
                    cidr: b.to_string(),
                })
            })
            .collect(),
        rtt: r
            .rtt
            .iter()
            .flat_map(|(pop, m)| {
                m.iter().map(move |(check, ms)| v1::PopRtt {
                    pop: pop.clone(),
                    check_id: check.clone(),
                    rtt_ms: *ms,
                })
            })
            .collect(),
        drained: r.drained.iter().map(|d| d.to_string()).collect(),
    }
}

/// The routing state of a catalog update in domain types; `Err` says what is malformed.
pub fn routing_from_wire(
    w: &v1::WireRoutingState,
) -> Result<meridian_core::catalog::RoutingState, String> {
    use meridian_core::catalog::{CIDR_BLOCKS_MAX, DRAINED_MAX, HEALTH_CHECKS_MAX};
    use meridian_core::policy::CidrBlock;
    if w.health.len() > HEALTH_CHECKS_MAX
        || w.cidr.len() > CIDR_BLOCKS_MAX
        || w.drained.len() > DRAINED_MAX
    {
        return Err("routing state over its limits".into());
    }
    let mut r = meridian_core::catalog::RoutingState::default();
    for h in &w.health {
        r.health.insert(h.id.clone(), h.healthy);
    }
    for c in &w.cidr {
        let bad = || format!("CIDR block {:?}", c.cidr);
        let (addr, len) = c.cidr.split_once('/').ok_or_else(bad)?;
        r.cidr
            .entry(c.collection.clone())
            .or_default()
            .push(CidrBlock {
                network: addr.parse().map_err(|_| bad())?,
                prefix_len: len.parse().map_err(|_| bad())?,
                location: c.location.clone(),
            });
    }
    for e in &w.rtt {
        r.rtt
            .entry(e.pop.clone())
            .or_default()
            .insert(e.check_id.clone(), e.rtt_ms);
    }
    for d in &w.drained {
        r.drained.insert(d.parse()?);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::catalog::{DrainTarget, RoutingState};
    use meridian_core::policy::CidrBlock;

    #[test]
    fn routing_state_round_trips_through_the_wire() {
        let mut r = RoutingState::default();
        r.health.insert("hc-1".into(), true);
        r.health.insert("hc-2".into(), false);
        r.cidr.entry("office".into()).or_default().push(CidrBlock {
            network: "192.0.2.0".parse().unwrap(),
            prefix_len: 24,
            location: "hq".into(),
        });
        r.rtt
            .entry("fra".into())
            .or_default()
            .insert("hc-1".into(), 12);
        r.drained.insert(DrainTarget::Pop("fra".into()));
        r.drained.insert(DrainTarget::Edge("iad-e2".into()));
        let back = routing_from_wire(&routing_to_wire(&r)).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.checksum(), r.checksum());
    }

    #[test]
    fn malformed_routing_state_is_refused() {
        let mut w = routing_to_wire(&RoutingState::default());
        w.drained.push("nonsense".into());
        assert!(routing_from_wire(&w).is_err());
        let mut w = routing_to_wire(&RoutingState::default());
        w.cidr.push(v1::CidrEntry {
            collection: "c".into(),
            location: "l".into(),
            cidr: "not a block".into(),
        });
        assert!(routing_from_wire(&w).is_err());
    }
}
