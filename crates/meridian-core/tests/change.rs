//! Change batches: Route 53 text in, validation rules one by one, all-or-nothing, and a property
//! test that any sequence of accepted batches keeps the zone valid.

use std::collections::BTreeMap;

use meridian_core::change::{
    Action, BATCH_BYTES_MAX, BATCH_CHANGES_MAX, COMMENT_CHARS_MAX, Change, ChangeBatch,
    ChangeError, Mutation, RRSET_RECORDS_MAX, RecordSet, TTL_MAX, ZONE_RECORD_SETS_MAX, ZoneState,
    apply_batch, parse_change_batch,
};
use meridian_core::rdata::{parse_rdata, rdata_to_text};
use meridian_core::{Error, Name, RType, Record, Zone, zonefile};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A zone's record sets in memory, the simplest [`ZoneState`].
#[derive(Clone, Debug)]
struct MemZone {
    origin: Name,
    sets: BTreeMap<(Name, RType), RecordSet>,
}

impl ZoneState for MemZone {
    fn origin(&self) -> &Name {
        &self.origin
    }
    fn get(&self, name: &Name, rtype: RType) -> Option<RecordSet> {
        self.sets.get(&(name.clone(), rtype)).cloned()
    }
    fn types_at(&self, name: &Name) -> Vec<RType> {
        self.sets
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .collect()
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
}

impl MemZone {
    fn from_text(origin: &str, text: &str) -> MemZone {
        let origin = Name::parse(origin, None).unwrap();
        let mut sets: BTreeMap<(Name, RType), RecordSet> = BTreeMap::new();
        for r in zonefile::parse(text, &origin, None).unwrap() {
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
        MemZone { origin, sets }
    }

    fn apply(&mut self, mutation: &Mutation) {
        match mutation {
            Mutation::Put(set) => {
                self.sets.insert((set.name.clone(), set.rtype), set.clone());
            }
            Mutation::Remove { name, rtype } => {
                assert!(self.sets.remove(&(name.clone(), *rtype)).is_some());
            }
        }
    }

    fn records(&self) -> Vec<Record> {
        self.sets
            .values()
            .flat_map(|s| {
                s.rdatas.iter().map(|rd| Record {
                    owner: s.name.clone(),
                    rtype: s.rtype,
                    ttl: s.ttl,
                    rdata: rd.clone(),
                })
            })
            .collect()
    }

    /// The invariants every accepted batch must keep; `Err` names the broken one.
    fn check_invariants(&self) -> Result<(), String> {
        let mut names: BTreeMap<&Name, Vec<RType>> = BTreeMap::new();
        for ((name, rtype), set) in &self.sets {
            if set.rdatas.is_empty() {
                return Err(format!("{name} {rtype} is empty"));
            }
            if &set.name != name || set.rtype != *rtype {
                return Err(format!("{name} {rtype} stored under the wrong key"));
            }
            names.entry(name).or_default().push(*rtype);
        }
        for (name, types) in &names {
            if types.contains(&RType::CNAME) && types.len() > 1 {
                return Err(format!("CNAME and other data at {name}"));
            }
            if types.contains(&RType::DNAME) && self.record_sets_below(name) > 0 {
                return Err(format!("data below the DNAME at {name}"));
            }
        }
        if self
            .get(&self.origin, RType::SOA)
            .is_none_or(|s| s.rdatas.len() != 1)
        {
            return Err("no single apex SOA".into());
        }
        if self.get(&self.origin, RType::NS).is_none() {
            return Err("no apex NS".into());
        }
        Zone::build(&self.origin, self.records())
            .map(|_| ())
            .map_err(|e| format!("zone does not build: {e}"))
    }
}

const BASE: &str = "$TTL 300
@ SOA ns1 hostmaster 1 7200 900 1209600 300
@ NS ns1
@ NS ns2
@ MX 10 mail
ns1 A 192.0.2.1
ns2 A 192.0.2.2
mail A 192.0.2.25
www A 192.0.2.10
www A 192.0.2.11
alias CNAME www
txt TXT \"v=spf1 -all\"
d DNAME other.example.
x.sub A 192.0.2.30
";

fn origin() -> Name {
    Name::parse("example.com.", None).unwrap()
}

fn base() -> MemZone {
    MemZone::from_text("example.com.", BASE)
}

fn name(text: &str) -> Name {
    Name::parse(text, None).unwrap()
}

/// One Route 53 change as JSON.
fn change(action: &str, name: &str, rtype: &str, ttl: i64, values: &[&str]) -> Value {
    json!({
        "Action": action,
        "ResourceRecordSet": {
            "Name": name,
            "Type": rtype,
            "TTL": ttl,
            "ResourceRecords": values.iter().map(|v| json!({"Value": v})).collect::<Vec<_>>(),
        }
    })
}

fn parse(changes: &[Value]) -> Result<ChangeBatch, ChangeError> {
    let text = json!({"Comment": "test", "Changes": changes}).to_string();
    parse_change_batch(&text, &origin())
}

/// Parses Route 53 JSON changes and validates them against [`BASE`].
fn run(changes: &[Value]) -> Result<Vec<Mutation>, ChangeError> {
    apply_batch(&base(), &parse(changes)?)
}

fn set(name_text: &str, rtype: RType, ttl: u32, values: &[&str]) -> RecordSet {
    RecordSet {
        name: name(name_text),
        rtype,
        ttl,
        rdatas: values.iter().map(|v| wire(rtype, v)).collect(),
        set_identifier: None,
        policy: None,
        health_check: None,
        alias: None,
        fail_closed: false,
    }
}

fn wire(rtype: RType, value: &str) -> Vec<u8> {
    parse_rdata(rtype, &zonefile::tokenize(value).unwrap(), &Name::root()).unwrap()
}

fn domain_batch(changes: Vec<(Action, RecordSet)>) -> ChangeBatch {
    ChangeBatch {
        comment: String::new(),
        changes: changes
            .into_iter()
            .map(|(action, record_set)| Change { action, record_set })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Route 53 text
// ---------------------------------------------------------------------------------------------

const EXAMPLE_JSON: &str = r#"{
  "Comment": "Add www2, move mail, drop the SPF record",
  "Changes": [
    {
      "Action": "CREATE",
      "ResourceRecordSet": {
        "Name": "www2.example.com",
        "Type": "A",
        "TTL": 300,
        "ResourceRecords": [{ "Value": "192.0.2.44" }, { "Value": "192.0.2.45" }]
      }
    },
    {
      "Action": "UPSERT",
      "ResourceRecordSet": {
        "Name": "example.com.",
        "Type": "MX",
        "TTL": 3600,
        "ResourceRecords": [{ "Value": "10 mail.example.com." }, { "Value": "20 backup-mx.example.net" }]
      }
    },
    {
      "Action": "DELETE",
      "ResourceRecordSet": {
        "Name": "txt.example.com.",
        "Type": "TXT",
        "TTL": 300,
        "ResourceRecords": [{ "Value": "\"v=spf1 -all\"" }]
      }
    }
  ]
}"#;

const EXAMPLE_YAML: &str = r#"
# The same batch as EXAMPLE_JSON, as YAML.
Comment: Add www2, move mail, drop the SPF record
Changes:
  - Action: CREATE
    ResourceRecordSet:
      Name: www2.example.com
      Type: A
      TTL: 300
      ResourceRecords:
        - Value: 192.0.2.44
        - Value: 192.0.2.45
  - Action: UPSERT
    ResourceRecordSet:
      Name: example.com.
      Type: MX
      TTL: 3600
      ResourceRecords:
        - Value: 10 mail.example.com.
        - Value: 20 backup-mx.example.net
  - Action: DELETE
    ResourceRecordSet:
      Name: txt.example.com.
      Type: TXT
      TTL: 300
      ResourceRecords:
        - Value: '"v=spf1 -all"'
"#;

#[test]
fn route53_example_batch_json_and_yaml() {
    let from_json = parse_change_batch(EXAMPLE_JSON, &origin()).unwrap();
    let from_yaml = parse_change_batch(EXAMPLE_YAML, &origin()).unwrap();
    assert_eq!(from_json, from_yaml);
    let expected = ChangeBatch {
        comment: "Add www2, move mail, drop the SPF record".into(),
        changes: vec![
            Change {
                action: Action::Create,
                record_set: set(
                    "www2.example.com.",
                    RType::A,
                    300,
                    &["192.0.2.44", "192.0.2.45"],
                ),
            },
            Change {
                action: Action::Upsert,
                record_set: set(
                    "example.com.",
                    RType::MX,
                    3600,
                    // Names in values are absolute with or without the final dot, as in Route 53.
                    &["10 mail.example.com.", "20 backup-mx.example.net."],
                ),
            },
            Change {
                action: Action::Delete,
                record_set: set("txt.example.com.", RType::TXT, 300, &["\"v=spf1 -all\""]),
            },
        ],
    };
    assert_eq!(from_json, expected);

    // Removals first, then puts, each in change order.
    let mutations = apply_batch(&base(), &from_json).unwrap();
    assert_eq!(
        mutations,
        vec![
            Mutation::Remove {
                name: name("txt.example.com."),
                rtype: RType::TXT
            },
            Mutation::Put(expected.changes[0].record_set.clone()),
            Mutation::Put(expected.changes[1].record_set.clone()),
        ]
    );
    let mut zone = base();
    for m in &mutations {
        zone.apply(m);
    }
    zone.check_invariants().unwrap();
}

#[test]
fn domain_batch_round_trips_through_serde() {
    let batch = parse_change_batch(EXAMPLE_JSON, &origin()).unwrap();
    let json = serde_json::to_string(&batch).unwrap();
    assert!(
        json.contains(r#""name":"www2.example.com.","rtype":"A""#),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<ChangeBatch>(&json).unwrap(), batch);
    let mutations = apply_batch(&base(), &batch).unwrap();
    let json = serde_json::to_string(&mutations).unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<Mutation>>(&json).unwrap(),
        mutations
    );
}

#[test]
fn names_relative_apex_octal_and_case() {
    let batch = parse(&[
        change("CREATE", "new", "A", 60, &["192.0.2.1"]),
        change("CREATE", "@", "TXT", 60, &["hello"]),
        change("CREATE", "\\052.Example.COM", "A", 60, &["192.0.2.2"]),
        change("CREATE", "cn", "CNAME", 60, &["target.example.net"]),
    ])
    .unwrap();
    let names: Vec<String> = batch
        .changes
        .iter()
        .map(|c| c.record_set.name.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "new.example.com.",
            "example.com.",
            "*.example.com.",
            "cn.example.com."
        ]
    );
    assert_eq!(
        rdata_to_text(RType::CNAME, &batch.changes[3].record_set.rdatas[0]),
        "target.example.net."
    );
    apply_batch(&base(), &batch).unwrap();
}

#[test]
fn txt_values_quoted_escaped_and_octal() {
    let batch = parse(&[change(
        "CREATE",
        "t",
        "TXT",
        60,
        &["\"a b\" \"c\\\"d\"", "unquoted;semicolon", "\"\\101\\040\""],
    )])
    .unwrap();
    let rdatas = &batch.changes[0].record_set.rdatas;
    assert_eq!(rdatas[0], b"\x03a b\x03c\"d");
    assert_eq!(rdatas[1], b"\x12unquoted;semicolon");
    // Route 53 escapes are octal: \101 is 'A', \040 is a space.
    assert_eq!(rdatas[2], b"\x02A ");
}

#[test]
fn unknown_fields_are_refused_clearly() {
    let mut c = change("CREATE", "a", "A", 60, &["192.0.2.1"]);
    c["ResourceRecordSet"]["Colour"] = json!("blue");
    let err = parse(&[c]).unwrap_err();
    assert_eq!(err.code(), "Syntax");
    assert!(err.to_string().contains("unknown field `Colour`"), "{err}");

    let err = parse_change_batch("Changes: []\nExtra: 1\n", &origin()).unwrap_err();
    assert!(err.to_string().contains("unknown field `Extra`"), "{err}");
    let err = parse_change_batch("{\"Changes\": [", &origin()).unwrap_err();
    assert!(
        matches!(err, ChangeError::Syntax { format: "JSON", .. }),
        "{err}"
    );
    let err = parse_change_batch(
        "Changes:\n  - Action: RENAME\n    ResourceRecordSet: {Name: a, Type: A}\n",
        &origin(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ChangeError::Syntax { format: "YAML", .. }),
        "{err}"
    );
}

#[test]
fn rule_name_outside_zone() {
    assert_eq!(
        run(&[change("CREATE", "www.other.org.", "A", 60, &["192.0.2.1"])]),
        Err(ChangeError::NameOutsideZone {
            change_idx: 0,
            name: name("www.other.org."),
            origin: origin(),
        })
    );
}

#[test]
fn rule_name_invalid() {
    assert!(matches!(
        run(&[change("CREATE", "a..b", "A", 60, &["192.0.2.1"])]),
        Err(ChangeError::NameInvalid { change_idx: 0, ref name, reason: Error::NameInvalid }) if name == "a..b"
    ));
    // Route 53 escapes are octal: 8 and 9 are not octal digits.
    assert!(matches!(
        run(&[change(
            "CREATE",
            "\\089.example.com",
            "A",
            60,
            &["192.0.2.1"]
        )]),
        Err(ChangeError::NameInvalid {
            reason: Error::EscapeInvalid,
            ..
        })
    ));
}

#[test]
fn rule_cname_beside_other_data() {
    // A CNAME where an A is.
    assert_eq!(
        run(&[change(
            "CREATE",
            "www",
            "CNAME",
            60,
            &["elsewhere.example.net."]
        )]),
        Err(ChangeError::CnameAndOtherData {
            change_idx: 0,
            name: name("www.example.com."),
        })
    );
    // An A where a CNAME is.
    assert_eq!(
        run(&[change("CREATE", "alias", "A", 60, &["192.0.2.1"])]),
        Err(ChangeError::CnameAndOtherData {
            change_idx: 0,
            name: name("alias.example.com."),
        })
    );
    // Both in one batch: blamed on the later one.
    assert_eq!(
        run(&[
            change("CREATE", "new", "CNAME", 60, &["www.example.com."]),
            change("CREATE", "new", "TXT", 60, &["\"x\""]),
        ]),
        Err(ChangeError::CnameAndOtherData {
            change_idx: 1,
            name: name("new.example.com."),
        })
    );
}

#[test]
fn rule_cname_replacing_other_data_in_either_order() {
    let delete_a = change("DELETE", "www", "A", 300, &["192.0.2.10", "192.0.2.11"]);
    let create_cname = change("CREATE", "www", "CNAME", 60, &["elsewhere.example.net."]);
    for changes in [
        [delete_a.clone(), create_cname.clone()],
        [create_cname, delete_a],
    ] {
        let mutations = run(&changes).unwrap();
        // The removal comes first whatever the order of the changes, so that every step of
        // applying the mutations one by one is a valid zone.
        assert!(matches!(
            mutations[0],
            Mutation::Remove {
                rtype: RType::A,
                ..
            }
        ));
        assert!(matches!(&mutations[1], Mutation::Put(s) if s.rtype == RType::CNAME));
        let mut zone = base();
        for m in &mutations {
            zone.apply(m);
            zone.check_invariants().unwrap();
        }
    }
}

#[test]
fn rule_cname_at_apex() {
    assert_eq!(
        run(&[change("UPSERT", "@", "CNAME", 60, &["www.example.com."])]),
        Err(ChangeError::CnameAtApex {
            change_idx: 0,
            name: origin(),
        })
    );
}

#[test]
fn rule_cname_holds_one_record() {
    assert_eq!(
        run(&[change(
            "CREATE",
            "c",
            "CNAME",
            60,
            &["a.example.net.", "b.example.net."]
        )]),
        Err(ChangeError::RecordsMoreThanOne {
            change_idx: 0,
            name: name("c.example.com."),
            rtype: RType::CNAME,
            count: 2,
        })
    );
}

#[test]
fn rule_delete_must_match_exactly() {
    assert_eq!(
        run(&[change(
            "DELETE",
            "www",
            "A",
            60,
            &["192.0.2.10", "192.0.2.11"]
        )]),
        Err(ChangeError::DeleteMismatch {
            change_idx: 0,
            name: name("www.example.com."),
            rtype: RType::A,
            detail: "the TTL differs",
        })
    );
    assert_eq!(
        run(&[change("DELETE", "www", "A", 300, &["192.0.2.10"])]),
        Err(ChangeError::DeleteMismatch {
            change_idx: 0,
            name: name("www.example.com."),
            rtype: RType::A,
            detail: "the records differ",
        })
    );
    // Order of the records does not matter.
    run(&[change(
        "DELETE",
        "www",
        "A",
        300,
        &["192.0.2.11", "192.0.2.10"],
    )])
    .unwrap();
}

#[test]
fn rule_delete_of_missing_set() {
    assert_eq!(
        run(&[change("DELETE", "nothing", "A", 300, &["192.0.2.1"])]),
        Err(ChangeError::NotFound {
            change_idx: 0,
            name: name("nothing.example.com."),
            rtype: RType::A,
        })
    );
}

#[test]
fn rule_create_of_existing_set() {
    assert_eq!(
        run(&[change("CREATE", "www", "A", 300, &["192.0.2.99"])]),
        Err(ChangeError::AlreadyExists {
            change_idx: 0,
            name: name("www.example.com."),
            rtype: RType::A,
        })
    );
    // UPSERT replaces it.
    run(&[change("UPSERT", "www", "A", 300, &["192.0.2.99"])]).unwrap();
}

#[test]
fn rule_record_data_must_parse() {
    assert_eq!(
        run(&[change("CREATE", "a", "A", 60, &["192.0.2.1", "999.1.1.1"])]),
        Err(ChangeError::RdataInvalid {
            change_idx: 0,
            name: name("a.example.com."),
            rtype: RType::A,
            value: "999.1.1.1".into(),
            reason: Error::RdataInvalid("IPv4 address"),
        })
    );
    assert!(matches!(
        run(&[change("CREATE", "m", "MX", 60, &["mail.example.com."])]),
        Err(ChangeError::RdataInvalid { ref value, .. }) if value == "mail.example.com."
    ));
    // Wire data built by other means is checked too.
    let bad = RecordSet {
        rdatas: vec![vec![192, 0, 2]],
        ..set("a.example.com.", RType::A, 60, &[])
    };
    assert!(matches!(
        apply_batch(&base(), &domain_batch(vec![(Action::Create, bad)])),
        Err(ChangeError::RdataInvalid {
            change_idx: 0,
            rtype: RType::A,
            ..
        })
    ));
}

#[test]
fn rule_ttl_range() {
    for ttl in [-1, i64::from(TTL_MAX) + 1] {
        assert_eq!(
            run(&[change("CREATE", "a", "A", ttl, &["192.0.2.1"])]),
            Err(ChangeError::TtlOutOfRange {
                change_idx: 0,
                name: name("a.example.com."),
                rtype: RType::A,
                ttl,
            })
        );
    }
    run(&[change("CREATE", "a", "A", TTL_MAX.into(), &["192.0.2.1"])]).unwrap();
    run(&[change("CREATE", "a", "A", 0, &["192.0.2.1"])]).unwrap();
    // A domain batch with a u32 TTL over 2^31-1.
    let s = set("a.example.com.", RType::A, TTL_MAX + 1, &["192.0.2.1"]);
    assert!(matches!(
        apply_batch(&base(), &domain_batch(vec![(Action::Create, s)])),
        Err(ChangeError::TtlOutOfRange {
            ttl: 2_147_483_648,
            ..
        })
    ));
    let mut c = change("CREATE", "a", "A", 60, &["192.0.2.1"]);
    c["ResourceRecordSet"]
        .as_object_mut()
        .unwrap()
        .remove("TTL");
    assert!(matches!(
        parse(&[c]),
        Err(ChangeError::TtlMissing { change_idx: 0, .. })
    ));
}

#[test]
fn rule_duplicate_records() {
    assert_eq!(
        run(&[change(
            "CREATE",
            "a",
            "A",
            60,
            &["192.0.2.1", "192.0.2.2", "192.0.2.1"]
        )]),
        Err(ChangeError::RecordDuplicate {
            change_idx: 0,
            name: name("a.example.com."),
            rtype: RType::A,
            value: "192.0.2.1".into(),
        })
    );
    // Duplicates are found on the wire form, whatever the spelling.
    assert_eq!(
        run(&[change(
            "CREATE",
            "a",
            "AAAA",
            60,
            &["2001:db8::1", "2001:DB8:0::1"]
        )]),
        Err(ChangeError::RecordDuplicate {
            change_idx: 0,
            name: name("a.example.com."),
            rtype: RType::AAAA,
            value: "2001:db8::1".into(),
        })
    );
}

#[test]
fn rule_records_not_empty() {
    assert_eq!(
        run(&[change("CREATE", "a", "A", 60, &[])]),
        Err(ChangeError::RecordsEmpty {
            change_idx: 0,
            name: name("a.example.com."),
            rtype: RType::A,
        })
    );
    let mut c = change("CREATE", "a", "A", 60, &[]);
    c["ResourceRecordSet"]
        .as_object_mut()
        .unwrap()
        .remove("ResourceRecords");
    assert!(matches!(parse(&[c]), Err(ChangeError::RecordsEmpty { .. })));
    let empty = set("a.example.com.", RType::A, 60, &[]);
    assert!(matches!(
        apply_batch(&base(), &domain_batch(vec![(Action::Upsert, empty)])),
        Err(ChangeError::RecordsEmpty { .. })
    ));
}

#[test]
fn rule_soa_only_upsert_at_apex() {
    let soa = "ns1.example.com. hostmaster.example.com. 2 7200 900 1209600 300";
    for (action, owner) in [("CREATE", "@"), ("UPSERT", "www"), ("CREATE", "www")] {
        assert_eq!(
            run(&[change(action, owner, "SOA", 300, &[soa])]).map(|_| ()),
            Err(ChangeError::SoaChangeRefused {
                change_idx: 0,
                name: if owner == "@" {
                    origin()
                } else {
                    name("www.example.com.")
                },
                action: if action == "CREATE" {
                    Action::Create
                } else {
                    Action::Upsert
                },
            })
        );
    }
    let mutations = run(&[change("UPSERT", "@", "SOA", 300, &[soa])]).unwrap();
    assert!(matches!(&mutations[0], Mutation::Put(s) if s.rtype == RType::SOA));
    assert!(matches!(
        run(&[change(
            "UPSERT",
            "@",
            "SOA",
            300,
            &[soa, soa.replace(" 2 ", " 3 ").as_str()]
        )]),
        Err(ChangeError::RecordsMoreThanOne { .. })
    ));
}

#[test]
fn rule_apex_soa_and_ns_cannot_be_deleted() {
    let soa = "ns1.example.com. hostmaster.example.com. 1 7200 900 1209600 300";
    assert_eq!(
        run(&[change("DELETE", "@", "SOA", 300, &[soa])]),
        Err(ChangeError::ApexDeleteRefused {
            change_idx: 0,
            rtype: RType::SOA,
        })
    );
    assert_eq!(
        run(&[change(
            "DELETE",
            "example.com",
            "NS",
            300,
            &["ns1.example.com.", "ns2.example.com."]
        )]),
        Err(ChangeError::ApexDeleteRefused {
            change_idx: 0,
            rtype: RType::NS,
        })
    );
    // Upserting the apex NS is how name servers change; NS below the apex is a delegation.
    run(&[change("UPSERT", "@", "NS", 300, &["ns3.example.net."])]).unwrap();
    run(&[change("DELETE", "ns1", "A", 300, &["192.0.2.1"])]).unwrap();
}

#[test]
fn rule_meta_types_are_not_data() {
    for (text, rtype) in [
        ("ANY", RType::ANY),
        ("OPT", RType::OPT),
        ("AXFR", RType::AXFR),
    ] {
        assert_eq!(
            run(&[change("CREATE", "a", text, 60, &["\\# 0"])]),
            Err(ChangeError::TypeMeta {
                change_idx: 0,
                rtype
            })
        );
    }
    assert_eq!(
        run(&[change("CREATE", "a", "NOPE", 60, &["x"])]),
        Err(ChangeError::TypeUnknown {
            change_idx: 0,
            rtype: "NOPE".into()
        })
    );
    // RFC 3597 types are data.
    run(&[change("CREATE", "a", "TYPE65280", 60, &["\\# 2 0102"])]).unwrap();
}

#[test]
fn rule_dname_has_nothing_below() {
    // Data below an existing DNAME.
    assert_eq!(
        run(&[change("CREATE", "x.d", "A", 60, &["192.0.2.1"])]),
        Err(ChangeError::BelowDname {
            change_idx: 0,
            name: name("x.d.example.com."),
            dname: name("d.example.com."),
        })
    );
    // A DNAME above existing data.
    assert_eq!(
        run(&[change(
            "CREATE",
            "sub",
            "DNAME",
            60,
            &["other.example.net."]
        )]),
        Err(ChangeError::DnameHasChildren {
            change_idx: 0,
            name: name("sub.example.com."),
        })
    );
    // Unless the same batch removes that data.
    run(&[
        change("CREATE", "sub", "DNAME", 60, &["other.example.net."]),
        change("DELETE", "x.sub", "A", 300, &["192.0.2.30"]),
    ])
    .unwrap();
    // A DNAME and data below it in one batch.
    assert_eq!(
        run(&[
            change("CREATE", "e", "DNAME", 60, &["other.example.net."]),
            change("CREATE", "y.e", "A", 60, &["192.0.2.1"]),
        ]),
        Err(ChangeError::DnameHasChildren {
            change_idx: 0,
            name: name("e.example.com."),
        })
    );
}

#[test]
fn rule_same_set_changed_twice() {
    assert_eq!(
        run(&[
            change("UPSERT", "www", "A", 60, &["192.0.2.1"]),
            change("CREATE", "other", "A", 60, &["192.0.2.1"]),
            change("UPSERT", "WWW.example.com.", "A", 60, &["192.0.2.2"]),
        ]),
        Err(ChangeError::ChangedTwice {
            change_idx: 2,
            first_idx: 0,
            name: name("www.example.com."),
            rtype: RType::A,
        })
    );
    let delete = change("DELETE", "www", "A", 300, &["192.0.2.10", "192.0.2.11"]);
    let create = change("CREATE", "www", "A", 60, &["192.0.2.1"]);
    assert!(matches!(
        run(&[delete.clone(), delete.clone()]),
        Err(ChangeError::ChangedTwice { change_idx: 1, .. })
    ));
    assert!(matches!(
        run(&[create.clone(), delete.clone()]),
        Err(ChangeError::AlreadyExists { change_idx: 0, .. })
    ));
    assert!(matches!(
        run(&[delete.clone(), create.clone(), delete.clone()]),
        Err(ChangeError::ChangedTwice { change_idx: 2, .. })
    ));
    // DELETE then CREATE is Route 53's replace: one Put.
    let mutations = run(&[delete, create]).unwrap();
    assert_eq!(
        mutations,
        vec![Mutation::Put(set(
            "www.example.com.",
            RType::A,
            60,
            &["192.0.2.1"]
        ))]
    );
}

#[test]
fn rule_batch_limits() {
    assert_eq!(
        parse_change_batch("Changes: []", &origin()),
        Err(ChangeError::BatchEmpty)
    );
    assert_eq!(
        apply_batch(&base(), &domain_batch(vec![])),
        Err(ChangeError::BatchEmpty)
    );
    let many: Vec<Value> = (0..=BATCH_CHANGES_MAX)
        .map(|i| change("CREATE", &format!("n{i}"), "A", 60, &["192.0.2.1"]))
        .collect();
    assert_eq!(
        parse(&many),
        Err(ChangeError::TooManyChanges {
            count: BATCH_CHANGES_MAX + 1
        })
    );
    // The largest batch allowed is accepted, in well under a second.
    assert_eq!(
        run(&many[..BATCH_CHANGES_MAX]).unwrap().len(),
        BATCH_CHANGES_MAX
    );

    let huge = format!(
        "{{\"Changes\": [], \"Comment\": \"{}\"}}",
        "x".repeat(BATCH_BYTES_MAX)
    );
    assert_eq!(
        parse_change_batch(&huge, &origin()),
        Err(ChangeError::BatchTooLarge { bytes: huge.len() })
    );
    let long = json!({"Comment": "é".repeat(COMMENT_CHARS_MAX + 1),
        "Changes": [change("CREATE", "a", "A", 60, &["192.0.2.1"])]});
    assert_eq!(
        parse_change_batch(&long.to_string(), &origin()),
        Err(ChangeError::CommentTooLong {
            chars: COMMENT_CHARS_MAX + 1
        })
    );
}

#[test]
fn rule_record_set_limits() {
    let addresses: Vec<String> = (0..=RRSET_RECORDS_MAX)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect();
    let values: Vec<&str> = addresses.iter().map(String::as_str).collect();
    assert_eq!(
        run(&[change("CREATE", "pool", "A", 60, &values)]),
        Err(ChangeError::RecordsTooMany {
            change_idx: 0,
            name: name("pool.example.com."),
            rtype: RType::A,
            count: RRSET_RECORDS_MAX + 1,
        })
    );
    run(&[change(
        "CREATE",
        "pool",
        "A",
        60,
        &values[..RRSET_RECORDS_MAX],
    )])
    .unwrap();

    // 300 TXT records of 255 octets cannot fit any answer.
    let texts: Vec<String> = (0..300)
        .map(|i| format!("\"{i:03}{}\"", "x".repeat(252)))
        .collect();
    let values: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert!(matches!(
        run(&[change("CREATE", "big", "TXT", 60, &values)]),
        Err(ChangeError::RecordSetTooLarge {
            change_idx: 0,
            bytes: 80_400,
            ..
        })
    ));
}

#[test]
fn rule_zone_size_limit() {
    /// A zone that says it is full.
    struct Full(MemZone);
    impl ZoneState for Full {
        fn origin(&self) -> &Name {
            self.0.origin()
        }
        fn get(&self, name: &Name, rtype: RType) -> Option<RecordSet> {
            self.0.get(name, rtype)
        }
        fn types_at(&self, name: &Name) -> Vec<RType> {
            self.0.types_at(name)
        }
        fn record_set_count(&self) -> usize {
            ZONE_RECORD_SETS_MAX
        }
        fn record_count(&self) -> usize {
            ZONE_RECORD_SETS_MAX
        }
        fn record_sets_below(&self, name: &Name) -> usize {
            self.0.record_sets_below(name)
        }
    }
    let full = Full(base());
    let create = parse(&[change("CREATE", "one-more", "A", 60, &["192.0.2.1"])]).unwrap();
    assert_eq!(
        apply_batch(&full, &create),
        Err(ChangeError::ZoneRecordSetsTooMany {
            count: ZONE_RECORD_SETS_MAX + 1
        })
    );
    // A full zone still takes changes that do not grow it.
    let replace = parse(&[
        change("DELETE", "txt", "TXT", 300, &["\"v=spf1 -all\""]),
        change("CREATE", "one-more", "A", 60, &["192.0.2.1"]),
        change("UPSERT", "www", "A", 60, &["192.0.2.1"]),
    ])
    .unwrap();
    apply_batch(&full, &replace).unwrap();
}

#[test]
fn all_or_nothing() {
    let zone = base();
    let before = zone.sets.clone();
    let err = run(&[
        change("CREATE", "one", "A", 60, &["192.0.2.1"]),
        change("UPSERT", "two", "TXT", 60, &["\"fine\""]),
        change("DELETE", "mail", "A", 300, &["192.0.2.25"]),
        change("CREATE", "www", "A", 60, &["192.0.2.1"]),
        change("CREATE", "five", "A", 60, &["192.0.2.5"]),
    ])
    .unwrap_err();
    assert_eq!(err.change_idx(), Some(3));
    assert_eq!(err.code(), "AlreadyExists");
    assert_eq!(
        err.to_string(),
        "changes[3]: cannot create www.example.com. A: it already exists"
    );
    assert_eq!(zone.sets, before, "validation changes nothing");
}

// ---------------------------------------------------------------------------------------------
// Property: accepted batches keep the zone valid
// ---------------------------------------------------------------------------------------------

const NAMES: &[&str] = &[
    "example.com.",
    "a.example.com.",
    "b.example.com.",
    "c.a.example.com.",
    "*.b.example.com.",
    "d.example.com.",
];

fn pool(rtype: RType) -> &'static [&'static str] {
    match rtype {
        RType::A => &["192.0.2.1", "192.0.2.2", "192.0.2.3"],
        RType::AAAA => &["2001:db8::1", "2001:db8::2"],
        RType::TXT => &["\"x\"", "\"y\" \"z\""],
        RType::CNAME => &["a.example.com.", "target.example.net."],
        RType::MX => &["10 a.example.com.", "20 b.example.com."],
        RType::NS => &["ns1.example.net.", "ns2.example.net."],
        RType::DNAME => &["other.example.net.", "b.example.com."],
        RType::SOA => &["ns1.example.com. h.example.com. 2 7200 900 1209600 300"],
        _ => unreachable!(),
    }
}

const TYPES: &[RType] = &[
    RType::A,
    RType::AAAA,
    RType::TXT,
    RType::CNAME,
    RType::MX,
    RType::NS,
    RType::DNAME,
    RType::SOA,
];

/// A change to generate: action, name, type, which pool values (bit mask), TTL, and whether a
/// DELETE copies the current set (so that some deletes succeed).
type ChangeSpec = (u8, usize, usize, u8, bool, bool);

fn change_spec() -> impl Strategy<Value = ChangeSpec> {
    (
        0u8..3,
        0..NAMES.len(),
        0..TYPES.len(),
        1u8..8,
        any::<bool>(),
        any::<bool>(),
    )
}

fn build_change(zone: &MemZone, spec: ChangeSpec) -> Change {
    let (action, name_idx, type_idx, mask, long_ttl, copy_current) = spec;
    let action = [Action::Create, Action::Delete, Action::Upsert][action as usize];
    let rtype = TYPES[type_idx];
    let owner = name(NAMES[name_idx]);
    if action == Action::Delete
        && copy_current
        && let Some(current) = zone.get(&owner, rtype)
    {
        return Change {
            action,
            record_set: current,
        };
    }
    let values: Vec<&str> = pool(rtype)
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, v)| *v)
        .collect();
    // Mostly valid sets: a CNAME, DNAME or SOA holds one record.
    let values = if values.is_empty() || matches!(rtype, RType::CNAME | RType::DNAME | RType::SOA) {
        values
            .into_iter()
            .take(1)
            .chain(pool(rtype).iter().copied())
            .take(1)
            .collect()
    } else {
        values
    };
    Change {
        action,
        record_set: set(
            NAMES[name_idx],
            rtype,
            if long_ttl { 3600 } else { 60 },
            &values,
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn accepted_batches_keep_the_zone_valid(
        batches in prop::collection::vec(prop::collection::vec(change_spec(), 1..5), 1..16)
    ) {
        let mut zone = MemZone::from_text(
            "example.com.",
            "@ 300 SOA ns1 h 1 7200 900 1209600 300\n@ 300 NS ns1.example.net.\n",
        );
        zone.check_invariants().unwrap();
        for specs in batches {
            let batch = ChangeBatch {
                comment: String::new(),
                changes: specs.into_iter().map(|s| build_change(&zone, s)).collect(),
            };
            match apply_batch(&zone, &batch) {
                Ok(mutations) => {
                    for m in &mutations {
                        zone.apply(m);
                        // Every intermediate state is valid too (removals come first).
                        if let Err(e) = zone.check_invariants() {
                            return Err(TestCaseError::fail(format!("{e} after {m:?} of {batch:?}")));
                        }
                    }
                    // The result is what the changes asked for.
                    for c in &batch.changes {
                        let now = zone.get(&c.record_set.name, c.record_set.rtype);
                        let deleted_for_good = c.action == Action::Delete
                            && !batch.changes.iter().any(|o| {
                                o.action == Action::Create
                                    && o.record_set.name == c.record_set.name
                                    && o.record_set.rtype == c.record_set.rtype
                            });
                        if deleted_for_good {
                            prop_assert!(now.is_none());
                        } else if c.action != Action::Delete {
                            prop_assert_eq!(now.as_ref(), Some(&c.record_set));
                        }
                    }
                }
                Err(e) => {
                    prop_assert!(e.change_idx().is_none_or(|i| i < batch.changes.len()));
                }
            }
        }
    }
}
