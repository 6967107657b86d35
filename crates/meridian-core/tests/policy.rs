//! Routing-policy decisions: golden cases per policy given health, location, RTT and CIDR
//! location; statistical tests of weighted and multivalue distributions with a fixed seed;
//! validation errors.

use std::collections::BTreeMap;
use std::net::IpAddr;

use meridian_core::policy::{
    Candidate, CidrBlock, Coordinates, Decision, Environment, FailoverRole, GeoKey, Location,
    Policy, PolicyError, Step, biased_distance, cidr_location, decide, validate,
};

/// A test environment: explicit health, location, RTTs, and SplitMix64 draws from a seed.
#[derive(Default)]
struct Env {
    health: BTreeMap<String, bool>,
    location: Option<Location>,
    cidr: Option<String>,
    rtt: BTreeMap<String, u32>,
    state: u64,
}

impl Environment for Env {
    fn healthy(&self, check: &str) -> Option<bool> {
        self.health.get(check).copied()
    }
    fn location(&self) -> Option<Location<&str>> {
        self.location.as_ref().map(Location::as_ref)
    }
    fn cidr_location(&self, _collection: &str) -> Option<&str> {
        self.cidr.as_deref()
    }
    fn rtt_ms(&self, region: &str, _check: Option<&str>) -> Option<u32> {
        self.rtt.get(region).copied()
    }
    fn random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn env(seed: u64) -> Env {
    Env {
        state: seed,
        ..Env::default()
    }
}

fn cand(id: &str, policy: Policy, check: Option<&str>) -> Candidate {
    Candidate {
        set_identifier: id.into(),
        policy,
        health_check: check.map(str::to_string),
        target_healthy: true,
    }
}

fn chosen_ids(c: &[Candidate], d: &Decision) -> Vec<String> {
    d.chosen
        .iter()
        .map(|&i| c[i].set_identifier.clone())
        .collect()
}

fn weighted(id: &str, weight: u8, check: Option<&str>) -> Candidate {
    cand(id, Policy::Weighted { weight }, check)
}

/// Chi-square statistic of observed counts against expected shares.
fn chi_square(observed: &[u64], expected_share: &[f64]) -> f64 {
    let n: u64 = observed.iter().sum();
    observed
        .iter()
        .zip(expected_share)
        .map(|(&o, &p)| {
            let e = p * n as f64;
            (o as f64 - e).powi(2) / e
        })
        .sum()
}

#[test]
fn weighted_shares_follow_weights() {
    let c = vec![
        weighted("a", 10, None),
        weighted("b", 30, None),
        weighted("c", 60, None),
        weighted("zero", 0, None),
    ];
    validate(&c).unwrap();
    let mut e = env(42);
    let mut counts = [0u64; 4];
    for _ in 0..100_000 {
        counts[decide(&c, &mut e).chosen[0]] += 1;
    }
    assert_eq!(
        counts[3], 0,
        "a weight-0 set answered while non-zero sets were healthy"
    );
    // 2 degrees of freedom: 13.8 is the 0.1% critical value.
    let x2 = chi_square(&counts[..3], &[0.1, 0.3, 0.6]);
    assert!(x2 < 13.8, "chi-square {x2} for {counts:?}");
}

#[test]
fn weighted_unhealthy_sets_drop_out_then_zero_weights_then_fail_open() {
    let c = vec![
        weighted("a", 50, Some("ha")),
        weighted("b", 50, Some("hb")),
        weighted("z1", 0, Some("hz1")),
        weighted("z2", 0, None),
    ];
    let mut e = env(7);
    e.health.insert("ha".into(), false);
    for _ in 0..1000 {
        assert_eq!(chosen_ids(&c, &decide(&c, &mut e)), vec!["b"]);
    }
    // Every non-zero set down: the weight-0 sets split equally.
    e.health.insert("hb".into(), false);
    let mut counts = BTreeMap::<String, u64>::new();
    for _ in 0..20_000 {
        *counts
            .entry(chosen_ids(&c, &decide(&c, &mut e))[0].clone())
            .or_default() += 1;
    }
    assert_eq!(counts.keys().collect::<Vec<_>>(), vec!["z1", "z2"]);
    let x2 = chi_square(&counts.values().copied().collect::<Vec<_>>(), &[0.5, 0.5]);
    assert!(x2 < 10.8, "chi-square {x2} for {counts:?}");
    // z1 down too: only z2 (no health check) remains.
    e.health.insert("hz1".into(), false);
    assert_eq!(chosen_ids(&c, &decide(&c, &mut e)), vec!["z2"]);
    // All weights zero and all checked sets healthy: equal split over all.
    let zeros = vec![weighted("x", 0, None), weighted("y", 0, None)];
    let mut seen = [0u64; 2];
    for _ in 0..10_000 {
        seen[decide(&zeros, &mut e).chosen[0]] += 1;
    }
    assert!(chi_square(&seen, &[0.5, 0.5]) < 10.8, "{seen:?}");
    // Everything unhealthy: fail open, weights apply again.
    let down = vec![weighted("a", 1, Some("ha")), weighted("b", 99, Some("hb"))];
    let d = decide(&down, &mut e);
    assert!(d.steps.contains(&Step::FailedOpen));
    assert_eq!(d.chosen.len(), 1);
}

#[test]
fn failover_primary_then_secondary_and_back() {
    let c = vec![
        cand("p", Policy::Failover(FailoverRole::Primary), Some("hp")),
        cand("s", Policy::Failover(FailoverRole::Secondary), Some("hs")),
    ];
    validate(&c).unwrap();
    let mut e = env(1);
    // No data yet: healthy, as Route 53 starts.
    assert_eq!(chosen_ids(&c, &decide(&c, &mut e)), vec!["p"]);
    e.health.insert("hp".into(), false);
    let d = decide(&c, &mut e);
    assert_eq!(chosen_ids(&c, &d), vec!["s"]);
    assert!(
        d.steps
            .iter()
            .any(|s| s.to_string().contains("primary is unhealthy")),
        "{:?}",
        d.steps
    );
    // Both down: fail open to the primary.
    e.health.insert("hs".into(), false);
    let d = decide(&c, &mut e);
    assert_eq!(chosen_ids(&c, &d), vec!["p"]);
    assert!(d.steps.contains(&Step::FailedOpen));
    e.health.insert("hp".into(), true);
    assert_eq!(chosen_ids(&c, &decide(&c, &mut e)), vec!["p"]);
}

#[test]
fn multivalue_answers_up_to_eight_healthy_shuffled_evenly() {
    let c: Vec<Candidate> = (0..12)
        .map(|i| cand(&format!("m{i}"), Policy::Multivalue, Some(&format!("h{i}"))))
        .collect();
    let mut e = env(99);
    for i in 0..4 {
        e.health.insert(format!("h{i}"), false);
    }
    let mut first_place = [0u64; 12];
    for _ in 0..100_000 {
        let d = decide(&c, &mut e);
        assert_eq!(d.chosen.len(), 8);
        let mut sorted = d.chosen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted,
            (4..12).collect::<Vec<_>>(),
            "only healthy sets, each once"
        );
        first_place[d.chosen[0]] += 1;
    }
    // Which healthy set comes first is uniform: 7 degrees of freedom, 24.3 at 0.1%.
    let x2 = chi_square(&first_place[4..], &[0.125; 8]);
    assert!(x2 < 24.3, "chi-square {x2} for {first_place:?}");
    // Three healthy: exactly those three.
    for i in 4..9 {
        e.health.insert(format!("h{i}"), false);
    }
    let mut d = decide(&c, &mut e).chosen;
    d.sort();
    assert_eq!(d, vec![9, 10, 11]);
    // None healthy: up to eight unhealthy ones.
    for i in 9..12 {
        e.health.insert(format!("h{i}"), false);
    }
    let d = decide(&c, &mut e);
    assert_eq!(d.chosen.len(), 8);
    assert!(d.steps.contains(&Step::FailedOpen));
}

