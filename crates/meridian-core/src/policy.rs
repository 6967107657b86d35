//! Route 53 routing policies, decided per query: given the record sets that share one name and
//! type (each with a set identifier and one policy), the health of their checks, what is known
//! of the client (location, address) and of this POP (RTT to each region), choose what answers,
//! and say why.
//!
//! Pure: the caller passes health, location and a random draw in an [`Environment`]; nothing
//! here reads a clock, a socket or a database. The same inputs give the same decision, so the
//! edge's answers, `meridian explain` and the tests agree.
//!
//! Two forms of the same types: owned (`String`, for change batches, validation and tests) and
//! borrowed (`&str`, decoded in place from a compiled zone by [`crate::routed`]). The decision
//! ([`decide_iter`]) walks the candidates in a few passes with O(1) state and allocates nothing
//! unless asked for an explanation, so it runs on the edge's query path.

use std::fmt;
use std::net::IpAddr;

/// Record sets one name and type may hold under a policy (Route 53 allows 100 weighted sets;
/// geolocation may have one per country and subdivision).
pub const POLICY_SETS_MAX: usize = 1024;
/// Records a multivalue answer carries at most (Route 53: eight).
pub const MULTIVALUE_ANSWERS_MAX: usize = 8;
/// Geoproximity bias range (Route 53: −99…+99).
pub const BIAS_MAX: i8 = 99;
/// Longest region, location or collection name, and set identifier (Route 53: 128 for set
/// identifiers; the compiled form stores lengths in one byte).
pub const POLICY_LABEL_BYTES_MAX: usize = 128;

/// Route 53's failover roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FailoverRole {
    Primary,
    Secondary,
}

/// A geolocation key: the default `*`, a continent, a country, or a country's subdivision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GeoKey<S = String> {
    Default,
    /// Two-letter continent code (AF AN AS EU OC NA SA).
    Continent(S),
    /// ISO 3166-1 alpha-2.
    Country(S),
    /// ISO 3166-1 alpha-2 and the ISO 3166-2 subdivision code (without the country prefix).
    Subdivision(S, S),
}

impl<S: AsRef<str>> GeoKey<S> {
    /// Higher is more specific; the most specific match wins.
    fn specificity(&self) -> u8 {
        match self {
            GeoKey::Default => 0,
            GeoKey::Continent(_) => 1,
            GeoKey::Country(_) => 2,
            GeoKey::Subdivision(..) => 3,
        }
    }

    fn matches<T: AsRef<str>>(&self, at: &Location<T>) -> bool {
        let eq = |a: &S, b: &Option<T>| {
            b.as_ref()
                .is_some_and(|b| a.as_ref().eq_ignore_ascii_case(b.as_ref()))
        };
        match self {
            GeoKey::Default => true,
            GeoKey::Continent(c) => eq(c, &at.continent),
            GeoKey::Country(c) => eq(c, &at.country),
            GeoKey::Subdivision(c, s) => eq(c, &at.country) && eq(s, &at.subdivision),
        }
    }

    pub fn as_ref(&self) -> GeoKey<&str> {
        match self {
            GeoKey::Default => GeoKey::Default,
            GeoKey::Continent(c) => GeoKey::Continent(c.as_ref()),
            GeoKey::Country(c) => GeoKey::Country(c.as_ref()),
            GeoKey::Subdivision(c, s) => GeoKey::Subdivision(c.as_ref(), s.as_ref()),
        }
    }

    fn same_as<T: AsRef<str>>(&self, other: &GeoKey<T>) -> bool {
        self.as_ref() == other.as_ref()
    }
}

impl<S: AsRef<str>> fmt::Display for GeoKey<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeoKey::Default => f.write_str("*"),
            GeoKey::Continent(c) => write!(f, "continent {}", c.as_ref()),
            GeoKey::Country(c) => write!(f, "country {}", c.as_ref()),
            GeoKey::Subdivision(c, s) => write!(f, "subdivision {}-{}", c.as_ref(), s.as_ref()),
        }
    }
}

