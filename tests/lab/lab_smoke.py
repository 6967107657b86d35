#!/usr/bin/env python3
"""Smoke test of the anycast lab (tests/lab/lab.sh), as root:

    python3 tests/lab/lab_smoke.py [--keep]

  1. `lab.sh up` (which itself waits for end-to-end answers) within 90 s;
  2. from c1 and c2, dig @192.0.2.53 and @2001:db8::53 www.gameday.test A +nsid: 198.51.100.1
     from pop1-e1; `lab.sh route` prints pop1 and `lab.sh status` exits 0;
  3. `lab.sh edge-kill pop1` (SIGKILL): the router's route to both anycast addresses moves to
     pop2 within 3 s (the edge's liveness tun dies with it, BIRD withdraws) and both clients get
     answers from pop2-e1 over v4 and v6;
  4. `lab.sh edge-start pop1`: the route returns to pop1 and clients get pop1-e1 again;
  5. `lab.sh down`: no namespace with the lab prefix and no live lab process remain (zombies,
     which this machine's PID 1 does not reap, are counted separately and are not processes).

Waits are polls with deadlines; no fixed sleep decides a result. Exit 0 when every check
passes, 1 otherwise.
"""
import argparse
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LAB = os.path.join(HERE, "lab.sh")
PREFIX = os.environ.get("LAB_PREFIX", "mrd-")
LAB_DIR = os.path.abspath(os.environ.get("LAB_DIR", "/tmp/meridian-lab"))
ANYCAST = ("192.0.2.53", "2001:db8::53")
CLIENTS = ("c1", "c2")
WWW = "www.gameday.test."
PRIMARY = "198.51.100.1"
SHIFT_LIMIT_S = 3.0

results = []


def log(msg=""):
    print(msg, flush=True)


def check(name, ok, detail=""):
    results.append((name, bool(ok)))
    log("%s  %s" % ("PASS" if ok else "FAIL", name))
    if detail and not ok:
        for line in str(detail).rstrip().splitlines()[:60]:
            log("        " + line)
    return bool(ok)


class Abort(Exception):
    pass


def require(name, ok, detail=""):
    if not check(name, ok, detail):
        raise Abort(name)


def wait_for(fn, timeout, interval=0.05):
    start = time.monotonic()
    value = None
    while True:
        try:
            value = fn()
        except Exception:  # noqa: BLE001 - a probe failing is "not yet"
            value = None
        if value:
            return value, time.monotonic() - start
        if time.monotonic() - start >= timeout:
            return value, time.monotonic() - start
        time.sleep(interval)


