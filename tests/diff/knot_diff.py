#!/usr/bin/env python3
"""Differential test of `meridian edge` against Knot DNS on the project's own zones.

Starts knotd (generated config in a temporary directory) and `meridian edge` on
the same zone files (tests/zones by default), sends both the same queries and
compares the normalised answers. It also checks RFC invariants on Meridian's
answers on their own, and absolute expectations for protocol cases.

    python3 tests/diff/knot_diff.py [--meridian PATH] [--zones DIR] [-v]

Queries:
  walk   every owner x every type it has, one absent type, nx-probe.<owner>,
         wildcard synthesis (one and two labels, absent type, mixed case), every
         empty non-terminal, referral / DS / glue at every cut, mixed-case
         qnames; each in six variants: UDP without EDNS, EDNS 512 / 1232 / 4096,
         EDNS 1232 + DO, TCP.
  extra  hand-written cases (DNAME YXDOMAIN, DS at the child apex, ...).
  proto  EDNS version 1 (BADVERS), unknown EDNS option / flag, QR=1 (dropped),
         unassigned opcodes (NOTIMP), names outside our zones (REFUSED),
         QDCOUNT 0 / 2 (FORMERR), NSID, CHAOS id.server / hostname.bind /
         version.bind, TCP pipelining and split length prefixes.

Normalisation: message ID ignored; sections compared as sets of RRs, with
TTLs; owner names lower-cased; names in RDATA canonicalised (RFC 4034 §6.2).
Header rcode (incl. extended), opcode and every flag (AA TC RD RA AD CD) are
compared, as are the question (exact case) and EDNS presence, version, DO and
Z flags. When both servers set TC only the header, question and EDNS are
compared.

Tolerated differences (everything else is a failure):
  additional   A/AAAA RRsets in the additional section whose owner is a name
               that an answer/authority RR points to (NS, MX, SRV, SVCB/HTTPS,
               NAPTR targets): optional additional-section processing.
  cname-chain  Knot stops following a CNAME/DNAME chain after 5 links; Meridian
               follows up to 16. Tolerated when Knot's answer is exactly the
               first links of Meridian's chain (then rcode and the authority /
               additional sections may differ too).
  edns-option  EDNS options (NSID: Knot runs with an empty identity).
  edns-payload the advertised UDP payload size (configuration).
  question-on-error  question present/absent in FORMERR/NOTIMP/REFUSED/BADVERS.

Cases judged on Meridian alone (Knot's answer shown for information): NSID
and CHAOS identity queries (Knot's identity is empty, as in the shared tool),
cases whose rules are implementation-defined (NOTIFY/UPDATE opcodes; malformed
queries, where FORMERR or silence are both fine), and QDCOUNT=2, where RFC 9619
requires FORMERR and Knot 3.2 stays silent.

Ports: KNOT_DIFF_KNOT_PORT and KNOT_DIFF_MERIDIAN_PORT (default: free ports).
Exit status: 0 all same or tolerated; 1 failures; 2 setup error (a server
would not start, or a zone did not load).
"""
import argparse
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

try:
    import dns.edns
    import dns.flags
    import dns.message
    import dns.name
    import dns.opcode
    import dns.rcode
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.zone
except ImportError:  # pragma: no cover
    sys.exit("knot_diff.py needs dnspython (pip install dnspython / apt-get install python3-dnspython)")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
IDENTITY = "difftest.meridian"
HOST = "127.0.0.1"
RT = dns.rdatatype

# Knot stops chasing a CNAME chain after this many links.
KNOT_CHAIN_LINKS = 5
# Types whose RDATA names additional-section processing may follow.
ADDITIONAL_SOURCE_TYPES = {"NS", "MX", "SRV", "SVCB", "HTTPS", "NAPTR"}
ERROR_RCODES = {"FORMERR", "NOTIMP", "REFUSED", "BADVERS", "NOTAUTH", "SERVFAIL"}
VARIANTS = [  # (label, transport, edns payload or None, DO)
    ("udp-noedns", "udp", None, False),
    ("udp-edns512", "udp", 512, False),
    ("udp-edns1232", "udp", 1232, False),
    ("udp-edns4096", "udp", 4096, False),
    ("udp-edns1232-do", "udp", 1232, True),
    ("tcp-edns1232", "tcp", 1232, False),
]


# ---------------------------------------------------------------------------
# queries

class Case:
    """One query sent to both servers.

    kind: 'diff' (compare), 'meridian' (judge Meridian by `expect` only).
    wire: a raw query to send verbatim instead of building one.
    stream: for TCP, raw bytes to send (framing tests); `nreplies` replies read.
    """

    def __init__(self, group, qname, qtype, transport="udp", edns=None, do=False, rd=False,
                 qclass="IN", options=None, ednsflags=0, ednsversion=0, opcode=0, wire=None,
                 stream=None, nreplies=1, split=None, expect=None, kind="diff", note=""):
        self.group, self.qname, self.qtype, self.qclass = group, qname, qtype, qclass
        self.transport, self.edns, self.do, self.rd = transport, edns, do, rd
        self.options, self.ednsflags, self.ednsversion = options or [], ednsflags, ednsversion
        self.opcode, self.raw, self.stream, self.nreplies = opcode, wire, stream, nreplies
        self.split, self.expect, self.kind, self.note = split, expect or {}, kind, note

    @property
    def key(self):
        return (self.group, self.qname, self.qtype, self.qclass, self.transport, self.edns, self.do,
                self.rd, tuple(o.otype for o in self.options), self.ednsflags, self.ednsversion,
                self.opcode, self.raw, self.stream, self.note)

    def describe(self):
        if self.note and (self.raw is not None or self.stream is not None):
            return "[%s] %s (%s)" % (self.group, self.note, self.transport)
        bits = ["%s %s %s" % (self.qname, self.qclass, self.qtype), self.transport]
        bits.append("noedns" if self.edns is None else "edns=%d" % self.edns)
        if self.do:
            bits.append("do")
        if self.rd:
            bits.append("rd")
        if self.ednsversion:
            bits.append("ednsversion=%d" % self.ednsversion)
        if self.ednsflags:
            bits.append("ednsflags=0x%x" % self.ednsflags)
        for o in self.options:
            bits.append("opt=%d" % o.otype)
        if self.opcode:
            bits.append("opcode=%d" % self.opcode)
        if self.note:
            bits.append("(%s)" % self.note)
        return "[%s] %s" % (self.group, " ".join(bits))

    def wire(self, qid):
        if self.raw is not None:
            return (struct.pack("!H", qid) + self.raw[2:]) if len(self.raw) >= 2 else self.raw
        m = dns.message.make_query(dns.name.from_text(self.qname), RT.from_text(self.qtype),
                                   rdclass=dns.rdataclass.from_text(self.qclass), use_edns=False)
        m.id = qid
        m.flags = dns.flags.RD if self.rd else 0
        m.set_opcode(self.opcode)
        if self.edns is not None:
            m.use_edns(self.ednsversion, (dns.flags.DO if self.do else 0) | self.ednsflags,
                       self.edns, options=self.options)
        return m.to_wire()

    def client_payload(self):
        return 512 if self.edns is None else max(512, self.edns)


