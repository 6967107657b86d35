#!/usr/bin/env python3
"""A stand-in for the `meridian` binary, only to dry-run policy_e2e.py (the harness itself:
its dig parsing, polling, placeholders, expectations) before the real features exist:

    python3 tests/policy/policy_e2e.py --meridian tests/policy/fake_meridian.py

It is NOT a reference implementation and nothing tests it against Meridian. It speaks the CLI
subset policy_e2e.py uses (the syntax the lead announced): `dev` runs an HTTP/JSON "API" and
a UDP DNS server (dnspython) on loopback; every client command is POSTed there as argv and
run by the server, which prints what the real CLI would roughly print. Catalog changes and
health verdicts reach the DNS side after PUBLISH_DELAY seconds, to exercise the polling.
Needs dnspython and maxminddb.
"""
import copy
import http.server
import ipaddress
import json
import math
import os
import random
import socket
import socketserver
import sys
import threading
import time
import urllib.request

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

PUBLISH_DELAY = 0.3
REGIONS = {"us-east-1": (38.9, -77.0), "eu-west-1": (53.35, -6.26), "ap-southeast-2": (-33.87, 151.21)}
CONTINENT_OF = {"US": "NA", "CA": "NA", "DE": "EU", "FR": "EU", "NL": "EU", "GB": "EU", "AU": "OC",
                "SG": "AS", "JP": "AS"}


class Refused(Exception):
    pass


def fqdn(name, zone):
    if name == "@":
        return zone
    name = name.lower()
    if not name.endswith("."):
        name = name + "." if name.endswith(zone.rstrip(".")) else "%s.%s" % (name, zone)
    return name


def km(a, b):
    la1, la2 = math.radians(a[0]), math.radians(b[0])
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin(math.radians(b[1] - a[1]) / 2) ** 2
    return 2 * 6371 * math.asin(min(1.0, math.sqrt(h)))


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.pop = args.get("--pop", "local")
        self.rtt = {}
        for kv in args.get("--region-rtt", "").split(","):
            if "=" in kv:
                k, v = kv.split("=", 1)
                self.rtt[k] = int(v)
        import maxminddb
        self.geo = maxminddb.open_database(args["--geoip-db"]) if args.get("--geoip-db") else None
        self.zones = {}          # zone -> {"version", "simple": {(n,t): (ttl, [v])}, "routed": {(n,t): [rrs]}}
        self.health = {}         # id -> "auto"|"healthy"|"unhealthy"
        self.cidr = {}           # collection -> {location: [networks]}
        self.changes = 0
        self.published = self.snapshot()

    def snapshot(self):
        return copy.deepcopy((self.zones, self.health, self.cidr))

    def publish(self):
        snap = self.snapshot()

        def later():
            time.sleep(PUBLISH_DELAY)
            with self.lock:
                self.published = snap
        threading.Thread(target=later, daemon=True).start()

    def change(self):
        self.changes += 1
        self.publish()
        return {"id": "C%06d" % self.changes, "status": "PENDING", "version": self.changes, "comment": ""}


# --- policy decisions (a rough model of the Route 53 semantics the test expects) ---------------

class Env:
    def __init__(self, state, snap, client, ecs, pop):
        self.zones, self.health, self.cidr = snap
        self.state, self.client, self.ecs, self.pop = state, client, ecs, pop
        self.client_dependent = False
        ip = ecs[0] if ecs and ecs[1] > 0 else client
        self.ip = ipaddress.ip_address(ip)
        self.loc = None
        if state.geo:
            rec = state.geo.get(str(self.ip))
            if isinstance(rec, dict):
                if "country_code" in rec:
                    cc = rec["country_code"]
                    self.loc = {"continent": CONTINENT_OF.get(cc), "country": cc, "sub": None, "coord": None}
                else:
                    subs = rec.get("subdivisions") or [{}]
                    loc = rec.get("location") or {}
                    self.loc = {"continent": rec.get("continent", {}).get("code"),
                                "country": rec.get("country", {}).get("iso_code"),
                                "sub": subs[0].get("iso_code"),
                                "coord": (loc["latitude"], loc["longitude"]) if "latitude" in loc else None}

    def healthy(self, hc):
        return hc is None or self.health.get(hc, "auto") != "unhealthy"


