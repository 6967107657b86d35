//! Golden answers: one line per case, the expected response written out like dig output.
//! Named after the RFC behaviour each pins. Set UPDATE_GOLDEN=1 to print actual answers.

mod support;

use support::{catalog, check_text};

const ZONE: &str = r#"
$ORIGIN example.
$TTL 3600
@       IN SOA ns1 hostmaster ( 2024010101 7200 3600 1209600 300 )
@       NS   ns1
@       NS   ns2.other.
@       MX   10 mail
@       A    192.0.2.1
ns1     A    192.0.2.53
mail    A    192.0.2.25
mail    AAAA 2001:db8::25
www     A    192.0.2.80
WwW2    60 A 192.0.2.81
alias   CNAME www
chain1  CNAME chain2
chain2  CNAME www
loop1   CNAME loop2
loop2   CNAME loop1
dangling CNAME nothing.example.
outside CNAME www.elsewhere.
*.wild  A    192.0.2.99
*.wild  TXT  "wild"
exists.wild A 192.0.2.100
*.cw    CNAME www
a.b.ent A   192.0.2.7
sub     NS   ns.sub
sub     NS   ns1
sub     DS   12345 8 2 ABCDEF0123456789
ns.sub  A    192.0.2.200
dn      DNAME target.example.
www.target A 192.0.2.150
_sip._tcp SRV 10 5 5060 mail
big     TXT  "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big     TXT  "1123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big     TXT  "2123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big     TXT  "3123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big     TXT  "4123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big     TXT  "5123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
kid     NS   ns1
kid     DS   54321 13 2 00FF
unk     TYPE65280 \# 3 010203
"#;

const CHILD: &str =
    "$TTL 600\n@ SOA ns1.example. h.kid.example. 1 2 3 4 5\n@ NS ns1.example.\nwww A 192.0.2.201\n";

