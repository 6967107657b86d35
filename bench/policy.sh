#!/usr/bin/env bash
# Policy-record benchmark: edge server CPU per query for routing-policy records (weighted,
# failover, geolocation with ECS) against simple records, in the same run and the same server.
# Requirement: policy-record cost <= 1.2x the simple-record cost.
#
#   bench/policy.sh                                  full run (~3 min): bench/results/policy.{md,json}
#   BENCH_SECONDS=2 BENCH_ROUNDS=1 bench/policy.sh   smoke run (~30 s), labelled SMOKE in the report
#
# Environment: MERIDIAN_BIN (default target/release/meridian), BENCH_SECONDS (default 10: each
# dnsperf run), BENCH_ROUNDS (default 3: every kind once per round, order rotated; medians),
# BENCH_KINDS (default "simple weighted failover simple_ecs geo_ecs"; "geo" = geolocation without
# ECS is also known), BENCH_QPS (default unset: no rate limit, max load as edge.sh's CPU figure;
# set it for a fixed rate with dnsperf -Q), BENCH_PORT_BASE (default 15700: API +1, DNS +2),
# BENCH_QUIET_WAIT (default 300 s), BENCH_RUN_TRIES (default 3), BENCH_KEEP=1, BENCH_OUT.
# See bench/README.md for the method.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
EDGE_HELPER="$HERE/edge_helper.py"
HELPER="$HERE/policy_helper.py"
OUT_DIR=${BENCH_OUT:-$HERE/results}
MERIDIAN_SRC=${MERIDIAN_BIN:-$REPO/target/release/meridian}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
KINDS=${BENCH_KINDS:-"simple weighted failover simple_ecs geo_ecs"}
QPS=${BENCH_QPS:-}
PORT_BASE=${BENCH_PORT_BASE:-15700}
QUIET_WAIT=${BENCH_QUIET_WAIT:-300}
RUN_TRIES=${BENCH_RUN_TRIES:-3}
API_PORT=$((PORT_BASE + 1))
DNS_PORT=$((PORT_BASE + 2))
API="http://127.0.0.1:$API_PORT"
CLIENTS=1          # dnsperf -c: edge.sh's best meridian UDP run was 1 client
OUTSTANDING=200    # dnsperf -q, as edge.sh's UDP runs
WARM_SECS=1        # warm-up dnsperf run per kind
IDLE_SECS=5
# EDNS Client Subnet (option code 8): family 0001 (IPv4), source prefix 0x18 (/24), scope 00,
# address c6 33 64 = 198.51.100 (DE, continent EU, in tests/policy/make_test_mmdb.py's database).
ECS_OPT="8:00011800c63364"

T0=$(date +%s.%N)
say() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# The command as run, for the report: the settings that were given in the environment.
CMDLINE=""
for v in MERIDIAN_BIN BENCH_SECONDS BENCH_ROUNDS BENCH_KINDS BENCH_QPS BENCH_PORT_BASE BENCH_QUIET_WAIT BENCH_RUN_TRIES BENCH_KEEP BENCH_OUT; do
    if [[ -n "${!v+x}" ]]; then
        val=${!v}
        [[ "$val" =~ [[:space:]] ]] && val="\"$val\""
        CMDLINE+="$v=$val "
    fi
done
CMDLINE+="bench/policy.sh"

# --- tools -----------------------------------------------------------------------------------
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install it ($2)"; }
need python3 "python3"
need taskset "apt-get install util-linux"
need dnsperf "apt-get install dnsperf"
need dig "apt-get install bind9-dnsutils"
[[ -x "$MERIDIAN_SRC" ]] || die "meridian binary not found at $MERIDIAN_SRC: build it with 'cargo build --release -p meridian' or set MERIDIAN_BIN"
python3 -c 'import dns.message, dns.edns' 2>/dev/null || die "python3 module 'dns' (dnspython) not found: pip install dnspython"
[[ "$SECONDS_PER_RUN" =~ ^[0-9]+$ && "$SECONDS_PER_RUN" -ge 1 ]] || die "BENCH_SECONDS must be a whole number of seconds >= 1"
[[ "$ROUNDS" =~ ^[0-9]+$ && "$ROUNDS" -ge 1 ]] || die "BENCH_ROUNDS must be >= 1"
[[ -z "$QPS" || "$QPS" =~ ^[0-9]+$ ]] || die "BENCH_QPS must be a number of queries per second"
for k in $KINDS; do python3 "$HELPER" kind "$k" >/dev/null || die "BENCH_KINDS: unknown kind '$k'"; done
[[ " $KINDS " == *" simple "* ]] || die "BENCH_KINDS must include 'simple' (the baseline)"
[[ "$(dnsperf -h 2>&1 || true)" == *"-E code:value"* ]] || die "this dnsperf has no -E (EDNS option) flag: dnsperf >= 2.4 is needed for ECS"
NPROC=$(nproc)
(( NPROC >= 2 )) || die "needs at least 2 CPUs (server on CPU 0, dnsperf on CPU 1); this machine has $NPROC"

