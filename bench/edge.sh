#!/usr/bin/env bash
# Edge benchmark: meridian edge vs Knot DNS vs NSD on the same zones and queries.
#
#   bench/edge.sh                 full run (~5 min): results in bench/results/edge.{md,json}
#   BENCH_QUICK=1 bench/edge.sh   smoke run (~1 min, 100k-name big zone, 2 s per step);
#                                 writes bench/results/edge-quick.{md,json} so it never
#                                 overwrites a full result
#
# Environment: MERIDIAN_BIN (default target/release/meridian), BENCH_PORT_BASE (default 15400:
# meridian +1, knot +2, nsd +3), BENCH_SERVERS (default "meridian knot nsd"), BENCH_KEEP=1 keeps
# the work directory (zones, configs, raw dnsperf output) under $TMPDIR, BENCH_OUT (results dir),
# BENCH_QUIET_WAIT (default 300: seconds to wait, before each server, for the machine to be idle),
# BENCH_RUN_TRIES (default 3: tries of a dnsperf run during which other work ran on CPU 0).
# See bench/README.md for what each figure means and how it is measured.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
HELPER="$HERE/edge_helper.py"
QUICK=${BENCH_QUICK:-0}
SERVERS=${BENCH_SERVERS:-"meridian knot nsd"}
PORT_BASE=${BENCH_PORT_BASE:-15400}  # below the ephemeral range (32768+), so no client socket holds them
OUT_DIR=${BENCH_OUT:-$HERE/results}
MERIDIAN_SRC=${MERIDIAN_BIN:-$REPO/target/release/meridian}

SMALL_NAMES=10000
QUERIES=100000
LAT_QPS=20000
if [[ "$QUICK" == 1 ]]; then
    BIG_NAMES=100000; UDP_SECS=2; TCP_SECS=2; LAT_SECS=2; WARM_SECS=1; UDP_CLIENTS="1 8"
    OUT_NAME=edge-quick
else
    BIG_NAMES=1000000; UDP_SECS=10; TCP_SECS=10; LAT_SECS=10; WARM_SECS=2; UDP_CLIENTS="1 4 16"
    OUT_NAME=edge
fi
UDP_OUTSTANDING=200   # dnsperf -q for the UDP throughput runs
TCP_CLIENTS=8         # dnsperf -c for TCP: 8 connections
TCP_OUTSTANDING=100   # dnsperf -q for TCP: queries in flight across the 8 connections (pipelined)
LOAD_TIMEOUT=300      # seconds allowed for the big zone to load
QUIET_WAIT=${BENCH_QUIET_WAIT:-300}  # seconds to wait for other work (builds) to finish first
RUN_TRIES=${BENCH_RUN_TRIES:-3}      # tries per dnsperf run when other work disturbs CPU 0

T0=$(date +%s.%N)
say() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# --- tools -----------------------------------------------------------------------------------
need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install it ($2)"
}
need python3 "python3"
need taskset "apt-get install util-linux"
need dnsperf "apt-get install dnsperf"
need dig "apt-get install bind9-dnsutils"
for s in $SERVERS; do
    case $s in
        meridian) [[ -x "$MERIDIAN_SRC" ]] || die "meridian binary not found at $MERIDIAN_SRC: build it with 'cargo build --release -p meridian' or set MERIDIAN_BIN" ;;
        knot) need knotd "apt-get install knot"; need knotc "apt-get install knot" ;;
        nsd) need nsd "apt-get install nsd"; need nsd-checkconf "apt-get install nsd" ;;
        *) die "unknown server '$s' in BENCH_SERVERS (meridian, knot, nsd)" ;;
    esac
done
python3 -c 'import dns.message' 2>/dev/null || die "python3 module 'dns' (dnspython) not found: pip install dnspython"
NPROC=$(nproc)
(( NPROC >= 2 )) || die "needs at least 2 CPUs (server on CPU 0, dnsperf on CPU 1); this machine has $NPROC"

# This script and its helpers run on CPU 1 with dnsperf; CPU 0 is the server's alone.
taskset -pc 1 $$ >/dev/null || die "taskset -pc 1 failed"

port_of() {
    case $1 in meridian) echo $((PORT_BASE + 1)) ;; knot) echo $((PORT_BASE + 2)) ;; nsd) echo $((PORT_BASE + 3)) ;; esac
}
port_free() {  # UDP and TCP on 127.0.0.1:$1 can both be bound
    python3 - "$1" <<'EOF'
import socket, sys
p = int(sys.argv[1])
for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
EOF
}
for s in $SERVERS; do
    port_free "$(port_of "$s")" || die "port 127.0.0.1:$(port_of "$s") is in use (see 'ss -lntup'); free it or set BENCH_PORT_BASE"
