//! Property: any sequence of deltas applied to a zone gives the same zone as building the final
//! record sets from scratch (records, checksum, structure, and answers).

mod support;

use std::collections::BTreeMap;

use meridian_core::zone::{RRsetUpdate, Zone};
use meridian_core::{Name, RType, Record};
use proptest::prelude::*;

fn origin() -> Name {
    Name::parse("example.", None).unwrap()
}

fn soa() -> Vec<u8> {
    let mut v = Name::parse("ns.example.", None).unwrap().wire().to_vec();
    v.extend_from_slice(Name::parse("h.example.", None).unwrap().wire());
    v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5]);
    v
}

/// Names from a small universe so updates collide, nest, create and remove ENTs and wildcards.
fn name_strategy() -> impl Strategy<Value = Name> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "c", "x"]), 1..4)
        .prop_map(|labels| Name::parse(&format!("{}.example.", labels.join(".")), None).unwrap())
}

fn update_strategy() -> impl Strategy<Value = RRsetUpdate> {
    (
        name_strategy(),
        prop::sample::select(vec![RType::A, RType::TXT, RType::AAAA]),
        prop::option::weighted(0.7, (1u32..100, prop::collection::vec(0u8..4, 1..3))),
    )
        .prop_map(|(name, rtype, data)| RRsetUpdate {
            name,
            rtype,
            data: data.map(|(ttl, seeds)| {
                let mut rdatas: Vec<Vec<u8>> = seeds
                    .into_iter()
                    .map(|s| match rtype {
                        RType::A => vec![192, 0, 2, s],
                        RType::AAAA => {
                            let mut v = vec![0u8; 16];
                            v[15] = s;
                            v
                        }
                        _ => vec![1, b'a' + s],
                    })
                    .collect();
                rdatas.dedup();
                (ttl, rdatas)
            }),
        })
}

/// (owner wire, type) → (TTL, RDATAs): the record sets a zone should hold.
type Sets = BTreeMap<(Vec<u8>, u16), (u32, Vec<Vec<u8>>)>;

fn build(sets: &Sets) -> Zone {
    let mut records = vec![Record {
        owner: origin(),
        rtype: RType::SOA,
        ttl: 60,
        rdata: soa(),
    }];
    for ((name, rtype), (ttl, rdatas)) in sets {
        for rd in rdatas {
            records.push(Record {
                owner: Name::from_wire(name).unwrap(),
                rtype: RType(*rtype),
                ttl: *ttl,
                rdata: rd.clone(),
            });
        }
    }
    Zone::build(&origin(), records).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn delta_apply_equals_rebuild(initial in prop::collection::vec(update_strategy(), 0..10),
                                  updates in prop::collection::vec(prop::collection::vec(update_strategy(), 1..4), 1..10)) {
        let mut sets = BTreeMap::new();
        for u in initial.iter().filter(|u| u.data.is_some()) {
            let (ttl, rdatas) = u.data.clone().unwrap();
            sets.insert((u.name.wire().to_vec(), u.rtype.0), (ttl, rdatas));
        }
        let mut zone = build(&sets);
        prop_assert_eq!(zone.verify_structure(), Ok(()));
        for batch in &updates {
            zone = zone.apply(batch).unwrap();
            for u in batch {
                match &u.data {
                    Some((ttl, rdatas)) if !rdatas.is_empty() => { sets.insert((u.name.wire().to_vec(), u.rtype.0), (*ttl, rdatas.clone())); }
                    _ => { sets.remove(&(u.name.wire().to_vec(), u.rtype.0)); }
                }
            }
            let rebuilt = build(&sets);
            prop_assert_eq!(zone.verify_structure(), Ok(()));
            prop_assert_eq!(zone.records(), rebuilt.records());
            prop_assert_eq!(zone.checksum(), rebuilt.checksum());
            prop_assert_eq!(zone.node_count(), rebuilt.node_count());
            prop_assert_eq!(zone.record_count(), rebuilt.record_count());
            for node in rebuilt.nodes() {
                let other = zone.node(node.name()).expect("same nodes");
                prop_assert_eq!(node.flags(), other.flags());
                prop_assert_eq!(node.children(), other.children());
            }
        }
    }
}

#[test]
fn one_record_change_shares_the_rest() {
    let mut sets = BTreeMap::new();
    for i in 0..5000u32 {
        let n = Name::parse(&format!("h{i}.example."), None).unwrap();
        sets.insert(
            (n.wire().to_vec(), 1u16),
            (60, vec![i.to_be_bytes().to_vec()]),
        );
    }
    let zone = build(&sets);
    let next = zone
        .apply(&[RRsetUpdate {
            name: Name::parse("h7.example.", None).unwrap(),
            rtype: RType::A,
            data: Some((30, vec![vec![10, 0, 0, 7]])),
        }])
        .unwrap();
    assert_eq!(next.record_count(), zone.record_count());
    assert_ne!(next.checksum(), zone.checksum());
    // DNAME with children and CNAME beside data are refused, leaving the zone unchanged.
    let dname = RRsetUpdate {
        name: origin(),
        rtype: RType::DNAME,
        data: Some((60, vec![Name::root().wire().to_vec()])),
    };
    assert!(zone.apply(&[dname]).is_err());
    let cname = RRsetUpdate {
        name: Name::parse("h1.example.", None).unwrap(),
        rtype: RType::CNAME,
        data: Some((60, vec![Name::root().wire().to_vec()])),
    };
    assert!(zone.apply(&[cname]).is_err());
}