/// Latitude and longitude in degrees.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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

    /// Whether both are in range (latitude ±90, longitude ±180, finite).
    pub fn is_valid(&self) -> bool {
        (-90.0..=90.0).contains(&self.latitude) && (-180.0..=180.0).contains(&self.longitude)
    }
}

/// What is known of where the client is (from ECS or the resolver's address, looked up by the
/// caller in a geo database).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Location<S = String> {
    pub continent: Option<S>,
    pub country: Option<S>,
    pub subdivision: Option<S>,
    pub coordinates: Option<Coordinates>,
}

impl<S: AsRef<str>> Location<S> {
    pub fn as_ref(&self) -> Location<&str> {
        Location {
            continent: self.continent.as_ref().map(AsRef::as_ref),
            country: self.country.as_ref().map(AsRef::as_ref),
            subdivision: self.subdivision.as_ref().map(AsRef::as_ref),
            coordinates: self.coordinates,
        }
    }
}

impl<S: AsRef<str>> fmt::Display for Location<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |o: &Option<S>| {
            o.as_ref()
                .map(|s| s.as_ref().to_string())
                .unwrap_or("-".into())
        };
        write!(
            f,
            "continent {} country {} subdivision {}",
            part(&self.continent),
            part(&self.country),
            part(&self.subdivision)
        )?;
        if let Some(c) = self.coordinates {
            write!(f, " at {:.2},{:.2}", c.latitude, c.longitude)?;
        }
        Ok(())
    }
}

/// One record set's routing policy, as Route 53 defines them.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Policy<S = String> {
    /// Weight 0–255: the share of answers among healthy non-zero sets.
    Weighted {
        weight: u8,
    },
    Failover(FailoverRole),
    /// Up to eight healthy records, shuffled.
    Multivalue,
    /// The region whose RTT from this POP is lowest wins.
    Latency {
        region: S,
    },
    Geolocation(GeoKey<S>),
    /// The nearest by biased distance wins; bias −99…+99 grows (+) or shrinks (−) the area a
    /// set attracts.
    Geoproximity {
        at: Coordinates,
        bias: i8,
    },
    /// A location name of a CIDR collection; `*` is the default.
    IpBased {
        collection: S,
        location: S,
    },
}

impl<S: AsRef<str>> Policy<S> {
    pub fn kind(&self) -> &'static str {
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

    pub fn as_ref(&self) -> Policy<&str> {
        match self {
            Policy::Weighted { weight } => Policy::Weighted { weight: *weight },
            Policy::Failover(r) => Policy::Failover(*r),
            Policy::Multivalue => Policy::Multivalue,
            Policy::Latency { region } => Policy::Latency {
                region: region.as_ref(),
            },
            Policy::Geolocation(k) => Policy::Geolocation(k.as_ref()),
            Policy::Geoproximity { at, bias } => Policy::Geoproximity {
                at: *at,
                bias: *bias,
            },
            Policy::IpBased {
                collection,
                location,
            } => Policy::IpBased {
                collection: collection.as_ref(),
                location: location.as_ref(),
            },
        }
    }

    /// Whether the decision depends on where the client is (the answer's ECS scope is then the
    /// client's prefix, RFC 7871 §7.2.1).
    pub fn uses_client_location(&self) -> bool {
        matches!(
            self,
            Policy::Geolocation(_) | Policy::Geoproximity { .. } | Policy::IpBased { .. }
        )
    }
}

impl<S: AsRef<str>> fmt::Display for Policy<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Weighted { weight } => write!(f, "weighted {weight}"),
            Policy::Failover(FailoverRole::Primary) => f.write_str("failover PRIMARY"),
            Policy::Failover(FailoverRole::Secondary) => f.write_str("failover SECONDARY"),
            Policy::Multivalue => f.write_str("multivalue"),
            Policy::Latency { region } => write!(f, "latency {}", region.as_ref()),
            Policy::Geolocation(k) => write!(f, "geolocation {k}"),
            Policy::Geoproximity { at, bias } => write!(
                f,
                "geoproximity {:.4},{:.4} bias {bias}",
                at.latitude, at.longitude
            ),
            Policy::IpBased {
                collection,
                location,
            } => write!(f, "ip-based {}/{}", collection.as_ref(), location.as_ref()),
        }
    }
}

