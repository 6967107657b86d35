#!/usr/bin/env python3
"""End-to-end test: the real `meridian edge` binary queried by real clients.

    python3 tests/e2e/e2e.py [--meridian PATH] [--keep] [-v]

What it does, against a copy of tests/zones in a temporary directory:
  * dig and kdig over UDP and TCP, IPv4 (127.0.0.1) and IPv6 ([::1]): answers,
    NXDOMAIN/NODATA, AA, truncation and the automatic TCP retry;
  * NSID (`dig +nsid`, `kdig +nsid`) and `dig CH TXT id.server` show --identity;
  * TCP: kdig sends several queries on one connection (+keepopen); python sends
    3 queries in one write, and a length prefix split across two writes;
  * SIGHUP: a changed record is served after the reload; a zone file broken at
    a known line keeps its old data while other zones reload, and stderr names
    the file and the line;
  * SIGTERM: the process exits 0 promptly;
  * wildcard bind: `--listen 0.0.0.0:PORT` (and `[::]:PORT`), a query to
    127.0.0.2 is answered from 127.0.0.2 (checked with recvfrom).

Needs dig (bind9-dnsutils), kdig (knot-dnsutils) and python3. Ports: E2E_PORT
and E2E_PORT2 (default: free ports). Exit status 0 when every check passes.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
IDENTITY = "e2e.meridian"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

results = []   # (name, ok, detail)
VERBOSE = False


def check(name, ok, detail=""):
    results.append((name, bool(ok), detail))
    mark = "PASS" if ok else "FAIL"
    print("%s  %s" % (mark, name))
    if detail and (not ok or VERBOSE):
        for line in str(detail).rstrip().splitlines():
            print("        " + line)
    return ok


def run(cmd, timeout=15):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        return -1, "timeout: %s" % e


def dig(server, port, *args):
    return run(["dig", "@" + server, "-p", str(port), "+time=2", "+tries=1", "+norec"] + list(args))


def kdig(server, port, *args):
    return run(["kdig", "@" + server, "-p", str(port), "+time=2", "+retry=0", "+norec"] + list(args))


def answer_lines(out):
    """RRs of the ANSWER section of dig/kdig output, whitespace-normalised."""
    lines, in_answer = [], False
    for line in out.splitlines():
        s = line.strip()
        if s.startswith(";; ANSWER SECTION"):
            in_answer = True
            continue
        if in_answer:
            if not s or s.startswith(";;"):
                in_answer = False
                continue
            lines.append(" ".join(s.split()))
    return lines


def has_rr(out, owner, rtype, rdata):
    want = (owner.lower(), rtype, rdata)
    for line in answer_lines(out):
        p = line.split(None, 4)
        if len(p) == 5 and (p[0].lower(), p[3], p[4]) == want:
            return True
    return False


def status_of(out):
    m = re.search(r"status: (\w+)", out)
    return m.group(1) if m else None


def flags_of(out):
    m = re.search(r";; flags: ([a-z ]*)[;]", out)
    return set(m.group(1).split()) if m else set()


def free_port(hosts):
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        ok = True
        for host in hosts:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            for typ in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                t = socket.socket(fam, typ)
                try:
                    t.bind((host, port))
                except OSError:
                    ok = False
                finally:
                    t.close()
        if ok:
            return port
    raise RuntimeError("no free port")


# --- raw DNS over sockets ---------------------------------------------------------------------

def query_wire(qid, name, qtype=1, edns=True):
    q = struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 1 if edns else 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack("!HH", qtype, 1)
    if edns:
        q += b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
    return q


def parse_reply(wire):
    """(id, rcode, aa, answers as [(type, rdata bytes)]) of a simple reply."""
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", wire[:12])
    pos = 12

    def skip_name(p):
        while True:
            ln = wire[p]
            if ln == 0:
                return p + 1
            if ln & 0xC0:
                return p + 2
            p += 1 + ln
    for _ in range(qd):
        pos = skip_name(pos) + 4
    answers = []
    for _ in range(an):
        pos = skip_name(pos)
        rtype, _, _, rdlen = struct.unpack("!HHIH", wire[pos:pos + 10])
        answers.append((rtype, wire[pos + 10:pos + 10 + rdlen]))
        pos += 10 + rdlen
    return qid, flags & 0xF, bool(flags & 0x0400), answers


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed after %d of %d octets" % (len(buf), n))
        buf += chunk
    return buf


def tcp_replies(host, port, chunks, count, pause=0.2):
    """Send `chunks` (with a pause between them) on one connection; read `count` replies."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
        for i, c in enumerate(chunks):
            if i:
                time.sleep(pause)
            s.sendall(c)
        out = []
        for _ in range(count):
            n = struct.unpack("!H", recv_exact(s, 2))[0]
            out.append(recv_exact(s, n))
        return out
    finally:
        s.close()


