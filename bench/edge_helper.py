#!/usr/bin/env python3
"""Helper for bench/edge.sh: zone and query generation, process accounting, load-time polling,
dnsperf output parsing and the results report. Standard library only except `wait` (dnspython).

Subcommands (each prints JSON or plain values for edge.sh to capture):
  zone ORIGIN NAMES FILE [--seed N]      write a zone; prints {"names", "records", "last_name", ...}
  queries ZONEINFO FILE COUNT [--seed N] write a dnsperf query file from a zone's name lists
  cpu PID                                utime+stime and utime (clock ticks) of PID and its descendants
  mem PID                                RSS/PSS (KiB) summed over PID and its descendants
  wait PORT NAME START_NS TIMEOUT        poll until NAME/A answers NOERROR with data; prints seconds
  dnsperf FILE                           parse a dnsperf report (and -v lines) into JSON
  tree PID                               PID and its descendants, one a line
  cpu0                                   clock ticks CPU 0 ran tasks (from /proc/stat)
  noisy FILE.cpu                         exit 0 if CPU 0 ran other work during a run (> 3%)
  quiet TIMEOUT                          wait until the machine is idle (< 10% busy over 1 s)
  assemble RESDIR OUT.json               collect edge.sh's raw files into the results JSON
  report RESULTS.json OUT.md             render the Markdown table from the collected JSON
"""

import argparse
import json
import os
import random
import socket
import statistics
import struct
import sys
import time

# ---------------------------------------------------------------------------------------------
# Zones


def gen_zone(origin, names, path, seed):
    """A zone of `names` owner names (apex and name servers included) with ~1.4 records per name.

    Mix per non-apex name: 5% CNAME (to an earlier in-zone A name), else A (+ a second A for 10%),
    AAAA for 35%, MX for 3% (to an in-zone mail host), TXT for 4%. A fifth of the names sit one
    level deeper (`sNNN.dcK`), which also gives the zone empty non-terminals, as real zones have.
    """
    rng = random.Random(seed)
    origin = origin.rstrip(".") + "."
    info = {"origin": origin, "a": [], "aaaa": [], "cname": [], "mx": [], "txt": []}
    records = 0
    out = open(path, "w", buffering=1 << 20)
    w = out.write
    w(f"$ORIGIN {origin}\n$TTL 3600\n")
    w("@ IN SOA ns1 hostmaster 2024010101 7200 3600 1209600 3600\n")
    w("@ NS ns1\n@ NS ns2\n@ MX 10 mail\n@ TXT \"v=spf1 mx -all\"\n@ A 192.0.2.1\n@ AAAA 2001:db8::1\n")
    w("ns1 A 192.0.2.53\nns1 AAAA 2001:db8::53\nns2 A 198.51.100.53\nns2 AAAA 2001:db8:1::53\n")
    w("mail A 192.0.2.25\nmail AAAA 2001:db8::25\nwww CNAME @\n")
    records += 6 + 4 + 2 + 1 + 1  # + SOA
    fixed = 5  # apex, ns1, ns2, mail, www
    info["a"] += ["ns1", "ns2", "mail"]
    info["aaaa"] += ["ns1", "ns2", "mail"]
    info["cname"].append("www")
    dcs = 20
    last = None
    for i in range(names - fixed):
        owner = f"s{i}.dc{i % dcs}" if rng.random() < 0.2 else f"h{i}"
        r = rng.random()
        if r < 0.05 and info["a"]:
            target = info["a"][rng.randrange(len(info["a"]))]
            w(f"{owner} CNAME {target}\n")
            records += 1
            info["cname"].append(owner)
        else:
            n = i + 1
            w(f"{owner} A 10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}\n")
            records += 1
            if rng.random() < 0.05:
                w(f"{owner} A 172.16.{(n >> 8) & 255}.{n & 255}\n")
                records += 1
            info["a"].append(owner)
            if rng.random() < 0.35:
                w(f"{owner} AAAA 2001:db8:{(n >> 16) & 0xffff:x}:{n & 0xffff:x}::1\n")
                records += 1
                info["aaaa"].append(owner)
            if rng.random() < 0.03:
                w(f"{owner} MX 10 mail\n")
                records += 1
                info["mx"].append(owner)
            if rng.random() < 0.04:
                w(f"{owner} TXT \"v=spf1 ip4:10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255} -all\" \"id={n}\"\n")
                records += 1
                info["txt"].append(owner)
        last = owner
    out.close()
    info["names"] = names  # owner names with data (empty non-terminals dcK not counted)
    info["records"] = records
    info["last_name"] = f"{last}.{origin}" if last else origin
    info["bytes"] = os.path.getsize(path)
    return info


