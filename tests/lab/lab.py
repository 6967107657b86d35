#!/usr/bin/env python3
"""The anycast lab: a router, two POPs, a 3-node control plane, health-check endpoints and two
clients, each a network namespace on this machine, linked by veth pairs made inside the
namespaces (nothing is configured in the root namespace). Python 3 standard library; run as root.

    tests/lab/lab.sh up [--config-root DIR] | down | status
    tests/lab/lab.sh edge-kill|edge-stop|edge-start POP
    tests/lab/lab.sh control-stop | control-start | control-kill-leader
    tests/lab/lab.sh endpoint-stop|endpoint-start primary|secondary
    tests/lab/lab.sh partition|heal POP
    tests/lab/lab.sh route [POP|ADDRESS]

Topology (router side .1 / ::1, the other side .2 / ::2):

    c1 10.2.1.0/24 fd00:2:1::/64 ---+                +--- 10.1.1.0/24 fd00:1:1::/64 pop1 (AS 64501, lpref 200)
    c2 10.2.2.0/24 fd00:2:2::/64 ---+-- rtr AS64500 -+--- 10.1.2.0/24 fd00:1:2::/64 pop2 (AS 64502, lpref 100)
    ctl 10.0.100.0/24 fd00:100::/64 +                +--- 10.0.200.0/24 fd00:200::/64 app

Each POP holds the anycast addresses 192.0.2.53/32 and 2001:db8::53/128 on `lo` and announces
them from two disabled BIRD static protocols, `anycast4` and `anycast6`, routed via the tun
interface `mrd-live`, which the edge process holds: the edge enables the protocols over BIRD's
control socket when it is ready and disables them when it drains; when it dies, even by SIGKILL,
the kernel deletes the tun and BIRD withdraws the routes.

Until `meridian edge --help` lists `--bird-socket`, the lab simulates that: the edge is started
through `lab.py _tun-exec`, which disables the protocols, creates and raises the tun and execs the
edge with the tun's descriptor inherited (so it dies with the edge, as with the real flags), and
the lab enables the protocols once the edge answers on its unicast address (`edge-stop` disables
them before SIGTERM).

State in $LAB_DIR (default /tmp/meridian-lab): per-host directories (configs, BIRD sockets, data,
caches, logs, pid files), `lab.json` (command lines, for restarts) and `env` (KEY=value lines for
scripts: LAB_PREFIX, LAB_DIR, API, ANYCAST4, ANYCAST6, HC_PRIMARY, NS_*).
"""
import argparse
import ctypes
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

PREFIX = os.environ.get("LAB_PREFIX", "mrd-")
LAB_DIR = os.path.abspath(os.environ.get("LAB_DIR", "/tmp/meridian-lab"))
MERIDIAN = os.path.abspath(os.environ.get("MERIDIAN", os.path.join(REPO, "target/release/meridian")))

ANYCAST4 = "192.0.2.53"
ANYCAST6 = "2001:db8::53"
ZONE = "gameday.test."
WWW = "www.gameday.test."
WWW_PRIMARY = "198.51.100.1"
WWW_SECONDARY = "198.51.100.2"
STATIC_NAME = "static.gameday.test."
STATIC_VALUE = "198.51.100.10"
LIVENESS_IF = "mrd-live"
PARTITION_TABLE = "mrd_partition"

# host -> (IPv4 /24 link prefix, IPv6 /64 link prefix) of its link to the router.
LINKS = {
    "pop1": ("10.1.1", "fd00:1:1::"),
    "pop2": ("10.1.2", "fd00:1:2::"),
    "ctl": ("10.0.100", "fd00:100::"),
    "app": ("10.0.200", "fd00:200::"),
    "c1": ("10.2.1", "fd00:2:1::"),
    "c2": ("10.2.2", "fd00:2:2::"),
}
HOSTS = ["rtr"] + list(LINKS)
POPS = {
    # pop -> AS, import local-preference on the router, edge id
    "pop1": {"asn": 64501, "lpref": 200, "edge": "pop1-e1"},
    "pop2": {"asn": 64502, "lpref": 100, "edge": "pop2-e1"},
}
RTR_ASN = 64500
RTR_ID = "10.255.0.1"
CLIENTS = ["c1", "c2"]
CTL_ADDR = LINKS["ctl"][0] + ".2"
CTL_IDS = (1, 2, 3)
APP_ADDR = LINKS["app"][0] + ".2"
ENDPOINTS = {"primary": 8080, "secondary": 8081}
ANNOUNCE_FLAGS = ("--bird-socket", "--bird-protocol", "--liveness-interface", "--shutdown-grace-ms")

# Limits (seconds). The readiness limit is the brief's; the others bound single steps.
UP_READY_TIMEOUT_S = float(os.environ.get("LAB_UP_TIMEOUT", "60"))
STEP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_UP = 0x1
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914

_libc = ctypes.CDLL(None, use_errno=True)


class LabError(Exception):
    pass


def log(msg=""):
    print(msg, flush=True)


def ns(host):
    return PREFIX + host


def v4(host, side):
    return "%s.%d" % (LINKS[host][0], side)


def v6(host, side):
    return "%s%d" % (LINKS[host][1], side)


def host_dir(host):
    return os.path.join(LAB_DIR, host)


def wait_for(fn, timeout, interval=0.1):
    """Polls fn() until it returns a truthy value or the deadline passes: (value, elapsed)."""
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


# --- commands and namespaces -----------------------------------------------------------------

def run(cmd, check=True, timeout=30, input_text=None):
    p = subprocess.run(cmd, input=input_text, capture_output=True, text=True, timeout=timeout,
                       stdin=None if input_text is not None else subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise LabError("`%s` failed (rc %d): %s" % (" ".join(cmd), p.returncode,
                                                    (p.stderr or p.stdout).strip()[-800:]))
    return p


def nsrun(host, cmd, check=True, timeout=30):
    return run(["ip", "netns", "exec", ns(host)] + cmd, check=check, timeout=timeout)


def lab_namespaces():
    p = run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in p.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(PREFIX)]


def ns_exists(host):
    return os.path.exists("/run/netns/" + ns(host))


def ns_inode(host):
    try:
        return os.stat("/run/netns/" + ns(host)).st_ino
    except OSError:
        return None