def mixed_case(name, seed):
    """Deterministic mixed-case spelling of a name (0x20 style)."""
    rnd = random.Random(seed)
    out = []
    for ch in name:
        out.append(ch.upper() if ch.isalpha() and rnd.random() < 0.5 else ch.lower())
    s = "".join(out)
    if s.lower() == s and any(c.isalpha() for c in s):   # make sure something is upper case
        i = next(i for i, c in enumerate(s) if c.isalpha())
        s = s[:i] + s[i].upper() + s[i + 1:]
    return s


def load_zones(zonedir):
    zones = []
    for fn in sorted(os.listdir(zonedir)):
        if not fn.endswith(".zone"):
            continue
        origin = fn[:-5].rstrip(".") + "."
        path = os.path.join(zonedir, fn)
        z = dns.zone.from_file(path, origin=origin, relativize=False, check_origin=True)
        zones.append((origin, path, z))
    return zones


ABSENT_CANDIDATES = ["A", "AAAA", "TXT", "MX", "SRV", "NAPTR", "CAA", "PTR", "HINFO"]


def walk_cases(zones):
    """Zone-driven queries (each later multiplied by VARIANTS)."""
    base = []  # (group, qname, qtype, note)
    hosted = {o for o, _, _ in zones}
    for origin, _, z in zones:
        on = dns.name.from_text(origin)
        names = {n: {rds.rdtype for rds in node.rdatasets} for n, node in z.nodes.items()}
        cuts = {n for n, t in names.items() if RT.NS in t and n != on}
        dnames = {n for n, t in names.items() if RT.DNAME in t}

        def below(n, tops):
            return any(n != c and n.is_subdomain(c) for c in tops)

        # empty non-terminals
        ents = set()
        for n in names:
            p = n.parent() if n != on else None
            while p is not None and p != on and p.is_subdomain(on):
                if p not in names:
                    ents.add(p)
                p = p.parent()
        for n in sorted(names):
            t = names[n]
            text = n.to_text()
            # names in another hosted (child) zone are walked with that zone
            if any(h != origin and dns.name.from_text(h).is_subdomain(on) and n.is_subdomain(dns.name.from_text(h))
                   for h in hosted):
                continue
            for rt in sorted(t):
                base.append(("walk", text, RT.to_text(rt), "has"))
            absent = next(a for a in ABSENT_CANDIDATES if RT.from_text(a) not in t)
            base.append(("walk", text, absent, "absent type"))
            if not below(n, cuts | dnames):
                base.append(("walk", "nx-probe." + text, "A", "below owner"))
            base.append(("walk", mixed_case(text, text), RT.to_text(sorted(t)[0]), "mixed case"))
            if n.labels[0] == b"*":
                parent = n.parent().to_text()
                for rt in sorted(t):
                    base.append(("wildcard", "synth-1." + parent, RT.to_text(rt), "synthesis"))
                base.append(("wildcard", "synth-1." + parent, absent, "synthesis, absent type"))
                base.append(("wildcard", "two.labels." + parent, RT.to_text(sorted(t)[0]), "multi-label synthesis"))
                base.append(("wildcard", mixed_case("MiXed-Synth." + parent, parent),
                             RT.to_text(sorted(t)[0]), "mixed-case synthesis"))
            if n in cuts:
                for qt in ("NS", "DS", "A", "AAAA", "SOA"):
                    base.append(("cut", text, qt, "at cut"))
                base.append(("cut", "host." + text, "A", "below cut"))
                base.append(("cut", "a.b." + text, "MX", "below cut"))
        for n in sorted(ents):
            if below(n, dnames):
                continue
            for qt in ("A", "TXT", "NS"):
                base.append(("ent", n.to_text(), qt, "empty non-terminal"))
            base.append(("ent", "nx-probe." + n.to_text(), "A", "below ENT"))
    cases = []
    for group, qname, qtype, note in base:
        for label, transport, edns, do in VARIANTS:
            cases.append(Case(group, qname, qtype, transport=transport, edns=edns, do=do, note=note))
    return cases