fn cases() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    vec![
        // (qname, qtype, options, expected)
        (
            "www.example.",
            "A",
            "",
            "NOERROR aa\nan www.example. 3600 IN A 192.0.2.80\nar OPT payload=1232 do=0 v=0 opts=[]",
        ),
        (
            "WWW.Example.",
            "A",
            "noedns",
            "NOERROR aa\nan WWW.Example. 3600 IN A 192.0.2.80",
        ),
        (
            "rfc2308-nodata.example.",
            "A",
            "noedns",
            "NXDOMAIN aa\nns example. 300 IN SOA ns1.example. hostmaster.example. 2024010101 7200 3600 1209600 300",
        ),
        (
            "www.example.",
            "AAAA",
            "noedns",
            "NOERROR aa\nns example. 300 IN SOA ns1.example. hostmaster.example. 2024010101 7200 3600 1209600 300",
        ),
        (
            "b.ent.example.",
            "A",
            "noedns",
            "NOERROR aa\nns example. 300 IN SOA ns1.example. hostmaster.example. 2024010101 7200 3600 1209600 300",
        ),
        (
            "x.b.ent.example.",
            "A",
            "noedns",
            "NXDOMAIN aa\nns example. 300 IN SOA ns1.example. hostmaster.example. 2024010101 7200 3600 1209600 300",
        ),
        ("nowhere.invalid.", "A", "noedns", "REFUSED"),
        (
            "example.",
            "MX",
            "noedns",
            "NOERROR aa\nan example. 3600 IN MX 10 mail.example.\nar mail.example. 3600 IN A 192.0.2.25\nar mail.example. 3600 IN AAAA 2001:db8::25",
        ),
        (
            "_sip._tcp.example.",
            "SRV",
            "noedns",
            "NOERROR aa\nan _sip._tcp.example. 3600 IN SRV 10 5 5060 mail.example.\nar mail.example. 3600 IN A 192.0.2.25\nar mail.example. 3600 IN AAAA 2001:db8::25",
        ),
        (
            "alias.example.",
            "A",
            "noedns",
            "NOERROR aa\nan alias.example. 3600 IN CNAME www.example.\nan www.example. 3600 IN A 192.0.2.80",
        ),
        (
            "alias.example.",
            "CNAME",
            "noedns",
            "NOERROR aa\nan alias.example. 3600 IN CNAME www.example.",
        ),
        (
            "chain1.example.",
            "A",
            "noedns",
            "NOERROR aa\nan chain1.example. 3600 IN CNAME chain2.example.\nan chain2.example. 3600 IN CNAME www.example.\nan www.example. 3600 IN A 192.0.2.80",
        ),
        (
            "loop1.example.",
            "A",
            "noedns",
            "NOERROR aa\nan loop1.example. 3600 IN CNAME loop2.example.\nan loop2.example. 3600 IN CNAME loop1.example.",
        ),
        // RFC 6604: the rcode is that of the last name in the chain.
        (
            "dangling.example.",
            "A",
            "noedns",
            "NXDOMAIN aa\nan dangling.example. 3600 IN CNAME nothing.example.\nns example. 300 IN SOA ns1.example. hostmaster.example. 2024010101 7200 3600 1209600 300",
        ),
        (
            "outside.example.",
            "A",
            "noedns",
            "NOERROR aa\nan outside.example. 3600 IN CNAME www.elsewhere.",
        ),
        // RFC 4592: synthesis, owner = qname; existing names and ENTs block it.
        (
            "Host.Wild.example.",
            "A",
            "noedns",
            "NOERROR aa\nan Host.Wild.example. 3600 IN A 192.0.2.99",
        ),
        (
            "a.b.wild.example.",
            "TXT",
            "noedns",
            "NOERROR aa\nan a.b.wild.example. 3600 IN TXT \"wild\"",
        ),
        (
            "host.wild.example.",
            "AAAA",
            "noedns",
            "NOERROR aa\nns example. 300 IN SOA ns1.example. hostmaster.example. 2024010101 7200 3600 1209600 300",
        ),
        (
            "sub.exists.wild.example.",
            "A",
            "noedns",
            "NXDOMAIN aa\nns example. 300 IN SOA ns1.example. hostmaster.example. 2024010101 7200 3600 1209600 300",
        ),
        (
            "x.cw.example.",
            "A",
            "noedns",
            "NOERROR aa\nan x.cw.example. 3600 IN CNAME www.example.\nan www.example. 3600 IN A 192.0.2.80",
        ),
        // Referral: AA=0, NS in authority, glue in additional (in-domain and sibling).
        (
            "deep.host.sub.example.",
            "A",
            "noedns",
            "NOERROR\nns sub.example. 3600 IN NS ns.sub.example.\nns sub.example. 3600 IN NS ns1.example.\nar ns.sub.example. 3600 IN A 192.0.2.200\nar ns1.example. 3600 IN A 192.0.2.53",
        ),
        (
            "ns.sub.example.",
            "A",
            "noedns",
            "NOERROR\nns sub.example. 3600 IN NS ns.sub.example.\nns sub.example. 3600 IN NS ns1.example.\nar ns.sub.example. 3600 IN A 192.0.2.200\nar ns1.example. 3600 IN A 192.0.2.53",
        ),
        // DS is the parent side's data.
        (
            "sub.example.",
            "DS",
            "noedns",
            "NOERROR aa\nan sub.example. 3600 IN DS 12345 8 2 ABCDEF0123456789",
        ),
        // RFC 6672: DNAME, synthesized CNAME, then the target.
        (
            "www.dn.example.",
            "A",
            "noedns",
            "NOERROR aa\nan dn.example. 3600 IN DNAME target.example.\nan www.dn.example. 3600 IN CNAME www.target.example.\nan www.target.example. 3600 IN A 192.0.2.150",
        ),
        (
            "dn.example.",
            "A",
            "noedns",
            "NOERROR aa\nns example. 300 IN SOA ns1.example. hostmaster.example. 2024010101 7200 3600 1209600 300",
        ),
        // EDNS (RFC 6891): BADVERS with OPT version 0; DO echoed.
        (
            "www.example.",
            "A",
            "v=1",
            "BADVERS\nar OPT payload=1232 do=0 v=0 opts=[]",
        ),
        (
            "www.example.",
            "A",
            "do",
            "NOERROR aa\nan www.example. 3600 IN A 192.0.2.80\nar OPT payload=1232 do=1 v=0 opts=[]",
        ),
        // Truncation: 6 × 111-octet TXT does not fit 512 → TC, whole RRsets only; TCP gets it all.
        ("big.example.", "TXT", "noedns", "NOERROR aa tc"),
        // NSID and CHAOS identity (RFC 5001, RFC 4892).
        (
            "www.example.",
            "A",
            "nsid",
            "NOERROR aa\nan www.example. 3600 IN A 192.0.2.80\nar OPT payload=1232 do=0 v=0 opts=[3:edge-1.test]",
        ),
        (
            "id.server.",
            "TXT",
            "noedns class=3",
            "NOERROR aa\nan id.server. 0 CH TXT \"edge-1.test\"",
        ),
        (
            "hostname.bind.",
            "TXT",
            "noedns class=3",
            "NOERROR aa\nan hostname.bind. 0 CH TXT \"edge-1.test\"",
        ),
        ("version.bind.", "TXT", "noedns class=3", "REFUSED"),
        // Opcodes: NOTIMP for unknown ones; RD copied.
        ("www.example.", "A", "noedns opcode=2 rd", "NOTIMP rd"),
        ("www.example.", "A", "noedns opcode=5", "REFUSED"),
        // RFC 3597 unknown type.
        (
            "unk.example.",
            "TYPE65280",
            "noedns",
            "NOERROR aa\nan unk.example. 3600 IN TYPE65280 \\# 3 010203",
        ),
        // RFC 8482: ANY over UDP gives one RRset.
        (
            "www.example.",
            "ANY",
            "noedns",
            "NOERROR aa\nan www.example. 3600 IN A 192.0.2.80",
        ),
        // A hosted child zone answers for itself; DS at its apex comes from the parent.
        (
            "www.kid.example.",
            "A",
            "noedns",
            "NOERROR aa\nan www.kid.example. 600 IN A 192.0.2.201",
        ),
        (
            "nx.kid.example.",
            "A",
            "noedns",
            "NXDOMAIN aa\nns kid.example. 5 IN SOA ns1.example. h.kid.example. 1 2 3 4 5",
        ),
        (
            "kid.example.",
            "DS",
            "noedns",
            "NOERROR aa\nan kid.example. 3600 IN DS 54321 13 2 00FF",
        ),
    ]
}

