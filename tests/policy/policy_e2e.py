#!/usr/bin/env python3
"""End-to-end test of Route 53 routing policies through the real control plane, catalog stream
and edge: `meridian dev` (one control node + one edge in one process), driven by the real CLI
and queried with dig (EDNS Client Subnet with +subnet).

    python3 tests/policy/policy_e2e.py --meridian target/release/meridian [--only NAMES] [--keep] [-v]

Setup: a test GeoIP2-City-like database (make_test_mmdb.py; its table of networks is what the
geo expectations below rest on), `meridian dev --geoip-db DB --pop fra --region-rtt
us-east-1=90,eu-west-1=12,ap-southeast-2=250`, zone policy.test., a TCP listener on loopback
that every health check points at (so a check is healthy whether or not the edge probes it;
`health set-status` overrides it), one health check per placeholder of each batch file in
batches/ (placeholders such as "HC_PRIMARY" are replaced with the real ids, per file).

Scenarios (names for --only):
  simple        a plain A set: answered, ECS echoed with scope 0
  weighted      300 queries follow the 3:1 weights, the weight-0 set never answers; its check
                unhealthy -> the heavy set disappears; back to auto -> it returns; explain
  failover      PRIMARY; set-status unhealthy -> SECONDARY; healthy -> PRIMARY; unhealthy,
                auto -> PRIMARY; both unhealthy -> PRIMARY (fail open); explain
  failclosed    "FailClosed": true on both sets, both unhealthy -> NODATA (NOERROR, no answer)
  multivalue    <= 8 records per answer, all 10 seen over 30 answers; 2 then 3 unhealthy ->
                exactly the healthy ones, never an unhealthy one
  latency       eu-west-1's record (12 ms, lowest in this POP's table); explain --pop fra
  geolocation   ECS 198.51.100.0/24 -> EU, 203.0.113.0/24 -> US-WA, 192.0.2.0/24 -> AU,
                2001:db8:1::/48 (FR) -> EU, no ECS (127.0.0.1 = US-NY) -> default, ECS /0 ->
                default; reply ECS scope = source prefix for geo answers; explain
  geoproximity  nearest by biased distance (Berlin set has bias +70: Seattle goes to Berlin,
                New York to us-east-1, Sydney to ap-southeast-2); explain
  cidr          collection office-nets (cidr create/add/list): 198.51.100.0/25 and
                2001:db8:1::/48 -> berlin, others -> *, a block added later takes effect
  alias         alias at the apex to the weighted www: A records under the apex name,
                following the target's health
  composition   geolocation -> failover -> weighted (aliases), health at the middle level
  validation    bad batches refused (non-zero exit, the error names the problem, zone
                version unchanged): two PRIMARY, duplicate SetIdentifier, Weight 256, unknown
                HealthCheckId, missing alias target, alias cycle, mixed policies, bias 100,
                unknown CIDR collection
  cc0           a second `meridian dev` with the real CC0 country database
                (fetch_cc0_mmdb.sh): one geolocation set per country for three well-known
                addresses in three countries; ECS /24 of each gets its country's answer

Waits are polls with deadlines (a health verdict or a change reaches the edge through the
catalog stream); no fixed sleep decides a result. Every process is killed at exit, output in
log files in the temporary directory, whose tails are printed on failure.

Exit status 0 when every check passes, 1 otherwise. Exit 0 with a "SKIP" line only when the
Python packages for the test database (mmdb-writer, maxminddb) cannot be installed; when npm
cannot be installed only the cc0 scenario is skipped (a "SKIP" line). Needs dig.
"""
import argparse
import copy
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

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BATCHES = os.path.join(HERE, "batches")
ZONE = "policy.test."
POP = "fra"
REGION_RTT = "us-east-1=90,eu-west-1=12,ap-southeast-2=250"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

sys.path.insert(0, HERE)
import make_test_mmdb  # noqa: E402  (this directory)

VERBOSE = False
results = []          # (name, ok)


def log(msg=""):
    print(msg, flush=True)


def check(name, ok, detail=""):
    results.append((name, bool(ok)))
    log("%s  %s" % ("PASS" if ok else "FAIL", name))
    if detail and (not ok or VERBOSE):
        for line in str(detail).rstrip().splitlines()[:60]:
            log("        " + line)
    return bool(ok)


def info(msg):
    log("INFO  " + msg)


class Abort(Exception):
    """A precondition of the rest of the run failed."""


class ScenarioStop(Exception):
    """A precondition of the rest of one scenario failed (already reported as a FAIL)."""


def require(name, ok, detail=""):
    if not check(name, ok, detail):
        raise Abort(name)


def wait_for(fn, timeout, interval=0.1):
    """Polls fn() until it returns a truthy value or the deadline passes: (value, elapsed)."""
    start = time.monotonic()
    deadline = start + timeout
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


# --- ports and processes ---------------------------------------------------------------------

_ports_taken = set()


def free_port():
    """A port free for TCP and UDP on 127.0.0.1, below the ephemeral range."""
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


_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: the child gets SIGKILL if this test process dies (even by SIGKILL).
    _libc.prctl(1, signal.SIGKILL)


# The CLI prints an anyhow backtrace under RUST_BACKTRACE=1; test what users see by default.
CHILD_ENV = {k: v for k, v in os.environ.items()
             if k not in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE", "RUST_LOG", "MERIDIAN_API")}

ALL_PROCS = []


class Proc:
    def __init__(self, name, args, logpath):
        self.name, self.args, self.logpath = name, args, logpath
        self.p = None

    def start(self):
        with open(self.logpath, "ab") as f:
            f.write(("=== start %s: %s\n" % (time.strftime("%H:%M:%S"), " ".join(self.args))).encode())
        logf = open(self.logpath, "ab")
        self.p = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=logf,
                                  stderr=subprocess.STDOUT, env=CHILD_ENV,
                                  preexec_fn=_die_with_parent)
        logf.close()
        ALL_PROCS.append(self)
        return self

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if not self.alive():
            return self.p.returncode if self.p else None
        self.p.send_signal(sig)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return None

    def tail(self, n=30):
        try:
            with open(self.logpath, "rb") as f:
                return ANSI.sub("", f.read().decode("utf-8", "replace")).splitlines()[-n:]
        except OSError:
            return []


def kill_all():
    for p in ALL_PROCS:
        if p.alive():
            try:
                p.p.kill()
                p.p.wait(5)
            except Exception:  # noqa: BLE001
                pass