def framed(wire):
    return struct.pack("!H", len(wire)) + wire


# --- the server ------------------------------------------------------------------------------

class Meridian:
    def __init__(self, binary, zonedir, listens, log):
        self.cmd = [binary, "edge", "--zones", zonedir, "--identity", IDENTITY, "--workers", "2"]
        for a in listens:
            self.cmd += ["--listen", a]
        self.logpath = log
        self.proc = None

    def start(self):
        self.logf = open(self.logpath, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.logf, stderr=self.logf, start_new_session=True)
        return self

    def log(self):
        """stderr so far, without ANSI colour sequences."""
        with open(self.logpath, errors="replace") as f:
            return ANSI.sub("", f.read())

    def signal(self, sig):
        self.proc.send_signal(sig)   # our own child, by PID

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc:
            self.logf.close()


def wait_ready(host, port, proc, timeout=15):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.settimeout(0.3)
        try:
            s.sendto(query_wire(1, "example.test", 6, edns=False), (host, port))
            data, _ = s.recvfrom(4096)
            if parse_reply(data)[1] == 0:
                return True
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(0.1)
    return False


def poll(fn, timeout=10.0, step=0.1):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


# --- the checks ------------------------------------------------------------------------------

def client_checks(port):
    for host in ("127.0.0.1", "::1"):
        fam = "IPv6" if ":" in host else "IPv4"
        for transport in ("udp", "tcp"):
            extra = ["+tcp"] if transport == "tcp" else ["+notcp"]
            tag = "%s %s" % (fam, transport.upper())
            rc, out = dig(host, port, "www.example.test", "A", *extra)
            check("dig %s: www.example.test A" % tag,
                  rc == 0 and has_rr(out, "www.example.test.", "A", "192.0.2.80") and "aa" in flags_of(out), out)
            rc, out = dig(host, port, "WwW.ExAmPlE.tEsT", "AAAA", *extra)
            check("dig %s: mixed-case qname, AAAA" % tag,
                  rc == 0 and has_rr(out, "WwW.ExAmPlE.tEsT.", "AAAA", "2001:db8::80"), out)
            rc, out = dig(host, port, "nothere.example.test", "A", *extra)
            check("dig %s: NXDOMAIN with AA" % tag,
                  status_of(out) == "NXDOMAIN" and "aa" in flags_of(out) and "SOA" in out, out)
            rc, out = kdig(host, port, "example.test", "MX", "+tcp" if transport == "tcp" else "+notcp")
            check("kdig %s: example.test MX" % tag,
                  rc == 0 and has_rr(out, "example.test.", "MX", "10 mail.example.test.")
                  and has_rr(out, "example.test.", "MX", "30 mx.example.net."), out)
            rc, out = kdig(host, port, "host.dname-in.example.test", "A", "+tcp" if transport == "tcp" else "+notcp")
            check("kdig %s: DNAME synthesis" % tag,
                  rc == 0 and has_rr(out, "host.dname-in.example.test.", "CNAME", "host.target.example.test.")
                  and has_rr(out, "host.target.example.test.", "A", "192.0.2.131"), out)
            rc, out = kdig(host, port, "foo.wild.example.test", "TXT", "+tcp" if transport == "tcp" else "+notcp")
            check("kdig %s: wildcard synthesis" % tag,
                  rc == 0 and has_rr(out, "foo.wild.example.test.", "TXT", '"synthesized"'), out)
            rc, out = dig(host, port, "host.deleg.example.test", "A", *extra)
            check("dig %s: referral (AA clear, NS in authority, glue)" % tag,
                  status_of(out) == "NOERROR" and "aa" not in flags_of(out)
                  and re.search(r"deleg\.example\.test\.\s+\d+\s+IN\s+NS\s+ns1\.deleg\.example\.test\.", out)
                  and re.search(r"ns1\.deleg\.example\.test\.\s+\d+\s+IN\s+A\s+192\.0\.2\.150", out), out)
            rc, out = dig(host, port, "www.example.org", "A", *extra)
            check("dig %s: REFUSED outside our zones" % tag, status_of(out) == "REFUSED", out)

        # identity
        rc, out = dig(host, port, "+nsid", "example.test", "SOA")
        check("dig %s: +nsid shows the identity" % fam,
              re.search(r'NSID: .*\("%s"\)' % re.escape(IDENTITY), out) is not None, out)
        rc, out = kdig(host, port, "+nsid", "example.test", "SOA")
        check("kdig %s: +nsid shows the identity" % fam, IDENTITY in out, out)
        rc, out = dig(host, port, "CH", "TXT", "id.server")
        check("dig %s: CH TXT id.server" % fam,
              re.search(r'id\.server\.\s+0\s+CH\s+TXT\s+"%s"' % re.escape(IDENTITY), out) is not None, out)
        rc, out = dig(host, port, "CH", "TXT", "hostname.bind", "+tcp")
        check("dig %s TCP: CH TXT hostname.bind" % fam, ('"%s"' % IDENTITY) in out, out)

    # truncation: 100 A records do not fit 1232 octets
    rc, out = dig("127.0.0.1", port, "big100.example.test", "A", "+ignore", "+bufsize=1232")
    check("dig UDP: big100 A truncated (TC, +ignore)", "tc" in flags_of(out), out)
    rc, out = dig("127.0.0.1", port, "big100.example.test", "A", "+bufsize=1232")
    check("dig: retries a truncated answer over TCP and gets all 100 A",
          len([x for x in answer_lines(out) if " A " in x]) == 100, out[-600:])
    rc, out = kdig("::1", port, "bigtxt.example.test", "TXT")
    check("kdig IPv6: 2 KB TXT (TC then TCP)", len(answer_lines(out)) == 8, out[-600:])