# This script and its helpers run on CPU 1 with dnsperf; CPU 0 is the server's alone.
taskset -pc 1 $$ >/dev/null || die "taskset -pc 1 failed"

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
for p in "$API_PORT" "$DNS_PORT"; do
    port_free "$p" || die "port 127.0.0.1:$p is in use (see 'ss -lntup'); free it or set BENCH_PORT_BASE"
done

# --- work dir and cleanup --------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meridian-policy-bench.XXXXXX")
RES="$WORK/res"
mkdir -p "$WORK/bin" "$WORK/q" "$RES"
SERVER_PID=""
CHILD_PID=""
run_child() {  # as in edge.sh: a background job, so SIGTERM/SIGINT reach the trap at once
    local rc=0
    "$@" &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return $rc
}
stop_server() {  # SIGTERM, SIGKILL after 10 s
    local pid=$SERVER_PID i
    SERVER_PID=""
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" == Z ]] && break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$CHILD_PID" ]]; then kill -TERM "$CHILD_PID" 2>/dev/null || true; wait "$CHILD_PID" 2>/dev/null || true; fi
    [[ -n "$SERVER_PID" ]] && stop_server
    # Kept on a failure (its logs), removed after success or an interrupt unless BENCH_KEEP=1.
    if [[ "${BENCH_KEEP:-0}" == 1 || ( $rc -ne 0 && $rc -ne 130 ) ]]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM
say "work directory: $WORK"

# A private copy: a concurrent `cargo build` cannot swap the binary mid-run.
cp "$MERIDIAN_SRC" "$WORK/bin/meridian"
MERIDIAN="$WORK/bin/meridian"
MERIDIAN_BUILT="git HEAD $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') at copy, binary built $(date -u -r "$MERIDIAN_SRC" +%Y-%m-%dT%H:%M:%SZ)"
cli() { "$MERIDIAN" --api "$API" "$@"; }

# --- geo database, server, zone --------------------------------------------------------------
say "building the test geo database"
python3 "$REPO/tests/policy/make_test_mmdb.py" "$WORK/geo.mmdb" >"$WORK/mmdb.log" 2>&1 \
    || { cat "$WORK/mmdb.log" >&2; die "tests/policy/make_test_mmdb.py failed"; }

wait_quiet() {  # wait_quiet WHAT: wait (up to QUIET_WAIT s) for the machine to be idle
    local f
    run_child python3 "$EDGE_HELPER" quiet "$QUIET_WAIT" >"$WORK/quiet.out"
    f=$(cat "$WORK/quiet.out")
    echo "$1 $f" >>"$RES/quiet"
    python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 0.10 else 1)' "$f" \
        || say "WARNING: machine still $f busy before $1 after waiting ${QUIET_WAIT}s; figures may be skewed"
}

SERVER_ARGS=(dev --data "$WORK/data" --dns "127.0.0.1:$DNS_PORT" --geoip-db "$WORK/geo.mmdb" --pop fra --region-rtt us-east-1=90,eu-west-1=12)
SERVER_CMD="meridian --api $API ${SERVER_ARGS[*]}"
say "starting: $SERVER_CMD"
taskset -c 0 "$MERIDIAN" --api "$API" "${SERVER_ARGS[@]}" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

ok=0
for i in $(seq 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -20 "$WORK/server.log" >&2; die "meridian dev exited"; }
    if cli --output json zone create bench.test. >"$WORK/zone.json" 2>"$WORK/zone.err"; then ok=1; break; fi
    sleep 0.1