def extra_cases():
    """Hand-written cases pinned to an RFC or a known corner."""
    long_prefix = "x" * 50 + "." + "y" * 10
    rows = [
        # (qname, qtype, note)
        ("%s.dname-long.example.test." % long_prefix, "A", "RFC 6672 §2.2: synthesized name too long -> YXDOMAIN"),
        ("host.dname-in.example.test.", "A", "DNAME to a name inside the zone"),
        ("alias.dname-in.example.test.", "A", "DNAME then CNAME"),
        ("host.dname-chain.example.test.", "AAAA", "DNAME to a DNAME"),
        ("a.b.dname-out.example.test.", "TXT", "DNAME out of zone, two labels"),
        ("x.dname-nx.example.test.", "A", "DNAME to a name that does not exist"),
        ("host.dname-other.example.test.", "A", "DNAME into another hosted zone"),
        ("dname-in.example.test.", "DNAME", "the DNAME itself"),
        ("host.dname-in.example.test.", "CNAME", "qtype CNAME below a DNAME: the synthesized CNAME answers"),
        ("nothere.dname-in.example.test.", "CNAME", "qtype CNAME below a DNAME, target absent"),
        ("alias.dname-in.example.test.", "CNAME", "qtype CNAME below a DNAME, target is a CNAME"),
        ("host.dname-in.example.test.", "DNAME", "qtype DNAME below a DNAME"),
        ("x.host.dname-chain.example.test.", "CNAME", "qtype CNAME through two DNAMEs"),
        ("x.deleg.example.test.", "DS", "DS below a cut: referral"),
        ("ns1.deleg.example.test.", "NS", "NS at a glue name: referral"),
        ("www.redirect.test.", "A", "DNAME at the apex"),
        ("a.b.c.redirect.test.", "MX", "DNAME at the apex, deep"),
        ("redirect.test.", "DNAME", "apex DNAME itself"),
        ("sub.example.test.", "DS", "DS of a hosted child: answered by the parent"),
        ("sub.example.test.", "NS", "hosted child apex NS: answered by the child"),
        ("sub.example.test.", "SOA", "hosted child apex SOA"),
        ("deeper.sub.example.test.", "DS", "DS at a cut inside the child"),
        ("example.test.", "DS", "DS at an apex whose parent is not hosted"),
        ("www.example.test.", "DS", "DS where there is no cut"),
        ("nothere.example.test.", "DS", "DS of a name that does not exist"),
        ("*.wild.example.test.", "A", "the wildcard owner itself"),
        ("*.wild.example.test.", "AAAA", "the wildcard owner itself, absent type"),
        ("x.*.wild.example.test.", "A", "below the wildcard owner"),
        ("exists.wild.example.test.", "TXT", "existing name blocks synthesis"),
        ("foo.exists.wild.example.test.", "A", "below an existing name under a wildcard"),
        ("ent-in.wild.example.test.", "A", "ENT under a wildcard blocks synthesis"),
        ("foo.ent-in.wild.example.test.", "A", "below an ENT under a wildcard"),
        ("foo.ent-wild.example.test.", "A", "synthesis from an ENT wildcard: NODATA"),
        ("foo.under.ent-above.example.test.", "A", "wildcard below an ENT"),
        ("under.ent-above.example.test.", "A", "the ENT above a wildcard"),
        ("foo.nx-wild.example.test.", "A", "wildcard CNAME to NXDOMAIN"),
        ("foo.cname-wild.example.test.", "AAAA", "wildcard CNAME"),
        ("foo.cname-wild.example.test.", "CNAME", "wildcard CNAME, qtype CNAME"),
        ("cname-wild-target.example.test.", "MX", "CNAME to a synthesized name"),
        ("chain1.example.test.", "A", "8-link chain"),
        ("chain4.example.test.", "A", "5-link chain"),
        ("chain1.example.test.", "CNAME", "qtype CNAME does not chase"),
        ("loop1.example.test.", "A", "CNAME loop"),
        ("selfloop.example.test.", "TXT", "CNAME to itself"),
        ("cname-chainnx.example.test.", "A", "chain to NXDOMAIN"),
        ("cname-deleg.example.test.", "A", "CNAME into a delegation"),
        ("cname-child.example.test.", "A", "CNAME into the hosted child"),
        ("cname-dname.example.test.", "A", "CNAME into a DNAME"),
        ("cname-other.example.test.", "A", "CNAME into another hosted zone"),
        ("back.other.test.", "A", "CNAME back into example.test"),
        ("up.sub.example.test.", "AAAA", "child CNAME to parent"),
        ("host.deeper.sub.example.test.", "A", "referral inside the child"),
        ("ns1.deleg.example.test.", "A", "glue name: referral"),
        ("ns1.deleg.example.test.", "AAAA", "glue name: referral"),
        ("foo.big-deleg.example.test.", "A", "13-NS referral (RFC 9471)"),
        ("mx-many.example.test.", "MX", "20 MX with in-zone targets"),
        ("x.cut.wild.test.", "A", "cut below an apex wildcard"),
        ("anything.wild.test.", "AAAA", "apex wildcard"),
        ("a.b.wild.test.", "TXT", "apex wildcard, NODATA"),
        ("193.2.0.192.in-addr.arpa.", "PTR", "RFC 2317 CNAME into a delegated range"),
        ("195.192/26.2.0.192.in-addr.arpa.", "PTR", "RFC 2317 range: referral"),
        ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR", "v6 PTR"),
        ("0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR", "v6 ENT"),
        ("EXAMPLE.TEST.", "SOA", "upper-case apex"),
        ("example.test.", "TYPE65280", "RFC 3597 type by number"),
        ("generic.example.test.", "TYPE65282", "RFC 3597 data"),
        ("generic.example.test.", "TYPE65535", "absent unknown type"),
    ]
    cases = []
    for qname, qtype, note in rows:
        for label, transport, edns, do in VARIANTS:
            cases.append(Case("extra", qname, qtype, transport=transport, edns=edns, do=do, note=note))
    # RD is copied, RA stays clear
    cases.append(Case("extra", "www.example.test.", "A", edns=1232, rd=True, note="RD set"))
    cases.append(Case("extra", "nothere.example.test.", "A", rd=True, note="RD set, NXDOMAIN"))
    return cases


def header(qid, flags, qd, an, ns, ar):
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def qsection(name, qtype, qclass=1):
    return dns.name.from_text(name).to_wire() + struct.pack("!HH", RT.from_text(qtype), qclass)


OPT_RR = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)


