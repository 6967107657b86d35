#!/usr/bin/env python3
"""Helper for bench/policy.sh: the ChangeBatch and query files, answer checks before measuring,
and the results JSON and Markdown report. Process accounting and dnsperf parsing are
bench/edge_helper.py's (imported), so both benchmarks measure the same way.

Subcommands:
  batch HC_ID OUT.json           the Route 53 ChangeBatch for bench.test. (HC_ID guards PRIMARY)
  queries DIR                    one dnsperf query file per record set (DIR/NAME.txt, one line)
  ready PORT TIMEOUT             poll until every record set answers as expected; prints seconds
  verify PORT OUT.json           query each kind with dnspython (answers, ECS scope, weighted mix)
  digcheck FILE                  check `dig +subnet=198.51.100.0/24 geo...` output: the EU set
  ecsprobe PORT ECS_OPT OUT.json relay one dnsperf `-E ECS_OPT` query to the server and check
                                 the option dnsperf sent and the server's answer to it
  assemble RESDIR OUT.json       collect policy.sh's raw files into the results JSON
  report RESULTS.json OUT.md     render the Markdown report
"""

import argparse
import ipaddress
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import edge_helper  # noqa: E402

ZONE = "bench.test."
TARGET = 1.2
ECS_NET = "198.51.100.0/24"  # DE / EU in tests/policy/make_test_mmdb.py

SIMPLE = ["10.0.0.1", "10.0.0.2"]
WEIGHTED = [("w10", 10, "10.1.0.1"), ("w20", 20, "10.1.0.2"), ("w70", 70, "10.1.0.3")]
FAILOVER = [("fo-primary", "PRIMARY", "10.2.0.1"), ("fo-secondary", "SECONDARY", "10.2.0.2")]
GEO = [("geo-eu", {"ContinentCode": "EU"}, "10.5.0.1"), ("geo-us", {"CountryCode": "US"}, "10.5.0.2"),
       ("geo-au", {"CountryCode": "AU"}, "10.5.0.3"), ("geo-default", {"CountryCode": "*"}, "10.5.0.4")]

# kind -> (owner name, ECS sent?, description, expected answer set(s))
KINDS = {
    "simple": ("simple." + ZONE, False, "simple A RRset (2 records, no policy), no ECS"),
    "weighted": ("weighted." + ZONE, False, "weighted: 3 sets, weights 10/20/70, no ECS"),
    "failover": ("failover." + ZONE, False, "failover: PRIMARY (health check forced healthy) + SECONDARY, no ECS"),
    "simple_ecs": ("simple." + ZONE, True, f"simple A RRset, ECS {ECS_NET}"),
    "geo_ecs": ("geo." + ZONE, True, f"geolocation: EU / US / AU / * sets, ECS {ECS_NET} (→ EU)"),
    "geo": ("geo." + ZONE, False, "geolocation, no ECS (source 127.0.0.1 → US)"),
}
EXPECT = {
    "simple": [sorted(SIMPLE)],
    "weighted": [[a] for _, _, a in WEIGHTED],
    "failover": [["10.2.0.1"]],
    "simple_ecs": [sorted(SIMPLE)],
    "geo_ecs": [["10.5.0.1"]],
    "geo": [["10.5.0.2"]],
}
# (policy kind, baseline kind, judged against the target?)
COMPARISONS = [
    ("weighted", "simple", True),
    ("failover", "simple", True),
    ("geo_ecs", "simple_ecs", True),
    ("geo", "simple", True),
    ("geo_ecs", "simple", False),
    ("simple_ecs", "simple", False),
]


def rrset(name, sid=None, values=(), **extra):
    s = {"Name": name, "Type": "A"}
    if sid:
        s["SetIdentifier"] = sid
    s.update(extra)
    s["TTL"] = 60
    s["ResourceRecords"] = [{"Value": v} for v in values]
    return s