def tcp_checks(port):
    # kdig: several queries on one TCP connection
    rc, out = kdig("127.0.0.1", port, "+tcp", "+keepopen", "www.example.test", "A",
                   "mail.example.test", "AAAA", "ns1.example.test", "A")
    check("kdig +tcp +keepopen: 3 queries on one connection",
          rc == 0 and has_rr(out, "www.example.test.", "A", "192.0.2.80")
          and has_rr(out, "mail.example.test.", "AAAA", "2001:db8::25")
          and has_rr(out, "ns1.example.test.", "A", "192.0.2.53"), out)
    # python: three queries in one write, answered in order
    qs = [query_wire(101, "www.example.test"), query_wire(102, "mail.example.test", 28),
          query_wire(103, "nothere.example.test")]
    for host in ("127.0.0.1", "::1"):
        try:
            replies = tcp_replies(host, port, [b"".join(framed(q) for q in qs)], 3)
            got = [parse_reply(r) for r in replies]
            ok = ([g[0] for g in got] == [101, 102, 103] and got[0][1] == 0 and
                  got[0][3] == [(1, socket.inet_aton("192.0.2.80"))] and
                  got[1][3] == [(28, socket.inet_pton(socket.AF_INET6, "2001:db8::25"))] and got[2][1] == 3)
            check("TCP %s: 3 pipelined queries in one write" % host, ok, repr(got))
        except Exception as e:  # noqa: BLE001
            check("TCP %s: 3 pipelined queries in one write" % host, False, repr(e))
    # a length prefix split across two writes, then a message split in its middle
    q = framed(query_wire(201, "www.example.test"))
    for split, what in ((1, "length prefix"), (9, "message")):
        try:
            r = tcp_replies("127.0.0.1", port, [q[:split], q[split:]], 1, pause=0.3)
            got = parse_reply(r[0])
            check("TCP: %s split across two writes" % what,
                  got[0] == 201 and got[3] == [(1, socket.inet_aton("192.0.2.80"))], repr(got))
        except Exception as e:  # noqa: BLE001
            check("TCP: %s split across two writes" % what, False, repr(e))
    # two queries where the second one's length prefix arrives with the end of the first
    q1, q2 = framed(query_wire(301, "ns1.example.test")), framed(query_wire(302, "ns2.example.test"))
    stream = q1 + q2
    try:
        r = tcp_replies("127.0.0.1", port, [stream[:len(q1) + 1], stream[len(q1) + 1:]], 2, pause=0.3)
        ids = [parse_reply(x)[0] for x in r]
        check("TCP: second length prefix split across writes", ids == [301, 302], repr(ids))
    except Exception as e:  # noqa: BLE001
        check("TCP: second length prefix split across writes", False, repr(e))