def proto_cases():
    c = []
    soa = ("example.test.", "SOA")
    # EDNS
    c.append(Case("proto", *soa, edns=1232, ednsversion=1, note="EDNS version 1",
                  expect={"rcode": "BADVERS", "edns_version": 0}))
    c.append(Case("proto", "www.example.test.", "A", edns=1232, ednsversion=1, do=True, note="EDNS version 1 + DO",
                  expect={"rcode": "BADVERS", "edns_version": 0}))
    c.append(Case("proto", "www.example.test.", "A", edns=1232,
                  options=[dns.edns.GenericOption(65001, b"unknown option")], note="unknown EDNS option",
                  expect={"rcode": "NOERROR", "no_option": 65001}))
    c.append(Case("proto", "www.example.test.", "A", edns=1232, ednsflags=0x4000, note="unknown EDNS flag",
                  expect={"rcode": "NOERROR", "zflags": 0}))
    c.append(Case("proto", "www.example.test.", "A", edns=0, note="EDNS payload 0 (treated as 512)",
                  expect={"rcode": "NOERROR"}))
    c.append(Case("proto", "big40.example.test.", "A", edns=100, note="EDNS payload 100: 512 applies"))
    c.append(Case("proto", "big40.example.test.", "A", edns=65535, note="EDNS payload 65535"))
    c.append(Case("proto", "big40.example.test.", "A", edns=600, note="EDNS payload 600: truncates"))
    c.append(Case("proto", "big40.example.test.", "A", edns=700, note="EDNS payload 700: fits"))
    c.append(Case("proto", "bigtxt.example.test.", "TXT", edns=65535, do=True, note="large TXT, DO"))
    # QR=1: no answer from either
    q = qsection("www.example.test.", "A")
    c.append(Case("proto", "www.example.test.", "A", wire=header(0, 0x8000, 1, 0, 0, 0) + q,
                  note="QR=1 (a response): drop", expect={"no_response": True}))
    c.append(Case("proto", "www.example.test.", "A", transport="tcp", wire=header(0, 0x8000, 1, 0, 0, 0) + q,
                  note="QR=1 over TCP: no answer", expect={"no_response": True}))
    # opcodes
    for op in (1, 2, 3, 6, 15):
        c.append(Case("proto", *soa, opcode=op, note="opcode %d" % op, expect={"rcode": "NOTIMP"}))
    c.append(Case("proto", *soa, opcode=3, edns=1232, note="opcode 3 with EDNS", expect={"rcode": "NOTIMP"}))
    for op in (4, 5):
        c.append(Case("proto", *soa, opcode=op, kind="meridian", note="opcode %d without permission" % op,
                      expect={"rcode_in": ["REFUSED", "NOTAUTH", "NOTIMP"]}))
    # outside our zones
    for name in ("www.example.org.", ".", "test.", "xample.test.", "example.test.example.org.", "arpa."):
        c.append(Case("proto", name, "A", note="outside our zones", expect={"rcode": "REFUSED"}))
    c.append(Case("proto", "www.example.org.", "A", edns=1232, note="outside our zones, EDNS",
                  expect={"rcode": "REFUSED"}))
    # QDCOUNT 0 and 2 (RFC 9619)
    c.append(Case("proto", "-", "-", wire=header(0, 0, 0, 0, 0, 0), note="QDCOUNT=0",
                  expect={"rcode": "FORMERR"}))
    c.append(Case("proto", "-", "-", wire=header(0, 0, 0, 0, 0, 1) + OPT_RR, note="QDCOUNT=0 with OPT",
                  expect={"rcode": "FORMERR"}))
    # RFC 9619 §4 requires FORMERR for QDCOUNT > 1; Knot 3.2 predates it and drops the query
    # (closes the TCP connection), so Meridian is judged on its own here.
    c.append(Case("proto", "-", "-", wire=header(0, 0, 2, 0, 0, 0) + q + qsection("mail.example.test.", "A"),
                  kind="meridian", note="QDCOUNT=2 (RFC 9619)", expect={"rcode": "FORMERR"}))
    c.append(Case("proto", "-", "-", transport="tcp",
                  wire=header(0, 0, 2, 0, 0, 0) + q + qsection("mail.example.test.", "A"),
                  kind="meridian", note="QDCOUNT=2 over TCP (RFC 9619)", expect={"rcode": "FORMERR"}))
    c.append(Case("proto", "-", "-", wire=header(0, 0, 2, 0, 0, 1) + q + qsection("mail.example.test.", "A") + OPT_RR,
                  kind="meridian", note="QDCOUNT=2 with OPT (RFC 9619)", expect={"rcode": "FORMERR"}))
    # malformed queries: FORMERR or no answer are both fine (RFC 1035 §4.1.1), judged on Meridian alone
    name3 = b"\x03www\x07example\x04test"
    for note, wire in (
            ("compression pointer in the question", header(0, 0, 1, 0, 0, 0) + b"\x03www\xc0\x0c" + b"\x00\x01\x00\x01"),
            ("question cut short", header(0, 0, 1, 0, 0, 0) + q[:-2]),
            ("reserved label type 0x40", header(0, 0, 1, 0, 0, 0) + b"\x43www\x00\x00\x01\x00\x01"),
            ("256-octet name", header(0, 0, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 3 + b"\x3e" + b"b" * 62 + b"\x00" +
             b"\x00\x01\x00\x01"),
            ("two OPT records", header(0, 0, 1, 0, 0, 2) + q + OPT_RR + OPT_RR),
            ("OPT RDATA overruns", header(0, 0, 1, 0, 0, 1) + q + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 8) +
             b"\x00\x0a\x00\x10abcd"),
            ("ARCOUNT 1 with nothing behind it", header(0, 0, 1, 0, 0, 1) + name3 + b"\x00\x00\x01\x00\x01"),
            ("header only, 11 octets", header(0, 0, 1, 0, 0, 0)[:11])):
        for transport in ("udp", "tcp"):
            c.append(Case("malformed", "-", "-", transport=transport, wire=wire, kind="meridian", note=note,
                          expect={"rcode_or_drop": "FORMERR"}))
    # NSID and CHAOS identity: Knot runs with an empty identity, so Meridian is judged alone
    c.append(Case("proto", *soa, edns=1232, options=[dns.edns.GenericOption(3, b"")], kind="meridian",
                  note="NSID", expect={"rcode": "NOERROR", "nsid": IDENTITY}))
    c.append(Case("proto", *soa, edns=1232, options=[dns.edns.GenericOption(3, b"")], transport="tcp",
                  kind="meridian", note="NSID over TCP", expect={"rcode": "NOERROR", "nsid": IDENTITY}))
    for name in ("id.server.", "hostname.bind.", "ID.Server."):
        c.append(Case("proto", name, "TXT", qclass="CH", kind="meridian", note="CHAOS identity",
                      expect={"rcode": "NOERROR", "chaos_txt": IDENTITY}))
    c.append(Case("proto", "id.server.", "TXT", qclass="CH", edns=1232, transport="tcp", kind="meridian",
                  note="CHAOS identity over TCP", expect={"rcode": "NOERROR", "chaos_txt": IDENTITY}))
    c.append(Case("proto", "version.bind.", "TXT", qclass="CH", note="CHAOS version: not disclosed"))
    c.append(Case("proto", "version.server.", "TXT", qclass="CH", note="CHAOS version: not disclosed"))
    c.append(Case("proto", "www.example.test.", "TXT", qclass="CH", note="CHAOS outside id.server"))
    # TCP framing: three queries in one write; a length prefix split across writes
    qs = [Case("tcp", n, t, edns=1232).wire(0) for n, t in
          (("www.example.test.", "A"), ("mail.example.test.", "AAAA"), ("nothere.example.test.", "TXT"))]
    qs = [struct.pack("!H", i + 1) + w[2:] for i, w in enumerate(qs)]
    stream = b"".join(struct.pack("!H", len(w)) + w for w in qs)
    c.append(Case("proto", "-", "-", transport="tcp", stream=stream, nreplies=3,
                  note="TCP pipelining: 3 queries in one write"))
    one = qs[0]
    c.append(Case("proto", "-", "-", transport="tcp", stream=struct.pack("!H", len(one)) + one, split=1,
                  note="TCP length prefix split across two writes"))
    c.append(Case("proto", "-", "-", transport="tcp", stream=struct.pack("!H", len(one)) + one, split=7,
                  note="TCP message split across two writes"))
    return c


# ---------------------------------------------------------------------------
# transport

class Reply:
    def __init__(self, status, wires=(), error=None):
        self.status = status            # ok | timeout | closed | error
        self.wires = list(wires)
        self.error = error


