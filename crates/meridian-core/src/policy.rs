//! Route 53 routing policies, decided per query: given the record sets that share one name and
//! type (each with a set identifier and one policy), the health of their checks, what is known
//! of the client (location, address) and of this POP (RTT to each region), choose what answers,
//! and say why.
//!
//! Pure: the caller passes health, location and a random draw in an [`Environment`]; nothing
//! here reads a clock, a socket or a database. The same inputs give the same decision, so the
//! edge's answers, `meridian explain` and the tests agree.
//!
//! Status: this module is the decision core of the routing-policy issue. Validation of policy
//! record sets in change batches, their place in the catalog, the edge's use of it per query,
//! geo databases, ECS and `meridian explain` build on it and are not wired yet.

use std::fmt;
use std::net::IpAddr;

/// Record sets one name and type may hold under a policy (Route 53 allows 100 weighted sets;
/// geolocation may have one per country and subdivision).
pub const POLICY_SETS_MAX: usize = 1024;
/// Records a multivalue answer carries at most (Route 53: eight).
pub const MULTIVALUE_ANSWERS_MAX: usize = 8;
/// Geoproximity bias range (Route 53: −99…+99).
pub const BIAS_MAX: i8 = 99;

/// Route 53's failover roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailoverRole {
    Primary,
    Secondary,
}

/// A geolocation key: the default `*`, a continent, a country, or a country's subdivision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GeoKey {
    Default,
    /// Two-letter continent code (AF AN AS EU OC NA SA).
    Continent(String),
    /// ISO 3166-1 alpha-2.
    Country(String),
    /// ISO 3166-1 alpha-2 and the ISO 3166-2 subdivision code (without the country prefix).
    Subdivision(String, String),
}

impl GeoKey {
    /// Higher is more specific; the most specific match wins.
    fn specificity(&self) -> u8 {
        match self {
            GeoKey::Default => 0,
            GeoKey::Continent(_) => 1,
            GeoKey::Country(_) => 2,
            GeoKey::Subdivision(..) => 3,
        }
    }

    fn matches(&self, at: &Location) -> bool {
        let eq =
            |a: &str, b: &Option<String>| b.as_deref().is_some_and(|b| a.eq_ignore_ascii_case(b));
        match self {
            GeoKey::Default => true,
            GeoKey::Continent(c) => eq(c, &at.continent),
            GeoKey::Country(c) => eq(c, &at.country),
            GeoKey::Subdivision(c, s) => eq(c, &at.country) && eq(s, &at.subdivision),
        }
    }
}

impl fmt::Display for GeoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeoKey::Default => f.write_str("*"),
            GeoKey::Continent(c) => write!(f, "continent {c}"),
            GeoKey::Country(c) => write!(f, "country {c}"),
            GeoKey::Subdivision(c, s) => write!(f, "subdivision {c}-{s}"),
        }
    }
}

/// Latitude and longitude in degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coordinates {
    pub latitude: f64,
    pub longitude: f64,
}

impl Coordinates {
    /// Great-circle distance in kilometres (haversine, mean Earth radius).
    pub fn distance_km(&self, other: &Coordinates) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0;
        let (la1, la2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dla = la2 - la1;
        let dlo = (other.longitude - self.longitude).to_radians();
        let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

/// What is known of where the client is (from ECS or the resolver's address, looked up by the
/// caller in a geo database).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Location {
    pub continent: Option<String>,
    pub country: Option<String>,
    pub subdivision: Option<String>,
    pub coordinates: Option<Coordinates>,
}

/// One record set's routing policy, as Route 53 defines them.
#[derive(Clone, Debug, PartialEq)]
pub enum Policy {
    /// Weight 0–255: the share of answers among healthy non-zero sets.
    Weighted {
        weight: u8,
    },
    Failover(FailoverRole),
    /// Up to eight healthy records, shuffled.
    Multivalue,
    /// The region whose RTT from this POP is lowest wins.
    Latency {
        region: String,
    },
    Geolocation(GeoKey),
    /// The nearest by biased distance wins; bias −99…+99 grows (+) or shrinks (−) the area a
    /// set attracts.
    Geoproximity {
        at: Coordinates,
        bias: i8,
    },
    /// A location name from a CIDR collection; `*` is the default.
    IpBased {
        location: String,
    },
}

impl Policy {
    fn kind(&self) -> &'static str {
        match self {
            Policy::Weighted { .. } => "weighted",
            Policy::Failover(_) => "failover",
            Policy::Multivalue => "multivalue",
            Policy::Latency { .. } => "latency",
            Policy::Geolocation(_) => "geolocation",
            Policy::Geoproximity { .. } => "geoproximity",
            Policy::IpBased { .. } => "ip-based",
        }
    }
}