def batch(hc_id):
    sets = [rrset("simple." + ZONE, values=SIMPLE)]
    sets += [rrset("weighted." + ZONE, sid, [a], Weight=w) for sid, w, a in WEIGHTED]
    for sid, role, a in FAILOVER:
        extra = {"Failover": role}
        if role == "PRIMARY":
            extra["HealthCheckId"] = hc_id
        sets.append(rrset("failover." + ZONE, sid, [a], **extra))
    sets += [rrset("geo." + ZONE, sid, [a], GeoLocation=loc) for sid, loc, a in GEO]
    return {"Comment": "bench/policy.sh: simple, weighted, failover and geolocation record sets",
            "Changes": [{"Action": "UPSERT", "ResourceRecordSet": s} for s in sets]}


# ---------------------------------------------------------------------------------------------
# Answers


def ask(port, name, ecs=None, timeout=0.5):
    """(rcode text, sorted A values, ECS option of the reply as (net, scope) or None)."""
    import dns.edns
    import dns.message
    import dns.query
    import dns.rcode
    import dns.rdatatype

    opts = []
    if ecs:
        net = ipaddress.ip_network(ecs)
        opts.append(dns.edns.ECSOption(str(net.network_address), net.prefixlen))
    q = dns.message.make_query(name, "A", use_edns=0, options=opts)
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)
    vals = sorted(rd.address for rr in r.answer if rr.rdtype == dns.rdatatype.A for rd in rr)
    got_ecs = None
    for o in r.options:
        if isinstance(o, dns.edns.ECSOption):
            got_ecs = f"{o.address}/{o.srclen} scope {o.scopelen}"
    return dns.rcode.to_text(r.rcode()), vals, got_ecs


def kind_ok(port, kind):
    name, ecs, _ = KINDS[kind]
    rcode, vals, _ = ask(port, name, ECS_NET if ecs else None)
    return rcode == "NOERROR" and vals in EXPECT[kind]


