#!/usr/bin/env python3
"""Multi-process end-to-end test of the control plane and its edges, on loopback.

    python3 tests/cluster/cluster_e2e.py --meridian target/release/meridian [--quick] [--only N,…] [--keep] [-v]

Starts real `meridian control` and `meridian edge` processes (data in a temporary directory,
ports chosen at run time, every process killed at exit even on failure, output in log files
in the temporary directory whose tails are printed on failure) and drives them with the real
CLI and DNS queries (dnspython). Synchronisation is by polling with deadlines.

  1. 3 control nodes + 3 edges (pop1..pop3): cluster init, zone create, an upsert goes INSYNC
     (`change wait`) and then every edge answers the new data at once.
  2. The CLI end to end: validation errors (non-zero exit, one-line reason naming the rule),
     `--output json`, Route 53 ChangeBatch files (JSON and YAML, all or nothing), zone
     export -> import into a second zone, `zone delete` (refused when not empty, --force),
     idempotency tokens, `--expect-version`.
  3. The leader SIGKILLed during a loop of 50 upserts: every acknowledged change is on every
     surviving node exactly as acknowledged (reads through that node alone, linearizable),
     edges converge to the survivors' catalog version and answer; writes started after the
     kill succeed; the killed node restarts and catches up.
  4. The whole control plane SIGTERMed: it exits; edges keep answering; an edge restarted
     serves its cache at once; an edge with a corrupt cache starts, logs it, answers REFUSED,
     and gets a full catalog when the control plane returns; a short absence is caught up with
     deltas only.
  5. An edge away for longer than the delta history (DELTA_HISTORY_MAX = 4096 in
     crates/meridian-control/src/state.rs) gets a full catalog: 4,296 single-set upserts from 8
     parallel CLI workers while it is down (about 45 s on 2 cores; --quick skips it).
  6. Membership: a 4th node added once the log holds many entries (catches up, serves reads,
     forwards writes), then removed.
  7. Staged zone import (`zone import`), run right after 2: a 12,000-set file (3 chunks, its
     own SOA and NS) replaces a zone's content in one change that every edge serves after
     INSYNC; a file invalid in its last chunk, or with a CNAME and an A at one name in two
     chunks, changes nothing; an import of 200,000 sets interrupted (SIGINT) while staging
     changes nothing, and aborted imports hold no import slot (4 interrupted, in 4 zones, then
     a 5th zone imports); `--expected-version` refuses a stale version, at the start and at
     the commit (the zone written while the CLI is stopped). About 10 s.

`--only 7` runs scenario 1 (it sets the cluster up) and then only the scenarios listed.

Exit status 0 when every check passes. Needs python3 with dnspython.
"""
import argparse
import concurrent.futures
import ctypes
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# crates/meridian-control/src/state.rs: DELTA_HISTORY_MAX.
DELTA_HISTORY_MAX = 4096
ZONE = "example.test"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

VERBOSE = False
results = []          # (name, ok)
_results_lock = threading.Lock()


def log(msg):
    print(msg, flush=True)


def check(name, ok, detail=""):
    with _results_lock:
        results.append((name, bool(ok)))
    log("%s  %s" % ("PASS" if ok else "FAIL", name))
    if detail and (not ok or VERBOSE):
        for line in str(detail).rstrip().splitlines()[:40]:
            log("        " + line)
    return bool(ok)


class Abort(Exception):
    """A precondition of the rest of the run failed."""


def require(name, ok, detail=""):
    if not check(name, ok, detail):
        raise Abort(name)


def wait_for(fn, timeout, interval=0.1):
    """Polls fn() until it returns a truthy value or the deadline passes: (value, elapsed)."""
    start = time.monotonic()
    deadline = start + timeout
    value = None
    while True:
        try:
            value = fn()
        except Exception as e:  # noqa: BLE001 - a probe failing is "not yet"
            value = None
            wait_for.last_error = e
        if value:
            return value, time.monotonic() - start
        if time.monotonic() >= deadline:
            return value, time.monotonic() - start
        time.sleep(interval)


wait_for.last_error = None


# --- ports -----------------------------------------------------------------------------------

_ports_taken = set()


def free_port():
    """A port free for TCP and UDP on 127.0.0.1, below the ephemeral range so that outgoing
    connections do not take it while a process using it is down."""
    for _ in range(1000):
        port = random.randint(20000, 32000)
        if port in _ports_taken:
            continue
        ok = True
        for typ in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET, typ)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            _ports_taken.add(port)
            return port
    raise RuntimeError("no free port")


def tcp_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


# --- processes -------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: the child gets SIGKILL if this test process dies (even by SIGKILL).
    _libc.prctl(1, signal.SIGKILL)


# The CLI prints an anyhow backtrace under RUST_BACKTRACE=1; test what users see by default.
CHILD_ENV = {k: v for k, v in os.environ.items()
             if k not in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE", "RUST_LOG", "MERIDIAN_API")}


class Proc:
    """One long-running meridian process; output goes to a log file (appended on restart)."""

    def __init__(self, name, args, logpath):
        self.name, self.args, self.logpath = name, args, logpath
        self.p = None
        self.log_offset = 0

    def start(self):
        assert not self.alive(), self.name
        with open(self.logpath, "ab") as f:
            f.write(("=== start %s: %s\n" % (time.strftime("%H:%M:%S"), " ".join(self.args))).encode())
            self.log_offset = f.tell()
        logf = open(self.logpath, "ab")
        self.p = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=logf,
                                  stderr=subprocess.STDOUT, env=CHILD_ENV,
                                  preexec_fn=_die_with_parent)
        logf.close()
        ALL_PROCS.append(self)
        return self

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def send(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Signals the process and waits; returns its exit code (None if it had to be killed)."""
        if not self.alive():
            return self.p.returncode if self.p else None
        self.p.send_signal(sig)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return None

    def log_since_start(self):
        try:
            with open(self.logpath, "rb") as f:
                f.seek(self.log_offset)
                return ANSI.sub("", f.read().decode("utf-8", "replace"))
        except OSError:
            return ""

    def tail(self, n=25):
        try:
            with open(self.logpath, "rb") as f:
                lines = ANSI.sub("", f.read().decode("utf-8", "replace")).splitlines()
            return lines[-n:]
        except OSError:
            return []


ALL_PROCS = []


def kill_all():
    for p in ALL_PROCS:
        if p.alive():
            try:
                p.p.kill()
                p.p.wait(5)
            except Exception:  # noqa: BLE001
                pass


class CliResult:
    def __init__(self, cmd, rc, out, err):
        self.cmd, self.rc, self.out, self.err = cmd, rc, out, err
        self.json = None
        if out.strip():
            try:
                self.json = json.loads(out)
            except ValueError:
                pass

    @property
    def ok(self):
        return self.rc == 0

    def __str__(self):
        return "$ %s\nrc=%s\nstdout: %s\nstderr: %s" % (
            " ".join(self.cmd), self.rc, self.out.strip()[:2000], self.err.strip()[:2000])


# --- DNS -------------------------------------------------------------------------------------

def dns_query(port, name, rtype="A", timeout=1.0):
    q = dns.message.make_query(name, rtype)
    q.flags &= ~dns.flags.RD
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)


def answer(port, name, rtype="A", timeout=1.0):
    """(rcode text, sorted rdata texts, ttl or None, aa) or (error text, [], None, False)."""
    try:
        r = dns_query(port, name, rtype, timeout)
    except (dns.exception.DNSException, OSError) as e:
        return ("error: %s" % e, [], None, False)
    want = dns.rdatatype.from_text(rtype)
    rrs = [rr for rr in r.answer if rr.rdtype == want]
    values = sorted(rd.to_text() for rr in rrs for rd in rr)
    ttl = rrs[0].ttl if rrs else None
    return (dns.rcode.to_text(r.rcode()), values, ttl, bool(r.flags & dns.flags.AA))


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=2) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, _, val = line.rpartition(" ")
        try:
            out[key] = float(val)
        except ValueError:
            pass
    return out


def cache_version(cache_dir):
    """Version in an edge's catalog.bin (magic MRDNCAT2 8, schema 4, version 8 BE), or None."""
    try:
        with open(os.path.join(cache_dir, "catalog.bin"), "rb") as f:
            head = f.read(20)
        if len(head) < 20 or head[:8] != b"MRDNCAT2":
            return None
        return int.from_bytes(head[12:20], "big")
    except OSError:
        return None


# --- the cluster -----------------------------------------------------------------------------

class Cluster:
    def __init__(self, meridian, tmp):
        self.meridian = meridian
        self.tmp = tmp
        self.controls = {}    # id -> dict(port, proc, data)
        self.edges = {}       # name -> dict(port, mport, proc, cache, pop)

    # control nodes
    def add_control(self, cid):
        port = free_port()
        data = os.path.join(self.tmp, "control%d" % cid)
        args = [self.meridian, "control", "--id", str(cid), "--data", data,
                "--listen", "127.0.0.1:%d" % port]
        proc = Proc("control%d" % cid, args, os.path.join(self.tmp, "control%d.log" % cid))
        self.controls[cid] = {"port": port, "proc": proc, "data": data}
        return self.start_control(cid)

    def start_control(self, cid):
        c = self.controls[cid]
        c["proc"].start()
        _, took = wait_for(lambda: tcp_open(c["port"]) or not c["proc"].alive(), 20)
        require("control node %d listens on 127.0.0.1:%d (%.1f s)" % (cid, c["port"], took),
                c["proc"].alive() and tcp_open(c["port"]), "\n".join(c["proc"].tail()))
        return c

    def addr(self, cid):
        return "127.0.0.1:%d" % self.controls[cid]["port"]

    def api(self, ids=None):
        ids = ids if ids is not None else [i for i in sorted(self.controls)
                                           if self.controls[i]["proc"].alive()]
        return [self.addr(i) for i in ids]

    # edges
    def add_edge(self, name, pop, control_ids):
        port = free_port()
        mport = free_port()
        cache = os.path.join(self.tmp, "cache-" + name)
        args = [self.meridian, "edge", "--control", ",".join(self.addr(i) for i in control_ids),
                "--id", name, "--pop", pop, "--cache", cache, "--identity", name,
                "--listen", "127.0.0.1:%d" % port, "--metrics", "127.0.0.1:%d" % mport,
                "--workers", "1"]
        proc = Proc(name, args, os.path.join(self.tmp, name + ".log"))
        self.edges[name] = {"port": port, "mport": mport, "proc": proc, "cache": cache, "pop": pop}
        return self.start_edge(name)

    def start_edge(self, name, require_up=True):
        e = self.edges[name]
        e["proc"].start()
        e["started"] = time.monotonic()

        def up():
            if not e["proc"].alive():
                return "exited"
            rc = answer(e["port"], "probe.invalid", "A", timeout=0.3)[0]
            # The metrics listener is bound after the DNS workers: "up" is both, so a scrape
            # right after the first answer cannot be refused.
            return None if rc.startswith("error") or not tcp_open(e["mport"]) else rc
        state, took = wait_for(up, 15, 0.05)
        ok = bool(state) and state != "exited"
        if require_up:
            require("edge %s (%s) answers DNS on 127.0.0.1:%d (%.2f s)" % (name, e["pop"], e["port"], took),
                    ok, "\n".join(e["proc"].tail()))
        return e

    # CLI
    def cli(self, *args, api=None, out_json=True, timeout=40, env=None):
        cmd = [self.meridian, "--api", ",".join(api if api is not None else self.api())]
        if out_json:
            cmd += ["--output", "json"]
        cmd += [str(a) for a in args]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                               env=dict(CHILD_ENV, **(env or {})), stdin=subprocess.DEVNULL)
            return CliResult(cmd, p.returncode, p.stdout, p.stderr)
        except subprocess.TimeoutExpired as e:
            return CliResult(cmd, -1, (e.stdout or b"").decode("utf-8", "replace") if isinstance(e.stdout, bytes) else (e.stdout or ""),
                             "timeout after %s s" % timeout)

    def status(self, cid=None):
        r = self.cli("cluster", "status", api=[self.addr(cid)] if cid else None, timeout=15)
        return r.json if r.ok and isinstance(r.json, dict) else None

    def leader(self, ids=None):
        for cid in (ids or sorted(self.controls)):
            if not self.controls[cid]["proc"].alive():
                continue
            s = self.status(cid)
            if s and s.get("leader") and self.controls.get(s["leader"], {}).get("proc") \
                    and self.controls[s["leader"]]["proc"].alive():
                return s["leader"]
        return None

    def record_sets(self, zone, cid=None):
        """{(name, type): (ttl, sorted values)} read through one node (or all), linearizable."""
        r = self.cli("record", "list", zone, api=[self.addr(cid)] if cid else None)
        if not r.ok or not isinstance(r.json, list):
            return None, r
        return {(s["name"], s["type"]): (s["ttl"], sorted(s["values"])) for s in r.json}, r

    def edges_list(self):
        r = self.cli("edges", "list", timeout=15)
        return r.json if r.ok and isinstance(r.json, dict) else None

    def upsert(self, name, rtype, values, ttl=300, zone=ZONE, api=None):
        return self.cli("record", "upsert", zone, name, rtype, *values, "--ttl", ttl, api=api)

    def wait_change(self, change_id, timeout=30):
        return self.cli("change", "wait", change_id, "--timeout", timeout, timeout=timeout + 15)

    def live_edges(self):
        return [n for n, e in self.edges.items() if e["proc"].alive()]