done

# --- work dir and cleanup --------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meridian-edge-bench.XXXXXX")
SERVER_PID=""
CHILD_PID=""
# run_child CMD...: runs CMD as a background job and waits for it, so that SIGTERM/SIGINT reach the
# trap at once (bash defers traps until a foreground child ends) and the trap can end CMD.
run_child() {
    local rc=0
    "$@" &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return $rc
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$CHILD_PID" ]]; then kill -TERM "$CHILD_PID" 2>/dev/null || true; wait "$CHILD_PID" 2>/dev/null || true; fi
    [[ -n "$SERVER_PID" ]] && stop_server
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# Stops the running server: SIGTERM to it and every process under it (NSD forks), then SIGKILL
# after 10 s; waits until its port can be bound again.
stop_server() {
    local pid=$SERVER_PID pids p i
    SERVER_PID=""
    pids=$(python3 "$HELPER" tree "$pid" 2>/dev/null || echo "$pid")
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    for i in $(seq 100); do
        local alive=0
        for p in $pids; do kill -0 "$p" 2>/dev/null && [[ "$(awk '{print $3}' /proc/$p/stat 2>/dev/null)" != Z ]] && alive=1; done
        (( alive )) || break
        sleep 0.1
    done
    for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
    if [[ -n "${SERVER_PORT:-}" ]]; then
        for i in $(seq 50); do port_free "$SERVER_PORT" && break; sleep 0.1; done
    fi
}

# --- generate zones and queries --------------------------------------------------------------
mkdir -p "$WORK/small" "$WORK/big" "$WORK/bin" "$WORK/res"
say "work directory: $WORK"
if [[ " $SERVERS " == *" meridian "* ]]; then
    # A private copy: a concurrent `cargo build` cannot swap the binary mid-run.
    cp "$MERIDIAN_SRC" "$WORK/bin/meridian"
    # What the copy was built from, as far as can be told: HEAD now (the tree may differ) and mtime.
    MERIDIAN_BUILT="git HEAD $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') at copy, binary built $(date -u -r "$MERIDIAN_SRC" +%Y-%m-%dT%H:%M:%SZ)"
fi
MERIDIAN="$WORK/bin/meridian"
say "generating zones: bench.test. ($SMALL_NAMES names), big.test. ($BIG_NAMES names)"
python3 "$HELPER" zone bench.test "$SMALL_NAMES" "$WORK/small/bench.test.zone" --info "$WORK/small.json" --seed 1 >"$WORK/small.summary"
python3 "$HELPER" zone big.test "$BIG_NAMES" "$WORK/big/big.test.zone" --info "$WORK/big.json" --seed 3 >"$WORK/big.summary"
python3 "$HELPER" queries "$WORK/small.json" "$WORK/queries.txt" "$QUERIES" --seed 2 >"$WORK/queries.summary"
SMALL_LAST=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["last_name"])' "$WORK/small.summary")
BIG_LAST=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["last_name"])' "$WORK/big.summary")
say "small: $(cat "$WORK/small.summary")"
say "big:   $(cat "$WORK/big.summary")"

# --- servers ---------------------------------------------------------------------------------
# start_server NAME ZONEDIR ORIGIN: starts NAME pinned to CPU 0 serving ORIGIN from ZONEDIR;
# sets SERVER_PID, SERVER_PORT and START_NS (wall clock just before the exec).
start_server() {
    local name=$1 zdir=$2 origin=$3 port cfg
    port=$(port_of "$name")
    cfg="$WORK/$name-$origin"
    rm -rf "$cfg"; mkdir -p "$cfg"
    case $name in
        meridian)
            START_NS=$(date +%s%N)
            taskset -c 0 "$MERIDIAN" edge --zones "$zdir" --listen "127.0.0.1:$port" --workers 1 --identity bench \
                >"$cfg/log" 2>&1 &
            ;;
        knot)
            cat >"$cfg/knot.conf" <<EOF
server:
    rundir: $cfg
    listen: 127.0.0.1@$port
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: $cfg/db
log:
  - target: stderr
    any: info
template:
  - id: default
    storage: $zdir
    semantic-checks: off
    zonefile-load: whole
    journal-content: none
    zonefile-sync: -1
zone:
  - domain: $origin.
    file: $origin.zone