#[test]
fn golden_answers() {
    let catalog = catalog(&[("example.", ZONE), ("kid.example.", CHILD)]);
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for (qname, qtype, opts, expected) in cases() {
        let got = check_text(&catalog, qname, qtype, opts);
        if got != expected {
            failures.push(format!(
                "{qname} {qtype} [{opts}]\n--- expected\n{expected}\n--- got\n{got}\n"
            ));
        }
        if update {
            println!("(\"{qname}\", \"{qtype}\", \"{opts}\", {got:?}),");
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden answers differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn big_rrset_over_tcp_is_whole() {
    let catalog = catalog(&[("example.", ZONE)]);
    let got = check_text(&catalog, "big.example.", "TXT", "tcp noedns");
    assert_eq!(
        got.lines()
            .filter(|l| l.starts_with("an big.example."))
            .count(),
        6,
        "{got}"
    );
    assert!(!got.starts_with("NOERROR aa tc"));
    let edns = check_text(&catalog, "big.example.", "TXT", "edns=1232");
    assert_eq!(
        edns.lines().filter(|l| l.starts_with("an ")).count(),
        6,
        "fits in 1232: {edns}"
    );
}

#[test]
fn malformed_packets_get_formerr_or_nothing() {
    let catalog = catalog(&[("example.", ZONE)]);
    let (good, _) = support::query("www.example.", "A", "noedns");
    let mut qr = good.clone();
    qr[2] |= 0x80;
    let mut two_questions = good.clone();
    two_questions[5] = 2;
    let mut pointer_loop = good[..12].to_vec();
    pointer_loop.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    let mut truncated = good.clone();
    truncated.truncate(16);
    let mut arcount_lie = good.clone();
    arcount_lie[11] = 1;
    let cases: Vec<(&str, Vec<u8>, Option<u8>)> = vec![
        ("empty", vec![], None),
        ("short header", good[..11].to_vec(), None),
        ("QR=1 is never answered", qr, None),
        ("qdcount 2 (RFC 9619)", two_questions, Some(1)),
        ("compression loop", pointer_loop, Some(1)),
        ("truncated qname", truncated, Some(1)),
        ("arcount beyond data", arcount_lie, Some(1)),
    ];
    // RFC 6891 §7: a FORMERR to a query with a readable OPT carries an OPT.
    let (with_opt, _) = support::query("www.example.", "A", "do");
    let mut no_question = with_opt[..12].to_vec();
    no_question[5] = 0;
    no_question.extend_from_slice(&with_opt[with_opt.len() - 11..]);
    let reply = support::ask(&catalog, &no_question, meridian_core::Transport::Udp, "").unwrap();
    assert_eq!(
        support::render(&reply),
        "FORMERR\nar OPT payload=1232 do=1 v=0 opts=[]"
    );
    for (what, packet, rcode) in cases {
        let got = support::ask(&catalog, &packet, meridian_core::Transport::Udp, "");
        assert_eq!(got.as_ref().map(|r| r[3] & 0xF), rcode, "{what}");
    }
}

/// An IXFR request carries the client's SOA in authority (RFC 1995 §3). It is well formed, so
/// it gets the same REFUSED as AXFR, question echoed; an authority record on any other query
/// is still malformed.
#[test]
fn ixfr_request_is_refused_not_malformed() {
    let catalog = catalog(&[("example.", ZONE)]);
    let with_soa = |qtype: &str| {
        let (mut p, _) = support::query("example.", qtype, "tcp noedns");
        p[9] = 1; // nscount
        p.extend_from_slice(&[0xC0, 0x0C, 0, 6, 0, 1, 0, 0, 0x0E, 0x10]);
        let rdata = [
            &[0u8][..],
            &[0u8][..],
            &2024010100u32.to_be_bytes()[..],
            &[0u8; 16][..],
        ]
        .concat();
        p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        p.extend_from_slice(&rdata);
        p
    };
    let ixfr = support::ask(
        &catalog,
        &with_soa("IXFR"),
        meridian_core::Transport::Tcp,
        "",
    )
    .unwrap();
    assert_eq!(ixfr[3] & 0xF, 5, "REFUSED");
    assert_eq!(&ixfr[4..6], &[0, 1], "question echoed");
    let axfr = check_text(&catalog, "example.", "AXFR", "tcp noedns");
    assert_eq!(axfr, "REFUSED");
    let a = support::ask(&catalog, &with_soa("A"), meridian_core::Transport::Tcp, "").unwrap();
    assert_eq!(a[3] & 0xF, 1, "FORMERR");
    // An authority record that runs past the packet is malformed, IXFR or not.
    let mut cut = with_soa("IXFR");
    cut.truncate(cut.len() - 3);
    let cut = support::ask(&catalog, &cut, meridian_core::Transport::Tcp, "").unwrap();
    assert_eq!(cut[3] & 0xF, 1, "FORMERR");
}