#[test]
fn latency_picks_the_lowest_rtt_healthy_region() {
    let c = vec![
        cand(
            "eu",
            Policy::Latency {
                region: "eu-west".into(),
            },
            Some("heu"),
        ),
        cand(
            "us",
            Policy::Latency {
                region: "us-east".into(),
            },
            None,
        ),
        cand(
            "ap",
            Policy::Latency {
                region: "ap-south".into(),
            },
            None,
        ),
    ];
    let mut e = env(3);
    e.rtt.insert("eu-west".into(), 12);
    e.rtt.insert("us-east".into(), 80);
    e.rtt.insert("ap-south".into(), 150);
    let d = decide(&c, &mut e);
    assert_eq!(chosen_ids(&c, &d), vec!["eu"]);
    assert!(d.steps.last().unwrap().to_string().contains("12 ms"));
    e.health.insert("heu".into(), false);
    assert_eq!(chosen_ids(&c, &decide(&c, &mut e)), vec!["us"]);
    // Unmeasured regions rank last.
    e.rtt.clear();
    e.rtt.insert("ap-south".into(), 150);
    assert_eq!(chosen_ids(&c, &decide(&c, &mut e)), vec!["ap"]);
}

fn geo(id: &str, key: GeoKey, check: Option<&str>) -> Candidate {
    cand(id, Policy::Geolocation(key), check)
}