def kind(r):
    for k, key in (("weighted", "Weight"), ("failover", "Failover"), ("multivalue", "MultiValueAnswer"),
                   ("latency", "Region"), ("geolocation", "GeoLocation"),
                   ("geoproximity", "GeoProximityLocation"), ("ip-based", "CidrRoutingConfig")):
        if key in r:
            return k
    return "simple"


def resolve(env, zone, name, rtype, steps, depth=0):
    """(values, any_healthy) of a routed or simple name."""
    z = env.zones[zone]
    if (name, rtype) in z["simple"]:
        return list(z["simple"][(name, rtype)][1]), True
    group = z["routed"].get((name, rtype))
    if not group or depth > 8:
        return [], False
    cands = []
    for r in group:
        ok = env.healthy(r.get("HealthCheckId"))
        why = "check %s %s" % (r["HealthCheckId"], "healthy" if ok else "unhealthy") if r.get("HealthCheckId") else "no health check"
        if ok and "AliasTarget" in r and r["AliasTarget"].get("EvaluateTargetHealth"):
            sub = []
            _, tok = resolve(env, zone, r["AliasTarget"]["DNSName"].lower(), rtype, sub, depth + 1)
            if not tok:
                ok, why = False, "alias target unhealthy"
        cands.append((r, ok))
        steps.append("%scandidate %s: %s (%s)" % ("  " * depth, r.get("SetIdentifier", name), "healthy" if ok else "unhealthy", why))
    fail_closed = any(r.get("FailClosed") for r in group)
    all_down = not any(ok for _, ok in cands)
    if all_down and not fail_closed:
        steps.append("%severy candidate is unhealthy: failing open" % ("  " * depth))
        usable = [(r, True) for r, _ in cands]
    else:
        usable = cands
    live = [r for r, ok in usable if ok]
    k = kind(group[0])
    pick, why = [], ""
    if k == "simple":            # a lone alias
        pick, why = live[:1], "alias"
    elif k == "weighted":
        nz = [r for r in live if r["Weight"] > 0]
        pool = nz or live
        if pool:
            total = sum(r["Weight"] for r in nz) if nz else len(pool)
            x = random.random() * total
            for r in pool:
                x -= r["Weight"] if nz else 1
                if x < 0:
                    pick = [r]
                    break
            pick = pick or [pool[-1]]
            why = "weight %s of %s" % (pick[0]["Weight"], total)
    elif k == "failover":
        prim = [r for r in group if r["Failover"] == "PRIMARY"]
        sec = [r for r in group if r["Failover"] == "SECONDARY"]
        if prim and (prim[0] in live or (all_down and not fail_closed)):
            pick, why = prim, "primary is healthy"
        elif sec and sec[0] in live:
            pick, why = sec, "primary is unhealthy"
    elif k == "multivalue":
        pick = random.sample(live, min(8, len(live)))
        why = "up to 8 usable sets, shuffled"
    elif k == "latency":
        if live:
            pick = [min(live, key=lambda r: env.state.rtt.get(r["Region"], 1 << 30))]
            why = "region %s has the lowest RTT from POP %s" % (pick[0]["Region"], env.pop)
    elif k == "geolocation":
        env.client_dependent = True
        loc = env.loc or {}

        def spec(r):
            g = r["GeoLocation"]
            if g.get("CountryCode") == "*":
                return 0
            if "ContinentCode" in g:
                return 1 if g["ContinentCode"] == loc.get("continent") else -1
            if g.get("CountryCode") != loc.get("country"):
                return -1
            if "SubdivisionCode" in g:
                return 3 if g["SubdivisionCode"] == loc.get("sub") else -1
            return 2
        m = sorted([r for r in live if spec(r) >= 0], key=spec, reverse=True)
        if m:
            pick, why = m[:1], "most specific healthy match for the client"
    elif k == "geoproximity":
        env.client_dependent = True
        c = (env.loc or {}).get("coord")
        if c and live:
            def biased(r):
                g = r["GeoProximityLocation"]
                at = REGIONS[g["AWSRegion"]] if "AWSRegion" in g else (
                    float(g["Coordinates"]["Latitude"]), float(g["Coordinates"]["Longitude"]))
                b = g.get("Bias", 0) / 100.0
                d = km(c, at)
                return d * (1 - b) if b >= 0 else d / (1 + b)
            pick = [min(live, key=biased)]
            why = "lowest biased distance (%.0f km)" % biased(pick[0])
    elif k == "ip-based":
        env.client_dependent = True
        found = None
        for coll, locs in env.cidr.items():
            best = -1
            for loc, nets in locs.items():
                for n in nets:
                    n = ipaddress.ip_network(n)
                    if n.version == env.ip.version and env.ip in n and n.prefixlen > best:
                        best, found = n.prefixlen, loc
        m = [r for r in live if r["CidrRoutingConfig"]["LocationName"] == found] or \
            [r for r in live if r["CidrRoutingConfig"]["LocationName"] == "*"]
        if m:
            pick, why = m[:1], "client address is in location %s" % (found or "*")
    if not pick:
        steps.append("%sno answer: nothing usable" % ("  " * depth))
        return [], not all_down
    steps.append("%schose %s: %s" % ("  " * depth, ", ".join(r.get("SetIdentifier", name) for r in pick), why))
    values = []
    for r in pick:
        if "AliasTarget" in r:
            v, _ = resolve(env, zone, r["AliasTarget"]["DNSName"].lower(), rtype, steps, depth + 1)
            values += v
        else:
            values += [x["Value"] for x in r["ResourceRecords"]]
    return values, not all_down


