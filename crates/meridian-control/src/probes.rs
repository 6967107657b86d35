//! Probe results from edges, and the leader's health decisions.
//!
//! Every control node keeps each check's per-POP views (edges report to all of them), so a new
//! leader decides from the same evidence the old one had: no spurious flip after a failover.
//! Only the leader proposes, and only transitions (`Command::HealthTransition`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use meridian_core::health::{self, HealthCheckSpec, PopView};

use crate::state::State;

/// A POP whose last result for a check is older than this many intervals (and at least
/// [`VIEW_STALE_MIN_MS`]) no longer counts: its edges stopped probing it.
pub const VIEW_STALE_INTERVALS: u64 = 3;
pub const VIEW_STALE_MIN_MS: u64 = 10_000;
/// Measured RTTs are republished only when one moves by more than this percentage and this
/// many milliseconds: latency answers follow real changes, not jitter, and the catalog is not
/// rewritten on every probe.
pub const RTT_CHANGE_MIN_PERCENT: u64 = 20;
pub const RTT_CHANGE_MIN_MS: u32 = 2;
/// Checks one report may carry: a bound on the work one call does.
pub const REPORT_RESULTS_MAX: usize = 10_000;

/// One probe result as an edge reports it.
#[derive(Clone, Debug)]
pub struct ProbeOutcome {
    pub check_id: String,
    pub ok: bool,
    pub rtt_ms: u32,
    pub detail: String,
    pub at_ms: u64,
}

/// A transition to write.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub id: String,
    pub healthy: bool,
    pub evidence: String,
    /// When the run of probe results that decided it began (for the detection-time metric).
    pub run_started_ms: u64,
}

#[derive(Debug, Default)]
pub struct HealthViews {
    /// check id → POP → view.
    views: Mutex<BTreeMap<String, BTreeMap<String, PopView>>>,
    /// Checks with a transition proposed and not yet applied (one at a time per check).
    in_flight: Mutex<BTreeSet<String>>,
}

/// The check's spec, if it exists and parses.
pub fn spec_of(state: &State, id: &str) -> Option<HealthCheckSpec> {
    let h = state.routing_objects.health_checks.get(id)?;
    health::parse_config(&h.config).ok()
}

fn is_fresh(spec: &HealthCheckSpec, v: &PopView, now_ms: u64) -> bool {
    let window =
        (u64::from(spec.request_interval_ms) * VIEW_STALE_INTERVALS).max(VIEW_STALE_MIN_MS);
    now_ms.saturating_sub(v.last_ms) <= window
}

impl HealthViews {
    /// Feeds one POP's results; returns the checks they touched.
    pub fn observe(&self, state: &State, pop: &str, results: &[ProbeOutcome]) -> BTreeSet<String> {
        let mut touched = BTreeSet::new();
        let mut views = self.views.lock().expect("health views lock");
        for r in results.iter().take(REPORT_RESULTS_MAX) {
            let Some(spec) = spec_of(state, &r.check_id) else {
                continue;
            };
            // A new view (this node restarted, or the POP is new) starts from the replicated
            // verdict: an unhealthy check must still recover through RecoveryThreshold.
            let stored = state
                .routing_objects
                .health_checks
                .get(&r.check_id)
                .and_then(|h| h.probe_status);
            views
                .entry(r.check_id.clone())
                .or_default()
                .entry(pop.to_string())
                .or_insert_with(|| PopView {
                    healthy: stored.filter(|h| !h).map(|_| false),
                    ..PopView::default()
                })
                .observe(&spec, r.ok, r.rtt_ms, &r.detail, r.at_ms);
            touched.insert(r.check_id.clone());
        }
        // Forget checks that no longer exist.
        views.retain(|id, _| state.routing_objects.health_checks.contains_key(id));
        touched
    }