done
(( ok )) || { cat "$WORK/zone.err" >&2; die "zone create bench.test. failed for 30 s"; }
echo '{"Type": "TCP", "IPAddress": "127.0.0.1", "Port": 9, "RequestInterval": 30, "FailureThreshold": 3}' >"$WORK/hc.json"
cli --output json health create --config "$WORK/hc.json" >"$WORK/hc.out" || die "health create failed"
HC_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/hc.out")
# Forced healthy: failover answers PRIMARY after evaluating its health (the usual path), whatever
# a probe of port 9 would say.
cli health set-status "$HC_ID" healthy >"$WORK/hc-status.out" || die "health set-status $HC_ID healthy failed"
python3 "$HELPER" batch "$HC_ID" "$WORK/batch.json"
cli --output json record apply bench.test. --file "$WORK/batch.json" >"$WORK/apply.out" || { cat "$WORK/apply.out" >&2; die "record apply failed"; }
say "zone bench.test. created, health check $HC_ID forced healthy, record sets applied"

# Ready: the brief's check (dig weighted A +short), then every kind answers as expected.
for i in $(seq 300); do
    [[ -n "$(dig @127.0.0.1 -p "$DNS_PORT" weighted.bench.test A +short +time=1 +tries=1 2>/dev/null | grep -E '^[0-9.]+$' || true)" ]] && break
    sleep 0.1
done
READY_S=$(run_child python3 "$HELPER" ready "$DNS_PORT" 30) || { tail -20 "$WORK/server.log" >&2; die "the edge did not answer every record set as expected within 30 s"; }
say "edge answers every record set (${READY_S}s after apply)"

# --- answer checks ---------------------------------------------------------------------------
dig @127.0.0.1 -p "$DNS_PORT" "+subnet=198.51.100.0/24" geo.bench.test A >"$RES/dig.txt" 2>&1 || true
python3 "$HELPER" digcheck "$RES/dig.txt" "$RES/dig.json" >/dev/null \
    || { cat "$RES/dig.txt" >&2; die "dig +subnet=198.51.100.0/24 geo.bench.test A did not answer the EU set (10.5.0.1)"; }
python3 "$HELPER" ecsprobe "$DNS_PORT" "$ECS_OPT" "$RES/ecsprobe.json" >/dev/null \
    || { cat "$RES/ecsprobe.json" >&2; die "dnsperf -E $ECS_OPT: not ECS 198.51.100.0/24, or the server's answer to it is not the EU set"; }
python3 "$HELPER" verify "$DNS_PORT" "$RES/verify.json" >/dev/null \
    || { cat "$RES/verify.json" >&2; die "a record set did not answer as expected"; }
say "checked: dig +subnet EU answer, dnsperf's ECS option and the server's answer to it, every kind"

python3 "$HELPER" queries "$WORK/q"

# --- measurement -----------------------------------------------------------------------------
kind_args() {  # kind_args KIND: sets QFILE and KARGS
    local stem ecs
    read -r stem ecs < <(python3 "$HELPER" kind "$1")
    QFILE="$WORK/q/$stem.txt"
    KARGS=()
    (( ecs )) && KARGS=(-E "$ECS_OPT")
    return 0
}
RATE_ARGS=()
[[ -n "$QPS" ]] && RATE_ARGS=(-Q "$QPS")

# perf_run OUTFILE KIND: one dnsperf run on CPU 1, with the server's CPU ticks (utime+stime and
# utime), CPU 0's task ticks and the wall clock before and after (edge.sh's format). Repeated,
# after waiting for quiet, when CPU 0 ran other work (> 3%), up to RUN_TRIES times in all.
perf_run() {
    local out=$1 kind=$2 c0 c1 u0 u1 k0 k1 t0 t1 try noise
    kind_args "$kind"
    for try in $(seq "$RUN_TRIES"); do
        t0=$(date +%s%N)
        k0=$(python3 "$EDGE_HELPER" cpu0)
        read -r c0 u0 < <(python3 "$EDGE_HELPER" cpu "$SERVER_PID")
        run_child taskset -c 1 dnsperf -s 127.0.0.1 -p "$DNS_PORT" -d "$QFILE" -e "${KARGS[@]}" -t 1 \
            -c "$CLIENTS" -q "$OUTSTANDING" -l "$SECONDS_PER_RUN" "${RATE_ARGS[@]}" >"$out" 2>&1 \
            || { tail -5 "$out" >&2; die "dnsperf ($kind) failed"; }
        read -r c1 u1 < <(python3 "$EDGE_HELPER" cpu "$SERVER_PID")
        k1=$(python3 "$EDGE_HELPER" cpu0)
        t1=$(date +%s%N)
        echo "$c0 $c1 $k0 $k1 $t0 $t1 $u0 $u1" >"$out.cpu"
        echo "$try" >"$out.tries"
        kill -0 "$SERVER_PID" 2>/dev/null || die "server died during dnsperf ($kind)"
        python3 "$EDGE_HELPER" dnsperf "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
c = open(sys.argv[1]).read().split(); clk = int(sys.argv[2])
cpu = (int(c[1]) - int(c[0])) / clk * 1e6 / max(1, r.get("completed") or 0)
print("   %-10s %s q/s, %.3f us/query, lost %s, rcodes %s" % (sys.argv[3], format(r.get("qps", 0), ",.0f"), cpu, r.get("lost"), r.get("rcodes")))' \
            "$out.cpu" "$(getconf CLK_TCK)" "$kind" >&2
        noise=$(python3 "$EDGE_HELPER" noisy "$out.cpu") || break
        if (( try < RUN_TRIES )); then
            say "   $noise: repeating once the machine is quiet"
            wait_quiet "$(basename "$out" .txt)-retry"
        else
            say "   WARNING: $noise (kept; see warnings)"
        fi
    done
}

