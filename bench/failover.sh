#!/usr/bin/env bash
# Health-check failover benchmark: two figures of the health-check requirement.
#  1. Failover time: from the endpoint dying to every edge answering the secondary (measured by
#     querying the edges), at RequestInterval 1 s and FailureThreshold 2. Target: <= 2.5 s.
#     3 `meridian control` nodes + 3 `meridian edge`s (pop1..pop3) on loopback.
#  2. Probe load one edge sustains with 1,000 checks at 1 s intervals: CPU and memory of one
#     `meridian dev` (its embedded edge probes every check) against local TCP listeners.
#
#   bench/failover.sh                                                   full run (~3 min): bench/results/failover.{md,json}
#   BENCH_RUNS=2 BENCH_CHECKS=200 BENCH_LOAD_SECONDS=10 bench/failover.sh   smoke run (~2 min), labelled SMOKE
#
# Environment: MERIDIAN_BIN (default target/release/meridian), BENCH_RUNS (default 10: failovers
# measured), BENCH_CHECKS (default 1000), BENCH_LOAD_SECONDS (default 30: the CPU/RSS window),
# BENCH_PARTS (default "failover load"), BENCH_POLL_MS (default 10: how often every edge is
# queried), BENCH_PORT_BASE (default 15800: control +1..+3, edge DNS +11..+13, edge metrics
# +21..+23, the HTTP endpoint +30, dev API +41, dev DNS +42, TCP listeners +50..+53),
# BENCH_QUIET_WAIT (default 300 s), BENCH_KEEP=1, BENCH_OUT. See bench/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
HELPER="$HERE/failover_helper.py"
OUT_DIR=${BENCH_OUT:-$HERE/results}
MERIDIAN_SRC=${MERIDIAN_BIN:-$REPO/target/release/meridian}
RUNS=${BENCH_RUNS:-10}
CHECKS=${BENCH_CHECKS:-1000}
LOAD_SECONDS=${BENCH_LOAD_SECONDS:-30}
PARTS=${BENCH_PARTS:-"failover load"}
POLL_MS=${BENCH_POLL_MS:-10}
PORT_BASE=${BENCH_PORT_BASE:-15800}
QUIET_WAIT=${BENCH_QUIET_WAIT:-300}

T0=$(date +%s.%N)
say() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

CMDLINE=""
for v in MERIDIAN_BIN BENCH_RUNS BENCH_CHECKS BENCH_LOAD_SECONDS BENCH_PARTS BENCH_POLL_MS BENCH_PORT_BASE BENCH_QUIET_WAIT BENCH_KEEP BENCH_OUT; do
    if [[ -n "${!v+x}" ]]; then
        val=${!v}
        [[ "$val" =~ [[:space:]] ]] && val="\"$val\""
        CMDLINE+="$v=$val "
    fi
done
CMDLINE+="bench/failover.sh"

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install it ($2)"; }
need python3 "python3"
[[ -x "$MERIDIAN_SRC" ]] || die "meridian binary not found at $MERIDIAN_SRC: build it with 'cargo build --release -p meridian' or set MERIDIAN_BIN"
python3 -c 'import dns.message' 2>/dev/null || die "python3 module 'dns' (dnspython) not found: pip install dnspython"
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -ge 1 ]] || die "BENCH_RUNS must be >= 1"
[[ "$CHECKS" =~ ^[0-9]+$ && "$CHECKS" -ge 1 ]] || die "BENCH_CHECKS must be >= 1"
[[ "$LOAD_SECONDS" =~ ^[0-9]+$ && "$LOAD_SECONDS" -ge 1 ]] || die "BENCH_LOAD_SECONDS must be a whole number >= 1"
[[ "$POLL_MS" =~ ^[0-9]+$ && "$POLL_MS" -ge 1 ]] || die "BENCH_POLL_MS must be >= 1"
for p in $PARTS; do [[ "$p" == failover || "$p" == load ]] || die "BENCH_PARTS: unknown part '$p' (failover, load)"; done