/// A record set taking part in a policy decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate<S = String> {
    pub set_identifier: S,
    pub policy: Policy<S>,
    /// The health check guarding this set; `None`: always healthy.
    pub health_check: Option<S>,
    /// For an alias with EvaluateTargetHealth: whether its target has a healthy answer. `true`
    /// for every other set.
    pub target_healthy: bool,
}

impl<S: AsRef<str>> Candidate<S> {
    pub fn as_ref(&self) -> Candidate<&str> {
        Candidate {
            set_identifier: self.set_identifier.as_ref(),
            policy: self.policy.as_ref(),
            health_check: self.health_check.as_ref().map(AsRef::as_ref),
            target_healthy: self.target_healthy,
        }
    }
}

/// A CIDR block of a collection and the location name it maps to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CidrBlock {
    pub network: IpAddr,
    pub prefix_len: u8,
    pub location: String,
}

impl CidrBlock {
    pub fn contains(&self, ip: IpAddr) -> bool {
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

impl fmt::Display for CidrBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
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
/// POP latency table; `meridian explain` and the tests from what the user gives.
pub trait Environment {
    /// The verdict of a health check: `Some(true)` healthy, `Some(false)` unhealthy, `None`
    /// unknown (treated as healthy, as Route 53 treats a check with no data yet).
    fn healthy(&self, check: &str) -> Option<bool>;
    /// Where the client is, if known.
    fn location(&self) -> Option<Location<&str>>;
    /// The location name the client's address maps to in this CIDR collection.
    fn cidr_location(&self, collection: &str) -> Option<&str>;
    /// RTT in milliseconds from this POP to a latency set: measured to the endpoint of its
    /// health check when the POP probes it (smoothed), else this POP's table for the region.
    fn rtt_ms(&self, region: &str, check: Option<&str>) -> Option<u32>;
    /// A uniformly random 64-bit draw (a per-worker PRNG in the edge, a fixed seed in tests).
    fn random(&mut self) -> u64;
}

/// A geo database (MaxMind format on the edge): where an address is. Implementations return
/// strings borrowed from the database, so a lookup allocates nothing.
pub trait GeoLookup: Send + Sync {
    fn locate(&self, ip: IpAddr) -> Option<Location<&str>>;
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
    /// Every candidate was unhealthy and the sets say fail-closed: no answer (NODATA).
    FailedClosed,
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
            Step::FailedClosed => {
                f.write_str("every candidate is unhealthy and the sets fail closed: no answer")
            }
            Step::NoMatch { why } => write!(f, "no answer: {why}"),
        }
    }
}

/// The sets a decision chose (indices into the candidates, in answer order), without
/// allocating: at most [`MULTIVALUE_ANSWERS_MAX`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chosen {
    idx: [u16; MULTIVALUE_ANSWERS_MAX],
    len: u8,
    /// The decision depended on the client's location or address (ECS scope, RFC 7871).
    pub used_location: bool,
}

impl Chosen {
    fn one(i: usize) -> Chosen {
        let mut c = Chosen::default();
        c.push(i);
        c
    }