fn at(continent: &str, country: &str, subdivision: Option<&str>) -> Location {
    Location {
        continent: Some(continent.into()),
        country: Some(country.into()),
        subdivision: subdivision.map(str::to_string),
        coordinates: None,
    }
}

#[test]
fn geolocation_most_specific_wins_unhealthy_gives_way_no_default_is_nodata() {
    let c = vec![
        geo("default", GeoKey::Default, None),
        geo("europe", GeoKey::Continent("EU".into()), None),
        geo("germany", GeoKey::Country("DE".into()), Some("hde")),
        geo(
            "bavaria",
            GeoKey::Subdivision("DE".into(), "BY".into()),
            Some("hby"),
        ),
        geo("us", GeoKey::Country("US".into()), None),
    ];
    validate(&c).unwrap();
    let mut e = env(5);
    let case = |e: &mut Env, loc: Option<Location>| {
        e.location = loc;
        chosen_ids(&c, &decide(&c, e))
    };
    assert_eq!(
        case(&mut e, Some(at("EU", "DE", Some("BY")))),
        vec!["bavaria"]
    );
    assert_eq!(
        case(&mut e, Some(at("EU", "DE", Some("BE")))),
        vec!["germany"]
    );
    assert_eq!(case(&mut e, Some(at("EU", "FR", None))), vec!["europe"]);
    assert_eq!(case(&mut e, Some(at("NA", "US", Some("CA")))), vec!["us"]);
    assert_eq!(case(&mut e, Some(at("AS", "JP", None))), vec!["default"]);
    assert_eq!(case(&mut e, None), vec!["default"]);
    e.health.insert("hby".into(), false);
    assert_eq!(
        case(&mut e, Some(at("EU", "DE", Some("BY")))),
        vec!["germany"]
    );
    e.health.insert("hde".into(), false);
    assert_eq!(
        case(&mut e, Some(at("EU", "DE", Some("BY")))),
        vec!["europe"]
    );
    // Without a default, an unmatched client gets no answer (NODATA).
    let no_default = &c[1..];
    e.location = Some(at("AS", "JP", None));
    let d = decide(no_default, &mut e);
    assert!(d.chosen.is_empty());
    assert!(matches!(d.steps.last(), Some(Step::NoMatch { .. })));
}

#[test]
fn geoproximity_uses_route53_biased_distance() {
    assert_eq!(biased_distance(1000.0, 0), 1000.0);
    assert!((biased_distance(1000.0, 50) - 500.0).abs() < 1e-9);
    assert!((biased_distance(1000.0, -50) - 2000.0).abs() < 1e-9);
    let frankfurt = Coordinates {
        latitude: 50.11,
        longitude: 8.68,
    };
    let london = Coordinates {
        latitude: 51.51,
        longitude: -0.13,
    };
    let paris = Coordinates {
        latitude: 48.86,
        longitude: 2.35,
    };
    let c = vec![
        cand(
            "fra",
            Policy::Geoproximity {
                at: frankfurt,
                bias: 0,
            },
            None,
        ),
        cand(
            "lon",
            Policy::Geoproximity {
                at: london,
                bias: 0,
            },
            None,
        ),
    ];
    let mut e = env(0);
    e.location = Some(Location {
        coordinates: Some(paris),
        ..Location::default()
    });
    // Paris is ~340 km from London and ~480 km from Frankfurt.
    assert_eq!(chosen_ids(&c, &decide(&c, &mut e)), vec!["lon"]);
    let mut biased = c.clone();
    biased[0].policy = Policy::Geoproximity {
        at: frankfurt,
        bias: 40,
    };
    assert_eq!(chosen_ids(&biased, &decide(&biased, &mut e)), vec!["fra"]);
    e.location = None;
    assert!(decide(&c, &mut e).chosen.is_empty());
}

