#!/usr/bin/env python3
"""Helper for bench/control.sh and bench/propagation.sh (the control-plane benchmarks): process
and machine CPU accounting, cluster and edge polling, the single-change apply probe, an fsync
probe, and the results (JSON and Markdown). Standard library only.

Subcommands (each prints JSON or plain values for the scripts to capture):
  quiet TIMEOUT                        wait until the machine is idle (< 10% busy over 1 s); prints the fraction
  cpusnap ROOTPID [PID...]             one line of JSON: wall ns, machine task ticks, ticks of ROOTPID's tree
                                       (live descendants + its reaped children), and of each PID's tree
  noise BEFORE AFTER                   from two cpusnap files: cores used by work outside ROOTPID's tree; exit 0
                                       if above NOISE_CORES_MAX (another build ran during the step)
  tree PID                             PID and its descendants, one a line
  port-free PORT                       exit 0 if 127.0.0.1:PORT can be bound (UDP and TCP)
  leader MERIDIAN API TIMEOUT          poll `cluster status` until a leader is known and every node reachable;
                                       prints {"leader": id, "addr": ..., "catalog_version": ...}
  catalog-version MERIDIAN API         the cluster's catalog version
  metrics ADDR                         an edge's /metrics as JSON {name: value}
  wait-synced VERSION TIMEOUT START_NS ADDR...
                                       poll edges' /metrics until each has applied >= VERSION; prints
                                       seconds since START_NS
  apply-probe ...                      single-record changes, one at a time; after each, the edge's
                                       meridian_edge_apply_seconds_last once it has applied that version
  fsync DIR                            p50/p99 of a 4 KiB write + fdatasync in DIR (the disk under RocksDB)
  rss PID...                           RSS (KiB) of each PID
  snapshots LOG FROM_LINE              Raft snapshots built after line FROM_LINE of a node log (ms, bytes)
  zone-sets FILE                       record sets (distinct owner and type) in a zone file written by
                                       edge_helper.py (one record a line, owner always given)
  cli-result OUT START_NS END_NS RC    one JSON line for a timed CLI command: seconds, exit status,
                                       committed (exit 0) and the CLI's JSON output
  record FILE KEY=JSON... [--json-file F] [--text-file F]
                                       append one step record (JSON line) to FILE
  assemble KIND RESDIR OUT.json        collect meta.env and steps.jsonl into the results JSON
  report KIND RESULTS.json OUT.md      render the Markdown from the collected JSON
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

NOISE_CORES_MAX = 0.15  # average cores other work may use during a step before it is repeated

# ---------------------------------------------------------------------------------------------
# Processes and CPU


def warnings_section(R, L):
    """Appends the run's warnings (if any) to the report lines L."""
    if R.get("warnings"):
        L.append("## Warnings\n")
        for w in R["warnings"]:
            L.append(f"- {w}")
        L.append("")


def _proc_table():
    """{pid: (ppid, utime+stime, cutime+cstime)} for every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))
    return out


def descendants(pid, table=None):
    table = table if table is not None else _proc_table()
    children = {}
    for p, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_ticks(pid, table, with_reaped):
    """CPU ticks of PID and its live descendants; with_reaped adds every reaped child's ticks
    (cutime/cstime) of each process in the tree, so commands that ran and exited during a step
    (meridian-bench, the CLI, stopped daemons) still count."""
    total = 0
    for p in descendants(pid, table):
        if p in table:
            total += table[p][1]
            if with_reaped:
                total += table[p][2]
    return total


def machine_ticks():
    """(all ticks, task ticks: user + nice + system) over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0] == "cpu":
                v = list(map(int, parts[1:9]))
                return sum(v), v[0] + v[1] + v[2]
    return 0, 0


def cpusnap(root, pids):
    table = _proc_table()
    total, tasks = machine_ticks()
    return {
        "ns": time.time_ns(),
        "total": total,
        "tasks": tasks,
        "ours": tree_ticks(root, table, True),
        "pids": {str(p): tree_ticks(p, table, False) for p in pids},
        "ncpu": os.cpu_count(),
        "clk": os.sysconf("SC_CLK_TCK"),
    }


def noise(before, after):
    """Cores (average over the step) used by tasks outside our tree."""
    ncpu = after["ncpu"]
    wall_ticks = (after["total"] - before["total"]) / ncpu
    if wall_ticks <= 0:
        return 0.0
    other = (after["tasks"] - before["tasks"]) - (after["ours"] - before["ours"])
    return max(0.0, other / wall_ticks)