class HealthTarget:
    """A TCP listener on loopback that accepts and closes: what every health check points at,
    so that a check is healthy if the edge probes it (and set-status decides otherwise)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
                conn.close()
            except OSError:
                continue

    def stop(self):
        self.stopped = True
        self.sock.close()


# --- CLI -------------------------------------------------------------------------------------

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
            " ".join(self.cmd), self.rc, self.out.strip()[:3000], self.err.strip()[:2000])


# --- dig -------------------------------------------------------------------------------------

ECS_LINE = re.compile(r"^; CLIENT-SUBNET: (\S+)/(\d+)/(\d+)\s*$", re.M)


class Dig:
    """One reply as dig printed it."""

    def __init__(self, text, ok=True):
        self.raw = text
        self.ok = ok and ";; Got answer:" in text
        m = re.search(r"status: (\w+)", text)
        self.status = m.group(1) if m else None
        m = re.search(r";; flags: ([a-z ]*)[;]", text)
        self.flags = set(m.group(1).split()) if m else set()
        self.answers = []        # (owner, ttl, type, rdata)
        in_answer = False
        for line in text.splitlines():
            s = line.strip()
            if s.startswith(";; ANSWER SECTION"):
                in_answer = True
                continue
            if in_answer:
                if not s or s.startswith(";"):
                    in_answer = False
                    continue
                p = s.split(None, 4)
                if len(p) == 5:
                    self.answers.append((p[0].lower(), int(p[1]), p[3], p[4]))
        m = ECS_LINE.search(text)
        self.ecs = (m.group(1), int(m.group(2)), int(m.group(3))) if m else None

    def values(self, rtype="A"):
        return tuple(sorted(a[3] for a in self.answers if a[2] == rtype))

    @property
    def scope(self):
        return self.ecs[2] if self.ecs else None

    def owners(self):
        return {a[0] for a in self.answers}

    def brief(self):
        return "%s %s ecs=%s" % (self.status, list(self.values()) or [a[2] + " " + a[3] for a in self.answers],
                                 "%s/%s/%s" % self.ecs if self.ecs else None)

    def __str__(self):
        return self.raw.strip()


def dig_cmd(port, subnet):
    cmd = ["dig", "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", "+norec"]
    if subnet:
        cmd.append("+subnet=" + subnet)
    return cmd


def dig(port, name, rtype="A", subnet=None):
    cmd = dig_cmd(port, subnet) + [name, rtype]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return Dig(p.stdout + p.stderr, p.returncode == 0)
    except subprocess.TimeoutExpired as e:
        return Dig("timeout: %s" % e, False)


def dig_many(port, name, count, rtype="A", subnet=None):
    """`count` queries from one dig process (options before the first name apply to all)."""
    cmd = dig_cmd(port, subnet) + [name, rtype] * count
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30 + count * 0.1)
        text = p.stdout
    except subprocess.TimeoutExpired as e:
        return [Dig("timeout: %s" % e, False)]
    return [Dig(";; Got answer:" + part) for part in text.split(";; Got answer:")[1:]]


# --- the dev instance ------------------------------------------------------------------------

class Dev:
    def __init__(self, name, meridian, tmp, geoip_db):
        self.name, self.meridian, self.tmp, self.geoip_db = name, meridian, tmp, geoip_db
        self.api_port = free_port()
        self.dns_port = free_port()
        self.data = os.path.join(tmp, "data-" + name)
        self.api = "http://127.0.0.1:%d" % self.api_port
        args = [meridian, "--api", self.api, "dev", "--data", self.data,
                "--dns", "127.0.0.1:%d" % self.dns_port, "--geoip-db", geoip_db,
                "--pop", POP, "--region-rtt", REGION_RTT]
        self.proc = Proc(name, args, os.path.join(tmp, name + ".log"))
        self.files = 0

    def start(self):
        self.proc.start()

        def up():
            if not self.proc.alive():
                return "exited"
            if not tcp_open(self.api_port):
                return None
            d = dig(self.dns_port, "probe.invalid.", "A")
            return "up" if d.ok else None
        state, took = wait_for(up, 30, 0.1)
        require("%s: meridian dev serves the API on :%d and DNS on :%d (%.1f s)" % (
            self.name, self.api_port, self.dns_port, took), state == "up", "\n".join(self.proc.tail()))

    def cli(self, *args, out_json=False, timeout=40):
        cmd = [self.meridian, "--api", self.api]
        if out_json:
            cmd += ["--output", "json"]
        cmd += [str(a) for a in args]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                               env=CHILD_ENV, stdin=subprocess.DEVNULL)
            return CliResult(cmd, p.returncode, p.stdout, p.stderr)
        except subprocess.TimeoutExpired:
            return CliResult(cmd, -1, "", "timeout after %s s" % timeout)

    def write(self, stem, obj):
        self.files += 1
        path = os.path.join(self.tmp, "%s-%02d-%s.json" % (self.name, self.files, re.sub(r"[^\w.-]", "_", stem)))
        with open(path, "w") as f:
            json.dump(obj, f, indent=2)
        return path

    def dig(self, name, rtype="A", subnet=None):
        return dig(self.dns_port, name, rtype, subnet)

    def dig_many(self, name, count, rtype="A", subnet=None):
        return dig_many(self.dns_port, name, count, rtype, subnet)

    def zone_create(self):
        def create():
            r = self.cli("zone", "create", ZONE, out_json=True)
            return r if r.ok else None
        r, took = wait_for(create, 30, 0.5)
        require("%s: zone create %s (%.1f s)" % (self.name, ZONE, took), r,
                self.cli("zone", "create", ZONE, out_json=True))
        d, took = wait_for(lambda: (lambda d: d if d.status == "NOERROR" and d.values("SOA") else None)(
            self.dig(ZONE, "SOA")), 20)
        require("%s: the edge answers %s SOA (%.1f s)" % (self.name, ZONE, took), d, self.dig(ZONE, "SOA"))

    def zone_version(self):
        r = self.cli("zone", "get", ZONE, out_json=True)
        if r.ok and isinstance(r.json, list) and r.json:
            return r.json[0].get("version")
        return None

    def apply(self, title, batch, stem):
        """record apply + change wait; returns the CliResult of the apply."""
        path = self.write(stem, batch)
        r = self.cli("record", "apply", ZONE, "--file", path, out_json=True)
        if not check("%s: record apply %s" % (self.name, title), r.ok and isinstance(r.json, dict)
                     and r.json.get("id"), r):
            return r
        w = self.cli("change", "wait", r.json["id"], "--timeout", 30, out_json=True, timeout=50)
        check("%s:   change wait %s -> INSYNC" % (self.name, r.json["id"]),
              w.ok and isinstance(w.json, dict) and w.json.get("status") == "INSYNC", w)
        return r

    def set_status(self, hc_id, status, label=""):
        r = self.cli("health", "set-status", hc_id, status)
        check("%s: health set-status %s %s %s" % (self.name, label or hc_id, hc_id if label else "", status), r.ok, r)
        return r

    def explain(self, name, *args):
        return self.cli("explain", name, "A", *args)


# --- helpers for expectations ----------------------------------------------------------------

def wait_values(dev, name, want, subnet=None, timeout=20, title=None):
    """Polls until `name A` (with ECS `subnet`) answers exactly the values `want`."""
    want = tuple(sorted(want))
    last = {}

    def probe():
        d = dev.dig(name, "A", subnet)
        last["d"] = d
        return d if d.status == "NOERROR" and d.values() == want else None
    d, took = wait_for(probe, timeout, 0.1)
    title = title or "%s A%s -> %s" % (name, " +subnet=" + subnet if subnet else "", " ".join(want))
    check("%s (%.1f s)" % (title, took), d, last.get("d"))
    return d


def wait_sample(dev, name, pred, n=10, subnet=None, timeout=20, title=""):
    """Polls until n queries in a row all satisfy pred(Dig) (for answers drawn at random)."""
    last = {}

    def probe():
        ds = dev.dig_many(name, n, subnet=subnet)
        last["ds"] = ds
        return ds if len(ds) == n and all(pred(d) for d in ds) else None
    ds, took = wait_for(probe, timeout, 0.1)
    detail = "\n".join(d.brief() for d in last.get("ds", [])[:20])
    check("%s (%.1f s)" % (title, took), ds, detail)
    return ds


def explain_check(dev, title, name, args, chosen, also=()):
    """explain prints a "chose ..." line naming `chosen`, and mentions every string of `also`."""
    r = dev.explain(name, *args)
    text = (r.out + r.err).lower()
    chose_line = any("chose" in ln and chosen.lower() in ln for ln in text.splitlines())
    missing = [a for a in also if a.lower() not in text]
    check("explain %s: chose %s%s" % (" ".join([name] + list(args)), chosen,
                                         ", mentions " + ", ".join(also) if also else ""),
          r.ok and chose_line and not missing, "%s\n(missing: %s, chose line: %s)" % (r, missing, chose_line))
    return r


def load_batch(stem):
    with open(os.path.join(BATCHES, stem + ".json")) as f:
        return json.load(f)


def rrsets(batch):
    return [c["ResourceRecordSet"] for c in batch["Changes"]]


def placeholders(batch):
    return sorted({r["HealthCheckId"] for r in rrsets(batch) if "HealthCheckId" in r})


def substitute(batch, hc_ids, collection_id=None):
    """A copy of the batch with health check placeholders (and the CIDR collection) replaced."""
    b = copy.deepcopy(batch)
    for r in rrsets(b):
        if "HealthCheckId" in r:
            hc = r["HealthCheckId"]
            if hc not in hc_ids:
                raise KeyError("no health check created for placeholder %s" % hc)
            r["HealthCheckId"] = hc_ids[hc]
        if collection_id and "CidrRoutingConfig" in r:
            r["CidrRoutingConfig"]["CollectionId"] = collection_id
    return b


def rrset(name, sid=None, values=(), ttl=60, **kw):
    r = {"Name": name, "Type": "A"}
    if sid:
        r["SetIdentifier"] = sid
    r.update(kw)
    if values:
        r["TTL"] = ttl
        r["ResourceRecords"] = [{"Value": v} for v in values]
    return r


def batch_of(comment, *sets):
    return {"Comment": comment, "Changes": [{"Action": "UPSERT", "ResourceRecordSet": s} for s in sets]}


# --- the test --------------------------------------------------------------------------------

class T:
    """What the scenarios share."""

    def __init__(self, meridian, tmp):
        self.meridian, self.tmp = meridian, tmp
        self.dev = None
        self.target = None
        self.hc = {}           # batch stem -> {placeholder: id}

    def health_create(self, label):
        cfg = {"Type": "TCP", "IPAddress": "127.0.0.1", "Port": self.target.port,
               "RequestInterval": 10, "FailureThreshold": 3}
        path = self.dev.write("hc-" + label, cfg)
        r = self.dev.cli("health", "create", "--config", path, out_json=True)
        hc_id = r.json.get("id") if isinstance(r.json, dict) else None
        check("health create (%s) --output json -> id %s" % (label, hc_id), r.ok and isinstance(hc_id, str) and hc_id, r)
        if not hc_id:
            raise ScenarioStop("health create")
        return hc_id

    def batch(self, stem, extra=()):
        """The batch file with a fresh health check for each of its placeholders."""
        b = load_batch(stem)
        ids = self.hc.setdefault(stem, {})
        for ph in list(placeholders(b)) + list(extra):
            if ph not in ids:
                ids[ph] = self.health_create("%s/%s" % (stem, ph))
        return substitute(b, ids)


def sc_simple(t):
    dev = t.dev
    r = dev.cli("record", "upsert", ZONE, "plain", "A", "10.0.0.1", "--ttl", 60, out_json=True)
    check("record upsert plain A 10.0.0.1", r.ok, r)
    wait_values(dev, "plain.policy.test.", ["10.0.0.1"])
    d = dev.dig("plain.policy.test.", "A", "198.51.100.7/24")
    check("plain (no policy) +subnet=198.51.100.7/24: answered, ECS echoed 198.51.100.0/24 with scope 0",
          d.values() == ("10.0.0.1",) and d.ecs == ("198.51.100.0", 24, 0), d)
    d = dev.dig("plain.policy.test.", "A")
    check("plain without ECS: no ECS option in the reply", d.values() == ("10.0.0.1",) and d.ecs is None, d)


def sc_weighted(t):
    dev = t.dev
    name = "www.policy.test."
    heavy, light, zero = "10.1.0.1", "10.1.0.2", "10.1.0.3"
    b = t.batch("weighted")
    hc = t.hc["weighted"]["HC_PRIMARY"]
    dev.apply("weighted.json (w-heavy 30 + HC, w-light 10, w-zero 0)", b, "weighted")
    wait_sample(dev, name, lambda d: d.values() in ((heavy,), (light,)), n=3,
                title="www answers one of w-heavy, w-light")
    ds = dev.dig_many(name, 300)
    got = [d.values() for d in ds]
    counts = {v: sum(1 for g in got if g == (v,)) for v in (heavy, light, zero)}
    single = sum(1 for d in ds if d.status == "NOERROR" and len(d.values()) == 1)
    check("300 queries: 300 replies, each NOERROR with exactly one A", len(ds) == 300 and single == 300,
          "replies %d, single %d; %s" % (len(ds), single, "\n".join(d.brief() for d in ds if len(d.values()) != 1)[:2000]))
    check("300 queries: the weight-0 set w-zero never answers while the others are healthy (%d)" % counts[zero],
          counts[zero] == 0, counts)
    ttls = sorted({a[1] for d in ds for a in d.answers})
    check("300 queries: answers carry the sets' TTL 60 (%s)" % ttls, ttls == [60], ttls)
    share = counts[heavy] / float(max(1, counts[heavy] + counts[light]))
    check("300 queries: w-heavy:w-light is 3:1 -> heavy share %.2f within 0.50..0.90" % share,
          0.5 <= share <= 0.9, counts)
    scopes = {d.scope for d in dev.dig_many(name, 3, subnet="198.51.100.7/24")}
    info("weighted answer with ECS /24: reply scopes %s (not client-dependent: 0 would be ideal)" % sorted(map(str, scopes)))
    explain_check(dev, "weighted", name, [], "w-", also=("w-heavy", "w-light"))

    dev.set_status(hc, "unhealthy", "weighted HC_PRIMARY")
    wait_sample(dev, name, lambda d: d.values() == (light,), n=20,
                title="w-heavy unhealthy: 20 answers in a row are w-light")
    ds = dev.dig_many(name, 100)
    bad = [d.brief() for d in ds if d.values() != (light,)]
    check("w-heavy unhealthy: 100 more answers, all w-light (never w-heavy, never w-zero)",
          len(ds) == 100 and not bad, "\n".join(bad[:20]))
    explain_check(dev, "weighted", name, [], "w-light", also=("unhealthy",))
    dev.set_status(hc, "auto", "weighted HC_PRIMARY")
    wait_sample(dev, name, lambda d: d.values() in ((heavy,), (light,)), n=1,
                title="w-heavy back to auto: www still answers")
    ds, took = wait_for(lambda: (lambda ds: ds if any(d.values() == (heavy,) for d in ds) else None)(
        dev.dig_many(name, 20)), 20)
    check("w-heavy back to auto: w-heavy answers again (%.1f s)" % took, ds)


def sc_failover(t):
    dev = t.dev
    name = "failover.policy.test."
    primary, secondary = "10.2.0.1", "10.2.0.2"
    b = t.batch("failover")
    hp, hs = t.hc["failover"]["HC_PRIMARY"], t.hc["failover"]["HC_SECONDARY"]
    dev.apply("failover.json (PRIMARY + HC_PRIMARY, SECONDARY + HC_SECONDARY)", b, "failover")
    wait_values(dev, name, [primary], title="failover answers PRIMARY")
    dev.set_status(hp, "unhealthy", "HC_PRIMARY")
    wait_values(dev, name, [secondary], title="PRIMARY unhealthy -> SECONDARY")
    ds = dev.dig_many(name, 20)
    check("  … 20 answers in a row: SECONDARY", len(ds) == 20 and all(d.values() == (secondary,) for d in ds),
          "\n".join(d.brief() for d in ds))
    explain_check(dev, "failover", name, [], "fo-secondary", also=("fo-primary", "unhealthy"))
    dev.set_status(hp, "healthy", "HC_PRIMARY")
    wait_values(dev, name, [primary], title="PRIMARY set healthy -> PRIMARY")
    explain_check(dev, "failover", name, [], "fo-primary")
    dev.set_status(hp, "unhealthy", "HC_PRIMARY")
    wait_values(dev, name, [secondary], title="PRIMARY unhealthy again -> SECONDARY")
    dev.set_status(hp, "auto", "HC_PRIMARY")
    wait_values(dev, name, [primary], timeout=30, title="PRIMARY back to auto -> PRIMARY")
    # Fail open (Route 53's default): both unhealthy -> answer as if all were healthy.
    dev.set_status(hp, "unhealthy", "HC_PRIMARY")
    wait_values(dev, name, [secondary], title="fail open: PRIMARY unhealthy -> SECONDARY")
    dev.set_status(hs, "unhealthy", "HC_SECONDARY")
    wait_values(dev, name, [primary], title="fail open: both unhealthy -> PRIMARY answers")
    explain_check(dev, "failover", name, [], "fo-primary", also=("open",))
    dev.set_status(hp, "auto", "HC_PRIMARY")
    dev.set_status(hs, "auto", "HC_SECONDARY")
    wait_values(dev, name, [primary], title="both back to auto -> PRIMARY")


def sc_failclosed(t):
    dev = t.dev
    name = "fc.policy.test."
    primary, secondary = "10.9.0.1", "10.9.0.2"
    ids = t.hc.setdefault("failclosed", {})
    for ph in ("HC_FC_PRIMARY", "HC_FC_SECONDARY"):
        ids[ph] = t.health_create("failclosed/" + ph)
    b = batch_of("Failover with our FailClosed extension on every set of the group",
                 rrset(name, "fc-primary", [primary], Failover="PRIMARY",
                       HealthCheckId=ids["HC_FC_PRIMARY"], FailClosed=True),
                 rrset(name, "fc-secondary", [secondary], Failover="SECONDARY",
                       HealthCheckId=ids["HC_FC_SECONDARY"], FailClosed=True))
    dev.apply("fail-closed failover group (\"FailClosed\": true)", b, "failclosed")
    wait_values(dev, name, [primary], title="fail-closed group answers PRIMARY")
    dev.set_status(ids["HC_FC_PRIMARY"], "unhealthy", "HC_FC_PRIMARY")
    wait_values(dev, name, [secondary], title="fail-closed: PRIMARY unhealthy -> SECONDARY")
    dev.set_status(ids["HC_FC_SECONDARY"], "unhealthy", "HC_FC_SECONDARY")

    def nodata():
        d = dev.dig(name)
        return d if d.status == "NOERROR" and not d.answers else None
    d, took = wait_for(nodata, 20)
    check("fail-closed: both unhealthy -> NODATA (NOERROR, empty answer) (%.1f s)" % took, d, dev.dig(name))
    if d:
        check("  … with AA and the zone's SOA in the authority section",
              "aa" in d.flags and re.search(r"AUTHORITY SECTION:\s*\n\s*policy\.test\.\s+\d+\s+IN\s+SOA", d.raw), d)
        ds = dev.dig_many(name, 10)
        check("  … 10 more queries: all NODATA", len(ds) == 10 and all(x.status == "NOERROR" and not x.answers for x in ds),
              "\n".join(x.brief() for x in ds))
    dev.set_status(ids["HC_FC_PRIMARY"], "auto", "HC_FC_PRIMARY")
    wait_values(dev, name, [primary], timeout=30, title="fail-closed: PRIMARY back to auto -> PRIMARY")
    dev.set_status(ids["HC_FC_SECONDARY"], "auto", "HC_FC_SECONDARY")


def sc_multivalue(t):
    dev = t.dev
    name = "mv.policy.test."
    allv = {"10.3.0.%d" % i for i in range(1, 11)}
    b = t.batch("multivalue")
    ids = t.hc["multivalue"]
    dev.apply("multivalue.json (10 sets, mv-1..3 with health checks)", b, "multivalue")
    wait_sample(dev, name, lambda d: d.values() and set(d.values()) <= allv, n=1,
                title="mv answers records of the group")
    ds = dev.dig_many(name, 30)
    bad = [d.brief() for d in ds if not (1 <= len(d.values()) <= 8 and set(d.values()) <= allv
                                         and len(set(d.values())) == len(d.values()))]
    seen = set().union(*[set(d.values()) for d in ds]) if ds else set()
    check("all healthy: 30 answers, each 1..8 distinct records of the group", len(ds) == 30 and not bad, "\n".join(bad))
    check("all healthy: every one of the 10 records appears over the 30 answers (%d seen)" % len(seen),
          seen == allv, sorted(allv - seen))
    sizes = sorted({len(d.values()) for d in ds})
    check("all healthy: answers carry 8 records (10 usable, max 8) -> sizes %s" % sizes, sizes == [8], sizes)

    dev.set_status(ids["HC_MV1"], "unhealthy", "HC_MV1")
    dev.set_status(ids["HC_MV2"], "unhealthy", "HC_MV2")
    healthy8 = tuple(sorted(allv - {"10.3.0.1", "10.3.0.2"}))
    wait_sample(dev, name, lambda d: d.values() == healthy8, n=3,
                title="mv-1, mv-2 unhealthy: answers are exactly the 8 healthy records")
    ds = dev.dig_many(name, 30)
    bad = [d.brief() for d in ds if d.values() != healthy8]
    check("  … 30 answers: never 10.3.0.1 or 10.3.0.2, all 8 healthy ones", len(ds) == 30 and not bad, "\n".join(bad))
    dev.set_status(ids["HC_MV3"], "unhealthy", "HC_MV3")
    healthy7 = tuple(sorted(allv - {"10.3.0.1", "10.3.0.2", "10.3.0.3"}))
    wait_sample(dev, name, lambda d: d.values() == healthy7, n=3,
                title="mv-1..3 unhealthy: answers are exactly the 7 healthy records")
    ds = dev.dig_many(name, 30)
    bad = [d.brief() for d in ds if d.values() != healthy7]
    check("  … 30 answers: 7 records, none unhealthy", len(ds) == 30 and not bad, "\n".join(bad))
    for ph in ("HC_MV1", "HC_MV2", "HC_MV3"):
        dev.set_status(ids[ph], "auto", ph)
    ds, took = wait_for(lambda: (lambda ds: ds if {"10.3.0.1", "10.3.0.2", "10.3.0.3"} <= set().union(
        *[set(d.values()) for d in ds]) else None)(dev.dig_many(name, 10)), 20)
    check("checks back to auto: mv-1..3 answer again (%.1f s)" % took, ds)


def sc_latency(t):
    dev = t.dev
    name = "lat.policy.test."
    dev.apply("latency.json (us-east-1, eu-west-1, ap-southeast-2)", load_batch("latency"), "latency")
    wait_values(dev, name, ["10.4.0.2"], title="latency from POP %s (%s) -> eu-west-1's 10.4.0.2" % (POP, REGION_RTT))
    ds = dev.dig_many(name, 20, subnet="203.0.113.9/24")
    check("  … 20 answers, also with a Seattle ECS: always eu-west-1 (latency is per POP)",
          len(ds) == 20 and all(d.values() == ("10.4.0.2",) for d in ds), "\n".join(d.brief() for d in ds))
    info("latency answer with ECS /24: reply scope %s" % ds[0].scope if ds else "no reply")
    explain_check(dev, "latency", name, ["--pop", POP], "lat-euw1")


GEO_CASES = [
    # (ECS, want, set identifier, echoed address, scope)
    ("198.51.100.7/24", "10.5.0.1", "geo-eu", "198.51.100.0", 24),          # DE -> continent EU
    ("203.0.113.9/24", "10.5.0.2", "geo-us-wa", "203.0.113.0", 24),         # US-WA
    ("192.0.2.1/24", "10.5.0.3", "geo-au", "192.0.2.0", 24),                # AU
    ("2001:db8:1::/48", "10.5.0.1", "geo-eu", "2001:db8:1::", 48),          # FR -> continent EU
    ("10.20.30.0/24", "10.5.0.4", "geo-default", "10.20.30.0", None),        # not in the database
]


def sc_geolocation(t):
    dev = t.dev
    name = "geo.policy.test."
    dev.apply("geolocation.json (EU, US-WA, AU, *)", load_batch("geolocation"), "geolocation")
    wait_values(dev, name, ["10.5.0.4"], title="no ECS: client 127.0.0.1 is US-NY -> default * (10.5.0.4)")
    for subnet, want, sid, addr, scope in GEO_CASES:
        d = wait_values(dev, name, [want], subnet=subnet,
                        title="+subnet=%s -> %s (%s)" % (subnet, sid, want))
        if d and scope is not None:
            check("  … reply ECS %s/%s with scope %d (= source prefix)" % (addr, scope, scope),
                  d.ecs == (addr, scope, scope), d)
        elif d:
            info("+subnet=%s (no geo data) -> reply ECS %s" % (subnet, d.ecs))
    d = dev.dig(name, "A", "0.0.0.0/0")
    check("+subnet=0.0.0.0/0 (client opted out): resolver address used -> default, scope 0",
          d.values() == ("10.5.0.4",) and d.scope == 0, d)
    d = dev.dig(name, "A")
    check("no ECS: no ECS option in the reply", d.values() == ("10.5.0.4",) and d.ecs is None, d)
    explain_check(dev, "geo", name, ["--ecs", "198.51.100.0/24"], "geo-eu", also=("10.5.0.1",))
    explain_check(dev, "geo", name, ["--client", "203.0.113.9"], "geo-us-wa", also=("10.5.0.2",))
    explain_check(dev, "geo", name, ["--client", "127.0.0.1"], "geo-default", also=("10.5.0.4",))


def sc_geoproximity(t):
    dev = t.dev
    name = "geoprox.policy.test."
    dev.apply("geoproximity.json (us-east-1, Berlin coordinates bias +70, ap-southeast-2)",
              load_batch("geoproximity"), "geoproximity")
    # Distances (km): Seattle-Berlin 8,080 x 0.3 = 2,424 < Seattle-us-east-1 ~3,700;
    # New York-us-east-1 ~330 < NY-Berlin 6,385 x 0.3 = 1,916; Sydney is in ap-southeast-2.
    wait_values(dev, name, ["10.6.0.1"], title="no ECS: New York (127.0.0.1) -> gp-use1")
    for subnet, want, sid, scope in [("198.51.100.7/24", "10.6.0.2", "gp-berlin (Berlin)", 24),
                                     ("203.0.113.9/24", "10.6.0.2", "gp-berlin (Seattle, thanks to bias +70)", 24),
                                     ("192.0.2.1/24", "10.6.0.3", "gp-apse2 (Sydney)", 24),
                                     ("2001:db8:1::/48", "10.6.0.2", "gp-berlin (Paris)", 48)]:
        d = wait_values(dev, name, [want], subnet=subnet, title="+subnet=%s -> %s" % (subnet, sid))
        if d:
            check("  … reply ECS scope %d" % scope, d.scope == scope, d)
    explain_check(dev, "geoprox", name, ["--ecs", "203.0.113.0/24"], "gp-berlin")


def sc_cidr(t):
    dev = t.dev
    name = "cidr.policy.test."
    r = dev.cli("cidr", "create", "office-nets", out_json=True)
    check("cidr create office-nets", r.ok, r)
    coll = "office-nets"
    if isinstance(r.json, dict) and isinstance(r.json.get("id"), str) and r.json["id"]:
        coll = r.json["id"]
    if coll != "office-nets":
        info("collection id %s (substituted for CollectionId office-nets)" % coll)
    r = dev.cli("cidr", "add", "office-nets", "berlin", "198.51.100.0/25", "2001:db8:1::/48")
    check("cidr add office-nets berlin 198.51.100.0/25 2001:db8:1::/48", r.ok, r)
    r = dev.cli("cidr", "list")
    check("cidr list shows office-nets, berlin, 198.51.100.0/25, 2001:db8:1::/48",
          r.ok and all(s in r.out for s in ("office-nets", "berlin", "198.51.100.0/25", "2001:db8:1::/48")), r)
    b = substitute(load_batch("cidr"), {}, collection_id=coll)
    dev.apply("cidr.json (office-nets berlin, *)", b, "cidr")
    wait_values(dev, name, ["10.7.0.2"], title="no ECS (127.0.0.1, in no block) -> cidr-default *")
    for subnet, want, sid in [("198.51.100.0/25", "10.7.0.1", "cidr-berlin"),
                              ("198.51.100.77/32", "10.7.0.1", "cidr-berlin"),
                              ("198.51.100.128/25", "10.7.0.2", "cidr-default"),
                              ("198.51.100.200/32", "10.7.0.2", "cidr-default"),
                              ("2001:db8:1::/48", "10.7.0.1", "cidr-berlin"),
                              ("203.0.113.0/24", "10.7.0.2", "cidr-default")]:
        wait_values(dev, name, [want], subnet=subnet, title="+subnet=%s -> %s" % (subnet, sid))
    explain_check(dev, "cidr", name, ["--ecs", "198.51.100.0/25"], "cidr-berlin")
    r = dev.cli("cidr", "add", "office-nets", "berlin", "203.0.113.0/24")
    check("cidr add office-nets berlin 203.0.113.0/24 (after the records exist)", r.ok, r)
    wait_values(dev, name, ["10.7.0.1"], subnet="203.0.113.0/24",
                title="  … +subnet=203.0.113.0/24 -> cidr-berlin now (the collection change reached the edge)")
    t.collection = coll


def sc_alias(t):
    dev = t.dev
    if "weighted" not in t.hc:
        sc_weighted(t)
    weighted = {"10.1.0.1", "10.1.0.2"}
    dev.apply("alias.json (apex A -> www.policy.test., EvaluateTargetHealth)", load_batch("alias"), "alias")
    wait_sample(dev, ZONE, lambda d: len(d.values()) == 1 and set(d.values()) <= weighted, n=1,
                title="apex %s A answers a record of the weighted www" % ZONE)
    ds = dev.dig_many(ZONE, 20)
    bad = [d.brief() for d in ds if not (len(d.values()) == 1 and set(d.values()) <= weighted
                                         and d.owners() == {ZONE} and "aa" in d.flags)]
    check("  … 20 answers: one A of www's, owner %s (no CNAME, no www owner), AA" % ZONE,
          len(ds) == 20 and not bad, "\n".join(bad[:10]) or "\n".join(str(d) for d in ds[:1]))
    ttls = sorted({a[1] for d in ds for a in d.answers})
    check("  … with the target's TTL 60 (%s)" % ttls, ttls == [60], ttls)
    d = dev.dig(ZONE, "SOA")
    check("  … the apex still answers its SOA", d.status == "NOERROR" and len(d.values("SOA")) == 1, d)
    hc = t.hc["weighted"]["HC_PRIMARY"]
    dev.set_status(hc, "unhealthy", "weighted HC_PRIMARY")
    wait_sample(dev, ZONE, lambda d: d.values() == ("10.1.0.2",), n=20,
                title="alias follows the target's health: w-heavy unhealthy -> apex answers w-light only")
    dev.set_status(hc, "auto", "weighted HC_PRIMARY")
    ds, took = wait_for(lambda: (lambda ds: ds if any(d.values() == ("10.1.0.1",) for d in ds) else None)(
        dev.dig_many(ZONE, 20)), 20)
    check("  … w-heavy back to auto: apex answers it again (%.1f s)" % took, ds)


def sc_composition(t):
    dev = t.dev
    name = "app.policy.test."
    pool_a, pool_b = {"10.8.1.1", "10.8.1.2"}, {"10.8.2.1", "10.8.2.2"}
    b = t.batch("composition")
    ids = t.hc["composition"]
    dev.apply("composition.json (geolocation -> failover -> weighted)", b, "composition")

    def in_pool(pool):
        return lambda d: len(d.values()) == 1 and set(d.values()) <= pool and d.owners() == {name}
    wait_sample(dev, name, in_pool(pool_b), n=1, title="no ECS (US-NY): app -> * -> fo-default -> PRIMARY pool-b")
    for subnet, pool, label, scope in [("198.51.100.7/24", pool_a, "EU -> fo-eu -> PRIMARY pool-a", 24),
                                       (None, pool_b, "default -> fo-default -> PRIMARY pool-b", None),
                                       ("192.0.2.1/24", pool_b, "AU (no AU set) -> default -> pool-b", 24)]:
        ds = dev.dig_many(name, 30, subnet=subnet)
        seen = set().union(*[set(d.values()) for d in ds]) if ds else set()
        bad = [d.brief() for d in ds if not in_pool(pool)(d)]
        check("%s: 30 answers, owner %s, both weighted records seen %s" % (label, name, sorted(seen)),
              len(ds) == 30 and not bad and seen == pool, "\n".join(bad[:10]))
        ttls = sorted({a[1] for d in ds for a in d.answers})
        check("  … with the weighted leaves' TTL 60 (%s)" % ttls, ttls == [60], ttls)
        if scope is not None and ds:
            check("  … reply ECS scope %d (the tree starts with geolocation)" % scope,
                  all(d.scope == scope for d in ds), sorted({str(d.scope) for d in ds}))
    dev.set_status(ids["HC_COMP_EU"], "unhealthy", "HC_COMP_EU")
    wait_sample(dev, name, in_pool(pool_b), n=10, subnet="198.51.100.7/24",
                title="HC_COMP_EU unhealthy: EU -> fo-eu SECONDARY -> pool-b")
    explain_check(dev, "composition", name, ["--ecs", "198.51.100.0/24"], "app-eu", also=("fo-eu-secondary",))
    dev.set_status(ids["HC_COMP_DEFAULT"], "unhealthy", "HC_COMP_DEFAULT")
    wait_sample(dev, name, in_pool(pool_a), n=10,
                title="HC_COMP_DEFAULT unhealthy: default -> fo-default SECONDARY -> pool-a")
    for ph in ("HC_COMP_EU", "HC_COMP_DEFAULT"):
        dev.set_status(ids[ph], "auto", ph)
    wait_sample(dev, name, in_pool(pool_a), n=5, subnet="198.51.100.7/24",
                title="checks back to auto: EU -> pool-a again")


def expect_refused(t, title, batch, keywords):
    dev = t.dev
    path = dev.write("invalid", batch)
    r = dev.cli("record", "apply", ZONE, "--file", path)
    # The zone's name would match words like "policy": look in the error without it.
    err = r.err.lower().replace("policy.test", "")
    hit = [k for k in keywords if k.lower() in err]
    check("refused: %s -> exit %s, error names it (%s)" % (title, r.rc, "/".join(keywords)),
          r.rc not in (0, -1) and hit, r)


def sc_validation(t):
    dev = t.dev
    if "weighted" not in t.hc:
        t.batch("weighted")
    hc = next(iter(t.hc["weighted"].values()))
    v0 = dev.zone_version()
    n = "v%d.policy.test."
    expect_refused(t, "two PRIMARY in one failover group", batch_of(
        "two primaries",
        rrset(n % 1, "a", ["10.99.0.1"], Failover="PRIMARY"),
        rrset(n % 1, "b", ["10.99.0.2"], Failover="PRIMARY")), ["primary"])
    expect_refused(t, "duplicate SetIdentifier", batch_of(
        "one set identifier twice",
        rrset(n % 2, "same", ["10.99.0.1"], Weight=1),
        rrset(n % 2, "same", ["10.99.0.2"], Weight=2)),
        ["set identifier", "setidentifier", "duplicate", "twice", "already"])
    expect_refused(t, "Weight 256", batch_of(
        "weight out of range", rrset(n % 3, "a", ["10.99.0.1"], Weight=256)), ["weight", "256"])
    expect_refused(t, "unknown HealthCheckId", batch_of(
        "health check that does not exist",
        rrset(n % 4, "a", ["10.99.0.1"], Weight=1, HealthCheckId="0badc0de-0000-4000-8000-000000000000")),
        ["health"])
    expect_refused(t, "alias target that does not exist", batch_of(
        "dangling alias",
        rrset(n % 5, AliasTarget={"HostedZoneId": "Z0000000POLICYTEST", "DNSName": "nothing.policy.test.",
                                  "EvaluateTargetHealth": False})),
        ["nothing", "target", "does not exist", "missing"])
    expect_refused(t, "alias cycle ring-a -> ring-b -> ring-a", batch_of(
        "alias cycle",
        rrset("ring-a.policy.test.", AliasTarget={"HostedZoneId": "Z0000000POLICYTEST", "DNSName": "ring-b.policy.test.",
                                                 "EvaluateTargetHealth": False}),
        rrset("ring-b.policy.test.", AliasTarget={"HostedZoneId": "Z0000000POLICYTEST", "DNSName": "ring-a.policy.test.",
                                                 "EvaluateTargetHealth": False})),
        ["cycle", "loop", "circular", "deeper"])
    expect_refused(t, "weighted and failover sets at one name", batch_of(
        "mixed policies",
        rrset(n % 7, "a", ["10.99.0.1"], Weight=1),
        rrset(n % 7, "b", ["10.99.0.2"], Failover="PRIMARY")),
        ["one policy", "mixed", "weighted", "failover"])
    expect_refused(t, "geoproximity Bias 100", batch_of(
        "bias out of range",
        rrset(n % 8, "a", ["10.99.0.1"], GeoProximityLocation={"AWSRegion": "us-east-1", "Bias": 100})),
        ["bias"])
    expect_refused(t, "CidrRoutingConfig with an unknown collection", batch_of(
        "collection that does not exist",
        rrset(n % 9, "a", ["10.99.0.1"], CidrRoutingConfig={"CollectionId": "no-such-collection",
                                                           "LocationName": "berlin"})),
        ["collection"])
    # The health check id of a valid check is accepted (the "unknown" refusal is about the id).
    ok_batch = batch_of("a valid weighted set with a known check",
                        rrset(n % 10, "a", ["10.99.0.10"], Weight=1, HealthCheckId=hc))
    v1 = dev.zone_version()
    check("refused batches changed nothing: zone version %s -> %s" % (v0, v1), v0 is not None and v0 == v1)
    dev.apply("a valid weighted set with a known HealthCheckId (control case)", ok_batch, "valid")
    wait_values(dev, n % 10, ["10.99.0.10"])


def sc_record_list(t):
    r = t.dev.cli("record", "list", ZONE)
    check("record list %s works and lists www.policy.test." % ZONE, r.ok and "www.policy.test." in r.out, r)
    ids = [s for s in ("w-heavy", "fo-primary", "geo-eu") if s in r.out]
    info("record list shows set identifiers: %s" % (ids or "none"))


# --- CC0 database ----------------------------------------------------------------------------

# Well-known addresses (country in geo-whois-asn-country 2.3.2026061719; re-read at run time).
CC0_CANDIDATES = ["8.8.8.8", "193.0.6.139", "202.12.29.175", "1.1.1.1", "9.9.9.9", "194.0.0.53",
                  "203.119.0.1"]
CC0_V6_CANDIDATES = ["2001:4860:4860::8888", "2001:67c:2e8:22::c100:68b"]


def sc_cc0(t):
    script = os.path.join(HERE, "fetch_cc0_mmdb.sh")
    try:
        p = subprocess.run(["bash", script], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        check("fetch_cc0_mmdb.sh finishes within 15 min", False)
        return
    path = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    if p.returncode != 0 or not os.path.isfile(path):
        if shutil.which("npm") is None:
            log("SKIP  cc0: npm could not be installed: %s" % p.stderr.strip()[-400:])
            return
        check("fetch_cc0_mmdb.sh prints the database path", False, "rc=%s\n%s\n%s" % (p.returncode, p.stdout, p.stderr))
        return
    check("fetch_cc0_mmdb.sh -> %s" % path, True)
    import maxminddb
    reader = maxminddb.open_database(path)
    chosen = {}                 # country -> ip
    try:
        for ip in CC0_CANDIDATES:
            rec = reader.get(ip)
            net24 = str(ipaddress.ip_network(ip + "/24", strict=False).network_address)
            rec24 = reader.get(net24)
            cc = rec.get("country_code") if isinstance(rec, dict) else None
            if cc and rec24 == rec and cc not in chosen:
                chosen[cc] = ip
            if len(chosen) == 3:
                break
        v6 = []
        for ip in CC0_V6_CANDIDATES:
            rec = reader.get(ip)
            net48 = str(ipaddress.ip_network(ip + "/48", strict=False).network_address)
            cc = rec.get("country_code") if isinstance(rec, dict) else None
            if cc in chosen and reader.get(net48) == rec:
                v6.append((net48 + "/48", cc))
    finally:
        reader.close()
    if not check("CC0 database: three well-known addresses in three countries: %s" % ", ".join(
            "%s=%s" % (ip, cc) for cc, ip in chosen.items()), len(chosen) == 3, chosen):
        return
    dev = Dev("dev-cc0", t.meridian, t.tmp, path)
    dev.start()
    dev.zone_create()
    answers = {cc: "10.10.0.%d" % (i + 1) for i, cc in enumerate(sorted(chosen))}
    sets = [rrset("cc.policy.test.", "cc-" + cc.lower(), [answers[cc]], GeoLocation={"CountryCode": cc})
            for cc in sorted(chosen)]
    sets.append(rrset("cc.policy.test.", "cc-default", ["10.10.0.9"], GeoLocation={"CountryCode": "*"}))
    dev.apply("geolocation per country (%s, *)" % ", ".join(sorted(chosen)), batch_of("CC0 countries", *sets), "cc0")
    wait_values(dev, "cc.policy.test.", ["10.10.0.9"], title="cc0: no ECS (127.0.0.1 has no record) -> default *")
    for cc, ip in sorted(chosen.items()):
        wait_values(dev, "cc.policy.test.", [answers[cc]], subnet=ip + "/24",
                    title="cc0: +subnet=%s/24 -> country %s (%s)" % (ip, cc, answers[cc]))
    for subnet, cc in v6:
        wait_values(dev, "cc.policy.test.", [answers[cc]], subnet=subnet,
                    title="cc0: +subnet=%s -> country %s" % (subnet, cc))
    rc = dev.proc.stop()
    check("dev-cc0 stops on SIGTERM (exit %s)" % rc, rc == 0)


SCENARIOS = [
    ("simple", sc_simple), ("weighted", sc_weighted), ("failover", sc_failover),
    ("failclosed", sc_failclosed), ("multivalue", sc_multivalue), ("latency", sc_latency),
    ("geolocation", sc_geolocation), ("geoproximity", sc_geoproximity), ("cidr", sc_cidr),
    ("alias", sc_alias), ("composition", sc_composition), ("validation", sc_validation),
    ("recordlist", sc_record_list), ("cc0", sc_cc0),
]


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meridian", default=os.path.join(REPO, "target/release/meridian"))
    ap.add_argument("--only", default="", help="comma-separated scenario names (%s)" % ",".join(n for n, _ in SCENARIOS))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    VERBOSE = args.verbose
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in dict(SCENARIOS)]
    if unknown:
        ap.error("unknown scenario(s) %s" % ", ".join(unknown))
    meridian = os.path.abspath(args.meridian)
    if not os.access(meridian, os.X_OK):
        log("FAIL  %s is not an executable (build it: cargo build --release)" % meridian)
        return 1
    if shutil.which("dig") is None:
        log("FAIL  dig is missing (Debian: bind9-dnsutils)")
        return 1
    try:
        make_test_mmdb.ensure_packages()
    except make_test_mmdb.MissingPackages as e:
        log("SKIP  policy_e2e: the Python packages for the test database cannot be installed: %s" % e)
        return 0

    tmp = tempfile.mkdtemp(prefix="meridian-policy-e2e-")
    started = time.monotonic()
    log("meridian: %s\ndata and logs: %s" % (meridian, tmp))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    t = T(meridian, tmp)
    aborted = None
    try:
        db = os.path.join(tmp, "test-city.mmdb")
        p = subprocess.run([sys.executable, os.path.join(HERE, "make_test_mmdb.py"), db],
                           capture_output=True, text=True, timeout=600)
        require("make_test_mmdb.py %s (written, read back, checked)" % db, p.returncode == 0, p.stdout + p.stderr)
        t.target = HealthTarget()
        t.dev = Dev("dev-fra", meridian, tmp, db)
        t.dev.start()
        t.dev.zone_create()

        def edge_pops():
            el = t.dev.cli("edges", "list", out_json=True)
            pops = [e.get("pop") for e in el.json.get("edges", [])] if isinstance(el.json, dict) else []
            return pops if POP in pops else None
        pops, took = wait_for(edge_pops, 15, 0.2)
        check("edges list: the dev edge is in POP %s (%.1f s)" % (POP, took), pops,
              t.dev.cli("edges", "list", out_json=True))
        for name, fn in SCENARIOS:
            if only and name not in only:
                continue
            log("\n== %s" % name)
            t0 = time.monotonic()
            try:
                fn(t)
            except Abort:
                raise
            except ScenarioStop as e:
                log("      scenario %s stops here: %s" % (name, e))
            except Exception as e:  # noqa: BLE001 - a bug in one scenario: report, go on
                import traceback
                check("%s: unexpected %r (the scenario stops here)" % (name, e), False, traceback.format_exc())
            log("      (%.1f s)" % (time.monotonic() - t0))
        if t.dev.proc.alive():
            rc = t.dev.proc.stop()
            check("dev-fra stops on SIGTERM (exit %s)" % rc, rc == 0)
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
        if t.target:
            t.target.stop()
        failed = [n for n, ok in results if not ok]
        if failed or aborted:
            log("\n== log tails")
            for p in ALL_PROCS:
                log("--- %s (%s)" % (p.name, p.logpath))
                for line in p.tail(30):
                    log("    " + line)
        log("\n%d checks, %d passed, %d failed%s; %.1f s" % (
            len(results), len(results) - len(failed), len(failed),
            "; aborted: " + aborted if aborted else "", time.monotonic() - started))
        log("%d passed, %d failed" % (len(results) - len(failed), len(failed)))
        for n in failed:
            log("  FAILED: %s" % n)
        if args.keep:
            log("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if (failed or aborted) else 0


if __name__ == "__main__":
    sys.exit(main())