# --- change batches ---------------------------------------------------------------------------

def validate_and_apply(state, zone, batch):
    z = state.zones[zone]
    routed = copy.deepcopy(z["routed"])
    simple = copy.deepcopy(z["simple"])
    seen = {}
    for i, c in enumerate(batch["Changes"]):
        r = dict(c["ResourceRecordSet"])
        name = fqdn(r["Name"], zone)
        r["Name"] = name
        key = (name, r["Type"], r.get("SetIdentifier"))
        if key in seen:
            raise Refused("changes[%d]: %s %s set %r is already changed by changes[%d]; a set may be changed once per batch"
                          % (i, name, r["Type"], r.get("SetIdentifier"), seen[key]))
        seen[key] = i
        if "Weight" in r and not 0 <= r["Weight"] <= 255:
            raise Refused("changes[%d]: Weight: %s is outside 0..=255" % (i, r["Weight"]))
        if r.get("HealthCheckId") and r["HealthCheckId"] not in state.health:
            raise Refused("changes[%d]: health check %r does not exist" % (i, r["HealthCheckId"]))
        g = r.get("GeoProximityLocation")
        if g and not -99 <= g.get("Bias", 0) <= 99:
            raise Refused("changes[%d]: bias %s is outside -99..=99" % (i, g["Bias"]))
        crc = r.get("CidrRoutingConfig")
        if crc and crc["CollectionId"] not in state.cidr:
            raise Refused("changes[%d]: CIDR collection %r does not exist" % (i, crc["CollectionId"]))
        if "SetIdentifier" in r or "AliasTarget" in r:
            grp = [x for x in routed.get((name, r["Type"]), []) if x.get("SetIdentifier") != r.get("SetIdentifier")]
            routed[(name, r["Type"])] = grp + [r]
        else:
            simple[(name, r["Type"])] = (r.get("TTL", 300), [x["Value"] for x in r["ResourceRecords"]])
    for (name, rtype), grp in routed.items():
        kinds = {kind(r) for r in grp}
        if len(kinds) > 1:
            raise Refused("%s %s: sets mix policies %s: one policy per name and type" % (name, rtype, sorted(kinds)))
        if kinds == {"failover"}:
            p = sum(1 for r in grp if r["Failover"] == "PRIMARY")
            s = sum(1 for r in grp if r["Failover"] == "SECONDARY")
            if p != 1 or s > 1:
                raise Refused("%s %s: failover needs one PRIMARY and at most one SECONDARY, got %d and %d" % (name, rtype, p, s))
        for r in grp:
            if "AliasTarget" in r:
                tgt = r["AliasTarget"]["DNSName"].lower()
                if (tgt, rtype) not in routed and (tgt, rtype) not in simple:
                    raise Refused("%s %s: alias target %s %s does not exist" % (name, rtype, tgt, rtype))
                seen_names, cur = {name}, tgt
                while True:
                    if cur in seen_names:
                        raise Refused("%s %s: aliases from here loop (through %s)" % (name, rtype, cur))
                    seen_names.add(cur)
                    nxt = [x["AliasTarget"]["DNSName"].lower() for x in routed.get((cur, rtype), []) if "AliasTarget" in x]
                    if not nxt:
                        break
                    cur = nxt[0]
    z["routed"], z["simple"] = routed, simple
    z["version"] += 1


