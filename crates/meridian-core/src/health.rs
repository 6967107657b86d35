//! Health checks: Route 53's `HealthCheckConfig` with our extensions, the per-POP verdict with
//! failure and recovery thresholds, and the check's status by quorum of POPs.
//!
//! Pure: probes are done by edges and their results fed in here as data; the control plane's
//! leader writes only transitions to Raft. The same inputs give the same verdicts on every node,
//! so a follower that has seen the same probe results would decide the same (a new leader
//! continues from the replicated status plus what it has observed itself).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Route 53 probes every 10 or 30 s; we allow 1–60 s.
pub const REQUEST_INTERVAL_MIN_S: u32 = 1;
pub const REQUEST_INTERVAL_MAX_S: u32 = 60;
/// Route 53: 1–10 consecutive results to change a POP's view.
pub const THRESHOLD_MAX: u32 = 10;
/// A probe waits at most this long (Route 53: 4 s to connect, 2 s for the first byte).
pub const TIMEOUT_MAX_MS: u32 = 10_000;
/// Children of a calculated check (Route 53: 256).
pub const CHILD_CHECKS_MAX: usize = 256;
/// POPs a check names explicitly.
pub const CHECK_POPS_MAX: usize = 64;
/// Route 53 calls an endpoint healthy when more than 18% of its checkers see it healthy.
pub const HEALTHY_QUORUM_DEFAULT: f64 = 0.18;
/// Route 53 searches the first 5,120 bytes of the body for `SearchString`.
pub const SEARCH_BYTES_MAX: usize = 5120;
/// Longest `ResourcePath` / `SearchString` (Route 53: 255).
pub const TEXT_BYTES_MAX: usize = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckKind {
    Http,
    Https,
    HttpStrMatch,
    HttpsStrMatch,
    Tcp,
    Calculated,
}

impl CheckKind {
    pub fn uses_http(self) -> bool {
        !matches!(self, CheckKind::Tcp | CheckKind::Calculated)
    }
    pub fn uses_tls(self) -> bool {
        matches!(self, CheckKind::Https | CheckKind::HttpsStrMatch)
    }
}

/// A name the prober may resolve and send as Host and SNI: it reaches the system resolver and
/// an HTTP header, so only host-name characters pass (no spaces, CR/LF or NULs).
fn is_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A validated health check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthCheckSpec {
    pub kind: CheckKind,
    /// Endpoint address; `None` means the prober resolves `fqdn` before every probe (as Route 53
    /// does), so a DNS change of the endpoint is followed without updating the check.
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub resource_path: String,
    /// Host header / SNI.
    pub fqdn: Option<String>,
    pub search_string: Option<String>,
    pub request_interval_ms: u32,
    /// Consecutive failures that make a POP's view unhealthy.
    pub failure_threshold: u32,
    /// Consecutive successes that make it healthy again (hysteresis; Route 53 uses the failure
    /// threshold for both).
    pub recovery_threshold: u32,
    pub timeout_ms: u32,
    pub inverted: bool,
    pub disabled: bool,
    pub children: Vec<String>,
    pub health_threshold: u32,
    /// POPs that probe it; empty: every POP.
    pub pops: Vec<String>,
    /// Healthy when the healthy fraction of POPs with a view is more than this.
    pub healthy_quorum: f64,
    /// HTTP status ranges that count as success (default 200–399, as Route 53).
    pub expected_status: Vec<(u16, u16)>,
    /// HTTPS: validate the certificate chain against the public roots and the name in
    /// `fqdn` (off by default, as Route 53, which never validates).
    #[serde(default)]
    pub verify_certificate: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    #[error("HealthCheckConfig is not valid {format}: {reason}")]
    Syntax {
        format: &'static str,
        reason: String,
    },
    #[error("HealthCheckConfig {field}: {reason}")]
    Field { field: &'static str, reason: String },
}

fn field(field: &'static str, reason: impl Into<String>) -> HealthError {
    HealthError::Field {
        field,
        reason: reason.into(),
    }
}

/// Route 53's `HealthCheckConfig` and our extensions, as written by operators.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct WireConfig {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "IPAddress")]
    ip_address: Option<String>,
    port: Option<u32>,
    resource_path: Option<String>,
    fully_qualified_domain_name: Option<String>,
    search_string: Option<String>,
    request_interval: Option<u32>,
    failure_threshold: Option<u32>,
    recovery_threshold: Option<u32>,
    #[serde(rename = "TimeoutMs")]
    timeout_ms: Option<u32>,
    inverted: Option<bool>,
    disabled: Option<bool>,
    child_health_checks: Option<Vec<String>>,
    health_threshold: Option<u32>,
    /// Route 53 checker regions: accepted for compatibility, probing POPs come from `Pops`.
    regions: Option<Vec<String>>,
    pops: Option<Vec<String>>,
    healthy_quorum: Option<f64>,
    expected_status: Option<Vec<String>>,
    verify_certificate: Option<bool>,
    // Route 53 fields we accept and do not use.
    measure_latency: Option<bool>,
    #[serde(rename = "EnableSNI")]
    enable_sni: Option<bool>,
    insufficient_data_health_status: Option<String>,
    alarm_identifier: Option<serde_json::Value>,
    routing_control_arn: Option<String>,
}