def exchange(case, port, qid, timeout=2.0):
    if case.transport == "udp":
        payload = case.wire(qid)
        for attempt in range(2 if not case.expect.get("no_response") else 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(timeout if not case.expect.get("no_response") else 1.0)
            try:
                s.sendto(payload, (HOST, port))
                while True:
                    data, addr = s.recvfrom(65535)
                    if data[:2] == payload[:2]:
                        return Reply("ok", [data])
            except socket.timeout:
                continue
            except OSError as e:
                return Reply("error", error=str(e))
            finally:
                s.close()
        return Reply("timeout")
    # TCP
    if case.stream is not None:
        stream = case.stream
    else:
        w = case.wire(qid)
        stream = struct.pack("!H", len(w)) + w
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout if not case.expect.get("no_response") else 1.5)
    wires = []
    try:
        s.connect((HOST, port))
        if case.split:
            s.sendall(stream[:case.split])
            time.sleep(0.15)
            s.sendall(stream[case.split:])
        else:
            s.sendall(stream)
        for _ in range(case.nreplies):
            head = _recv_exact(s, 2)
            if head is None:
                return Reply("closed" if not wires else "ok", wires)
            body = _recv_exact(s, struct.unpack("!H", head)[0])
            if body is None:
                return Reply("closed", wires)
            wires.append(body)
        return Reply("ok", wires)
    except socket.timeout:
        return Reply("timeout" if not wires else "ok", wires)
    except OSError as e:
        return Reply("error", wires, error=str(e))
    finally:
        s.close()


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


# ---------------------------------------------------------------------------
# normalisation

FLAGS = ["AA", "TC", "RD", "RA", "AD", "CD"]


def raw_question(wire):
    """The question section bytes exactly as sent, or None."""
    if len(wire) < 12 or struct.unpack("!H", wire[4:6])[0] == 0:
        return None
    i = 12
    try:
        while wire[i] != 0:
            if wire[i] & 0xC0:
                return wire[12:i + 6]
            i += 1 + wire[i]
    except IndexError:
        return None
    return wire[12:i + 5]


def rr_lines(section):
    out = set()
    for rrset in section:
        if rrset.rdtype == RT.OPT:
            continue
        owner = rrset.name.to_text().lower()
        for rd in rrset:
            try:
                w = rd.to_digestable()
                txt = dns.rdata.from_wire(rrset.rdclass, rrset.rdtype, w, 0, len(w)).to_text()
            except Exception:  # noqa: BLE001 - keep the original text
                txt = rd.to_text()
            out.add("%s %d %s %s %s" % (owner, rrset.ttl, dns.rdataclass.to_text(rrset.rdclass),
                                        RT.to_text(rrset.rdtype), txt))
    return out


def normalise(wire):
    m = dns.message.from_wire(wire, keyring=False, ignore_trailing=False, one_rr_per_rrset=False)
    v = {
        "id": m.id,
        "rcode": dns.rcode.to_text(m.rcode()),
        "opcode": dns.opcode.to_text(m.opcode()),
        "qr": bool(m.flags & dns.flags.QR),
        "flags": [f for f in FLAGS if m.flags & getattr(dns.flags, f)],
        "question": ["%s %s %s" % (q.name.to_text(), dns.rdataclass.to_text(q.rdclass), RT.to_text(q.rdtype))
                     for q in m.question],
        "edns": None,
        "answer": rr_lines(m.answer),
        "authority": rr_lines(m.authority),
        "additional": rr_lines(m.additional),
        "size": len(wire),
        "msg": m,
    }
    if m.edns >= 0:
        v["edns"] = {"version": m.edns, "do": bool(m.ednsflags & dns.flags.DO),
                     "zflags": m.ednsflags & 0x7FFF, "payload": m.payload,
                     "options": sorted((o.otype, o.to_wire() if hasattr(o, "to_wire") else b"")
                                       for o in m.options)}
    return v


def view_of(reply):
    """List of normalised messages, or a status string."""
    if reply.status != "ok":
        return reply.status
    out = []
    for w in reply.wires:
        try:
            out.append(normalise(w))
        except Exception as e:  # noqa: BLE001
            return "unparseable: %s: %s" % (type(e).__name__, e)
    return out


def render(v, indent="      "):
    if isinstance(v, str):
        return indent + v
    lines = []
    for i, m in enumerate(v):
        hdr = "%s %s flags=%s" % (m["opcode"], m["rcode"], " ".join(m["flags"]) or "-")
        if m["edns"] is not None:
            e = m["edns"]
            hdr += " | EDNS v%d payload=%d%s%s%s" % (e["version"], e["payload"], " DO" if e["do"] else "",
                                                 " z=0x%x" % e["zflags"] if e["zflags"] else "",
                                                 (" opts=" + ",".join(str(o[0]) for o in e["options"]))
                                                 if e["options"] else "")
        else:
            hdr += " | no EDNS"
        hdr += " | %d octets" % m["size"]
        if len(v) > 1:
            hdr = "#%d %s" % (i + 1, hdr)
        lines.append(indent + hdr)
        lines.append(indent + "  question: " + ("; ".join(m["question"]) or "(none)"))
        for sec in ("answer", "authority", "additional"):
            for x in sorted(m[sec]):
                lines.append(indent + "  %-10s %s" % (sec[:4] + ":", x))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# comparison

def referenced_names(lines):
    """Names that optional additional processing may add A/AAAA for."""
    names = set()
    for x in lines:
        p = x.split()
        t = p[3]
        if t not in ADDITIONAL_SOURCE_TYPES:
            continue
        if t in ("SVCB", "HTTPS"):
            target = p[5].lower()
            names.add(p[0] if target == "." else target)
        else:
            names.add(p[-1].lower())
    return names


def chain(lines, qname):
    """Follow CNAMEs from qname through a set of answer lines: list of names visited."""
    cn = {}
    for x in lines:
        p = x.split()
        if p[3] == "CNAME":
            cn[p[0]] = p[4].lower()
    out = [qname.lower()]
    while out[-1] in cn and len(out) < 40:
        nxt = cn[out[-1]]
        if nxt in out:
            break
        out.append(nxt)
    return out


def cname_cut_short(ref, tgt, qname):
    """True if Knot's answer is the first links of our (longer) chain, cut at Knot's limit."""
    a, b = ref["answer"], tgt["answer"]
    if not a < b:
        return False
    rc, tc = chain(a, qname), chain(b, qname)
    links = len(rc) - 1
    if links < KNOT_CHAIN_LINKS or tc[:len(rc)] != rc or len(tc) <= len(rc) - 1:
        return False
    last = rc[-1]
    # Knot's answer holds the chain up to `last` and nothing for `last` itself
    if any(x.split()[0] == last for x in a):
        return False
    # everything Meridian adds belongs to the rest of the chain (or DNAMEs above it)
    rest = set(tc[len(rc) - 1:])
    for x in b - a:
        owner, t = x.split()[0], x.split()[3]
        if owner not in rest and t != "DNAME":
            return False
    return True


