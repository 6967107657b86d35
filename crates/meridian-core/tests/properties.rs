//! Property tests: the algebra of the core holds for generated inputs.

mod support;

use meridian_core::{Name, RType, Record, Transport, zonefile};
use proptest::prelude::*;
use support::{ask, catalog, query, render};

const ZONE: &str = "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\na A 192.0.2.2\n*.w TXT \"x\"\n\
                    c CNAME a\nd DNAME w.example.\nsub NS ns.sub\nns.sub A 192.0.2.3\nm MX 0 a\nb.ent AAAA ::1\n";

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("w".to_string()),
        Just("*".to_string()),
        Just("sub".to_string()),
        Just("ent".to_string()),
        Just("d".to_string()),
        Just("C".to_string()),
        "[a-z0-9-]{1,12}",
    ]
}

fn qtype() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "A",
        "AAAA",
        "TXT",
        "MX",
        "NS",
        "SOA",
        "CNAME",
        "DS",
        "ANY",
        "DNAME",
        "TYPE65000",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Every answer parses back, echoes the question and respects the UDP size limit.
    #[test]
    fn answers_are_well_formed(labels in prop::collection::vec(label(), 0..5), qt in qtype(),
                               edns in prop_oneof![Just(None), (0u16..5000).prop_map(Some)], tcp in any::<bool>()) {
        let catalog = catalog(&[("example.", ZONE)]);
        let mut name = labels.join(".");
        if !name.is_empty() { name.push('.'); }
        name.push_str("example.");
        let opts = match (edns, tcp) {
            (None, false) => "noedns".to_string(),
            (None, true) => "noedns tcp".to_string(),
            (Some(n), false) => format!("edns={n}"),
            (Some(n), true) => format!("edns={n} tcp"),
        };
        let (packet, transport) = query(&name, qt, &opts);
        let resp = ask(&catalog, &packet, transport, "id").expect("a well-formed query gets an answer");
        let limit = match (transport, edns) { (Transport::Tcp, _) => 65535, (_, None) => 512, (_, Some(n)) => (n as usize).clamp(512, 1232) };
        prop_assert!(resp.len() <= limit);
        prop_assert_eq!(&resp[..2], &packet[..2]);
        let qlen = Name::parse(&name, None).unwrap().wire().len() + 4;
        prop_assert_eq!(&resp[12..12 + qlen], &packet[12..12 + qlen]);
        let _ = render(&resp); // parses back
    }

    /// Arbitrary bytes never panic; any reply carries the query's ID and QR=1.
    #[test]
    fn random_packets_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let catalog = catalog(&[("example.", ZONE)]);
        if let Some(resp) = ask(&catalog, &bytes, Transport::Udp, "id") {
            prop_assert!(resp.len() >= 12);
            prop_assert_eq!(&resp[..2], &bytes[..2]);
            prop_assert_eq!(resp[2] & 0x80, 0x80);
        }
    }

    /// Zone files written by us read back to the same records.
    #[test]
    fn zone_file_round_trip(owners in prop::collection::vec("[a-z]{1,8}", 1..20),
                            txts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..20),
                            ttl in 0u32..=2147483647) {
        let origin = Name::parse("example.", None).unwrap();
        let mut records = Vec::new();
        for (o, t) in owners.iter().zip(&txts) {
            let mut rdata = vec![t.len() as u8];
            rdata.extend_from_slice(t);
            records.push(Record { owner: Name::parse(o, Some(&origin)).unwrap(), rtype: RType::TXT, ttl, rdata });
            records.push(Record { owner: Name::parse(o, Some(&origin)).unwrap(), rtype: RType(65001), ttl, rdata: t.clone() });
        }
        let text = zonefile::write(&records);
        let again = zonefile::parse(&text, &origin, None).unwrap();
        prop_assert_eq!(records, again);
    }
}