/// A record set taking part in a policy decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub set_identifier: String,
    pub policy: Policy,
    /// The health check guarding this set; `None`: always healthy.
    pub health_check: Option<String>,
}

/// A CIDR block of a collection and the location name it maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrBlock {
    pub network: IpAddr,
    pub prefix_len: u8,
    pub location: String,
}

impl CidrBlock {
    fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bytes: &[u8], len: u8) -> impl Iterator<Item = u8> + '_ {
            bytes.iter().enumerate().map(move |(i, b)| {
                let keep = (len as usize).saturating_sub(i * 8).min(8) as u32;
                b & (0xffu16 << (8 - keep)) as u8
            })
        }
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                self.prefix_len <= 32
                    && masked(&n.octets(), self.prefix_len).eq(masked(&a.octets(), self.prefix_len))
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                self.prefix_len <= 128
                    && masked(&n.octets(), self.prefix_len).eq(masked(&a.octets(), self.prefix_len))
            }
            _ => false,
        }
    }
}

/// Longest-prefix match of `ip` in a CIDR collection: the location name, if any block holds it.
pub fn cidr_location(blocks: &[CidrBlock], ip: IpAddr) -> Option<&str> {
    blocks
        .iter()
        .filter(|b| b.contains(ip))
        .max_by_key(|b| b.prefix_len)
        .map(|b| b.location.as_str())
}

/// What a decision may consult. The edge implements it from its catalog, geo database and
/// probe results; `explain` and the tests from what the user gives.
pub trait Environment {
    /// The verdict of a health check: `Some(true)` healthy, `Some(false)` unhealthy, `None`
    /// unknown (treated as healthy, as Route 53 treats a check with no data yet).
    fn healthy(&self, check: &str) -> Option<bool>;
    /// Where the client is, if known.
    fn location(&self) -> Option<&Location>;
    /// The location name the client's address maps to in the IP-based collection in use.
    fn cidr_location(&self) -> Option<&str>;
    /// Smoothed RTT in milliseconds from this POP to a region, if measured.
    fn rtt_ms(&self, region: &str) -> Option<u32>;
    /// A uniformly random 64-bit draw (a per-query PRNG in the edge, a fixed seed in tests).
    fn random(&mut self) -> u64;
}

/// One line of a decision's explanation.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A set was considered, with its health.
    Candidate {
        set_identifier: String,
        healthy: bool,
        why: String,
    },
    /// Why the chosen set(s) won.
    Chose {
        set_identifiers: Vec<String>,
        why: String,
    },
    /// Every candidate was unhealthy: answered as if all were healthy (Route 53 fails open).
    FailedOpen,
    /// Nothing matched (e.g. geolocation without a default): the answer is NODATA.
    NoMatch { why: String },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Candidate {
                set_identifier,
                healthy,
                why,
            } => write!(
                f,
                "candidate {set_identifier}: {} ({why})",
                if *healthy { "healthy" } else { "unhealthy" }
            ),
            Step::Chose {
                set_identifiers,
                why,
            } => write!(f, "chose {}: {why}", set_identifiers.join(", ")),
            Step::FailedOpen => f.write_str("every candidate is unhealthy: failing open"),
            Step::NoMatch { why } => write!(f, "no answer: {why}"),
        }
    }
}

/// The outcome of a decision: the indices (into the candidates) whose records answer, in answer
/// order, and the explanation.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Decision {
    pub chosen: Vec<usize>,
    pub steps: Vec<Step>,
}

