#!/usr/bin/env python3
"""End-to-end test of health-check probing: real endpoints on loopback probed by real edges,
verdicts decided by the control plane's leader, failover answers checked with dig.

    python3 tests/health/health_e2e.py --meridian target/release/meridian [--only NAMES] [--keep] [-v]

Endpoints are served by this process on 127.0.0.1: HTTP servers (http.server) that answer
"ready" (200), "starting" (200, a body the string match must refuse), 500, 204, flap between
"ready" and 500 on the wall clock, or are stopped (connection refused); TCP listeners that
accept and close, or are stopped.

Scenarios (names for --only; the first five share one `meridian dev --pop fra`, the last three
one cluster of 3 `meridian control` nodes and 3 `meridian edge`s in POPs pop1, pop2, pop3):

  failover    failover PRIMARY guarded by an HTTP_STR_MATCH check (RequestInterval 1,
              FailureThreshold 2, RecoveryThreshold 3), SECONDARY without a check. Endpoint
              stopped -> dig answers the secondary; started -> the primary returns, not before 3
              consecutive successes (the POP view is seen with 1-2 successes while dig still
              answers the secondary; elapsed >= 2 intervals; the status right after shows >= 3);
              body "starting" -> unhealthy (HTTP 200, no match); 500 -> unhealthy; ExpectedStatus
              ["204-206"] accepts 204 and refuses 200.
  flapping    an endpoint alternating up/down on every probe (1 s), and one every 2 probes (2 s):
              a check with FailureThreshold 2 / RecoveryThreshold 3 makes at most 2 transitions
              in 10 s ("health transition" lines in the dev log and status polls); a control
              check with RecoveryThreshold 2 on its own 2-probe flapper does flap (shows the
              count is live).
  tcp         TCP check: stopped listener -> unhealthy (connection refused) -> secondary;
              listening again -> primary; a check on a port nobody listens on -> unhealthy.
              Also: a TCP check on a closed port is unhealthy from the start; an HTTP check
              (TimeoutMs 500) on a server that accepts and never answers times out at 500 ms.
  calculated  CALCULATED check with 3 TCP children, HealthThreshold 2: one child endpoint down
              -> the child is unhealthy, the calculated check stays healthy (primary answered);
              two down -> unhealthy (secondary, evidence "1 of 3"); one back -> healthy.
  restart     RecoveryThreshold across a restart: the check unhealthy, `meridian dev` stopped,
              the endpoint started, dev started again: the persisted verdict holds (secondary)
              and the recovery still waits for RecoveryThreshold (3) successes.
  quorum      HealthyQuorum by POP views. "Reachable from one POP only" is emulated by the HTTP
              endpoint itself: it finds which process opened each probe's connection (the
              client socket's inode in /proc/net/tcp, matched against /proc/PID/fd of the edge
              processes) and answers 503 to edges outside the allowed POPs. Checks on it: B (Pops
              pop1..pop3, HealthyQuorum 0.5), D (every POP, default quorum 0.18), A (Pops [pop1]).
              status lists 3 views for B and D, one (pop1) for A; reachable from pop1 only -> B
              unhealthy (1/3 <= 0.5) with pop1 healthy and pop2/pop3 unhealthy, D and A healthy;
              from pop1+pop2 -> B healthy (2/3); endpoint stopped -> all unhealthy and every edge
              answers the secondaries; the leader SIGKILLed during the outage -> no spurious flip
              (status on each survivor and every edge's answers polled through the election and
              after, no "healthy=true" transition in the new leader's log); endpoint back -> the
              new leader writes the recovery, every edge answers the primaries.
  leaderkill  the leader SIGKILLed right after the primary's endpoint is stopped: every edge
              answers the secondary within 10 s (and keeps answering it), then the primary again
              once the endpoint is back; the killed node restarts and catches up.
  hungcontrol a 4th edge (e4, pop4) whose --control list starts with a "control node" that
              accepts TCP connections and never answers (a hung process; the 3 real nodes follow):
              its 1 s check must still be probed >= 8 times in 10 s, and a failover guarded by it
              must reach every edge within 4 s.

Waits are polls with deadlines; no fixed sleep decides a result (the flapping and no-flip
checks observe for a stated window). Every process is killed at exit, logs are in the
temporary directory, their tails printed on failure.

Exit status 0 when every check passes, 1 otherwise. Needs dig and python3 (standard library).
"""
import argparse
import ctypes
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
ZONE = "health.test."
CZONE = "cluster.test."
DEV_POP = "fra"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TRANSITION = re.compile(r"health transition check=(\S+) healthy=(true|false)")

VERBOSE = False
results = []          # (name, ok)
_results_lock = threading.Lock()


def log(msg=""):
    print(msg, flush=True)


def check(name, ok, detail=""):
    with _results_lock:
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


def need(name, ok, detail=""):
    """A check the rest of the scenario depends on."""
    if not check(name, ok, detail):
        raise ScenarioStop(name)
    return ok


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


# --- ports and processes ---------------------------------------------------------------------

_ports_taken = set()


def free_port():
    """A port free for TCP and UDP on 127.0.0.1, below the ephemeral range (so no client socket
    takes it while the endpoint using it is stopped)."""
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
    """One long-running meridian process; output goes to a log file (appended on restart)."""

    def __init__(self, name, args, logpath):
        self.name, self.args, self.logpath = name, args, logpath
        self.p = None

    def start(self):
        assert not self.alive(), self.name
        with open(self.logpath, "ab") as f:
            f.write(("=== start %s: %s\n" % (time.strftime("%H:%M:%S"), " ".join(self.args))).encode())
        logf = open(self.logpath, "ab")
        self.p = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=logf,
                                  stderr=subprocess.STDOUT, env=CHILD_ENV,
                                  preexec_fn=_die_with_parent)
        logf.close()
        if self not in ALL_PROCS:
            ALL_PROCS.append(self)
        return self

    @property
    def pid(self):
        return self.p.pid if self.p else None

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def kill(self):
        """SIGKILL and reap."""
        if self.alive():
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(10)

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

    def log_size(self):
        try:
            return os.path.getsize(self.logpath)
        except OSError:
            return 0

    def log_since(self, offset):
        try:
            with open(self.logpath, "rb") as f:
                f.seek(offset)
                return ANSI.sub("", f.read().decode("utf-8", "replace"))
        except OSError:
            return ""

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


def transitions(text, hc_id=None):
    """[(check id, healthy)] of the "health transition" lines in a log excerpt."""
    return [(m.group(1), m.group(2) == "true") for m in TRANSITION.finditer(text)
            if hc_id is None or m.group(1) == hc_id]


# --- endpoints -------------------------------------------------------------------------------

def _socket_inode(client_port, server_port):
    """The inode of the client side of a loopback TCP connection 127.0.0.1:client_port ->
    127.0.0.1:server_port (from /proc/net/tcp), or None."""
    local = "0100007F:%04X" % client_port
    remote = "0100007F:%04X" % server_port
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if len(p) > 9 and p[1] == local and p[2] == remote:
                return p[9]
    return None