#[test]
fn ip_based_longest_prefix_then_default() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let blocks = vec![
        CidrBlock {
            network: ip("10.0.0.0"),
            prefix_len: 8,
            location: "corp".into(),
        },
        CidrBlock {
            network: ip("10.1.0.0"),
            prefix_len: 16,
            location: "lab".into(),
        },
        CidrBlock {
            network: ip("2001:db8::"),
            prefix_len: 32,
            location: "v6".into(),
        },
    ];
    assert_eq!(cidr_location(&blocks, ip("10.1.2.3")), Some("lab"));
    assert_eq!(cidr_location(&blocks, ip("10.2.2.3")), Some("corp"));
    assert_eq!(cidr_location(&blocks, ip("2001:db8:1::1")), Some("v6"));
    assert_eq!(cidr_location(&blocks, ip("192.0.2.1")), None);
    assert_eq!(cidr_location(&blocks, ip("::ffff:10.1.2.3")), None);
    let c = vec![
        cand(
            "lab",
            Policy::IpBased {
                collection: "nets".into(),
                location: "lab".into(),
            },
            Some("hlab"),
        ),
        cand(
            "rest",
            Policy::IpBased {
                collection: "nets".into(),
                location: "*".into(),
            },
            None,
        ),
    ];
    let mut e = env(0);
    e.cidr = Some("lab".into());
    assert_eq!(chosen_ids(&c, &decide(&c, &mut e)), vec!["lab"]);
    e.health.insert("hlab".into(), false);
    assert_eq!(chosen_ids(&c, &decide(&c, &mut e)), vec!["rest"]);
    e.cidr = None;
    assert_eq!(chosen_ids(&c, &decide(&c, &mut e)), vec!["rest"]);
}

#[test]
fn validation_names_each_rule() {
    assert_eq!(validate(&[]), Err(PolicyError::Empty));
    let mixed = vec![weighted("a", 1, None), cand("b", Policy::Multivalue, None)];
    assert!(matches!(
        validate(&mixed),
        Err(PolicyError::MixedPolicies { .. })
    ));
    let dup = vec![weighted("a", 1, None), weighted("a", 2, None)];
    assert_eq!(
        validate(&dup),
        Err(PolicyError::DuplicateSetIdentifier("a".into()))
    );
    let two_primaries = vec![
        cand("p1", Policy::Failover(FailoverRole::Primary), None),
        cand("p2", Policy::Failover(FailoverRole::Primary), None),
    ];
    assert_eq!(
        validate(&two_primaries),
        Err(PolicyError::FailoverRoles {
            primaries: 2,
            secondaries: 0
        })
    );
    let here = Coordinates {
        latitude: 0.0,
        longitude: 0.0,
    };
    let bias = vec![cand(
        "g",
        Policy::Geoproximity {
            at: here,
            bias: 100,
        },
        None,
    )];
    assert!(matches!(
        validate(&bias),
        Err(PolicyError::BiasOutOfRange { .. })
    ));
    let far = Coordinates {
        latitude: 91.0,
        longitude: 0.0,
    };
    let coords = vec![cand("g", Policy::Geoproximity { at: far, bias: 0 }, None)];
    assert!(matches!(
        validate(&coords),
        Err(PolicyError::CoordinatesOutOfRange { .. })
    ));
    let geo_dup = vec![
        geo("a", GeoKey::Country("DE".into()), None),
        geo("b", GeoKey::Country("DE".into()), None),
    ];
    assert!(matches!(
        validate(&geo_dup),
        Err(PolicyError::DuplicateGeoKey { .. })
    ));
    let many: Vec<Candidate> = (0..=meridian_core::policy::POLICY_SETS_MAX)
        .map(|i| weighted(&format!("w{i}"), 1, None))
        .collect();
    assert!(matches!(validate(&many), Err(PolicyError::TooMany { .. })));
}

#[test]
fn decisions_are_deterministic_for_a_seed() {
    let c: Vec<Candidate> = (0..5)
        .map(|i| weighted(&format!("w{i}"), i as u8 + 1, None))
        .collect();
    let run = |seed| {
        let mut e = env(seed);
        (0..100)
            .map(|_| decide(&c, &mut e).chosen[0])
            .collect::<Vec<_>>()
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}