def reload_checks(srv, port, zonedir):
    path = os.path.join(zonedir, "example.test.zone")
    other = os.path.join(zonedir, "other.test.zone")
    with open(path) as f:
        text = f.read()
    new = text.replace("2024060101 ; serial", "2024060102 ; serial")
    new = re.sub(r"(?m)^www(\s+)A(\s+)192\.0\.2\.80$", r"www\1A\g<2>192.0.2.81", new)
    assert new != text and "192.0.2.81" in new
    with open(path, "w") as f:
        f.write(new)
    srv.signal(signal.SIGHUP)

    def www():
        rc, out = dig("127.0.0.1", port, "www.example.test", "A")
        return out
    out = poll(lambda: (lambda o: o if has_rr(o, "www.example.test.", "A", "192.0.2.81") else None)(www()))
    check("SIGHUP: the changed record is served", out is not None, www())
    rc, out = kdig("::1", port, "example.test", "SOA", "+tcp")
    check("SIGHUP: new serial over TCP/IPv6", "2024060102" in out, out)

    # break example.test at a known line; change other.test so we can see that it still reloads
    lines = new.splitlines(True)
    broken_line = 40
    lines.insert(broken_line - 1, "broken-record  A  192.0.2.300   ; not an IPv4 address\n")
    with open(path, "w") as f:
        f.write("".join(lines))
    with open(other) as f:
        otext = f.read()
    with open(other, "w") as f:
        f.write(otext.replace("host   A    192.0.2.201", "host   A    192.0.2.202"))
    log_before = len(srv.log())
    srv.signal(signal.SIGHUP)

    def other_reloaded():
        rc, out = dig("127.0.0.1", port, "host.other.test", "A")
        return out if has_rr(out, "host.other.test.", "A", "192.0.2.202") else None
    check("SIGHUP with a broken zone: the other zones still reload", poll(other_reloaded) is not None,
          dig("127.0.0.1", port, "host.other.test", "A")[1])

    def logged():
        tail = srv.log()[log_before:]
        return tail if ("example.test.zone" in tail and re.search(r"\bline %d\b" % broken_line, tail)) else None
    tail = poll(logged, timeout=5)
    check("SIGHUP with a broken zone: stderr names the file and line %d" % broken_line, tail is not None,
          srv.log()[log_before:] or "(nothing logged)")
    rc, out = dig("127.0.0.1", port, "www.example.test", "A")
    check("SIGHUP with a broken zone: the old data is still served",
          has_rr(out, "www.example.test.", "A", "192.0.2.81"), out)
    rc, out = dig("::1", port, "broken-record.example.test", "A", "+tcp")
    check("SIGHUP with a broken zone: nothing of the broken file is served", status_of(out) == "NXDOMAIN", out)
    rc, out = dig("127.0.0.1", port, "example.test", "SOA")
    check("SIGHUP with a broken zone: serial unchanged", "2024060102" in out, out)

    # fix it again: the next SIGHUP loads it
    with open(path, "w") as f:
        f.write(new.replace("192.0.2.81", "192.0.2.82"))
    srv.signal(signal.SIGHUP)
    out = poll(lambda: (lambda o: o if has_rr(o, "www.example.test.", "A", "192.0.2.82") else None)(www()))
    check("SIGHUP after fixing the file: the zone loads again", out is not None, www())