def compare(ref, tgt, case):
    """Differences between Knot (ref) and Meridian (tgt): list of (tolerated, tag, detail)."""
    out = []
    if isinstance(ref, str) or isinstance(tgt, str):
        silent = {"timeout", "closed"}
        if isinstance(ref, str) and isinstance(tgt, str) and (ref == tgt or (ref in silent and tgt in silent)):
            return out
        out.append((False, "response", "knot=%s meridian=%s" % (
            ref if isinstance(ref, str) else "answer", tgt if isinstance(tgt, str) else "answer")))
        return out
    if len(ref) != len(tgt):
        out.append((False, "replies", "knot=%d meridian=%d" % (len(ref), len(tgt))))
    for i, (r, t) in enumerate(zip(ref, tgt)):
        pre = "#%d " % (i + 1) if len(ref) > 1 else ""
        qname = case.qname if case.stream is None else (r["question"][0].split()[0] if r["question"] else ".")
        out += [(tol, pre + tag, d) for tol, tag, d in compare_one(r, t, qname)]
    return out


def compare_one(r, t, qname):
    d = []
    chain_cut = cname_cut_short(r, t, qname)
    if r["id"] != t["id"]:
        d.append((False, "id", "knot=%d meridian=%d" % (r["id"], t["id"])))
    for k in ("opcode", "qr"):
        if r[k] != t[k]:
            d.append((False, k, "knot=%s meridian=%s" % (r[k], t[k])))
    if r["rcode"] != t["rcode"]:
        d.append((chain_cut, "rcode" + (" (cname-chain)" if chain_cut else ""),
                  "knot=%s meridian=%s" % (r["rcode"], t["rcode"])))
    for f in FLAGS:
        if (f in r["flags"]) != (f in t["flags"]):
            d.append((False, "flag-" + f, "knot=%d meridian=%d" % (f in r["flags"], f in t["flags"])))
    if r["question"] != t["question"]:
        tol = r["rcode"] == t["rcode"] and r["rcode"] in ERROR_RCODES
        d.append((tol, "question" + (" (on error)" if tol else ""),
                  "knot=%s meridian=%s" % (r["question"], t["question"])))
    re_, te = r["edns"], t["edns"]
    if (re_ is None) != (te is None):
        d.append((False, "edns-presence", "knot=%s meridian=%s" % (re_ is not None, te is not None)))
    elif re_ is not None:
        for k in ("version", "do", "zflags"):
            if re_[k] != te[k]:
                d.append((False, "edns-" + k, "knot=%s meridian=%s" % (re_[k], te[k])))
        if re_["payload"] != te["payload"]:
            d.append((True, "edns-payload", "knot=%s meridian=%s" % (re_["payload"], te["payload"])))
        if re_["options"] != te["options"]:
            d.append((True, "edns-option", "knot=%s meridian=%s" % (
                [o[0] for o in re_["options"]], [o[0] for o in te["options"]])))
    if "TC" in r["flags"] and "TC" in t["flags"]:
        return d
    for sec in ("answer", "authority"):
        if r[sec] != t[sec]:
            tag = sec + (" TTL" if ttl_only(r[sec], t[sec]) else "") + (" (cname-chain)" if chain_cut else "")
            d.append((chain_cut, tag, setdiff(r[sec], t[sec])))
    if r["additional"] != t["additional"]:
        diff = r["additional"] ^ t["additional"]
        refs = referenced_names(r["answer"] | r["authority"] | t["answer"] | t["authority"])
        required = in_domain_glue_names(r) | in_domain_glue_names(t)
        if any(x.split()[0] in required for x in diff):
            d.append((False, "in-domain glue (RFC 9471: not optional)", setdiff(r["additional"], t["additional"])))
        else:
            # an RRset one side adds and the other leaves out is optional; the same RRset with
            # different records or TTLs on both sides is not
            key = lambda x: (x.split()[0], x.split()[3])  # noqa: E731
            both = {key(x) for x in r["additional"]} & {key(x) for x in t["additional"]}
            ok = all(x.split()[3] in ("A", "AAAA") and x.split()[0] in refs and key(x) not in both for x in diff)
            d.append((ok or chain_cut, "additional" + (" (optional A/AAAA)" if ok else ""),
                      setdiff(r["additional"], t["additional"])))
    return d


def in_domain_glue_names(m):
    """For a referral: the NS targets at or below the cut, whose glue is mandatory (RFC 9471)."""
    if m["rcode"] != "NOERROR" or m["answer"] or "AA" in m["flags"]:
        return set()
    ns = [x.split() for x in m["authority"] if x.split()[3] == "NS"]
    if not ns:
        return set()
    cut = dns.name.from_text(ns[0][0])
    return {p[4].lower() for p in ns if dns.name.from_text(p[4]).is_subdomain(cut)}


def ttl_only(a, b):
    strip = lambda lines: {x.split(" ", 2)[0] + " " + x.split(" ", 2)[2] for x in lines}  # noqa: E731
    return strip(a) == strip(b)


