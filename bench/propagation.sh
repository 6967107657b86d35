#!/usr/bin/env bash
# Propagation benchmark: how long a committed change takes to be served by every edge, and what
# an edge's apply of a one-record delta costs, in a small and a large zone.
#
#   control node(s) ──EdgeSync stream──► N × `meridian edge --workers 1` (N = 1, 5, 20)
#   zones: small.test. (1,000 sets) and big.test. (1,000,000 sets)
#   figures: `meridian-bench propagation` p50/p99 (change call returns → every edge answers the
#            new TXT over UDP), and meridian_edge_apply_seconds_last after single-record changes
#
#   bench/propagation.sh                  full run (~6 min): bench/results/propagation.{md,json}
#   BENCH_QUICK=1 bench/propagation.sh    smoke run (~1.5 min, 100,000-set big zone, 1 and 5 edges,
#                                         few changes): bench/results/propagation-quick.{md,json}
#
# Environment: MERIDIAN_BIN, MERIDIAN_BENCH_BIN (defaults in target/release), BENCH_CONTROLS
# (1 or 3 control nodes, default 1; with 3, edge i follows node ((i-1) mod 3) + 1 first, and
# the results go to bench/results/propagation-3controls.{md,json}),
# BENCH_EDGES (default "1 5 20"), BENCH_CHANGES (changes per small-zone configuration, default
# 200), BENCH_BIG_CHANGES (per big-zone configuration, default 200, 100 with 20 edges),
# BENCH_BIG_SETS (default 1000000), BENCH_APPLY_SAMPLES (default 20), BENCH_PROBE_NICE (nice
# level of the probe, default 19), BENCH_PORT_BASE (default 15600: control +1..+3, edge i DNS
# +10+i, metrics +40+i), BENCH_KEEP=1, BENCH_OUT, BENCH_QUIET_WAIT (default 300),
# BENCH_RUN_TRIES (default 2). Diagnostic: BENCH_EDGE_CACHE=0 starts the edges without --cache
# (no on-disk catalog cache: rules its rewrite out as a cost); results then go to
# bench/results/propagation-nocache.{md,json}. See bench/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
HELPER="$HERE/cp_helper.py"
QUICK=${BENCH_QUICK:-0}
PORT_BASE=${BENCH_PORT_BASE:-15600}
OUT_DIR=${BENCH_OUT:-$HERE/results}
MERIDIAN_SRC=${MERIDIAN_BIN:-$REPO/target/release/meridian}
BENCH_SRC=${MERIDIAN_BENCH_BIN:-$REPO/target/release/meridian-bench}
CONTROLS=${BENCH_CONTROLS:-1}
QUIET_WAIT=${BENCH_QUIET_WAIT:-300}
RUN_TRIES=${BENCH_RUN_TRIES:-2}
PROBE_NICE=${BENCH_PROBE_NICE:-19}
EDGE_CACHE=${BENCH_EDGE_CACHE:-1}
SMALL_SETS=1000
if [[ "$QUICK" == 1 ]]; then
    EDGE_COUNTS=${BENCH_EDGES:-"1 5"}
    CHANGES=${BENCH_CHANGES:-30}; BIG_CHANGES=${BENCH_BIG_CHANGES:-30}; BIG_CHANGES_20=$BIG_CHANGES
    BIG_SETS=${BENCH_BIG_SETS:-100000}; APPLY_SAMPLES=${BENCH_APPLY_SAMPLES:-5}
else
    EDGE_COUNTS=${BENCH_EDGES:-"1 5 20"}
    CHANGES=${BENCH_CHANGES:-200}; BIG_CHANGES=${BENCH_BIG_CHANGES:-200}; BIG_CHANGES_20=${BENCH_BIG_CHANGES:-100}
    BIG_SETS=${BENCH_BIG_SETS:-1000000}; APPLY_SAMPLES=${BENCH_APPLY_SAMPLES:-20}
fi
OUT_NAME=propagation
[[ "$EDGE_CACHE" == 0 ]] && OUT_NAME+=-nocache
[[ "$CONTROLS" == 3 ]] && OUT_NAME+=-3controls
[[ "$QUICK" == 1 ]] && OUT_NAME+=-quick
SYNC_TIMEOUT=600   # seconds for N edges to load the full catalog
STEP_TIMEOUT=300   # seconds for one propagation run

T0=$(date +%s.%N)
say() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