def fqdn(name, zone=ZONE):
    return name if name.endswith(".") else "%s.%s." % (name, zone)


def all_edges_answer(cl, name, rtype, values, ttl=None, edges=None, timeout=0.0):
    """Every edge answers `name rtype` with exactly `values` (and `ttl`), AA set. With a
    timeout, polls until it holds; returns (ok, detail)."""
    edges = edges or cl.live_edges()
    want = sorted(values)

    def probe():
        bad = []
        for n in edges:
            rc, got, t, aa = answer(cl.edges[n]["port"], fqdn(name), rtype)
            if rc != "NOERROR" or got != want or (ttl is not None and t != ttl) or not aa:
                bad.append("%s: %s %s ttl=%s aa=%s (want NOERROR %s ttl=%s)" % (n, rc, got, t, aa, want, ttl))
        return bad
    bad = probe()
    if bad and timeout:
        end = time.monotonic() + timeout
        while bad and time.monotonic() < end:
            time.sleep(0.1)
            bad = probe()
    return not bad, "\n".join(bad)


# --- scenarios -------------------------------------------------------------------------------

def scenario_1(cl):
    log("\n== 1. three control nodes, three edges, a change goes INSYNC and every edge serves it")
    for cid in (1, 2, 3):
        cl.add_control(cid)
    r = cl.cli("cluster", "init", *sum((["--node", "%d=%s" % (i, cl.addr(i))] for i in (1, 2, 3)), []),
               api=[cl.addr(1)])
    require("cluster init --node 1=… --node 2=… --node 3=…", r.ok, r)

    def formed():
        s = cl.status(1)
        if not s or not s.get("leader"):
            return None
        nodes = s.get("nodes", [])
        if len(nodes) == 3 and all(n.get("reachable") and n.get("voter") for n in nodes):
            return s
        return None
    s, took = wait_for(formed, 20, 0.2)
    require("cluster status: a leader and 3 reachable voters (%.1f s)" % took, s, json.dumps(s))

    # Each edge starts on a different control node, so catalog streams and edge reports are
    # spread over the cluster.
    cl.add_edge("e1", "pop1", [1, 2, 3])
    cl.add_edge("e2", "pop2", [2, 3, 1])
    cl.add_edge("e3", "pop3", [3, 1, 2])

    def edges_registered():
        el = cl.edges_list()
        if not el:
            return None
        live = {e["id"]: e for e in el.get("edges", []) if not e.get("stale")}
        return el if set(live) >= {"e1", "e2", "e3"} else None
    el, took = wait_for(edges_registered, 15, 0.2)
    require("edges list: e1, e2, e3 live (%.1f s)" % took, el, json.dumps(el))
    pops = {e["id"]: e.get("pop") for e in el["edges"]}
    check("edges list: pops are pop1, pop2, pop3",
          pops.get("e1") == "pop1" and pops.get("e2") == "pop2" and pops.get("e3") == "pop3", pops)

    r = cl.cli("zone", "create", ZONE)
    require("zone create %s" % ZONE, r.ok and isinstance(r.json, list) and r.json
            and r.json[0].get("name") == ZONE + ".", r)

    r = cl.upsert("www", "A", ["192.0.2.10", "192.0.2.11"], ttl=120)
    require("record upsert www A (2 values) --output json: id, PENDING, version",
            r.ok and isinstance(r.json, dict) and r.json.get("id") and r.json.get("status") == "PENDING"
            and isinstance(r.json.get("version"), int), r)
    change = r.json
    w = cl.wait_change(change["id"], timeout=30)
    require("change wait %s → INSYNC" % change["id"],
            w.ok and isinstance(w.json, dict) and w.json.get("status") == "INSYNC"
            and w.json.get("version") == change["version"], w)
    # INSYNC promises every live edge serves it: ask each edge once, no retry.
    ok, detail = all_edges_answer(cl, "www", "A", ["192.0.2.10", "192.0.2.11"], ttl=120)
    check("right after INSYNC every edge answers www A with the new data (AA, TTL 120)", ok, detail)
    rc_, _, _, aa = answer(cl.edges["e1"]["port"], "nothere.%s." % ZONE, "A")
    check("edge answers NXDOMAIN (AA) for a missing name in the zone", rc_ == "NXDOMAIN" and aa, rc_)
    rc_, vals, _, _ = answer(cl.edges["e2"]["port"], ZONE + ".", "SOA")
    check("edge answers the zone's SOA", rc_ == "NOERROR" and len(vals) == 1, (rc_, vals))
    g = cl.cli("change", "get", change["id"])
    check("change get → INSYNC, same version", g.ok and g.json.get("status") == "INSYNC"
          and g.json.get("version") == change["version"], g)
    el = cl.edges_list()
    check("edges list: every edge at ≥ the change's version, lag 0 eventually",
          el and all(e["version"] >= change["version"] for e in el["edges"]), json.dumps(el))


def expect_error(cl, title, args, keywords, api=None):
    r = cl.cli(*args, api=api, out_json=True)
    err_lines = [ln for ln in r.err.strip().splitlines() if ln.strip()]
    one_line = len(err_lines) == 1
    has_kw = any(k.lower() in r.err.lower() for k in keywords)
    ok = r.rc not in (0, -1) and one_line and has_kw and not r.out.strip()
    check("refused: %s → exit %s, one line naming %s" % (title, r.rc, "/".join(keywords)), ok,
          "%s\n(one line: %s, keyword: %s)" % (r, one_line, has_kw))
    return r