    /// This node's views of one check.
    pub fn of(&self, id: &str) -> BTreeMap<String, PopView> {
        self.views
            .lock()
            .expect("health views lock")
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Transitions to propose now, for probed checks whose status
    /// by quorum differs from the replicated one, and calculated checks whose children moved.
    /// Marks them in flight; [`HealthViews::done`] releases them. `only`: just these checks
    /// (those a report touched); `None`: every check (the periodic pass, which also sees POPs
    /// going stale and calculated checks).
    pub fn decide(
        &self,
        state: &State,
        now_ms: u64,
        only: Option<&BTreeSet<String>>,
    ) -> Vec<Transition> {
        let views = self.views.lock().expect("health views lock");
        let mut in_flight = self.in_flight.lock().expect("in-flight lock");
        let mut out = Vec::new();
        for (id, h) in &state.routing_objects.health_checks {
            if in_flight.contains(id) || only.is_some_and(|o| !o.contains(id)) {
                continue;
            }
            let Ok(spec) = health::parse_config(&h.config) else {
                continue;
            };
            let mut run_started_ms = now_ms;
            let decided = if spec.kind == health::CheckKind::Calculated {
                let child = |c: &str| {
                    state
                        .routing_objects
                        .health_checks
                        .get(c)
                        .and_then(|h| h.verdict())
                };
                let healthy = health::calculated_status(&spec, child);
                let up = spec
                    .children
                    .iter()
                    .filter(|c| child(c).unwrap_or(true))
                    .count();
                Some((
                    healthy,
                    format!(
                        "{up} of {} children healthy (threshold {})",
                        spec.children.len(),
                        spec.health_threshold
                    ),
                ))
            } else {
                let fresh: BTreeMap<String, PopView> = views
                    .get(id)
                    .map(|m| {
                        m.iter()
                            .filter(|(pop, v)| {
                                (spec.pops.is_empty() || spec.pops.contains(pop))
                                    && is_fresh(&spec, v, now_ms)
                            })
                            .map(|(p, v)| (p.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let status = health::status_by_quorum(&spec, &fresh);
                if let Some(healthy) = status {
                    // When the results that decided it began: the earliest start of the current
                    // run of agreeing results among the POPs.
                    run_started_ms = fresh
                        .values()
                        .filter(|v| v.healthy == Some(healthy != spec.inverted))
                        .map(|v| {
                            let run = if v.last_ok {
                                v.consecutive_successes
                            } else {
                                v.consecutive_failures
                            };
                            v.last_ms.saturating_sub(
                                u64::from(run.saturating_sub(1))
                                    * u64::from(spec.request_interval_ms),
                            )
                        })
                        .min()
                        .unwrap_or(now_ms);
                }
                status.map(|healthy| (healthy, evidence(&fresh)))
            };
            let Some((healthy, why)) = decided else {
                continue;
            };
            // No data yet counts as healthy: only an unhealthy verdict needs writing then.
            if h.probe_status.unwrap_or(true) != healthy {
                in_flight.insert(id.clone());
                out.push(Transition {
                    id: id.clone(),
                    healthy,
                    evidence: why,
                    run_started_ms,
                });
            }
        }
        out
    }

    /// The RTT map to publish, if the measured RTTs moved past the hysteresis since `published`
    /// (a new or vanished entry, or a change of more than [`RTT_CHANGE_MIN_PERCENT`] and
    /// [`RTT_CHANGE_MIN_MS`]). Only fresh views of existing, probed checks count.
    pub fn rtt_to_publish(
        &self,
        state: &State,
        now_ms: u64,
    ) -> Option<BTreeMap<String, BTreeMap<String, u32>>> {
        let views = self.views.lock().expect("health views lock");
        let mut measured: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
        for (id, pops) in views.iter() {
            let Some(spec) = spec_of(state, id) else {
                continue;
            };
            for (pop, v) in pops {
                if v.smoothed_rtt_ms > 0 && is_fresh(&spec, v, now_ms) {
                    measured
                        .entry(pop.clone())
                        .or_default()
                        .insert(id.clone(), v.smoothed_rtt_ms);
                }
            }
        }
        let published = &state.routing_objects.rtt;
        let moved = |a: u32, b: u32| {
            let d = a.abs_diff(b);
            d > RTT_CHANGE_MIN_MS
                && u64::from(d) * 100 > u64::from(a.max(b)) * RTT_CHANGE_MIN_PERCENT
        };
        let same_keys = measured.len() == published.len()
            && measured.iter().all(|(pop, m)| {
                published
                    .get(pop)
                    .is_some_and(|p| p.len() == m.len() && m.keys().all(|k| p.contains_key(k)))
            });
        let changed = !same_keys
            || measured
                .iter()
                .any(|(pop, m)| m.iter().any(|(c, ms)| moved(*ms, published[pop][c])));
        changed.then_some(measured)
    }

    /// Marks `key` in flight; false if it already was.
    pub fn try_begin(&self, key: &str) -> bool {
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .insert(key.to_string())
    }

    pub fn done(&self, id: &str) {
        self.in_flight.lock().expect("in-flight lock").remove(id);
    }
}

/// One line per POP: its verdict and last result.
fn evidence(views: &BTreeMap<String, PopView>) -> String {
    views
        .iter()
        .map(|(pop, v)| {
            format!(
                "{pop}: {} ({} failures, {} successes in a row; last {} {} ms)",
                match v.healthy {
                    Some(true) => "healthy",
                    Some(false) => "unhealthy",
                    None => "no verdict",
                },
                v.consecutive_failures,
                v.consecutive_successes,
                v.last_detail,
                v.last_rtt_ms
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{HealthCheck, State};

    fn state_with(checks: &[(&str, &str, Option<bool>)]) -> State {
        let mut s = State::default();
        for (id, config, probe_status) in checks {
            s.routing_objects.health_checks.insert(
                id.to_string(),
                HealthCheck {
                    id: id.to_string(),
                    caller_reference: String::new(),
                    config: config.to_string(),
                    status_override: None,
                    created_version: 1,
                    probe_status: *probe_status,
                    evidence: String::new(),
                },
            );
        }
        s
    }

    fn result(id: &str, ok: bool, at_ms: u64) -> ProbeOutcome {
        ProbeOutcome {
            check_id: id.into(),
            ok,
            rtt_ms: 1,
            detail: if ok {
                "HTTP 200".into()
            } else {
                "refused".into()
            },
            at_ms,
        }
    }

    const TCP: &str = r#"{"Type":"TCP","IPAddress":"127.0.0.1","Port":9,"RequestInterval":1,"FailureThreshold":2,"HealthyQuorum":0.5}"#;

    #[test]
    fn only_transitions_are_proposed_by_quorum_of_fresh_pops() {
        let mut state = state_with(&[("hc", TCP, None)]);
        let views = HealthViews::default();
        let now = 1_000_000;
        // Healthy from every POP while there is no data: nothing to write.
        for pop in ["a", "b", "c"] {
            views.observe(&state, pop, &[result("hc", true, now)]);
        }
        assert!(views.decide(&state, now, None).is_empty());
        // Two of three POPs see two failures: 1/3 healthy is not more than 0.5.
        for pop in ["a", "b"] {
            views.observe(
                &state,
                pop,
                &[result("hc", false, now), result("hc", false, now)],
            );
        }
        let d = views.decide(&state, now, None);
        assert_eq!(d.len(), 1);
        assert!(!d[0].healthy);
        assert!(d[0].evidence.contains("a: unhealthy"), "{}", d[0].evidence);
        // In flight: not proposed twice.
        assert!(views.decide(&state, now, None).is_empty());
        views.done("hc");
        // Once applied (the replicated status says unhealthy), nothing more.
        state
            .routing_objects
            .health_checks
            .get_mut("hc")
            .unwrap()
            .probe_status = Some(false);
        assert!(views.decide(&state, now, None).is_empty());
        // POPs that stop reporting go stale: only c's healthy view remains → healthy.
        let later = now + VIEW_STALE_MIN_MS + 1;
        views.observe(&state, "c", &[result("hc", true, later)]);
        let d = views.decide(&state, later, None);
        assert_eq!(d.len(), 1);
        assert!(d[0].healthy);
    }

    #[test]
    fn a_new_leader_with_the_same_views_decides_the_same() {
        // Views are kept on every node: a follower fed the same reports proposes nothing new
        // once the replicated status matches (no spurious flip after a leader change).
        let state = state_with(&[("hc", TCP, Some(false))]);
        let follower = HealthViews::default();
        for pop in ["a", "b", "c"] {
            follower.observe(
                &state,
                pop,
                &[result("hc", false, 5), result("hc", false, 5)],
            );
        }
        assert!(follower.decide(&state, 5, None).is_empty());
        // A node that has no views yet decides nothing either (no data is not a verdict).
        assert!(HealthViews::default().decide(&state, 5, None).is_empty());
    }

    #[test]
    fn calculated_checks_follow_their_children() {
        let calc = r#"{"Type":"CALCULATED","ChildHealthChecks":["x","y","z"],"HealthThreshold":2}"#;
        let state = state_with(&[
            ("x", TCP, Some(false)),
            ("y", TCP, Some(false)),
            ("z", TCP, None),
            ("calc", calc, None),
        ]);
        let d = HealthViews::default().decide(&state, 0, None);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].id, "calc");
        assert!(!d[0].healthy);
        assert!(d[0].evidence.contains("1 of 3"), "{}", d[0].evidence);
    }

    #[test]
    fn a_restarted_node_keeps_an_unhealthy_check_unhealthy_until_recovery() {
        // RecoveryThreshold 3: after a restart the views are empty, but the replicated verdict
        // is unhealthy, so one success must not bring the check back.
        let cfg = r#"{"Type":"TCP","IPAddress":"127.0.0.1","Port":9,"RequestInterval":1,"FailureThreshold":2,"RecoveryThreshold":3}"#;
        let state = state_with(&[("hc", cfg, Some(false))]);
        let views = HealthViews::default();
        views.observe(&state, "a", &[result("hc", true, 10)]);
        assert!(views.decide(&state, 10, None).is_empty());
        views.observe(
            &state,
            "a",
            &[result("hc", true, 11), result("hc", true, 12)],
        );
        let d = views.decide(&state, 12, None);
        assert_eq!(d.len(), 1);
        assert!(d[0].healthy);
    }

    #[test]
    fn measured_rtts_are_published_past_the_hysteresis_only() {
        let mut state = state_with(&[("hc", TCP, None)]);
        let views = HealthViews::default();
        let at = |rtt: u32, ms: u64| ProbeOutcome {
            rtt_ms: rtt,
            ..result("hc", true, ms)
        };
        views.observe(&state, "fra", &[at(40, 100)]);
        let first = views
            .rtt_to_publish(&state, 100)
            .expect("a new entry is published");
        assert_eq!(first["fra"]["hc"], 40);
        state.routing_objects.rtt = first;
        // Jitter within 20% is not republished …
        views.observe(&state, "fra", &[at(44, 101), at(38, 102)]);
        assert!(views.rtt_to_publish(&state, 102).is_none());
        // … a real move is (smoothed: it takes a few samples).
        for i in 0..6 {
            views.observe(&state, "fra", &[at(120, 103 + i)]);
        }
        let moved = views.rtt_to_publish(&state, 110).expect("moved");
        assert!(moved["fra"]["hc"] > 80, "{moved:?}");
    }
}