def setns(host):
    fd = os.open("/run/netns/" + ns(host), os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns %s" % ns(host))
    finally:
        os.close(fd)


def in_ns(host, fn, *args):
    """Runs fn(*args) in a forked child that entered the namespace; its JSON-able result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            setns(host)
            out = {"ok": fn(*args)}
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out = {"err": "%s: %s" % (type(e).__name__, e)}
        with os.fdopen(w, "w") as f:
            json.dump(out, f)
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    out = json.loads(data) if data else {"err": "no result"}
    if "err" in out:
        raise LabError(out["err"])
    return out["ok"]


def _write_sysctls(values):
    for key, value in values:
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(str(value))
    return True


def _tcp_open(addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((addr, port)) == 0


def _http_get(url, timeout=1.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return [r.status, r.read(200000).decode("utf-8", "replace")]


# --- processes -------------------------------------------------------------------------------

def pid_state(pid):
    """The process's state letter, or None when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def pid_alive(pid):
    # A killed orphan can stay a zombie when PID 1 does not reap: a zombie is dead.
    return pid_state(pid) not in (None, "Z", "X")


def pid_in_ns(pid, host):
    try:
        return os.stat("/proc/%d/ns/net" % pid).st_ino == ns_inode(host)
    except OSError:
        return False


def pidfile(name):
    return os.path.join(LAB_DIR, "pids", name + ".pid")


def read_pid(name):
    try:
        with open(pidfile(name)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def proc_pid(name):
    """The pid of the lab process `name` when it runs (in its namespace), else None."""
    st = load_state()
    p = st.get("procs", {}).get(name)
    pid = read_pid(name)
    if not p or not pid:
        return None
    return pid if pid_alive(pid) and pid_in_ns(pid, p["host"]) else None


def state_path():
    return os.path.join(LAB_DIR, "lab.json")


def load_state():
    try:
        with open(state_path()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def save_state(st):
    tmp = state_path() + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st, f, indent=2)
    os.replace(tmp, state_path())


def register(st, name, host, argv, logpath):
    st.setdefault("procs", {})[name] = {"host": host, "argv": argv, "log": logpath}


def start_proc(name):
    """Starts the registered process `name` in its namespace, detached: its own session, stdin
    from /dev/null, stdout and stderr appended to its log (never the caller's)."""
    st = load_state()
    p = st["procs"][name]
    pid = proc_pid(name)
    if pid:
        return pid
    os.makedirs(os.path.dirname(p["log"]), exist_ok=True)
    with open(p["log"], "ab") as f:
        f.write(("=== start %s: %s\n" % (time.strftime("%H:%M:%S"), " ".join(shlex.quote(a) for a in p["argv"]))).encode())
    logf = open(p["log"], "ab")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE", "MERIDIAN_API")}
    child = subprocess.Popen(["ip", "netns", "exec", ns(p["host"])] + p["argv"], stdin=subprocess.DEVNULL,
                             stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                             close_fds=True, env=env, cwd=host_dir(p["host"]))
    logf.close()
    os.makedirs(os.path.join(LAB_DIR, "pids"), exist_ok=True)
    with open(pidfile(name), "w") as f:
        f.write("%d\n" % child.pid)
    # `ip netns exec` enters the namespace and execs the command: this pid is the daemon's.
    wait_for(lambda: pid_in_ns(child.pid, p["host"]) or child.poll() is not None, 5, 0.005)
    return child.pid


def signal_proc(name, sig):
    pid = proc_pid(name)
    if pid:
        os.kill(pid, sig)
    return pid


def stop_proc(name, sig=signal.SIGTERM, timeout=STOP_TIMEOUT_S):
    """Signals the process and waits for it to exit (SIGKILL after the timeout). Its pid, or
    None when it was not running."""
    pid = proc_pid(name)
    if not pid:
        return None
    os.kill(pid, sig)
    gone, _ = wait_for(lambda: not pid_alive(pid), timeout, 0.02)
    if not gone:
        log("warning: %s (pid %d) did not exit within %.0f s of signal %d: SIGKILL" % (name, pid, timeout, sig))
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 5, 0.02)
    return pid


def log_tail(name, n=15):
    p = load_state().get("procs", {}).get(name)
    if not p:
        return []
    try:
        with open(p["log"], "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 20000))
            return f.read().decode("utf-8", "replace").splitlines()[-n:]
    except OSError:
        return []


# --- configuration ---------------------------------------------------------------------------

def read_env_file(path):
    """KEY=value lines (shell quoting) of an /etc/default file."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            parts = shlex.split(value)
            out[key.strip()] = parts[0] if parts else ""
    return out


def flag_value(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def flag_values(args, flag):
    out = []
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            out.append(args[i + 1])
        elif a.startswith(flag + "="):
            out.append(a.split("=", 1)[1])
    return out


def strip_flags(args, flags):
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in flags:
            skip = True
            continue
        if any(a.startswith(f + "=") for f in flags):
            continue
        out.append(a)
    return out


def edge_supports_announce():
    p = run([MERIDIAN, "edge", "--help"], check=False)
    return "--bird-socket" in p.stdout


BGP_TIMERS = """\
    hold time 3;                # the minimum; a silent failure is found by BFD first
    keepalive time 1;
    connect delay time 1;       # reconnect fast after a peer restarts
    connect retry time 1;
    error wait time 1, 5;
    graceful restart off;       # GR would keep a dead POP's route for up to 120 s
    long lived graceful restart off;
    bfd on;"""

BFD = """\
protocol bfd {
    interface "*" {
        min rx interval 100 ms;
        min tx interval 100 ms;
        multiplier 3;           # 300 ms; not lower on shared machines
    };
}"""


def router_bird_conf():
    peers = []
    for pop, info in POPS.items():
        for fam, ver, addr_of, net in (("ipv4", "v4", v4, "ANYCAST4"), ("ipv6", "v6", v6, "ANYCAST6")):
            peers.append("""\
protocol bgp {pop}_{ver} from pop_peer {{
    description "{pop} over {fam}";
    source address {local};
    neighbor {peer} as {asn};
    {fam} {{
        import filter {{
            if net ~ {net} then {{
                bgp_local_pref = {lpref};   # nearest POP: the highest local-preference wins
                accept;
            }}
            reject;
        }};
        export none;
    }};
}}
""".format(pop=pop, ver=ver, fam=fam, local=addr_of(pop, 1), peer=addr_of(pop, 2), asn=info["asn"],
           net=net, lpref=info["lpref"]))
    return """\
# Meridian anycast lab: the upstream router (AS {rasn}). Generated by tests/lab/lab.py.
log stderr all;
router id {rid};

define ANYCAST4 = [ {a4}/32 ];
define ANYCAST6 = [ {a6}/128 ];

protocol device {{
}}

# One kernel protocol per family: the best BGP-learned anycast route goes to the kernel table.
protocol kernel kernel4 {{
    ipv4 {{ import none; export where source = RTS_BGP; }};
}}

protocol kernel kernel6 {{
    ipv6 {{ import none; export where source = RTS_BGP; }};
}}

{bfd}

template bgp pop_peer {{
    local as {rasn};
{timers}
}}

{peers}""".format(rasn=RTR_ASN, rid=RTR_ID, a4=ANYCAST4, a6=ANYCAST6, bfd=BFD, timers=BGP_TIMERS,
                  peers="\n".join(peers))


def pop_bird_conf(pop):
    info = POPS[pop]
    return """\
# Meridian anycast lab: POP {pop} (AS {asn}). Generated by tests/lab/lab.py.
# The edge enables "anycast*" over the control socket when it can serve and disables it when it
# drains; the routes go via the tun "{live}" the edge holds, so they go when the edge dies.
log stderr all;
router id {rid};

protocol device {{
}}

protocol static anycast4 {{
    disabled yes;               # withdrawn until the edge is ready
    ipv4;
    route {a4}/32 via "{live}";
}}

protocol static anycast6 {{
    disabled yes;
    ipv6;
    route {a6}/128 via "{live}";
}}

{bfd}

template bgp upstream {{
    local as {asn};
{timers}
}}

protocol bgp upstream4 from upstream {{
    source address {l4};
    neighbor {r4} as {rasn};
    ipv4 {{ import none; export where proto = "anycast4"; }};
}}

protocol bgp upstream6 from upstream {{
    source address {l6};
    neighbor {r6} as {rasn};
    ipv6 {{ import none; export where proto = "anycast6"; }};
}}
""".format(pop=pop, asn=info["asn"], rid=v4(pop, 2), live=LIVENESS_IF, a4=ANYCAST4, a6=ANYCAST6, bfd=BFD,
           timers=BGP_TIMERS, l4=v4(pop, 2), r4=v4(pop, 1), l6=v6(pop, 2), r6=v6(pop, 1), rasn=RTR_ASN)


def control_args(cid):
    d = host_dir("ctl")
    return ["control", "--id", str(cid), "--data", os.path.join(d, "ctl%d" % cid),
            "--listen", "%s:%d" % (CTL_ADDR, 50050 + cid), "--metrics", "%s:%d" % (CTL_ADDR, 9150 + cid)]


def edge_args(pop):
    d = host_dir(pop)
    args = ["edge", "--control", ",".join("%s:%d" % (CTL_ADDR, 50050 + c) for c in CTL_IDS),
            "--id", POPS[pop]["edge"], "--pop", pop, "--identity", POPS[pop]["edge"],
            "--listen", "%s:53" % ANYCAST4, "--listen", "[%s]:53" % ANYCAST6, "--listen", "%s:53" % v4(pop, 2),
            "--workers", "1", "--cache", os.path.join(d, "cache"), "--metrics", "%s:9153" % v4(pop, 2),
            "--bird-socket", os.path.join(d, "bird.ctl"), "--bird-protocol", "anycast*",
            "--liveness-interface", LIVENESS_IF, "--shutdown-grace-ms", "1000"]
    return args


def args_from_root(root, host, unit, var):
    path = os.path.join(root, host, "etc/default", unit)
    try:
        value = read_env_file(path).get(var)
    except OSError as e:
        raise LabError("--config-root: cannot read %s: %s" % (path, e))
    if value is None:
        raise LabError("--config-root: %s has no %s" % (path, var))
    args = shlex.split(value)
    sub = unit.split("-")[-1]           # meridian-edge -> edge
    if args and args[0] == "meridian":
        args = args[1:]
    if not args or args[0] != sub:
        args = [sub] + args
    return args


def bird_conf_from_root(root, host):
    path = os.path.join(root, host, "etc/bird/bird.conf")
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise LabError("--config-root: cannot read %s: %s" % (path, e))


# --- building the network --------------------------------------------------------------------

def build_network():
    for host in HOSTS:
        run(["ip", "netns", "add", ns(host)])
    for host in HOSTS:
        # Before any interface exists, so every interface inherits `default`: no rp_filter, no
        # DAD (addresses also get `nodad`), forwarding only in the router.
        fwd = 1 if host == "rtr" else 0
        keys = []
        for scope in ("all", "default"):
            keys += [("net.ipv4.conf.%s.rp_filter" % scope, 0), ("net.ipv6.conf.%s.accept_dad" % scope, 0),
                     ("net.ipv6.conf.%s.dad_transmits" % scope, 0), ("net.ipv6.conf.%s.forwarding" % scope, fwd),
                     ("net.ipv6.conf.%s.accept_ra" % scope, 0)]
        keys += [("net.ipv4.ip_forward", fwd), ("net.ipv4.conf.lo.rp_filter", 0)]
        in_ns(host, _write_sysctls, keys)
    rtr = []
    for host in LINKS:
        rif = "to-" + host
        rtr += ["link add %s type veth peer name eth0 netns %s" % (rif, ns(host)),
                "addr add %s/24 dev %s" % (v4(host, 1), rif),
                "addr add %s/64 dev %s nodad" % (v6(host, 1), rif),
                "link set %s up" % rif]
    rtr.append("link set lo up")
    run(["ip", "-n", ns("rtr"), "-batch", "-"], input_text="\n".join(rtr) + "\n")
    for host in LINKS:
        cmds = ["link set lo up",
                "addr add %s/24 dev eth0" % v4(host, 2),
                "addr add %s/64 dev eth0 nodad" % v6(host, 2),
                "link set eth0 up",
                "route add default via %s" % v4(host, 1),
                "route add default via %s" % v6(host, 1)]
        if host in POPS:
            cmds += ["addr add %s/32 dev lo" % ANYCAST4, "addr add %s/128 dev lo nodad" % ANYCAST6]
        run(["ip", "-n", ns(host), "-batch", "-"], input_text="\n".join(cmds) + "\n")
    for host in HOSTS:
        ifs = ["lo"] + (["to-" + h for h in LINKS] if host == "rtr" else ["eth0"])
        in_ns(host, _write_sysctls, [("net.ipv4.conf.%s.rp_filter" % i, 0) for i in ifs])


# --- the lab's processes ---------------------------------------------------------------------

def cli_argv(st, *args, out_json=True):
    argv = [st.get("meridian", MERIDIAN), "--api", st["api"]]
    if out_json:
        argv += ["--output", "json"]
    return argv + [str(a) for a in args]


def cli(st, *args, out_json=True, timeout=40):
    """The meridian CLI run in the ctl namespace: (ok, json or None, text)."""
    p = nsrun("ctl", cli_argv(st, *args, out_json=out_json), check=False, timeout=timeout)
    data = None
    if out_json and p.stdout.strip():
        try:
            data = json.loads(p.stdout)
        except ValueError:
            pass
    return p.returncode == 0, data, (p.stdout + p.stderr).strip()


def write_file(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def wipe_state_dir(path, config_root):
    """`up` builds a fresh lab: Raft data and edge caches from an earlier run go, when they are
    under the lab directory or the config root (never elsewhere)."""
    if not path:
        return
    path = os.path.abspath(path)
    roots = [LAB_DIR] + ([config_root] if config_root else [])
    if any(path.startswith(r.rstrip("/") + "/") for r in roots) and os.path.isdir(path):
        shutil.rmtree(path)


def plan(config_root):
    """Writes the configs and registers every process (argv, log); the lab's state."""
    announce = edge_supports_announce()
    st = {"prefix": PREFIX, "lab_dir": LAB_DIR, "meridian": MERIDIAN, "config_root": config_root,
          "announce": "edge" if announce else "simulated", "procs": {}, "bird_sockets": {}, "edges": {}}
    for host in HOSTS:
        os.makedirs(host_dir(host), exist_ok=True)
    # Control nodes.
    listens = {}
    for cid in CTL_IDS:
        args = args_from_root(config_root, "ctl%d" % cid, "meridian-control", "MERIDIAN_CONTROL_ARGS") \
            if config_root else control_args(cid)
        listens[str(cid)] = flag_value(args, "--advertise") or flag_value(args, "--listen")
        wipe_state_dir(flag_value(args, "--data"), config_root)
        register(st, "ctl%d" % cid, "ctl", [MERIDIAN] + args, os.path.join(host_dir("ctl"), "ctl%d.log" % cid))
    st["control_addrs"] = listens
    st["api"] = ",".join("http://%s" % listens[str(c)] for c in CTL_IDS)
    # BIRD and edges.
    for pop in POPS:
        args = args_from_root(config_root, pop, "meridian-edge", "MERIDIAN_EDGE_ARGS") if config_root else edge_args(pop)
        sock = flag_value(args, "--bird-socket") or os.path.join(host_dir(pop), "bird.ctl")
        live = flag_value(args, "--liveness-interface") or LIVENESS_IF
        st["bird_sockets"][pop] = sock
        listen = [a for a in flag_values(args, "--listen")]
        unicast = next((a.rsplit(":", 1)[0] for a in listen
                        if not a.startswith("[") and a.rsplit(":", 1)[0] not in (ANYCAST4, "0.0.0.0")), v4(pop, 2))
        st["edges"][pop] = {"id": flag_value(args, "--id") or POPS[pop]["edge"], "unicast": unicast,
                            "metrics": flag_value(args, "--metrics"), "liveness": live,
                            "protocol": flag_value(args, "--bird-protocol") or "anycast*"}
        if announce:
            argv = [MERIDIAN] + args
        else:
            argv = [sys.executable, os.path.abspath(__file__), "_tun-exec", live, sock,
                    st["edges"][pop]["protocol"], "--", MERIDIAN] + strip_flags(args, ANNOUNCE_FLAGS)
        cache = flag_value(args, "--cache")
        if cache:
            wipe_state_dir(cache, config_root)
            os.makedirs(cache, exist_ok=True)
        register(st, "edge-" + pop, pop, argv, os.path.join(host_dir(pop), "edge.log"))
    st["bird_sockets"]["rtr"] = os.path.join(host_dir("rtr"), "bird.ctl")
    for host in ["rtr"] + list(POPS):
        conf = bird_conf_from_root(config_root, host) if config_root else \
            (router_bird_conf() if host == "rtr" else pop_bird_conf(host))
        path = write_file(os.path.join(host_dir(host), "bird.conf"), conf)
        sock = st["bird_sockets"][host]
        os.makedirs(os.path.dirname(sock), exist_ok=True)
        register(st, "bird-" + host, host, ["bird", "-f", "-c", path, "-s", sock], os.path.join(host_dir(host), "bird.log"))
    for name, port in ENDPOINTS.items():
        register(st, "endpoint-" + name, "app",
                 [sys.executable, os.path.abspath(__file__), "_http", APP_ADDR, str(port), name],
                 os.path.join(host_dir("app"), "endpoint-%s.log" % name))
    return st


def write_env(st):
    lines = {"LAB_PREFIX": PREFIX, "LAB_DIR": LAB_DIR, "API": st["api"], "ANYCAST4": ANYCAST4,
             "ANYCAST6": ANYCAST6, "HC_PRIMARY": st.get("hc_primary", ""), "ZONE": ZONE,
             "MERIDIAN": MERIDIAN, "ANNOUNCE": st["announce"], "POPS": " ".join(POPS),
             "EDGES": " ".join(st["edges"][p]["id"] for p in POPS), "NAMESPACES": " ".join(ns(h) for h in HOSTS)}
    for h in HOSTS:
        lines["NS_" + h.upper()] = ns(h)
    for p in POPS:
        lines["BIRD_SOCKET_" + p.upper()] = st["bird_sockets"][p]
    lines["BIRD_SOCKET_RTR"] = st["bird_sockets"]["rtr"]
    write_file(os.path.join(LAB_DIR, "env"), "".join("%s=%s\n" % (k, shlex.quote(v)) for k, v in lines.items()))


def birdc(host, *args, timeout=10):
    st = load_state()
    sock = st.get("bird_sockets", {}).get(host, os.path.join(host_dir(host), "bird.ctl"))
    if not os.path.exists(sock):
        return subprocess.CompletedProcess(args, 1, "", "no BIRD control socket %s" % sock)
    return run(["birdc", "-s", sock] + list(args), check=False, timeout=timeout)


def announced(pop):
    """The anycast prefixes the POP's BIRD has as routes to export (its static routes whose
    tun is up), e.g. ['192.0.2.53/32', '2001:db8::53/128']."""
    p = birdc(pop, "show", "route")
    return sorted({line.split()[0] for line in p.stdout.splitlines()
                   if line and not line[0].isspace() and line.split()[0] in ("%s/32" % ANYCAST4, "%s/128" % ANYCAST6)})


def bird_protocols(host):
    """{name: (state, info)} from `birdc show protocols`, or None when BIRD does not answer."""
    p = birdc(host, "show", "protocols")
    if p.returncode != 0:
        return None
    out = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] not in ("BIRD", "Name") and not line.startswith(" "):
            info = " ".join(parts[5:])
            out[parts[0]] = (parts[3], info)
    return out


def dig_argv(server, name, rtype="A", tcp=False):
    argv = ["dig", "@" + server, name, rtype, "+nsid", "+time=1", "+tries=1", "+norec"]
    return argv + (["+tcp"] if tcp else [])


def parse_dig(text):
    """{status, values, nsid} of a dig reply (values: the A/AAAA data of the answer section)."""
    out = {"status": None, "values": [], "nsid": None}
    m = re.search(r"status: (\w+)", text)
    if m:
        out["status"] = m.group(1)
    m = re.search(r'NSID: [0-9a-f ]*\("([^"]*)"\)', text)
    if m:
        out["nsid"] = m.group(1)
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
            if len(p) == 5 and p[3] in ("A", "AAAA"):
                out["values"].append(p[4])
    out["values"].sort()
    return out


def dig_from(host, server, name=WWW, rtype="A"):
    p = nsrun(host, dig_argv(server, name, rtype), check=False, timeout=10)
    return parse_dig(p.stdout)


def e2e_state():
    """What each client gets from the anycast addresses: {(client, server): dig result}."""
    return {(c, s): dig_from(c, s) for c in CLIENTS for s in (ANYCAST4, ANYCAST6)}


def e2e_ok(results, nsid, value=WWW_PRIMARY):
    return all(r["status"] == "NOERROR" and r["values"] == [value] and r["nsid"] == nsid for r in results.values())


def route_pop(addr=ANYCAST4):
    """The POP the router sends `addr` to, (pop or None, next hop or reason)."""
    p = run(["ip", "-n", ns("rtr"), "route", "get", addr], check=False)
    if p.returncode != 0:
        return None, (p.stderr.strip() or "no route")
    m = re.search(r"via (\S+)", p.stdout)
    if not m:
        return None, p.stdout.strip()
    hop = m.group(1)
    for pop in POPS:
        if hop in (v4(pop, 2), v6(pop, 2)):
            return pop, hop
    return None, hop


def diagnostics(st):
    log("---- diagnostics")
    for host in ["rtr"] + list(POPS):
        for args in (("show", "protocols"), ("show", "route")):
            p = birdc(host, *args)
            log("## %s: birdc %s" % (host, " ".join(args)))
            for line in (p.stdout + p.stderr).strip().splitlines()[:40]:
                log("   " + line)
    for addr in (ANYCAST4, ANYCAST6):
        log("## rtr: route to %s: %s" % (addr, route_pop(addr)))
    for (c, s), r in sorted(e2e_state().items()):
        log("## %s -> %s: %s" % (c, s, r))
    for name in st.get("procs", {}):
        pid = proc_pid(name)
        log("## %s (%s): last log lines" % (name, "pid %d" % pid if pid else "NOT RUNNING"))
        for line in log_tail(name, 12):
            log("   " + line)


# --- steps -----------------------------------------------------------------------------------

def wait_controls(st, ids, timeout=STEP_TIMEOUT_S):
    def listening():
        for cid in ids:
            name = "ctl%d" % cid
            if not proc_pid(name):
                raise LabError("control node %d exited:\n  %s" % (cid, "\n  ".join(log_tail(name))))
            host, port = st["control_addrs"][str(cid)].rsplit(":", 1)
            if not in_ns("ctl", _tcp_open, host, int(port)):
                return False
        return True
    ok, took = wait_for(listening, timeout, 0.1)
    if not ok:
        for cid in ids:
            name = "ctl%d" % cid
            if not proc_pid(name):
                raise LabError("control node %d exited:\n  %s" % (cid, "\n  ".join(log_tail(name))))
        raise LabError("control nodes %s not listening after %.0f s" % (list(ids), timeout))
    return took


def cluster_status(st, api=None):
    s = dict(st)
    if api:
        s["api"] = api
    ok, data, _ = cli(s, "cluster", "status", timeout=10)
    return data if ok and isinstance(data, dict) else None


def wait_leader(st, timeout=STEP_TIMEOUT_S, voters=3):
    def formed():
        s = cluster_status(st)
        nodes = (s or {}).get("nodes", [])
        if s and s.get("leader") and proc_pid("ctl%s" % s["leader"]) and \
                len([n for n in nodes if n.get("reachable") and n.get("voter")]) >= voters:
            return s
        return None
    return wait_for(formed, timeout, 0.2)


def form_cluster(st):
    addrs = st["control_addrs"]
    first = "http://%s" % addrs[str(CTL_IDS[0])]
    args = sum((["--node", "%d=%s" % (c, addrs[str(c)])] for c in CTL_IDS), [])
    last = {}

    def init():
        ok, data, text = cli(dict(st, api=first), "cluster", "init", *args, timeout=20)
        last["text"] = text
        return ok
    ok, took = wait_for(init, STEP_TIMEOUT_S, 0.5)
    if not ok:
        raise LabError("cluster init failed: %s" % last.get("text"))
    s, took2 = wait_leader(st)
    if not s:
        raise LabError("no leader with 3 reachable voters after %.0f s: %s" % (STEP_TIMEOUT_S, cluster_status(st)))
    return s


def load_content(st):
    last = {}

    def create():
        ok, data, text = cli(st, "zone", "create", ZONE)
        last["text"] = text
        return ok or "exist" in text.lower()
    ok, _ = wait_for(create, STEP_TIMEOUT_S, 0.5)
    if not ok:
        raise LabError("zone create %s: %s" % (ZONE, last.get("text")))
    hc = {"Type": "HTTP", "IPAddress": APP_ADDR, "Port": ENDPOINTS["primary"], "ResourcePath": "/health",
          "RequestInterval": 1, "FailureThreshold": 2}
    path = write_file(os.path.join(host_dir("ctl"), "hc-primary.json"), json.dumps(hc, indent=2) + "\n")
    ok, data, text = cli(st, "health", "create", "--config", path, "--caller-reference", "lab-primary")
    hc_id = data.get("id") if isinstance(data, dict) else None
    if not ok or not hc_id:
        raise LabError("health create: %s" % text)
    st["hc_primary"] = hc_id
    sets = [
        {"Name": WWW, "Type": "A", "SetIdentifier": "primary", "Failover": "PRIMARY", "TTL": 5,
         "HealthCheckId": hc_id, "ResourceRecords": [{"Value": WWW_PRIMARY}]},
        {"Name": WWW, "Type": "A", "SetIdentifier": "secondary", "Failover": "SECONDARY", "TTL": 5,
         "ResourceRecords": [{"Value": WWW_SECONDARY}]},
        {"Name": STATIC_NAME, "Type": "A", "TTL": 5, "ResourceRecords": [{"Value": STATIC_VALUE}]},
    ]
    batch = {"Comment": "anycast lab", "Changes": [{"Action": "UPSERT", "ResourceRecordSet": s} for s in sets]}
    path = write_file(os.path.join(host_dir("ctl"), "batch.json"), json.dumps(batch, indent=2) + "\n")
    ok, data, text = cli(st, "record", "apply", ZONE, "--file", path)
    if not ok or not isinstance(data, dict) or not data.get("id"):
        raise LabError("record apply: %s" % text)
    ok, data, text = cli(st, "change", "wait", data["id"], "--timeout", 30, timeout=50)
    if not ok:
        raise LabError("change wait: %s" % text)


def edge_serves(pop, st):
    r = dig_from("c1" if pop == "pop1" else "c2", st["edges"][pop]["unicast"])
    return r["status"] == "NOERROR" and r["values"] in ([WWW_PRIMARY], [WWW_SECONDARY])


def anycast_enabled(pop, st):
    prots = bird_protocols(pop) or {}
    names = [n for n in prots if n.startswith(st["edges"][pop]["protocol"].rstrip("*"))]
    return bool(names) and all(prots[n][0] == "up" for n in names) and len(announced(pop)) == 2


def start_edge(st, pop, timeout=STEP_TIMEOUT_S):
    """Starts the edge; returns once it answers on its unicast address and its anycast
    protocols are up (with the real flags the edge enables them; simulated: the lab does)."""
    name = "edge-" + pop
    start_proc(name)

    def serving():
        if not proc_pid(name):
            raise LabError("edge %s exited:\n  %s" % (pop, "\n  ".join(log_tail(name))))
        return edge_serves(pop, st)
    ok, took = wait_for(serving, timeout, 0.1)
    if not ok:
        raise LabError("edge %s does not answer %s on %s after %.0f s" % (pop, WWW, st["edges"][pop]["unicast"], timeout))
    if st["announce"] == "simulated":
        p = birdc(pop, "enable", '"%s"' % st["edges"][pop]["protocol"])
        if p.returncode != 0:
            raise LabError("birdc enable in %s: %s" % (pop, p.stdout + p.stderr))
    ok, _ = wait_for(lambda: anycast_enabled(pop, st), timeout, 0.1)
    if not ok:
        raise LabError("%s: anycast protocols not up %.0f s after the edge answered: %s" % (pop, timeout, bird_protocols(pop)))


# --- subcommands -----------------------------------------------------------------------------

def require_lab():
    st = load_state()
    if not st or not all(ns_exists(h) for h in HOSTS):
        raise LabError("the lab is not up (no %s* namespaces or no %s); run `lab.sh up`" % (PREFIX, state_path()))
    return st


def cmd_up(a):
    t0 = time.monotonic()
    st = load_state()
    if st and all(ns_exists(h) for h in HOSTS) and all(proc_pid(n) for n in st.get("procs", {})) \
            and e2e_ok(e2e_state(), st["edges"]["pop1"]["id"]):
        log("lab already up (%s); `lab.sh down` first to rebuild" % LAB_DIR)
        return 0
    if lab_namespaces():
        log("tearing down the previous lab")
        cmd_down(None)
    if os.path.isdir(LAB_DIR):
        shutil.rmtree(LAB_DIR)
    os.makedirs(LAB_DIR)
    config_root = os.path.abspath(a.config_root) if a.config_root else None
    st = plan(config_root)
    save_state(st)
    write_env(st)
    log("edge announce mode: %s" % ("edge flags (--bird-socket ...)" if st["announce"] == "edge"
                                    else "simulated (this meridian has no --bird-socket: tun held by lab.py _tun-exec)"))
    try:
        build_network()
        log("network: %d namespaces (%.1f s)" % (len(HOSTS), time.monotonic() - t0))
        for name in ["bird-rtr"] + ["bird-" + p for p in POPS] + ["endpoint-" + e for e in ENDPOINTS] + \
                ["ctl%d" % c for c in CTL_IDS]:
            start_proc(name)
        wait_controls(st, CTL_IDS)
        # The health check is created below: its endpoints must listen first, or the check's
        # first probes fail and flip it while a game day is already running.
        for e, port in ENDPOINTS.items():
            ok, _ = wait_for(lambda port=port: nsrun("app", ["python3", "-c",
                             "import socket; socket.create_connection(('%s', %d), 0.5)" % (APP_ADDR, port)],
                             check=False).returncode == 0, 20, 0.1)
            if not ok:
                raise LabError("endpoint %s (%s:%d) does not accept connections" % (e, APP_ADDR, port))
        s = form_cluster(st)
        log("cluster: leader %s (%.1f s)" % (s.get("leader"), time.monotonic() - t0))
        for pop in POPS:
            start_proc("edge-" + pop)
        load_content(st)
        save_state(st)
        write_env(st)
        log("content: %s, health check %s (%.1f s)" % (ZONE, st["hc_primary"], time.monotonic() - t0))
        for pop in POPS:
            start_edge(st, pop)
        log("edges serving, anycast announced (%.1f s)" % (time.monotonic() - t0))
        last = {}

        def ready():
            last["r"] = e2e_state()
            if not e2e_ok(last["r"], st["edges"]["pop1"]["id"]):
                return False
            # Ready also means the probes have spoken: the check is healthy by their verdict,
            # not merely "no data yet".
            _, data, text = cli(st, "health", "get", st["hc_primary"])
            last["health"] = (data or {}).get("status", text)
            return (data or {}).get("status") == "healthy (probes)"
        ok, took = wait_for(ready, UP_READY_TIMEOUT_S, 0.2)
        if not ok:
            for (c, s_), r in sorted(last.get("r", {}).items()):
                log("  %s -> %s: %s" % (c, s_, r))
            log("  health check %s: %s" % (st.get("hc_primary"), last.get("health")))
            raise LabError("no end-to-end answer %s from %s via %s (and a healthy check) within %.0f s" % (
                WWW_PRIMARY, st["edges"]["pop1"]["id"], "both clients, v4 and v6", UP_READY_TIMEOUT_S))
    except LabError as e:
        log("error: %s" % e)
        diagnostics(load_state() or st)
        log("up FAILED after %.1f s (the lab is left as it is; `lab.sh down` removes it)" % (time.monotonic() - t0))
        return 1
    log("lab up in %.1f s: c1/c2 -> %s and [%s] answer %s %s from %s; env in %s" % (
        time.monotonic() - t0, ANYCAST4, ANYCAST6, WWW, WWW_PRIMARY, st["edges"]["pop1"]["id"],
        os.path.join(LAB_DIR, "env")))
    return 0


def cmd_down(_a):
    t0 = time.monotonic()
    names = lab_namespaces()
    st = load_state()
    # Processes first, in every lab namespace and from the pid files (a process whose namespace
    # is already gone still has its pid file).
    pids = set()
    for n in names:
        p = run(["ip", "netns", "pids", n], check=False)
        pids |= {int(x) for x in p.stdout.split() if x.isdigit()}
    for name in st.get("procs", {}):
        pid = read_pid(name)
        if pid and pid_alive(pid):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmd = f.read().split(b"\0")
                if st["procs"][name]["argv"][-1].encode() in cmd:   # the same program, not a reused pid
                    pids.add(pid)
            except OSError:
                pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    gone, _ = wait_for(lambda: all(not pid_alive(p) for p in pids), 10, 0.02)
    left = [p for p in pids if pid_alive(p)]
    for n in names:
        run(["ip", "netns", "del", n], check=False)
    rest = lab_namespaces()
    if os.path.isdir(os.path.join(LAB_DIR, "pids")):
        shutil.rmtree(os.path.join(LAB_DIR, "pids"), ignore_errors=True)
    if left or rest:
        log("error: down left processes %s and namespaces %s" % (left, rest))
        return 1
    log("lab down: %d namespaces, %d processes removed (%.1f s); logs kept in %s" % (
        len(names), len(pids), time.monotonic() - t0, LAB_DIR))
    return 0


def metrics_ok(pop, st):
    m = st["edges"][pop].get("metrics")
    if not m:
        return "no --metrics"
    try:
        code, body = in_ns(pop, _http_get, "http://%s/metrics" % m)
        return "ok (%d lines)" % len(body.splitlines()) if code == 200 else "HTTP %d" % code
    except LabError as e:
        return "unreachable (%s)" % e


def partitioned(pop):
    p = run(["ip", "netns", "exec", ns(pop), "nft", "list", "table", "inet", PARTITION_TABLE], check=False)
    return p.returncode == 0


def cmd_status(_a):
    st = load_state()
    names = lab_namespaces()
    log("lab dir: %s (%s)" % (LAB_DIR, "present" if st else "no lab.json"))
    log("namespaces: %s" % (" ".join(names) or "none"))
    if not st or not names:
        log("the lab is not up")
        return 1
    healthy = all(ns_exists(h) for h in HOSTS)
    log("announce: %s" % st.get("announce"))
    for host in ["rtr"] + list(POPS):
        prots = bird_protocols(host)
        if prots is None:
            healthy = False
            log("bird %-5s NOT ANSWERING" % host)
            continue
        shown = ["%s=%s%s" % (n, s, (" (%s)" % i) if i else "") for n, (s, i) in prots.items()
                 if n not in ("device1", "bfd1") and not n.startswith("kernel")]
        if host in POPS:
            shown.append("announcing %s" % (" ".join(announced(host)) or "nothing"))
        log("bird %-5s %s" % (host, ", ".join(shown)))
    for addr in (ANYCAST4, ANYCAST6):
        pop, hop = route_pop(addr)
        log("route %-14s -> %s (%s)" % (addr, pop or "none", hop))
    for pop in POPS:
        e = st["edges"][pop]
        pid = proc_pid("edge-" + pop)
        healthy &= bool(pid)
        log("edge %s/%s: %s, metrics %s: %s%s" % (
            e["id"], pop, "pid %d" % pid if pid else "NOT RUNNING", e.get("metrics"), metrics_ok(pop, st),
            ", PARTITIONED from the control plane" if partitioned(pop) else ""))
    ctl = ["%d:%s" % (c, "pid %d" % proc_pid("ctl%d" % c) if proc_pid("ctl%d" % c) else "down") for c in CTL_IDS]
    s = cluster_status(st) if any(proc_pid("ctl%d" % c) for c in CTL_IDS) else None
    leader = (s or {}).get("leader")
    log("control: %s; leader %s%s" % (", ".join(ctl), leader or "none",
                                       " (NOT RUNNING: an election is due)" if leader and not proc_pid("ctl%s" % leader) else ""))
    for e in ENDPOINTS:
        pid = proc_pid("endpoint-" + e)
        log("endpoint %s %s:%d: %s" % (e, APP_ADDR, ENDPOINTS[e], "pid %d" % pid if pid else "stopped"))
    log("health check primary: %s" % st.get("hc_primary"))
    return 0 if healthy else 1


def pop_arg(pop):
    if pop not in POPS:
        raise LabError("unknown POP %r (one of %s)" % (pop, ", ".join(POPS)))
    return pop


def cmd_edge_kill(a):
    require_lab()
    pop = pop_arg(a.pop)
    pid = signal_proc("edge-" + pop, signal.SIGKILL)
    if not pid:
        log("edge %s is not running" % pop)
        return 0
    wait_for(lambda: not pid_alive(pid), 5, 0.01)
    log("edge %s (pid %d) killed (SIGKILL)" % (pop, pid))
    return 0


def cmd_edge_stop(a):
    st = require_lab()
    pop = pop_arg(a.pop)
    if not proc_pid("edge-" + pop):
        log("edge %s is not running" % pop)
        return 0
    if st["announce"] == "simulated":
        # What the edge does itself with the flags: withdraw, then stop.
        birdc(pop, "disable", '"%s"' % st["edges"][pop]["protocol"])
    t = time.monotonic()
    pid = stop_proc("edge-" + pop, signal.SIGTERM)
    log("edge %s (pid %d) stopped (SIGTERM, exited in %.2f s)" % (pop, pid, time.monotonic() - t))
    return 0


def cmd_edge_start(a):
    st = require_lab()
    pop = pop_arg(a.pop)
    if proc_pid("edge-" + pop):
        log("edge %s is already running (pid %d)" % (pop, proc_pid("edge-" + pop)))
        return 0
    t = time.monotonic()
    start_edge(st, pop)
    log("edge %s started (pid %d): serving and announcing in %.1f s" % (pop, proc_pid("edge-" + pop), time.monotonic() - t))
    return 0


def cmd_control_stop(_a):
    require_lab()
    pids = {cid: signal_proc("ctl%d" % cid, signal.SIGTERM) for cid in CTL_IDS}
    for cid, pid in pids.items():
        if pid:
            gone, took = wait_for(lambda: not pid_alive(pid), STOP_TIMEOUT_S, 0.02)
            if not gone:
                os.kill(pid, signal.SIGKILL)
            log("control node %d: stopped (pid %d%s)" % (cid, pid, "" if gone else ", SIGKILL after %.0f s" % took))
        else:
            log("control node %d: was not running" % cid)
    return 0


def cmd_control_start(_a):
    st = require_lab()
    started = [c for c in CTL_IDS if not proc_pid("ctl%d" % c)]
    for cid in started:
        start_proc("ctl%d" % cid)
    wait_controls(st, started)
    voters = len(CTL_IDS)
    s, took = wait_leader(st, STEP_TIMEOUT_S, voters)
    if not s:
        raise LabError("control nodes %s started but no leader with %d reachable voters after %.0f s" % (
            started, voters, STEP_TIMEOUT_S))
    log("control nodes started: %s; leader %s (%.1f s)" % (started or "none needed", s.get("leader"), took))
    return 0


def cmd_control_kill_leader(_a):
    st = require_lab()
    s = cluster_status(st)
    leader = (s or {}).get("leader")
    if not leader or not proc_pid("ctl%s" % leader):
        raise LabError("no live leader known: %s" % s)
    pid = signal_proc("ctl%s" % leader, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 5, 0.01)
    print(leader, flush=True)
    return 0


def endpoint_arg(name):
    if name not in ENDPOINTS:
        raise LabError("unknown endpoint %r (primary or secondary)" % name)
    return name


def cmd_endpoint_stop(a):
    require_lab()
    e = endpoint_arg(a.endpoint)
    pid = stop_proc("endpoint-" + e, signal.SIGTERM, 5)
    log("endpoint %s: %s" % (e, "stopped (pid %d)" % pid if pid else "was not running"))
    return 0


def cmd_endpoint_start(a):
    require_lab()
    e = endpoint_arg(a.endpoint)
    if proc_pid("endpoint-" + e):
        log("endpoint %s is already running" % e)
        return 0
    start_proc("endpoint-" + e)
    ok, _ = wait_for(lambda: in_ns("app", _tcp_open, APP_ADDR, ENDPOINTS[e]), 10, 0.05)
    if not ok:
        raise LabError("endpoint %s does not listen on %s:%d:\n  %s" % (e, APP_ADDR, ENDPOINTS[e],
                                                                       "\n  ".join(log_tail("endpoint-" + e))))
    log("endpoint %s started (%s:%d)" % (e, APP_ADDR, ENDPOINTS[e]))
    return 0


def cmd_partition(a):
    require_lab()
    pop = pop_arg(a.pop)
    cnet4, cnet6 = LINKS["ctl"][0] + ".0/24", LINKS["ctl"][1] + "/64"
    rules = """\
table inet {t}
delete table inet {t}
table inet {t} {{
    chain input {{
        type filter hook input priority 0; policy accept;
        ip saddr {c4} drop
        ip6 saddr {c6} drop
    }}
    chain output {{
        type filter hook output priority 0; policy accept;
        ip daddr {c4} drop
        ip6 daddr {c6} drop
    }}
}}
""".format(t=PARTITION_TABLE, c4=cnet4, c6=cnet6)
    run(["ip", "netns", "exec", ns(pop), "nft", "-f", "-"], input_text=rules)
    log("%s partitioned from the control plane (%s, %s: dropped)" % (pop, cnet4, cnet6))
    return 0


def cmd_heal(a):
    require_lab()
    pop = pop_arg(a.pop)
    if partitioned(pop):
        run(["ip", "netns", "exec", ns(pop), "nft", "delete", "table", "inet", PARTITION_TABLE])
        log("%s healed" % pop)
    else:
        log("%s was not partitioned" % pop)
    return 0


def cmd_route(a):
    require_lab()
    target = a.target or ANYCAST4
    want = None
    if target in POPS:
        want, target = target, ANYCAST4
    pop, hop = route_pop(target)
    print(pop or "none", flush=True)
    if want:
        return 0 if pop == want else 1
    return 0 if pop else 1


# --- helpers run inside namespaces -----------------------------------------------------------

def helper_tun_exec(argv):
    """_tun-exec IFNAME BIRD_SOCKET PROTOCOL -- COMMAND...: what the edge will do itself with
    --liveness-interface: withdraw first, hold a tun (up) whose descriptor the command
    inherits, so the kernel deletes the interface when the command dies."""
    ifname, sock, proto = argv[0], argv[1], argv[2]
    cmd = argv[argv.index("--") + 1:]
    subprocess.run(["birdc", "-s", sock, "disable", '"%s"' % proto], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TUN | IFF_NO_PI))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh", ifname.encode(), 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", ifname.encode(), flags | IFF_UP))
    os.set_inheritable(fd, True)
    os.execv(cmd[0], cmd)