def write(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def zone_version(cl, zone=ZONE):
    r = cl.cli("zone", "get", zone)
    return r.json[0]["version"] if r.ok and isinstance(r.json, list) and r.json else None


def scenario_2(cl):
    log("\n== 2. the CLI end to end")
    tmp = cl.tmp
    v0 = zone_version(cl)
    sets0, _ = cl.record_sets(ZONE)
    expect_error(cl, "CREATE of an existing set", ["record", "create", ZONE, "www", "A", "192.0.2.9"],
                 ["AlreadyExists"])
    expect_error(cl, "CNAME beside A", ["record", "upsert", ZONE, "www", "CNAME", "target.example.net."],
                 ["CnameAndOtherData"])
    expect_error(cl, "name outside the zone", ["record", "upsert", ZONE, "www.example.org.", "A", "192.0.2.1"],
                 ["NameOutsideZone"])
    expect_error(cl, "bad RDATA 999.1.1.1", ["record", "upsert", ZONE, "bad", "A", "999.1.1.1"],
                 ["RdataInvalid"])
    expect_error(cl, "IPv4 text in an AAAA", ["record", "upsert", ZONE, "bad", "AAAA", "192.0.2.1"],
                 ["RdataInvalid"])
    expect_error(cl, "TXT string > 255 octets", ["record", "upsert", ZONE, "bad", "TXT", "a" * 300],
                 ["RdataInvalid", "255"])
    expect_error(cl, "unknown type", ["record", "upsert", ZONE, "bad", "FOO", "x"], ["unknown record type", "TypeUnknown"])
    expect_error(cl, "no value", ["record", "upsert", ZONE, "bad", "A"], ["value"])
    expect_error(cl, "TTL out of range", ["record", "upsert", ZONE, "bad", "A", "192.0.2.1", "--ttl", "4294967295"],
                 ["TtlOutOfRange"])
    expect_error(cl, "CNAME at the apex", ["record", "upsert", ZONE, "@", "CNAME", "x.example.net."],
                 ["CnameAtApex"])
    expect_error(cl, "two values in a CNAME", ["record", "upsert", ZONE, "c2", "CNAME", "a.example.net.", "b.example.net."],
                 ["RecordsMoreThanOne"])
    expect_error(cl, "deleting the apex SOA", ["record", "delete", ZONE, "@", "SOA"], ["ApexDeleteRefused"])
    expect_error(cl, "DELETE with other values", ["record", "delete", ZONE, "www", "A", "192.0.2.77", "--ttl", "120"],
                 ["DeleteMismatch"])
    expect_error(cl, "DELETE of a missing set", ["record", "delete", ZONE, "missing", "A", "192.0.2.1"],
                 ["NotFound", "does not exist"])
    expect_error(cl, "a zone that does not exist", ["record", "upsert", "nosuchzone.test", "www", "A", "192.0.2.1"],
                 ["NoSuchHostedZone"])
    expect_error(cl, "zone create of an existing zone", ["zone", "create", ZONE], ["ZoneAlreadyExists"])
    expect_error(cl, "change get of an unknown id", ["change", "get", "Cdoesnotexist"], ["NoSuchChange"])
    r = cl.cli("record", "create", ZONE, "www", "A", "192.0.2.9", env={"RUST_BACKTRACE": "1"})
    check("with RUST_BACKTRACE=1 in the environment the error is still one line (no backtrace)",
          r.rc not in (0, -1) and len(r.err.strip().splitlines()) == 1 and "AlreadyExists" in r.err, r)
    bad_json = write(tmp, "bad.json", '{"Changes": [ {"Action": "UPSERT", ')
    expect_error(cl, "record apply of malformed JSON", ["record", "apply", ZONE, "--file", bad_json], ["JSON", "Syntax", "bad.json"])
    weight = write(tmp, "weight.json", json.dumps({"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
        "Name": "w." + ZONE, "Type": "A", "TTL": 60, "SetIdentifier": "a", "Weight": 10,
        "HealthCheckId": "no-such-check", "ResourceRecords": [{"Value": "192.0.2.1"}]}}]}))
    expect_error(cl, "record apply of a weighted set naming an unknown health check", ["record", "apply", ZONE, "--file", weight],
                 ["HealthCheckUnknown", "no-such-check"])
    # All or nothing: a valid change next to an invalid one applies neither.
    mixed = write(tmp, "mixed.json", json.dumps({"Comment": "one good, one bad", "Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {"Name": "good." + ZONE, "Type": "A", "TTL": 60,
                                                   "ResourceRecords": [{"Value": "192.0.2.50"}]}},
        {"Action": "CREATE", "ResourceRecordSet": {"Name": "www." + ZONE, "Type": "A", "TTL": 60,
                                                   "ResourceRecords": [{"Value": "192.0.2.51"}]}}]}))
    expect_error(cl, "a batch with a valid and an invalid change", ["record", "apply", ZONE, "--file", mixed],
                 ["AlreadyExists"])
    twice = write(tmp, "twice.yaml", "Changes:\n" + "".join(
        "  - Action: UPSERT\n    ResourceRecordSet:\n      Name: dup.%s\n      Type: A\n      TTL: 60\n"
        "      ResourceRecords:\n        - Value: 192.0.2.%d\n" % (ZONE, i) for i in (1, 2)))
    expect_error(cl, "the same set changed twice in one batch", ["record", "apply", ZONE, "--file", twice],
                 ["ChangedTwice"])
    sets1, _ = cl.record_sets(ZONE)
    check("after all the refusals the zone is unchanged (version %s, same record sets)" % v0,
          zone_version(cl) == v0 and sets1 == sets0 and sets0 is not None,
          "version %s → %s; sets equal: %s" % (v0, zone_version(cl), sets1 == sets0))

    # --- record apply: Route 53 JSON and YAML
    batch_json = write(tmp, "batch.json", json.dumps({
        "Comment": "JSON batch: create api, mail MX, txt",
        "Changes": [
            {"Action": "CREATE", "ResourceRecordSet": {"Name": "api." + ZONE, "Type": "A", "TTL": 60,
                                                       "ResourceRecords": [{"Value": "192.0.2.20"}, {"Value": "192.0.2.21"}]}},
            {"Action": "UPSERT", "ResourceRecordSet": {"Name": ZONE + ".", "Type": "MX", "TTL": 3600,
                                                       "ResourceRecords": [{"Value": "10 mail.%s." % ZONE}]}},
            {"Action": "CREATE", "ResourceRecordSet": {"Name": "txt." + ZONE, "Type": "TXT", "TTL": 300,
                                                       "ResourceRecords": [{"Value": "\"v=spf1 -all\""}]}},
            {"Action": "CREATE", "ResourceRecordSet": {"Name": "mail." + ZONE, "Type": "AAAA", "TTL": 300,
                                                       "ResourceRecords": [{"Value": "2001:db8::25"}]}},
        ]}, indent=2))
    r = cl.cli("record", "apply", ZONE, "--file", batch_json)
    ok = check("record apply (Route 53 JSON, 4 changes) --output json has an id", r.ok and r.json and r.json.get("id"), r)
    if ok:
        w = cl.wait_change(r.json["id"])
        check("  … INSYNC", w.ok and w.json.get("status") == "INSYNC", w)
        ok, d = all_edges_answer(cl, "api", "A", ["192.0.2.20", "192.0.2.21"], ttl=60)
        check("  … every edge answers api A", ok, d)
        ok, d = all_edges_answer(cl, ZONE + ".", "MX", ["10 mail.%s." % ZONE], ttl=3600)
        check("  … every edge answers the apex MX", ok, d)
        ok, d = all_edges_answer(cl, "txt", "TXT", ['"v=spf1 -all"'])
        check("  … every edge answers txt TXT", ok, d)
    batch_yaml = write(tmp, "batch.yaml", """\
# Route 53 ChangeBatch as YAML
Comment: YAML batch
Changes:
  - Action: DELETE
    ResourceRecordSet:
      Name: txt.{zone}.
      Type: TXT
      TTL: 300
      ResourceRecords:
        - Value: '"v=spf1 -all"'
  - Action: UPSERT
    ResourceRecordSet:
      Name: api.{zone}
      Type: A
      TTL: 90
      ResourceRecords:
        - Value: 192.0.2.22
  - Action: CREATE
    ResourceRecordSet:
      Name: alias.{zone}.
      Type: CNAME
      TTL: 300
      ResourceRecords:
        - Value: api.{zone}.
""".format(zone=ZONE))
    r = cl.cli("record", "apply", ZONE, "--file", batch_yaml)
    ok = check("record apply (Route 53 YAML: DELETE, UPSERT, CREATE CNAME) has an id", r.ok and r.json and r.json.get("id"), r)
    if ok:
        w = cl.wait_change(r.json["id"])
        check("  … INSYNC", w.ok and w.json.get("status") == "INSYNC", w)
        ok, d = all_edges_answer(cl, "api", "A", ["192.0.2.22"], ttl=90)
        check("  … every edge answers the upserted api A", ok, d)
        bad = [n for n in cl.live_edges() if answer(cl.edges[n]["port"], fqdn("txt"), "TXT")[0] != "NXDOMAIN"]
        check("  … the deleted txt TXT is NXDOMAIN on every edge", not bad, bad)
        r2 = dns_query(cl.edges["e3"]["port"], fqdn("alias"), "A")
        chain = [(rr.name.to_text(), dns.rdatatype.to_text(rr.rdtype), sorted(x.to_text() for x in rr)) for rr in r2.answer]
        check("  … alias A follows the CNAME to api's A", (fqdn("alias"), "CNAME", [fqdn("api")]) in chain
              and (fqdn("api"), "A", ["192.0.2.22"]) in chain, chain)
    sets, _ = cl.record_sets(ZONE)
    check("record list shows the batches' result",
          sets is not None and sets.get((fqdn("api"), "A")) == (90, ["192.0.2.22"])
          and (fqdn("txt"), "TXT") not in sets and sets.get((fqdn("alias"), "CNAME")) == (300, [fqdn("api")])
          and sets.get((fqdn("mail"), "AAAA")) == (300, ["2001:db8::25"]), sets)

    # --- the table output is not JSON and the json output of record upsert has the id
    r = cl.cli("record", "list", ZONE, out_json=False)
    check("record list (table) prints a header and the sets", r.ok and "NAME" in r.out and fqdn("api") in r.out, r)

    # --- export, then import into a second zone
    r = cl.cli("zone", "export", ZONE, out_json=False)
    ok = check("zone export prints a zone file with $ORIGIN", r.ok and r.out.startswith("$ORIGIN %s." % ZONE), r)
    copy_zone = "copy.test"
    exported = r.out
    copy_text = exported.replace(ZONE + ".", copy_zone + ".")
    copy_file = write(tmp, "copy.zone", copy_text)
    r = cl.cli("zone", "create", copy_zone)
    check("zone create %s" % copy_zone, r.ok, r)
    r = cl.cli("zone", "import", copy_zone, "--file", copy_file)
    ok = check("zone import %s (the export, origin renamed) has an id" % copy_zone, r.ok and r.json and r.json.get("id"), r)
    src, _ = cl.record_sets(ZONE)
    dst, _ = cl.record_sets(copy_zone)
    renamed = None
    if src is not None:
        renamed = {(n.replace(ZONE + ".", copy_zone + "."), t): (ttl, sorted(v.replace(ZONE + ".", copy_zone + ".") for v in vals))
                   for (n, t), (ttl, vals) in src.items()}
    check("export → import round trip: %s holds the same record sets as %s" % (copy_zone, ZONE),
          renamed is not None and dst == renamed,
          "only in source: %s\nonly in copy: %s" % (
              sorted(set(renamed or {}) - set(dst or {})) if renamed else "?",
              sorted(set(dst or {}) - set(renamed or {})) if dst else "?"))
    # The copy serves.
    if ok:
        w = cl.wait_change(r.json["id"])
        check("  … INSYNC", w.ok and w.json.get("status") == "INSYNC", w)
        ok2, d = all_edges_answer(cl, "api.%s." % copy_zone, "A", ["192.0.2.22"], ttl=90)
        check("  … every edge answers api.%s A" % copy_zone, ok2, d)
    # Re-importing the unchanged export into the source zone changes no record set.
    r = cl.cli("zone", "import", ZONE, "--file", write(tmp, "same.zone", exported))
    after, _ = cl.record_sets(ZONE)
    check("zone import of its own export leaves %s's record sets as they were" % ZONE,
          r.ok and after == src, "%s\n%s" % (r, "equal" if after == src else "differ"))

    # --- zone delete
    r = expect_error(cl, "zone delete of a non-empty zone", ["zone", "delete", copy_zone], ["HostedZoneNotEmpty"])
    r = cl.cli("zone", "get", copy_zone)
    check("  … the zone is still there", r.ok, r)
    r = cl.cli("zone", "delete", copy_zone, "--force")
    ok = check("zone delete --force works (--output json has an id)", r.ok and r.json and r.json.get("id"), r)
    r2 = cl.cli("zone", "get", copy_zone)
    check("  … zone get now fails with NoSuchHostedZone", not r2.ok and "NoSuchHostedZone" in r2.err, r2)
    r3 = cl.cli("zone", "list")
    check("  … zone list no longer shows it", r3.ok and all(z["name"] != copy_zone + "." for z in r3.json), r3)
    if ok:
        w = cl.wait_change(r.json["id"])
        check("  … INSYNC", w.ok and w.json.get("status") == "INSYNC", w)
        bad = [n for n in cl.live_edges() if answer(cl.edges[n]["port"], "api.%s." % copy_zone, "A")[0] != "REFUSED"]
        check("  … every edge answers REFUSED for the deleted zone", not bad, bad)
    r = cl.cli("zone", "create", "empty.test")
    r2 = cl.cli("zone", "delete", "empty.test")
    check("zone delete of a zone with only SOA/NS works without --force", r.ok and r2.ok, "%s\n%s" % (r, r2))

    # --- idempotency token
    tok = write(tmp, "token.json", json.dumps({"Comment": "token", "Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": {"Name": "tok." + ZONE, "Type": "A", "TTL": 60,
                                                   "ResourceRecords": [{"Value": "192.0.2.60"}]}}]}))
    token = "tok-%d" % random.randint(0, 1 << 30)
    r1 = cl.cli("record", "apply", ZONE, "--file", tok, "--token", token)
    v_after_first = zone_version(cl)
    r2 = cl.cli("record", "apply", ZONE, "--file", tok, "--token", token, api=list(reversed(cl.api())))
    check("record apply --token T twice (via different nodes) → the same change id and version",
          r1.ok and r2.ok and r1.json["id"] == r2.json["id"] and r1.json["version"] == r2.json["version"],
          "%s\n%s" % (r1, r2))
    check("  … the retry did not change the zone (version %s)" % v_after_first,
          zone_version(cl) == v_after_first, zone_version(cl))
    r3 = cl.cli("record", "apply", ZONE, "--file", tok, "--token", token + "-other")
    check("  … another token is another change", r3.ok and r3.json["id"] != r1.json.get("id") if r1.ok else False, r3)

    # --- compare-and-set
    v = zone_version(cl)
    cas = write(tmp, "cas.json", json.dumps({"Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": {"Name": "cas." + ZONE, "Type": "A", "TTL": 60,
                                                   "ResourceRecords": [{"Value": "192.0.2.70"}]}}]}))
    expect_error(cl, "--expect-version %d (zone is at %s)" % (v - 1, v),
                 ["record", "apply", ZONE, "--file", cas, "--expect-version", v - 1], ["ZoneVersionMismatch"])
    r = cl.cli("record", "apply", ZONE, "--file", cas, "--expect-version", v)
    check("--expect-version %s (current) applies" % v, r.ok and r.json.get("id"), r)
    expect_error(cl, "--expect-version %s again (the zone moved on)" % v,
                 ["record", "apply", ZONE, "--file", cas, "--expect-version", v], ["ZoneVersionMismatch"])
    sets, _ = cl.record_sets(ZONE)
    check("  … cas A was written once", sets and sets.get((fqdn("cas"), "A")) == (60, ["192.0.2.70"]), sets)
    r = cl.cli("record", "delete", ZONE, "cas", "A")
    check("record delete with no values deletes the current set", r.ok and r.json.get("id"), r)


