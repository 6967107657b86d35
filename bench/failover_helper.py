#!/usr/bin/env python3
"""Helper for bench/failover.sh: health-check failover time through a 3-node control plane and
3 edges, and the probe load of one edge with many checks.

Subcommands:
  http-serve PORT                 an HTTP endpoint: 200 "ready" for any GET (run as its own
                                  process, so that killing it is the endpoint dying)
  tcp-serve COUNTFILE PORT...     asyncio TCP listeners that accept and close; the number of
                                  connections accepted is written to COUNTFILE every 0.5 s
  failover ...                    the failover measurement (see bench/README.md); writes JSON
  load ...                        the probe-load measurement; writes JSON
  assemble RESDIR META OUT.json   both parts and the run's metadata in one results file
  report RESULTS.json OUT.md      the Markdown report

Needs python3 with dnspython. Sends traffic to 127.0.0.1 only.
"""

import argparse
import asyncio
import concurrent.futures
import ctypes
import http.server
import json
import os
import random
import re
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import time

import dns.flags
import dns.message
import dns.rcode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import edge_helper  # noqa: E402  (same directory: process accounting, quiet wait)

ZONE = "failover.bench."
NAME = "www." + ZONE
PRIMARY = "10.60.0.1"
SECONDARY = "10.60.0.2"
TARGET_S = 2.5
TRANSITION = re.compile(r"^(\S+Z)\s.*health transition check=(\S+) healthy=(true|false)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def say(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


class Fail(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Endpoints


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def http_serve(port):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b"ready\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_a):
            pass

    _Server(("127.0.0.1", port), Handler).serve_forever(poll_interval=0.5)


def tcp_serve(countfile, ports):
    count = [0]

    async def handle(_reader, writer):
        count[0] += 1
        writer.close()

    async def main():
        for p in ports:
            await asyncio.start_server(handle, "127.0.0.1", p, backlog=1024, reuse_address=True)
        while True:
            with open(countfile + ".tmp", "w") as f:
                f.write("%d %.3f\n" % (count[0], time.time()))
            os.replace(countfile + ".tmp", countfile)
            await asyncio.sleep(0.5)

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# Processes and the CLI


_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: the child gets SIGKILL if the helper dies (even by SIGKILL).
    _libc.prctl(1, signal.SIGKILL)


class Proc:
    def __init__(self, name, args, logpath):
        self.name, self.args, self.logpath = name, args, logpath
        self.p = None

    def start(self):
        with open(self.logpath, "ab") as f:
            f.write(("=== start %s: %s\n" % (time.strftime("%H:%M:%S"), " ".join(self.args))).encode())
        logf = open(self.logpath, "ab")
        self.p = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                  preexec_fn=_die_with_parent)
        logf.close()
        PROCS.append(self)
        return self

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def stop(self, sig=signal.SIGTERM):
        if self.alive():
            self.p.send_signal(sig)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()

    def text(self):
        try:
            with open(self.logpath, "rb") as f:
                return ANSI.sub("", f.read().decode("utf-8", "replace"))
        except OSError:
            return ""


PROCS = []


def stop_all():
    for p in reversed(PROCS):
        try:
            p.stop()
        except Exception:  # noqa: BLE001
            pass


def cli(meridian, api, *args, timeout=60):
    cmd = [meridian, "--api", api, "--output", "json"] + [str(a) for a in args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise Fail("%s: rc=%s %s" % (" ".join(cmd[3:]), p.returncode, p.stderr.strip()[-500:]))
    return json.loads(p.stdout) if p.stdout.strip() else None


def wait(fn, timeout, interval=0.1, what="condition"):
    end = time.monotonic() + timeout
    last_err = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001
            last_err = e
        if time.monotonic() > end:
            raise Fail("timed out after %ss waiting for %s (%s)" % (timeout, what, last_err))
        time.sleep(interval)


def tcp_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False


def query_once(port, timeout=0.5):
    q = dns.message.make_query(NAME, "A")
    q.flags &= ~dns.flags.RD
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(q.to_wire(), ("127.0.0.1", port))
        r = dns.message.from_wire(s.recv(4096))
        return sorted(rd.address for rr in r.answer for rd in rr if rr.rdtype == 1)
    except (OSError, dns.exception.DNSException):
        return None
    finally:
        s.close()


def write_batch(path, hc_id):
    sets = [
        {"Name": NAME, "Type": "A", "SetIdentifier": "primary", "Failover": "PRIMARY", "TTL": 60,
         "ResourceRecords": [{"Value": PRIMARY}], "HealthCheckId": hc_id},
        {"Name": NAME, "Type": "A", "SetIdentifier": "secondary", "Failover": "SECONDARY", "TTL": 60,
         "ResourceRecords": [{"Value": SECONDARY}]},
    ]
    with open(path, "w") as f:
        json.dump({"Comment": "failover bench", "Changes": [{"Action": "UPSERT", "ResourceRecordSet": s}
                                                           for s in sets]}, f, indent=2)


# ---------------------------------------------------------------------------------------------
# Failover time


class Poller:
    """Queries every edge every `period` s over UDP (one connected socket per edge, replies
    matched by id) and records, per edge, each change of answer: [(t, "P" | "S" | "other")],
    t relative to the run's t0."""

    def __init__(self, ports, period=0.01):
        self.ports = ports
        self.period = period
        self.socks = {}
        self.by_fd = {}
        for e, p in ports.items():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(("127.0.0.1", p))
            s.setblocking(False)
            self.socks[e] = s
            self.by_fd[s.fileno()] = e
        self.qid = random.randint(0, 65535)
        self.wire = {}

    def query(self, qid):
        q = dns.message.make_query(NAME, "A", id=qid)
        q.flags &= ~dns.flags.RD
        return q.to_wire()

    @staticmethod
    def classify(wire):
        try:
            r = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - a reply that does not parse is "other"
            return None, "other"
        vals = sorted(rd.address for rr in r.answer for rd in rr if rr.rdtype == 1)
        if r.rcode() == dns.rcode.NOERROR and vals == [PRIMARY]:
            return r, "P"
        if r.rcode() == dns.rcode.NOERROR and vals == [SECONDARY]:
            return r, "S"
        return r, "other"

    def run(self, t0, until):
        """Polls until until(state, now - t0) returns a value: (that value, state, counters)."""
        import select
        state = {e: [] for e in self.ports}
        last = {e: None for e in self.ports}
        pending = {}
        sent = answered = errors = 0
        next_tick = time.monotonic()
        fds = list(self.socks.values())
        while True:
            now = time.monotonic()
            if now >= next_tick:
                for e, s in self.socks.items():
                    self.qid = (self.qid + 1) & 0xFFFF
                    try:
                        s.send(self.query(self.qid))
                        sent += 1
                        pending[(e, self.qid)] = now
                    except OSError:
                        errors += 1
                next_tick += self.period
                if next_tick < now:
                    next_tick = now + self.period
                done = until(state, now - t0)
                if done:
                    lost = sum(1 for v in pending.values() if now - v > 0.5)
                    return done, state, {"sent": sent, "answered": answered, "errors": errors, "lost": lost}
                if len(pending) > 2000:
                    pending = {k: v for k, v in pending.items() if now - v < 1.0}
            ready, _, _ = select.select(fds, [], [], max(0.0, next_tick - time.monotonic()))
            for s in ready:
                e = self.by_fd[s.fileno()]
                while True:
                    try:
                        wire = s.recv(4096)
                    except BlockingIOError:
                        break
                    except OSError:
                        errors += 1
                        break
                    rcv = time.monotonic()
                    r, kind = self.classify(wire)
                    if r is None or (e, r.id) not in pending:
                        continue
                    del pending[(e, r.id)]
                    answered += 1
                    if kind != last[e]:
                        state[e].append((round(rcv - t0, 4), kind))
                        last[e] = kind


def stays_since(changes, kind):
    """The time of the last change to `kind` if the answer is `kind` now, else None."""
    if changes and changes[-1][1] == kind:
        return changes[-1][0]
    return None


def log_transitions(text, hc_id):
    """[(epoch seconds, healthy)] of the "health transition" lines for hc_id in a node's log."""
    out = []
    for line in text.splitlines():
        m = TRANSITION.search(line)
        if m and m.group(2) == hc_id:
            ts = m.group(1).rstrip("Z")
            base, _, frac = ts.partition(".")
            epoch = time.mktime(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) - time.timezone
            out.append((epoch + float("0." + (frac or "0")), m.group(3) == "true"))
    return out


def percentile(values, p):
    """Nearest rank."""
    v = sorted(values)
    if not v:
        return None
    k = max(1, min(len(v), int(-(-p * len(v) // 100))))
    return v[k - 1]


def failover(args):
    meridian, work, base = args.meridian, args.work, args.port_base
    ctl_ports = {i: base + i for i in (1, 2, 3)}
    dns_ports = {"e%d" % i: base + 10 + i for i in (1, 2, 3)}
    met_ports = {"e%d" % i: base + 20 + i for i in (1, 2, 3)}
    http_port = base + 30
    addr = {i: "127.0.0.1:%d" % p for i, p in ctl_ports.items()}
    api_all = ",".join(addr[i] for i in (1, 2, 3))
    commands = []
    controls = {}
    for i in (1, 2, 3):
        cmd = [meridian, "control", "--id", str(i), "--data", os.path.join(work, "control%d" % i), "--listen", addr[i]]
        commands.append("meridian " + " ".join(cmd[1:]))
        controls[i] = Proc("control%d" % i, cmd, os.path.join(work, "control%d.log" % i)).start()
    for i in (1, 2, 3):
        wait(lambda i=i: tcp_open(ctl_ports[i]), 20, what="control node %d listening" % i)
    init = ["cluster", "init"] + sum((["--node", "%d=%s" % (i, addr[i])] for i in (1, 2, 3)), [])
    commands.append("meridian --api %s %s" % (addr[1], " ".join(init)))
    cli(meridian, addr[1], *init)

    def formed():
        s = cli(meridian, addr[1], "cluster", "status")
        nodes = s.get("nodes", [])
        return s if s.get("leader") and len(nodes) == 3 and all(n.get("reachable") for n in nodes) else None
    wait(formed, 30, 0.2, "cluster of 3 with a leader")
    order = {1: (1, 2, 3), 2: (2, 3, 1), 3: (3, 1, 2)}
    for i in (1, 2, 3):
        e = "e%d" % i
        cmd = [meridian, "edge", "--control", ",".join(addr[j] for j in order[i]), "--id", e, "--pop",
               "pop%d" % i, "--cache", os.path.join(work, "cache-" + e), "--identity", e,
               "--listen", "127.0.0.1:%d" % dns_ports[e], "--metrics", "127.0.0.1:%d" % met_ports[e],
               "--workers", "1"]
        commands.append("meridian " + " ".join(cmd[1:]))
        Proc(e, cmd, os.path.join(work, e + ".log")).start()

    def registered():
        el = cli(meridian, api_all, "edges", "list")
        return {e["id"] for e in el.get("edges", []) if not e.get("stale")} >= set(dns_ports)
    wait(registered, 30, 0.2, "edges e1..e3 registered")
    cli(meridian, api_all, "zone", "create", ZONE)
    endpoint_cmd = [sys.executable, os.path.abspath(__file__), "http-serve", str(http_port)]
    commands.append("python3 bench/failover_helper.py http-serve %d   # the endpoint; SIGKILLed at t0" % http_port)
    ep = Proc("endpoint", endpoint_cmd, os.path.join(work, "endpoint.log")).start()
    wait(lambda: tcp_open(http_port), 10, what="HTTP endpoint")
    cfg = {"Type": "HTTP", "IPAddress": "127.0.0.1", "Port": http_port, "ResourcePath": "/health",
           "RequestInterval": 1, "FailureThreshold": 2}
    with open(os.path.join(work, "hc.json"), "w") as f:
        json.dump(cfg, f)
    commands.append("meridian --api %s health create --config hc.json   # %s" % (api_all, json.dumps(cfg)))
    hc = cli(meridian, api_all, "health", "create", "--config", os.path.join(work, "hc.json"))["id"]
    write_batch(os.path.join(work, "batch.json"), hc)
    commands.append("meridian --api %s record apply %s --file batch.json   # %s PRIMARY %s (the check), "
                    "SECONDARY %s" % (api_all, ZONE, NAME, PRIMARY, SECONDARY))
    change = cli(meridian, api_all, "record", "apply", ZONE, "--file", os.path.join(work, "batch.json"))
    cli(meridian, api_all, "change", "wait", change["id"], "--timeout", 30, timeout=60)

    def ready():
        if any(query_once(p) != [PRIMARY] for p in dns_ports.values()):
            return False
        st = cli(meridian, api_all, "health", "status", hc, timeout=15)
        views = {v["pop"]: v for v in st.get("pops", [])}
        return (not st["status"].startswith("unhealthy") and set(views) == {"pop1", "pop2", "pop3"}
                and all(v["verdict"] == "healthy" and v["consecutive_successes"] >= 2 for v in views.values()))
    wait(ready, 30, 0.2, "every edge answering PRIMARY and 3 healthy POP views")
    say("cluster up: 3 control nodes, edges e1/pop1 e2/pop2 e3/pop3, check %s, failover set %s" % (hc, NAME))
    quiet_before = None
    if args.quiet_wait:
        quiet_before = edge_helper.quiet(args.quiet_wait)
        if quiet_before >= 0.10:
            say("WARNING: machine %.0f%% busy before measuring" % (quiet_before * 100))

    rng = random.Random(20261127)
    poller = Poller(dns_ports, period=args.period)
    runs = []
    for n in range(1, args.runs + 1):
        wait(ready, 60, 0.2, "run %d: every edge PRIMARY and 3 healthy views" % n)
        leader = cli(meridian, api_all, "cluster", "status").get("leader")
        # The kill lands at a random phase of the 1 s probe schedule (seeded: the same phases
        # every time the benchmark runs).
        phase = rng.random()
        time.sleep(phase)
        busy0 = edge_helper.cpu_busy()
        t0_wall = time.time()
        t0 = time.monotonic()
        ep.p.send_signal(signal.SIGKILL)
        ep.p.wait()
        killed_ms = (time.monotonic() - t0) * 1000

        def until(state, rel):
            since = [stays_since(state[e], "S") for e in state]
            if all(x is not None for x in since) and rel - max(since) >= args.hold:
                return "done"
            return "timeout" if rel > args.timeout else None
        outcome, state, counters = poller.run(t0, until)
        busy1 = edge_helper.cpu_busy()
        per_edge = {e: stays_since(state[e], "S") for e in sorted(state)}
        ok = outcome == "done"
        trans = []
        for i in (1, 2, 3):
            trans += [t for t, h in log_transitions(controls[i].text(), hc) if not h and t >= t0_wall - 0.5]
        committed = round(min(trans) - t0_wall, 3) if trans else None
        run = {"run": n, "leader": leader, "phase_s": round(phase, 3), "outcome": outcome,
               "kill_ms": round(killed_ms, 2),
               "per_edge_s": per_edge,
               "all_edges_s": max(per_edge.values()) if ok else None,
               "first_edge_s": min(per_edge.values()) if ok else None,
               "spread_s": round(max(per_edge.values()) - min(per_edge.values()), 4) if ok else None,
               "transition_logged_s": committed,
               "answer_changes": state, "queries": counters,
               "busy_frac": round((busy1[1] - busy0[1]) / max(1, busy1[0] - busy0[0]), 3)}
        runs.append(run)
        say("run %d/%d: every edge SECONDARY after %s s (per edge %s; leader logged the transition at %s s)%s" % (
            n, args.runs, run["all_edges_s"], per_edge, committed, "" if ok else " TIMEOUT"))
        ep = Proc("endpoint", endpoint_cmd, os.path.join(work, "endpoint.log")).start()
        wait(lambda: tcp_open(http_port), 10, what="HTTP endpoint restarted")
    good = [r["all_edges_s"] for r in runs if r["all_edges_s"] is not None]
    spreads = [r["spread_s"] for r in runs if r["spread_s"] is not None]
    per_edge_all = {e: [r["per_edge_s"][e] for r in runs if r["per_edge_s"].get(e) is not None] for e in dns_ports}
    logged = [r["transition_logged_s"] for r in runs if r["transition_logged_s"] is not None]
    prop = [r["all_edges_s"] - r["transition_logged_s"] for r in runs
            if r["all_edges_s"] is not None and r["transition_logged_s"] is not None]
    summary = {
        "runs": len(runs), "completed": len(good),
        "all_edges_p50_s": percentile(good, 50), "all_edges_p90_s": percentile(good, 90),
        "all_edges_max_s": max(good) if good else None, "all_edges_min_s": min(good) if good else None,
        "spread_p50_s": percentile(spreads, 50), "spread_max_s": max(spreads) if spreads else None,
        "per_edge_p50_s": {e: percentile(v, 50) for e, v in per_edge_all.items()},
        "per_edge_max_s": {e: (max(v) if v else None) for e, v in per_edge_all.items()},
        "transition_logged_p50_s": percentile(logged, 50), "transition_logged_max_s": max(logged) if logged else None,
        "after_transition_p50_s": round(percentile(prop, 50), 4) if prop else None,
        "after_transition_max_s": round(max(prop), 4) if prop else None,
        "target_s": TARGET_S,
        "pass": bool(good) and len(good) == len(runs) and max(good) <= TARGET_S,
        "pass_p90": bool(good) and len(good) == len(runs) and percentile(good, 90) <= TARGET_S,
    }
    out = {"commands": commands, "check": cfg, "check_id": hc, "poll_period_s": args.period,
           "hold_s": args.hold, "timeout_s": args.timeout, "quiet_before": quiet_before,
           "runs": runs, "summary": summary}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    stop_all()


# ---------------------------------------------------------------------------------------------
# Probe load


def load(args):
    meridian, work, base = args.meridian, args.work, args.port_base
    api_port, dns_port = base + 41, base + 42
    ports = [base + 50 + i for i in range(args.listeners)]
    api = "http://127.0.0.1:%d" % api_port
    clk = os.sysconf("SC_CLK_TCK")
    commands = []
    countfile = os.path.join(work, "accepted")
    cmd = [sys.executable, os.path.abspath(__file__), "tcp-serve", countfile] + [str(p) for p in ports]
    commands.append("python3 bench/failover_helper.py tcp-serve COUNTFILE %s   # asyncio listeners: accept, close"
                    % " ".join(map(str, ports)))
    Proc("listeners", cmd, os.path.join(work, "listeners.log")).start()
    for p in ports:
        wait(lambda p=p: tcp_open(p), 10, what="listener %d" % p)
    cmd = [meridian, "--api", api, "dev", "--data", os.path.join(work, "dev-data"),
           "--dns", "127.0.0.1:%d" % dns_port, "--pop", "load"]
    commands.append("meridian " + " ".join(cmd[1:]))
    dev = Proc("dev", cmd, os.path.join(work, "dev.log")).start()
    pid = dev.p.pid
    wait(lambda: tcp_open(api_port), 30, what="meridian dev API")
    wait(lambda: cli(meridian, api, "cluster", "status").get("leader"), 30, 0.2, "dev leader")

    def measure(seconds):
        c0, _ = edge_helper.cpu_ticks(pid)
        t0 = time.monotonic()
        rss = []
        while True:
            remaining = seconds - (time.monotonic() - t0)
            if remaining <= 0:
                break
            time.sleep(min(1.0, remaining))
            rss.append(edge_helper.mem(pid)["rss_kib"])
        c1, _ = edge_helper.cpu_ticks(pid)
        wall = time.monotonic() - t0
        return {"wall_s": round(wall, 3), "cpu_s": (c1 - c0) / clk, "cpu_pct": round(100.0 * (c1 - c0) / clk / wall, 2),
                "rss_kib_end": rss[-1] if rss else None, "rss_kib_max": max(rss) if rss else None}

    quiet_before = edge_helper.quiet(args.quiet_wait) if args.quiet_wait else None
    idle = measure(args.idle_seconds)
    say("idle meridian dev: %.2f%% CPU, RSS %d KiB" % (idle["cpu_pct"], idle["rss_kib_end"]))

    cfgdir = os.path.join(work, "checks")
    os.makedirs(cfgdir, exist_ok=True)

    def create(i):
        path = os.path.join(cfgdir, "hc%05d.json" % i)
        with open(path, "w") as f:
            json.dump({"Type": "TCP", "IPAddress": "127.0.0.1", "Port": ports[i % len(ports)],
                       "RequestInterval": args.interval, "FailureThreshold": 3}, f)
        return cli(meridian, api, "health", "create", "--config", path, "--caller-reference", "load-%05d" % i)["id"]
    t_create = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(create, range(args.checks)))
    create_s = time.monotonic() - t_create
    commands.append("meridian --api %s health create --config hcNNNNN.json --caller-reference load-NNNNN"
                    "   # x%d, TCP, RequestInterval %d, "
                    "FailureThreshold 3, over %d listeners" % (api, args.checks, args.interval, len(ports)))
    say("%d checks created in %.1f s" % (len(ids), create_s))

    def snapshot():
        lst = cli(meridian, api, "health", "list", timeout=120)
        out = {}
        for h in lst:
            v = next((p for p in h.get("pops", []) if p.get("pop") == "load"), None)
            out[h["id"]] = (h.get("status"), v)
        return out

    def all_probed():
        s = snapshot()
        n = sum(1 for i in ids if s.get(i, (None, None))[1])
        return n == len(ids)
    t_probe = time.monotonic()
    wait(all_probed, 120, 1.0, "every check probed once")
    first_probe_s = time.monotonic() - t_probe
    time.sleep(args.warmup)
    snap0 = snapshot()
    acc0 = open(countfile).read().split()
    m = measure(args.seconds)
    acc1 = open(countfile).read().split()
    snap1 = snapshot()
    accepted = int(acc1[0]) - int(acc0[0])
    acc_wall = float(acc1[1]) - float(acc0[1])
    grow = []
    failing = 0
    unhealthy = 0
    for i in ids:
        a, b = snap0.get(i, (None, None)), snap1.get(i, (None, None))
        va, vb = a[1] or {}, b[1] or {}
        grow.append(vb.get("consecutive_successes", 0) - va.get("consecutive_successes", 0))
        if vb.get("consecutive_failures", 0) > 0 or vb.get("last_ok") is False:
            failing += 1
        if (b[0] or "").startswith("unhealthy"):
            unhealthy += 1
    out = {
        "commands": commands, "checks": len(ids), "interval_s": args.interval, "listeners": len(ports),
        "seconds": args.seconds, "create_s": round(create_s, 1), "first_probe_all_s": round(first_probe_s, 1),
        "idle": idle, "loaded": m, "quiet_before": quiet_before,
        "accepted_connections": accepted, "accepted_per_s": round(accepted / acc_wall, 1) if acc_wall > 0 else None,
        "expected_per_s": len(ids) / args.interval,
        "successes_growth": {"checks_growing": sum(1 for g in grow if g > 0), "min": min(grow), "median": statistics.median(grow),
                             "max": max(grow)},
        "checks_failing_at_end": failing, "checks_unhealthy_at_end": unhealthy,
        "cpu_pct_over_idle": round(m["cpu_pct"] - idle["cpu_pct"], 2),
        # CPU above idle over the window, per connection the listeners accepted meanwhile.
        "cpu_ms_per_probe": round(1000.0 * (m["cpu_s"] - idle["cpu_pct"] / 100.0 * m["wall_s"]) / max(1, accepted), 4),
    }
    say("loaded: %.1f%% CPU (idle %.1f%%), RSS %d KiB (idle %d), %s probes/s accepted, successes grew by median %s"
        % (m["cpu_pct"], idle["cpu_pct"], m["rss_kib_end"], idle["rss_kib_end"], out["accepted_per_s"],
           out["successes_growth"]["median"]))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    stop_all()


# ---------------------------------------------------------------------------------------------
# Results


def assemble(resdir, meta_path, out_path):
    meta = {}
    with open(meta_path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    out = {"meta": meta}
    for part in ("failover", "load"):
        p = os.path.join(resdir, part + ".json")
        if os.path.exists(p):
            with open(p) as f:
                out[part] = json.load(f)
    with open(out_path, "w") as f:
        json.dump(out, f, indent=2)


def fs(v, digits=2):
    return "–" if v is None else ("%.*f" % (digits, v))


def report(results_path, out_md):
    with open(results_path) as f:
        r = json.load(f)
    meta = r["meta"]
    smoke = meta.get("smoke") == "1"
    L = []
    L.append("# Health-check failover%s" % (" — SMOKE RUN (small settings: not a result)" if smoke else ""))
    L.append("")
    L.append("Command:")
    L.append("")
    L.append("```")
    L.append(meta.get("command", "bench/failover.sh"))
    L.append("```")
    L.append("")
    L.append("%s; meridian %s; %s CPUs (%s), kernel %s; total %s s." % (
        meta.get("date"), meta.get("meridian_version"), meta.get("nproc"), meta.get("cpu_model"),
        meta.get("kernel"), meta.get("total_s")))
    if smoke:
        L.append("")
        L.append("**SMOKE**: %s. Run `bench/failover.sh` with the defaults for the figures." % meta.get("smoke_why"))
    warnings = []
    for part in ("failover", "load"):
        q = (r.get(part) or {}).get("quiet_before")
        if q is not None and q >= 0.10:
            warnings.append("the whole machine was %.0f%% busy before the %s part's measurement, after waiting "
                            "for quiet (the part's own idle processes use about 1%%): its figures are disturbed "
                            "(a concurrent build?); rerun on a quiet machine"
                            % (100 * q, part))
    busy = [x["busy_frac"] for x in (r.get("failover") or {}).get("runs", [])]
    if busy and max(busy) > 0.5:
        warnings.append("during failover runs the whole machine was up to %.0f%% busy (the benchmark's own "
                        "processes use a few %%)" % (100 * max(busy)))
    if warnings:
        for w in warnings:
            L.append("")
            L.append("**Warning**: %s." % w)
    fo = r.get("failover")
    if fo:
        s = fo["summary"]
        L.append("")
        L.append("## Failover time: endpoint dies → every edge answers the secondary")
        L.append("")
        L.append("Processes (ports from `BENCH_PORT_BASE`):")
        L.append("")
        L.append("```")
        L.extend(fo["commands"])
        L.append("```")
        L.append("")
        L.append("The endpoint process is SIGKILLed at t0 (after a seeded random 0–1 s wait, so t0 falls at "
                 "any phase of the 1 s probe schedule); a UDP client queries `%s A` on all three edges every "
                 "%d ms; an edge's time is when it first answered the secondary and then kept answering it "
                 "until every edge had for %.1f s. Between runs the endpoint is restarted and the next run "
                 "waits for every edge to answer the primary again." % (NAME, round(fo["poll_period_s"] * 1000),
                                                                       fo["hold_s"]))
        L.append("")
        verdict = "PASS" if s["pass"] else "FAIL"
        L.append("| figure | value |")
        L.append("| --- | --- |")
        L.append("| runs (completed) | %d (%d) |" % (s["runs"], s["completed"]))
        L.append("| every edge answers the secondary: p50 / p90 / max | **%s / %s / %s s** |" % (
            fs(s["all_edges_p50_s"]), fs(s["all_edges_p90_s"]), fs(s["all_edges_max_s"])))
        L.append("| target (interval 1 s, FailureThreshold 2) | ≤ %.1f s: %s (max), %s (p90) |" % (
            s["target_s"], verdict, "PASS" if s["pass_p90"] else "FAIL"))
        L.append("| per-edge spread (last edge − first edge): p50 / max | %s / %s ms |" % (
            fs(s["spread_p50_s"] * 1000 if s["spread_p50_s"] is not None else None, 0),
            fs(s["spread_max_s"] * 1000 if s["spread_max_s"] is not None else None, 0)))
        L.append("| per edge p50 (max) | %s |" % ", ".join(
            "%s %s (%s) s" % (e, fs(s["per_edge_p50_s"][e]), fs(s["per_edge_max_s"][e])) for e in sorted(s["per_edge_p50_s"])))
        L.append("| leader's \"health transition\" log line after t0: p50 / max | %s / %s s |" % (
            fs(s["transition_logged_p50_s"]), fs(s["transition_logged_max_s"])))
        L.append("| from that line to the last edge answering: p50 / max | %s / %s ms |" % (
            fs(s["after_transition_p50_s"] * 1000 if s["after_transition_p50_s"] is not None else None, 0),
            fs(s["after_transition_max_s"] * 1000 if s["after_transition_max_s"] is not None else None, 0)))
        L.append("")
        L.append("| run | leader | phase s | e1 s | e2 s | e3 s | all s | spread ms | transition logged s | machine busy (all processes) | queries sent / answered |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for x in fo["runs"]:
            pe = x["per_edge_s"]
            L.append("| %d | %s | %.2f | %s | %s | %s | %s | %s | %s | %.0f%% | %d / %d |" % (
                x["run"], x["leader"], x["phase_s"], fs(pe.get("e1"), 3), fs(pe.get("e2"), 3), fs(pe.get("e3"), 3),
                fs(x["all_edges_s"], 3), fs(x["spread_s"] * 1000 if x["spread_s"] is not None else None, 0),
                fs(x["transition_logged_s"], 3), 100 * x["busy_frac"], x["queries"]["sent"], x["queries"]["answered"]))
        L.append("")
        L.append("The transition time is read from the leader's log line (printed when the Raft write "
                 "returns, wall clock, µs); t0 is the wall clock just before the SIGKILL. A failover "
                 "needs 2 failed probes: the first lands 0–1 s after t0 (the phase), the second 1 s "
                 "later, so about 1–2 s plus reporting, the leader's decision, the Raft commit and the "
                 "catalog stream to the edges.")
    ld = r.get("load")
    if ld:
        L.append("")
        L.append("## Probe load: one edge, %d checks at %d s intervals" % (ld["checks"], ld["interval_s"]))
        L.append("")
        L.append("```")
        L.extend(ld["commands"])
        L.append("```")
        L.append("")
        g = ld["successes_growth"]
        L.append("| figure | value |")
        L.append("| --- | --- |")
        L.append("| meridian dev CPU with the checks (%d s, utime+stime from /proc/PID/stat) | **%s%% of one core** |" % (
            ld["seconds"], fs(ld["loaded"]["cpu_pct"], 1)))
        L.append("| the same process idle, before the checks (%d s) | %s%% |" % (
            round(ld["idle"]["wall_s"]), fs(ld["idle"]["cpu_pct"], 1)))
        L.append("| difference, per probe | %s%% of a core; %s ms CPU per probe |" % (
            fs(ld["cpu_pct_over_idle"], 1), fs(ld["cpu_ms_per_probe"], 3)))
        L.append("| RSS with the checks (end / max) | **%s / %s MiB** |" % (
            fs(ld["loaded"]["rss_kib_end"] / 1024, 1), fs(ld["loaded"]["rss_kib_max"] / 1024, 1)))
        L.append("| RSS idle | %s MiB |" % fs(ld["idle"]["rss_kib_end"] / 1024, 1))
        L.append("| connections the listeners accepted per second (expected %s) | %s |" % (
            fs(ld["expected_per_s"], 0), fs(ld["accepted_per_s"], 1)))
        L.append("| checks whose consecutive_successes grew during the window | %d of %d (growth min %s, median %s, max %s) |" % (
            g["checks_growing"], ld["checks"], g["min"], g["median"], g["max"]))
        L.append("| checks failing / unhealthy at the end | %d / %d |" % (ld["checks_failing_at_end"], ld["checks_unhealthy_at_end"]))
        L.append("| time to create the checks (8 CLI calls in parallel) / until every check had a result | %s s / %s s |" % (
            ld["create_s"], ld["first_probe_all_s"]))
        L.append("")
        L.append("The process is the whole `meridian dev`: its edge (scheduling, connecting, reporting "
                 "every result) and its control node (receiving the reports, feeding the per-POP views, "
                 "the once-a-second decision pass over every check) share one tokio runtime, so the "
                 "figure is both together. The listeners run in their own process and are not counted.")
    with open(out_md, "w") as f:
        f.write("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("http-serve")
    p.add_argument("port", type=int)
    p = sub.add_parser("tcp-serve")
    p.add_argument("countfile")
    p.add_argument("ports", type=int, nargs="+")
    for name in ("failover", "load"):
        p = sub.add_parser(name)
        p.add_argument("--meridian", required=True)
        p.add_argument("--work", required=True)
        p.add_argument("--port-base", type=int, required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--quiet-wait", type=float, default=0)
        if name == "failover":
            p.add_argument("--runs", type=int, default=10)
            p.add_argument("--period", type=float, default=0.01)
            p.add_argument("--hold", type=float, default=1.0)
            p.add_argument("--timeout", type=float, default=20.0)
        else:
            p.add_argument("--checks", type=int, default=1000)
            p.add_argument("--interval", type=int, default=1)
            p.add_argument("--seconds", type=float, default=30)
            p.add_argument("--idle-seconds", type=float, default=10)
            p.add_argument("--warmup", type=float, default=5)
            p.add_argument("--listeners", type=int, default=4)
    p = sub.add_parser("assemble")
    p.add_argument("resdir")
    p.add_argument("meta")
    p.add_argument("out")
    p = sub.add_parser("report")
    p.add_argument("results")
    p.add_argument("out")
    a = ap.parse_args()
    if a.cmd == "http-serve":
        http_serve(a.port)
    elif a.cmd == "tcp-serve":
        tcp_serve(a.countfile, a.ports)
    elif a.cmd in ("failover", "load"):
        def on_signal(signum, _frame):
            raise KeyboardInterrupt("signal %d" % signum)
        signal.signal(signal.SIGTERM, on_signal)
        try:
            (failover if a.cmd == "failover" else load)(a)
        except Fail as e:
            say("ERROR: %s" % e)
            return 1
        finally:
            stop_all()
    elif a.cmd == "assemble":
        assemble(a.resdir, a.meta, a.out)
    elif a.cmd == "report":
        report(a.results, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