EOF
            mkdir -p "$cfg/db"
            knotc -c "$cfg/knot.conf" conf-check >/dev/null || die "knot config invalid: $cfg/knot.conf"
            START_NS=$(date +%s%N)
            taskset -c 0 knotd -c "$cfg/knot.conf" >"$cfg/log" 2>&1 &
            ;;
        nsd)
            cat >"$cfg/nsd.conf" <<EOF
server:
    server-count: 1
    ip-address: 127.0.0.1@$port
    do-ip6: no
    username: ""
    chroot: ""
    database: ""
    zonesdir: $zdir
    zonelistfile: $cfg/zone.list
    xfrdfile: $cfg/xfrd.state
    xfrdir: $cfg
    pidfile: $cfg/nsd.pid
    logfile: $cfg/log
    verbosity: 1
    zonefiles-check: no
    zonefiles-write: 0
    # Debian builds NSD with --enable-ratelimit; its default (200 q/s per /24) would drop most of
    # a benchmark that comes from one address.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: $origin.
    zonefile: $origin.zone
EOF
            nsd-checkconf "$cfg/nsd.conf" || die "nsd config invalid: $cfg/nsd.conf"
            START_NS=$(date +%s%N)
            taskset -c 0 nsd -d -c "$cfg/nsd.conf" >"$cfg/stdout" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    SERVER_PORT=$port
}

# wait_ready NAME TIMEOUT: prints seconds since START_NS until NAME answers; dies on timeout.
wait_ready() {
    local t
    if ! run_child python3 "$HELPER" wait "$SERVER_PORT" "$1" "$START_NS" "$2" >"$WORK/wait.out"; then
        say "server did not answer $1 within $2 s; its log:"
        tail -20 "$WORK"/*/log "$WORK"/*/stdout 2>/dev/null >&2 || true
        die "server on port $SERVER_PORT not ready"
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || die "server exited"
    cat "$WORK/wait.out"
}

# perf_run OUTFILE DNSPERF-ARGS...: runs dnsperf on CPU 1 against the server, recording the
# server's CPU ticks (utime+stime of it and its children), CPU 0's task ticks and the wall clock
# just before and after. A run during which CPU 0 also ran other work (> 3%: a build started)
# is repeated after the machine is quiet again, up to RUN_TRIES times in all.
perf_run() {
    local out=$1; shift
    local c0 c1 u0 u1 k0 k1 t0 t1 try noise
    for try in $(seq "$RUN_TRIES"); do
        t0=$(date +%s%N)
        k0=$(python3 "$HELPER" cpu0)
        read -r c0 u0 < <(python3 "$HELPER" cpu "$SERVER_PID")
        run_child taskset -c 1 dnsperf -s 127.0.0.1 -p "$SERVER_PORT" -d "$WORK/queries.txt" -e -t 1 "$@" >"$out" 2>&1 \
            || { say "dnsperf failed:"; tail -5 "$out" >&2; die "dnsperf $*"; }
        read -r c1 u1 < <(python3 "$HELPER" cpu "$SERVER_PID")
        k1=$(python3 "$HELPER" cpu0)
        t1=$(date +%s%N)
        echo "$c0 $c1 $k0 $k1 $t0 $t1 $u0 $u1" >"$out.cpu"
        echo "$try" >"$out.tries"
        kill -0 "$SERVER_PID" 2>/dev/null || die "server died during dnsperf $*"
        python3 "$HELPER" dnsperf "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("   %s q/s, lost %s, rcodes %s" % (format(r.get("qps", 0), ",.0f"), r.get("lost"), r.get("rcodes")))' >&2
        noise=$(python3 "$HELPER" noisy "$out.cpu") || break
        if (( try < RUN_TRIES )); then
            say "   $noise: repeating once the machine is quiet"
            wait_quiet "$(basename "$out" .txt)-retry"
        else
            say "   WARNING: $noise (kept; see warnings)"
        fi
    done
}

# wait_quiet WHAT: waits (up to QUIET_WAIT s) for the machine to be idle; logs the busy fraction.
wait_quiet() {
    local f
    run_child python3 "$HELPER" quiet "$QUIET_WAIT" >"$WORK/quiet.out"
    f=$(cat "$WORK/quiet.out")
    echo "$1 $f" >>"$WORK/res/quiet"
    python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 0.10 else 1)' "$f" \
        || say "WARNING: machine still $f busy before $1 after waiting ${QUIET_WAIT}s; figures may be skewed"
}