def run_command(state, argv, output):
    """(rc, stdout, stderr) of one client command."""
    js = output == "json"

    def out(obj, text):
        return 0, (json.dumps(obj, indent=2) if js else text) + "\n", ""
    try:
        with state.lock:
            cmd = argv[:2]
            if cmd == ["zone", "create"]:
                zone = fqdn(argv[2], ".") if not argv[2].endswith(".") else argv[2].lower()
                if zone not in state.zones:
                    state.zones[zone] = {"version": 1, "simple": {(zone, "SOA"): (900, ["ns1.%s hostmaster.%s 1 7200 900 1209600 300" % (zone, zone)]),
                                                                  (zone, "NS"): (172800, ["ns1." + zone])},
                                         "routed": {}}
                    state.publish()
                z = state.zones[zone]
                return out([{"name": zone, "version": z["version"], "record_set_count": 2, "caller_reference": ""}], zone)
            if cmd == ["zone", "get"]:
                zone = argv[2] if argv[2].endswith(".") else argv[2] + "."
                return out([{"name": zone, "version": state.zones[zone]["version"]}], zone)
            if cmd == ["record", "upsert"]:
                zone = argv[2] if argv[2].endswith(".") else argv[2] + "."
                rest = argv[3:]
                ttl = 300
                if "--ttl" in rest:
                    i = rest.index("--ttl")
                    ttl = int(rest[i + 1])
                    rest = rest[:i] + rest[i + 2:]
                name, rtype, values = fqdn(rest[0], zone), rest[1].upper(), rest[2:]
                state.zones[zone]["simple"][(name, rtype)] = (ttl, values)
                state.zones[zone]["version"] += 1
                return out(state.change(), "change")
            if cmd == ["record", "apply"]:
                zone = argv[2] if argv[2].endswith(".") else argv[2] + "."
                with open(argv[argv.index("--file") + 1]) as f:
                    batch = json.load(f)
                validate_and_apply(state, zone, batch)
                return out(state.change(), "change")
            if cmd == ["record", "list"]:
                zone = argv[2] if argv[2].endswith(".") else argv[2] + "."
                z = state.zones[zone]
                lines = ["%s %s %s" % (n, t, v) for (n, t), v in sorted(z["simple"].items())]
                lines += ["%s %s %s" % (n, t, r.get("SetIdentifier", "alias")) for (n, t), g in sorted(z["routed"].items()) for r in g]
                return out([], "\n".join(lines))
            if cmd == ["change", "wait"]:
                pass   # below, without the lock
            elif cmd == ["health", "create"]:
                with open(argv[argv.index("--config") + 1]) as f:
                    json.load(f)
                hc = "%08x-0000-4000-8000-%012x" % (len(state.health) + 1, random.getrandbits(48))
                state.health[hc] = "auto"
                state.publish()
                return out({"id": hc}, hc)
            elif cmd == ["health", "set-status"]:
                if argv[2] not in state.health:
                    raise Refused("health check %s does not exist" % argv[2])
                state.health[argv[2]] = argv[3]
                state.publish()
                return out({"id": argv[2], "status": argv[3]}, "ok")
            elif cmd == ["cidr", "create"]:
                state.cidr.setdefault(argv[2], {})
                state.publish()
                return out({"id": argv[2], "name": argv[2]}, argv[2])
            elif cmd == ["cidr", "add"]:
                state.cidr[argv[2]].setdefault(argv[3], []).extend(argv[4:])
                state.publish()
                return out({}, "ok")
            elif cmd == ["cidr", "list"]:
                return out(state.cidr, "\n".join("%s %s %s" % (c, loc, " ".join(n)) for c, l in state.cidr.items() for loc, n in l.items()))
            elif argv[0] == "explain":
                name, rtype = argv[1].lower(), argv[2]
                opts = dict(zip(argv[3::2], argv[4::2]))
                ecs = None
                if "--ecs" in opts:
                    n = ipaddress.ip_network(opts["--ecs"], strict=False)
                    ecs = (str(n.network_address), n.prefixlen)
                env = Env(state, state.snapshot(), opts.get("--client", "127.0.0.1"), ecs, opts.get("--pop", state.pop))
                zone = next(z for z in state.zones if name.endswith(z))
                steps = []
                values, _ = resolve(env, zone, name, rtype, steps)
                return 0, "answer: %s\n%s\n" % (" ".join(values) or "NODATA", "\n".join(steps)), ""
            elif cmd == ["edges", "list"]:
                return out({"catalog_version": state.changes, "edges": [{"id": "dev", "pop": state.pop, "stale": False}]}, "dev")
            else:
                return 2, "", "error: fake_meridian does not know %s\n" % " ".join(argv)
        if cmd == ["change", "wait"]:
            time.sleep(PUBLISH_DELAY + 0.05)
            return out({"id": argv[2], "status": "INSYNC", "version": int(argv[2][1:])}, "INSYNC")
    except Refused as e:
        return 1, "", "error: %s\n" % e
    except (KeyError, IndexError, ValueError, StopIteration) as e:
        return 1, "", "error: %r\n" % (e,)