getconf CLK_TCK >"$RES/clk_tck"
cat /proc/loadavg >"$RES/loadavg_before"
wait_quiet "measuring"

# Idle: what the process (control node + edge) burns with no queries.
read -r c0 _ < <(python3 "$EDGE_HELPER" cpu "$SERVER_PID")
t0=$(date +%s%N)
sleep "$IDLE_SECS"
read -r c1 _ < <(python3 "$EDGE_HELPER" cpu "$SERVER_PID")
t1=$(date +%s%N)
echo "$c0 $c1 $t0 $t1" >"$RES/idle.cpu"

say "warm-up: ${WARM_SECS}s of each kind"
for k in $KINDS; do
    kind_args "$k"
    run_child taskset -c 1 dnsperf -s 127.0.0.1 -p "$DNS_PORT" -d "$QFILE" -e "${KARGS[@]}" -t 1 \
        -c "$CLIENTS" -q "$OUTSTANDING" -l "$WARM_SECS" "${RATE_ARGS[@]}" >"$WORK/warm-$k.txt" 2>&1 || true
done

read -r -a KARR <<<"$KINDS"
N=${#KARR[@]}
for r in $(seq "$ROUNDS"); do
    order=()
    for i in $(seq 0 $((N - 1))); do order+=("${KARR[$(((i + r - 1) % N))]}"); done
    echo "${order[*]}" >"$RES/order_$r"
    say "round $r/$ROUNDS: ${order[*]} (${SECONDS_PER_RUN}s each)"
    for k in "${order[@]}"; do
        perf_run "$RES/r${r}_$k.txt" "$k"
    done
done
cat /proc/loadavg >"$RES/loadavg_after"
cp "$WORK/server.log" "$RES/server.log"

stop_server

# --- results ---------------------------------------------------------------------------------
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "command=$CMDLINE"
    echo "nproc=$NPROC"
    echo "cpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -sr)"
    echo "mem_kib=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
    echo "meridian_version=$("$MERIDIAN" --version 2>/dev/null | awk '{print $2}') ($MERIDIAN_BUILT, sha256 $(sha256sum "$MERIDIAN" | cut -c1-12))"
    echo "dnsperf_version=$(dnsperf -h 2>&1 | awk '/^Version/ {print $2}')"
    echo "seconds=$SECONDS_PER_RUN"
    echo "rounds=$ROUNDS"
    echo "kinds=$KINDS"
    echo "qps=$QPS"
    echo "clients=$CLIENTS"
    echo "outstanding=$OUTSTANDING"
    echo "ecs_opt=$ECS_OPT"
    echo "server_cmd=$SERVER_CMD"
    echo "ready_s=$READY_S"
    echo "total_s=$(python3 -c "import time; print(round(time.time() - $T0, 1))")"
} >"$RES/meta.env"
mkdir -p "$OUT_DIR"
python3 "$HELPER" assemble "$RES" "$OUT_DIR/policy.json"
python3 "$HELPER" report "$OUT_DIR/policy.json" "$OUT_DIR/policy.md"
say "results: $OUT_DIR/policy.md and $OUT_DIR/policy.json"
cat "$OUT_DIR/policy.md"