def gen_queries(info, path, count, seed):
    """dnsperf input: 10% NXDOMAIN (random labels under the apex), 5% CNAME names (type A, chased
    in-zone), 2% MX, 2% TXT, the rest A (60%) / AAAA (40%) on existing names; a tenth of the
    AAAA queries go to names without AAAA (NOERROR/NODATA, as in real traffic)."""
    rng = random.Random(seed)
    o = info["origin"]
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    mix = {"nx": 0, "cname": 0, "mx": 0, "txt": 0, "a": 0, "aaaa": 0, "aaaa_nodata": 0}
    with open(path, "w") as f:
        for _ in range(count):
            r = rng.random()
            if r < 0.10:
                label = "".join(rng.choice(alphabet) for _ in range(rng.randint(6, 12)))
                f.write(f"{label}.{o} A\n")
                mix["nx"] += 1
            elif r < 0.15:
                f.write(f"{rng.choice(info['cname'])}.{o} A\n")
                mix["cname"] += 1
            elif r < 0.17 and info["mx"]:
                f.write(f"{rng.choice(info['mx'])}.{o} MX\n")
                mix["mx"] += 1
            elif r < 0.19 and info["txt"]:
                f.write(f"{rng.choice(info['txt'])}.{o} TXT\n")
                mix["txt"] += 1
            elif rng.random() < 0.6:
                f.write(f"{rng.choice(info['a'])}.{o} A\n")
                mix["a"] += 1
            elif rng.random() < 0.9:
                f.write(f"{rng.choice(info['aaaa'])}.{o} AAAA\n")
                mix["aaaa"] += 1
            else:
                f.write(f"{rng.choice(info['a'])}.{o} AAAA\n")
                mix["aaaa_nodata"] += 1
    return {"queries": count, "mix": mix}


# ---------------------------------------------------------------------------------------------
# Processes


