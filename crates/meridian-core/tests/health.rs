//! Health checks: Route 53 HealthCheckConfig parsing with our extensions, per-POP verdicts
//! with failure and recovery thresholds (hysteresis), status by quorum, calculated checks,
//! HTTP pass rules.

use std::collections::BTreeMap;

use meridian_core::health::{
    CheckKind, PopView, calculated_status, http_passes, parse_config, status_by_quorum,
};

#[test]
fn route53_configs_parse_with_defaults_and_extensions() {
    let s = parse_config(
        r#"{"Type": "HTTP", "IPAddress": "192.0.2.10", "ResourcePath": "/health",
            "RequestInterval": 10, "FailureThreshold": 3}"#,
    )
    .unwrap();
    assert_eq!(s.kind, CheckKind::Http);
    assert_eq!(s.port, 80);
    assert_eq!(s.request_interval_ms, 10_000);
    assert_eq!((s.failure_threshold, s.recovery_threshold), (3, 3));
    assert_eq!(s.expected_status, vec![(200, 399)]);
    assert!((s.healthy_quorum - 0.18).abs() < 1e-9);
    // Wrapped as Route 53's CLI input, YAML, our extensions.
    let s = parse_config(
        "HealthCheckConfig:\n  Type: TCP\n  IPAddress: 127.0.0.1\n  Port: 9\n  RequestInterval: 1\n  FailureThreshold: 2\n  RecoveryThreshold: 4\n  TimeoutMs: 300\n  Pops: [fra, iad, sin]\n  HealthyQuorum: 0.5\n",
    )
    .unwrap();
    assert_eq!(s.kind, CheckKind::Tcp);
    assert_eq!((s.failure_threshold, s.recovery_threshold), (2, 4));
    assert_eq!(s.pops, vec!["fra", "iad", "sin"]);
    let c = parse_config(
        r#"{"Type": "CALCULATED", "ChildHealthChecks": ["a", "b", "c"], "HealthThreshold": 2}"#,
    )
    .unwrap();
    assert_eq!(c.health_threshold, 2);
    let v = parse_config(
        r#"{"Type": "HTTPS", "IPAddress": "192.0.2.1", "FullyQualifiedDomainName": "api.example.com", "VerifyCertificate": true}"#,
    )
    .unwrap();
    assert!(v.verify_certificate);
    assert_eq!(v.port, 443);
    for (bad, field) in [
        (
            r#"{"Type": "HTTP", "IPAddress": "192.0.2.1", "VerifyCertificate": true}"#,
            "VerifyCertificate",
        ),
        (
            r#"{"Type": "HTTPS", "IPAddress": "192.0.2.1", "VerifyCertificate": true}"#,
            "VerifyCertificate",
        ),
        (r#"{"Type": "PING", "IPAddress": "192.0.2.1"}"#, "Type"),
        (r#"{"Type": "TCP", "IPAddress": "192.0.2.1"}"#, "Port"),
        (
            r#"{"Type": "HTTP", "IPAddress": "192.0.2.1", "RequestInterval": 61}"#,
            "RequestInterval",
        ),
        (
            r#"{"Type": "HTTP", "IPAddress": "192.0.2.1", "FailureThreshold": 11}"#,
            "FailureThreshold",
        ),
        (
            r#"{"Type": "HTTP_STR_MATCH", "IPAddress": "192.0.2.1"}"#,
            "SearchString",
        ),
        (r#"{"Type": "HTTP", "IPAddress": "nope"}"#, "IPAddress"),
        (r#"{"Type": "CALCULATED"}"#, "ChildHealthChecks"),
        (r#"{"Type": "TCP", "Port": 80}"#, "IPAddress"),
        (
            r#"{"Type": "HTTP", "FullyQualifiedDomainName": "a b\r\nX: y"}"#,
            "FullyQualifiedDomainName",
        ),
        (
            r#"{"Type": "HTTP", "IPAddress": "192.0.2.1", "ResourcePath": "x"}"#,
            "ResourcePath",
        ),
        (
            r#"{"Type": "HTTP", "IPAddress": "192.0.2.1", "Bogus": 1}"#,
            "Bogus",
        ),
    ] {
        let e = parse_config(bad).unwrap_err().to_string();
        assert!(e.contains(field), "{bad}: {e}");
    }
}

#[test]
fn a_name_alone_is_an_endpoint() {
    let spec = parse_config(
        r#"{"Type": "HTTPS", "FullyQualifiedDomainName": "api.example.com.", "VerifyCertificate": true}"#,
    )
    .unwrap();
    assert_eq!(spec.ip, None);
    assert_eq!(spec.fqdn.as_deref(), Some("api.example.com."));
    assert_eq!(spec.port, 443);
}

#[test]
fn pop_views_need_consecutive_results_both_ways() {
    let spec = parse_config(
        r#"{"Type": "TCP", "IPAddress": "127.0.0.1", "Port": 1, "RequestInterval": 1,
            "FailureThreshold": 2, "RecoveryThreshold": 3}"#,
    )
    .unwrap();
    let mut v = PopView::default();
    // The first success decides (no data → healthy at once).
    assert!(v.observe(&spec, true, 1, "ok", 0));
    assert_eq!(v.healthy, Some(true));
    // One failure is not enough; two are.
    assert!(!v.observe(&spec, false, 0, "refused", 1));
    assert!(v.observe(&spec, false, 0, "refused", 2));
    assert_eq!(v.healthy, Some(false));
    // A flapping endpoint (success, failure, …) never recovers: hysteresis.
    for i in 0..20 {
        v.observe(&spec, i % 2 == 0, 0, "", 3 + i);
        assert_eq!(v.healthy, Some(false));
    }
    // Three successes in a row recover it.
    assert!(!v.observe(&spec, true, 0, "", 30));
    assert!(!v.observe(&spec, true, 0, "", 31));
    assert!(v.observe(&spec, true, 0, "", 32));
    assert_eq!(v.healthy, Some(true));
}

#[test]
fn status_is_decided_by_quorum_of_pops() {
    let spec = parse_config(r#"{"Type": "TCP", "IPAddress": "127.0.0.1", "Port": 1}"#).unwrap();
    let view = |h: Option<bool>| PopView {
        healthy: h,
        ..PopView::default()
    };
    let mut views = BTreeMap::new();
    assert_eq!(status_by_quorum(&spec, &views), None, "no data yet");
    views.insert("fra".to_string(), view(Some(false)));
    views.insert("iad".to_string(), view(Some(false)));
    views.insert("sin".to_string(), view(None));
    assert_eq!(status_by_quorum(&spec, &views), Some(false));
    // One of three healthy is 33% > 18%: healthy (Route 53's rule).
    views.insert("sin".to_string(), view(Some(true)));
    assert_eq!(status_by_quorum(&spec, &views), Some(true));
    let strict = parse_config(
        r#"{"Type": "TCP", "IPAddress": "127.0.0.1", "Port": 1, "HealthyQuorum": 0.5}"#,
    )
    .unwrap();
    assert_eq!(status_by_quorum(&strict, &views), Some(false));
    let inverted = parse_config(
        r#"{"Type": "TCP", "IPAddress": "127.0.0.1", "Port": 1, "HealthyQuorum": 0.5, "Inverted": true}"#,
    )
    .unwrap();
    assert_eq!(status_by_quorum(&inverted, &views), Some(true));
    let disabled = parse_config(
        r#"{"Type": "TCP", "IPAddress": "127.0.0.1", "Port": 1, "Disabled": true, "HealthyQuorum": 0.5}"#,
    )
    .unwrap();
    assert_eq!(status_by_quorum(&disabled, &views), Some(true));
}

#[test]
fn calculated_checks_count_healthy_children() {
    let c = parse_config(
        r#"{"Type": "CALCULATED", "ChildHealthChecks": ["a", "b", "c"], "HealthThreshold": 2}"#,
    )
    .unwrap();
    let states = |a, b, c| {
        move |id: &str| match id {
            "a" => a,
            "b" => b,
            _ => c,
        }
    };
    assert!(calculated_status(
        &c,
        states(Some(true), Some(true), Some(false))
    ));
    assert!(!calculated_status(
        &c,
        states(Some(true), Some(false), Some(false))
    ));
    // No data counts as healthy.
    assert!(calculated_status(&c, states(None, Some(false), None)));
}

#[test]
fn http_passes_on_status_and_search_string() {
    let s = parse_config(
        r#"{"Type": "HTTP_STR_MATCH", "IPAddress": "127.0.0.1", "SearchString": "ready"}"#,
    )
    .unwrap();
    assert!(http_passes(&s, 200, b"status: ready"));
    assert!(!http_passes(&s, 200, b"status: starting"));
    assert!(!http_passes(&s, 500, b"ready"));
    // Route 53 searches only the first 5,120 bytes.
    let mut body = vec![b'x'; 5200];
    body.extend_from_slice(b"ready");
    assert!(!http_passes(&s, 200, &body));
    let codes = parse_config(
        r#"{"Type": "HTTP", "IPAddress": "127.0.0.1", "ExpectedStatus": ["200", "204-206"]}"#,
    )
    .unwrap();
    assert!(http_passes(&codes, 205, b""));
    assert!(!http_passes(&codes, 301, b""));
}