def setdiff(a, b):
    lines = ["- knot     " + x for x in sorted(a - b)] + ["+ meridian " + x for x in sorted(b - a)]
    if len(lines) > 16:
        lines = lines[:16] + ["... %d more" % (len(lines) - 16)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# invariants and expectations on Meridian's answers

def invariants(case, qwire, reply, v):
    bad = []
    if isinstance(v, str):
        return bad
    if case.stream is not None:
        if len(v) != case.nreplies:
            bad.append("expected %d replies on the connection, got %d" % (case.nreplies, len(v)))
        return bad
    m = v[0]
    wire = reply.wires[0]
    if not m["qr"]:
        bad.append("QR not set")
    if wire[:2] != qwire[:2]:
        bad.append("message ID not copied")
    qhdr = struct.unpack("!H", qwire[2:4])[0]
    if m["opcode"] != dns.opcode.to_text((qhdr >> 11) & 0xF):
        bad.append("opcode not copied")
    if (qhdr & 0x0100) and "RD" not in m["flags"]:
        bad.append("RD not copied")
    if "RA" in m["flags"]:
        bad.append("RA set by an authoritative-only server")
    rq, qq = raw_question(wire), raw_question(qwire)
    if rq is not None and rq != qq:
        bad.append("question not echoed byte for byte: sent %r got %r" % (qq, rq))
    if rq is None and qq is not None and m["rcode"] not in ERROR_RCODES:
        bad.append("question missing in a %s answer" % m["rcode"])
    query_has_opt = case.raw is None and case.edns is not None or (case.raw is not None and OPT_RR in case.raw)
    if case.group == "malformed":
        pass   # the OPT may be what is malformed (RFC 6891 §6.1.1, §7): no OPT rule
    elif query_has_opt and m["edns"] is None:
        bad.append("no OPT in the answer to a query with OPT (RFC 6891 §7)")
    elif not query_has_opt and m["edns"] is not None:
        bad.append("OPT in the answer to a query without OPT")
    if m["edns"] is not None:
        if m["edns"]["version"] != 0:
            bad.append("answer OPT version %d" % m["edns"]["version"])
        if m["edns"]["zflags"]:
            bad.append("non-zero EDNS Z flags in the answer")
        if case.do and not m["edns"]["do"]:
            bad.append("DO not copied (RFC 3225)")
    if case.transport == "udp" and m["size"] > case.client_payload():
        bad.append("UDP answer of %d octets exceeds max(512, client payload %s)" % (m["size"], case.edns))
    if case.transport == "tcp" and "TC" in m["flags"]:
        bad.append("TC set over TCP")
    if m["rcode"] == "NXDOMAIN" and "AA" not in m["flags"]:
        bad.append("NXDOMAIN without AA")
    referral = (m["rcode"] == "NOERROR" and not m["answer"] and
                any(x.split()[3] == "NS" for x in m["authority"]) and
                not any(x.split()[3] == "SOA" for x in m["authority"]))
    if referral:
        if "AA" in m["flags"]:
            bad.append("referral with AA=1")
        if "TC" not in m["flags"]:
            cut = next(x.split()[0] for x in m["authority"] if x.split()[3] == "NS")
            targets = {x.split()[4].lower() for x in m["authority"] if x.split()[3] == "NS"}
            have = {x.split()[0] for x in m["additional"]}
            for tname in sorted(targets):
                if dns.name.from_text(tname).is_subdomain(dns.name.from_text(cut)) and tname not in have:
                    bad.append("in-domain glue for %s missing and TC clear (RFC 9471)" % tname)
    if m["rcode"] in ("NOERROR", "NXDOMAIN") and m["answer"] and case.qtype not in ("ANY",):
        first = m["msg"].answer[0]
        if first.rdtype != RT.DNAME and first.name.to_text().lower() != case.qname.lower():
            bad.append("answer does not start with the QNAME's RRset")
    return bad


def expectations(case, v):
    e = case.expect
    bad = []
    if not e:
        return bad
    if "rcode_or_drop" in e:
        if not isinstance(v, str) and v[0]["rcode"] != e["rcode_or_drop"]:
            bad.append("expected %s or no answer, got %s" % (e["rcode_or_drop"], v[0]["rcode"]))
        return bad
    if e.get("no_response"):
        if not isinstance(v, str):
            bad.append("expected no response, got %s" % v[0]["rcode"])
        return bad
    if isinstance(v, str):
        return ["expected an answer, got %s" % v]
    m = v[0]
    if "rcode" in e and m["rcode"] != e["rcode"]:
        bad.append("expected rcode %s, got %s" % (e["rcode"], m["rcode"]))
    if "rcode_in" in e and m["rcode"] not in e["rcode_in"]:
        bad.append("expected rcode in %s, got %s" % (e["rcode_in"], m["rcode"]))
    if "edns_version" in e:
        got = m["edns"]["version"] if m["edns"] else None
        if got != e["edns_version"]:
            bad.append("expected OPT version %s, got %s" % (e["edns_version"], got))
    if "zflags" in e and m["edns"] and m["edns"]["zflags"] != e["zflags"]:
        bad.append("unknown EDNS flags echoed")
    if "no_option" in e and m["edns"] and any(o[0] == e["no_option"] for o in m["edns"]["options"]):
        bad.append("unknown EDNS option %d echoed" % e["no_option"])
    if "nsid" in e:
        opts = dict(m["edns"]["options"]) if m["edns"] else {}
        got = opts.get(3)
        if got is None:
            bad.append("no NSID option in the answer")
        elif got != e["nsid"].encode():
            bad.append("NSID %r, expected %r" % (got, e["nsid"]))
    if "chaos_txt" in e:
        want = '%s 0 CH TXT "%s"' % (case.qname.lower(), e["chaos_txt"])
        if m["answer"] != {want}:
            bad.append("expected answer {%s}, got %s" % (want, sorted(m["answer"])))
        if "AA" not in m["flags"]:
            bad.append("CHAOS identity answer without AA")
    return bad


# ---------------------------------------------------------------------------
# servers

def free_port():
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((HOST, 0))
        port = s.getsockname()[1]
        s.close()
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind((HOST, port))
            return port
        except OSError:
            continue
        finally:
            t.close()
    raise RuntimeError("no free port")


def wait_answers(port, zones, proc, timeout=20.0):
    """Wait until the server answers SOA authoritatively for every zone; return those that fail."""
    deadline = time.time() + timeout
    pending = [o for o, _, _ in zones]
    while pending and time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("exited with status %s" % proc.returncode)
        still = []
        for origin in pending:
            q = dns.message.make_query(origin, "SOA", use_edns=False)
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(0.3)
                s.sendto(q.to_wire(), (HOST, port))
                r = dns.message.from_wire(s.recvfrom(65535)[0])
                s.close()
                if r.rcode() == dns.rcode.NOERROR and r.answer and r.answer[0].rdtype == RT.SOA:
                    continue
            except Exception:  # noqa: BLE001
                pass
            still.append(origin)
        pending = still
        if pending:
            time.sleep(0.2)
    return pending


class Server:
    def __init__(self, name, cmd, workdir, log):
        self.name, self.cmd, self.workdir, self.logpath = name, cmd, workdir, log
        self.proc = None

    def start(self):
        self.logf = open(self.logpath, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.logf, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     start_new_session=True)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # our own child, by PID
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self.logf.close()

    def log(self):
        with open(self.logpath) as f:
            return f.read()


def knot_config(workdir, port, zones):
    lines = [
        "server:",
        '    rundir: "%s"' % workdir,
        "    listen: %s@%d" % (HOST, port),
        '    identity: ""',
        '    version: ""',
        "database:",
        '    storage: "%s/db"' % workdir,
        "log:",
        "  - target: stdout",
        "    any: info",
        "template:",
        "  - id: default",
        "    semantic-checks: off",
        "    zonefile-sync: -1",
        "    zonefile-load: whole",
        "    journal-content: none",
        "zone:",
    ]
    for origin, path, _ in zones:
        lines += ['  - domain: "%s"' % origin, '    file: "%s"' % os.path.abspath(path)]
    path = os.path.join(workdir, "knot.conf")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.makedirs(os.path.join(workdir, "db"), exist_ok=True)
    return path


def knot_log_problems(log, zones):
    problems = []
    for origin, _, _ in zones:
        if not re.search(r"\[%s\] loaded, serial" % re.escape(origin), log):
            problems.append("knotd did not load %s" % origin)
    for line in log.splitlines():
        if re.search(r"\b(error|warning):", line) and "database storage" not in line \
                and "stale PID" not in line:
            problems.append("knotd log: " + line.strip())
    return problems


# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meridian", default=os.path.join(REPO, "target", "release", "meridian"))
    ap.add_argument("--zones", default=os.path.join(REPO, "tests", "zones"))
    ap.add_argument("--knotd", default=shutil.which("knotd") or "/usr/sbin/knotd")
    ap.add_argument("--filter", help="only cases whose description matches this regex")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--jobs", type=int, default=4, help="queries in flight (default 4)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, knot.conf)")
    ap.add_argument("-v", "--verbose", action="store_true", help="also print tolerated differences")
    ap.add_argument("--show", action="store_true", help="print both answers of every case run (use with --filter)")
    ap.add_argument("--meridian-zones", help="serve Meridian this zone directory instead of --zones "
                    "(to check that the harness catches differences)")
    args = ap.parse_args()

    zones = load_zones(args.zones)
    if not zones:
        print("no <origin>.zone files in %s" % args.zones)
        return 2
    cases = walk_cases(zones) + extra_cases() + proto_cases()
    seen, uniq = set(), []
    for c in cases:
        if c.key not in seen:
            seen.add(c.key)
            uniq.append(c)
    cases = uniq
    if args.filter:
        rx = re.compile(args.filter)
        cases = [c for c in cases if rx.search(c.describe())]
    if args.list:
        for c in cases:
            print(c.describe())
        return 0

    for tool in (args.meridian, args.knotd):
        if not (os.path.isfile(tool) and os.access(tool, os.X_OK)):
            print("not found or not executable: %s" % tool)
            return 2
    workdir = tempfile.mkdtemp(prefix="knot-diff-")
    kport = int(os.environ.get("KNOT_DIFF_KNOT_PORT") or free_port())
    mport = int(os.environ.get("KNOT_DIFF_MERIDIAN_PORT") or free_port())
    while mport == kport:
        mport = free_port()
    kdir = os.path.join(workdir, "knot")
    os.makedirs(kdir)
    knot = Server("knotd", [args.knotd, "-c", knot_config(kdir, kport, zones)], kdir,
                  os.path.join(workdir, "knot.log"))
    mzones = os.path.abspath(args.meridian_zones or args.zones)
    meridian = Server("meridian", [os.path.abspath(args.meridian), "edge", "--zones", mzones,
                                   "--listen", "%s:%d" % (HOST, mport), "--workers", "1",
                                   "--identity", IDENTITY], workdir, os.path.join(workdir, "meridian.log"))
    status = 2
    try:
        knot.start()
        meridian.start()
        for srv, port in ((knot, kport), (meridian, mport)):
            try:
                missing = wait_answers(port, zones, srv.proc)
            except RuntimeError as e:
                print("%s %s; log:\n%s" % (srv.name, e, srv.log()))
                return 2
            if missing:
                print("%s does not serve %s; log:\n%s" % (srv.name, ", ".join(missing), srv.log()))
                return 2
        problems = knot_log_problems(knot.log(), zones)
        if problems:
            print("Knot did not load the zones cleanly:\n  " + "\n  ".join(problems))
            return 2
        print("knotd on %s:%d, meridian on %s:%d, %d zones, %d cases" % (HOST, kport, HOST, mport, len(zones),
                                                                         len(cases)))
        status = run(cases, kport, mport, args)
        if "panicked" in meridian.log():
            print("meridian panicked; log:\n" + meridian.log())
            status = 1
        return status
    finally:
        meridian.stop()
        knot.stop()
        if args.keep or status == 2:
            print("work directory kept: %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(cases, kport, mport, args):
    def one(item):
        idx, case = item
        qid = (idx * 7919 + 1) & 0xFFFF
        qwire = case.wire(qid) if case.stream is None else b""
        kr = exchange(case, kport, qid)
        mr = exchange(case, mport, qid)
        return case, qwire, kr, mr

    counts = {"same": 0, "tolerated": 0, "failed": 0}
    failures, tolerated = [], []
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for case, qwire, kr, mr in pool.map(one, enumerate(cases)):
            kv, mv = view_of(kr), view_of(mr)
            problems = []
            diffs = []
            if isinstance(mv, str) and mv.startswith("unparseable"):
                problems.append("Meridian's answer does not parse: " + mv)
            if case.kind == "diff":
                diffs = compare(kv, mv, case)
            problems += ["invariant: " + b for b in invariants(case, qwire, mr, mv)]
            problems += ["expectation: " + b for b in expectations(case, mv)]
            hard = [x for x in diffs if not x[0]]
            if hard or problems:
                counts["failed"] += 1
                failures.append((case, kv, mv, diffs, problems))
            elif diffs:
                counts["tolerated"] += 1
                tolerated.append((case, kv, mv, diffs, problems))
            else:
                counts["same"] += 1
                if args.show:
                    print("\nSAME %s\n    knot:\n%s\n    meridian:\n%s" % (case.describe(), render(kv), render(mv)))
    for title, items in (("TOLERATED", tolerated if args.verbose else []), ("FAILED", failures)):
        for case, kv, mv, diffs, problems in items:
            print("\n%s %s" % (title, case.describe()))
            for tol, tag, detail in diffs:
                print("  %s %s" % ("tolerated" if tol else "DIFF", tag))
                for line in detail.splitlines():
                    print("      " + line)
            for p in problems:
                print("  " + p)
            print("    knot:")
            print(render(kv))
            print("    meridian:")
            print(render(mv))
    print("\n%d cases in %.1fs: %d same, %d tolerated, %d failed" % (
        len(cases), time.time() - t0, counts["same"], counts["tolerated"], counts["failed"]))
    if failures:
        by = {}
        for case, _, _, diffs, problems in failures:
            tags = sorted({t.lstrip("#0123456789 ") for tol, t, _ in diffs if not tol} |
                          {p.split(":")[0] + ": " + p.split(":", 1)[1].strip()[:60] for p in problems})
            by.setdefault(", ".join(tags), []).append(case)
        print("failures by kind:")
        for k, v in sorted(by.items(), key=lambda kv: -len(kv[1])):
            print("  %4d  %s  (e.g. %s)" % (len(v), k, v[0].describe()))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