def descendants(pid):
    """PID and every process below it (NSD forks its server and xfrd)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pid):
    """(utime + stime, utime) in clock ticks, over PID and its descendants."""
    total = user = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        user += int(fields[11])
    return total, user


def mem(pid):
    procs = descendants(pid)
    rss = pss = 0
    per = []
    for p in procs:
        vals = {}
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 2 and parts[0] in ("Rss:", "Pss:"):
                        vals[parts[0][:-1]] = int(parts[1])
        except OSError:
            continue
        rss += vals.get("Rss", 0)
        pss += vals.get("Pss", 0)
        per.append({"pid": p, "rss_kib": vals.get("Rss", 0), "pss_kib": vals.get("Pss", 0)})
    return {"rss_kib": rss, "pss_kib": pss, "rss_max_kib": max((x["rss_kib"] for x in per), default=0), "processes": per}


def cpu_busy(cpu=None):
    """Busy ticks (everything but idle and iowait) of all CPUs as (total, busy); or, for one CPU,
    the ticks it ran tasks (user + nice + system: not irq/softirq, which is the benchmark's own
    packet delivery)."""
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if (cpu is None and parts[0] == "cpu") or parts[0] == f"cpu{cpu}":
                v = list(map(int, parts[1:9]))
                if cpu is not None:
                    return v[0] + v[1] + v[2]
                return sum(v), sum(v) - v[3] - v[4]
    return 0


def cpu0_other(path, clk):
    """From a `.cpu` file (server ticks before/after, CPU 0 task ticks before/after, wall ns
    before/after): seconds CPU 0 ran something other than the server, and the wall seconds."""
    vals = list(map(int, open(path).read().split()))
    if len(vals) < 6:
        return None, None
    server = (vals[1] - vals[0]) / clk
    return max(0.0, (vals[3] - vals[2]) / clk - server), (vals[5] - vals[4]) / 1e9


NOISE_MAX = 0.03  # share of a run's wall time that other tasks may take on CPU 0


def quiet(timeout, threshold=0.10):
    """Waits until the whole machine is < threshold busy over one second (another build or test
    would skew every figure); returns the last busy fraction seen."""
    deadline = time.monotonic() + timeout
    while True:
        t0, b0 = cpu_busy()
        time.sleep(1.0)
        t1, b1 = cpu_busy()
        frac = (b1 - b0) / max(1, t1 - t0)
        if frac < threshold or time.monotonic() >= deadline:
            return frac


# ---------------------------------------------------------------------------------------------
# Load time


def wait_answer(port, name, start_ns, timeout):
    """Polls 127.0.0.1:PORT with NAME/A (100 ms timeout, every 20 ms) until a NOERROR answer with
    data comes back; prints seconds since START_NS (taken just before the server was started)."""
    import dns.message
    import dns.rcode

    deadline = time.monotonic() + timeout
    q = dns.message.make_query(name, "A")
    wire = q.to_wire()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            s.sendto(wire, ("127.0.0.1", port))
            data, _ = s.recvfrom(65535)
            r = dns.message.from_wire(data)
            if r.id == q.id and r.rcode() == dns.rcode.NOERROR and len(r.answer) > 0:
                return (time.clock_gettime_ns(time.CLOCK_REALTIME) - start_ns) / 1e9
        except (socket.timeout, ConnectionRefusedError, OSError, Exception):
            pass
        time.sleep(0.02)
    return None


# ---------------------------------------------------------------------------------------------
# dnsperf


def parse_dnsperf(path):
    """The summary (completed, lost, q/s, rcodes, average latency) and, when dnsperf ran with -v,
    every per-query latency line ("> RCODE name type latency") for the percentiles."""
    res = {"rcodes": {}}
    lats = []
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    in_rcodes = False
    for line in lines:
        s = line.strip()
        if s.startswith("> ") and not in_rcodes:
            parts = s.split()
            try:
                lats.append(float(parts[-1]))
            except ValueError:
                pass
            continue
        if s.startswith("Queries sent:"):
            res["sent"] = int(s.split()[2])
        elif s.startswith("Queries completed:"):
            res["completed"] = int(s.split()[2])
        elif s.startswith("Queries lost:"):
            res["lost"] = int(s.split()[2])
        elif s.startswith("Queries interrupted:"):
            res["interrupted"] = int(s.split()[2])
        elif s.startswith("Response codes:"):
            body = s[len("Response codes:") :]
            for item in body.split(","):
                p = item.split()
                if len(p) >= 2:
                    res["rcodes"][p[0]] = int(p[1])
        elif s.startswith("Run time (s):"):
            res["run_time_s"] = float(s.split()[3])
        elif s.startswith("Queries per second:"):
            res["qps"] = float(s.split()[3])
        elif s.startswith("Average Latency (s):"):
            p = s.split()
            res["lat_avg_s"] = float(p[3])
            res["lat_min_s"] = float(p[5].rstrip(","))
            res["lat_max_s"] = float(p[7].rstrip(")"))
        elif s.startswith("Latency StdDev (s):"):
            res["lat_stddev_s"] = float(s.split()[3])
        elif s.startswith("Connection"):
            res.setdefault("connection_lines", []).append(s)
    if lats:
        lats.sort()
        n = len(lats)

        def pct(p):
            return lats[min(n - 1, int(p / 100.0 * n))]

        res["lat_samples"] = n
        res["lat_p50_s"] = pct(50)
        res["lat_p90_s"] = pct(90)
        res["lat_p99_s"] = pct(99)
        res["lat_mean_s"] = statistics.fmean(lats)
    return res



# ---------------------------------------------------------------------------------------------
# Assemble


def assemble(resdir, out_json):
    meta = {}
    for line in open(os.path.join(resdir, "meta.env")):
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            meta[k] = v
    clk = int(open(os.path.join(resdir, "clk_tck")).read())
    warnings = []

    def run(path):
        if not os.path.exists(path):
            return None
        r = parse_dnsperf(path)
        r.pop("connection_lines", None)
        if os.path.exists(path + ".cpu"):
            vals = list(map(int, open(path + ".cpu").read().split()))
            c0, c1 = vals[0], vals[1]
            r["server_cpu_s"] = (c1 - c0) / clk
            if r.get("completed"):
                r["cpu_us_per_query"] = r["server_cpu_s"] * 1e6 / r["completed"]
            other, wall = cpu0_other(path + ".cpu", clk)
            if len(vals) >= 8 and r.get("completed"):
                r["cpu_user_us_per_query"] = (vals[7] - vals[6]) / clk * 1e6 / r["completed"]
                r["cpu_sys_us_per_query"] = r["cpu_us_per_query"] - r["cpu_user_us_per_query"]
            if other is not None:
                # CPU 0 is the server's; whatever else ran there skews the figures.
                r["cpu0_other_s"] = round(other, 3)
                r["wall_s"] = round(wall, 3)
            if os.path.exists(path + ".tries"):
                r["tries"] = int(open(path + ".tries").read())
        return r

    servers = {}
    for s in meta["servers"].split():
        d = os.path.join(resdir, s)
        if not os.path.isdir(d):
            warnings.append(f"{s}: no results")
            continue
        S = {"udp_runs": []}
        for c in meta["udp_clients"].split():
            r = run(os.path.join(d, f"udp_c{c}.txt"))
            if r:
                r["clients"] = int(c)
                S["udp_runs"].append(r)
        S["tcp"] = run(os.path.join(d, "tcp.txt"))
        S["latency"] = run(os.path.join(d, "latency.txt"))
        if S["latency"]:
            S["latency"].pop("lat_samples_list", None)
        big = {}
        if os.path.exists(os.path.join(d, "big_load_s")):
            big["load_s"] = float(open(os.path.join(d, "big_load_s")).read())
        if os.path.exists(os.path.join(d, "big_mem.json")):
            big["mem"] = json.load(open(os.path.join(d, "big_mem.json")))
        S["big"] = big
        if os.path.exists(os.path.join(d, "small_load_s")):
            S["small_ready_s"] = float(open(os.path.join(d, "small_load_s")).read())
        best = max(S["udp_runs"], key=lambda r: r.get("qps", 0), default={})
        S["summary"] = {
            "udp_qps": best.get("qps"),
            "udp_best_clients": best.get("clients"),
            "cpu_us_per_udp_query": best.get("cpu_us_per_query"),
            "tcp_qps": (S["tcp"] or {}).get("qps"),
            "cpu_us_per_tcp_query": (S["tcp"] or {}).get("cpu_us_per_query"),
            "lat_p50_s": (S["latency"] or {}).get("lat_p50_s"),
            "lat_p99_s": (S["latency"] or {}).get("lat_p99_s"),
            "lat_avg_s": (S["latency"] or {}).get("lat_avg_s"),
            "big_rss_kib": big.get("mem", {}).get("rss_kib"),
            "big_pss_kib": big.get("mem", {}).get("pss_kib"),
            "big_load_s": big.get("load_s"),
        }
        # Sanity: answers other than NOERROR/NXDOMAIN, lost queries, an NXDOMAIN share far from the query mix.
        for name, r in [(f"UDP -c {r['clients']}", r) for r in S["udp_runs"]] + [("TCP", S["tcp"]), ("latency", S["latency"])]:
            if not r:
                warnings.append(f"{s}: {name}: no dnsperf result")
                continue
            odd = {k: v for k, v in r["rcodes"].items() if k not in ("NOERROR", "NXDOMAIN")}
            if odd:
                warnings.append(f"{s}: {name}: unexpected response codes {odd}")
            done = r.get("completed") or 0
            if r.get("sent") and r.get("lost", 0) > 0.001 * r["sent"]:
                warnings.append(f"{s}: {name}: {r['lost']} of {r['sent']} queries lost")
            wall = r.get("wall_s") or 0
            if wall and r.get("cpu0_other_s", 0) > NOISE_MAX * wall:
                warnings.append(f"{s}: {name}: CPU 0 ran {r['cpu0_other_s']:.2f} s of other work during the {wall:.1f} s run")
            if done:
                nx = r["rcodes"].get("NXDOMAIN", 0) / done
                if abs(nx - 0.10) > 0.02:
                    warnings.append(f"{s}: {name}: NXDOMAIN share {nx:.1%}, expected ~10%")
        servers[s] = S

    def load(path):
        with open(os.path.join(resdir, path)) as f:
            return json.load(f)

    loadavg_before = open(os.path.join(resdir, "loadavg_before")).read().split()[:3]
    loadavg_after = open(os.path.join(resdir, "loadavg_after")).read().split()[:3]
    for line in open(os.path.join(resdir, "quiet")) if os.path.exists(os.path.join(resdir, "quiet")) else []:
        what, frac = line.split()
        if float(frac) >= 0.10:
            warnings.append(f"machine {float(frac):.0%} busy before {what} (waited, then went on): other work may skew the figures")
    R = {
        "date": meta["date"],
        "command": meta["command"],
        "machine": {
            "nproc": int(meta["nproc"]),
            "kernel": meta["kernel"],
            "cpu_model": meta["cpu_model"],
            "mem_gib": round(int(meta["mem_kib"]) / 1024 / 1024, 1),
            "loadavg_before": " ".join(loadavg_before),
            "loadavg_after": " ".join(loadavg_after),
        },
        "versions": {
            "meridian": meta["meridian_version"],
            "knot": meta["knot_version"],
            "nsd": meta["nsd_version"],
            "dnsperf": meta["dnsperf_version"],
        },
        "params": {
            "quick": meta["quick"] == "1",
            "udp_secs": int(meta["udp_secs"]),
            "udp_clients": [int(c) for c in meta["udp_clients"].split()],
            "udp_outstanding": int(meta["udp_outstanding"]),
            "tcp_secs": int(meta["tcp_secs"]),
            "tcp_clients": int(meta["tcp_clients"]),
            "tcp_outstanding": int(meta["tcp_outstanding"]),
            "latency_secs": int(meta["lat_secs"]),
            "latency_qps": int(meta["lat_qps"]),
        },
        "targets": {
            "cpu_us_per_udp_query": "<= 0.8 x knot",
            "tcp_qps": ">= 2.3 x knot",
            "big_rss_kib": "<= 158 MB (gdnsd)",
            "big_load_s": "<= knot",
        },
        "small_zone": load("small.summary"),
        "big_zone": load("big.summary"),
        "query_file": load("queries.summary"),
        "servers": servers,
        "ratios_to_knot": {},
        "warnings": warnings,
        "total_s": float(meta["total_s"]),
    }
    knot = servers.get("knot", {}).get("summary", {})
    for s, S in servers.items():
        R["ratios_to_knot"][s] = {
            k: (round(v / knot[k], 3) if v is not None and knot.get(k) else None) for k, v in S["summary"].items() if k != "udp_best_clients"
        }
    with open(out_json, "w") as f:
        json.dump(R, f, indent=1)

# ---------------------------------------------------------------------------------------------
# Report


def fmt(v, kind):
    if v is None:
        return "n/a"
    if kind == "qps":
        return f"{v:,.0f}"
    if kind == "us":
        return f"{v:.2f}"
    if kind == "lat":
        return f"{v * 1e6:.0f}"
    if kind == "mib":
        return f"{v / 1024:.1f}"
    if kind == "s":
        return f"{v:.2f}"
    return str(v)


def ratio(v, k):
    if v is None or k in (None, 0):
        return None
    return v / k


def cpu_cell(run):
    total = fmt(run.get("cpu_us_per_query"), "us")
    if run.get("cpu_user_us_per_query") is None:
        return total
    return f"{total} ({fmt(run['cpu_user_us_per_query'], 'us')} + {fmt(run['cpu_sys_us_per_query'], 'us')})"


def report(results_path, out_md):
    R = json.load(open(results_path))
    servers = ["meridian", "knot", "nsd"]
    S = R["servers"]

    def g(srv, key):
        return S.get(srv, {}).get("summary", {}).get(key)

    rows = [
        # key, label, kind, target text, target check (value, knot) -> bool|None
        ("cpu_us_per_udp_query", "Server CPU per UDP query (µs, at max UDP load)", "us", "≤ 0.8× Knot", lambda v, k: v <= 0.8 * k),
        ("udp_qps", "UDP queries/s (best of dnsperf -c runs)", "qps", "", None),
        ("tcp_qps", "TCP queries/s (8 pipelining connections)", "qps", "≥ 2.3× Knot", lambda v, k: v >= 2.3 * k),
        ("cpu_us_per_tcp_query", "Server CPU per TCP query (µs)", "us", "", None),
        ("lat_p50_s", f"UDP p50 latency at {R['params']['latency_qps']:,} q/s (µs)", "lat", "", None),
        ("lat_p99_s", f"UDP p99 latency at {R['params']['latency_qps']:,} q/s (µs)", "lat", "", None),
        ("big_rss_kib", f"RSS after loading the {R['big_zone']['names']:,}-name zone (MiB)", "mib", "≤ 158 MB (gdnsd)", lambda v, k: v * 1024 <= 158e6),
        ("big_pss_kib", f"PSS after loading the {R['big_zone']['names']:,}-name zone (MiB)", "mib", "", None),
        ("big_load_s", f"{R['big_zone']['names']:,}-name zone load time (s)", "s", "≤ Knot", lambda v, k: v <= k),
    ]
    L = []
    L.append(f"# Edge benchmark: meridian vs Knot vs NSD\n")
    L.append(f"- Date: {R['date']}")
    L.append(f"- Mode: {'QUICK (smoke run, not a result)' if R['params']['quick'] else 'full'}")
    L.append(f"- Machine: {R['machine']['nproc']} CPUs ({R['machine']['cpu_model']}), {R['machine']['mem_gib']} GiB, kernel {R['machine']['kernel']}; load average before the run: {R['machine']['loadavg_before']}, after: {R['machine'].get('loadavg_after', 'n/a')}")
    L.append(f"- Versions: {', '.join(f'{k} {v}' for k, v in R['versions'].items())}")
    L.append(f"- Command: `{R['command']}`")
    L.append(f"- Servers pinned with `taskset -c 0`, dnsperf with `taskset -c 1`; loopback; one server at a time; meridian `--workers 1`, Knot 1 UDP / 1 TCP / 1 background worker, NSD `server-count: 1`.")
    L.append(f"- Small zone `{R['small_zone']['origin']}`: {R['small_zone']['names']:,} names, {R['small_zone']['records']:,} records. Big zone `{R['big_zone']['origin']}`: {R['big_zone']['names']:,} names, {R['big_zone']['records']:,} records ({R['big_zone']['bytes'] / 1e6:.0f} MB of zone file).")
    L.append(f"- Query file: {R['query_file']['queries']:,} queries, mix {R['query_file']['mix']}.")
    L.append("")
    L.append("| Figure | meridian | knot | nsd | meridian / knot | nsd / knot | target (meridian) | met? |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for key, label, kind, target, check in rows:
        vals = {s: g(s, key) for s in servers}
        k = vals["knot"]
        rm = ratio(vals["meridian"], k)
        rn = ratio(vals["nsd"], k)
        met = ""
        if check is not None and vals["meridian"] is not None and (k is not None or key == "big_rss_kib"):
            met = "yes" if check(vals["meridian"], k) else "**no**"
        L.append(
            f"| {label} | {fmt(vals['meridian'], kind)} | {fmt(vals['knot'], kind)} | {fmt(vals['nsd'], kind)} | "
            f"{'n/a' if rm is None else f'{rm:.2f}×'} | {'n/a' if rn is None else f'{rn:.2f}×'} | {target} | {met} |"
        )
    L.append("")
    L.append("Ratios are to Knot in the same run (for CPU, memory, latency and load time lower is better; for q/s higher is better). "
             "UDP q/s is bounded by the one dnsperf on CPU 1 as much as by the server; server CPU per query is the server's own cost.")
    L.append("")
    L.append("## UDP runs (per dnsperf client count)\n")
    L.append("| server | clients | q/s | server CPU µs/query (user + sys) | lost | rcodes |")
    L.append("| --- | ---: | ---: | ---: | ---: | --- |")
    for s in servers:
        for run in S.get(s, {}).get("udp_runs", []):
            L.append(f"| {s} | {run['clients']} | {fmt(run.get('qps'), 'qps')} | {cpu_cell(run)} | {run.get('lost', 'n/a')} | {run.get('rcodes', {})} |")
    L.append("")
    L.append("## Other runs\n")
    L.append("| server | run | q/s | server CPU µs/query (user + sys) | lost | rcodes | latency avg / p50 / p90 / p99 (µs) |")
    L.append("| --- | --- | ---: | ---: | ---: | --- | --- |")
    for s in servers:
        for name in ("tcp", "latency"):
            run = S.get(s, {}).get(name)
            if not run:
                continue
            lat = "/".join(fmt(run.get(x), "lat") for x in ("lat_avg_s", "lat_p50_s", "lat_p90_s", "lat_p99_s"))
            L.append(f"| {s} | {name} | {fmt(run.get('qps'), 'qps')} | {cpu_cell(run)} | {run.get('lost', 'n/a')} | {run.get('rcodes', {})} | {lat} |")
    L.append("")
    L.append("## Big zone: memory and load\n")
    L.append("| server | load time (s) | RSS sum (MiB) | PSS sum (MiB) | processes (pid: RSS/PSS KiB) |")
    L.append("| --- | ---: | ---: | ---: | --- |")
    for s in servers:
        b = S.get(s, {}).get("big")
        if not b:
            continue
        procs = ", ".join(f"{p['pid']}: {p['rss_kib']}/{p['pss_kib']}" for p in b.get("mem", {}).get("processes", []))
        L.append(f"| {s} | {fmt(b.get('load_s'), 's')} | {fmt(b.get('mem', {}).get('rss_kib'), 'mib')} | {fmt(b.get('mem', {}).get('pss_kib'), 'mib')} | {procs} |")
    L.append("")
    if R.get("warnings"):
        L.append("## Warnings\n")
        for w in R["warnings"]:
            L.append(f"- {w}")
        L.append("")
    L.append(f"Total run time: {R.get('total_s', 0):.0f} s. See bench/README.md for how each figure is measured.")
    with open(out_md, "w") as f:
        f.write("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("zone")
    p.add_argument("origin")
    p.add_argument("names", type=int)
    p.add_argument("file")
    p.add_argument("--info")
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("queries")
    p.add_argument("info")
    p.add_argument("file")
    p.add_argument("count", type=int)
    p.add_argument("--seed", type=int, default=2)
    p = sub.add_parser("cpu")
    p.add_argument("pid", type=int)
    p = sub.add_parser("mem")
    p.add_argument("pid", type=int)
    p = sub.add_parser("wait")
    p.add_argument("port", type=int)
    p.add_argument("name")
    p.add_argument("start_ns", type=int)
    p.add_argument("timeout", type=float)
    p = sub.add_parser("dnsperf")
    p.add_argument("file")
    sub.add_parser("cpu0")
    p = sub.add_parser("noisy")
    p.add_argument("cpufile")
    p = sub.add_parser("quiet")
    p.add_argument("timeout", type=float)
    p = sub.add_parser("tree")
    p.add_argument("pid", type=int)
    p = sub.add_parser("assemble")
    p.add_argument("resdir")
    p.add_argument("out")
    p = sub.add_parser("report")
    p.add_argument("results")
    p.add_argument("out")
    a = ap.parse_args()

    if a.cmd == "zone":
        info = gen_zone(a.origin, a.names, a.file, a.seed)
        if a.info:
            with open(a.info, "w") as f:
                json.dump(info, f)
        print(json.dumps({k: info[k] for k in ("origin", "names", "records", "last_name", "bytes")}))
    elif a.cmd == "queries":
        info = json.load(open(a.info))
        print(json.dumps(gen_queries(info, a.file, a.count, a.seed)))
    elif a.cmd == "cpu":
        print(*cpu_ticks(a.pid))
    elif a.cmd == "mem":
        print(json.dumps(mem(a.pid)))
    elif a.cmd == "wait":
        t = wait_answer(a.port, a.name, a.start_ns, a.timeout)
        if t is None:
            print("timeout")
            sys.exit(1)
        print(f"{t:.3f}")
    elif a.cmd == "dnsperf":
        print(json.dumps(parse_dnsperf(a.file)))
    elif a.cmd == "cpu0":
        print(cpu_busy(0))
    elif a.cmd == "noisy":
        other, wall = cpu0_other(a.cpufile, os.sysconf("SC_CLK_TCK"))
        print(f"{other:.2f} s of other work on CPU 0 in {wall:.1f} s")
        sys.exit(0 if other > NOISE_MAX * wall else 1)
    elif a.cmd == "quiet":
        print(f"{quiet(a.timeout):.3f}")
    elif a.cmd == "tree":
        print("\n".join(map(str, descendants(a.pid))))
    elif a.cmd == "assemble":
        assemble(a.resdir, a.out)
    elif a.cmd == "report":
        report(a.results, a.out)


if __name__ == "__main__":
    main()