command -v python3 >/dev/null || die "python3 not found"
command -v timeout >/dev/null || die "'timeout' not found (apt-get install coreutils)"
[[ -x "$MERIDIAN_SRC" ]] || die "meridian binary not found at $MERIDIAN_SRC: build it with 'cargo build --release -p meridian' or set MERIDIAN_BIN"
[[ -x "$BENCH_SRC" ]] || die "meridian-bench not found at $BENCH_SRC: build it with 'cargo build --release -p meridian-bench' or set MERIDIAN_BENCH_BIN"
[[ "$CONTROLS" == 1 || "$CONTROLS" == 3 ]] || die "BENCH_CONTROLS must be 1 or 3"
MAX_EDGES=0
for n in $EDGE_COUNTS; do (( n > MAX_EDGES )) && MAX_EDGES=$n; done
(( MAX_EDGES <= 30 )) || die "at most 30 edges (port layout)"
for i in $(seq "$CONTROLS"); do
    python3 "$HELPER" port-free $((PORT_BASE + i)) || die "port 127.0.0.1:$((PORT_BASE + i)) is in use; free it or set BENCH_PORT_BASE"
done
for i in $(seq "$MAX_EDGES"); do
    for p in $((PORT_BASE + 10 + i)) $((PORT_BASE + 40 + i)); do
        python3 "$HELPER" port-free "$p" || die "port 127.0.0.1:$p is in use; free it or set BENCH_PORT_BASE"
    done
done