# --- staged zone import ----------------------------------------------------------------------

IMPORT_ZONE = "bulk.test"
# crates/meridian/src/client.rs: IMPORT_CHUNK_SETS, the record sets in one ImportRecordSets chunk
# (files here have short records, so the 1 MiB byte cap never cuts a chunk shorter).
IMPORT_CHUNK_SETS = 5000
RTYPE_CODES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}


def set_order(key):
    """The order the CLI sends sets in (it groups them in a BTreeMap by lowercased wire name,
    then type code), so a test knows which chunk holds which set."""
    name, rtype = key
    labels = [lb for lb in name.lower().rstrip(".").split(".") if lb]
    return (b"".join(bytes([len(lb)]) + lb.encode() for lb in labels) + b"\0", RTYPE_CODES[rtype])


def gen_zone(zone, count, serial, salt=0):
    """{(fqdn, type): (ttl, sorted values)} of `count` sets: the apex SOA (serial `serial`) and
    NS, the name servers' A, then A, AAAA, TXT and MX sets at n000000, n000001, …; `salt`
    changes every value, so a partly applied import would show."""
    o = zone + "."
    sets = {
        (o, "SOA"): (3600, ["ns1.%s hostmaster.%s %d 7200 900 1209600 300" % (o, o, serial)]),
        (o, "NS"): (3600, sorted(["ns1." + o, "ns2." + o])),
        ("ns1." + o, "A"): (3600, ["192.0.2.53"]),
        ("ns2." + o, "A"): (3600, ["192.0.2.54"]),
    }
    i = 0
    while len(sets) < count:
        name, v = "n%06d.%s" % (i, o), i + salt
        if i % 10 == 3:
            sets[(name, "AAAA")] = (300, [str(ipaddress.IPv6Address("2001:db8:%x::%x" % (v // 0xfffe + 1, v % 0xfffe + 1)))])
        elif i % 10 == 7:
            sets[(name, "TXT")] = (600, ['"v=%d"' % v])
        elif i % 10 == 9:
            sets[(name, "MX")] = (3600, sorted(["10 mx%d.%s" % (v % 7, o), "20 backup.example.net."]))
        else:
            sets[(name, "A")] = (60 + i % 5, ["10.%d.%d.%d" % (v >> 16 & 255, v >> 8 & 255, v & 255)])
        i += 1
    return sets


def zone_text(zone, sets):
    lines = ["$ORIGIN %s." % zone, "; generated by cluster_e2e.py: %d record sets" % len(sets)]
    for (name, rtype), (ttl, values) in sets.items():
        for v in values:
            lines.append("%s\t%d\tIN\t%s\t%s" % (name, ttl, rtype, v))
    return "\n".join(lines) + "\n"


class PtyCli:
    """A CLI run whose stderr is a terminal, where `zone import` prints its progress
    ("staged N/M record sets"): the test can act while the import is staging."""
    PROGRESS = re.compile(r"staged (\d+)/(\d+) record sets \(\d+%\), [0-9.]+ s")

    def __init__(self, cmd):
        self.cmd = cmd
        master, slave = os.openpty()
        self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                                  env=CHILD_ENV, preexec_fn=_die_with_parent)
        os.close(slave)
        self.started = time.monotonic()
        self._master, self._chunks = master, []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:     # EIO: the child closed the terminal
                break
            if not data:
                break
            self._chunks.append(data)
        os.close(self._master)

    def raw(self):
        return b"".join(self._chunks).decode("utf-8", "replace")

    def staged(self):
        m = self.PROGRESS.findall(self.raw())
        return int(m[-1][0]) if m else 0

    def finish(self, timeout):
        """Waits for the exit; a CliResult whose stderr is what is left without the progress."""
        try:
            out, _ = self.p.communicate(timeout=timeout)
            rc = self.p.returncode
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, _ = self.p.communicate()
            rc = -1
        self._reader.join(5)
        err = self.PROGRESS.sub("", self.raw().replace("\r", "\n"))
        return CliResult(self.cmd, rc, out.decode("utf-8", "replace"), err)


def scenario_7(cl):
    log("\n== 7. staged zone import: 12,000 sets in 3 chunks, all or nothing, interrupted, compare-and-set")
    tmp, zone, o = cl.tmp, IMPORT_ZONE, IMPORT_ZONE + "."

    def imp(path, *extra, timeout=120):
        t0 = time.monotonic()
        r = cl.cli("zone", "import", zone, "--file", path, *extra, timeout=timeout)
        return r, time.monotonic() - t0

    def zone_state(z=zone):
        """(version, record_set_count) from `zone get`, or None."""
        r = cl.cli("zone", "get", z)
        if r.ok and isinstance(r.json, list) and r.json:
            return r.json[0]["version"], r.json[0]["record_set_count"]
        return None

    def refused(title, r, took, rules, aborted=True, origin=o):
        """Non-zero exit, nothing on stdout, one stderr line naming a rule (and that the import
        was aborted leaving the zone unchanged)."""
        lines = [ln for ln in r.err.strip().splitlines() if ln.strip()]
        want = (["import aborted", "zone %s unchanged" % origin] if aborted else []) + rules
        missing = [w for w in want if w.lower() not in r.err.lower()]
        name = title if title.startswith("  … ") else "refused: " + title
        return check("%s → exit %s in %.1f s, one line: %s" % (name, r.rc, took, " … ".join(want)),
                     r.rc not in (0, -1) and len(lines) == 1 and not missing and not r.out.strip(),
                     "%s\n(lines: %d, missing: %s)" % (r, len(lines), missing))

    def interrupted(z, path, count):
        """Starts `zone import z --file path`, SIGINTs it once a chunk is staged: it must abort."""
        cmd = [cl.meridian, "--api", ",".join(cl.api()), "--output", "json", "zone", "import", z, "--file", path]
        pc = PtyCli(cmd)
        staged, waited = wait_for(lambda: pc.staged() >= IMPORT_CHUNK_SETS or pc.p.poll() is not None, 90, 0.01)
        pc.p.send_signal(signal.SIGINT)
        t_int = time.monotonic()
        check("an import of %d sets into %s (%d chunks) is staging: %s sets staged after %.1f s; SIGINT to the CLI" % (
              count, z, -(-count // IMPORT_CHUNK_SETS), pc.staged(), waited), staged and pc.p.returncode is None,
              pc.raw()[-500:])
        r = pc.finish(30)
        refused("  … it aborts (SIGINT after %d of %d sets)" % (pc.staged(), count), r, time.monotonic() - t_int,
                ["interrupted"], origin=z + ".")

    def edge_soa():
        return {n: answer(cl.edges[n]["port"], o, "SOA")[:2] for n in cl.live_edges()}

    def edges_serve(sets, title, name_set, gone=()):
        """Every edge, asked once: the SOA and NS of `sets`, the set `name_set`, NXDOMAIN for `gone`."""
        want_soa = ("NOERROR", sets[(o, "SOA")][1])
        soa = edge_soa()
        check("%s: every edge answers the SOA %s" % (title, want_soa[1][0].split()[2]),
              all(v == want_soa for v in soa.values()), soa)
        ok, d = all_edges_answer(cl, o, "NS", sets[(o, "NS")][1])
        check("%s: every edge answers the apex NS %s" % (title, " ".join(sets[(o, "NS")][1])), ok, d)
        ttl, values = sets[name_set]
        ok, d = all_edges_answer(cl, name_set[0], name_set[1], values, ttl=ttl)
        check("%s: every edge answers %s %s" % (title, name_set[0], name_set[1]), ok, d)
        for g in gone:
            got = {n: answer(cl.edges[n]["port"], g, "A")[0] for n in cl.live_edges()}
            check("%s: every edge answers NXDOMAIN for %s" % (title, g),
                  all(v == "NXDOMAIN" for v in got.values()), got)

    # The zone, with a record that no import file holds.
    r = cl.cli("zone", "create", zone)
    require("zone create %s" % zone, r.ok, r)
    r = cl.upsert("old", "A", ["192.0.2.99"], zone=zone)
    require("record upsert old.%s A" % o, r.ok and r.json.get("id"), r)
    w = cl.wait_change(r.json["id"])
    require("  … INSYNC", w.ok and w.json.get("status") == "INSYNC", w)
    before = cl.record_sets(zone)[0] or {}
    soa_before = before.get((o, "SOA"), (None, ["?"]))[1][0]

    # Files: `good` replaces the zone; the others must change nothing.
    t0 = time.monotonic()
    good = gen_zone(zone, 12000, 2024120101)
    good_path = write(tmp, "good.zone", zone_text(zone, good))
    order = sorted(good, key=set_order)
    chunks = -(-len(order) // IMPORT_CHUNK_SETS)
    first_a = next(k for k in order if k[1] == "A" and k[0].startswith("n0"))
    last_a = next(k for k in reversed(order) if k[1] == "A" and k[0].startswith("n0"))
    require("the generated file's last A set (%s) is in its last chunk (%d chunks)" % (last_a[0], chunks),
            chunks == 3 and order.index(last_a) >= (chunks - 1) * IMPORT_CHUNK_SETS)
    # Outside the zone, and with the longest first label, so it sorts into the last chunk.
    outside = dict(gen_zone(zone, 11999, 2024120102, salt=7))
    outside[("this-name-is-not-in-the-zone.example.org.", "A")] = (60, ["192.0.2.1"])
    outside_path = write(tmp, "outside.zone", zone_text(zone, outside))
    out_order = sorted(outside, key=set_order)
    require("  … the name outside the zone sorts into the last chunk",
            out_order.index(("this-name-is-not-in-the-zone.example.org.", "A")) >= 2 * IMPORT_CHUNK_SETS)
    # A CNAME at the name of the set that ends chunk 0: the CNAME and the other set are
    # neighbours in the order, so they fall on both sides of the chunk boundary.
    cname = dict(gen_zone(zone, 11999, 2024120103, salt=11))
    boundary = sorted(cname, key=set_order)[IMPORT_CHUNK_SETS - 1]
    cname[(boundary[0], "CNAME")] = (300, ["elsewhere.example.net."])
    c_order = sorted(cname, key=set_order)
    idx = sorted(c_order.index(k) for k in cname if k[0] == boundary[0])
    require("  … the CNAME and the %s at %s are in chunks %s" % (boundary[1], boundary[0], [i // IMPORT_CHUNK_SETS for i in idx]),
            [i // IMPORT_CHUNK_SETS for i in idx] == [0, 1])
    cname_path = write(tmp, "cname.zone", zone_text(zone, cname))
    big = gen_zone(zone, 200000, 2024120104, salt=13)
    big_path = write(tmp, "big.zone", zone_text(zone, big))
    small = gen_zone(zone, 50, 2024120105, salt=17)
    small_path = write(tmp, "small.zone", zone_text(zone, small))
    mid = gen_zone(zone, 40000, 2024120106, salt=19)
    mid_path = write(tmp, "mid.zone", zone_text(zone, mid))
    log("      (zone files written in %.1f s)" % (time.monotonic() - t0))

    # --- 1. a 12,000-set file replaces the zone in one change
    r, took = imp(good_path, "--comment", "bulk load")
    ok = check("zone import %s --file good.zone (%d sets, %d chunks, SOA serial 2024120101) → exit 0 in %.1f s"
               % (zone, len(good), chunks, took),
               r.ok and isinstance(r.json, dict) and r.json.get("id") and r.json.get("status") == "PENDING"
               and isinstance(r.json.get("version"), int), r)
    if ok:
        check("  … --comment is the change's comment", r.json.get("comment") == "bulk load", r)
        st = zone_state()
        check("  … zone get: %d record sets, version %s" % (len(good), r.json["version"]),
              st == (r.json["version"], len(good)), st)
        sets, rl = cl.record_sets(zone)
        check("  … record list holds exactly the file's record sets (old.%s gone, SOA and NS replaced)" % o,
              sets == good, rl if sets is None else "only in the zone: %s\nonly in the file: %s\ndiffer: %s" % (
                  sorted(set(sets) - set(good))[:5], sorted(set(good) - set(sets))[:5],
                  [(k, sets[k], good[k]) for k in sorted(set(sets) & set(good)) if sets[k] != good[k]][:5]))
        check("  … the file's SOA is not the one the zone had (%s)" % soa_before.split()[2:3],
              soa_before != good[(o, "SOA")][1][0], soa_before)
        w = cl.wait_change(r.json["id"], timeout=60)
        if check("  … change wait → INSYNC", w.ok and w.json.get("status") == "INSYNC"
                 and w.json.get("version") == r.json["version"], w):
            edges_serve(good, "right after INSYNC", last_a, gone=["old." + o])
            ok2, d = all_edges_answer(cl, first_a[0], "A", good[first_a][1], ttl=good[first_a][0])
            check("right after INSYNC: every edge answers %s A (first chunk)" % first_a[0], ok2, d)
    base = zone_state()
    base_sets = cl.record_sets(zone)[0]

    def unchanged(title):
        st = zone_state()
        sets = cl.record_sets(zone)[0]
        check("  … %s: zone at version %s with %s sets as before, record sets equal" % (title, *(base or ("?", "?"))),
              base is not None and st == base and sets == base_sets,
              "before %s, now %s; sets equal: %s" % (base, st, sets == base_sets))
        edges_serve(good, "  … " + title, last_a)

    # --- 2. all or nothing
    r, took = imp(outside_path)
    refused("a %d-set file with a name outside the zone in its last chunk" % len(outside), r, took, ["NameOutsideZone"])
    unchanged("after it")
    r, took = imp(cname_path)
    refused("a %d-set file with a CNAME beside %s %s, in the next chunk" % (len(cname), boundary[0], boundary[1]),
            r, took, ["CnameAndOtherData"])
    unchanged("after it")

    # --- 3. interrupted while staging
    interrupted(zone, big_path, len(big))
    unchanged("after the interrupted import")
    # The abort drops the staged import (rather than leaving it until a later import of the
    # same zone replaces it): with imports into 3 other zones interrupted too, the 4 would
    # fill every import slot (IMPORTS_MAX = 4 in crates/meridian-control/src/state.rs) and
    # an import into a 5th zone would be refused with LimitExceeded.
    others = ["bulk-%s.test" % c for c in "abcd"]
    for z in others:
        r = cl.cli("zone", "create", z)
        check("zone create %s" % z, r.ok, r)
    for z in others[:3]:
        path = write(tmp, z + ".zone", zone_text(z, gen_zone(z, 40000, 1)))
        interrupted(z, path, 40000)
    fifth = gen_zone(others[3], 50, 7)
    r = cl.cli("zone", "import", others[3], "--file", write(tmp, others[3] + ".zone", zone_text(others[3], fifth)),
               timeout=60)
    check("after 4 interrupted imports, an import into a 5th zone (%s) goes through (no LimitExceeded)" % others[3],
          r.ok and isinstance(r.json, dict) and r.json.get("id"), r)
    check("  … the 3 zones whose imports were interrupted still hold only their SOA and NS",
          all((zone_state(z) or (0, 0))[1] == 2 for z in others[:3]), [zone_state(z) for z in others[:3]])
    r, took = imp(small_path, "--comment", "after the interrupted one")
    ok = check("the next import (%d sets) goes through: exit 0 in %.1f s" % (len(small), took),
               r.ok and isinstance(r.json, dict) and r.json.get("id"), r)
    if ok:
        st = zone_state()
        check("  … zone get: %d record sets" % len(small), st and st[1] == len(small), st)
        w = cl.wait_change(r.json["id"])
        if check("  … INSYNC", w.ok and w.json.get("status") == "INSYNC", w):
            small_a = next(k for k in sorted(small, key=set_order) if k[1] == "A" and k[0].startswith("n0"))
            edges_serve(small, "  … right after INSYNC", small_a, gone=[last_a[0]])

    # --- 4. compare-and-set
    st = zone_state()
    base_sets = cl.record_sets(zone)[0]
    if st:
        v = st[0]
        r, took = imp(good_path, "--expected-version", v - 1)
        refused("--expected-version %d (the zone is at %d)" % (v - 1, v), r, took, ["ZoneVersionMismatch"], aborted=False)
        st2 = zone_state()
        check("  … the zone is unchanged (version %d, %d sets)" % st, st2 == st and cl.record_sets(zone)[0] == base_sets,
              st2)
        # The zone changes while the import stages: the CLI is stopped (SIGSTOP) once a chunk
        # is in, a record is written, and the CLI continued; the commit must be refused.
        cmd = [cl.meridian, "--api", ",".join(cl.api()), "--output", "json", "zone", "import", zone,
               "--file", mid_path, "--expected-version", str(v)]
        pc = PtyCli(cmd)
        staged, waited = wait_for(lambda: pc.staged() >= IMPORT_CHUNK_SETS or pc.p.poll() is not None, 60, 0.01)
        pc.p.send_signal(signal.SIGSTOP)
        check("an import of %d sets with --expected-version %d is staging (%d sets after %.1f s); CLI stopped"
              % (len(mid), v, pc.staged(), waited), staged and pc.p.poll() is None, pc.raw()[-500:])
        u = cl.upsert("during", "A", ["192.0.2.77"], zone=zone)
        check("  … an upsert to the zone meanwhile (version %s)" % (u.json or {}).get("version"), u.ok, u)
        pc.p.send_signal(signal.SIGCONT)
        r = pc.finish(120)
        refused("the commit of that import, continued after the zone moved on", r, time.monotonic() - pc.started,
                ["ZoneVersionMismatch"])
        st3 = zone_state()
        sets = cl.record_sets(zone)[0]
        expect = dict(base_sets or {})
        expect[("during." + o, "A")] = (300, ["192.0.2.77"])
        check("  … the zone holds its old content and the upsert only (%s sets, version %s)" % (
              len(expect), (u.json or {}).get("version")),
              u.ok and st3 == (u.json["version"], len(expect)) and sets == expect, "zone %s" % (st3,))
        r, took = imp(small_path, "--expected-version", st3[0] if st3 else 0)
        ok = check("--expected-version %s (current) imports: exit 0 in %.1f s" % (st3 and st3[0], took),
                   r.ok and isinstance(r.json, dict) and r.json.get("id"), r)
        if ok:
            check("  … the upsert is gone with the rest of the old content",
                  cl.record_sets(zone)[0] == small, zone_state())

    # Leave the catalog as the other scenarios expect it.
    for z in others:
        r = cl.cli("zone", "delete", z, "--force")
        check("zone delete %s --force" % z, r.ok, r)
    r = cl.cli("zone", "delete", zone, "--force")
    if check("zone delete %s --force" % zone, r.ok and r.json and r.json.get("id"), r):
        w = cl.wait_change(r.json["id"])
        check("  … INSYNC", w.ok and w.json.get("status") == "INSYNC", w)
        got = {(n, z): answer(cl.edges[n]["port"], z + ".", "SOA")[0] for n in cl.live_edges() for z in [zone] + others}
        check("  … every edge answers REFUSED for %s and %s" % (zone, ", ".join(others)),
              all(v == "REFUSED" for v in got.values()), got)


def scenario_3(cl, count=50):
    log("\n== 3. the leader SIGKILLed during a stream of %d upserts" % count)
    leader = cl.leader()
    require("cluster status names a leader", leader, cl.status())
    api = cl.api([1, 2, 3])
    acks = {}          # fqdn -> (ttl, value, change id, version, seconds)
    failures = []      # (name, rc, started relative to the kill, seconds, stderr)
    progress = {"done": 0, "kill": None}

    def upsert_k(i):
        name = "k%03d" % i
        value = "10.3.%d.%d" % (i // 250, i % 250 + 1)
        ttl = 60 + i
        t0 = time.monotonic()
        r = cl.upsert(name, "A", [value], ttl=ttl, api=api)
        took = time.monotonic() - t0
        if r.ok and isinstance(r.json, dict) and r.json.get("id"):
            acks[fqdn(name)] = (ttl, value, r.json["id"], r.json["version"], took)
        else:
            rel = t0 - progress["kill"] if progress["kill"] else float("nan")
            failures.append((name, r.rc, rel, took, r.err.strip()[-300:]))

    def writer():
        for i in range(count):
            upsert_k(i)
            progress["done"] = i + 1

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    wait_for(lambda: len(acks) >= 10 or not t.is_alive(), 30, 0.02)
    killed_at = progress["done"]
    progress["kill"] = time.monotonic()
    cl.controls[leader]["proc"].send(signal.SIGKILL)
    cl.controls[leader]["proc"].p.wait(10)
    log("      (SIGKILLed leader %d after %d upserts)" % (leader, killed_at))
    survivors = [c for c in (1, 2, 3) if c != leader]
    new_leader, took = wait_for(lambda: cl.leader(survivors), 15, 0.05)
    elected = time.monotonic() - progress["kill"]
    require("a new leader among the survivors %s: %s (%.1f s after the kill)" % (survivors, new_leader, elected),
            new_leader in survivors)
    t.join(300)
    require("the upsert loop finished", not t.is_alive())
    # Every upsert succeeds, the one in flight when the leader died included: the CLI gives each
    # change its own idempotency token and resends it to the next endpoint when the connection
    # breaks mid-call, and the state machine applies a token once. One started after the kill
    # rides over the election (WRITE_TIMEOUT is 10 s).
    after_kill = [f for f in failures if f[2] >= 0]
    check("upserts started after the kill succeed: %d of %d failed (CLI given all 3 endpoints; "
          "new leader after %.1f s)" % (len(after_kill), count - killed_at, elected), not after_kill,
          "\n".join("%s rc=%s started %+.2fs after the kill, took %.2fs: %s" % f for f in failures))
    check("every upsert of the loop succeeds, the one in flight at the kill included (resent with "
          "its token): %d failed" % len(failures), not failures,
          "\n".join("%s rc=%s started %+.2fs after the kill, took %.2fs: %s" % f for f in failures))
    # More upserts once the new leader is known, so acknowledged writes span before, during
    # and after the failover.
    for i in range(count, count + 10):
        upsert_k(i)
    check("10 more upserts under the new leader are acknowledged",
          all(fqdn("k%03d" % i) in acks for i in range(count, count + 10)),
          "\n".join(map(str, failures[-10:])))
    log("      (%d upserts acknowledged, %d failed; slowest ack %.2f s)" % (
        len(acks), len(failures), max((a[4] for a in acks.values()), default=0)))

    for cid in survivors:
        sets, r = cl.record_sets(ZONE, cid)
        if sets is None:
            check("record list --api node %d" % cid, False, r)
            continue
        missing = [(n, a[:2], sets.get((n, "A"))) for n, a in sorted(acks.items())
                   if sets.get((n, "A")) != (a[0], [a[1]])]
        check("node %d alone (linearizable read): all %d acknowledged upserts present with their TTL and value"
              % (cid, len(acks)), not missing, "\n".join(map(str, missing[:20])))
        wrong_ver = []
        for n, a in list(acks.items())[:: max(1, len(acks) // 10)]:
            g = cl.cli("change", "get", a[2], api=[cl.addr(cid)])
            if not g.ok or g.json.get("version") != a[3]:
                wrong_ver.append((a[2], a[3], str(g)))
        check("node %d: change get of acknowledged ids gives the acknowledged version" % cid,
              not wrong_ver, "\n".join(map(str, wrong_ver)))
    versions = {cid: (cl.status(cid) or {}).get("catalog_version") for cid in survivors}
    target = max(v or 0 for v in versions.values())
    check("survivors agree on the catalog version %s" % versions, len(set(versions.values())) == 1, versions)

    def converged():
        el = cl.edges_list()
        if not el or el.get("catalog_version") != target:
            return None
        es = {e["id"]: e for e in el["edges"]}
        if all(es.get(n, {}).get("version") == target and not es[n].get("stale") for n in cl.edges):
            return el
        return None
    el, took = wait_for(converged, 20, 0.2)
    check("edges list: every edge at the survivors' catalog version %s (%.1f s)" % (target, took), el,
          json.dumps(cl.edges_list()))
    for n in sorted(cl.edges):
        bad = []
        for name, a in sorted(acks.items()):
            rc_, vals, ttl, _ = answer(cl.edges[n]["port"], name, "A")
            if rc_ != "NOERROR" or vals != [a[1]] or ttl != a[0]:
                bad.append("%s: %s %s ttl=%s (want %s ttl=%s)" % (name, rc_, vals, ttl, a[1], a[0]))
        check("edge %s answers every acknowledged upsert exactly" % n, not bad, "\n".join(bad[:20]))
        m = metrics(cl.edges[n]["mport"])
        check("edge %s metrics: meridian_edge_catalog_version = %s" % (n, target),
              m.get("meridian_edge_catalog_version") == target, m.get("meridian_edge_catalog_version"))

    # A write right after the failover, with edges possibly still moving their streams and
    # reports off the dead node: INSYNC must still mean every edge serves it.
    r = cl.upsert("after-failover", "A", ["192.0.2.99"], ttl=30)
    if check("upsert right after the failover", r.ok, r):
        w = cl.wait_change(r.json["id"])
        check("  … INSYNC", w.ok, w)
        ok, d = all_edges_answer(cl, "after-failover", "A", ["192.0.2.99"], ttl=30)
        check("  … and right after INSYNC every edge answers it", ok, d)

    cl.start_control(leader)

    def caught_up():
        s = cl.status(new_leader)
        if not s:
            return None
        nodes = s.get("nodes", [])
        applied = {n["id"]: n.get("applied_index") for n in nodes}
        if len(nodes) == 3 and all(n.get("reachable") for n in nodes) and len(set(applied.values())) == 1:
            return applied
        return None
    applied, took = wait_for(caught_up, 30, 0.2)
    check("restarted node %d catches up: cluster status shows equal applied indexes %s (%.1f s)"
          % (leader, applied, took), applied, json.dumps(cl.status(new_leader)))
    back, _ = cl.record_sets(ZONE, leader)
    ref, _ = cl.record_sets(ZONE, new_leader)
    check("node %d serves the same record sets as the leader (read through node %d only)" % (leader, leader),
          back is not None and back == ref, "differ" if back else "no answer")


def scenario_6(cl):
    log("\n== 6. membership: add a 4th node, it catches up; remove it")
    before = cl.status()
    n_sets = len((cl.record_sets(ZONE)[0]) or {})
    c4 = cl.add_control(4)
    leader = cl.leader([1, 2, 3])
    require("cluster status names a leader", leader)
    followers_first = [c for c in (1, 2, 3) if c != leader] + [leader]
    r = cl.cli("cluster", "add-node", 4, cl.addr(4), api=cl.api(followers_first), timeout=60)
    check("cluster add-node 4 %s with --api follower,follower,leader (log at index %s, %d sets in %s)" % (
        cl.addr(4), (before or {}).get("catalog_version"), n_sets, ZONE), r.ok, r)
    if not r.ok:
        r = cl.cli("cluster", "add-node", 4, cl.addr(4), api=[cl.addr(leader)], timeout=60)
        require("  … cluster add-node 4 sent to the leader (node %d) only" % leader, r.ok, r)

    def four():
        s = cl.status(4)
        if not s:
            return None
        nodes = s.get("nodes", [])
        voters = [n for n in nodes if n.get("voter")]
        applied = {n["id"]: n.get("applied_index") for n in nodes}
        if len(voters) == 4 and all(n.get("reachable") for n in nodes) and len(set(applied.values())) == 1:
            return applied
        return None
    applied, took = wait_for(four, 30, 0.2)
    check("cluster status: 4 voters, equal applied indexes %s (%.1f s)" % (applied, took), applied,
          json.dumps(cl.status(4)))
    ref, _ = cl.record_sets(ZONE, 1)
    got, r = cl.record_sets(ZONE, 4)
    check("node 4 alone serves the same %d record sets" % len(ref or {}), got is not None and got == ref, r if got is None else "differ")
    r = cl.upsert("via-node4", "A", ["192.0.2.44"], api=[cl.addr(4)])
    check("a write through node 4 (forwarded to the leader)", r.ok, r)
    if r.ok:
        w = cl.wait_change(r.json["id"])
        check("  … INSYNC", w.ok, w)
    leader = cl.leader([1, 2, 3, 4])
    followers_first = [c for c in (1, 2, 3, 4) if c != leader] + [leader]
    r = cl.cli("cluster", "remove-node", 4, api=cl.api(followers_first), timeout=60)
    check("cluster remove-node 4 with --api followers first, then the leader (node %s)" % leader, r.ok, r)
    if not r.ok:
        r = cl.cli("cluster", "remove-node", 4, api=[cl.addr(leader)], timeout=60)
        check("  … cluster remove-node 4 sent to the leader only", r.ok, r)

    def three():
        s = cl.status(1)
        voters = sorted(n["id"] for n in (s or {}).get("nodes", []) if n.get("voter"))
        return s if voters == [1, 2, 3] else None
    s, took = wait_for(three, 20, 0.2)
    check("cluster status: voters back to 1, 2, 3 (%.1f s)" % took, s, json.dumps(cl.status(1)))
    rc = c4["proc"].stop(signal.SIGTERM, 15)
    check("node 4 stops on SIGTERM (exit %s)" % rc, rc == 0)
    del cl.controls[4]
    r = cl.upsert("after-remove", "A", ["192.0.2.45"])
    check("the 3-node cluster still commits writes", r.ok, r)
    if r.ok:
        w = cl.wait_change(r.json["id"])
        check("  … INSYNC", w.ok, w)


def wait_cache(cl, name, version, timeout=5):
    v, took = wait_for(lambda: (cache_version(cl.edges[name]["cache"]) or 0) >= version, timeout, 0.05)
    check("edge %s's cache file reaches version %s (%.1f s)" % (name, version, took), v,
          "cache at %s" % cache_version(cl.edges[name]["cache"]))
    return v


def restart_edge(cl, name):
    rc = cl.edges[name]["proc"].stop(signal.SIGTERM, 10)
    check("edge %s stops on SIGTERM (exit %s)" % (name, rc), rc == 0)
    return cl.start_edge(name, require_up=False)


def scenario_4(cl):
    log("\n== 4. control plane down: edges keep answering, restart from cache, corrupt cache")
    r = cl.upsert("last", "A", ["192.0.2.200"], ttl=77)
    require("upsert last A before the shutdown", r.ok, r)
    w = cl.wait_change(r.json["id"])
    require("  … INSYNC", w.ok, w)
    last_version = r.json["version"]
    edges_on = {}
    for n, e in cl.edges.items():
        m = re.findall(r"subscribed to the catalog stream control=(\S+)", e["proc"].log_since_start())
        if m:
            edges_on.setdefault(m[-1], []).append(n)
    t0 = time.monotonic()
    for cid in sorted(cl.controls):
        cl.controls[cid]["proc"].send(signal.SIGTERM)
    exited = {}
    for cid in sorted(cl.controls):
        p = cl.controls[cid]["proc"].p
        try:
            p.wait(max(0.1, t0 + 8 - time.monotonic()))
            exited[cid] = (p.returncode, time.monotonic() - t0)
        except subprocess.TimeoutExpired:
            exited[cid] = (None, None)
    for cid in sorted(cl.controls):
        rc, took = exited[cid]
        streams = edges_on.get(cl.addr(cid), [])
        check("control node %d exits 0 on SIGTERM within 8 s (%s; edge streams on it: %s)" % (
            cid, "exit %s after %.1f s" % (rc, took) if took is not None else "still running, SIGKILLed",
            ", ".join(streams) or "none"), rc == 0,
            "" if took is not None else "last log lines:\n" + "\n".join(cl.controls[cid]["proc"].tail(5)))
        cl.controls[cid]["proc"].stop(signal.SIGKILL, 5)
    ok, d = all_edges_answer(cl, "last", "A", ["192.0.2.200"], ttl=77)
    check("control plane down: every edge still answers the last data", ok, d)
    ok, d = all_edges_answer(cl, "www", "A", ["192.0.2.10", "192.0.2.11"], ttl=120)
    check("  … and the older data", ok, d)

    # Restart e1 with the control plane still down: it serves its cache at once.
    wait_cache(cl, "e1", last_version)
    e = restart_edge(cl, "e1")
    started = e["started"]
    got, took = wait_for(lambda: answer(e["port"], fqdn("last"), "A", timeout=0.3)[:3] == ("NOERROR", ["192.0.2.200"], 77),
                         3, 0.02)
    check("edge e1 restarted with the control plane down answers the last data from its cache (%.2f s after exec)"
          % (time.monotonic() - started), got, answer(e["port"], fqdn("last"), "A"))
    logtext = e["proc"].log_since_start()
    check("  … its log says it serves the cached catalog (version %s)" % last_version,
          "serving the cached catalog" in logtext and ("version=%d" % last_version) in logtext, logtext[-1500:])
    m = metrics(e["mport"])
    check("  … metrics: meridian_edge_catalog_version = %s" % last_version,
          m.get("meridian_edge_catalog_version") == last_version, m.get("meridian_edge_catalog_version"))

    # Corrupt e2's cache and restart it with the control plane down.
    wait_cache(cl, "e2", last_version)
    rc = cl.edges["e2"]["proc"].stop(signal.SIGTERM, 10)
    check("edge e2 stops on SIGTERM (exit %s)" % rc, rc == 0)
    path = os.path.join(cl.edges["e2"]["cache"], "catalog.bin")
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        for pos in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
            data[pos] ^= 0xFF
        f.seek(0)
        f.write(data)
    e2 = cl.start_edge("e2", require_up=False)
    rc_, took = wait_for(lambda: answer(e2["port"], fqdn("last"), "A", timeout=0.3)[0] == "REFUSED", 5, 0.05)
    check("edge e2 with a corrupt cache starts and answers REFUSED (no zones) (%.2f s)" % took,
          rc_ and e2["proc"].alive(), answer(e2["port"], fqdn("last"), "A"))
    logtext = e2["proc"].log_since_start()
    check("  … its log says the cache was ignored", "catalog cache ignored" in logtext, logtext[-1500:])
    m = metrics(e2["mport"])
    check("  … metrics: catalog version 0, no full catalog yet",
          m.get("meridian_edge_catalog_version") == 0 and m.get("meridian_edge_full_catalogs_applied_total") == 0,
          {k: v for k, v in m.items() if "catalog" in k})

    # Bring the control plane back (same data, same ports).
    for cid in sorted(cl.controls):
        cl.start_control(cid)
    ldr, took = wait_for(lambda: cl.leader(), 20, 0.2)
    require("the control plane is back with a leader (%.1f s)" % took, ldr)
    s = cl.status(ldr)
    check("  … at the catalog version it stopped at (%s)" % last_version,
          s and s.get("catalog_version") == last_version, json.dumps(s))
    got, took = wait_for(lambda: metrics(e2["mport"]).get("meridian_edge_full_catalogs_applied_total", 0) >= 1, 15, 0.1)
    check("edge e2 receives a full catalog (%.1f s)" % took, got,
          {k: v for k, v in metrics(e2["mport"]).items() if "catalog" in k})
    ok, d = all_edges_answer(cl, "last", "A", ["192.0.2.200"], ttl=77, edges=["e2"], timeout=5)
    check("  … and answers again", ok, d)
    got, _ = wait_for(lambda: cache_version(e2["cache"]) == last_version, 5, 0.05)
    check("  … and rewrites a valid cache", got, cache_version(e2["cache"]))

    # Right after the restart: a change goes INSYNC, and every edge then serves it.
    r = cl.upsert("back", "A", ["192.0.2.201"], ttl=78)
    if check("upsert after the control-plane restart", r.ok, r):
        w = cl.wait_change(r.json["id"])
        if check("  … change wait → INSYNC (no transient error while the restarted cluster settles)", w.ok, w):
            ok, d = all_edges_answer(cl, "back", "A", ["192.0.2.201"], ttl=78)
            check("  … and right after INSYNC every edge answers it", ok, d)
        else:
            # Go on with the scenario: run `change wait` again until it gets through.
            w, took = wait_for(lambda: (lambda x: x if x.ok else None)(cl.wait_change(r.json["id"])), 20, 0.2)
            check("  … change wait, run again until it answers, → INSYNC (%.1f s)" % took, w, w)
        ok, d = all_edges_answer(cl, "back", "A", ["192.0.2.201"], ttl=78, timeout=10)
        check("  … every edge answers it within 10 s", ok, d)
        el, _ = wait_for(lambda: (lambda x: x if x and len([e for e in x["edges"] if not e["stale"]]) == 3 else None)(cl.edges_list()), 10, 0.2)
        check("edges list: the 3 edges are live again after the control-plane restart", el, json.dumps(cl.edges_list()))

    # A short absence is caught up with deltas, not a full catalog.
    version = max((cl.status() or {}).get("catalog_version", 0), r.json["version"] if r.ok else 0)
    all_edges_answer(cl, "back", "A", ["192.0.2.201"], edges=["e3"], timeout=5)
    wait_cache(cl, "e3", version)
    rc = cl.edges["e3"]["proc"].stop(signal.SIGTERM, 10)
    check("edge e3 stops on SIGTERM (exit %s)" % rc, rc == 0)
    ids = []
    for i in range(5):
        r = cl.upsert("short%d" % i, "A", ["192.0.2.%d" % (210 + i)], ttl=60)
        if r.ok:
            ids.append(r.json["version"])
    check("5 upserts while e3 is down", len(ids) == 5)
    e3 = cl.start_edge("e3")
    ok, d = all_edges_answer(cl, "short4", "A", ["192.0.2.214"], ttl=60, edges=["e3"], timeout=10)
    check("edge e3 back: serves the changes made while it was down", ok, d)
    # The counters move just after the new catalog is swapped in, so the answer can come first.
    wait_for(lambda: metrics(e3["mport"]).get("meridian_edge_deltas_applied_total") == len(ids), 5)
    m = metrics(e3["mport"])
    check("  … caught up with %d deltas and no full catalog (deltas=%s full=%s)" % (
        len(ids), m.get("meridian_edge_deltas_applied_total"), m.get("meridian_edge_full_catalogs_applied_total")),
        m.get("meridian_edge_full_catalogs_applied_total") == 0 and m.get("meridian_edge_deltas_applied_total") == len(ids),
        {k: v for k, v in m.items() if "catalog" in k or "delta" in k})


def scenario_5(cl, changes, workers=8):
    log("\n== 5. an edge away for longer than the delta history (%d) gets a full catalog" % DELTA_HISTORY_MAX)
    status = cl.status()
    version = status["catalog_version"]
    all_edges_answer(cl, "short4", "A", ["192.0.2.214"], edges=["e3"], timeout=5)
    wait_cache(cl, "e3", version)
    rc = cl.edges["e3"]["proc"].stop(signal.SIGTERM, 10)
    check("edge e3 stops on SIGTERM (exit %s)" % rc, rc == 0)
    api = cl.api()
    t0 = time.monotonic()
    failed = []
    last = {}

    def one(i):
        # Spread the writes over the nodes (followers forward to the leader).
        r = cl.upsert("h%05d" % (i % 1000), "A", ["10.5.%d.%d" % (i // 250 % 250, i % 250 + 1)],
                      ttl=60, api=api[i % len(api):] + api[:i % len(api)])
        if not r.ok:
            failed.append((i, r.rc, r.err.strip()[-200:]))
        return i, r
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        for i, r in pool.map(one, range(changes)):
            if r.ok:
                last[i] = r.json["version"]
    finally:
        # On an interrupt, do not run the thousands of queued upserts.
        pool.shutdown(wait=True, cancel_futures=True)
    took = time.monotonic() - t0
    check("%d upserts from %d parallel CLI workers in %.1f s (%.0f/s), %d failed" % (
        changes, workers, took, changes / took, len(failed)), not failed, "\n".join(map(str, failed[:10])))
    # Nobody else writes: the newest version is the highest acknowledged one (a node's own
    # `cluster status` may lag the leader by a few entries).
    newest = max(last.values(), default=0)
    check("catalog moved %d versions (> DELTA_HISTORY_MAX %d)" % (newest - version, DELTA_HISTORY_MAX),
          newest - version > DELTA_HISTORY_MAX)
    sets, _ = cl.record_sets(ZONE)
    e3 = cl.start_edge("e3")
    got, took = wait_for(lambda: metrics(e3["mport"]).get("meridian_edge_full_catalogs_applied_total", 0) >= 1, 30, 0.1)
    m = metrics(e3["mport"])
    check("edge e3 back: meridian_edge_full_catalogs_applied_total went 0 → %s (%.1f s)" % (
        m.get("meridian_edge_full_catalogs_applied_total"), took), got,
        {k: v for k, v in m.items() if "catalog" in k or "delta" in k})
    got, took = wait_for(lambda: metrics(e3["mport"]).get("meridian_edge_catalog_version") == newest, 15, 0.1)
    check("  … at the newest catalog version %s (%.1f s)" % (newest, took), got,
          metrics(e3["mport"]).get("meridian_edge_catalog_version"))
    bad = []
    for (name, t), (ttl, vals) in sorted((sets or {}).items()):
        if t != "A" or not name.startswith("h"):
            continue
        rc_, got_vals, got_ttl, _ = answer(e3["port"], name, "A")
        if rc_ != "NOERROR" or got_vals != vals or got_ttl != ttl:
            bad.append("%s: %s %s (want %s)" % (name, rc_, got_vals, vals))
    check("  … and answers the latest value of all %d rewritten names" % len([k for k in (sets or {}) if k[0].startswith("h")]),
          sets and not bad, "\n".join(bad[:20]))
    el, took = wait_for(lambda: (lambda x: x if x and all(e["version"] == newest for e in x["edges"] if not e["stale"])
                                 and len([e for e in x["edges"] if not e["stale"]]) == 3 else None)(cl.edges_list()), 15, 0.2)
    check("edges list: all 3 edges at %s" % newest, el, json.dumps(cl.edges_list()))


# --- main ------------------------------------------------------------------------------------

def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meridian", default=os.path.join(REPO, "target/release/meridian"))
    ap.add_argument("--quick", action="store_true",
                    help="skip scenario 5 (> %d versions while an edge is down, ~45 s)" % DELTA_HISTORY_MAX)
    ap.add_argument("--only", metavar="N,N", default="",
                    help="run scenario 1 (it sets the cluster up), then only these scenarios (e.g. 7)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    try:
        only = {int(n) for n in args.only.split(",") if n.strip()}
    except ValueError:
        ap.error("--only takes scenario numbers separated by commas, e.g. --only 2,7")
    VERBOSE = args.verbose
    meridian = os.path.abspath(args.meridian)
    if not os.access(meridian, os.X_OK):
        log("FAIL  %s is not an executable (build it: cargo build --release)" % meridian)
        return 1

    tmp = tempfile.mkdtemp(prefix="meridian-cluster-e2e-")
    started = time.monotonic()
    log("meridian: %s\ndata and logs: %s" % (meridian, tmp))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    # SIGINT too: a shell that starts us in the background leaves SIGINT ignored.
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    cl = Cluster(meridian, tmp)
    aborted = None
    try:
        # 7 runs right after 2, while the cluster is whole.
        steps = [(1, scenario_1), (2, scenario_2), (7, scenario_7), (3, scenario_3), (4, scenario_4)]
        if not args.quick:
            steps.append((5, lambda c: scenario_5(c, DELTA_HISTORY_MAX + 200)))
        steps.append((6, scenario_6))
        if only:
            steps = [(n, step) for n, step in steps if n == 1 or n in only]
        for _, step in steps:
            t0 = time.monotonic()
            step(cl)
            log("      (%.1f s)" % (time.monotonic() - t0))
        if args.quick and (not only or 5 in only):
            log("\n== 5. skipped (--quick; it makes > %d upserts, about 45 s on 2 cores)" % DELTA_HISTORY_MAX)
    except Abort as e:
        aborted = str(e)
        log("ABORT  the run stops here: %s" % e)
    except KeyboardInterrupt as e:
        aborted = "interrupted (%s)" % e
        check("interrupted", False, str(e))
    except Exception as e:  # noqa: BLE001 - a bug in the test itself must still clean up
        import traceback
        aborted = "exception %r" % e
        check("unexpected exception in the test: %r" % e, False, traceback.format_exc())
    finally:
        kill_all()
        failed = [n for n, ok in results if not ok]
        if failed or aborted:
            log("\n== log tails")
            seen = set()
            for p in ALL_PROCS:
                if p.logpath in seen:
                    continue
                seen.add(p.logpath)
                log("--- %s (%s)" % (p.name, p.logpath))
                for line in p.tail(30):
                    log("    " + line)
        elapsed = time.monotonic() - started
        log("\n%d checks, %d passed, %d failed%s; %.1f s" % (
            len(results), len(results) - len(failed), len(failed),
            "; aborted: " + aborted if aborted else "", elapsed))
        for n in failed:
            log("  FAILED: %s" % n)
        if args.keep:
            log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if (failed or aborted) else 0


if __name__ == "__main__":
    sys.exit(main())