/// Parses and validates a `HealthCheckConfig` (JSON or YAML; the object itself or wrapped as
/// `{"HealthCheckConfig": …}`).
pub fn parse_config(text: &str) -> Result<HealthCheckSpec, HealthError> {
    let value: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| HealthError::Syntax {
            format: "JSON",
            reason: e.to_string(),
        })?
    } else {
        serde_yaml::from_str(text).map_err(|e| HealthError::Syntax {
            format: "YAML",
            reason: e.to_string(),
        })?
    };
    let value = value.get("HealthCheckConfig").cloned().unwrap_or(value);
    let w: WireConfig = serde_json::from_value(value).map_err(|e| HealthError::Syntax {
        format: "HealthCheckConfig",
        reason: e.to_string(),
    })?;
    let _ = (
        &w.regions,
        &w.measure_latency,
        &w.enable_sni,
        &w.insufficient_data_health_status,
        &w.alarm_identifier,
        &w.routing_control_arn,
    );
    let kind = match w.kind.as_str() {
        "HTTP" => CheckKind::Http,
        "HTTPS" => CheckKind::Https,
        "HTTP_STR_MATCH" => CheckKind::HttpStrMatch,
        "HTTPS_STR_MATCH" => CheckKind::HttpsStrMatch,
        "TCP" => CheckKind::Tcp,
        "CALCULATED" => CheckKind::Calculated,
        other => {
            return Err(field(
                "Type",
                format!(
                    "{other:?} is not HTTP, HTTPS, HTTP_STR_MATCH, HTTPS_STR_MATCH, TCP or CALCULATED"
                ),
            ));
        }
    };
    let interval = w.request_interval.unwrap_or(30);
    if !(REQUEST_INTERVAL_MIN_S..=REQUEST_INTERVAL_MAX_S).contains(&interval) {
        return Err(field(
            "RequestInterval",
            format!("{interval} is outside {REQUEST_INTERVAL_MIN_S}..={REQUEST_INTERVAL_MAX_S} s"),
        ));
    }
    let threshold = |name, v: Option<u32>, default| {
        let v = v.unwrap_or(default);
        if (1..=THRESHOLD_MAX).contains(&v) {
            Ok(v)
        } else {
            Err(field(name, format!("{v} is outside 1..={THRESHOLD_MAX}")))
        }
    };
    let failure_threshold = threshold("FailureThreshold", w.failure_threshold, 3)?;
    let recovery_threshold =
        threshold("RecoveryThreshold", w.recovery_threshold, failure_threshold)?;
    let timeout_ms = w.timeout_ms.unwrap_or(2000.min(interval * 1000));
    if timeout_ms == 0 || timeout_ms > TIMEOUT_MAX_MS || timeout_ms > interval * 1000 {
        return Err(field(
            "TimeoutMs",
            format!("{timeout_ms} must be 1..={TIMEOUT_MAX_MS} and no more than the interval"),
        ));
    }
    let ip = match &w.ip_address {
        Some(a) => Some(
            a.parse::<IpAddr>()
                .map_err(|_| field("IPAddress", format!("{a:?} is not an address")))?,
        ),
        None => None,
    };
    let children = w.child_health_checks.clone().unwrap_or_default();
    if kind == CheckKind::Calculated {
        if children.is_empty() || children.len() > CHILD_CHECKS_MAX {
            return Err(field(
                "ChildHealthChecks",
                format!("a CALCULATED check has 1 to {CHILD_CHECKS_MAX} children"),
            ));
        }
    } else {
        if ip.is_none() && w.fully_qualified_domain_name.is_none() {
            return Err(field(
                "IPAddress",
                "give IPAddress, FullyQualifiedDomainName (resolved before each probe), or both",
            ));
        }
        if !children.is_empty() {
            return Err(field(
                "ChildHealthChecks",
                "only a CALCULATED check has children",
            ));
        }
    }
    let port = match (w.port, kind) {
        (Some(p), _) if (1..=65535).contains(&p) => p as u16,
        (Some(p), _) => return Err(field("Port", format!("{p} is not a port"))),
        (None, CheckKind::Https | CheckKind::HttpsStrMatch) => 443,
        (None, CheckKind::Calculated) => 0,
        (None, CheckKind::Tcp) => return Err(field("Port", "a TCP check needs a Port")),
        (None, _) => 80,
    };
    let resource_path = w.resource_path.clone().unwrap_or_else(|| "/".into());
    if !resource_path.starts_with('/')
        || resource_path.len() > TEXT_BYTES_MAX
        || resource_path
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err(field(
            "ResourcePath",
            "must start with / and be up to 255 printable characters",
        ));
    }
    let str_match = matches!(kind, CheckKind::HttpStrMatch | CheckKind::HttpsStrMatch);
    match &w.search_string {
        None if str_match => return Err(field("SearchString", "required for *_STR_MATCH")),
        Some(s) if s.is_empty() || s.len() > TEXT_BYTES_MAX => {
            return Err(field("SearchString", "1 to 255 bytes"));
        }
        _ => {}
    }
    let pops = w.pops.clone().unwrap_or_default();
    if pops.len() > CHECK_POPS_MAX {
        return Err(field("Pops", format!("at most {CHECK_POPS_MAX}")));
    }
    let healthy_quorum = w.healthy_quorum.unwrap_or(HEALTHY_QUORUM_DEFAULT);
    if !(0.0..1.0).contains(&healthy_quorum) {
        return Err(field("HealthyQuorum", "a fraction in [0, 1)"));
    }
    let mut expected_status = Vec::new();
    for s in w.expected_status.clone().unwrap_or_default() {
        let (a, b) = s.split_once('-').unwrap_or((&s, &s));
        let (a, b) = (a.trim().parse::<u16>().ok(), b.trim().parse::<u16>().ok());
        match (a, b) {
            (Some(a), Some(b)) if (100..=599).contains(&a) && a <= b && b <= 599 => {
                expected_status.push((a, b))
            }
            _ => {
                return Err(field(
                    "ExpectedStatus",
                    format!("{s:?} is not CODE or CODE-CODE"),
                ));
            }
        }
    }
    if expected_status.is_empty() {
        expected_status.push((200, 399));
    }
    if let Some(f) = &w.fully_qualified_domain_name
        && !is_host_name(f)
    {
        return Err(field(
            "FullyQualifiedDomainName",
            format!("{f:?} is not a host name (letters, digits, '-', '_'; labels of 1-63)"),
        ));
    }
    let verify_certificate = w.verify_certificate.unwrap_or(false);
    if verify_certificate && (!kind.uses_tls() || w.fully_qualified_domain_name.is_none()) {
        return Err(field(
            "VerifyCertificate",
            "applies to HTTPS checks with a FullyQualifiedDomainName (the name to validate)",
        ));
    }
    let health_threshold = w.health_threshold.unwrap_or(children.len() as u32);
    Ok(HealthCheckSpec {
        kind,
        ip,
        port,
        resource_path,
        fqdn: w.fully_qualified_domain_name.clone(),
        search_string: w.search_string.clone(),
        request_interval_ms: interval * 1000,
        failure_threshold,
        recovery_threshold,
        timeout_ms,
        inverted: w.inverted.unwrap_or(false),
        disabled: w.disabled.unwrap_or(false),
        children,
        health_threshold,
        pops,
        healthy_quorum,
        expected_status,
        verify_certificate,
    })
}