    fn push(&mut self, i: usize) {
        if (self.len as usize) < MULTIVALUE_ANSWERS_MAX {
            self.idx[self.len as usize] = i as u16;
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.idx[..self.len as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The outcome of a decision with its explanation (for `explain` and tests).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Decision {
    pub chosen: Vec<usize>,
    pub steps: Vec<Step>,
    pub used_location: bool,
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
    #[error("failover allows one PRIMARY and one SECONDARY, got {primaries} and {secondaries}")]
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
    #[error("ip-based location {location} is used by two sets")]
    DuplicateCidrLocation { location: String },
    #[error(
        "set {set} uses CIDR collection {other}, but set {first} uses {collection}: one collection per name and type"
    )]
    MixedCollections {
        first: String,
        collection: String,
        set: String,
        other: String,
    },
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
        let earlier = &candidates[..i];
        if earlier.iter().any(|o| o.set_identifier == c.set_identifier) {
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
                if !at.is_valid() {
                    return Err(PolicyError::CoordinatesOutOfRange {
                        set: c.set_identifier.clone(),
                    });
                }
            }
            Policy::Geolocation(key)
                if earlier
                    .iter()
                    .any(|o| matches!(&o.policy, Policy::Geolocation(k) if k.same_as(key))) =>
            {
                return Err(PolicyError::DuplicateGeoKey {
                    key: key.to_string(),
                });
            }
            Policy::IpBased {
                collection,
                location,
            } => {
                if let Policy::IpBased {
                    collection: first_collection,
                    ..
                } = &first.policy
                    && first_collection != collection
                {
                    return Err(PolicyError::MixedCollections {
                        first: first.set_identifier.clone(),
                        collection: first_collection.clone(),
                        set: c.set_identifier.clone(),
                        other: collection.clone(),
                    });
                }
                if earlier.iter().any(
                    |o| matches!(&o.policy, Policy::IpBased { location: l, .. } if l == location),
                ) {
                    return Err(PolicyError::DuplicateCidrLocation {
                        location: location.clone(),
                    });
                }
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
        if primaries > 1 || secondaries > 1 {
            return Err(PolicyError::FailoverRoles {
                primaries,
                secondaries,
            });
        }
    }
    Ok(())
}

/// Why a candidate is healthy or not, kept as data so the query path formats nothing.
#[derive(Clone, Copy)]
enum HealthWhy {
    NoCheck,
    Healthy,
    Unhealthy,
    NoData,
    TargetUnhealthy,
}

fn health_of<S: AsRef<str>, E: Environment + ?Sized>(
    c: &Candidate<S>,
    env: &E,
) -> (bool, HealthWhy) {
    let own = match &c.health_check {
        None => (true, HealthWhy::NoCheck),
        Some(id) => match env.healthy(id.as_ref()) {
            Some(true) => (true, HealthWhy::Healthy),
            Some(false) => (false, HealthWhy::Unhealthy),
            None => (true, HealthWhy::NoData),
        },
    };
    if own.0 && !c.target_healthy {
        return (false, HealthWhy::TargetUnhealthy);
    }
    own
}

fn health_text<S: AsRef<str>>(c: &Candidate<S>, why: HealthWhy) -> String {
    let id = c.health_check.as_ref().map(AsRef::as_ref).unwrap_or("");
    match why {
        HealthWhy::NoCheck => "no health check".into(),
        HealthWhy::Healthy => format!("check {id} healthy"),
        HealthWhy::Unhealthy => format!("check {id} unhealthy"),
        HealthWhy::NoData => format!("check {id} has no data yet: healthy"),
        HealthWhy::TargetUnhealthy => "alias target has no healthy answer".into(),
    }
}

/// Chooses what answers among `candidates` (a valid group, see [`validate`]). Fails open.
pub fn decide<E: Environment + ?Sized>(candidates: &[Candidate], env: &mut E) -> Decision {
    decide_traced(candidates.iter().map(Candidate::as_ref), env, false)
}

/// [`decide_iter`] with its explanation, for `explain` and tests.
pub fn decide_traced<'c, I, E>(candidates: I, env: &mut E, fail_closed: bool) -> Decision
where
    I: Iterator<Item = Candidate<&'c str>> + Clone,
    E: Environment + ?Sized,
{
    let mut steps = Vec::new();
    let chosen = decide_iter(candidates, env, fail_closed, Some(&mut steps));
    Decision {
        chosen: chosen.as_slice().iter().map(|&i| i as usize).collect(),
        steps,
        used_location: chosen.used_location,
    }
}

/// The decision itself: a few passes over `candidates` (cloned iterators over the same sets),
/// O(1) state, no allocation unless `trace` is given. When every candidate is unhealthy the
/// answer fails open (Route 53), or is empty if `fail_closed`.
pub fn decide_iter<'c, I, E>(
    candidates: I,
    env: &mut E,
    fail_closed: bool,
    mut trace: Option<&mut Vec<Step>>,
) -> Chosen
where
    I: Iterator<Item = Candidate<&'c str>> + Clone,
    E: Environment + ?Sized,
{
    let mut first: Option<Policy<&str>> = None;
    let mut any_healthy = false;
    let mut count = 0usize;
    for c in candidates.clone() {
        let (healthy, why) = health_of(&c, env);
        if let Some(t) = trace.as_deref_mut() {
            t.push(Step::Candidate {
                set_identifier: c.set_identifier.to_string(),
                healthy,
                why: health_text(&c, why),
            });
        }
        any_healthy |= healthy;
        count += 1;
        if first.is_none() {
            first = Some(c.policy);
        }
    }
    let Some(first) = first else {
        if let Some(t) = trace.as_deref_mut() {
            t.push(Step::NoMatch {
                why: "no record sets".into(),
            });
        }
        return Chosen::default();
    };
    let all_down = !any_healthy;
    if all_down {
        if fail_closed {
            if let Some(t) = trace.as_deref_mut() {
                t.push(Step::FailedClosed);
            }
            return Chosen::default();
        }
        if let Some(t) = trace.as_deref_mut() {
            t.push(Step::FailedOpen);
        }
    }
    // Route 53: when every candidate is unhealthy, answer as if every one were healthy.
    let usable = |c: &Candidate<&str>, env: &E| all_down || health_of(c, env).0;
    let id_at = |i: usize| {
        candidates
            .clone()
            .nth(i)
            .map(|c| c.set_identifier.to_string())
            .unwrap_or_default()
    };
    let chose = |trace: &mut Option<&mut Vec<Step>>, picks: &[u16], why: &dyn Fn() -> String| {
        if let Some(t) = trace.as_deref_mut() {
            t.push(Step::Chose {
                set_identifiers: picks.iter().map(|&i| id_at(i as usize)).collect(),
                why: why(),
            });
        }
    };
    let no_match = |trace: &mut Option<&mut Vec<Step>>, why: &str| {
        if let Some(t) = trace.as_deref_mut() {
            t.push(Step::NoMatch { why: why.into() });
        }
    };
    match first {
        Policy::Weighted { .. } => {
            let weight = |c: &Candidate<&str>| match c.policy {
                Policy::Weighted { weight } => weight as u64,
                _ => 0,
            };
            let (mut total, mut live) = (0u64, 0u64);
            for c in candidates.clone() {
                if usable(&c, env) {
                    total += weight(&c);
                    live += 1;
                }
            }
            // Weight-0 sets answer only when no non-zero set is usable; then they split equally.
            let equal = total == 0;
            let mut draw = env.random() % if equal { live.max(1) } else { total };
            let mut pick = 0;
            for (i, c) in candidates.clone().enumerate() {
                if !usable(&c, env) {
                    continue;
                }
                let w = if equal { 1 } else { weight(&c) };
                if draw < w {
                    pick = i;
                    break;
                }
                draw -= w;
            }
            let picked = candidates
                .clone()
                .nth(pick)
                .map(|c| weight(&c))
                .unwrap_or(0);
            chose(&mut trace, &[pick as u16], &|| {
                if equal {
                    format!("equal split among {live} usable weight-0 sets")
                } else {
                    format!("weight {picked} of {total}")
                }
            });
            Chosen::one(pick)
        }
        Policy::Failover(_) => {
            let (mut primary, mut secondary) = (None, None);
            for (i, c) in candidates.clone().enumerate() {
                match c.policy {
                    Policy::Failover(FailoverRole::Primary) => {
                        primary = Some((i, health_of(&c, env).0))
                    }
                    Policy::Failover(FailoverRole::Secondary) => secondary = Some(i),
                    _ => {}
                }
            }
            let (pick, why) = match (primary, secondary) {
                (Some((p, healthy)), _) if healthy || all_down => (p, "primary is healthy"),
                (Some(_), Some(s)) => (s, "primary is unhealthy"),
                (Some((p, _)), None) => (p, "primary is unhealthy and there is no secondary"),
                (None, Some(s)) => (s, "no primary"),
                (None, None) => {
                    no_match(&mut trace, "no failover roles");
                    return Chosen::default();
                }
            };
            chose(&mut trace, &[pick as u16], &|| why.to_string());
            Chosen::one(pick)
        }
        Policy::Multivalue => {
            // Reservoir sampling: a uniform sample of up to eight usable sets, then shuffled.
            let mut sample = Chosen::default();
            let mut seen = 0u64;
            for (i, c) in candidates.clone().enumerate() {
                if !usable(&c, env) {
                    continue;
                }
                if (sample.len as usize) < MULTIVALUE_ANSWERS_MAX {
                    sample.push(i);
                } else {
                    let j = (env.random() % (seen + 1)) as usize;
                    if j < MULTIVALUE_ANSWERS_MAX {
                        sample.idx[j] = i as u16;
                    }
                }
                seen += 1;
            }
            let n = sample.len as usize;
            for i in (1..n).rev() {
                let j = (env.random() % (i as u64 + 1)) as usize;
                sample.idx.swap(i, j);
            }
            chose(&mut trace, sample.as_slice(), &|| {
                format!("up to {MULTIVALUE_ANSWERS_MAX} usable sets, shuffled")
            });
            sample
        }
        Policy::Latency { .. } => {
            let mut best: Option<(bool, u32, usize)> = None;
            for (i, c) in candidates.clone().enumerate() {
                if !usable(&c, env) {
                    continue;
                }
                let rtt = match c.policy {
                    Policy::Latency { region } => env.rtt_ms(region, c.health_check),
                    _ => None,
                };
                // Unmeasured regions rank after measured ones, in candidate order.
                let key = (rtt.is_none(), rtt.unwrap_or(u32::MAX), i);
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
            let (unmeasured, ms, pick) = best.expect("a usable candidate exists");
            let region = match candidates.clone().nth(pick).map(|c| c.policy) {
                Some(Policy::Latency { region }) => region,
                _ => "",
            };
            chose(&mut trace, &[pick as u16], &|| {
                if unmeasured {
                    format!("no RTT measured for any usable region; first listed ({region})")
                } else {
                    format!("region {region} has the lowest RTT from this POP ({ms} ms)")
                }
            });
            Chosen::one(pick)
        }
        Policy::Geolocation(_) => {
            let here = env.location().unwrap_or_default();
            // The most specific matching key wins; an unhealthy match gives way to the next
            // larger area (Route 53), down to the default.
            // (specificity, index) of the best match, healthy and any.
            let mut best_healthy: Option<(u8, usize)> = None;
            let mut best_any: Option<(u8, usize)> = None;
            for (i, c) in candidates.clone().enumerate() {
                let Policy::Geolocation(k) = &c.policy else {
                    continue;
                };
                if !k.matches(&here) {
                    continue;
                }
                let s = k.specificity();
                if best_any.is_none_or(|(b, _)| s > b) {
                    best_any = Some((s, i));
                }
                if health_of(&c, env).0 && best_healthy.is_none_or(|(b, _)| s > b) {
                    best_healthy = Some((s, i));
                }
            }
            let pick = best_healthy.or(best_any.filter(|_| all_down));
            let mut out = match pick {
                Some((_, i)) => {
                    chose(&mut trace, &[i as u16], &|| {
                        let key = match candidates.clone().nth(i).map(|c| c.policy) {
                            Some(Policy::Geolocation(k)) => k.to_string(),
                            _ => String::new(),
                        };
                        format!("most specific healthy match for the client: {key}")
                    });
                    Chosen::one(i)
                }
                None => {
                    no_match(
                        &mut trace,
                        "no geolocation set matches the client and there is no default",
                    );
                    Chosen::default()
                }
            };
            out.used_location = true;
            out
        }
        Policy::Geoproximity { .. } => {
            let Some(client) = env.location().and_then(|l| l.coordinates) else {
                no_match(&mut trace, "client coordinates unknown");
                return Chosen {
                    used_location: true,
                    ..Chosen::default()
                };
            };
            let mut best: Option<(f64, usize)> = None;
            for (i, c) in candidates.clone().enumerate() {
                if !usable(&c, env) {
                    continue;
                }
                let Policy::Geoproximity { at, bias } = c.policy else {
                    continue;
                };
                let d = biased_distance(client.distance_km(&at), bias);
                if best.is_none_or(|(b, _)| d < b) {
                    best = Some((d, i));
                }
            }
            let (d, pick) = best.expect("a usable candidate exists");
            chose(&mut trace, &[pick as u16], &|| {
                format!("lowest biased distance ({d:.0} km)")
            });
            let mut out = Chosen::one(pick);
            out.used_location = true;
            out
        }
        Policy::IpBased { collection, .. } => {
            let wanted = env.cidr_location(collection);
            let (mut exact, mut default) = (None, None);
            for (i, c) in candidates.clone().enumerate() {
                if !usable(&c, env) {
                    continue;
                }
                if let Policy::IpBased { location, .. } = c.policy {
                    if Some(location) == wanted && exact.is_none() {
                        exact = Some(i);
                    }
                    if location == "*" && default.is_none() {
                        default = Some(i);
                    }
                }
            }
            let mut out = match (exact, default) {
                (Some(i), _) => {
                    chose(&mut trace, &[i as u16], &|| {
                        format!(
                            "client address is in location {} of {collection}",
                            wanted.unwrap_or("")
                        )
                    });
                    Chosen::one(i)
                }
                (None, Some(i)) => {
                    chose(&mut trace, &[i as u16], &|| "default location *".into());
                    Chosen::one(i)
                }
                (None, None) => {
                    no_match(
                        &mut trace,
                        "the client's location has no set and there is no default",
                    );
                    Chosen::default()
                }
            };
            out.used_location = true;
            out
        }
    }
    .with_count_check(count)
}

impl Chosen {
    fn with_count_check(self, count: usize) -> Chosen {
        debug_assert!(self.as_slice().iter().all(|&i| (i as usize) < count));
        self
    }
}

/// Coordinates of the AWS regions Route 53's geoproximity `AWSRegion` names (their metro areas),
/// so ChangeBatch files that use them work unchanged.
pub fn region_coordinates(region: &str) -> Option<Coordinates> {
    const REGIONS: &[(&str, f64, f64)] = &[
        ("us-east-1", 38.13, -78.45),
        ("us-east-2", 39.96, -83.00),
        ("us-west-1", 37.35, -121.96),
        ("us-west-2", 46.15, -123.88),
        ("ca-central-1", 45.50, -73.57),
        ("ca-west-1", 51.05, -114.07),
        ("sa-east-1", -23.55, -46.63),
        ("eu-west-1", 53.35, -6.26),
        ("eu-west-2", 51.51, -0.13),
        ("eu-west-3", 48.86, 2.35),
        ("eu-central-1", 50.11, 8.68),
        ("eu-central-2", 47.37, 8.54),
        ("eu-north-1", 59.33, 18.07),
        ("eu-south-1", 45.46, 9.19),
        ("eu-south-2", 41.65, -0.88),
        ("me-south-1", 26.07, 50.56),
        ("me-central-1", 24.45, 54.38),
        ("il-central-1", 32.09, 34.78),
        ("af-south-1", -33.93, 18.42),
        ("ap-east-1", 22.32, 114.17),
        ("ap-south-1", 19.08, 72.88),
        ("ap-south-2", 17.39, 78.49),
        ("ap-northeast-1", 35.68, 139.69),
        ("ap-northeast-2", 37.57, 126.98),
        ("ap-northeast-3", 34.69, 135.50),
        ("ap-southeast-1", 1.35, 103.82),
        ("ap-southeast-2", -33.87, 151.21),
        ("ap-southeast-3", -6.21, 106.85),
        ("ap-southeast-4", -37.81, 144.96),
        ("ap-southeast-5", 3.139, 101.69),
    ];
    REGIONS
        .iter()
        .find(|(name, _, _)| name.eq_ignore_ascii_case(region))
        .map(|&(_, latitude, longitude)| Coordinates {
            latitude,
            longitude,
        })
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