/// Why candidates cannot be decided on together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("no record sets to choose from")]
    Empty,
    #[error("{count} record sets share one name and type; the limit is {POLICY_SETS_MAX}")]
    TooMany { count: usize },
    #[error(
        "set {first} is {first_kind} but set {other} is {other_kind}: one policy per name and type"
    )]
    MixedPolicies {
        first: String,
        first_kind: &'static str,
        other: String,
        other_kind: &'static str,
    },
    #[error("set identifier {0:?} is used twice")]
    DuplicateSetIdentifier(String),
    #[error(
        "failover needs one PRIMARY and at most one SECONDARY, got {primaries} and {secondaries}"
    )]
    FailoverRoles {
        primaries: usize,
        secondaries: usize,
    },
    #[error("set {set}: bias {bias} is outside -{BIAS_MAX}..={BIAS_MAX}")]
    BiasOutOfRange { set: String, bias: i8 },
    #[error("set {set}: coordinates out of range")]
    CoordinatesOutOfRange { set: String },
    #[error("geolocation {key} is used by two sets")]
    DuplicateGeoKey { key: String },
}

/// Checks that the candidates form one valid policy group (what a change batch must satisfy).
pub fn validate(candidates: &[Candidate]) -> Result<(), PolicyError> {
    let first = candidates.first().ok_or(PolicyError::Empty)?;
    if candidates.len() > POLICY_SETS_MAX {
        return Err(PolicyError::TooMany {
            count: candidates.len(),
        });
    }
    for (i, c) in candidates.iter().enumerate() {
        if c.policy.kind() != first.policy.kind() {
            return Err(PolicyError::MixedPolicies {
                first: first.set_identifier.clone(),
                first_kind: first.policy.kind(),
                other: c.set_identifier.clone(),
                other_kind: c.policy.kind(),
            });
        }
        if candidates[..i]
            .iter()
            .any(|o| o.set_identifier == c.set_identifier)
        {
            return Err(PolicyError::DuplicateSetIdentifier(
                c.set_identifier.clone(),
            ));
        }
        match &c.policy {
            Policy::Geoproximity { at, bias } => {
                if !(-BIAS_MAX..=BIAS_MAX).contains(bias) {
                    return Err(PolicyError::BiasOutOfRange {
                        set: c.set_identifier.clone(),
                        bias: *bias,
                    });
                }
                if !(-90.0..=90.0).contains(&at.latitude)
                    || !(-180.0..=180.0).contains(&at.longitude)
                {
                    return Err(PolicyError::CoordinatesOutOfRange {
                        set: c.set_identifier.clone(),
                    });
                }
            }
            Policy::Geolocation(key)
                if candidates[..i]
                    .iter()
                    .any(|o| matches!(&o.policy, Policy::Geolocation(k) if k == key)) =>
            {
                return Err(PolicyError::DuplicateGeoKey {
                    key: key.to_string(),
                });
            }
            _ => {}
        }
    }
    if matches!(first.policy, Policy::Failover(_)) {
        let count = |role| {
            candidates
                .iter()
                .filter(|c| c.policy == Policy::Failover(role))
                .count()
        };
        let (primaries, secondaries) =
            (count(FailoverRole::Primary), count(FailoverRole::Secondary));
        if primaries != 1 || secondaries > 1 {
            return Err(PolicyError::FailoverRoles {
                primaries,
                secondaries,
            });
        }
    }
    Ok(())
}