port_free() {
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
for off in 1 2 3 11 12 13 21 22 23 30 41 42 50 51 52 53; do
    p=$((PORT_BASE + off))
    port_free "$p" || die "port 127.0.0.1:$p is in use (see 'ss -lntup'); free it or set BENCH_PORT_BASE"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/meridian-failover-bench.XXXXXX")
RES="$WORK/res"
mkdir -p "$WORK/bin" "$RES"
CHILD_PID=""
run_child() {  # a background job, so SIGTERM/SIGINT reach the trap at once (the helper stops its processes)
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
    rm -rf "$WORK/bin"
    if [[ "${BENCH_KEEP:-0}" == 1 || ( $rc -ne 0 && $rc -ne 130 ) ]]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM
say "work directory: $WORK"

# A private link (or copy): a concurrent `cargo build` replaces the file, not this inode.
ln "$MERIDIAN_SRC" "$WORK/bin/meridian" 2>/dev/null || cp "$MERIDIAN_SRC" "$WORK/bin/meridian"
MERIDIAN="$WORK/bin/meridian"
MERIDIAN_BUILT="git HEAD $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'), binary built $(date -u -r "$MERIDIAN_SRC" +%Y-%m-%dT%H:%M:%SZ)"

cat /proc/loadavg >"$RES/loadavg_before"
POLL_S=$(python3 -c "print($POLL_MS / 1000)")
for part in $PARTS; do
    mkdir -p "$WORK/$part"
    if [[ "$part" == failover ]]; then
        say "failover: 3 control nodes, 3 edges, $RUNS runs"
        run_child python3 "$HELPER" failover --meridian "$MERIDIAN" --work "$WORK/failover" --port-base "$PORT_BASE" \
            --runs "$RUNS" --period "$POLL_S" --quiet-wait "$QUIET_WAIT" --out "$RES/failover.json" \
            || die "failover part failed (logs in $WORK/failover)"
    else
        say "load: meridian dev, $CHECKS TCP checks at 1 s, ${LOAD_SECONDS}s window"
        run_child python3 "$HELPER" load --meridian "$MERIDIAN" --work "$WORK/load" --port-base "$PORT_BASE" \
            --checks "$CHECKS" --seconds "$LOAD_SECONDS" --quiet-wait "$QUIET_WAIT" --out "$RES/load.json" \
            || die "load part failed (logs in $WORK/load)"
    fi
done
cat /proc/loadavg >"$RES/loadavg_after"

SMOKE=0
WHY=()
(( RUNS < 10 )) && { SMOKE=1; WHY+=("BENCH_RUNS=$RUNS < 10"); }
(( CHECKS < 1000 )) && { SMOKE=1; WHY+=("BENCH_CHECKS=$CHECKS < 1000"); }
(( LOAD_SECONDS < 30 )) && { SMOKE=1; WHY+=("BENCH_LOAD_SECONDS=$LOAD_SECONDS < 30"); }
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "command=$CMDLINE"
    echo "smoke=$SMOKE"
    echo "smoke_why=$(IFS=';'; echo "${WHY[*]:-}" | sed 's/;/, /g')"
    echo "nproc=$(nproc)"
    echo "cpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "kernel=$(uname -sr)"
    echo "mem_kib=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
    echo "meridian_version=$("$MERIDIAN" --version 2>/dev/null | awk '{print $2}') ($MERIDIAN_BUILT, sha256 $(sha256sum "$MERIDIAN" | cut -c1-12))"
    echo "loadavg_before=$(cat "$RES/loadavg_before")"
    echo "loadavg_after=$(cat "$RES/loadavg_after")"
    echo "total_s=$(python3 -c "import time; print(round(time.time() - $T0, 1))")"
} >"$RES/meta.env"
mkdir -p "$OUT_DIR"
python3 "$HELPER" assemble "$RES" "$RES/meta.env" "$OUT_DIR/failover.json"
python3 "$HELPER" report "$OUT_DIR/failover.json" "$OUT_DIR/failover.md"
say "results: $OUT_DIR/failover.md and $OUT_DIR/failover.json"
cat "$OUT_DIR/failover.md"