/// One POP's view of a check: its verdict with hysteresis and the last result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PopView {
    /// `None` until the POP has reached a threshold either way.
    pub healthy: Option<bool>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last_ok: bool,
    pub last_rtt_ms: u32,
    pub last_detail: String,
    pub last_ms: u64,
    /// RTT of successful probes, smoothed (EWMA, 1/4 weight to each new sample); 0: none yet.
    #[serde(default)]
    pub smoothed_rtt_ms: u32,
}

impl PopView {
    /// Feeds one probe result; returns whether the view's verdict changed.
    pub fn observe(
        &mut self,
        spec: &HealthCheckSpec,
        ok: bool,
        rtt_ms: u32,
        detail: &str,
        at_ms: u64,
    ) -> bool {
        self.last_ok = ok;
        self.last_rtt_ms = rtt_ms;
        self.last_detail = detail.chars().take(200).collect();
        self.last_ms = at_ms;
        let before = self.healthy;
        if ok {
            self.smoothed_rtt_ms = if self.smoothed_rtt_ms == 0 {
                rtt_ms.max(1)
            } else {
                ((u64::from(self.smoothed_rtt_ms) * 3 + u64::from(rtt_ms)) / 4).max(1) as u32
            };
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
            if self.consecutive_successes >= spec.recovery_threshold
                || (self.healthy.is_none() && self.consecutive_successes >= 1)
            {
                self.healthy = Some(true);
            }
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_successes = 0;
            if self.consecutive_failures >= spec.failure_threshold {
                self.healthy = Some(false);
            }
        }
        self.healthy != before
    }
}

