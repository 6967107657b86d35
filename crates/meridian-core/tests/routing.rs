//! Routing policies through the whole pure core: Route 53 ChangeBatch files as they are
//! (tests/policy/batches), validation of groups (one error per rule), and golden answers of the
//! compiled zone per policy given health, ECS, client address and POP RTTs — with the ECS scope.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use meridian_core::catalog::RoutingState;
use meridian_core::change::{ChangeError, Mutation, RecordSet, ZoneState, apply_batch};
use meridian_core::change::{batch_warnings, parse_change_batch};
use meridian_core::policy::{CidrBlock, Coordinates, GeoLookup, Location};
use meridian_core::routed::{self, ROUTED_TTL};
use meridian_core::{
    Catalog, Name, Outcome, RType, Record, Scratch, ServerConfig, Zone, respond, zonefile,
};

/// Record sets in memory, with the health checks and CIDR collections that exist.
#[derive(Clone)]
struct MemZone {
    origin: Name,
    sets: BTreeMap<(Name, RType), RecordSet>,
    checks: BTreeSet<String>,
    collections: BTreeSet<String>,
}

impl ZoneState for MemZone {
    fn origin(&self) -> &Name {
        &self.origin
    }
    fn get(&self, name: &Name, rtype: RType) -> Option<RecordSet> {
        self.sets.get(&(name.clone(), rtype)).cloned()
    }
    fn types_at(&self, name: &Name) -> Vec<RType> {
        let mut v: Vec<RType> = self
            .sets
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .collect();
        v.dedup();
        v
    }
    fn record_set_count(&self) -> usize {
        self.sets.len()
    }
    fn record_count(&self) -> usize {
        self.sets.values().map(|s| s.rdatas.len()).sum()
    }
    fn record_sets_below(&self, name: &Name) -> usize {
        self.sets
            .keys()
            .filter(|(n, _)| n != name && n.is_subdomain_of(name))
            .count()
    }
    fn health_check_exists(&self, id: &str) -> bool {
        self.checks.contains(id)
    }
    fn cidr_collection_exists(&self, name: &str) -> bool {
        self.collections.contains(name)
    }
}

const BASE: &str = "$TTL 300
@ SOA ns1 hostmaster 1 7200 900 1209600 300
@ NS ns1
ns1 A 192.0.2.53
";

impl MemZone {
    fn new(origin: &str) -> MemZone {
        let origin = Name::parse(origin, None).unwrap();
        let mut sets: BTreeMap<(Name, RType), RecordSet> = BTreeMap::new();
        for r in zonefile::parse(BASE, &origin, None).unwrap() {
            let name = r.owner.to_lowercase();
            sets.entry((name.clone(), r.rtype))
                .or_insert_with(|| RecordSet {
                    name,
                    rtype: r.rtype,
                    ttl: r.ttl,
                    rdatas: Vec::new(),
                    set_identifier: None,
                    policy: None,
                    health_check: None,
                    alias: None,
                    fail_closed: false,
                })
                .rdatas
                .push(r.rdata);
        }
        MemZone {
            origin,
            sets,
            checks: BTreeSet::new(),
            collections: BTreeSet::new(),
        }
    }

    fn apply_text(&mut self, text: &str) -> Result<(), ChangeError> {
        let batch = parse_change_batch(text, &self.origin)?;
        for m in apply_batch(self, &batch)? {
            match m {
                Mutation::Put(set) => {
                    self.sets.insert((set.name.clone(), set.rtype), set);
                }
                Mutation::Remove { name, rtype } => {
                    self.sets.remove(&(name, rtype));
                }
            }
        }
        Ok(())
    }

    fn zone(&self) -> Zone {
        let records: Vec<Record> = self
            .sets
            .values()
            .flat_map(|s| {
                s.rdatas.iter().map(|rd| Record {
                    owner: s.name.clone(),
                    rtype: s.rtype,
                    ttl: s.ttl,
                    rdata: rd.clone(),
                })
            })
            .collect();
        Zone::build(&self.origin, records).unwrap()
    }
}

/// The policy test zone with the checks and collection tests/policy/batches name.
fn policy_zone() -> MemZone {
    let mut z = MemZone::new("policy.test.");
    for hc in [
        "HC_PRIMARY",
        "HC_SECONDARY",
        "HC_WEIGHTED",
        "HC_MV1",
        "HC_MV2",
        "HC_MV3",
        "HC_MV4",
        "HC_LAT",
        "HC_GEO",
        "HC_COMP_EU",
        "HC_COMP_DEFAULT",
    ] {
        z.checks.insert(hc.to_string());
    }
    z.collections.insert("office-nets".into());
    z
}