def _pid_holds_socket(pid, inode):
    want = "socket:[%s]" % inode
    fd_dir = "/proc/%d/fd" % pid
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(os.path.join(fd_dir, fd)) == want:
                return True
        except OSError:
            continue
    return False


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class HttpEndpoint:
    """An HTTP endpoint on 127.0.0.1:port, served by a thread of this process.

    mode: "ready" (200 "ready"), "starting" (200 "starting": fails a match on "ready"), "500",
    "204" (204, no body), "flap" (`flap_every` requests "ready", then `flap_every` requests
    500: counted per request, not by the wall clock, so a probe schedule that happens to sit on
    a second boundary cannot turn the pattern into runs of failures). allow_pids: None, or a set of PIDs: a connection opened by any other process gets 503
    (how the test makes an endpoint reachable from some POPs only; every edge is a process)."""

    def __init__(self, name, mode="ready", tls=False):
        self.name = name
        self.port = free_port()
        self.mode = mode
        # tls: HTTPS with a self-signed certificate; the SNI names clients sent are recorded.
        self.tls = tls
        self.sni_seen = set()
        self.flap_every = 1
        self.flap_served = 0
        self.allow_pids = None
        self.srv = None
        self.thread = None
        self.lock = threading.Lock()
        self.counts = {}

    def _count(self, key):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def answer(self, client):
        allow = self.allow_pids
        if allow is not None:
            inode = _socket_inode(client[1], self.port)
            if inode is None or not any(_pid_holds_socket(p, inode) for p in allow):
                self._count("denied")
                return 503, "not reachable from this POP"
            self._count("allowed")
        mode = self.mode
        if mode == "flap":
            with self.lock:
                n = self.flap_served
                self.flap_served += 1
            mode = "ready" if (n // self.flap_every) % 2 == 0 else "500"
        self._count(mode)
        if mode == "ready":
            return 200, "ready\n"
        if mode == "starting":
            return 200, "starting\n"
        if mode == "204":
            return 204, ""
        return 500, "error\n"

    def start(self):
        ep = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                code, body = ep.answer(self.client_address)
                data = body.encode()
                self.send_response(code)
                if code != 204:
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                if data:
                    self.wfile.write(data)

            def log_message(self, *_a):
                pass

        self.srv = _Server(("127.0.0.1", self.port), Handler)
        if self.tls:
            import ssl
            cert, key = _self_signed_cert()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            ctx.sni_callback = lambda _sock, name, _ctx: self.sni_seen.add(name)
            self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.thread = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Closes the listener: connections are refused from the return on."""
        if self.srv:
            self.srv.shutdown()
            self.srv.server_close()
            self.srv = None

    @property
    def up(self):
        return self.srv is not None


_CERT = []


def _self_signed_cert():
    """A throwaway self-signed certificate (openssl), made once per run."""
    if not _CERT:
        d = tempfile.mkdtemp(prefix="meridian-health-tls-")
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "1", "-subj", "/CN=api.https.test"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _CERT.extend([cert, key])
    return _CERT[0], _CERT[1]


class TcpEndpoint:
    """A TCP listener on 127.0.0.1:port that accepts and closes (hold=True: accepts and keeps
    the connection open, never sending a byte: a hung server); stop() closes the listener."""

    def __init__(self, name, hold=False):
        self.name = name
        self.hold = hold
        self.port = free_port()
        self.sock = None
        self.thread = None
        self.accepted = 0
        self.held = []

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(128)
        s.settimeout(0.1)
        self.sock = s
        self.thread = threading.Thread(target=self._run, args=(s,), daemon=True)
        self.thread.start()
        return self

    def _run(self, s):
        while self.sock is s:
            try:
                conn, _ = s.accept()
                if self.hold:
                    self.held.append(conn)
                else:
                    conn.close()
                self.accepted += 1
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self):
        s, self.sock = self.sock, None
        if s:
            s.close()
            self.thread.join(2)
        for c in self.held:
            c.close()
        self.held = []

    @property
    def up(self):
        return self.sock is not None


ENDPOINTS = []


def endpoint(kind, name, **kw):
    ep = (HttpEndpoint if kind == "http" else TcpEndpoint)(name, **kw)
    ENDPOINTS.append(ep)
    return ep.start()


# --- CLI and dig -----------------------------------------------------------------------------

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


def run_cli(meridian, api, args, out_json=True, timeout=40):
    cmd = [meridian, "--api", api]
    if out_json:
        cmd += ["--output", "json"]
    cmd += [str(a) for a in args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=CHILD_ENV, stdin=subprocess.DEVNULL)
        return CliResult(cmd, p.returncode, p.stdout, p.stderr)
    except subprocess.TimeoutExpired:
        return CliResult(cmd, -1, "", "timeout after %s s" % timeout)


class Dig:
    """One reply as dig printed it: status and the A values of the answer section."""

    def __init__(self, text, ok=True):
        self.raw = text
        self.ok = ok and ";; Got answer:" in text
        m = re.search(r"status: (\w+)", text)
        self.status = m.group(1) if m else None
        self.values = []
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
                if len(p) == 5 and p[3] == "A":
                    self.values.append(p[4])
        self.values.sort()

    def brief(self):
        return "%s %s" % (self.status, self.values) if self.ok else "no answer (%s)" % self.raw.strip()[-200:]

    def __str__(self):
        return self.raw.strip()


def dig(port, name, rtype="A"):
    cmd = ["dig", "@127.0.0.1", "-p", str(port), "+time=1", "+tries=1", "+norec", name, rtype]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
        return Dig(p.stdout + p.stderr, p.returncode == 0)
    except subprocess.TimeoutExpired as e:
        return Dig("timeout: %s" % e, False)


def answers(port, name, value):
    d = dig(port, name)
    return d if d.status == "NOERROR" and d.values == [value] else None


def pop_view(st, pop):
    if not isinstance(st, dict):
        return None
    return next((p for p in st.get("pops", []) if p.get("pop") == pop), None)


def status_brief(st):
    if not isinstance(st, dict):
        return "no status"
    return "%s; %s" % (st.get("status"), ", ".join(
        "%s=%s(ok=%s f=%s s=%s %s)" % (p.get("pop"), p.get("verdict"), p.get("last_ok"),
                                       p.get("consecutive_failures"), p.get("consecutive_successes"),
                                       p.get("last_detail")) for p in st.get("pops", [])))


def batch_of(comment, *sets):
    return {"Comment": comment, "Changes": [{"Action": "UPSERT", "ResourceRecordSet": s} for s in sets]}


def failover_sets(name, primary, secondary, hc_id, secondary_hc=None):
    p = {"Name": name, "Type": "A", "SetIdentifier": "primary", "Failover": "PRIMARY", "TTL": 60,
         "ResourceRecords": [{"Value": primary}], "HealthCheckId": hc_id}
    s = {"Name": name, "Type": "A", "SetIdentifier": "secondary", "Failover": "SECONDARY", "TTL": 60,
         "ResourceRecords": [{"Value": secondary}]}
    if secondary_hc:
        s["HealthCheckId"] = secondary_hc
    return [p, s]


def http_check(port, interval=1, failure=2, recovery=None, **extra):
    cfg = {"Type": "HTTP", "IPAddress": "127.0.0.1", "Port": port, "ResourcePath": "/health",
           "RequestInterval": interval, "FailureThreshold": failure}
    if recovery is not None:
        cfg["RecoveryThreshold"] = recovery
    cfg.update(extra)
    return cfg


def tcp_check(port, interval=1, failure=2, recovery=None, **extra):
    cfg = {"Type": "TCP", "IPAddress": "127.0.0.1", "Port": port,
           "RequestInterval": interval, "FailureThreshold": failure}
    if recovery is not None:
        cfg["RecoveryThreshold"] = recovery
    cfg.update(extra)
    return cfg


class ControlPlane:
    """What the scenarios share between `meridian dev` and the cluster: the CLI, checks,
    ChangeBatch files."""

    meridian = None
    tmp = None
    files = 0

    def api(self):
        raise NotImplementedError

    def cli(self, *args, out_json=True, timeout=40, api=None):
        return run_cli(self.meridian, api or self.api(), args, out_json, timeout)

    def write(self, stem, obj):
        ControlPlane.files += 1
        path = os.path.join(self.tmp, "%03d-%s.json" % (ControlPlane.files, re.sub(r"[^\w.-]", "_", stem)))
        with open(path, "w") as f:
            json.dump(obj, f, indent=2)
        return path

    def health_create(self, label, cfg):
        path = self.write("hc-" + label, cfg)
        r = self.cli("health", "create", "--config", path)
        hc_id = r.json.get("id") if isinstance(r.json, dict) else None
        need("health create %s (%s) -> %s" % (label, cfg.get("Type"), hc_id), r.ok and hc_id, r)
        return hc_id

    def status(self, hc_id, api=None):
        r = self.cli("health", "status", hc_id, api=api, timeout=15)
        return r.json if r.ok and isinstance(r.json, dict) else None

    def wait_status(self, hc_id, pred, timeout, title, api=None):
        """Polls `health status` until pred(status json) holds; a check either way."""
        last = {}

        def probe():
            st = self.status(hc_id, api)
            last["st"] = st
            return st if st and pred(st) else None
        st, took = wait_for(probe, timeout, 0.1)
        check("%s (%.1f s)" % (title, took), st, status_brief(last.get("st")))
        return st

    def apply(self, zone, title, batch):
        path = self.write("batch", batch)
        r = self.cli("record", "apply", zone, "--file", path)
        need("record apply %s" % title, r.ok and isinstance(r.json, dict) and r.json.get("id"), r)
        w = self.cli("change", "wait", r.json["id"], "--timeout", 30, timeout=50)
        check("  change wait %s -> INSYNC" % r.json["id"],
              w.ok and isinstance(w.json, dict) and w.json.get("status") == "INSYNC", w)


# --- meridian dev ----------------------------------------------------------------------------

class Dev(ControlPlane):
    def __init__(self, meridian, tmp):
        self.meridian, self.tmp = meridian, tmp
        self.api_port = free_port()
        self.dns_port = free_port()
        self.url = "http://127.0.0.1:%d" % self.api_port
        args = [meridian, "--api", self.url, "dev", "--data", os.path.join(tmp, "dev-data"),
                "--dns", "127.0.0.1:%d" % self.dns_port, "--pop", DEV_POP]
        self.proc = Proc("dev", args, os.path.join(tmp, "dev.log"))

    def api(self):
        return self.url

    def start(self, create_zone=True):
        self.proc.start()

        def up():
            if not self.proc.alive():
                return "exited"
            if not tcp_open(self.api_port):
                return None
            return "up" if dig(self.dns_port, "probe.invalid.").ok else None
        state, took = wait_for(up, 30, 0.1)
        require("meridian dev --pop %s serves the API on :%d and DNS on :%d (%.1f s)" % (
            DEV_POP, self.api_port, self.dns_port, took), state == "up", "\n".join(self.proc.tail()))
        if not create_zone:
            return
        last = {}

        def create():
            last["r"] = self.cli("zone", "create", ZONE)
            return last["r"] if last["r"].ok else None
        r, took = wait_for(create, 30, 0.5)
        require("zone create %s (%.1f s)" % (ZONE, took), r, last.get("r"))

    def dig(self, name):
        return dig(self.dns_port, name)

    def wait_answer(self, name, value, timeout=20, title=None, interval=0.05):
        start = time.monotonic()
        last = {}

        def probe():
            d = self.dig(name)
            last["d"] = d
            return d if d.status == "NOERROR" and d.values == [value] else None
        d, took = wait_for(probe, timeout, interval)
        if title:
            check("%s (%.1f s)" % (title, took), d, last.get("d").brief() if last.get("d") else "")
        return d, time.monotonic() - start


# --- dev scenarios ---------------------------------------------------------------------------

def sc_failover(t):
    dev = t.dev
    name = "fo." + ZONE
    primary, secondary = "10.20.0.1", "10.20.0.2"
    ep = endpoint("http", "primary")
    hc = dev.health_create("primary HTTP_STR_MATCH", {
        "Type": "HTTP_STR_MATCH", "IPAddress": "127.0.0.1", "Port": ep.port, "ResourcePath": "/health",
        "SearchString": "ready", "RequestInterval": 1, "FailureThreshold": 2, "RecoveryThreshold": 3})
    dev.apply(ZONE, "failover PRIMARY (HTTP_STR_MATCH check) + SECONDARY (no check)",
              batch_of("failover", *failover_sets(name, primary, secondary, hc)))
    dev.wait_answer(name, primary, title="endpoint serving 'ready': dig %s -> PRIMARY %s" % (name, primary))
    st = dev.wait_status(hc, lambda s: (pop_view(s, DEV_POP) or {}).get("verdict") == "healthy",
                         10, "health status: POP %s probes it: verdict healthy, last HTTP 200" % DEV_POP)
    if st:
        v = pop_view(st, DEV_POP)
        check("  … POP view: last_ok, detail 'HTTP 200', RTT < 1000 ms, the only view listed",
              v["last_ok"] and "200" in v["last_detail"] and v["last_rtt_ms"] < 1000
              and [p["pop"] for p in st["pops"]] == [DEV_POP], status_brief(st))
        check("  … status while probes report healthy is 'healthy (probes)' (got %r)" % st.get("status"),
              st.get("status") == "healthy (probes)", status_brief(st))

    # -- the endpoint dies
    log_at = dev.proc.log_size()
    ep.stop()
    t0 = time.monotonic()
    d, took = dev.wait_answer(name, secondary, timeout=20)
    check("endpoint stopped: dig answers SECONDARY %s after %.2f s (<= 6 s; 2 failures at 1 s)" % (secondary, took),
          d and took <= 6.0, d)
    st = dev.wait_status(hc, lambda s: s.get("status") == "unhealthy (probes)", 10,
                         "health status: 'unhealthy (probes)'")
    if st:
        v = pop_view(st, DEV_POP) or {}
        check("  … POP %s: verdict unhealthy, >= 2 consecutive failures, last detail 'refused' (%s)" % (
            DEV_POP, v.get("last_detail")),
              v.get("verdict") == "unhealthy" and v.get("consecutive_failures", 0) >= 2
              and not v.get("last_ok") and "refused" in v.get("last_detail", "").lower(), status_brief(st))
        check("  … evidence names the POP and its failures: %r" % st.get("evidence"),
              DEV_POP in st.get("evidence", "") and "unhealthy" in st.get("evidence", ""), st.get("evidence"))
    tr, _ = wait_for(lambda: transitions(dev.proc.log_since(log_at), hc), 5)
    check("dev log: one 'health transition … healthy=false' for the check (%s)" % tr, tr == [(hc, False)], tr)

    # -- the endpoint returns: not before RecoveryThreshold 3 successes
    log_at = dev.proc.log_size()
    ep.start()
    t1 = time.monotonic()
    samples = []            # (elapsed, consecutive_successes, last_ok, dig values)
    first_primary = None
    while time.monotonic() - t1 < 20:
        st = dev.status(hc)
        v = pop_view(st, DEV_POP) or {}
        d = dev.dig(name)
        el = time.monotonic() - t1
        samples.append((round(el, 2), v.get("consecutive_successes"), v.get("last_ok"), d.values))
        if d.values == [primary]:
            first_primary = el
            break
        time.sleep(0.05)
    st_after = dev.status(hc)
    v_after = pop_view(st_after, DEV_POP) or {}
    detail = "\n".join(map(str, samples[-40:]))
    check("endpoint started: dig answers PRIMARY again after %s s" % (
        "%.2f" % first_primary if first_primary else "never"), first_primary is not None, detail)
    if first_primary is not None:
        check("  … not before 2 intervals (3 successes at 1 s): %.2f s >= 1.8 s" % first_primary,
              first_primary >= 1.8, detail)
        check("  … and within 8 s", first_primary <= 8.0, detail)
        partial = [s for s in samples if s[2] and s[1] in (1, 2) and s[3] == [secondary]]
        check("  … seen while it recovered: the POP view with 1-2 successes and dig still SECONDARY "
              "(%d samples)" % len(partial), partial, detail)
        check("  … status right after: consecutive_successes >= 3 (%s), 'healthy (probes)'" % (
            v_after.get("consecutive_successes")),
              v_after.get("consecutive_successes", 0) >= 3 and st_after.get("status") == "healthy (probes)",
              status_brief(st_after))
    tr, _ = wait_for(lambda: transitions(dev.proc.log_since(log_at), hc), 5)
    text = dev.proc.log_since(log_at)
    check("dev log: one 'health transition … healthy=true' with evidence '3 successes' (%s)" % tr,
          tr == [(hc, True)] and "3 successes" in text, [ln for ln in text.splitlines() if "transition" in ln])

    # -- string match
    for mode, want_detail in (("starting", "200"), ("500", "500")):
        ep.mode = mode
        d, took = dev.wait_answer(name, secondary, timeout=15)
        check("endpoint answers %s: dig answers SECONDARY (%.1f s)" % (
            "200 'starting' (no 'ready' in the body)" if mode == "starting" else "500", took), d)
        st = dev.status(hc)
        v = pop_view(st, DEV_POP) or {}
        check("  … status 'unhealthy (probes)', POP view last_ok false, detail 'HTTP %s' (%s)" % (
            want_detail, v.get("last_detail")),
              st and st.get("status") == "unhealthy (probes)" and v.get("last_ok") is False
              and want_detail in v.get("last_detail", ""), status_brief(st))
        ep.mode = "ready"
        d, took = dev.wait_answer(name, primary, timeout=15)
        check("  … body 'ready' again: dig answers PRIMARY (%.1f s)" % took, d)

    # -- ExpectedStatus
    ep204 = endpoint("http", "expected-status", mode="204")
    hc204 = dev.health_create("ExpectedStatus 204-206", http_check(ep204.port, ExpectedStatus=["204-206"]))
    dev.wait_status(hc204, lambda s: (pop_view(s, DEV_POP) or {}).get("verdict") == "healthy"
                    and (pop_view(s, DEV_POP) or {}).get("last_detail") == "HTTP 204", 10,
                    "ExpectedStatus ['204-206'], endpoint answers 204: POP view healthy")
    ep204.mode = "ready"
    dev.wait_status(hc204, lambda s: s.get("status") == "unhealthy (probes)"
                    and "200" in (pop_view(s, DEV_POP) or {}).get("last_detail", ""), 10,
                    "  … endpoint answers 200: 'unhealthy (probes)' (200 is not expected)")
    ep204.stop()


def sc_restart(t):
    """RecoveryThreshold across a control-plane restart: the verdict is in Raft, the POP views
    are in memory. A check unhealthy before the restart must still need RecoveryThreshold
    successes after it."""
    dev = t.dev
    name = "restart." + ZONE
    primary, secondary = "10.23.0.1", "10.23.0.2"
    ep = endpoint("http", "restart")
    hc = dev.health_create("HTTP, FT 2, RT 3", http_check(ep.port, failure=2, recovery=3))
    dev.apply(ZONE, "failover for the restart case", batch_of("restart", *failover_sets(name, primary, secondary, hc)))
    dev.wait_answer(name, primary, title="endpoint up: PRIMARY")
    ep.stop()
    dev.wait_answer(name, secondary, timeout=20, title="endpoint stopped: SECONDARY")
    dev.wait_status(hc, lambda s: s.get("status") == "unhealthy (probes)", 10, "  … 'unhealthy (probes)'")
    rc = dev.proc.stop()
    check("meridian dev stopped (SIGTERM, exit %s) while the check is unhealthy" % rc, rc == 0)
    ep.start()
    log_at = dev.proc.log_size()
    dev.start(create_zone=False)
    t1 = time.monotonic()
    d = dev.dig(name)
    check("restarted: the persisted verdict holds, first answer SECONDARY (%s)" % d.brief(), d.values == [secondary])
    samples = []
    first_primary = None
    while time.monotonic() - t1 < 20:
        st = dev.status(hc)
        v = pop_view(st, DEV_POP) or {}
        d = dev.dig(name)
        samples.append((round(time.monotonic() - t1, 2), (st or {}).get("status"), v.get("consecutive_successes"),
                        d.values))
        if d.values == [primary]:
            first_primary = time.monotonic() - t1
            break
        time.sleep(0.05)
    st = dev.status(hc)
    v = pop_view(st, DEV_POP) or {}
    # The leader logs a transition once it is INSYNC (with its detection time), which is after
    # the edge has applied it and may answer PRIMARY: wait for the line rather than race it.
    lines, _ = wait_for(lambda: [ln for ln in dev.proc.log_since(log_at).splitlines()
                                 if "health transition" in ln and hc in ln], 10, 0.05)
    lines = lines or []
    check("endpoint up across the restart: PRIMARY again after %s s" % (
        "%.2f" % first_primary if first_primary else "never"), first_primary is not None,
        "\n".join(map(str, samples[-30:])))
    m = re.search(r"(\d+) successes in a row", lines[-1]) if lines else None
    got = int(m.group(1)) if m else None
    check("  … the recovery waited for RecoveryThreshold 3 successes after the restart (transition evidence: "
          "%s in a row; view now %s)" % (got, v.get("consecutive_successes")),
          got is not None and got >= 3, "\n".join(lines + list(map(str, samples[-30:]))))
    ep.stop()


def sc_flapping(t):
    dev = t.dev
    window = 10.0
    # One endpoint per check: the flap pattern counts requests, so two probers on one endpoint
    # would interleave their patterns.
    ep1 = endpoint("http", "flap-1s", mode="flap")
    ep1.flap_every = 1
    ep2 = endpoint("http", "flap-2s", mode="flap")
    ep2.flap_every = 2
    ep3 = endpoint("http", "flap-2s-control", mode="flap")
    ep3.flap_every = 2
    f1 = dev.health_create("flap 1 s, FT 2 RT 3", http_check(ep1.port, failure=2, recovery=3))
    f2 = dev.health_create("flap 2 s, FT 2 RT 3", http_check(ep2.port, failure=2, recovery=3))
    ctl = dev.health_create("flap 2 s, FT 2 RT 2 (control)", http_check(ep3.port, failure=2, recovery=2))
    ids = {f1: "1 s flapper, RT 3", f2: "2 s flapper, RT 3", ctl: "2 s flapper, RT 2 (control)"}

    def all_probed():
        return all(pop_view(dev.status(i), DEV_POP) for i in ids)
    _, took = wait_for(all_probed, 10, 0.2)
    need("the three flapping checks are probed (a POP view each) (%.1f s)" % took, _)
    log_at = dev.proc.log_size()
    served_before = sum(ep1.counts.values())
    seen = {i: [] for i in ids}          # status changes seen by polling
    last = {i: None for i in ids}
    start = time.monotonic()
    while time.monotonic() - start < window:
        for i in ids:
            st = dev.status(i)
            s = st.get("status") if st else None
            if s and s != last[i]:
                if last[i] is not None:
                    seen[i].append((round(time.monotonic() - start, 1), s))
                last[i] = s
        time.sleep(0.2)
    text = dev.proc.log_since(log_at)
    served = sum(ep1.counts.values()) - served_before
    check("RequestInterval 1 s: the 1 s flapper got %d probes in the %.0f s window (7..13)" % (served, window),
          7 <= served <= 13, ep1.counts)
    counts = {i: len(transitions(text, i)) for i in ids}
    for i in (f1, f2):
        check("%s: %d transitions in %.0f s (log), status changes polled %s: <= 2" % (
            ids[i], counts[i], window, seen[i]), counts[i] <= 2 and len(seen[i]) <= 2,
            "\n".join(ln for ln in text.splitlines() if i in ln))
    check("%s: flaps, %d transitions in %.0f s (>= 2: the count is live; hysteresis is what "
          "holds the others)" % (ids[ctl], counts[ctl], window), counts[ctl] >= 2,
          "\n".join(ln for ln in text.splitlines() if ctl in ln))
    info("flapping endpoints served: 1 s %s, 2 s %s, control %s" % (ep1.counts, ep2.counts, ep3.counts))
    ep1.stop()
    ep2.stop()
    ep3.stop()


def sc_tcp(t):
    dev = t.dev
    name = "tcp." + ZONE
    primary, secondary = "10.21.0.1", "10.21.0.2"
    ep = endpoint("tcp", "tcp-primary")
    hc = dev.health_create("TCP", tcp_check(ep.port))
    dev.apply(ZONE, "failover with a TCP check", batch_of("tcp", *failover_sets(name, primary, secondary, hc)))
    dev.wait_answer(name, primary, title="TCP listener up: PRIMARY")
    dev.wait_status(hc, lambda s: (pop_view(s, DEV_POP) or {}).get("last_detail") == "connected"
                    and (pop_view(s, DEV_POP) or {}).get("verdict") == "healthy", 10,
                    "TCP check: POP view healthy, detail 'connected'")
    ep.stop()
    d, took = dev.wait_answer(name, secondary, timeout=20)
    check("TCP listener stopped: SECONDARY after %.2f s (<= 6 s)" % took, d and took <= 6.0, d)
    st = dev.status(hc)
    v = pop_view(st, DEV_POP) or {}
    check("  … 'unhealthy (probes)', detail %r" % v.get("last_detail"),
          st and st.get("status") == "unhealthy (probes)" and "refused" in v.get("last_detail", "").lower(),
          status_brief(st))
    ep.start()
    d, took = dev.wait_answer(name, primary, timeout=20)
    check("TCP listener back: PRIMARY after %.2f s (>= 1 interval: RecoveryThreshold = FailureThreshold 2)"
          % took, d and took >= 0.8, d)
    # FullyQualifiedDomainName alone: the prober resolves it before each probe.
    by_name = tcp_check(ep.port, FullyQualifiedDomainName="localhost")
    del by_name["IPAddress"]
    hc_name = dev.health_create("TCP by FullyQualifiedDomainName alone (localhost)", by_name)
    dev.wait_status(hc_name, lambda s: s.get("status") == "healthy (probes)"
                    and (pop_view(s, DEV_POP) or {}).get("last_detail") == "connected", 10,
                    "TCP check by name only ('localhost', no IPAddress): resolved, connected, healthy")
    unknown = dict(by_name, FullyQualifiedDomainName="no-such-host.invalid")
    hc_unknown = dev.health_create("TCP by a name that does not resolve", unknown)
    dev.wait_status(hc_unknown, lambda s: s.get("status") == "unhealthy (probes)", 15,
                    "TCP check by a name that does not resolve (no-such-host.invalid): unhealthy")
    st = dev.status(hc_unknown)
    info("  … detail: %r" % (pop_view(st, DEV_POP) or {}).get("last_detail"))
    nobody = free_port()
    hc2 = dev.health_create("TCP on a closed port", tcp_check(nobody))
    dev.wait_status(hc2, lambda s: s.get("status") == "unhealthy (probes)", 10,
                    "TCP check on 127.0.0.1:%d where nobody listens: 'unhealthy (probes)' from the start" % nobody)
    hung = endpoint("tcp", "hung-http", hold=True)
    hc3 = dev.health_create("HTTP, TimeoutMs 500, on a server that never answers",
                            http_check(hung.port, TimeoutMs=500))
    dev.wait_status(hc3, lambda s: s.get("status") == "unhealthy (probes)"
                    and "timeout" in (pop_view(s, DEV_POP) or {}).get("last_detail", ""), 10,
                    "HTTP check (TimeoutMs 500) on a server that accepts and never answers: unhealthy, "
                    "detail 'timeout after 500 ms'")
    st = dev.status(hc3)
    v = pop_view(st, DEV_POP) or {}
    check("  … the probe gave up at its timeout: RTT %s ms in 450..1000" % v.get("last_rtt_ms"),
          450 <= (v.get("last_rtt_ms") or 0) <= 1000, status_brief(st))
    hung.stop()


def sc_https(t):
    """HTTPS_STR_MATCH against a self-signed server: SNI from FullyQualifiedDomainName, no
    certificate validation (as Route 53), string match over TLS, failover when it stops."""
    dev = t.dev
    name = "https." + ZONE
    primary, secondary = "10.23.0.1", "10.23.0.2"
    ep = HttpEndpoint("https-primary", tls=True)
    ENDPOINTS.append(ep)
    ep.start()
    cfg = http_check(ep.port, Type="HTTPS_STR_MATCH", SearchString="ready",
                     FullyQualifiedDomainName="api.https.test")
    hc = dev.health_create("HTTPS_STR_MATCH", cfg)
    dev.apply(ZONE, "failover with an HTTPS check", batch_of("https", *failover_sets(name, primary, secondary, hc)))
    dev.wait_status(hc, lambda s: (pop_view(s, DEV_POP) or {}).get("verdict") == "healthy"
                    and (pop_view(s, DEV_POP) or {}).get("last_detail") == "HTTP 200", 10,
                    "HTTPS check on a self-signed server: POP view healthy, detail 'HTTP 200'")
    check("  … the probe sent SNI api.https.test (seen: %s)" % sorted(ep.sni_seen),
          "api.https.test" in ep.sni_seen, sorted(ep.sni_seen))
    dev.wait_answer(name, primary, title="HTTPS endpoint up: PRIMARY")
    # VerifyCertificate: the same self-signed server fails validation.
    strict = dict(cfg, VerifyCertificate=True)
    hc_strict = dev.health_create("HTTPS with VerifyCertificate", strict)
    dev.wait_status(hc_strict, lambda s: s.get("status") == "unhealthy (probes)"
                    and "TLS" in (pop_view(s, DEV_POP) or {}).get("last_detail", ""), 10,
                    "VerifyCertificate on a self-signed server: unhealthy, the detail names the TLS failure")
    ep.mode = "starting"
    d, took = dev.wait_answer(name, secondary, timeout=20)
    check("HTTPS body without the search string: SECONDARY after %.2f s (<= 6 s)" % took,
          d and took <= 6.0, d)
    ep.mode = "ready"
    dev.wait_answer(name, primary, title="HTTPS body ready again: PRIMARY")
    ep.stop()
    d, took = dev.wait_answer(name, secondary, timeout=20)
    check("HTTPS endpoint stopped: SECONDARY after %.2f s (<= 6 s)" % took, d and took <= 6.0, d)
    # health update replaces the config; the verdict carries over; health get shows it.
    cfg["FailureThreshold"] = 3
    path = dev.write("hc-https-update", cfg)
    r = dev.cli("health", "update", hc, "--config", path)
    check("health update %s (FailureThreshold 3)" % hc, r.ok, r)
    r = dev.cli("health", "get", hc)
    got = r.json if isinstance(r.json, dict) else {}
    check("  … health get shows FailureThreshold 3 and the verdict carried over (%s)" % got.get("status"),
          r.ok and (got.get("config") or {}).get("FailureThreshold") == 3
          and got.get("status") == "unhealthy (probes)", r)


def sc_calculated(t):
    dev = t.dev
    name = "calc." + ZONE
    primary, secondary = "10.22.0.1", "10.22.0.2"
    eps = [endpoint("tcp", "child%d" % i) for i in (1, 2, 3)]
    kids = [dev.health_create("child %d" % (i + 1), tcp_check(ep.port)) for i, ep in enumerate(eps)]
    calc = dev.health_create("CALCULATED 2 of 3", {"Type": "CALCULATED", "ChildHealthChecks": kids,
                                                   "HealthThreshold": 2})
    dev.apply(ZONE, "failover guarded by the CALCULATED check",
              batch_of("calculated", *failover_sets(name, primary, secondary, calc)))
    dev.wait_answer(name, primary, title="3 children up: PRIMARY")
    for k in kids:
        dev.wait_status(k, lambda s: (pop_view(s, DEV_POP) or {}).get("verdict") == "healthy", 10,
                        "child %s probed healthy" % k)
    st = dev.status(calc)
    check("the CALCULATED check has no POP view of its own (not probed): %s" % status_brief(st),
          st and not st.get("pops"), status_brief(st))

    eps[0].stop()
    dev.wait_status(kids[0], lambda s: s.get("status") == "unhealthy (probes)", 10,
                    "child 1's endpoint stopped: child 1 'unhealthy (probes)'")
    # Hold: the periodic pass (every second) decides calculated checks; watch 3 passes.
    bad = []
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        st = dev.status(calc)
        d = dev.dig(name)
        if not st or st.get("status", "").startswith("unhealthy") or d.values != [primary]:
            bad.append("%s / dig %s" % (status_brief(st), d.brief()))
        time.sleep(0.2)
    check("  … 2 of 3 children healthy: the CALCULATED check stays healthy, PRIMARY answered (3 s)",
          not bad, "\n".join(bad[:10]))

    eps[1].stop()
    d, took = dev.wait_answer(name, secondary, timeout=20)
    check("child 2's endpoint stopped too: SECONDARY after %.1f s" % took, d)
    st = dev.status(calc)
    check("  … CALCULATED 'unhealthy (probes)', evidence '1 of 3 children healthy (threshold 2)': %r" % (
        st.get("evidence") if st else None),
          st and st.get("status") == "unhealthy (probes)" and "1 of 3" in st.get("evidence", ""),
          status_brief(st))
    eps[0].start()
    d, took = dev.wait_answer(name, primary, timeout=20)
    check("child 1's endpoint back: PRIMARY after %.1f s" % took, d)
    st = dev.status(calc)
    check("  … CALCULATED 'healthy (probes)', evidence '2 of 3': %r" % (st.get("evidence") if st else None),
          st and st.get("status") == "healthy (probes)" and "2 of 3" in st.get("evidence", ""), status_brief(st))
    for ep in eps:
        ep.stop()


# --- the cluster -----------------------------------------------------------------------------

class Cluster(ControlPlane):
    def __init__(self, meridian, tmp):
        self.meridian, self.tmp = meridian, tmp
        self.controls = {}    # id -> dict(port, proc)
        self.edges = {}       # name -> dict(port, proc, pop)

    def addr(self, cid):
        return "127.0.0.1:%d" % self.controls[cid]["port"]

    def alive_ids(self):
        return [i for i in sorted(self.controls) if self.controls[i]["proc"].alive()]

    def api(self, ids=None):
        return ",".join(self.addr(i) for i in (ids if ids is not None else self.alive_ids()))

    def add_control(self, cid):
        port = free_port()
        args = [self.meridian, "control", "--id", str(cid), "--data", os.path.join(self.tmp, "control%d" % cid),
                "--listen", "127.0.0.1:%d" % port]
        self.controls[cid] = {"port": port, "proc": Proc("control%d" % cid, args,
                                                         os.path.join(self.tmp, "control%d.log" % cid))}
        self.start_control(cid)

    def start_control(self, cid):
        c = self.controls[cid]
        c["proc"].start()
        _, took = wait_for(lambda: tcp_open(c["port"]) or not c["proc"].alive(), 20)
        require("control node %d listens on %s (%.1f s)" % (cid, self.addr(cid), took),
                c["proc"].alive() and tcp_open(c["port"]), "\n".join(c["proc"].tail()))

    def add_edge(self, name, pop, control_ids):
        port, mport = free_port(), free_port()
        args = [self.meridian, "edge", "--control", ",".join(self.addr(i) for i in control_ids),
                "--id", name, "--pop", pop, "--cache", os.path.join(self.tmp, "cache-" + name),
                "--identity", name, "--listen", "127.0.0.1:%d" % port,
                "--metrics", "127.0.0.1:%d" % mport, "--workers", "1"]
        proc = Proc(name, args, os.path.join(self.tmp, name + ".log"))
        self.edges[name] = {"port": port, "proc": proc, "pop": pop}
        proc.start()
        state, took = wait_for(lambda: "exited" if not proc.alive() else dig(port, "probe.invalid.").ok, 15, 0.1)
        require("edge %s (%s) answers DNS on 127.0.0.1:%d (%.1f s)" % (name, pop, port, took),
                state is True, "\n".join(proc.tail()))

    def cstatus(self, cid):
        r = self.cli("cluster", "status", api=self.addr(cid), timeout=10)
        return r.json if r.ok and isinstance(r.json, dict) else None

    def leader(self, ids=None):
        for cid in (ids or self.alive_ids()):
            s = self.cstatus(cid)
            if s and s.get("leader") in self.controls and self.controls[s["leader"]]["proc"].alive():
                return s["leader"]
        return None

    def edge_pids(self, *pops):
        return {e["proc"].pid for e in self.edges.values() if e["pop"] in pops}

    def all_edges(self, name, value):
        """{edge: Dig} of the edges that do not answer `value` (empty: all do)."""
        bad = {}
        for n, e in sorted(self.edges.items()):
            d = dig(e["port"], name)
            if not (d.status == "NOERROR" and d.values == [value]):
                bad[n] = d
        return bad

    def wait_all_edges(self, name, value, timeout, title):
        last = {}

        def probe():
            last["bad"] = self.all_edges(name, value)
            return not last["bad"]
        ok, took = wait_for(probe, timeout, 0.1)
        check("%s (%.1f s)" % (title, took), ok,
              "\n".join("%s: %s" % (n, d.brief()) for n, d in last.get("bad", {}).items()))
        return ok

    def kill_leader(self):
        leader = self.leader()
        need("cluster status names a live leader (%s)" % leader, leader)
        self.controls[leader]["proc"].kill()
        return leader

    def restart_control(self, cid):
        self.start_control(cid)
        other = [i for i in self.alive_ids() if i != cid]

        def caught_up():
            for o in other:
                s = self.cstatus(o)
                if not s or not s.get("leader"):
                    continue
                nodes = s.get("nodes", [])
                applied = {n["id"]: n.get("applied_index") for n in nodes}
                if len(nodes) == 3 and all(n.get("reachable") for n in nodes) and len(set(applied.values())) == 1:
                    return applied
            return None
        applied, took = wait_for(caught_up, 30, 0.2)
        check("control node %d restarted and caught up: applied indexes %s (%.1f s)" % (cid, applied, took),
              applied)


def cluster_setup(t):
    cl = Cluster(t.meridian, t.tmp)
    t.cluster = cl
    for cid in (1, 2, 3):
        cl.add_control(cid)
    r = cl.cli("cluster", "init", *sum((["--node", "%d=%s" % (i, cl.addr(i))] for i in (1, 2, 3)), []),
               api=cl.addr(1))
    require("cluster init with 3 nodes", r.ok, r)

    def formed():
        s = cl.cstatus(1)
        nodes = (s or {}).get("nodes", [])
        return s if s and s.get("leader") and len(nodes) == 3 and all(
            n.get("reachable") and n.get("voter") for n in nodes) else None
    s, took = wait_for(formed, 20, 0.2)
    require("cluster status: a leader and 3 reachable voters (%.1f s)" % took, s, json.dumps(s))
    cl.add_edge("e1", "pop1", [1, 2, 3])
    cl.add_edge("e2", "pop2", [2, 3, 1])
    cl.add_edge("e3", "pop3", [3, 1, 2])

    def registered():
        r = cl.cli("edges", "list", timeout=15)
        if not r.ok or not isinstance(r.json, dict):
            return None
        live = {e["id"]: e.get("pop") for e in r.json.get("edges", []) if not e.get("stale")}
        return live if live == {"e1": "pop1", "e2": "pop2", "e3": "pop3"} else None
    live, took = wait_for(registered, 15, 0.2)
    require("edges list: e1/pop1, e2/pop2, e3/pop3 live (%.1f s)" % took, live, cl.cli("edges", "list"))
    r = cl.cli("zone", "create", CZONE)
    require("zone create %s" % CZONE, r.ok, r)
    return cl


def sc_quorum(t):
    cl = t.cluster or cluster_setup(t)
    ep = endpoint("http", "quorum")
    b = cl.health_create("B: Pops pop1..pop3, HealthyQuorum 0.5",
                         http_check(ep.port, Pops=["pop1", "pop2", "pop3"], HealthyQuorum=0.5))
    dq = cl.health_create("D: every POP, default quorum 0.18", http_check(ep.port))
    a = cl.health_create("A: Pops [pop1]", http_check(ep.port, Pops=["pop1"]))
    names = {b: ("qb." + CZONE, "10.30.0.1", "10.30.0.2"),
             dq: ("qd." + CZONE, "10.31.0.1", "10.31.0.2"),
             a: ("qa." + CZONE, "10.32.0.1", "10.32.0.2")}
    label = {b: "B", dq: "D", a: "A"}
    cl.apply(CZONE, "3 failover sets guarded by B, D, A",
             batch_of("quorum", *sum((failover_sets(n, p, s, hc) for hc, (n, p, s) in names.items()), [])))
    for hc, (n, p, _s) in names.items():
        cl.wait_all_edges(n, p, 20, "every edge answers %s PRIMARY %s (check %s)" % (n, p, label[hc]))

    def views_are(hc, want):
        def pred(s):
            got = {v["pop"]: v["verdict"] for v in s.get("pops", [])}
            return got == want
        return pred
    all3 = {"pop1": "healthy", "pop2": "healthy", "pop3": "healthy"}
    cl.wait_status(b, views_are(b, all3), 15, "health status B: one view per POP, 3 views, all healthy")
    cl.wait_status(dq, views_are(dq, all3), 15, "health status D: 3 views, all healthy")
    cl.wait_status(a, views_are(a, {"pop1": "healthy"}), 15,
                   "health status A (Pops [pop1]): exactly one view, pop1 (pop2/pop3 do not probe it)")

    # -- reachable from pop1 only
    ep.allow_pids = cl.edge_pids("pop1")
    one = {"pop1": "healthy", "pop2": "unhealthy", "pop3": "unhealthy"}
    st = cl.wait_status(b, lambda s: views_are(b, one)(s) and s.get("status") == "unhealthy (probes)", 15,
                        "endpoint reachable from pop1 only: B's views pop1 healthy, pop2/pop3 unhealthy "
                        "-> 1/3 <= 0.5: 'unhealthy (probes)'")
    if st:
        v2 = pop_view(st, "pop2") or {}
        check("  … pop2's last detail is the endpoint's 503 (%r)" % v2.get("last_detail"),
              "503" in v2.get("last_detail", ""), status_brief(st))
        ev = st.get("evidence", "")
        check("  … evidence lists the three POPs: %r" % ev, all(p in ev for p in ("pop1", "pop2", "pop3")), ev)
    cl.wait_status(dq, views_are(dq, one), 10, "D: same views (pop1 healthy, pop2/pop3 unhealthy)")
    st = cl.status(dq)
    check("  … D: 1/3 > 0.18: not unhealthy (%s)" % (st or {}).get("status"),
          st and not st.get("status", "").startswith("unhealthy"), status_brief(st))
    st = cl.status(a)
    check("  … A (pop1 only): not unhealthy (%s)" % (st or {}).get("status"),
          st and not st.get("status", "").startswith("unhealthy"), status_brief(st))
    cl.wait_all_edges(names[b][0], names[b][2], 10, "every edge answers qb SECONDARY (B unhealthy)")
    for hc in (dq, a):
        bad = cl.all_edges(names[hc][0], names[hc][1])
        check("every edge still answers %s PRIMARY (check %s healthy)" % (names[hc][0], label[hc]), not bad,
              "\n".join("%s: %s" % (n, d.brief()) for n, d in bad.items()))
    info("quorum endpoint so far: %s" % ep.counts)

    # -- reachable from pop1 and pop2
    ep.allow_pids = cl.edge_pids("pop1", "pop2")
    two = {"pop1": "healthy", "pop2": "healthy", "pop3": "unhealthy"}
    cl.wait_status(b, lambda s: views_are(b, two)(s) and s.get("status") == "healthy (probes)", 15,
                   "reachable from pop1 and pop2: 2/3 > 0.5: B 'healthy (probes)'")
    cl.wait_all_edges(names[b][0], names[b][1], 10, "every edge answers qb PRIMARY again")

    # -- outage everywhere
    ep.stop()
    ep.allow_pids = None
    for hc in names:
        cl.wait_status(hc, lambda s: s.get("status") == "unhealthy (probes)", 15,
                       "endpoint stopped: %s 'unhealthy (probes)'" % label[hc])
    for hc, (n, _p, s) in names.items():
        cl.wait_all_edges(n, s, 10, "every edge answers %s SECONDARY" % n)

    # -- the leader killed during the outage: no spurious flip
    leader = cl.kill_leader()
    killed_at = time.monotonic()
    survivors = cl.alive_ids()
    info("SIGKILLed leader node %d during the outage" % leader)
    flips = []
    new_leader = None
    elected_after = None
    end = None
    while True:
        now = time.monotonic()
        if new_leader is None:
            new_leader = cl.leader(survivors)
            if new_leader is not None:
                elected_after = now - killed_at
                end = now + 6.0          # 6 health passes and 6 probe rounds under the new leader
                new_log_at = cl.controls[new_leader]["proc"].log_size()
        if end is not None and now >= end:
            break
        if now - killed_at > 20:
            break
        for cid in survivors:
            for hc in names:
                st = cl.status(hc, api=cl.addr(cid))
                if st and st.get("status") != "unhealthy (probes)":
                    flips.append("%.1f s node %d %s: %s" % (now - killed_at, cid, label[hc], status_brief(st)))
        for hc, (n, _p, s) in names.items():
            for e, d in cl.all_edges(n, s).items():
                flips.append("%.1f s edge %s %s: %s" % (now - killed_at, e, n, d.brief()))
        time.sleep(0.1)
    need("a new leader among %s: %s (%.1f s after the kill)" % (survivors, new_leader, elected_after or -1),
         new_leader is not None)
    check("leader killed during the outage: no spurious flip for %.1f s (every check 'unhealthy (probes)' "
          "on both survivors, every edge answers the secondaries)" % (time.monotonic() - killed_at),
          not flips, "\n".join(flips[:20]))
    text = cl.controls[new_leader]["proc"].log_since(new_log_at)
    up = [x for x in transitions(text) if x[0] in names and x[1]]
    check("new leader %d's log: no 'healthy=true' transition for the checks meanwhile" % new_leader, not up, up)

    # -- the endpoint returns: the new leader writes the recovery
    log_at = cl.controls[new_leader]["proc"].log_size()
    ep.start()
    for hc in names:
        cl.wait_status(hc, lambda s: s.get("status") == "healthy (probes)", 15,
                       "endpoint back: %s 'healthy (probes)'" % label[hc])
    for hc, (n, p, _s) in names.items():
        cl.wait_all_edges(n, p, 10, "every edge answers %s PRIMARY" % n)
    got, _ = wait_for(lambda: {x[0] for x in transitions(cl.controls[new_leader]["proc"].log_since(log_at))
                               if x[1]} >= set(names), 5)
    check("new leader %d's log: 'health transition … healthy=true' for B, D and A" % new_leader, got,
          "\n".join(ln for ln in cl.controls[new_leader]["proc"].log_since(log_at).splitlines()
                    if "transition" in ln))
    st = cl.status(b)
    ev = (st or {}).get("evidence", "")
    healthy_pops = re.findall(r"(pop\d): healthy \(", ev)
    check("B after recovery: 3 views again, the evidence names >= 2 of 3 POPs healthy (quorum 0.5): %r" % ev,
          st and len(st.get("pops", [])) == 3 and len(healthy_pops) >= 2
          and all(p in ev for p in ("pop1", "pop2", "pop3")), status_brief(st))
    cl.restart_control(leader)
    ep.stop()


def sc_leaderkill(t):
    cl = t.cluster or cluster_setup(t)
    ep = endpoint("http", "leaderkill")
    hc = cl.health_create("failover primary (interval 1, FT 2)", http_check(ep.port, failure=2))
    name, primary, secondary = "fk." + CZONE, "10.40.0.1", "10.40.0.2"
    cl.apply(CZONE, "failover set fk", batch_of("leaderkill", *failover_sets(name, primary, secondary, hc)))
    cl.wait_all_edges(name, primary, 20, "every edge answers %s PRIMARY" % name)
    cl.wait_status(hc, lambda s: len([v for v in s.get("pops", []) if v["verdict"] == "healthy"]) == 3, 15,
                   "the check is probed from the 3 POPs")
    leader = cl.leader()
    need("cluster status names the leader (%s)" % leader, leader)
    ep.stop()
    t0 = time.monotonic()
    cl.controls[leader]["proc"].kill()
    killed = time.monotonic() - t0
    info("endpoint stopped, leader node %d SIGKILLed %.0f ms later" % (leader, killed * 1000))
    first = {}
    while time.monotonic() - t0 < 20 and len(first) < len(cl.edges):
        for n, e in cl.edges.items():
            if n not in first and answers(e["port"], name, secondary):
                first[n] = time.monotonic() - t0
        time.sleep(0.02)
    worst = max(first.values()) if len(first) == len(cl.edges) else None
    check("every edge answers SECONDARY within 10 s of the endpoint's death: %s" % (
        ", ".join("%s %.2f s" % (n, s) for n, s in sorted(first.items()))),
          worst is not None and worst <= 10.0, first)
    # ... and keeps answering it (no flip back while the new leader settles).
    bad = []
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        bad += ["%s: %s" % (n, d.brief()) for n, d in cl.all_edges(name, secondary).items()]
        time.sleep(0.1)
    check("  … and every edge keeps answering SECONDARY (3 s)", not bad, "\n".join(bad[:10]))
    new_leader = cl.leader()
    info("new leader: node %s" % new_leader)
    ep.start()
    cl.wait_all_edges(name, primary, 15, "endpoint back: every edge answers PRIMARY")
    cl.restart_control(leader)
    ep.stop()


def sc_hungcontrol(t):
    """An edge whose --control list starts with a control node that accepts connections and
    never answers (a hung process, or a host behind a black hole): the other nodes are up, so
    the edge's probing rate and its reports must not suffer. A 4th edge, e4 in pop4, is started
    for it (and stopped at the end)."""
    cl = t.cluster or cluster_setup(t)
    hung = endpoint("tcp", "hung-control", hold=True)
    port, mport = free_port(), free_port()
    args = [cl.meridian, "edge", "--control",
            ",".join(["127.0.0.1:%d" % hung.port] + [cl.addr(i) for i in (1, 2, 3)]),
            "--id", "e4", "--pop", "pop4", "--cache", os.path.join(cl.tmp, "cache-e4"), "--identity", "e4",
            "--listen", "127.0.0.1:%d" % port, "--metrics", "127.0.0.1:%d" % mport, "--workers", "1"]
    e4 = Proc("e4", args, os.path.join(cl.tmp, "e4.log")).start()
    try:
        ok, took = wait_for(lambda: dig(port, "probe.invalid.").ok or not e4.alive(), 30, 0.2)
        need("edge e4 (pop4, --control <hung node>,1,2,3) answers DNS (%.1f s)" % took, ok and e4.alive(),
             "\n".join(e4.tail()))
        ep = endpoint("http", "pop4-target")
        hc = cl.health_create("Pops [pop4], interval 1, FT 2", http_check(ep.port, failure=2, Pops=["pop4"]))
        name, primary, secondary = "h4." + CZONE, "10.50.0.1", "10.50.0.2"
        cl.apply(CZONE, "failover set h4 guarded by the pop4 check",
                 batch_of("hung", *failover_sets(name, primary, secondary, hc)))
        ok, took = wait_for(lambda: answers(port, name, primary), 30, 0.1)
        need("e4 answers %s PRIMARY (%.1f s)" % (name, took), ok)
        cl.wait_status(hc, lambda s: (pop_view(s, "pop4") or {}).get("verdict") == "healthy", 15,
                       "the pop4 check is probed by e4")
        ep.allow_pids = {e4.pid}
        before = dict(ep.counts)
        window = 10.0
        time.sleep(window)        # an observation window: probes counted at the endpoint
        after = dict(ep.counts)
        ep.allow_pids = None
        n = after.get("allowed", 0) - before.get("allowed", 0)
        check("e4 probes its 1 s check at its interval although its first control node hangs: %d probes "
              "in %.0f s (>= 8)" % (n, window), n >= 8, "endpoint counts before %s after %s" % (before, after))
        ep.stop()
        t0 = time.monotonic()
        first = {}
        edges = dict((k, v["port"]) for k, v in cl.edges.items())
        edges["e4"] = port
        while time.monotonic() - t0 < 20 and len(first) < len(edges):
            for e, p in edges.items():
                if e not in first and answers(p, name, secondary):
                    first[e] = time.monotonic() - t0
            time.sleep(0.02)
        worst = max(first.values()) if len(first) == len(edges) else None
        check("endpoint stopped: every edge answers SECONDARY within 4 s (interval 1, FT 2; target 2.5 s): %s" % (
            ", ".join("%s %.2f s" % kv for kv in sorted(first.items()))), worst is not None and worst <= 4.0, first)
    finally:
        e4.stop()
        hung.stop()


# --- main ------------------------------------------------------------------------------------

class T:
    def __init__(self, meridian, tmp):
        self.meridian, self.tmp = meridian, tmp
        self.dev = None
        self.cluster = None


DEV_SCENARIOS = [("failover", sc_failover), ("flapping", sc_flapping), ("tcp", sc_tcp), ("https", sc_https),
                 ("calculated", sc_calculated), ("restart", sc_restart)]
CLUSTER_SCENARIOS = [("quorum", sc_quorum), ("leaderkill", sc_leaderkill), ("hungcontrol", sc_hungcontrol)]
SCENARIOS = DEV_SCENARIOS + CLUSTER_SCENARIOS


def run_scenario(t, name, fn):
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
    tmp = tempfile.mkdtemp(prefix="meridian-health-e2e-")
    # A private link (or copy): a concurrent `cargo build` replaces the file, not this inode.
    os.makedirs(os.path.join(tmp, "bin"))
    binary = os.path.join(tmp, "bin", "meridian")
    try:
        os.link(meridian, binary)
    except OSError:
        shutil.copy2(meridian, binary)
    started = time.monotonic()
    log("meridian: %s (copied to %s)\ndata and logs: %s" % (meridian, binary, tmp))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    t = T(binary, tmp)
    aborted = None
    try:
        dev_list = [(n, f) for n, f in DEV_SCENARIOS if not only or n in only]
        cl_list = [(n, f) for n, f in CLUSTER_SCENARIOS if not only or n in only]
        if dev_list:
            log("\n== meridian dev --pop %s" % DEV_POP)
            t.dev = Dev(binary, tmp)
            t.dev.start()
            for name, fn in dev_list:
                run_scenario(t, name, fn)
            rc = t.dev.proc.stop()
            check("meridian dev stops on SIGTERM (exit %s)" % rc, rc == 0)
        if cl_list:
            log("\n== cluster: 3 control nodes, edges e1/pop1, e2/pop2, e3/pop3")
            cluster_setup(t)
            for name, fn in cl_list:
                run_scenario(t, name, fn)
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
        for ep in ENDPOINTS:
            try:
                ep.stop()
            except Exception:  # noqa: BLE001
                pass
        failed = [n for n, ok in results if not ok]
        if failed or aborted:
            log("\n== log tails")
            for p in ALL_PROCS:
                log("--- %s (%s)" % (p.name, p.logpath))
                for line in p.tail(25):
                    log("    " + line)
        log("\n%d checks, %d passed, %d failed%s; %.1f s" % (
            len(results), len(results) - len(failed), len(failed),
            "; aborted: " + aborted if aborted else "", time.monotonic() - started))
        for n in failed:
            log("  FAILED: %s" % n)
        log("%d passed, %d failed" % (len(results) - len(failed), len(failed)))
        shutil.rmtree(os.path.join(tmp, "bin"), ignore_errors=True)
        if args.keep or failed or aborted:
            log("kept %s (logs)" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if (failed or aborted) else 0


if __name__ == "__main__":
    sys.exit(main())