/// Chooses what answers among `candidates` (a valid group, see [`validate`]).
pub fn decide<E: Environment + ?Sized>(candidates: &[Candidate], env: &mut E) -> Decision {
    let mut d = Decision::default();
    let health: Vec<bool> = candidates
        .iter()
        .map(|c| {
            let (healthy, why) = match &c.health_check {
                None => (true, "no health check".to_string()),
                Some(id) => match env.healthy(id) {
                    Some(true) => (true, format!("check {id} healthy")),
                    Some(false) => (false, format!("check {id} unhealthy")),
                    None => (true, format!("check {id} has no data yet: healthy")),
                },
            };
            d.steps.push(Step::Candidate {
                set_identifier: c.set_identifier.clone(),
                healthy,
                why,
            });
            healthy
        })
        .collect();
    let Some(first) = candidates.first() else {
        d.steps.push(Step::NoMatch {
            why: "no record sets".into(),
        });
        return d;
    };
    // Route 53: when every candidate is unhealthy, answer as if every one were healthy.
    let all_down = health.iter().all(|h| !h);
    let usable: Vec<bool> = if all_down {
        d.steps.push(Step::FailedOpen);
        vec![true; candidates.len()]
    } else {
        health.clone()
    };
    let ids = |idx: &[usize]| -> Vec<String> {
        idx.iter()
            .map(|&i| candidates[i].set_identifier.clone())
            .collect()
    };
    match &first.policy {
        Policy::Weighted { .. } => {
            let weight = |i: usize| match candidates[i].policy {
                Policy::Weighted { weight } => weight as u64,
                _ => 0,
            };
            let live: Vec<usize> = (0..candidates.len()).filter(|&i| usable[i]).collect();
            let nonzero: Vec<usize> = live.iter().copied().filter(|&i| weight(i) > 0).collect();
            // Weight-0 sets answer only when no non-zero set is usable; then they split equally.
            let (pool, equal) = if nonzero.is_empty() {
                (live, true)
            } else {
                (nonzero, false)
            };
            let total: u64 = if equal {
                pool.len() as u64
            } else {
                pool.iter().map(|&i| weight(i)).sum()
            };
            let mut draw = env.random() % total.max(1);
            let mut pick = pool[0];
            for &i in &pool {
                let w = if equal { 1 } else { weight(i) };
                if draw < w {
                    pick = i;
                    break;
                }
                draw -= w;
            }
            let why = if equal {
                format!("equal split among {} usable weight-0 sets", pool.len())
            } else {
                format!("weight {} of {total}", weight(pick))
            };
            d.steps.push(Step::Chose {
                set_identifiers: ids(&[pick]),
                why,
            });
            d.chosen = vec![pick];
        }
        Policy::Failover(_) => {
            let role_of = |role| {
                (0..candidates.len()).find(|&i| candidates[i].policy == Policy::Failover(role))
            };
            let primary = role_of(FailoverRole::Primary);
            let secondary = role_of(FailoverRole::Secondary);
            let (pick, why) = match (primary, secondary) {
                (Some(p), _) if health[p] || all_down => (p, "primary is healthy".to_string()),
                (Some(_), Some(s)) => (s, "primary is unhealthy".to_string()),
                (Some(p), None) => (p, "primary is unhealthy and there is no secondary".into()),
                (None, Some(s)) => (s, "no primary".into()),
                (None, None) => {
                    d.steps.push(Step::NoMatch {
                        why: "no failover roles".into(),
                    });
                    return d;
                }
            };
            d.steps.push(Step::Chose {
                set_identifiers: ids(&[pick]),
                why,
            });
            d.chosen = vec![pick];
        }
        Policy::Multivalue => {
            let mut pool: Vec<usize> = (0..candidates.len()).filter(|&i| usable[i]).collect();
            shuffle(&mut pool, env);
            pool.truncate(MULTIVALUE_ANSWERS_MAX);
            d.steps.push(Step::Chose {
                set_identifiers: ids(&pool),
                why: format!("up to {MULTIVALUE_ANSWERS_MAX} usable sets, shuffled"),
            });
            d.chosen = pool;
        }
        Policy::Latency { .. } => {
            let rtt = |i: usize| match &candidates[i].policy {
                Policy::Latency { region } => env.rtt_ms(region),
                _ => None,
            };
            // Unmeasured regions rank after measured ones, in candidate order.
            let pick = (0..candidates.len())
                .filter(|&i| usable[i])
                .min_by_key(|&i| (rtt(i).is_none(), rtt(i).unwrap_or(u32::MAX), i))
                .expect("at least one usable candidate");
            let why = match (&candidates[pick].policy, rtt(pick)) {
                (Policy::Latency { region }, Some(ms)) => {
                    format!("region {region} has the lowest RTT from this POP ({ms} ms)")
                }
                (Policy::Latency { region }, None) => {
                    format!("no RTT measured for any usable region; first listed ({region})")
                }
                _ => String::new(),
            };
            d.steps.push(Step::Chose {
                set_identifiers: ids(&[pick]),
                why,
            });
            d.chosen = vec![pick];
        }
        Policy::Geolocation(_) => {
            let here = env.location().cloned().unwrap_or_default();
            // The most specific matching key wins; an unhealthy match gives way to the next
            // larger area (Route 53), down to the default.
            let mut matches: Vec<usize> = (0..candidates.len())
                .filter(|&i| matches!(&candidates[i].policy, Policy::Geolocation(k) if k.matches(&here)))
                .collect();
            matches.sort_by_key(|&i| match &candidates[i].policy {
                Policy::Geolocation(k) => std::cmp::Reverse(k.specificity()),
                _ => std::cmp::Reverse(0),
            });
            let pick = matches
                .iter()
                .copied()
                .find(|&i| health[i])
                .or_else(|| matches.first().copied().filter(|_| all_down));
            match pick {
                Some(i) => {
                    let key = match &candidates[i].policy {
                        Policy::Geolocation(k) => k.to_string(),
                        _ => String::new(),
                    };
                    d.steps.push(Step::Chose {
                        set_identifiers: ids(&[i]),
                        why: format!("most specific healthy match for the client: {key}"),
                    });
                    d.chosen = vec![i];
                }
                None => d.steps.push(Step::NoMatch {
                    why: "no geolocation set matches the client and there is no default".into(),
                }),
            }
        }
        Policy::Geoproximity { .. } => {
            let Some(client) = env.location().and_then(|l| l.coordinates) else {
                d.steps.push(Step::NoMatch {
                    why: "client coordinates unknown".into(),
                });
                return d;
            };
            let biased = |i: usize| match &candidates[i].policy {
                Policy::Geoproximity { at, bias } => biased_distance(client.distance_km(at), *bias),
                _ => f64::INFINITY,
            };
            let pick = (0..candidates.len())
                .filter(|&i| usable[i])
                .min_by(|&a, &b| biased(a).total_cmp(&biased(b)).then(a.cmp(&b)))
                .expect("at least one usable candidate");
            d.steps.push(Step::Chose {
                set_identifiers: ids(&[pick]),
                why: format!("lowest biased distance ({:.0} km)", biased(pick)),
            });
            d.chosen = vec![pick];
        }
        Policy::IpBased { .. } => {
            let wanted = env.cidr_location().map(str::to_string);
            let by_location = |loc: &str| {
                (0..candidates.len()).find(|&i| {
                    usable[i] && matches!(&candidates[i].policy, Policy::IpBased { location } if location == loc)
                })
            };
            let pick = wanted
                .as_deref()
                .and_then(by_location)
                .map(|i| {
                    (
                        i,
                        format!(
                            "client address is in location {}",
                            wanted.as_deref().unwrap_or("")
                        ),
                    )
                })
                .or_else(|| by_location("*").map(|i| (i, "default location *".to_string())));
            match pick {
                Some((i, why)) => {
                    d.steps.push(Step::Chose {
                        set_identifiers: ids(&[i]),
                        why,
                    });
                    d.chosen = vec![i];
                }
                None => d.steps.push(Step::NoMatch {
                    why: "the client's location has no set and there is no default".into(),
                }),
            }
        }
    }
    d
}

/// Route 53's biased distance: a positive bias shrinks the distance (the set attracts more),
/// a negative one grows it.
pub fn biased_distance(distance_km: f64, bias: i8) -> f64 {
    let b = f64::from(bias.clamp(-BIAS_MAX, BIAS_MAX)) / 100.0;
    if b >= 0.0 {
        distance_km * (1.0 - b)
    } else {
        distance_km / (1.0 + b)
    }
}

/// Fisher–Yates with the environment's draws.
fn shuffle<E: Environment + ?Sized>(items: &mut [usize], env: &mut E) {
    for i in (1..items.len()).rev() {
        let j = (env.random() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
