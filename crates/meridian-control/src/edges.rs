//! Which edges exist and what they have applied, from their reports. In memory on the control
//! node an edge reports to; `GetChange` and `edges list` merge every control node's view.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::node::now_ms;

/// An edge silent for longer is stale: listed as such and not waited for by INSYNC. Edges report
/// every second, so 10 s tolerates a few lost reports without hiding a dead edge for long.
pub const EDGE_LIVENESS_WINDOW: Duration = Duration::from_secs(10);
/// A control node that just started knows no edge yet. Edges report to every control node each
/// second, so after this long every live edge has reported; until then INSYNC is not declared.
pub const REGISTRY_WARMUP: Duration = Duration::from_secs(3);
/// Edges one control node tracks; a bound on memory if ids churn.
pub const EDGES_MAX: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeEntry {
    pub edge_id: String,
    pub pop: String,
    pub applied_version: u64,
    pub addresses: Vec<String>,
    pub last_seen_ms: u64,
    /// The edge's RTT to each region (its POP's latency table), for `explain --pop`.
    pub region_rtt_ms: std::collections::BTreeMap<String, u32>,
    /// Whether the edge announces its anycast routes, and why (not): what a drain or an
    /// incident looks like from the control plane.
    pub announced: bool,
    pub announce_reason: String,
}

impl EdgeEntry {
    pub fn is_stale(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_seen_ms) > EDGE_LIVENESS_WINDOW.as_millis() as u64
    }
}

#[derive(Debug)]
pub struct EdgeRegistry {
    edges: Mutex<HashMap<String, EdgeEntry>>,
    started: std::time::Instant,
}

impl Default for EdgeRegistry {
    fn default() -> Self {
        EdgeRegistry {
            edges: Mutex::default(),
            started: std::time::Instant::now(),
        }
    }
}

impl EdgeRegistry {
    /// Whether every live edge has had the chance to report since this node started.
    pub fn is_warm(&self) -> bool {
        self.started.elapsed() >= REGISTRY_WARMUP
    }

    pub fn report(&self, mut entry: EdgeEntry) {
        entry.last_seen_ms = now_ms();
        let mut edges = self.edges.lock().expect("edge registry lock");
        if !edges.contains_key(&entry.edge_id) && edges.len() >= EDGES_MAX {
            // Forget the longest-silent edge to make room.
            if let Some(oldest) = edges
                .values()
                .min_by_key(|e| e.last_seen_ms)
                .map(|e| e.edge_id.clone())
            {
                edges.remove(&oldest);
            }
        }
        // An edge never moves backwards; a late report must not lower what we know.
        if let Some(old) = edges.get(&entry.edge_id) {
            entry.applied_version = entry.applied_version.max(old.applied_version);
        }
        edges.insert(entry.edge_id.clone(), entry);
    }

    pub fn list(&self) -> Vec<EdgeEntry> {
        let mut v: Vec<EdgeEntry> = self
            .edges
            .lock()
            .expect("edge registry lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.edge_id.cmp(&b.edge_id));
        v
    }
}

/// Merges several control nodes' views: per edge, the freshest report.
pub fn merge(views: impl IntoIterator<Item = EdgeEntry>) -> Vec<EdgeEntry> {
    let mut by_id: HashMap<String, EdgeEntry> = HashMap::new();
    for e in views {
        match by_id.get_mut(&e.edge_id) {
            Some(known) => {
                let applied = known.applied_version.max(e.applied_version);
                if e.last_seen_ms > known.last_seen_ms {
                    *known = e;
                }
                known.applied_version = applied;
            }
            None => {
                by_id.insert(e.edge_id.clone(), e);
            }
        }
    }
    let mut v: Vec<EdgeEntry> = by_id.into_values().collect();
    v.sort_by(|a, b| a.edge_id.cmp(&b.edge_id));
    v
}

/// INSYNC: every live edge has applied `version`. With no live edge there is nothing to wait for.
pub fn in_sync(edges: &[EdgeEntry], version: u64, now_ms: u64) -> bool {
    edges
        .iter()
        .filter(|e| !e.is_stale(now_ms))
        .all(|e| e.applied_version >= version)
}