getconf CLK_TCK >"$WORK/res/clk_tck"
cat /proc/loadavg >"$WORK/res/loadavg_before"
for s in $SERVERS; do
    R="$WORK/res/$s"; mkdir -p "$R"
    wait_quiet "$s"
    say "== $s: small zone (bench.test.)"
    start_server "$s" "$WORK/small" bench.test
    wait_ready "$SMALL_LAST" 60 >"$R/small_load_s"
    echo "$SERVER_PID" >"$R/pid"
    run_child taskset -c 1 dnsperf -s 127.0.0.1 -p "$SERVER_PORT" -d "$WORK/queries.txt" -e -t 1 -l "$WARM_SECS" -q "$UDP_OUTSTANDING" >"$R/warmup.txt" 2>&1 || true
    for c in $UDP_CLIENTS; do
        say "$s: UDP, $c client(s), ${UDP_SECS}s"
        perf_run "$R/udp_c$c.txt" -l "$UDP_SECS" -c "$c" -q "$UDP_OUTSTANDING"
    done
    say "$s: TCP, $TCP_CLIENTS connections, ${TCP_SECS}s"
    perf_run "$R/tcp.txt" -m tcp -l "$TCP_SECS" -c "$TCP_CLIENTS" -q "$TCP_OUTSTANDING"
    say "$s: latency at $LAT_QPS q/s, ${LAT_SECS}s"
    perf_run "$R/latency.txt" -l "$LAT_SECS" -Q "$LAT_QPS" -c 1 -v
    stop_server

    wait_quiet "$s-big-zone"
    say "== $s: big zone (big.test., $BIG_NAMES names): load time and memory"
    start_server "$s" "$WORK/big" big.test
    wait_ready "$BIG_LAST" "$LOAD_TIMEOUT" >"$R/big_load_s"
    say "$s: answered $BIG_LAST after $(cat "$R/big_load_s") s"
    sleep 1   # let post-load work (freeing the parser's buffers, thread start-up) settle
    python3 "$HELPER" mem "$SERVER_PID" >"$R/big_mem.json"
    say "$s: $(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("RSS %.1f MiB, PSS %.1f MiB" % (m["rss_kib"]/1024, m["pss_kib"]/1024))' "$R/big_mem.json")"
    stop_server
done
cat /proc/loadavg >"$WORK/res/loadavg_after"

# --- results ---------------------------------------------------------------------------------
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "quick=$QUICK"
    echo "nproc=$NPROC"
    echo "kernel=$(uname -sr)"
    echo "cpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "mem_kib=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
    if [[ -x "$MERIDIAN" ]]; then
        echo "meridian_version=$("$MERIDIAN" --version 2>/dev/null | awk '{print $2}') (${MERIDIAN_BUILT:-?}, sha256 $(sha256sum "$MERIDIAN" | cut -c1-12))"
    else
        echo "meridian_version=not run"
    fi
    echo "knot_version=$(knotd --version 2>/dev/null | awk '{print $NF}')"
    echo "nsd_version=$(nsd -v 2>&1 | awk 'NR==1 {print $NF}')"
    echo "dnsperf_version=$(dnsperf -h 2>&1 | awk '/^Version/ {print $2}')"
    echo "command=$([[ $QUICK == 1 ]] && echo 'BENCH_QUICK=1 ')bench/edge.sh"
    echo "servers=$SERVERS"
    echo "udp_secs=$UDP_SECS"
    echo "tcp_secs=$TCP_SECS"
    echo "lat_secs=$LAT_SECS"
    echo "lat_qps=$LAT_QPS"
    echo "udp_clients=$UDP_CLIENTS"
    echo "udp_outstanding=$UDP_OUTSTANDING"
    echo "tcp_clients=$TCP_CLIENTS"
    echo "tcp_outstanding=$TCP_OUTSTANDING"
    echo "total_s=$(python3 -c "import time; print(round(time.time() - $T0, 1))")"
} >"$WORK/res/meta.env"
cp "$WORK/small.summary" "$WORK/big.summary" "$WORK/queries.summary" "$WORK/res/"
mkdir -p "$OUT_DIR"
python3 "$HELPER" assemble "$WORK/res" "$OUT_DIR/$OUT_NAME.json"
python3 "$HELPER" report "$OUT_DIR/$OUT_NAME.json" "$OUT_DIR/$OUT_NAME.md"
say "results: $OUT_DIR/$OUT_NAME.md and $OUT_DIR/$OUT_NAME.json"
cat "$OUT_DIR/$OUT_NAME.md"