/// The check's status from its POPs' views: healthy when the healthy fraction of POPs with a
/// verdict is more than the quorum; `None` while no POP has one. Inverted flips it; a disabled
/// check is healthy (Route 53).
pub fn status_by_quorum(spec: &HealthCheckSpec, views: &BTreeMap<String, PopView>) -> Option<bool> {
    if spec.disabled {
        return Some(true);
    }
    let decided: Vec<bool> = views.values().filter_map(|v| v.healthy).collect();
    if decided.is_empty() {
        return None;
    }
    let healthy = decided.iter().filter(|h| **h).count() as f64;
    let up = healthy / decided.len() as f64 > spec.healthy_quorum;
    Some(up != spec.inverted)
}

/// A calculated check: healthy when at least `health_threshold` children are (a child without
/// a status counts as healthy, as Route 53 treats a check with no data).
pub fn calculated_status(spec: &HealthCheckSpec, child: impl Fn(&str) -> Option<bool>) -> bool {
    if spec.disabled {
        return true;
    }
    let healthy = spec
        .children
        .iter()
        .filter(|c| child(c).unwrap_or(true))
        .count() as u32;
    (healthy >= spec.health_threshold) != spec.inverted
}

/// Whether an HTTP response passes: status in the expected ranges and, for string matching,
/// `search` within the first [`SEARCH_BYTES_MAX`] bytes of the body.
pub fn http_passes(spec: &HealthCheckSpec, status: u16, body_start: &[u8]) -> bool {
    if !spec
        .expected_status
        .iter()
        .any(|(a, b)| (*a..=*b).contains(&status))
    {
        return false;
    }
    match &spec.search_string {
        Some(s)
            if matches!(
                spec.kind,
                CheckKind::HttpStrMatch | CheckKind::HttpsStrMatch
            ) =>
        {
            let body = &body_start[..body_start.len().min(SEARCH_BYTES_MAX)];
            body.windows(s.len()).any(|w| w == s.as_bytes())
        }
        _ => true,
    }
}
