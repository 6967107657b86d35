//! Answering allocates nothing once warm: a counting global allocator proves it for every kind
//! of answer (positive, negative, referral, wildcard, CNAME/DNAME chains, truncation, errors).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use meridian_core::{Outcome, Scratch, ServerConfig, respond};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarding the caller's contract to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is process-wide: tests take turns so one's setup is not counted in another.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn answering_does_not_allocate() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let zone = "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\n@ MX 10 mail\nns1 A 192.0.2.1\nmail A 192.0.2.2\n\
                *.w A 192.0.2.3\nc CNAME mail\nd DNAME w.example.\nsub NS ns.sub\nns.sub A 192.0.2.4\n\
                big TXT \"0123456789012345678901234567890123456789012345678901234567890123456789\"\n\
                big TXT \"1123456789012345678901234567890123456789012345678901234567890123456789\"\n\
                big TXT \"2123456789012345678901234567890123456789012345678901234567890123456789\"\n\
                big TXT \"3123456789012345678901234567890123456789012345678901234567890123456789\"\n\
                big TXT \"4123456789012345678901234567890123456789012345678901234567890123456789\"\n\
                big TXT \"5123456789012345678901234567890123456789012345678901234567890123456789\"\n\
                big TXT \"6123456789012345678901234567890123456789012345678901234567890123456789\"\n";
    let catalog = support::catalog(&[("example.", zone)]);
    let queries: Vec<Vec<u8>> = [
        ("mail.example.", "A", ""),
        ("example.", "MX", "nsid"),
        ("nx.example.", "A", "noedns"),
        ("x.w.example.", "A", "do"),
        ("c.example.", "A", ""),
        ("q.d.example.", "A", ""),
        ("a.sub.example.", "A", ""),
        ("big.example.", "TXT", "noedns"),
        ("mail.example.", "A", "v=1"),
        ("elsewhere.", "A", ""),
        ("id.server.", "TXT", "class=3"),
    ]
    .iter()
    .map(|(n, t, o)| support::query(n, t, o).0)
    .collect();
    let config = ServerConfig {
        identity: b"edge-1".to_vec(),
        ..ServerConfig::default()
    };
    let mut scratch = Scratch::default();
    let mut out = vec![0u8; 65535];
    let mut replies = 0;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..100 {
        for q in &queries {
            if let Outcome::Reply { .. } = respond(
                &catalog,
                &config,
                q,
                meridian_core::Transport::Udp,
                std::net::IpAddr::from([192, 0, 2, 1]),
                &mut scratch,
                &mut out,
            ) {
                replies += 1;
            }
        }
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(replies, 100 * queries.len());
    assert_eq!(after - before, 0, "allocations while answering");
}

/// Where test clients are: static strings, as a database loaded for the process gives them.
struct StaticGeo;

impl meridian_core::policy::GeoLookup for StaticGeo {
    fn locate(&self, ip: std::net::IpAddr) -> Option<meridian_core::policy::Location<&str>> {
        let europe = matches!(ip, std::net::IpAddr::V4(a) if a.octets()[0] == 198);
        Some(meridian_core::policy::Location {
            continent: Some(if europe { "EU" } else { "NA" }),
            country: Some(if europe { "DE" } else { "US" }),
            subdivision: None,
            coordinates: Some(meridian_core::policy::Coordinates {
                latitude: 50.0,
                longitude: if europe { 8.0 } else { -77.0 },
            }),
        })
    }
}

#[test]
fn routed_answers_do_not_allocate() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use meridian_core::change::{AliasTarget, RecordSet};
    use meridian_core::policy::{FailoverRole, GeoKey, Policy};
    use meridian_core::routed::{ROUTED_TTL, encode_variant};
    use meridian_core::{Name, RType, Record, Zone, zonefile};

    let origin = Name::parse("example.", None).unwrap();
    let mut records = zonefile::parse(
        "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n",
        &origin,
        None,
    )
    .unwrap();
    let variant =
        |owner: &str, id: Option<&str>, policy: Option<Policy>, last: u8, alias: Option<&str>| {
            let name = Name::parse(owner, None).unwrap();
            let set = RecordSet {
                name: name.clone(),
                rtype: RType::A,
                ttl: 60,
                rdatas: if alias.is_some() {
                    vec![]
                } else {
                    vec![vec![10, 0, 0, last]]
                },
                set_identifier: id.map(str::to_string),
                policy,
                health_check: Some("hc".into()),
                alias: alias.map(|a| AliasTarget {
                    name: Name::parse(a, None).unwrap(),
                    evaluate_target_health: true,
                }),
                fail_closed: false,
            };
            Record {
                owner: name,
                rtype: RType::A,
                ttl: ROUTED_TTL,
                rdata: encode_variant(&set),
            }
        };
    for (i, w) in [10u8, 0, 30].iter().enumerate() {
        records.push(variant(
            "w.example.",
            Some(&format!("w{i}")),
            Some(Policy::Weighted { weight: *w }),
            i as u8,
            None,
        ));
    }
    records.push(variant(
        "f.example.",
        Some("p"),
        Some(Policy::Failover(FailoverRole::Primary)),
        1,
        None,
    ));
    records.push(variant(
        "f.example.",
        Some("s"),
        Some(Policy::Failover(FailoverRole::Secondary)),
        2,
        None,
    ));
    for (i, key) in [
        GeoKey::Continent("EU".into()),
        GeoKey::Country("US".into()),
        GeoKey::Default,
    ]
    .into_iter()
    .enumerate()
    {
        records.push(variant(
            "g.example.",
            Some(&format!("g{i}")),
            Some(Policy::Geolocation(key)),
            i as u8,
            None,
        ));
    }
    for i in 0..12u8 {
        records.push(variant(
            "m.example.",
            Some(&format!("m{i}")),
            Some(Policy::Multivalue),
            i,
            None,
        ));
    }
    records.push(variant("example.", None, None, 0, Some("g.example.")));
    let mut catalog = meridian_core::Catalog::new();
    catalog
        .insert(std::sync::Arc::new(Zone::build(&origin, records).unwrap()))
        .unwrap();
    let mut routing = meridian_core::catalog::RoutingState::default();
    routing.health.insert("hc".into(), true);
    catalog.set_routing(std::sync::Arc::new(routing));
    let queries: Vec<Vec<u8>> = [
        ("w.example.", "A", ""),
        ("f.example.", "A", "ecs=198.51.100.0/24"),
        ("g.example.", "A", "ecs=198.51.100.0/24"),
        ("g.example.", "A", ""),
        ("m.example.", "A", "noedns"),
        ("example.", "A", "ecs=203.0.113.0/24"),
    ]
    .iter()
    .map(|(n, t, o)| support::query(n, t, o).0)
    .collect();
    let config = ServerConfig {
        geo: Some(std::sync::Arc::new(StaticGeo)),
        region_rtt_ms: vec![("eu-west-1".into(), 12)],
        ..ServerConfig::default()
    };
    let mut scratch = Scratch::default();
    let mut out = vec![0u8; 65535];
    let mut answered = 0;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..100 {
        for q in &queries {
            if let Outcome::Reply { len, .. } = respond(
                &catalog,
                &config,
                q,
                meridian_core::Transport::Udp,
                std::net::IpAddr::from([192, 0, 2, 1]),
                &mut scratch,
                &mut out,
            ) {
                // ANCOUNT > 0: every one of these names has an answer.
                if len > 12 && u16::from_be_bytes([out[6], out[7]]) > 0 {
                    answered += 1;
                }
            }
        }
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(answered, 100 * queries.len());
    assert_eq!(after - before, 0, "allocations while answering routed sets");
}