def lab(*args, timeout=120):
    t = time.monotonic()
    p = subprocess.run([LAB] + list(args), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, (p.stdout + p.stderr).strip(), time.monotonic() - t


def dig(client, server):
    p = subprocess.run(["ip", "netns", "exec", PREFIX + client, "dig", "@" + server, WWW, "A", "+nsid",
                        "+time=1", "+tries=1", "+norec"], capture_output=True, text=True, timeout=10)
    out = p.stdout
    nsid = re.search(r'NSID: [0-9a-f ]*\("([^"]*)"\)', out)
    values = sorted(line.split()[4] for line in out.splitlines()
                    if line and not line.startswith(";") and len(line.split()) == 5 and line.split()[3] == "A")
    status = re.search(r"status: (\w+)", out)
    return {"status": status.group(1) if status else None, "values": values, "nsid": nsid.group(1) if nsid else None}


def all_answers():
    return {(c, s): dig(c, s) for c in CLIENTS for s in ANYCAST}


def answered_by(answers, nsid):
    return all(a["status"] == "NOERROR" and a["values"] == [PRIMARY] and a["nsid"] == nsid for a in answers.values())


def brief(answers):
    return "\n".join("%s -> %s: %s" % (c, s, a) for (c, s), a in sorted(answers.items()))


def wait_answers(nsid, timeout, title):
    last = {}

    def probe():
        last["a"] = all_answers()
        return answered_by(last["a"], nsid)
    ok, took = wait_for(probe, timeout, 0.1)
    check("%s (%.2f s)" % (title, took), ok, brief(last.get("a", {})))
    return ok


def route_shift(to, timeout, title, t0):
    """Polls the router's kernel route (cheaply: `ip route get` directly) until both anycast
    addresses go to `to`; the elapsed time from t0."""
    hops = {"pop1": ("10.1.1.2", "fd00:1:1::2"), "pop2": ("10.1.2.2", "fd00:1:2::2")}[to]
    last = {}

    def probe():
        got = []
        for a in ANYCAST:
            p = subprocess.run(["ip", "-n", PREFIX + "rtr", "route", "get", a], capture_output=True, text=True)
            got.append(p.stdout.strip() or p.stderr.strip())
        last["got"] = got
        return all(("via %s " % h) in g + " " for h, g in zip(hops, got))
    ok, _ = wait_for(probe, timeout, 0.01)
    took = time.monotonic() - t0
    check("%s: router routes %s to %s in %.2f s (limit %.0f s)" % (title, " and ".join(ANYCAST), to, took, timeout),
          ok and took <= timeout, "\n".join(last.get("got", [])))
    return ok


def lab_processes():
    """Live (non-zombie) processes that belong to the lab: in a lab namespace, or whose command
    line names the lab directory or the lab's helpers."""
    live, zombies = [], 0
    netns = set()
    for n in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        if n.startswith(PREFIX):
            netns.add(os.stat("/run/netns/" + n).st_ino)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            inode = os.stat("/proc/%s/ns/net" % pid).st_ino if state != "Z" else None
        except (OSError, IndexError):
            continue
        if state == "Z":
            zombies += 1
            continue
        if int(pid) == os.getpid():
            continue
        if inode in netns or LAB_DIR in cmd or "lab.py _" in cmd:
            live.append("%s %s" % (pid, cmd[:150]))
    return live, zombies


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    a = ap.parse_args()
    if os.geteuid() != 0:
        log("FAIL  needs root")
        return 1
    try:
        rc, out, took = lab("up", timeout=150)
        require("lab.sh up (%.1f s)" % took, rc == 0, out)
        log("INFO  " + out.splitlines()[0])
        wait_answers("pop1-e1", 5, "c1, c2 -> %s: %s %s from pop1-e1" % (" and ".join(ANYCAST), WWW, PRIMARY))
        rc, out, _ = lab("route")
        check("lab.sh route: pop1", rc == 0 and out.splitlines()[-1] == "pop1", out)
        rc, out, _ = lab("status")
        check("lab.sh status exits 0", rc == 0, out)

        t0 = time.monotonic()
        rc, out, _ = lab("edge-kill", "pop1")
        require("lab.sh edge-kill pop1", rc == 0, out)
        route_shift("pop2", SHIFT_LIMIT_S, "edge-kill pop1", t0)
        wait_answers("pop2-e1", 5, "c1, c2 -> anycast v4+v6: answers from pop2-e1 after edge-kill pop1")
        rc, out, _ = lab("route")
        check("lab.sh route: pop2", rc == 0 and out.splitlines()[-1] == "pop2", out)

        t0 = time.monotonic()
        rc, out, took = lab("edge-start", "pop1", timeout=60)
        require("lab.sh edge-start pop1 (%.1f s)" % took, rc == 0, out)
        route_shift("pop1", 10, "edge-start pop1", t0)
        wait_answers("pop1-e1", 5, "c1, c2 -> anycast v4+v6: answers from pop1-e1 again")
        rc, out, _ = lab("route", "pop1")
        check("lab.sh route pop1 exits 0", rc == 0 and out.splitlines()[-1] == "pop1", out)
    except Abort:
        pass
    except subprocess.TimeoutExpired as e:
        check("no lab command hangs", False, str(e))
    finally:
        if a.keep:
            log("INFO  --keep: the lab stays up (%s down)" % LAB)
        else:
            rc, out, took = lab("down", timeout=60)
            check("lab.sh down (%.1f s)" % took, rc == 0, out)
            left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
            names = [n.split()[0] for n in left.splitlines() if n.startswith(PREFIX)]
            check("no %s namespaces remain" % PREFIX, not names, " ".join(names))
            live, zombies = lab_processes()
            check("no lab processes remain (%d zombies on this machine, not reaped by its PID 1)" % zombies,
                  not live, "\n".join(live))
    failed = [n for n, ok in results if not ok]
    log("%d checks, %d failed" % (len(results), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