def ready(port, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if all(kind_ok(port, k) for k in KINDS):
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    return None


def verify(port):
    out = {"kinds": {}, "ok": True}
    for kind, (name, ecs, _) in KINDS.items():
        rcode, vals, got_ecs = ask(port, name, ECS_NET if ecs else None)
        ok = rcode == "NOERROR" and vals in EXPECT[kind]
        out["kinds"][kind] = {"query": f"{name} A" + (f" +subnet={ECS_NET}" if ecs else ""), "rcode": rcode,
                              "answer": vals, "reply_ecs": got_ecs, "ok": ok}
        out["ok"] &= ok
    counts = {a: 0 for _, _, a in WEIGHTED}
    n = 300
    for _ in range(n):
        _, vals, _ = ask(port, KINDS["weighted"][0])
        for v in vals:
            counts[v] = counts.get(v, 0) + 1
    out["weighted_mix"] = {"queries": n, "counts": counts,
                           "weights": {a: w for _, w, a in WEIGHTED}}
    # Every set should show up in 300 draws (P(miss w10) = 0.9^300).
    out["weighted_mix"]["ok"] = all(counts[a] > 0 for _, _, a in WEIGHTED)
    out["ok"] &= out["weighted_mix"]["ok"]
    return out


def digcheck(path):
    text = open(path, errors="replace").read()
    status = re.search(r"status: (\w+)", text)
    answers = sorted(re.findall(r"^geo\.bench\.test\.\s+\d+\s+IN\s+A\s+(\S+)", text, re.M))
    ecs = re.search(r"CLIENT-SUBNET: (\S+)", text)
    r = {"status": status.group(1) if status else None, "answer": answers,
         "reply_ecs": ecs.group(1) if ecs else None}
    r["ok"] = r["status"] == "NOERROR" and answers == ["10.5.0.1"]
    return r


def ecsprobe(port, ecs_opt):
    """Runs `dnsperf -n 1 -E ECS_OPT` against a relay on loopback: the relay parses the query
    dnsperf sent (so the option string is known to mean ECS 198.51.100.0/24), forwards it to the
    server unchanged and parses the server's reply (so that exact query gets the EU answer)."""
    import dns.edns
    import dns.message
    import dns.rcode
    import tempfile

    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    relay.settimeout(5)
    rport = relay.getsockname()[1]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(f"{KINDS['geo_ecs'][0]} A\n")
        qfile = f.name
    p = subprocess.Popen(["dnsperf", "-s", "127.0.0.1", "-p", str(rport), "-d", qfile, "-n", "1", "-t", "2",
                          "-e", "-E", ecs_opt], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    res = {"dnsperf_option": ecs_opt}
    try:
        data, addr = relay.recvfrom(65535)
        q = dns.message.from_wire(data)
        sent = [f"{o.address}/{o.srclen}" for o in q.options if isinstance(o, dns.edns.ECSOption)]
        res["query_ecs"] = sent
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        up.settimeout(2)
        up.sendto(data, ("127.0.0.1", port))
        reply, _ = up.recvfrom(65535)
        relay.sendto(reply, addr)
        r = dns.message.from_wire(reply)
        res["rcode"] = dns.rcode.to_text(r.rcode())
        res["answer"] = sorted(rd.address for rr in r.answer for rd in rr if rr.rdtype == 1)
        res["reply_ecs"] = [f"{o.address}/{o.srclen} scope {o.scopelen}" for o in r.options
                            if isinstance(o, dns.edns.ECSOption)]
    except Exception as e:  # noqa: BLE001
        res["error"] = repr(e)
    finally:
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        os.unlink(qfile)
    m = re.search(r"Queries completed:\s+(\d+)", out or "")
    res["dnsperf_completed"] = int(m.group(1)) if m else None  # 1: dnsperf got the relayed answer
    res["ok"] = (res.get("query_ecs") == [ECS_NET] and res.get("rcode") == "NOERROR"
                 and res.get("answer") == ["10.5.0.1"] and res.get("dnsperf_completed") == 1)
    return res


# ---------------------------------------------------------------------------------------------
# Assemble


def read(path, default=None):
    try:
        return open(path).read().strip()
    except OSError:
        return default


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def assemble(resdir, out_json):
    meta = {}
    for line in open(os.path.join(resdir, "meta.env")):
        k, _, v = line.rstrip("\n").partition("=")
        meta[k] = v
    clk = int(read(os.path.join(resdir, "clk_tck"), "100"))
    kinds = meta["kinds"].split()
    rounds = int(meta["rounds"])
    warnings = []
    runs = {k: [] for k in kinds}
    order = []
    for r in range(1, rounds + 1):
        order.append(read(os.path.join(resdir, f"order_{r}"), "").split())
        for k in kinds:
            base = os.path.join(resdir, f"r{r}_{k}.txt")
            if not os.path.exists(base):
                continue
            d = edge_helper.parse_dnsperf(base)
            vals = list(map(int, read(base + ".cpu", "").split()))
            c0, c1, k0, k1, t0, t1, u0, u1 = vals
            done = d.get("completed") or 0
            run = {
                "round": r,
                "qps": d.get("qps"),
                "sent": d.get("sent"),
                "completed": done,
                "lost": d.get("lost"),
                "rcodes": d.get("rcodes", {}),
                "lat_avg_s": d.get("lat_avg_s"),
                "server_cpu_s": (c1 - c0) / clk,
                "server_user_s": (u1 - u0) / clk,
                "wall_s": (t1 - t0) / 1e9,
                "tries": int(read(base + ".tries", "1")),
            }
            other, _ = edge_helper.cpu0_other(base + ".cpu", clk)
            run["cpu0_other_s"] = round(other, 3)
            if done:
                run["cpu_us_per_query"] = run["server_cpu_s"] * 1e6 / done
                run["cpu_user_us_per_query"] = run["server_user_s"] * 1e6 / done
                run["cpu_sys_us_per_query"] = run["cpu_us_per_query"] - run["cpu_user_us_per_query"]
            else:
                warnings.append(f"round {r} {k}: no query answered")
            bad = {c: n for c, n in run["rcodes"].items() if c != "NOERROR"}
            if bad:
                warnings.append(f"round {r} {k}: rcodes other than NOERROR: {bad}")
            if run["sent"] and (run["lost"] or 0) > 0.001 * run["sent"]:
                warnings.append(f"round {r} {k}: {run['lost']} of {run['sent']} queries lost (> 0.1%)")
            if other > edge_helper.NOISE_MAX * run["wall_s"]:
                warnings.append(f"round {r} {k}: CPU 0 ran {other:.2f} s of other work in {run['wall_s']:.1f} s (the figure may be skewed)")
            runs[k].append(run)
    summary = {}
    for k in kinds:
        rs = runs[k]
        summary[k] = {
            "name": KINDS[k][0],
            "ecs": KINDS[k][1],
            "description": KINDS[k][2],
            "cpu_us_per_query": median([x.get("cpu_us_per_query") for x in rs]),
            "cpu_user_us_per_query": median([x.get("cpu_user_us_per_query") for x in rs]),
            "cpu_sys_us_per_query": median([x.get("cpu_sys_us_per_query") for x in rs]),
            "qps": median([x.get("qps") for x in rs]),
            "completed": sum(x.get("completed") or 0 for x in rs),
            "rcodes": {},
        }
        for x in rs:
            for c, n in x["rcodes"].items():
                summary[k]["rcodes"][c] = summary[k]["rcodes"].get(c, 0) + n
    comparisons = []
    for pol, base, judged in COMPARISONS:
        if pol not in summary or base not in summary:
            continue
        p, b = summary[pol], summary[base]
        ratio = p["cpu_us_per_query"] / b["cpu_us_per_query"] if p["cpu_us_per_query"] and b["cpu_us_per_query"] else None
        uratio = (p["cpu_user_us_per_query"] / b["cpu_user_us_per_query"]
                  if p["cpu_user_us_per_query"] and b["cpu_user_us_per_query"] else None)
        per_round = []
        for r in range(1, rounds + 1):
            pr = next((x for x in runs[pol] if x["round"] == r), None)
            br = next((x for x in runs[base] if x["round"] == r), None)
            if pr and br and pr.get("cpu_us_per_query") and br.get("cpu_us_per_query"):
                per_round.append(round(pr["cpu_us_per_query"] / br["cpu_us_per_query"], 3))
        c = {"policy": pol, "baseline": base, "ratio": ratio, "user_ratio": uratio,
             "extra_us_per_query": (p["cpu_us_per_query"] - b["cpu_us_per_query"]) if ratio is not None else None,
             "per_round_ratios": per_round, "judged": judged}
        if judged and ratio is not None:
            c["pass"] = ratio <= TARGET
        comparisons.append(c)
    judged = [c for c in comparisons if c["judged"]]
    overall = None
    if judged and all("pass" in c for c in judged):
        overall = all(c["pass"] for c in judged)

    checks = {}
    for name in ("verify", "dig", "ecsprobe"):
        p = os.path.join(resdir, f"{name}.json")
        if os.path.exists(p):
            checks[name] = json.load(open(p))
            if not checks[name].get("ok"):
                warnings.append(f"answer check '{name}' failed: see checks.{name} in the JSON")
    dig_text = read(os.path.join(resdir, "dig.txt"), "")
    idle = list(map(int, read(os.path.join(resdir, "idle.cpu"), "0 0 0 0").split()))
    idle_cpu_s = (idle[1] - idle[0]) / clk
    idle_wall_s = (idle[3] - idle[2]) / 1e9 if idle[3] > idle[2] else None
    idle_rate = idle_cpu_s / idle_wall_s if idle_wall_s else None
    qps_med = median([s["qps"] for s in summary.values()])
    idle_us_per_query = idle_rate * 1e6 / qps_med if idle_rate is not None and qps_med else None
    if idle_us_per_query is not None and summary.get("simple", {}).get("cpu_us_per_query"):
        if idle_us_per_query > 0.02 * summary["simple"]["cpu_us_per_query"]:
            warnings.append(f"the idle server used {idle_rate * 100:.1f}% of a CPU: {idle_us_per_query:.3f} µs per query "
                            f"at the median q/s is in every kind's figure and pulls the ratios toward 1")
    quiet_lines = read(os.path.join(resdir, "quiet"), "")
    for line in quiet_lines.splitlines():
        what, _, frac = line.partition(" ")
        try:
            if float(frac) >= 0.10:
                warnings.append(f"machine {float(frac) * 100:.0f}% busy before {what} after waiting (see BENCH_QUIET_WAIT)")
        except ValueError:
            pass

    seconds, default_secs = int(meta["seconds"]), 10
    smoke = seconds < default_secs or rounds < 3
    R = {
        "benchmark": "policy",
        "requirement": "Edge server CPU per query for policy records (weighted, failover, geolocation with ECS) "
                       "against simple records in the same run: target <= 1.2x the simple-record cost.",
        "date": meta["date"],
        "command": meta["command"],
        "smoke": smoke,
        "machine": {
            "nproc": int(meta["nproc"]),
            "cpu_model": meta["cpu_model"],
            "kernel": meta["kernel"],
            "mem_gib": round(int(meta["mem_kib"]) / 1048576, 1),
            "loadavg_before": read(os.path.join(resdir, "loadavg_before")),
            "loadavg_after": read(os.path.join(resdir, "loadavg_after")),
        },
        "versions": {"meridian": meta["meridian_version"], "dnsperf": meta["dnsperf_version"]},
        "params": {
            "seconds": seconds,
            "rounds": rounds,
            "kinds": kinds,
            "qps_limit": int(meta["qps"]) if meta.get("qps") else None,
            "dnsperf_clients": int(meta["clients"]),
            "dnsperf_outstanding": int(meta["outstanding"]),
            "ecs_option": meta["ecs_opt"],
            "server": meta["server_cmd"],
            "target": TARGET,
        },
        "server_ready_s": float(meta["ready_s"]) if meta.get("ready_s") else None,
        "idle": {"cpu_s": idle_cpu_s, "wall_s": idle_wall_s, "cpu_share": idle_rate,
                 "us_per_query_at_median_qps": idle_us_per_query},
        "kinds": summary,
        "comparisons": comparisons,
        "pass": overall,
        "runs": runs,
        "order": order,
        "checks": checks,
        "dig_subnet_output": dig_text,
        "warnings": warnings,
        "total_s": float(meta["total_s"]),
    }
    with open(out_json, "w") as f:
        json.dump(R, f, indent=1)


# ---------------------------------------------------------------------------------------------
# Report


def us(v):
    return "n/a" if v is None else f"{v:.3f}"


def report(results, out_md):
    R = json.load(open(results))
    P = R["params"]
    L = []
    L.append("# Policy-record benchmark: edge CPU per query, policy vs simple records\n")
    L.append(f"Command: `{R['command']}`\n")
    if R["smoke"]:
        L.append(f"**SMOKE RUN** ({P['seconds']} s per dnsperf run, {P['rounds']} round(s)): it only shows the "
                 "script works end to end; not a result. The real run is `bench/policy.sh` "
                 "(10 s per run, 3 rounds).\n")
    L.append(f"Requirement: {R['requirement']}\n")
    verdict = {True: "**PASS**", False: "**FAIL**", None: "n/a"}[R["pass"]]
    L.append(f"Result: {verdict} (target: every judged ratio of server CPU per query ≤ {P['target']}×)\n")
    L.append(f"- Date: {R['date']}")
    m = R["machine"]
    L.append(f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['mem_gib']} GiB, kernel {m['kernel']}; "
             f"load average before: {m['loadavg_before']}, after: {m['loadavg_after']}")
    L.append(f"- Versions: meridian {R['versions']['meridian']}, dnsperf {R['versions']['dnsperf']}")
    L.append(f"- Server: `{P['server']}` pinned with `taskset -c 0` (one process: the control node, idle while "
             f"measuring, and the edge with 1 worker); dnsperf pinned with `taskset -c 1`; loopback UDP.")
    rate = f"-Q {P['qps_limit']}" if P["qps_limit"] else "no rate limit (max load, as edge.sh's CPU figure)"
    L.append(f"- dnsperf: `-e -c {P['dnsperf_clients']} -q {P['dnsperf_outstanding']} -l {P['seconds']}`, {rate}; "
             f"ECS queries add `-E {P['ecs_option']}` (option 8: family 1, source /24, scope 0, 198.51.100.0 → DE/EU "
             f"in the test geo database). Each query file is one line; dnsperf repeats it.")
    L.append(f"- {P['rounds']} round(s); in each, every kind runs once, the order rotated by one per round "
             f"(drift hits every kind alike). Figures are medians over rounds; a ratio is median(policy) / median(baseline).")
    L.append("- Server CPU = utime+stime of the server process (all threads, /proc/PID/stat) just before and "
             "after a dnsperf run, divided by the queries dnsperf got answers to.")
    idle = R["idle"]
    if idle.get("cpu_share") is not None:
        L.append(f"- Idle server (no queries, {idle['wall_s']:.1f} s): {idle['cpu_share'] * 100:.2f}% of a CPU "
                 f"(= {us(idle['us_per_query_at_median_qps'])} µs/query at the median q/s; not subtracted).")
    L.append("")
    L.append("Record sets in `bench.test.` (TTL 60):\n")
    L.append(f"- `simple` A: {', '.join(SIMPLE)} (one RRset, no policy)")
    L.append("- `weighted` A: " + ", ".join(f"{sid} weight {w} → {a}" for sid, w, a in WEIGHTED))
    L.append("- `failover` A: " + ", ".join(f"{sid} {role} → {a}" for sid, role, a in FAILOVER)
             + " (PRIMARY has a TCP health check, forced healthy with `health set-status`, so PRIMARY answers)")
    L.append("- `geo` A: " + ", ".join(f"{sid} {json.dumps(loc)} → {a}" for sid, loc, a in GEO))
    L.append("")
    L.append("## Ratios\n")
    L.append("| policy kind | baseline | CPU ratio (median) | per round | extra µs/query | user-time ratio | target | met? |")
    L.append("| --- | --- | ---: | --- | ---: | ---: | --- | --- |")
    for c in R["comparisons"]:
        ratio = "n/a" if c["ratio"] is None else f"{c['ratio']:.3f}×"
        ur = "n/a" if c["user_ratio"] is None else f"{c['user_ratio']:.2f}×"
        pr = ", ".join(f"{x:.3f}" for x in c["per_round_ratios"])
        tgt = f"≤ {P['target']}×" if c["judged"] else "(info)"
        met = "" if "pass" not in c else ("PASS" if c["pass"] else "**FAIL**")
        L.append(f"| {c['policy']} | {c['baseline']} | {ratio} | {pr} | {us(c['extra_us_per_query'])} | {ur} | {tgt} | {met} |")
    L.append("")
    L.append("geo_ecs is judged against simple_ecs (same ECS option parsed and echoed, so the difference is the "
             "geolocation decision); geo_ecs / simple shows ECS handling and decision together. The user-time ratio "
             "isolates user-space work (where the policy decision runs); most of the total is kernel UDP time, "
             "the same for every kind.")
    L.append("")
    L.append("## Per kind (medians over rounds)\n")
    L.append("| kind | query | server CPU µs/query | user | sys | q/s | answered | rcodes |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for k, s in R["kinds"].items():
        q = f"`{s['name']} A`" + (" + ECS" if s["ecs"] else "")
        qps = "n/a" if s["qps"] is None else f"{s['qps']:,.0f}"
        L.append(f"| {k} | {q} | {us(s['cpu_us_per_query'])} | {us(s['cpu_user_us_per_query'])} | "
                 f"{us(s['cpu_sys_us_per_query'])} | {qps} | {s['completed']:,} | {s['rcodes']} |")
    L.append("")
    L.append("## Every run\n")
    L.append("| round | kind | q/s | server CPU µs/query (user + sys) | answered | lost | rcodes | other work on CPU 0 (s) | tries |")
    L.append("| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for r, order in enumerate(R["order"], 1):
        for k in order:
            run = next((x for x in R["runs"].get(k, []) if x["round"] == r), None)
            if not run:
                continue
            qps = "n/a" if run["qps"] is None else f"{run['qps']:,.0f}"
            L.append(f"| {r} | {k} | {qps} | {us(run.get('cpu_us_per_query'))} ({us(run.get('cpu_user_us_per_query'))} + "
                     f"{us(run.get('cpu_sys_us_per_query'))}) | {run['completed']:,} | {run['lost']} | {run['rcodes']} | "
                     f"{run['cpu0_other_s']:.2f} | {run['tries']} |")
    L.append("")
    L.append("## Answer checks (before measuring)\n")
    ch = R["checks"]
    if "dig" in ch:
        d = ch["dig"]
        L.append(f"- `dig @127.0.0.1 -p PORT +subnet={ECS_NET} geo.bench.test A`: {d['status']}, answer {d['answer']} "
                 f"(the EU set is 10.5.0.1), reply CLIENT-SUBNET {d['reply_ecs']} (address/source/scope): "
                 f"{'ok' if d['ok'] else '**FAILED**'}")
    if "ecsprobe" in ch:
        e = ch["ecsprobe"]
        L.append(f"- dnsperf's own ECS query (`-E {e['dnsperf_option']}`, relayed to the server): option sent "
                 f"{e.get('query_ecs')}, server reply {e.get('rcode')} {e.get('answer')} ECS {e.get('reply_ecs')}: "
                 f"{'ok' if e['ok'] else '**FAILED**'}")
    if "verify" in ch:
        for k, v in ch["verify"]["kinds"].items():
            L.append(f"- `{v['query']}`: {v['rcode']} {v['answer']}, reply ECS {v['reply_ecs']}: {'ok' if v['ok'] else '**FAILED**'}")
        w = ch["verify"]["weighted_mix"]
        L.append(f"- weighted spread over {w['queries']} queries: {w['counts']} (weights {w['weights']}): "
                 f"{'ok' if w['ok'] else '**FAILED**'}")
    L.append("")
    if R["warnings"]:
        L.append("## Warnings\n")
        for w in R["warnings"]:
            L.append(f"- {w}")
        L.append("")
    L.append(f"Total run time: {R['total_s']:.0f} s. See bench/README.md (`bench/policy.sh`) for the method.")
    with open(out_md, "w") as f:
        f.write("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("batch")
    p.add_argument("hc_id")
    p.add_argument("out")
    p = sub.add_parser("queries")
    p.add_argument("dir")
    p = sub.add_parser("ready")
    p.add_argument("port", type=int)
    p.add_argument("timeout", type=float)
    p = sub.add_parser("verify")
    p.add_argument("port", type=int)
    p.add_argument("out")
    p = sub.add_parser("digcheck")
    p.add_argument("file")
    p.add_argument("out")
    p = sub.add_parser("ecsprobe")
    p.add_argument("port", type=int)
    p.add_argument("ecs_opt")
    p.add_argument("out")
    p = sub.add_parser("assemble")
    p.add_argument("resdir")
    p.add_argument("out")
    p = sub.add_parser("report")
    p.add_argument("results")
    p.add_argument("out")
    p = sub.add_parser("kind")
    p.add_argument("kind")
    a = ap.parse_args()

    if a.cmd == "batch":
        with open(a.out, "w") as f:
            json.dump(batch(a.hc_id), f, indent=2)
    elif a.cmd == "queries":
        for name in sorted({n for n, _, _ in KINDS.values()}):
            with open(os.path.join(a.dir, name.split(".")[0] + ".txt"), "w") as f:
                f.write(f"{name} A\n")
    elif a.cmd == "kind":  # prints "QUERYFILE-STEM ECS(0|1)" for policy.sh
        if a.kind not in KINDS:
            print(f"unknown kind '{a.kind}' (known: {' '.join(KINDS)})", file=sys.stderr)
            sys.exit(2)
        name, ecs, _ = KINDS[a.kind]
        print(name.split(".")[0], int(ecs))
    elif a.cmd == "ready":
        t = ready(a.port, a.timeout)
        if t is None:
            print("timeout")
            sys.exit(1)
        print(f"{t:.2f}")
    elif a.cmd in ("verify", "digcheck", "ecsprobe"):
        r = verify(a.port) if a.cmd == "verify" else digcheck(a.file) if a.cmd == "digcheck" else ecsprobe(a.port, a.ecs_opt)
        with open(a.out, "w") as f:
            json.dump(r, f, indent=1)
        print(json.dumps(r))
        sys.exit(0 if r["ok"] else 1)
    elif a.cmd == "assemble":
        assemble(a.resdir, a.out)
    elif a.cmd == "report":
        report(a.results, a.out)


if __name__ == "__main__":
    main()
