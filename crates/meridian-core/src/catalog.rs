//! The catalog: every zone an edge serves, immutable once built; the edge swaps whole catalogs.

use std::collections::HashMap;
use std::sync::Arc;

use crate::name::Name;
use crate::zone::Zone;

/// Zones per catalog: bounds memory and the per-query zone search (by label count, not zones).
pub const CATALOG_ZONES_MAX: usize = 1_000_000;

#[derive(Clone, Default, Debug)]
pub struct Catalog {
    /// Lowercase origin wire name → zone.
    zones: HashMap<Box<[u8]>, Arc<Zone>, foldhash::fast::FixedState>,
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