# --- DNS --------------------------------------------------------------------------------------

def answer_query(state, wire, client):
    q = dns.message.from_wire(wire)
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AA
    r.flags &= ~dns.flags.RA
    qname = q.question[0].name.to_text().lower()
    rtype = dns.rdatatype.to_text(q.question[0].rdtype)
    ecs_opt = next((o for o in q.options if o.otype == dns.edns.ECS), None)
    ecs = (ecs_opt.address, ecs_opt.srclen) if ecs_opt else None
    with state.lock:
        snap = state.published
    zones = snap[0]
    zone = max((z for z in zones if qname == z or qname.endswith("." + z)), key=len, default=None)
    scope = 0
    if zone is None:
        r.set_rcode(dns.rcode.REFUSED)
    else:
        env = Env(state, snap, client, ecs, state.pop)
        z = zones[zone]
        values = []
        if (qname, rtype) in z["simple"] or (qname, rtype) in z["routed"]:
            values, _ = resolve(env, zone, qname, rtype, [])
            ttl = z["simple"].get((qname, rtype), (60,))[0]
            if values:
                r.answer.append(dns.rrset.from_text_list(qname, ttl, "IN", rtype, values))
        exists = any(n == qname for n, _ in list(z["simple"]) + list(z["routed"]))
        if not values:
            if not exists:
                r.set_rcode(dns.rcode.NXDOMAIN)
            soa = z["simple"][(zone, "SOA")]
            r.authority.append(dns.rrset.from_text_list(zone, 300, "IN", "SOA", soa[1]))
        if env.client_dependent and ecs and ecs[1] > 0:
            scope = ecs[1]
    if q.edns >= 0:
        opts = [dns.edns.ECSOption(ecs[0], ecs[1], scope)] if ecs else []
        r.use_edns(0, payload=1232, options=opts)
    return r.to_wire()


def serve_dns(state, addr):
    host, port = addr.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    while True:
        data, peer = s.recvfrom(4096)
        try:
            s.sendto(answer_query(state, data, peer[0]), peer)
        except Exception as e:  # noqa: BLE001
            print("dns error: %r" % e, file=sys.stderr, flush=True)


def dev(api, args):
    state = State(args)

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            rc, o, e = run_command(state, req["argv"], req["output"])
            body = json.dumps({"rc": rc, "stdout": o, "stderr": e}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    threading.Thread(target=serve_dns, args=(state, args["--dns"]), daemon=True).start()
    host, port = api.replace("http://", "").rsplit(":", 1)
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer((host, int(port)), H)
    print("fake meridian dev: API %s DNS %s pop %s" % (api, args["--dns"], state.pop), file=sys.stderr, flush=True)
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    srv.serve_forever()


def main():
    argv = sys.argv[1:]
    api, output = "http://127.0.0.1:50051", "table"
    rest = []
    i = 0
    while i < len(argv):
        if argv[i] == "--api":
            api = argv[i + 1]
            i += 2
        elif argv[i] == "--output":
            output = argv[i + 1]
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    if rest and rest[0] == "dev":
        dev(api, dict(zip(rest[1::2], rest[2::2])))
        return 0
    req = json.dumps({"argv": rest, "output": output}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(api, data=req), timeout=30) as r:
            res = json.loads(r.read())
    except OSError as e:
        print("error: control plane unavailable: %s" % e, file=sys.stderr)
        return 1
    sys.stdout.write(res["stdout"])
    sys.stderr.write(res["stderr"])
    return res["rc"]


if __name__ == "__main__":
    sys.exit(main())