def helper_http(argv):
    """_http ADDR PORT NAME: a health endpoint, /health -> 200."""
    import http.server

    addr, port, name = argv[0], int(argv[1]), argv[2]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            ok = self.path.split("?")[0] == "/health"
            body = ("ready %s\n" % name if ok else "not found\n").encode()
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_a):
            pass

    class Server(http.server.ThreadingHTTPServer):
        allow_reuse_address = True
        daemon_threads = True

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    srv = Server((addr, port), Handler)
    print("endpoint %s listening on %s:%d" % (name, addr, port), flush=True)
    srv.serve_forever()


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if len(sys.argv) > 1 and sys.argv[1] == "_tun-exec":
        return helper_tun_exec(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_http":
        return helper_http(sys.argv[2:])
    ap = argparse.ArgumentParser(prog="lab.sh", description="Meridian anycast lab (network namespaces, BIRD 2)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build the lab; returns once both clients get answers from pop1 over v4 and v6")
    up.add_argument("--config-root", help="use DIR/<host>/etc/bird/bird.conf and DIR/<host>/etc/default/meridian-*")
    up.set_defaults(fn=cmd_up)
    sub.add_parser("down", help="kill every lab process, delete the namespaces").set_defaults(fn=cmd_down)
    sub.add_parser("status", help="namespaces, BGP, anycast route, edges, control plane").set_defaults(fn=cmd_status)
    for name, fn, h in (("edge-kill", cmd_edge_kill, "SIGKILL the POP's edge"),
                        ("edge-stop", cmd_edge_stop, "SIGTERM the POP's edge and wait for it to exit"),
                        ("edge-start", cmd_edge_start, "start the POP's edge; returns once it serves and announces"),
                        ("partition", cmd_partition, "drop the POP's traffic to and from the control plane"),
                        ("heal", cmd_heal, "undo partition")):
        p = sub.add_parser(name, help=h)
        p.add_argument("pop")
        p.set_defaults(fn=fn)
    for name, fn, h in (("control-stop", cmd_control_stop, "SIGTERM all control nodes"),
                        ("control-start", cmd_control_start, "start the stopped control nodes"),
                        ("control-kill-leader", cmd_control_kill_leader, "SIGKILL the leader; prints its id")):
        sub.add_parser(name, help=h).set_defaults(fn=fn)
    for name, fn in (("endpoint-stop", cmd_endpoint_stop), ("endpoint-start", cmd_endpoint_start)):
        p = sub.add_parser(name, help="%s a health endpoint" % name.split("-")[1])
        p.add_argument("endpoint", choices=sorted(ENDPOINTS))
        p.set_defaults(fn=fn)
    p = sub.add_parser("route", help="the POP the router sends the anycast address to (given a POP: exit 0 iff it is that one)")
    p.add_argument("target", nargs="?", help="a POP name, or an address (default %s)" % ANYCAST4)
    p.set_defaults(fn=cmd_route)
    a = ap.parse_args()
    if os.geteuid() != 0:
        log("error: the lab needs root (network namespaces)")
        return 2
    if a.cmd == "up" and not os.access(MERIDIAN, os.X_OK):
        log("error: no meridian binary at %s (set MERIDIAN)" % MERIDIAN)
        return 2
    try:
        return a.fn(a)
    except LabError as e:
        log("error: %s" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