# --- work dir and cleanup --------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meridian-propagation-bench.XXXXXX")
R="$WORK/res"
mkdir -p "$WORK/bin" "$R"
declare -a CONTROL_PIDS=() EDGE_PIDS=()
CHILD_PID=""
run_child() {
    local rc=0
    "$@" &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return $rc
}
stop_pids() {  # SIGTERM, then SIGKILL after 10 s; each PID is one we started
    local p i alive
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    for i in $(seq 100); do
        alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        (( alive )) || break
        sleep 0.1
    done
    for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$CHILD_PID" ]]; then kill -TERM "$CHILD_PID" 2>/dev/null || true; wait "$CHILD_PID" 2>/dev/null || true; fi
    (( ${#EDGE_PIDS[@]} )) && stop_pids "${EDGE_PIDS[@]}"
    (( ${#CONTROL_PIDS[@]} )) && stop_pids "${CONTROL_PIDS[@]}"
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM
say "work directory: $WORK"

cp "$MERIDIAN_SRC" "$WORK/bin/meridian"
cp "$BENCH_SRC" "$WORK/bin/meridian-bench"
MERIDIAN="$WORK/bin/meridian"
BENCH="$WORK/bin/meridian-bench"
built() { echo "git HEAD $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') at copy, binary built $(date -u -r "$1" +%Y-%m-%dT%H:%M:%SZ), sha256 $(sha256sum "$2" | cut -c1-12)"; }

wait_quiet() {
    local f
    run_child python3 "$HELPER" quiet "$QUIET_WAIT" >"$WORK/quiet.out"
    f=$(cat "$WORK/quiet.out")
    python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 0.10 else 1)' "$f" \
        || say "WARNING: machine still $f busy before $1 after waiting ${QUIET_WAIT}s; figures may be skewed"
}
json_get() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
jstr() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

# --- control plane ---------------------------------------------------------------------------
: >"$R/pids.env"
: >"$R/steps.jsonl"
for i in $(seq "$CONTROLS"); do
    "$MERIDIAN" control --id "$i" --data "$WORK/control$i" --listen "127.0.0.1:$((PORT_BASE + i))" \
        >"$WORK/control$i.log" 2>&1 &
    CONTROL_PIDS+=($!)
    echo "$!=control$i" >>"$R/pids.env"
done
API1="http://127.0.0.1:$((PORT_BASE + 1))"
INIT_ARGS=()
if (( CONTROLS == 3 )); then
    for i in 1 2 3; do INIT_ARGS+=(--node "$i=127.0.0.1:$((PORT_BASE + i))"); done
fi
for i in $(seq 100); do
    "$MERIDIAN" --api "$API1" cluster init "${INIT_ARGS[@]}" >"$WORK/init.out" 2>&1 && break
    (( i < 100 )) || { cat "$WORK/init.out" >&2; die "cluster init failed"; }
    sleep 0.2
done
python3 "$HELPER" leader "$MERIDIAN" "$API1" 30 >"$R/leader.json" || die "no leader elected (logs in $WORK/control*.log)"
LEADER_ADDR=$(json_get "$R/leader.json" addr)
say "control plane up: $CONTROLS node(s), leader $LEADER_ADDR"
controls_alive() {
    local i
    for i in $(seq 0 $((CONTROLS - 1))); do
        kill -0 "${CONTROL_PIDS[$i]}" 2>/dev/null || { say "control node $((i + 1)) exited; its log:"; tail -30 "$WORK/control$((i + 1)).log" >&2; return 1; }
    done
}

# fill ZONE SETS BATCH: load a zone with meridian-bench fill (no edge attached: setup, but timed).
fill() {
    local zone=$1 sets=$2 batch=$3 rc=0
    wait_quiet "fill $zone"
    say "loading $zone: $sets sets in batches of $batch"
    python3 "$HELPER" cpusnap $$ "${CONTROL_PIDS[@]}" >"$R/fill-$zone.before"
    run_child timeout -k 5 900 "$BENCH" --api "$LEADER_ADDR" fill --zone "$zone" --sets "$sets" --batch-size "$batch" \
        >"$R/fill-$zone.out" 2>"$R/fill-$zone.err" || rc=$?
    python3 "$HELPER" cpusnap $$ "${CONTROL_PIDS[@]}" >"$R/fill-$zone.after"
    (( rc == 0 )) || { head -3 "$R/fill-$zone.err" >&2; controls_alive || true; die "fill $zone failed (exit $rc)"; }
    say "   $(cat "$R/fill-$zone.out")"
    python3 "$HELPER" record "$R/steps.jsonl" "step=\"fill_$zone\"" "zone=\"$zone\"" "controls=$CONTROLS" \
        "cpu_before=$(cat "$R/fill-$zone.before")" "cpu_after=$(cat "$R/fill-$zone.after")" --json-file "$R/fill-$zone.out"
}

# --- edges -----------------------------------------------------------------------------------
EDGE_DNS=()
EDGE_METRICS=()
start_edges() {  # start_edges N: edges 1..N, fresh caches
    local n=$1 i j list
    EDGE_PIDS=(); EDGE_DNS=(); EDGE_METRICS=()
    for i in $(seq "$n"); do
        list=""
        for j in $(seq 0 $((CONTROLS - 1))); do
            list+="${list:+,}127.0.0.1:$((PORT_BASE + 1 + ((i - 1 + j) % CONTROLS)))"
        done
        rm -rf "$WORK/edge$i"; mkdir -p "$WORK/edge$i"
        cache=(--cache "$WORK/edge$i/cache")
        [[ "$EDGE_CACHE" == 0 ]] && cache=()
        "$MERIDIAN" edge --control "$list" --id "edge-$i" --pop "pop-$i" --identity "edge-$i" "${cache[@]}" \
            --listen "127.0.0.1:$((PORT_BASE + 10 + i))" --metrics "127.0.0.1:$((PORT_BASE + 40 + i))" --workers 1 \
            >"$WORK/edge$i/log" 2>&1 &
        EDGE_PIDS+=($!)
        echo "$!=edge$i" >>"$R/pids.env"
        EDGE_DNS+=("127.0.0.1:$((PORT_BASE + 10 + i))")
        EDGE_METRICS+=("127.0.0.1:$((PORT_BASE + 40 + i))")
    done
}
stop_edges() {
    (( ${#EDGE_PIDS[@]} )) && stop_pids "${EDGE_PIDS[@]}"
    EDGE_PIDS=()
}
edges_alive() {
    local i
    for i in "${!EDGE_PIDS[@]}"; do
        kill -0 "${EDGE_PIDS[$i]}" 2>/dev/null || { say "edge $((i + 1)) exited; its log:"; tail -30 "$WORK/edge$((i + 1))/log" >&2; return 1; }
    done
}
edge_metrics_all() {  # JSON {addr: metrics} of every running edge
    python3 - "${EDGE_METRICS[@]}" <<'EOF'
import json, sys
sys.path.insert(0, __import__("os").environ["HELPER_DIR"])
import cp_helper
print(json.dumps({a: cp_helper.metrics(a) for a in sys.argv[1:]}))
EOF
}
export HELPER_DIR="$HERE"

# sync LABEL N: start N edges and wait until all serve the current catalog version.
sync_edges() {
    local label=$1 n=$2 version t rss start_ns
    wait_quiet "sync $label $n"
    version=$(python3 "$HELPER" catalog-version "$MERIDIAN" "$API1")
    say "starting $n edge(s); waiting for catalog version $version"
    start_ns=$(date +%s%N)
    start_edges "$n"
    t=$(python3 "$HELPER" wait-synced "$version" "$SYNC_TIMEOUT" "$start_ns" "${EDGE_METRICS[@]}") \
        || { edges_alive || true; die "edges did not sync"; }
    sleep 1
    rss=$(python3 "$HELPER" rss "${EDGE_PIDS[@]}" "${CONTROL_PIDS[@]}")
    say "   $n edge(s) in sync after $t s"
    python3 - "$R/steps.jsonl" "$label" "$n" "$t" "$rss" "$CONTROLS" "${CONTROL_PIDS[0]}" <<'EOF'
import json, sys
path, label, n, t, rss, controls, cpid = sys.argv[1:8]
rss = json.loads(rss)
edge = [v for k, v in rss.items() if k != cpid and v]
rec = {"step": f"sync_{label}_{n}", "zone_label": label, "edges": int(n), "sync_s": float(t),
       "edge_rss_max_mib": round(max(edge) / 1024, 1) if edge else None,
       "control_rss_mib": round((rss.get(cpid) or 0) / 1024, 1), "controls": int(controls)}
open(path, "a").write(json.dumps(rec) + "\n")
EOF
}

# propagate LABEL ZONE CHANGES: meridian-bench propagation over all running edges.
propagate() {
    local label=$1 zone=$2 changes=$3 n=${#EDGE_PIDS[@]} name try rc err nz list
    name="propagation_${label}_${n}"
    list=$(IFS=,; echo "${EDGE_DNS[*]}")
    for try in $(seq "$RUN_TRIES"); do
        wait_quiet "$name"
        edge_metrics_all >"$R/$name.m0"
        python3 "$HELPER" cpusnap $$ "${CONTROL_PIDS[@]}" "${EDGE_PIDS[@]}" >"$R/$name.before"
        say "$name: $changes changes, $n edge(s)"
        rc=0
        run_child timeout -k 5 "$STEP_TIMEOUT" nice -n "$PROBE_NICE" "$BENCH" --api "$LEADER_ADDR" propagation --zone "$zone" \
            --edges "$list" --changes "$changes" >"$R/$name.out" 2>"$R/$name.err" || rc=$?
        python3 "$HELPER" cpusnap $$ "${CONTROL_PIDS[@]}" "${EDGE_PIDS[@]}" >"$R/$name.after"
        edge_metrics_all >"$R/$name.m1"
        controls_alive || die "a control node died during $name"
        edges_alive || die "an edge died during $name"
        err=""
        if (( rc == 124 || rc == 137 )); then err="timed out after ${STEP_TIMEOUT}s"
        elif (( rc != 0 )); then err="meridian-bench exited $rc: $(grep -m1 -E '^Error' "$R/$name.err" || head -1 "$R/$name.err")"; fi
        [[ -n "$err" ]] && say "   $name FAILED: $err" || say "   $(cat "$R/$name.out")"
        nz=$(python3 "$HELPER" noise "$R/$name.before" "$R/$name.after") && {
            if [[ -z "$err" ]] && (( try < RUN_TRIES )); then
                say "   other work used $nz cores during $name: repeating once the machine is quiet"
                continue
            fi
            say "   WARNING: other work used $nz cores during $name (kept; see warnings)"
        }
        break
    done
    python3 "$HELPER" record "$R/steps.jsonl" "step=\"$name\"" "zone=\"$zone\"" "zone_label=\"$label\"" "edges=$n" "tries=$try" \
        "error=$(jstr "$err")" "probe_nice=$PROBE_NICE" \
        "cpu_before=$(cat "$R/$name.before")" "cpu_after=$(cat "$R/$name.after")" \
        "edge_metrics_before=$(cat "$R/$name.m0")" "edge_metrics_after=$(cat "$R/$name.m1")" --json-file "$R/$name.out"
}

# apply_probe LABEL ZONE CATALOG: single-record changes; the first edge's apply time for each.
apply_probe() {
    local label=$1 zone=$2 catalog=$3 name err="" rc=0 idle
    name="apply_${label}"
    wait_quiet "$name"
    idle=$(IFS=,; echo "${CONTROL_PIDS[*]},${EDGE_PIDS[*]}")
    say "$name: $APPLY_SAMPLES single-record changes to $zone, apply time on edge 1"
    run_child python3 "$HELPER" apply-probe --meridian "$MERIDIAN" --api "$API1" --zone "$zone" --metrics "${EDGE_METRICS[0]}" \
        --count "$APPLY_SAMPLES" --idle-pids "$idle" --label "$label" >"$R/$name.out" 2>"$R/$name.err" || rc=$?
    if (( rc != 0 )); then err="apply probe failed: $(tail -3 "$R/$name.err" | tr '\n' ' ')"; say "   $err"
    else say "   $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("median %.3f ms, max %.3f ms over %d" % (r["median_s"]*1e3, r["max_s"]*1e3, r["count"]))' "$R/$name.out")"; fi
    python3 "$HELPER" record "$R/steps.jsonl" "step=\"$name\"" "zone=\"$zone\"" "zone_label=\"$label\"" "catalog=$(jstr "$catalog")" \
        "edges=${#EDGE_PIDS[@]}" "error=$(jstr "$err")" --json-file "$R/$name.out"
}

cat /proc/loadavg >"$R/loadavg_before"
fmt() { printf "%'d" "$1"; }
SMALL_LABEL="$(fmt "$SMALL_SETS")-set"
BIG_LABEL="$(fmt "$BIG_SETS")-set"

# --- phase 1: the small zone alone -----------------------------------------------------------
fill small.test. "$SMALL_SETS" 1000
for n in $EDGE_COUNTS; do
    sync_edges "$SMALL_LABEL" "$n"
    propagate "$SMALL_LABEL" small.test. "$CHANGES"
    if [[ "$n" == "${EDGE_COUNTS%% *}" ]]; then
        apply_probe "small_alone" small.test. "small.test. only ($(fmt "$SMALL_SETS") sets)"
    fi
    stop_edges
done

# --- phase 2: add the big zone ---------------------------------------------------------------
fill big.test. "$BIG_SETS" 10000
for n in $EDGE_COUNTS; do
    sync_edges "$BIG_LABEL" "$n"
    c=$BIG_CHANGES
    (( n >= 20 )) && c=$BIG_CHANGES_20
    propagate "$BIG_LABEL" big.test. "$c"
    if [[ "$n" == "${EDGE_COUNTS%% *}" ]]; then
        apply_probe "big" big.test. "big.test. ($(fmt "$BIG_SETS") sets) + small.test."
        apply_probe "small_beside_big" small.test. "big.test. ($(fmt "$BIG_SETS") sets) + small.test."
    fi
    stop_edges
done
cat /proc/loadavg >"$R/loadavg_after"

# --- results ---------------------------------------------------------------------------------
{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "quick=$QUICK"
    echo "nproc=$(nproc)"
    echo "kernel=$(uname -sr)"
    echo "cpu_model=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "mem_gib=$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
    echo "meridian_version=$("$MERIDIAN" --version | awk '{print $2}') ($(built "$MERIDIAN_SRC" "$MERIDIAN"))"
    echo "bench_version=$(built "$BENCH_SRC" "$BENCH")"
    echo "command=$([[ $QUICK == 1 ]] && echo 'BENCH_QUICK=1 ')$([[ $CONTROLS != 1 ]] && echo "BENCH_CONTROLS=$CONTROLS ")$([[ $EDGE_CACHE == 0 ]] && echo "BENCH_EDGE_CACHE=0 ")bench/propagation.sh"
    echo "controls=$CONTROLS"
    echo "edge_counts=$EDGE_COUNTS"
    echo "probe_nice=$PROBE_NICE"
    echo "edge_cache=$EDGE_CACHE"
    echo "small_zone=small.test."
    echo "small_sets=$SMALL_SETS"
    echo "small_sets_fmt=$(fmt "$SMALL_SETS")"
    echo "big_zone=big.test."
    echo "big_sets=$BIG_SETS"
    echo "big_sets_fmt=$(fmt "$BIG_SETS")"
    echo "loadavg_before=$(cut -d' ' -f1-3 "$R/loadavg_before")"
    echo "loadavg_after=$(cut -d' ' -f1-3 "$R/loadavg_after")"
    echo "total_s=$(python3 -c "import time; print(round(time.time() - $T0, 1))")"
} >"$R/meta.env"
grep -hE ' (WARN|ERROR) ' "$WORK"/control*.log "$WORK"/edge*/log 2>/dev/null | cut -c1-300 | tail -50 >"$R/log_warnings.txt" || true
mkdir -p "$OUT_DIR"
python3 "$HELPER" assemble propagation "$R" "$OUT_DIR/$OUT_NAME.json"
python3 "$HELPER" report propagation "$OUT_DIR/$OUT_NAME.json" "$OUT_DIR/$OUT_NAME.md"
say "results: $OUT_DIR/$OUT_NAME.md and $OUT_DIR/$OUT_NAME.json"
cat "$OUT_DIR/$OUT_NAME.md"