def quiet(timeout, threshold=0.10):
    deadline = time.monotonic() + timeout
    while True:
        t0, b0 = machine_ticks()
        time.sleep(1.0)
        t1, b1 = machine_ticks()
        frac = (b1 - b0) / max(1, t1 - t0)
        if frac < threshold or time.monotonic() >= deadline:
            return frac


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def wait_idle(pids, quiet_s=0.3, timeout=10.0):
    """Waits until PIDS (trees) used no CPU tick for quiet_s (e.g. an edge's cache writer is
    done), at most timeout seconds; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        table = _proc_table()
        a = sum(tree_ticks(p, table, False) for p in pids)
        time.sleep(quiet_s)
        table = _proc_table()
        b = sum(tree_ticks(p, table, False) for p in pids)
        if b - a == 0:
            break
    return time.monotonic() - t0


# ---------------------------------------------------------------------------------------------
# Cluster and edges


def cluster_status(meridian, api):
    r = subprocess.run([meridian, "--api", api, "cluster", "status", "--output", "json"],
                       capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip() or "cluster status failed")
    return json.loads(r.stdout)


def leader(meridian, api, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            s = cluster_status(meridian, api)
            last = s
            nodes = s.get("nodes", [])
            if s.get("leader") and nodes and all(n.get("reachable") for n in nodes):
                addr = next(n["addr"] for n in nodes if n["id"] == s["leader"])
                return {"leader": s["leader"], "addr": addr, "catalog_version": s.get("catalog_version"), "nodes": len(nodes)}
        except Exception as e:  # not up yet
            last = str(e)
        time.sleep(0.2)
    raise SystemExit(f"no leader within {timeout} s; last status: {last}")


def metrics(addr, timeout=2.0):
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=timeout) as r:
        body = r.read().decode()
    out = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def commit_hist(before, after):
    """Server-side commit latency (meridian_batch_commit_seconds, the leader's histogram) over a
    step: count, mean, and p50/p99 as the upper bound of the bucket they fall in."""
    pre = "meridian_batch_commit_seconds"
    d = lambda k: after.get(k, 0) - before.get(k, 0)
    count = d(pre + "_count")
    if count <= 0:
        return None
    buckets = []
    for k in after:
        if k.startswith(pre + "_bucket{le=\""):
            le = k[len(pre + "_bucket{le=\""):-2]
            if le != "+Inf":
                buckets.append((float(le), d(k)))
    buckets.sort()

    def q(p):
        for le, n in buckets:
            if n >= p * count:
                return le * 1e3
        return None  # above the largest bound
    return {"count": count, "mean_ms": d(pre + "_sum") / count * 1e3, "p50_le_ms": q(0.5), "p99_le_ms": q(0.99)}


def wait_synced(version, timeout, start_ns, addrs):
    """Seconds from START_NS (wall clock just before the edges were started) until every edge
    reports catalog version >= VERSION."""
    t0 = time.monotonic()
    pending = list(addrs)
    while pending:
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"edges {pending} did not reach catalog version {version} within {timeout} s")
        still = []
        for a in pending:
            try:
                if metrics(a).get("meridian_edge_catalog_version", 0) < version:
                    still.append(a)
            except OSError:
                still.append(a)
        pending = still
        if pending:
            time.sleep(0.05)
    return (time.time_ns() - start_ns) / 1e9


def apply_probe(meridian, api, zone, metrics_addr, count, idle_pids, label):
    """COUNT single-record upserts of `apply-probe.<zone>` TXT, one at a time: before each, wait
    until the edges and control are idle (no cache write or earlier work running); after it,
    poll the edge until it has applied that version and read meridian_edge_apply_seconds_last."""
    samples = []
    for k in range(count):
        waited = wait_idle(idle_pids)
        r = subprocess.run([meridian, "--api", api, "record", "upsert", zone, "apply-probe", "TXT",
                            f'"{label}-{k}-{time.time_ns()}"', "--ttl", "60", "--output", "json"],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise SystemExit(f"record upsert failed: {r.stderr.strip()}")
        version = json.loads(r.stdout)["version"]
        t0 = time.monotonic()
        while True:
            m = metrics(metrics_addr)
            if m.get("meridian_edge_catalog_version", 0) >= version:
                break
            if time.monotonic() - t0 > 30:
                raise SystemExit(f"edge {metrics_addr} did not apply version {version} within 30 s")
            time.sleep(0.001)
        seen = time.monotonic() - t0
        if m["meridian_edge_catalog_version"] != version:
            raise SystemExit(f"edge jumped past version {version} (another change ran?)")
        # seen_s: from the CLI's exit (the change committed) until the edge's /metrics shows the
        # version; includes the CLI's exit and ~1-2 ms of polling, so only a rough figure.
        samples.append({"version": version, "apply_s": m["meridian_edge_apply_seconds_last"],
                        "seen_s": round(seen, 4), "idle_wait_s": round(waited, 3)})
    vals = sorted(s["apply_s"] for s in samples)
    return {
        "zone": zone,
        "count": len(vals),
        "median_s": statistics.median(vals),
        "max_s": vals[-1],
        "min_s": vals[0],
        "seen_median_s": statistics.median(x["seen_s"] for x in samples),
        "samples": samples,
    }


def fsync_probe(d, n=300):
    path = os.path.join(d, "fsync-probe.tmp")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    lat = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            t = time.perf_counter()
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    return {"count": n, "p50_ms": lat[n // 2] * 1e3, "p99_ms": lat[int(n * 0.99) - 1] * 1e3, "max_ms": lat[-1] * 1e3}


def snapshots(log, from_line):
    """Raft snapshots the node built after line FROM_LINE of its log: [{"ms": build time,
    "bytes": serialized size}] (from openraft's "push snapshot building command" and
    "command done: BuildSnapshot: {snapshot_id: INDEX-BYTES" lines)."""
    from datetime import datetime
    out, start = [], None
    def ts(line):
        try:
            return datetime.strptime(line[:26], "%Y-%m-%dT%H:%M:%S.%f")
        except ValueError:
            return None
    with open(log, errors="replace") as f:
        for i, line in enumerate(f):
            if i < from_line:
                continue
            if "push snapshot building command" in line:
                start = ts(line)
            elif "command done: BuildSnapshot" in line and start is not None:
                end = ts(line)
                size = None
                k = line.find("snapshot_id: ")
                if k >= 0:
                    try:
                        size = int(line[k + 13:].split(",")[0].split("-")[1])
                    except (IndexError, ValueError):
                        pass
                if end:
                    out.append({"ms": round((end - start).total_seconds() * 1e3, 1), "bytes": size})
                start = None
    return out


def zone_sets(path):
    """Distinct (owner, type) pairs in a BIND zone file as bench/edge_helper.py writes it: one
    record a line, the owner always first, then optional TTL and class, then the type."""
    sets = set()
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith(("$", ";")):
                continue
            tok = line.split()
            i = 1
            while i < len(tok) and (tok[i].isdigit() or tok[i].upper() in ("IN", "CH", "HS")):
                i += 1
            sets.add((tok[0].lower(), tok[i].upper()))
    return len(sets)


def cli_result(out, start_ns, end_ns, rc):
    """A CLI step's result: wall seconds from just before the CLI started to its exit, and its
    --output json answer (pretty-printed over several lines) if it printed one."""
    try:
        change = json.loads(open(out).read())
    except (OSError, json.JSONDecodeError):
        change = None
    return {"seconds": round((end_ns - start_ns) / 1e9, 3), "exit_status": rc, "committed": rc == 0, "change": change}


def port_free(p):
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            return False
        finally:
            s.close()
    return True


# ---------------------------------------------------------------------------------------------
# Results


def record(path, pairs, json_file, text_file):
    rec = {}
    for kv in pairs:
        k, _, v = kv.partition("=")
        try:
            rec[k] = json.loads(v)
        except json.JSONDecodeError:
            rec[k] = v
    if json_file:
        try:
            txt = open(json_file).read().strip()
            # meridian-bench prints one JSON object; take the last line that parses.
            for line in reversed(txt.splitlines()):
                try:
                    rec["result"] = json.loads(line)
                    break
                except json.JSONDecodeError:
                    continue
        except OSError:
            pass
    if text_file:
        try:
            rec["error_text"] = open(text_file).read()[-2000:]
        except OSError:
            pass
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def read_env(path):
    out = {}
    if os.path.exists(path):
        for line in open(path):
            k, _, v = line.rstrip("\n").partition("=")
            if k:
                out[k] = v
    return out


def step_cpu(rec):
    """Per-process CPU seconds during a step, from its cpusnap before/after; "client" is the
    rest of the benchmark's own tree (meridian-bench or the CLI, and the script's helpers)."""
    b, a = rec.get("cpu_before"), rec.get("cpu_after")
    if not b or not a:
        return {}
    clk = a["clk"]
    out = {p: (a["pids"].get(p, 0) - b["pids"].get(p, 0)) / clk for p in a["pids"]}
    out["client"] = max(0.0, (a["ours"] - b["ours"]) / clk - sum(out.values()))
    return out


def assemble(kind, resdir, out):
    meta = read_env(os.path.join(resdir, "meta.env"))
    steps = []
    p = os.path.join(resdir, "steps.jsonl")
    if os.path.exists(p):
        for line in open(p):
            if line.strip():
                steps.append(json.loads(line))
    pidnames = read_env(os.path.join(resdir, "pids.env"))  # pid -> role
    for s in steps:
        cpu = step_cpu(s)
        wall = None
        if s.get("cpu_before") and s.get("cpu_after"):
            wall = (s["cpu_after"]["ns"] - s["cpu_before"]["ns"]) / 1e9
            s["noise_cores"] = round(noise(s["cpu_before"], s["cpu_after"]), 3)
            s["wall_s"] = round(wall, 3)
        if cpu:
            s["cpu_s"] = {pidnames.get(p, p): round(v, 3) for p, v in cpu.items()}
        s.pop("cpu_before", None)
        s.pop("cpu_after", None)
        if "client" in s.get("cpu_s", {}):
            s["probe_cpu_s"] = s["cpu_s"]["client"]
        c0, c1 = s.pop("leader_metrics_before", None), s.pop("leader_metrics_after", None)
        if c0 and c1:
            s["server_commit"] = commit_hist(c0, c1)
        m0, m1 = s.pop("edge_metrics_before", None), s.pop("edge_metrics_after", None)
        if m0 and m1:
            per = {}
            for addr, a in m1.items():
                b = m0.get(addr, {})
                d = lambda k: a.get(k, 0) - b.get(k, 0)
                per[addr] = {"deltas": d("meridian_edge_deltas_applied_total"),
                             "apply_s": round(d("meridian_edge_apply_seconds_total"), 6),
                             "full": d("meridian_edge_full_catalogs_applied_total"),
                             "resyncs": d("meridian_edge_resyncs_total")}
            s["edges_detail"] = per
            deltas = sum(v["deltas"] for v in per.values())
            if deltas:
                s["apply_mean_ms"] = sum(v["apply_s"] for v in per.values()) / deltas * 1e3
            if any(v["full"] or v["resyncs"] for v in per.values()):
                s.setdefault("notes", []).append("some edges resynced or loaded a full catalog during the run")
    warnings = []
    for s in steps:
        if s.get("error"):
            warnings.append(f"step {s.get('step')}: {s['error']}")
        for n in s.get("notes", []):
            warnings.append(f"step {s.get('step')}: {n}")
        if s.get("noise_cores", 0) > NOISE_CORES_MAX:
            warnings.append(f"step {s.get('step')}: other work used {s['noise_cores']:.2f} cores on average during it (figures skewed)")
    extra = {}
    for name in ("fsync.json", "leader.json", "sync.json"):
        q = os.path.join(resdir, name)
        if os.path.exists(q):
            extra[name[:-5]] = json.load(open(q))
    q = os.path.join(resdir, "log_warnings.txt")
    if os.path.exists(q):
        extra["log_warnings_last"] = [l.rstrip("\n") for l in open(q)]
    R = {"kind": kind, "meta": meta, "steps": steps, "warnings": warnings, **extra}
    with open(out, "w") as f:
        json.dump(R, f, indent=1)
        f.write("\n")


def f_ms(v):
    return "n/a" if v is None else (f"{v:.1f}" if v >= 10 else f"{v:.2f}")


def f_rate(v):
    return "n/a" if v is None else f"{v:,.0f}"


def header(R, title):
    m = R["meta"]
    L = [f"# {title}\n"]
    L.append(f"- Date: {m.get('date')}")
    L.append(f"- Mode: {'QUICK (smoke run, not a result)' if m.get('quick') == '1' else 'full'}")
    L.append(f"- Machine: {m.get('nproc')} CPUs ({m.get('cpu_model')}), {m.get('mem_gib')} GiB, kernel {m.get('kernel')}; "
             f"load average before: {m.get('loadavg_before')}, after: {m.get('loadavg_after')}")
    L.append(f"- Versions: meridian {m.get('meridian_version')}; meridian-bench {m.get('bench_version')}")
    L.append(f"- Command: `{m.get('command')}`")
    return L


def step(R, name):
    for s in R["steps"]:
        if s.get("step") == name:
            return s
    return None


def res(s, key):
    if not s or not isinstance(s.get("result"), dict):
        return None
    return s["result"].get(key)


def cpu_per_batch_cell(s):
    """CPU µs per committed batch, per process role."""
    if not s or not s.get("cpu_s") or not res(s, "batches"):
        return ""
    n = res(s, "batches")
    parts = [f"{k} {v * 1e6 / n:,.0f}" for k, v in s["cpu_s"].items()]
    return ", ".join(parts)


def snap_cell(s):
    snaps = s.get("leader_snapshots")
    if snaps is None:
        return "n/a"
    if not snaps:
        return "0"
    return f"{len(snaps)}: " + ", ".join(f"{x['ms']:.0f} ms" + (f" ({x['bytes'] / 1e6:.0f} MB)" if x.get("bytes") else "") for x in snaps)


def server_cell(s):
    c = s.get("server_commit")
    if not c:
        return "n/a"
    return f"{f_ms(c['mean_ms'])} / {f_ms(c['p50_le_ms'])} / {f_ms(c['p99_le_ms'])}"


def report_control(R, out):
    L = header(R, "Control-plane benchmark: 3-node Raft cluster on loopback")
    m = R["meta"]
    lead = R.get("leader", {})
    fs = R.get("fsync", {})
    L.append(f"- Cluster: 3 `meridian control` nodes on 127.0.0.1 (ports {m.get('ports')}), data in {m.get('data_dir_fs')}; "
             f"every Raft log append is a synced RocksDB WriteBatch (fsync always on). "
             f"meridian-bench and the `meridian zone import` CLI talk to the leader (node {lead.get('leader')}, {lead.get('addr')}) so no write is forwarded.")
    if fs:
        L.append(f"- Disk: 4 KiB write + fdatasync in the data directory: p50 {fs['p50_ms']:.3f} ms, p99 {fs['p99_ms']:.3f} ms (so fsync itself is not the bottleneck unless this is large).")
    L.append(f"- All three nodes, meridian-bench (or the CLI) and the script share the machine's {m.get('nproc')} cores (no pinning).")
    L.append("")
    rows = []
    a64, a256, a1 = step(R, "commit_1rec_c64"), step(R, "commit_1rec_c256"), step(R, "commit_1rec_c1")
    best = max((x for x in (a64, a256) if res(x, "batches_per_s")), key=lambda x: res(x, "batches_per_s"), default=None)
    r1000 = step(R, "commit_rate1000")
    imp = step(R, "import")
    L.append("| Figure | measured | target | met? |")
    L.append("| --- | ---: | --- | --- |")

    def met(ok):
        return "" if ok is None else ("yes" if ok else "**no**")

    bps = res(best, "batches_per_s")
    L.append(f"| 1-record batches/s, sustained (best of concurrency 64 / 256) | {f_rate(bps)} (c={res(best, 'concurrency')}) | ≥ 4,000 | {met(None if bps is None else bps >= 4000)} |")
    p99 = res(r1000, "p99_ms")
    ach = res(r1000, "batches_per_s")
    L.append(f"| p99 commit latency at 1,000 batches/s offered (ms) | {f_ms(p99)} (achieved {f_rate(ach)} batches/s) | ≤ 20 ms | {met(None if p99 is None else (p99 <= 20 and ach is not None and ach >= 950))} |")
    zf = (imp or {}).get("zone_file") or {}
    names_txt = f"{int(m['import_names']):,}" if m.get("import_names", "").isdigit() else m.get("import_names", "n/a")
    nsets = zf.get("record_sets")
    nsets_txt = "n/a" if nsets is None else f"{nsets:,}"
    r1000b = step(R, "commit_rate1000_after_import")
    if r1000b:
        p99b, achb = res(r1000b, "p99_ms"), res(r1000b, "batches_per_s")
        crosses = "crosses a Raft snapshot" if r1000b.get("leader_snapshots") else "no Raft snapshot in the step"
        L.append(f"| … the same with the {names_txt}-name zone ({nsets_txt} record sets) in the state (steady state of a large deployment; {crosses}) | {f_ms(p99b)} (achieved {f_rate(achb)} batches/s) | ≤ 20 ms | {met(None if p99b is None else (p99b <= 20 and achb is not None and achb >= 950))} |")
    imp_s = res(imp, "seconds") if res(imp, "committed") else None
    full = m.get("quick") != "1" and m.get("import_names") == "1000000"
    L.append(f"| Import the {names_txt}-name zone file ({nsets_txt} record sets, all or nothing) (s) | "
             f"{'n/a' if imp_s is None else f'{imp_s:.1f}'}{'' if imp is None or res(imp, 'committed') else ' (**not committed**)'} | ≤ 30 s | "
             f"{met(False if imp is not None and not res(imp, 'committed') else (None if imp_s is None or not full else imp_s <= 30))} |")
    L.append("")
    L.append("## Every step\n")
    L.append("| step | batches × size | in flight | rate offered | batches/s | records/s | p50 ms | p99 ms | max ms | leader-side commit mean / p50≤ / p99≤ ms | CPU µs per batch (per process) | Raft RPC timeouts / backoffs (logs) | leader snapshots built (ms each, MB) | other work (cores) |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: |")
    for s in R["steps"]:
        if s.get("tool") == "meridian" or s.get("step") == "import":
            continue
        r = s.get("result") or {}
        if not r:
            L.append(f"| {s.get('step')} | | | | **failed** | | | | | | {s.get('error', '')} | {s.get('rpc_timeouts')} / {s.get('replication_backoffs')} | {snap_cell(s)} | |")
            continue
        rate = r.get("rate_target") or 0
        L.append(f"| {s['step']} | {r.get('batches'):,} × {r.get('batch_size'):,} | {r.get('concurrency')} | {f_rate(rate) if rate else 'max'} | "
                 f"{f_rate(r.get('batches_per_s'))} | {f_rate(r.get('batches_per_s', 0) * r.get('batch_size', 0))} | {f_ms(r.get('p50_ms'))} | {f_ms(r.get('p99_ms'))} | {f_ms(r.get('max_ms'))} | {server_cell(s)} | "
                 f"{cpu_per_batch_cell(s)} | {s.get('rpc_timeouts')} / {s.get('replication_backoffs')} | {snap_cell(s)} | {s.get('noise_cores', 'n/a')} |")
    L.append("")
    if imp:
        r = imp.get("result") or {}
        za = imp.get("zone_after")
        za = za[0] if isinstance(za, list) and za and isinstance(za[0], dict) else None
        L.append("## Zone import\n")
        L.append(f"`meridian zone import {m.get('import_zone')} --file FILE` into the zone just created with `zone create` (SOA and NS only). FILE: "
                 f"`bench/edge_helper.py zone {m.get('import_zone')} {m.get('import_names')} FILE`, {zf.get('names', 0):,} names, {zf.get('records', 0):,} records, "
                 f"{zf.get('bytes', 0) / 1e6:.{0 if zf.get('bytes', 0) >= 1e7 else 1}f} MB, {nsets_txt} record sets (its own apex SOA and NS included). The CLI reads and parses the file, groups it into "
                 f"record sets, begins a staged import, sends the sets in chunks of ≤ 5,000 (≤ 1 MiB; 3 in flight, at least "
                 f"{-(-(nsets or 0) // 5000):,} chunks), each one Raft entry written beside the live zone, then commits with one entry that switches the zone: "
                 f"all or nothing (the zone serves its old content until the commit; on an error the import is aborted). "
                 f"Time: from just before the CLI started to its exit (parsing included).\n")
        if r:
            ch = r.get("change") or {}
            if r.get("committed"):
                L.append(f"- Committed (exit status 0): change {ch.get('id', 'n/a')}, {ch.get('status', 'n/a')}, catalog version {ch.get('version', 'n/a')}.")
                rate = f" = {nsets / r['seconds']:,.0f} record sets/s" if nsets and r.get("seconds") else ""
                L.append(f"- {r.get('seconds'):.1f} s{rate}.")
            else:
                L.append(f"- **Not committed** (exit status {r.get('exit_status')}, after {r.get('seconds'):.1f} s): {imp.get('error', '')}")
        else:
            L.append(f"- **failed**: {imp.get('error', '')}")
        if za:
            cnt = za.get("record_set_count")
            same = "" if nsets is None or cnt is None else (", as many as the file has" if cnt == nsets else f", **the file has {nsets:,}**")
            L.append(f"- The zone afterwards (`meridian zone get --output json`): {cnt:,} record sets{same}, version {za.get('version')}.")
        elif imp.get("zone_after"):
            L.append(f"- `meridian zone get` afterwards: {str(imp.get('zone_after'))[:200]}")
        sc = imp.get("server_commit")
        if sc:
            L.append(f"- Leader-side commit latency of the {sc['count']:,.0f} writes during the import (begin, chunks, commit): mean {f_ms(sc['mean_ms'])} ms, "
                     f"p50 ≤ {f_ms(sc['p50_le_ms'])} ms, p99 ≤ {f_ms(sc['p99_le_ms'])} ms.")
        if imp.get("leader_snapshots"):
            L.append(f"- Raft snapshots the leader built during the import: {snap_cell(imp)}.")
        if imp.get("rpc_timeouts") or imp.get("replication_backoffs"):
            L.append(f"- Node logs during the import: {imp.get('rpc_timeouts')} Raft RPC timeouts, {imp.get('replication_backoffs')} replication backoffs.")
        if imp.get("cpu_s"):
            cpu = ", ".join(f"{'CLI (meridian zone import)' if k == 'client' else k} {v:.1f}" for k, v in imp["cpu_s"].items())
            L.append(f"- CPU seconds during the import: {cpu}.")
        if imp.get("rss_kib"):
            L.append(f"- RSS after the import: {', '.join(f'{k} {v / 1024:.0f} MiB' for k, v in imp['rss_kib'].items() if v)}.")
        if imp.get("tries", 1) > 1:
            L.append(f"- Tries: {imp.get('tries')} (other work used the CPUs during the earlier ones; each try starts from a new, empty zone).")
        L.append("")
    notes = list(R.get("notes", []))
    for s in R["steps"]:
        r = s.get("result") or {}
        snaps = s.get("leader_snapshots") or []
        if snaps and r.get("max_ms") is not None:
            longest = max(x["ms"] for x in snaps)
            built = "; ".join(f"{x['ms']:.0f} ms" + (f", {x['bytes'] / 1e6:.0f} MB" if x.get("bytes") else "") for x in snaps)
            notes.append(f"`{s['step']}`: the leader built {len(snaps)} Raft snapshot{'s' if len(snaps) > 1 else ''} during the step ({built}); "
                         f"the step's max latency was {r['max_ms']:.0f} ms.")
        if s.get("rpc_timeouts") or s.get("replication_backoffs"):
            notes.append(f"`{s['step']}`: the node logs show {s.get('rpc_timeouts')} Raft RPC timeouts (AppendEntries times out after the "
                         f"heartbeat interval, 200 ms) and {s.get('replication_backoffs')} replication backoffs (500 ms) during the step.")
    if notes:
        L.append("## Notes\n")
        for n in notes:
            L.append(f"- {n}")
        L.append("")
    warnings_section(R, L)
    L.append("How to read it: latency is per ChangeRecordSets call as meridian-bench sees it (send to reply: forward-free, "
             "leader append + fsync, replication to a follower + its fsync, apply, reply). With `--rate`, each call is sent at its "
             "scheduled time if one of the in-flight slots is free; when the cluster falls behind, calls start late and that wait is "
             "not in the latency (closed loop), so compare the achieved rate with the offered one. \"other work\" is the average number "
             "of cores used by processes outside the benchmark during the step (a build running at the same time); above "
             f"{NOISE_CORES_MAX} the step was repeated (up to the try limit). See bench/README.md.")
    L.append(f"\nTotal run time: {float(m.get('total_s', 0)):.0f} s.")
    open(out, "w").write("\n".join(L) + "\n")


def report_propagation(R, out):
    L = header(R, "Propagation benchmark: control plane → edges")
    m = R["meta"]
    if m.get("edge_cache") == "0":
        L.append("- **DIAGNOSTIC RUN: edges without `--cache`** (no on-disk catalog cache), to separate the cache rewrite's cost from the rest.")
    cache = "" if m.get("edge_cache") == "0" else " --cache DIR"
    L.append(f"- Control: {m.get('controls')} `meridian control` node(s); edges: `meridian edge --workers 1{cache} --metrics ADDR` each, all on 127.0.0.1. "
             f"Edge *i* subscribes to control node ((i-1) mod {m.get('controls')}) + 1 first.")
    L.append(f"- **Everything shares the machine's {m.get('nproc')} cores** (no pinning): with 20 edges, 20 edge processes + the control node(s) + "
             f"the probe run on 2 cores, so these figures measure a heavily oversubscribed host, not one edge per machine as deployed.")
    L.append(f"- Propagation = `meridian-bench propagation`: time from the ChangeRecordSets call's return (committed) until **every** edge answers the new "
             f"TXT over UDP (it polls each edge in turn without sleeping, 20 ms receive timeout). It excludes the commit itself. The probe ran "
             f"with `nice -n {m.get('probe_nice')}` so its busy polling yields the CPU to the edges and control node when they have work.")
    L.append(f"- Zones: `{m.get('small_zone')}` with {m.get('small_sets_fmt')} TXT sets (`fill --sets {m.get('small_sets')}`), `{m.get('big_zone')}` with "
             f"{m.get('big_sets_fmt')} (`fill --sets {m.get('big_sets')} --batch-size 10000`); the big-zone phase's edges hold both zones.")
    L.append("")
    L.append("| Figure | measured | target | met? |")
    L.append("| --- | ---: | --- | --- |")

    def met(ok):
        return "" if ok is None else ("yes" if ok else "**no**")

    props = [s for s in R["steps"] if s.get("step", "").startswith("propagation")]
    p20 = [s for s in props if s.get("edges") == 20]
    for s in p20:
        p99 = res(s, "p99_ms")
        L.append(f"| Propagation p99, 20 edges, {s.get('zone_label')} zone (ms) | {f_ms(p99)} | ≤ 50 ms | {met(None if p99 is None else p99 <= 50)} |")
    ap = [s for s in R["steps"] if s.get("step", "").startswith("apply")]
    for s in ap:
        r = s.get("result") or {}
        if r:
            L.append(f"| Edge apply time, 1-record delta, {s.get('zone_label')} zone: median / max (ms) | {r['median_s'] * 1e3:.3f} / {r['max_s'] * 1e3:.3f} | ≤ 1 ms, flat in zone size | {met(r['max_s'] <= 0.001)} |")
    L.append("")
    L.append("## Propagation per configuration\n")
    L.append("| zone | edges | changes | p50 ms | p99 ms | max ms | edge apply, mean per delta (ms) | edges' CPU during the run (s, all edges) | control CPU (s) | probe CPU (s) | wall (s) | other work (cores) |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s in props:
        r = s.get("result") or {}
        cpu = s.get("cpu_s", {})
        edges_cpu = sum(v for k, v in cpu.items() if k.startswith("edge"))
        ctl_cpu = sum(v for k, v in cpu.items() if k.startswith("control"))
        probe = s.get("probe_cpu_s")
        if not r:
            L.append(f"| {s.get('zone_label')} | {s.get('edges')} | | **failed** | | | | | | | | |")
            continue
        am = "n/a" if s.get("apply_mean_ms") is None else f"{s['apply_mean_ms']:.3f}"
        pc = "n/a" if probe is None else f"{probe:.1f}"
        L.append(f"| {s.get('zone_label')} | {s.get('edges')} | {r.get('changes')} | {f_ms(r.get('p50_ms'))} | {f_ms(r.get('p99_ms'))} | {f_ms(r.get('max_ms'))} | "
                 f"{am} | {edges_cpu:.1f} | {ctl_cpu:.1f} | {pc} | {s.get('wall_s', 'n/a')} | {s.get('noise_cores', 'n/a')} |")
    L.append("")
    L.append("## Edge apply time for a one-record delta\n")
    L.append("Each sample: wait until the edges and control node are idle (no cache write in progress), `meridian record upsert ZONE apply-probe TXT ...`, "
             "poll the first edge's /metrics until it has applied that version, read `meridian_edge_apply_seconds_last` (delta decode → new zone sharing "
             "untouched shards → catalog checksum → swap).\n")
    L.append("| zone | catalog held by the edge | samples | median ms | min ms | max ms | change → edge at new version, median (ms, rough) |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for s in ap:
        r = s.get("result") or {}
        if not r:
            L.append(f"| {s.get('zone_label')} | {s.get('catalog')} | | **failed**: {s.get('error', '')} | | |")
            continue
        seen = r.get("seen_median_s")
        seen = "n/a" if seen is None else f"{seen * 1e3:.1f}"
        L.append(f"| {s.get('zone_label')} | {s.get('catalog')} | {r['count']} | {r['median_s'] * 1e3:.3f} | {r['min_s'] * 1e3:.3f} | {r['max_s'] * 1e3:.3f} | {seen} |")
    L.append("")
    syncs = [s for s in R["steps"] if s.get("step", "").startswith("sync")]
    if syncs:
        L.append("## Edge start-up (full catalog) and memory\n")
        L.append("| phase | edges | time until every edge applied the current version (s) | edge RSS (MiB, max) | control RSS (MiB) |")
        L.append("| --- | ---: | ---: | ---: | ---: |")
        for s in syncs:
            L.append(f"| {s.get('zone_label')} | {s.get('edges')} | {s.get('sync_s', 'n/a')} | {s.get('edge_rss_max_mib', 'n/a')} | {s.get('control_rss_mib', 'n/a')} |")
        L.append("")
    fills = [s for s in R["steps"] if s.get("step", "").startswith("fill")]
    if fills:
        L.append("## Zone loads (setup)\n")
        for s in fills:
            r = s.get("result") or {}
            L.append(f"- `{s.get('zone')}`: {r.get('sets', 'n/a')} sets in {r.get('seconds', 'n/a')} s ({s.get('controls')} control node(s), no edge attached).")
        L.append("")
    warnings_section(R, L)
    L.append(f"Total run time: {float(m.get('total_s', 0)):.0f} s. See bench/README.md.")
    open(out, "w").write("\n".join(L) + "\n")


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("quiet"); p.add_argument("timeout", type=float)
    p = sub.add_parser("cpusnap"); p.add_argument("root", type=int); p.add_argument("pids", type=int, nargs="*")
    p = sub.add_parser("noise"); p.add_argument("before"); p.add_argument("after")
    p = sub.add_parser("tree"); p.add_argument("pid", type=int)
    p = sub.add_parser("port-free"); p.add_argument("port", type=int)
    p = sub.add_parser("leader"); p.add_argument("meridian"); p.add_argument("api"); p.add_argument("timeout", type=float)
    p = sub.add_parser("catalog-version"); p.add_argument("meridian"); p.add_argument("api")
    p = sub.add_parser("metrics"); p.add_argument("addr")
    p = sub.add_parser("wait-synced"); p.add_argument("version", type=int); p.add_argument("timeout", type=float)
    p.add_argument("start_ns", type=int); p.add_argument("addrs", nargs="+")
    p = sub.add_parser("apply-probe")
    p.add_argument("--meridian", required=True); p.add_argument("--api", required=True); p.add_argument("--zone", required=True)
    p.add_argument("--metrics", required=True); p.add_argument("--count", type=int, default=20); p.add_argument("--idle-pids", default="")
    p.add_argument("--label", default="probe")
    p = sub.add_parser("fsync"); p.add_argument("dir")
    p = sub.add_parser("rss"); p.add_argument("pids", type=int, nargs="+")
    p = sub.add_parser("snapshots"); p.add_argument("log"); p.add_argument("from_line", type=int)
    p = sub.add_parser("zone-sets"); p.add_argument("file")
    p = sub.add_parser("cli-result"); p.add_argument("out"); p.add_argument("start_ns", type=int)
    p.add_argument("end_ns", type=int); p.add_argument("rc", type=int)
    p = sub.add_parser("record"); p.add_argument("file"); p.add_argument("pairs", nargs="*")
    p.add_argument("--json-file"); p.add_argument("--text-file")
    p = sub.add_parser("assemble"); p.add_argument("kind"); p.add_argument("resdir"); p.add_argument("out")
    p = sub.add_parser("report"); p.add_argument("kind"); p.add_argument("results"); p.add_argument("out")
    a = ap.parse_args()
    if a.cmd == "quiet":
        print(f"{quiet(a.timeout):.3f}")
    elif a.cmd == "cpusnap":
        print(json.dumps(cpusnap(a.root, a.pids)))
    elif a.cmd == "noise":
        n = noise(json.load(open(a.before)), json.load(open(a.after)))
        print(f"{n:.3f}")
        sys.exit(0 if n > NOISE_CORES_MAX else 1)
    elif a.cmd == "tree":
        print("\n".join(map(str, descendants(a.pid))))
    elif a.cmd == "port-free":
        sys.exit(0 if port_free(a.port) else 1)
    elif a.cmd == "leader":
        print(json.dumps(leader(a.meridian, a.api, a.timeout)))
    elif a.cmd == "catalog-version":
        print(cluster_status(a.meridian, a.api)["catalog_version"])
    elif a.cmd == "metrics":
        print(json.dumps(metrics(a.addr)))
    elif a.cmd == "wait-synced":
        print(f"{wait_synced(a.version, a.timeout, a.start_ns, a.addrs):.2f}")
    elif a.cmd == "apply-probe":
        pids = [int(x) for x in a.idle_pids.split(",") if x]
        print(json.dumps(apply_probe(a.meridian, a.api, a.zone, a.metrics, a.count, pids, a.label)))
    elif a.cmd == "fsync":
        print(json.dumps(fsync_probe(a.dir)))
    elif a.cmd == "snapshots":
        print(json.dumps(snapshots(a.log, a.from_line)))
    elif a.cmd == "zone-sets":
        print(zone_sets(a.file))
    elif a.cmd == "cli-result":
        print(json.dumps(cli_result(a.out, a.start_ns, a.end_ns, a.rc)))
    elif a.cmd == "rss":
        print(json.dumps({str(p): rss_kib(p) for p in a.pids}))
    elif a.cmd == "record":
        record(a.file, a.pairs, a.json_file, a.text_file)
    elif a.cmd == "assemble":
        assemble(a.kind, a.resdir, a.out)
    elif a.cmd == "report":
        R = json.load(open(a.results))
        (report_control if a.kind == "control" else report_propagation)(R, a.out)


if __name__ == "__main__":
    main()
