//! The catalog: every zone an edge serves, and what routing decisions read besides zones
//! (health verdicts, CIDR collections); immutable once built; the edge swaps whole catalogs.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use crate::name::Name;
use crate::policy::{self, CidrBlock};
use crate::zone::Zone;

/// Health checks whose verdicts a catalog carries (Route 53's default quota is 200 per account;
/// we allow far more, bounded so the routing state stays a small message).
pub const HEALTH_CHECKS_MAX: usize = 100_000;
/// CIDR collections (Route 53: 5), and blocks over all collections together (Route 53: 1,000
/// per location): the routing state travels to edges as one message.
pub const CIDR_COLLECTIONS_MAX: usize = 1_000;
pub const CIDR_BLOCKS_MAX: usize = 100_000;
/// Drained POPs and edges together: one entry per maintenance target, so thousands is plenty
/// and keeps the routing state a small message.
pub const DRAINED_MAX: usize = 10_000;
/// The longest POP or edge id a drain names (edge ids are host names at most).
pub const DRAIN_TARGET_BYTES_MAX: usize = 255;

/// What an operator takes out of service: a whole POP, or one edge. Edges withdraw their
/// anycast announcement while drained and keep answering whatever still reaches them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DrainTarget {
    Pop(String),
    Edge(String),
}

impl std::fmt::Display for DrainTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DrainTarget::Pop(p) => write!(f, "pop/{p}"),
            DrainTarget::Edge(e) => write!(f, "edge/{e}"),
        }
    }
}

impl std::str::FromStr for DrainTarget {
    type Err = String;
    /// `pop/NAME` or `edge/ID`: the form the routing state carries.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, id) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not pop/NAME or edge/ID"))?;
        if id.is_empty() || id.len() > DRAIN_TARGET_BYTES_MAX || id.chars().any(char::is_control) {
            return Err(format!(
                "{id:?} must be 1 to {DRAIN_TARGET_BYTES_MAX} bytes without control characters"
            ));
        }
        match kind {
            "pop" => Ok(DrainTarget::Pop(id.to_string())),
            "edge" => Ok(DrainTarget::Edge(id.to_string())),
            _ => Err(format!("{s:?} is not pop/NAME or edge/ID")),
        }
    }
}

/// What routing decisions read besides zones. Small and replaced whole when it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutingState {
    /// Health check id → healthy. A check without a verdict yet is absent (treated healthy).
    pub health: BTreeMap<String, bool>,
    /// CIDR collection name → its blocks (location names in each block).
    pub cidr: BTreeMap<String, Vec<CidrBlock>>,
    /// POP → health check → smoothed RTT (ms) its probes measure: what latency records use.
    pub rtt: BTreeMap<String, BTreeMap<String, u32>>,
    /// POPs and edges an operator drained: their edges withdraw their anycast routes.
    pub drained: std::collections::BTreeSet<DrainTarget>,
}

impl RoutingState {
    /// Stable checksum (FNV-1a over a canonical form); 0 when empty, so a catalog without
    /// routing state has the checksum it always had.
    pub fn checksum(&self) -> u64 {
        let mut text = String::new();
        for (id, healthy) in &self.health {
            text.push_str(&format!("h {id} {}\n", u8::from(*healthy)));
        }
        for (name, blocks) in &self.cidr {
            for b in blocks {
                text.push_str(&format!("c {name} {b} {}\n", b.location));
            }
        }
        for (pop, checks) in &self.rtt {
            for (check, ms) in checks {
                text.push_str(&format!("r {pop} {check} {ms}\n"));
            }
        }
        for d in &self.drained {
            text.push_str(&format!("d {d}\n"));
        }
        // An empty collection contributes nothing: edges receive blocks, not collections.
        if text.is_empty() {
            return 0;
        }
        crate::zone::rrset_checksum(text.as_bytes(), crate::rdata::RType(0), 0, [])
    }

    /// Whether the edge `edge_id` in `pop` is drained, by its POP or by itself.
    pub fn is_drained(&self, pop: &str, edge_id: &str) -> bool {
        // Cloning into keys would allocate; the set is small, so a scan is cheaper anyway.
        self.drained.iter().any(|d| match d {
            DrainTarget::Pop(p) => p == pop,
            DrainTarget::Edge(e) => e == edge_id,
        })
    }

    /// The location name of `ip` in a collection (longest prefix wins).
    pub fn cidr_location(&self, collection: &str, ip: IpAddr) -> Option<&str> {
        policy::cidr_location(self.cidr.get(collection)?, ip)
    }
}

/// Zones per catalog: bounds memory and the per-query zone search (by label count, not zones).
pub const CATALOG_ZONES_MAX: usize = 1_000_000;

#[derive(Clone, Default, Debug)]
pub struct Catalog {
    /// Lowercase origin wire name → zone.
    zones: HashMap<Box<[u8]>, Arc<Zone>, foldhash::fast::FixedState>,
    /// Health verdicts and CIDR collections, shared between catalog versions.
    routing: Arc<RoutingState>,
}

impl Catalog {
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// Adds or replaces a zone.
    pub fn insert(&mut self, zone: Arc<Zone>) -> Result<(), crate::Error> {
        let key: Box<[u8]> = zone.origin().wire().into();
        if !self.zones.contains_key(&key) && self.zones.len() >= CATALOG_ZONES_MAX {
            return Err(crate::Error::LimitExceeded(
                "zones per catalog",
                CATALOG_ZONES_MAX,
            ));
        }
        self.zones.insert(key, zone);
        Ok(())
    }

    pub fn remove(&mut self, origin: &Name) -> Option<Arc<Zone>> {
        self.zones.remove(origin.to_lowercase().wire())
    }

    pub fn get(&self, origin: &Name) -> Option<&Arc<Zone>> {
        self.zones.get(origin.to_lowercase().wire())
    }

    pub fn routing(&self) -> &Arc<RoutingState> {
        &self.routing
    }

    pub fn set_routing(&mut self, routing: Arc<RoutingState>) {
        self.routing = routing;
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    pub fn zones(&self) -> impl Iterator<Item = &Arc<Zone>> {
        self.zones.values()
    }

    /// Checksum of the whole catalog: what the control plane stamps on every catalog version.
    pub fn checksum(&self) -> u64 {
        self.zones
            .values()
            .map(|z| crate::zone::zone_checksum_term(z.origin().wire(), z.checksum()))
            .fold(0u64, u64::wrapping_add)
            .wrapping_add(self.routing.checksum())
    }

    /// The zone with the longest origin that `lower_qname` lies in (a suffix of it).
    /// `skip_exact` ignores a zone whose apex is the name itself: DS is answered by the parent.
    #[inline]
    pub fn find(&self, lower_qname: &[u8], skip_exact: bool) -> Option<&Zone> {
        let mut pos = 0usize;
        if skip_exact && lower_qname[0] != 0 {
            pos = 1 + lower_qname[0] as usize;
        }
        loop {
            if let Some(zone) = self.zones.get(&lower_qname[pos..]) {
                return Some(zone);
            }
            let len = lower_qname[pos] as usize;
            if len == 0 {
                return None;
            }
            pos += 1 + len;
        }
    }
}