fn batch_file(name: &str) -> String {
    let path = format!(
        "{}/../../tests/policy/batches/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every placeholder health check id a batch file names (`"HealthCheckId": "HC_…"`).
fn placeholders(text: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let mut out = Vec::new();
    for c in v["Changes"].as_array().unwrap() {
        if let Some(id) = c["ResourceRecordSet"]["HealthCheckId"].as_str() {
            out.push(id.to_string());
        }
    }
    out
}

#[test]
fn route53_batch_files_are_accepted_as_they_are() {
    let mut z = policy_zone();
    for file in [
        "weighted",
        "failover",
        "multivalue",
        "latency",
        "geolocation",
        "geoproximity",
        "cidr",
        "alias",
        "composition",
    ] {
        let text = batch_file(file);
        for id in placeholders(&text) {
            z.checks.insert(id);
        }
        z.apply_text(&text)
            .unwrap_or_else(|e| panic!("{file}.json refused: {e}"));
    }
    // Each group is one routed RRset; the zone compiles with all of them.
    let www = z.get(&Name::parse("www.policy.test.", None).unwrap(), RType::A);
    assert_eq!(www.map(|s| s.ttl), Some(ROUTED_TTL));
    z.zone();
}

/// A geo database of a few networks (the same layout the e2e test database has).
struct TestGeo;

impl GeoLookup for TestGeo {
    fn locate(&self, ip: IpAddr) -> Option<Location<&str>> {
        let IpAddr::V4(v4) = ip else {
            return None;
        };
        let at = |continent, country, subdivision, latitude, longitude| Location {
            continent: Some(continent),
            country: Some(country),
            subdivision,
            coordinates: Some(Coordinates {
                latitude,
                longitude,
            }),
        };
        match v4.octets() {
            [198, 51, 100, _] => Some(at("EU", "DE", Some("BE"), 52.52, 13.40)),
            [203, 0, 113, _] => Some(at("NA", "US", Some("WA"), 47.61, -122.33)),
            [192, 0, 2, _] => Some(at("OC", "AU", Some("NSW"), -33.87, 151.21)),
            [127, _, _, _] => Some(at("NA", "US", Some("NY"), 40.71, -74.01)),
            _ => None,
        }
    }
}

struct Server {
    catalog: Catalog,
    config: ServerConfig,
    scratch: Scratch,
}

impl Server {
    fn new(zone: &MemZone, routing: RoutingState) -> Server {
        let mut catalog = Catalog::new();
        catalog.insert(Arc::new(zone.zone())).unwrap();
        catalog.set_routing(Arc::new(routing));
        Server {
            catalog,
            config: ServerConfig {
                geo: Some(Arc::new(TestGeo)),
                region_rtt_ms: vec![
                    ("us-east-1".into(), 90),
                    ("eu-west-1".into(), 12),
                    ("ap-southeast-2".into(), 250),
                ],
                ..ServerConfig::default()
            },
            scratch: Scratch::default(),
        }
    }

    /// The answer's rendered lines (support::render), from `client`.
    fn ask(&mut self, qname: &str, opts: &str, client: &str) -> String {
        let (packet, transport) = support::query(qname, "A", opts);
        let mut out = vec![0u8; 65535];
        match respond(
            &self.catalog,
            &self.config,
            &packet,
            transport,
            client.parse().unwrap(),
            &mut self.scratch,
            &mut out,
        ) {
            Outcome::Reply { len, .. } => support::render(&out[..len]),
            Outcome::Drop => "DROP".into(),
        }
    }

    /// The A records of the answer section.
    fn addresses(&mut self, qname: &str, opts: &str, client: &str) -> Vec<String> {
        let text = self.ask(qname, opts, client);
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("an ") && l.contains(" A "))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .collect();
        v.sort();
        v
    }
}

fn health(verdicts: &[(&str, bool)]) -> RoutingState {
    RoutingState {
        health: verdicts.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        ..RoutingState::default()
    }
}

fn batch(changes: &[serde_json::Value]) -> String {
    serde_json::json!({ "Changes": changes }).to_string()
}

fn rrs(name: &str, extra: serde_json::Value, values: &[&str]) -> serde_json::Value {
    let mut set = serde_json::json!({
        "Name": name, "Type": "A", "TTL": 60,
        "ResourceRecords": values.iter().map(|v| serde_json::json!({"Value": v})).collect::<Vec<_>>(),
    });
    for (k, v) in extra.as_object().unwrap() {
        set[k] = v.clone();
    }
    serde_json::json!({"Action": "CREATE", "ResourceRecordSet": set})
}

#[test]
fn failover_follows_health_fails_open_or_closed() {
    let mut z = policy_zone();
    z.apply_text(&batch(&[
        rrs(
            "fo",
            serde_json::json!({"SetIdentifier": "p", "Failover": "PRIMARY", "HealthCheckId": "HC_PRIMARY"}),
            &["10.0.0.1"],
        ),
        rrs(
            "fo",
            serde_json::json!({"SetIdentifier": "s", "Failover": "SECONDARY", "HealthCheckId": "HC_SECONDARY"}),
            &["10.0.0.2"],
        ),
        rrs(
            "closed",
            serde_json::json!({"SetIdentifier": "p", "Failover": "PRIMARY", "HealthCheckId": "HC_PRIMARY", "FailClosed": true}),
            &["10.0.1.1"],
        ),
        rrs(
            "closed",
            serde_json::json!({"SetIdentifier": "s", "Failover": "SECONDARY", "HealthCheckId": "HC_SECONDARY", "FailClosed": true}),
            &["10.0.1.2"],
        ),
    ]))
    .unwrap();
    let case = |verdicts: &[(&str, bool)], name: &str| {
        Server::new(&z, health(verdicts)).addresses(
            &format!("{name}.policy.test."),
            "",
            "127.0.0.1",
        )
    };
    assert_eq!(case(&[], "fo"), ["10.0.0.1"]);
    assert_eq!(case(&[("HC_PRIMARY", false)], "fo"), ["10.0.0.2"]);
    // Both down: Route 53 fails open (the primary answers) …
    let both = [("HC_PRIMARY", false), ("HC_SECONDARY", false)];
    assert_eq!(case(&both, "fo"), ["10.0.0.1"]);
    // … unless the sets say fail-closed: NODATA, with the SOA.
    let mut s = Server::new(&z, health(&both));
    let text = s.ask("closed.policy.test.", "", "127.0.0.1");
    assert!(text.contains("NOERROR"), "{text}");
    assert!(!text.contains("\nan "), "{text}");
    assert!(text.contains("ns policy.test. 300 IN SOA"), "{text}");
    // The answer carries the variant's TTL, never the internal marker.
    let text = Server::new(&z, health(&[])).ask("fo.policy.test.", "", "127.0.0.1");
    assert!(
        text.contains("an fo.policy.test. 60 IN A 10.0.0.1"),
        "{text}"
    );
}

#[test]
fn weighted_shares_follow_weights_and_health() {
    let mut z = policy_zone();
    z.apply_text(&batch(&[
        rrs(
            "w",
            serde_json::json!({"SetIdentifier": "a", "Weight": 1}),
            &["10.1.0.1"],
        ),
        rrs(
            "w",
            serde_json::json!({"SetIdentifier": "b", "Weight": 3, "HealthCheckId": "HC_PRIMARY"}),
            &["10.1.0.2"],
        ),
        rrs(
            "w",
            serde_json::json!({"SetIdentifier": "z", "Weight": 0}),
            &["10.1.0.9"],
        ),
    ]))
    .unwrap();
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let mut s = Server::new(&z, health(&[]));
    for _ in 0..4000 {
        for a in s.addresses("w.policy.test.", "", "127.0.0.1") {
            *counts.entry(a).or_default() += 1;
        }
    }
    let b = counts.get("10.1.0.2").copied().unwrap_or(0);
    assert!((2800..3200).contains(&b), "{counts:?}");
    assert!(
        !counts.contains_key("10.1.0.9"),
        "weight 0 answered: {counts:?}"
    );
    // b unhealthy: a takes everything; weight 0 still only when no non-zero set is usable.
    let mut s = Server::new(&z, health(&[("HC_PRIMARY", false)]));
    for _ in 0..200 {
        assert_eq!(s.addresses("w.policy.test.", "", "127.0.0.1"), ["10.1.0.1"]);
    }
}

#[test]
fn geolocation_by_ecs_with_scope_else_by_resolver() {
    let mut z = policy_zone();
    z.apply_text(&batch_file("geolocation")).unwrap();
    z.apply_text(&batch(&[rrs(
        "plain",
        serde_json::json!({}),
        &["10.9.9.9"],
    )]))
    .unwrap();
    let mut s = Server::new(&z, health(&[]));
    let eu = s.ask("geo.policy.test.", "ecs=198.51.100.0/24", "127.0.0.1");
    let us = s.ask("geo.policy.test.", "ecs=203.0.113.0/24", "127.0.0.1");
    let au = s.ask("geo.policy.test.", "ecs=192.0.2.0/24", "127.0.0.1");
    let resolver = s.ask("geo.policy.test.", "", "127.0.0.1");
    let unknown = s.ask("geo.policy.test.", "ecs=10.0.0.0/8", "127.0.0.1");
    let expected = |text: &str| -> String {
        text.lines()
            .filter(|l| l.starts_with("an "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Each answer differs and is the batch's set for that place.
    let answers = [&eu, &us, &au, &resolver, &unknown].map(|t| expected(t));
    for (i, a) in answers.iter().enumerate() {
        assert!(!a.is_empty(), "answer {i} empty");
    }
    assert_ne!(answers[0], answers[1]);
    assert_ne!(answers[1], answers[2]);
    // The scope is the client's prefix when location chose the answer …
    assert!(eu.contains("ecs:1/24/24"), "{eu}");
    assert!(unknown.contains("ecs:1/8/8"), "{unknown}");
    // … 0 for an answer that does not depend on the client, and no ECS without ECS.
    let plain = s.ask("plain.policy.test.", "ecs=198.51.100.0/24", "127.0.0.1");
    assert!(plain.contains("ecs:1/24/0"), "{plain}");
    assert!(!resolver.contains("ecs:"), "{resolver}");
    // ECS /0: tailor by the resolver's address, scope 0 (RFC 7871 §7.1.2).
    let zero = s.ask("geo.policy.test.", "ecs=0.0.0.0/0", "203.0.113.7");
    assert_eq!(expected(&zero), expected(&us));
    assert!(zero.contains("ecs:1/0/0"), "{zero}");
    // Malformed ECS (bits past the prefix): FORMERR.
    let bad = s.ask("geo.policy.test.", "ecs=198.51.101.0/23", "127.0.0.1");
    assert!(bad.contains("FORMERR"), "{bad}");
}

#[test]
fn latency_geoproximity_and_ip_based() {
    let mut z = policy_zone();
    z.apply_text(&batch_file("latency")).unwrap();
    z.apply_text(&batch(&[
        rrs(
            "prox",
            serde_json::json!({"SetIdentifier": "berlin", "GeoProximityLocation": {"Coordinates": {"Latitude": "52.52", "Longitude": "13.40"}}}),
            &["10.3.0.1"],
        ),
        rrs(
            "prox",
            serde_json::json!({"SetIdentifier": "virginia", "GeoProximityLocation": {"AWSRegion": "us-east-1"}}),
            &["10.3.0.2"],
        ),
        rrs(
            "nets",
            serde_json::json!({"SetIdentifier": "office", "CidrRoutingConfig": {"CollectionId": "office-nets", "LocationName": "berlin"}}),
            &["10.4.0.1"],
        ),
        rrs(
            "nets",
            serde_json::json!({"SetIdentifier": "rest", "CidrRoutingConfig": {"CollectionId": "office-nets", "LocationName": "*"}}),
            &["10.4.0.9"],
        ),
    ]))
    .unwrap();
    let mut routing = health(&[]);
    routing.cidr.insert(
        "office-nets".into(),
        vec![CidrBlock {
            network: "198.51.100.0".parse().unwrap(),
            prefix_len: 25,
            location: "berlin".into(),
        }],
    );
    let mut s = Server::new(&z, routing);
    // Latency: eu-west-1 has the lowest RTT from this POP (12 ms).
    let lat = s.ask("lat.policy.test.", "", "127.0.0.1");
    let eu_line = lat
        .lines()
        .find(|l| l.starts_with("an "))
        .unwrap()
        .to_string();
    let eu_set = z
        .get(&Name::parse("lat.policy.test.", None).unwrap(), RType::A)
        .unwrap();
    let variants = routed::to_record_sets(&eu_set.name, RType::A, &eu_set.rdatas);
    let eu = variants
        .iter()
        .find(|v| {
            matches!(&v.policy, Some(meridian_core::policy::Policy::Latency { region }) if region == "eu-west-1")
        })
        .unwrap();
    let eu_addr = meridian_core::rdata::rdata_to_text(RType::A, &eu.rdatas[0]);
    assert!(eu_line.ends_with(&eu_addr), "{lat}");
    // Geoproximity: Berlin client → Berlin; New York (the resolver) → us-east-1.
    assert_eq!(
        s.addresses("prox.policy.test.", "ecs=198.51.100.0/24", "127.0.0.1"),
        ["10.3.0.1"]
    );
    assert_eq!(
        s.addresses("prox.policy.test.", "", "127.0.0.1"),
        ["10.3.0.2"]
    );
    // IP-based: longest prefix in the collection, else the default location.
    assert_eq!(
        s.addresses("nets.policy.test.", "ecs=198.51.100.0/25", "127.0.0.1"),
        ["10.4.0.1"]
    );
    assert_eq!(
        s.addresses("nets.policy.test.", "ecs=198.51.100.128/25", "127.0.0.1"),
        ["10.4.0.9"]
    );
    assert_eq!(
        s.addresses("nets.policy.test.", "", "198.51.100.3"),
        ["10.4.0.1"]
    );
}

#[test]
fn alias_and_policy_trees() {
    let mut z = policy_zone();
    for f in ["weighted", "alias", "composition"] {
        let text = batch_file(f);
        for id in placeholders(&text) {
            z.checks.insert(id);
        }
        z.apply_text(&text).unwrap();
    }
    let mut s = Server::new(&z, health(&[]));
    // The apex alias answers the target's records under the apex name.
    let apex = s.ask("policy.test.", "", "127.0.0.1");
    assert!(
        apex.lines()
            .any(|l| l.starts_with("an policy.test. 60 IN A ")),
        "{apex}"
    );
    // The tree answers a leaf's record for every client.
    for ecs in ["198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24"] {
        let text = s.ask("app.policy.test.", &format!("ecs={ecs}"), "127.0.0.1");
        assert!(
            text.lines().any(|l| l.starts_with("an app.policy.test. ")),
            "{ecs}: {text}"
        );
        assert!(text.contains("/24/24"), "location chose the branch: {text}");
    }
}

#[test]
fn group_validation_names_each_rule() {
    let z = policy_zone();
    let refused = |changes: &[serde_json::Value]| -> String {
        let mut z = z.clone();
        match z.apply_text(&batch(changes)) {
            Ok(()) => panic!("accepted: {changes:?}"),
            Err(e) => e.code().to_string(),
        }
    };
    let fo = |id: &str, role: &str| {
        rrs(
            "x",
            serde_json::json!({"SetIdentifier": id, "Failover": role}),
            &["10.0.0.1"],
        )
    };
    assert_eq!(refused(&[fo("a", "PRIMARY"), fo("b", "PRIMARY")]), "Policy");
    assert_eq!(
        refused(&[
            rrs(
                "x",
                serde_json::json!({"SetIdentifier": "a", "Weight": 1}),
                &["10.0.0.1"]
            ),
            rrs(
                "x",
                serde_json::json!({"SetIdentifier": "b", "MultiValueAnswer": true}),
                &["10.0.0.2"]
            ),
        ]),
        "Policy"
    );
    assert_eq!(
        refused(&[
            rrs(
                "x",
                serde_json::json!({"SetIdentifier": "a", "Weight": 1}),
                &["10.0.0.1"]
            ),
            rrs(
                "x",
                serde_json::json!({"SetIdentifier": "a", "Weight": 2}),
                &["10.0.0.2"]
            ),
        ]),
        "ChangedTwice"
    );
    assert_eq!(
        refused(&[rrs(
            "x",
            serde_json::json!({"SetIdentifier": "a", "Weight": 256}),
            &["10.0.0.1"]
        )]),
        "PolicyFieldInvalid"
    );
    assert_eq!(
        refused(&[rrs(
            "x",
            serde_json::json!({"SetIdentifier": "a", "Weight": 1, "HealthCheckId": "nope"}),
            &["10.0.0.1"]
        )]),
        "HealthCheckUnknown"
    );
    assert_eq!(
        refused(&[rrs(
            "x",
            serde_json::json!({"SetIdentifier": "a", "CidrRoutingConfig": {"CollectionId": "nope", "LocationName": "*"}}),
            &["10.0.0.1"]
        )]),
        "CidrCollectionUnknown"
    );
    assert_eq!(
        refused(&[rrs(
            "x",
            serde_json::json!({"SetIdentifier": "a", "GeoProximityLocation": {"Coordinates": {"Latitude": "1", "Longitude": "2"}, "Bias": 100}}),
            &["10.0.0.1"]
        )]),
        "PolicyFieldInvalid"
    );
    assert_eq!(
        refused(&[rrs("x", serde_json::json!({"Weight": 1}), &["10.0.0.1"])]),
        "PolicyFieldInvalid"
    );
    let alias = |name: &str, target: &str| {
        serde_json::json!({"Action": "CREATE", "ResourceRecordSet": {"Name": name, "Type": "A",
            "AliasTarget": {"HostedZoneId": "Z1", "DNSName": target, "EvaluateTargetHealth": false}}})
    };
    assert_eq!(
        refused(&[alias("x", "missing.policy.test.")]),
        "AliasTargetMissing"
    );
    assert_eq!(
        refused(&[
            alias("ring-a", "ring-b.policy.test."),
            alias("ring-b", "ring-a.policy.test.")
        ]),
        "AliasCycle"
    );
    // A simple set and routed sets cannot share a name and type.
    assert_eq!(
        refused(&[
            rrs("x", serde_json::json!({}), &["10.0.0.1"]),
            rrs(
                "x",
                serde_json::json!({"SetIdentifier": "a", "Weight": 1}),
                &["10.0.0.2"]
            ),
        ]),
        "SimpleAndRouted"
    );
    // NS and SOA cannot be routed.
    let mut ns = rrs(
        "sub",
        serde_json::json!({"SetIdentifier": "a", "Weight": 1}),
        &["ns.example.net."],
    );
    ns["ResourceRecordSet"]["Type"] = "NS".into();
    assert_eq!(refused(&[ns]), "RoutingNotAllowed");
}

#[test]
fn variants_are_changed_one_by_one() {
    let mut z = policy_zone();
    let w = |action: &str, id: &str, weight: u8, value: &str| {
        let mut c = rrs(
            "w",
            serde_json::json!({"SetIdentifier": id, "Weight": weight}),
            &[value],
        );
        c["Action"] = action.into();
        c
    };
    z.apply_text(&batch(&[
        w("CREATE", "a", 1, "10.0.0.1"),
        w("CREATE", "b", 1, "10.0.0.2"),
    ]))
    .unwrap();
    // UPSERT one variant, DELETE another (exact match required), CREATE of an existing one fails.
    z.apply_text(&batch(&[w("UPSERT", "a", 5, "10.0.0.3")]))
        .unwrap();
    assert_eq!(
        z.clone()
            .apply_text(&batch(&[w("DELETE", "b", 2, "10.0.0.2")]))
            .unwrap_err()
            .code(),
        "DeleteMismatch"
    );
    assert_eq!(
        z.clone()
            .apply_text(&batch(&[w("CREATE", "a", 1, "10.0.0.1")]))
            .unwrap_err()
            .code(),
        "VariantExists"
    );
    z.apply_text(&batch(&[w("DELETE", "b", 1, "10.0.0.2")]))
        .unwrap();
    let set = z
        .get(&Name::parse("w.policy.test.", None).unwrap(), RType::A)
        .unwrap();
    let variants = routed::to_record_sets(&set.name, RType::A, &set.rdatas);
    assert_eq!(variants.len(), 1);
    assert_eq!(variants[0].set_identifier.as_deref(), Some("a"));
    // Deleting the last variant removes the set; then a simple set may take its place.
    z.apply_text(&batch(&[w("DELETE", "a", 5, "10.0.0.3")]))
        .unwrap();
    z.apply_text(&batch(&[rrs("w", serde_json::json!({}), &["10.0.0.7"])]))
        .unwrap();
}

#[test]
fn long_ttls_on_failover_and_weighted_sets_draw_a_warning() {
    let text = batch(&[
        {
            let mut c = rrs(
                "w",
                serde_json::json!({"SetIdentifier": "a", "Weight": 1}),
                &["10.0.0.1"],
            );
            c["ResourceRecordSet"]["TTL"] = 300.into();
            c
        },
        rrs(
            "v",
            serde_json::json!({"SetIdentifier": "a", "Weight": 1}),
            &["10.0.0.1"],
        ),
    ]);
    let b = parse_change_batch(&text, &Name::parse("policy.test.", None).unwrap()).unwrap();
    let w = batch_warnings(&b);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("TTL 300"), "{w:?}");
}