def wildcard_bind_checks(binary, zonedir, workdir):
    port = int(os.environ.get("E2E_PORT2") or free_port(["0.0.0.0", "::"]))
    srv = Meridian(binary, zonedir, ["0.0.0.0:%d" % port, "[::]:%d" % port],
                   os.path.join(workdir, "meridian-wildcard.log")).start()
    try:
        if not check("wildcard bind: serving on 0.0.0.0:%d and [::]:%d" % (port, port),
                     wait_ready("127.0.0.1", port, srv.proc), srv.log()):
            return
        for dest in ("127.0.0.2", "127.0.0.1", "127.1.2.3", "::1"):
            fam = socket.AF_INET6 if ":" in dest else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(3)
            try:
                s.sendto(query_wire(77, "www.example.test"), (dest, port))
                data, addr = s.recvfrom(4096)
                got = parse_reply(data)
                check("wildcard bind: UDP query to %s answered from %s" % (dest, dest),
                      addr[0] == dest and addr[1] == port and got[0] == 77 and got[1] == 0,
                      "reply came from %r; %r" % (addr, got))
            except Exception as e:  # noqa: BLE001
                check("wildcard bind: UDP query to %s answered from %s" % (dest, dest), False, repr(e))
            finally:
                s.close()
        try:
            r = tcp_replies("127.0.0.2", port, [framed(query_wire(78, "mail.example.test"))], 1)
            check("wildcard bind: TCP query to 127.0.0.2", parse_reply(r[0])[0] == 78)
        except Exception as e:  # noqa: BLE001
            check("wildcard bind: TCP query to 127.0.0.2", False, repr(e))
    finally:
        srv.stop()


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--meridian", default=os.path.join(REPO, "target", "release", "meridian"))
    ap.add_argument("--zones", default=os.path.join(REPO, "tests", "zones"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    VERBOSE = args.verbose
    for tool in ("dig", "kdig"):
        if shutil.which(tool) is None:
            print("%s not found (apt-get install bind9-dnsutils knot-dnsutils)" % tool)
            return 2
    binary = os.path.abspath(args.meridian)
    if not os.access(binary, os.X_OK):
        print("not executable: %s" % binary)
        return 2
    workdir = tempfile.mkdtemp(prefix="meridian-e2e-")
    zonedir = os.path.join(workdir, "zones")
    shutil.copytree(args.zones, zonedir)
    port = int(os.environ.get("E2E_PORT") or free_port(["127.0.0.1", "::1"]))
    srv = Meridian(binary, zonedir, ["127.0.0.1:%d" % port, "[::1]:%d" % port],
                   os.path.join(workdir, "meridian.log")).start()
    try:
        ready = wait_ready("127.0.0.1", port, srv.proc) and wait_ready("::1", port, srv.proc)
        if not check("meridian serves on 127.0.0.1:%d and [::1]:%d" % (port, port), ready, srv.log()):
            return 1
        client_checks(port)
        tcp_checks(port)
        reload_checks(srv, port, zonedir)
        # SIGTERM: exits 0, promptly
        t0 = time.time()
        srv.signal(signal.SIGTERM)
        try:
            rc = srv.proc.wait(5)
            check("SIGTERM: exit status 0 within 5 s (%.2f s)" % (time.time() - t0), rc == 0, "exit %s" % rc)
        except subprocess.TimeoutExpired:
            check("SIGTERM: exit status 0 within 5 s", False, "still running after 5 s")
        check("no panic in the log", "panicked" not in srv.log(), srv.log())
    finally:
        srv.stop()
    wildcard_bind_checks(binary, args.zones, workdir)
    examples = os.path.join(REPO, "deploy", "examples", "zones")
    if os.path.isdir(examples):
        rc, out = run([binary, "check", "--zones", examples])
        check("meridian check: deploy/examples/zones loads", rc == 0 and "example.com." in out, out)
    failed = [r for r in results if not r[1]]
    print("\n%d checks, %d failed" % (len(results), len(failed)))
    for name, _, _ in failed:
        print("  FAILED: " + name)
    if args.keep or failed:
        print("work directory kept: %s" % workdir)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
