#!/usr/bin/env bash
# Control-plane benchmark: a 3-node `meridian control` cluster on loopback (RocksDB log, every
# append fsynced), driven by `meridian-bench` against the leader:
#   (a) 1-record change batches as fast as they commit, 1 / 64 / 256 calls in flight
#   (b) commit latency at fixed offered rates (250, 500 and 1,000 batches/s; the target is at 1,000)
#   (c) 1,000-record batches, 1 and 8 in flight
#   (d) loading a 1,000,000-record-set zone with `meridian-bench fill` (100 batches of 10,000:
#       not an atomic import)
#   (e) (a) at 64 in flight and (b) at 1,000/s again with the big zone in the state (each
#       crosses a Raft snapshot, which serializes the whole state)
#
#   bench/control.sh                  full run (~4 min): bench/results/control.{md,json}
#   BENCH_QUICK=1 bench/control.sh    smoke run (~1 min, short steps, 100,000-set zone):
#                                     bench/results/control-quick.{md,json} (git-ignored)
#
# Environment: MERIDIAN_BIN (default target/release/meridian), MERIDIAN_BENCH_BIN (default
# target/release/meridian-bench), BENCH_PORT_BASE (default 15500: nodes on +1, +2, +3),
# BENCH_DATA_DIR (parent of the work directory with the RocksDB data; default $TMPDIR or /tmp),
# BENCH_KEEP=1 keeps the work directory (data, node logs, raw outputs), BENCH_OUT (results dir),
# BENCH_QUIET_WAIT (default 300: seconds to wait, before each step, for the machine to be idle),
# BENCH_RUN_TRIES (default 3: tries of a step during which other work used the CPUs).
# Control nodes built with `--metrics` also report the leader's own commit-latency histogram per
# step (metrics on ports +11, +12, +13).
# See bench/README.md for what each figure means.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
HELPER="$HERE/cp_helper.py"
QUICK=${BENCH_QUICK:-0}
PORT_BASE=${BENCH_PORT_BASE:-15500}
OUT_DIR=${BENCH_OUT:-$HERE/results}
MERIDIAN_SRC=${MERIDIAN_BIN:-$REPO/target/release/meridian}
BENCH_SRC=${MERIDIAN_BENCH_BIN:-$REPO/target/release/meridian-bench}
DATA_PARENT=${BENCH_DATA_DIR:-${TMPDIR:-/tmp}}
QUIET_WAIT=${BENCH_QUIET_WAIT:-300}
RUN_TRIES=${BENCH_RUN_TRIES:-3}

if [[ "$QUICK" == 1 ]]; then
    WARM_BATCHES=200; C1_BATCHES=100; C64_BATCHES=1000; C256_BATCHES=2000
    RATES="500 1000"; RATE_SECS=2; RATE_CONC=256
    BIG_C1_BATCHES=10; BIG_C8_BATCHES=40
    FILL_SETS=100000; FILL_TIMEOUT=120; AFTER_BATCHES=2000
else
    WARM_BATCHES=1000; C1_BATCHES=500; C64_BATCHES=5000; C256_BATCHES=10000
    RATES="250 500 1000"; RATE_SECS=10; RATE_CONC=256
    BIG_C1_BATCHES=30; BIG_C8_BATCHES=200
    FILL_SETS=1000000; FILL_TIMEOUT=300; AFTER_BATCHES=12000
fi
OUT_NAME=control
[[ "$QUICK" == 1 ]] && OUT_NAME+=-quick
FILL_BATCH=10000
STEP_TIMEOUT=180   # seconds any commit step may take before it is called hung

T0=$(date +%s.%N)
say() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# --- tools -----------------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 not found"
command -v timeout >/dev/null || die "'timeout' not found (apt-get install coreutils)"
[[ -x "$MERIDIAN_SRC" ]] || die "meridian binary not found at $MERIDIAN_SRC: build it with 'cargo build --release -p meridian' or set MERIDIAN_BIN"
[[ -x "$BENCH_SRC" ]] || die "meridian-bench not found at $BENCH_SRC: build it with 'cargo build --release -p meridian-bench' or set MERIDIAN_BENCH_BIN"
for i in 1 2 3; do
    for p in $((PORT_BASE + i)) $((PORT_BASE + 10 + i)); do
        python3 "$HELPER" port-free "$p" \
            || die "port 127.0.0.1:$p is in use (see 'ss -lntup'); free it or set BENCH_PORT_BASE"
    done
done

# --- work dir and cleanup --------------------------------------------------------------------
mkdir -p "$DATA_PARENT"
WORK=$(mktemp -d "$DATA_PARENT/meridian-control-bench.XXXXXX")
R="$WORK/res"
mkdir -p "$WORK/bin" "$R"
declare -a NODE_PIDS=()
CHILD_PID=""
# run_child CMD...: runs CMD in the background and waits, so SIGINT/SIGTERM reach the trap at once.
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
    (( ${#NODE_PIDS[@]} )) && stop_pids "${NODE_PIDS[@]}"
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM
say "work directory: $WORK"

# Private copies: a concurrent `cargo build` cannot swap the binaries mid-run.
cp "$MERIDIAN_SRC" "$WORK/bin/meridian"
cp "$BENCH_SRC" "$WORK/bin/meridian-bench"
MERIDIAN="$WORK/bin/meridian"
BENCH="$WORK/bin/meridian-bench"
# Control nodes built with `--metrics` expose the leader's own commit latency.
CONTROL_METRICS=0
"$MERIDIAN" control --help 2>/dev/null | grep -q -- '--metrics' && CONTROL_METRICS=1
built() { echo "git HEAD $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') at copy, binary built $(date -u -r "$1" +%Y-%m-%dT%H:%M:%SZ), sha256 $(sha256sum "$2" | cut -c1-12)"; }

wait_quiet() {
    local f
    run_child python3 "$HELPER" quiet "$QUIET_WAIT" >"$WORK/quiet.out"
    f=$(cat "$WORK/quiet.out")
    python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 0.10 else 1)' "$f" \
        || say "WARNING: machine still $f busy before $1 after waiting ${QUIET_WAIT}s; figures may be skewed"
}

# --- cluster ---------------------------------------------------------------------------------
python3 "$HELPER" fsync "$WORK" >"$R/fsync.json"
say "fsync probe in $WORK: $(cat "$R/fsync.json")"
: >"$R/pids.env"
for i in 1 2 3; do
    margs=()
    (( CONTROL_METRICS )) && margs=(--metrics "127.0.0.1:$((PORT_BASE + 10 + i))")
    "$MERIDIAN" control --id "$i" --data "$WORK/node$i" --listen "127.0.0.1:$((PORT_BASE + i))" \
        "${margs[@]}" >"$WORK/node$i.log" 2>&1 &
    NODE_PIDS+=($!)
    echo "$!=node$i" >>"$R/pids.env"
done
API1="http://127.0.0.1:$((PORT_BASE + 1))"
for i in $(seq 100); do
    if "$MERIDIAN" --api "$API1" cluster init --node "1=127.0.0.1:$((PORT_BASE + 1))" --node "2=127.0.0.1:$((PORT_BASE + 2))" \
        --node "3=127.0.0.1:$((PORT_BASE + 3))" >"$WORK/init.out" 2>&1; then
        break
    fi
    (( i < 100 )) || { cat "$WORK/init.out" >&2; die "cluster init failed"; }
    sleep 0.2
done
python3 "$HELPER" leader "$MERIDIAN" "$API1" 30 >"$R/leader.json" || die "no leader elected (logs in $WORK/node*.log)"
LEADER=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["leader"])' "$R/leader.json")
LEADER_ADDR=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["addr"])' "$R/leader.json")
say "cluster up: leader node $LEADER ($LEADER_ADDR)"
sed -i "s/=node$LEADER\$/=node$LEADER (leader)/" "$R/pids.env"

nodes_alive() {
    local i
    for i in 0 1 2; do
        kill -0 "${NODE_PIDS[$i]}" 2>/dev/null || { say "node $((i + 1)) exited; its log:"; tail -30 "$WORK/node$((i + 1)).log" >&2; return 1; }
    done
}
leader_metrics() {  # leader_metrics LEADER-JSON-FILE: the leader's /metrics as JSON ({} without --metrics)
    local id
    if (( CONTROL_METRICS )); then
        id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["leader"])' "$1")
        python3 "$HELPER" metrics "127.0.0.1:$((PORT_BASE + 10 + id))" 2>/dev/null || echo '{}'
    else
        echo '{}'
    fi
}
log_lines() { cat "$WORK"/node*.log | grep -cE ' (WARN|ERROR) ' || true; }
log_count() { cat "$WORK"/node*.log | grep -cE "$1" || true; }

# step NAME TIMEOUT RETRYABLE MERIDIAN-BENCH-ARGS...: one measured meridian-bench run against the
# leader, after the machine is quiet; repeated (if RETRYABLE) when other work used the CPUs.
step() {
    local name=$1 tmo=$2 retry=$3 try rc nz err leader_now w0 w1 t0 t1 b0 b1 lid l0
    shift 3
    for try in $(seq "$RUN_TRIES"); do
        wait_quiet "$name"
        # The leader may have changed (an election under load): always talk to the current one.
        python3 "$HELPER" leader "$MERIDIAN" "$API1" 30 >"$R/$name.leader" || die "no leader before $name"
        leader_now=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["addr"])' "$R/$name.leader")
        w0=$(log_lines); t0=$(log_count 'timeout after|Timeout expired'); b0=$(log_count 'backoff mode')
        lid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["leader"])' "$R/$name.leader")
        l0=$(wc -l <"$WORK/node$lid.log")
        leader_metrics "$R/$name.leader" >"$R/$name.lm0"
        python3 "$HELPER" cpusnap $$ "${NODE_PIDS[@]}" >"$R/$name.before"
        rc=0
        say "$name: meridian-bench $*"
        run_child timeout -k 5 "$tmo" "$BENCH" --api "$leader_now" "$@" >"$R/$name.out" 2>"$R/$name.err" || rc=$?
        python3 "$HELPER" cpusnap $$ "${NODE_PIDS[@]}" >"$R/$name.after"
        leader_metrics "$R/$name.leader" >"$R/$name.lm1"
        w1=$(log_lines); t1=$(log_count 'timeout after|Timeout expired'); b1=$(log_count 'backoff mode')
        nodes_alive || die "a control node died during $name"
        err=""
        if (( rc == 124 || rc == 137 )); then
            err="timed out after ${tmo}s (meridian-bench killed)"
        elif (( rc != 0 )); then
            err="meridian-bench exited $rc: $(grep -m1 -E '^Error' "$R/$name.err" || head -1 "$R/$name.err")"
        fi
        [[ -n "$err" ]] && say "   $name FAILED: $err"
        [[ -z "$err" ]] && say "   $(cat "$R/$name.out")"
        (( w1 - w0 > 0 )) && say "   $((w1 - w0)) WARN/ERROR lines in the node logs ($((t1 - t0)) RPC timeouts, $((b1 - b0)) replication backoffs)"
        nz=$(python3 "$HELPER" noise "$R/$name.before" "$R/$name.after") && {
            if [[ -z "$err" && "$retry" == 1 ]] && (( try < RUN_TRIES )); then
                say "   other work used $nz cores during $name: repeating once the machine is quiet"
                continue
            fi
            say "   WARNING: other work used $nz cores during $name (kept; see warnings)"
        }
        break
    done
    python3 "$HELPER" record "$R/steps.jsonl" "step=\"$name\"" "args=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@")" \
        "tries=$try" "leader=$(cat "$R/$name.leader")" "error=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$err")" \
        "log_warn_lines=$((w1 - w0))" "rpc_timeouts=$((t1 - t0))" "replication_backoffs=$((b1 - b0))" \
        "cpu_before=$(cat "$R/$name.before")" "cpu_after=$(cat "$R/$name.after")" \
        "leader_metrics_before=$(cat "$R/$name.lm0")" "leader_metrics_after=$(cat "$R/$name.lm1")" \
        "leader_snapshots=$(python3 "$HELPER" snapshots "$WORK/node$lid.log" "$l0")" --json-file "$R/$name.out"
}

cat /proc/loadavg >"$R/loadavg_before"

# Warm-up: connections, RocksDB memtables, the first zone (not recorded).
wait_quiet warmup
run_child "$BENCH" --api "$LEADER_ADDR" commit --zone warm.test. --batches "$WARM_BATCHES" --concurrency 64 >"$R/warmup.out" 2>&1 \
    || { cat "$R/warmup.out" >&2; die "warm-up failed"; }
say "warm-up: $(cat "$R/warmup.out")"

# (a) 1-record batches, as fast as they commit.
step commit_1rec_c1 "$STEP_TIMEOUT" 1 commit --zone a.test. --batches "$C1_BATCHES" --batch-size 1 --concurrency 1
step commit_1rec_c64 "$STEP_TIMEOUT" 1 commit --zone a.test. --batches "$C64_BATCHES" --batch-size 1 --concurrency 64
step commit_1rec_c256 "$STEP_TIMEOUT" 1 commit --zone a.test. --batches "$C256_BATCHES" --batch-size 1 --concurrency 256
# (b) fixed offered rates; RATE_CONC slots so the rate is never bounded by the client.
for rate in $RATES; do
    step "commit_rate$rate" "$STEP_TIMEOUT" 1 commit --zone b.test. --batches $((rate * RATE_SECS)) --batch-size 1 \
        --concurrency "$RATE_CONC" --rate "$rate"
done
# (c) 1,000-record batches.
step commit_1000rec_c1 "$STEP_TIMEOUT" 1 commit --zone c.test. --batches "$BIG_C1_BATCHES" --batch-size 1000 --concurrency 1
step commit_1000rec_c8 "$STEP_TIMEOUT" 1 commit --zone c.test. --batches "$BIG_C8_BATCHES" --batch-size 1000 --concurrency 8
# (d) the big zone, last (it makes every later Raft snapshot large). Never repeated: a second
# fill would upsert over the first.
step fill "$FILL_TIMEOUT" 0 fill --zone big.test. --sets "$FILL_SETS" --batch-size "$FILL_BATCH"
"$MERIDIAN" --api "$API1" zone get big.test. --output json >"$R/fill.zone" 2>&1 || true
python3 "$HELPER" rss "${NODE_PIDS[@]}" >"$R/fill.rss"
python3 - "$R/steps.jsonl" "$R/fill.zone" "$R/fill.rss" "$R/pids.env" <<'EOF'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
try:
    zone = json.load(open(sys.argv[2]))
except Exception:
    zone = open(sys.argv[2]).read().strip()
rss = json.load(open(sys.argv[3]))
names = dict(l.strip().split("=", 1) for l in open(sys.argv[4]) if "=" in l)
steps[-1]["zone_after"] = zone
steps[-1]["rss_kib"] = {names.get(p, p): v for p, v in rss.items()}
open(sys.argv[1], "w").write("".join(json.dumps(s) + "\n" for s in steps))
EOF
say "fill: $(cat "$R/fill.out" 2>/dev/null) zone: $(tr -d '\n ' <"$R/fill.zone" | cut -c1-200)"
nodes_alive || die "a control node died"
# (e) 1-record batches again, now that the state holds the big zone: AFTER_BATCHES >= 10,000 log
# entries always cross one Raft snapshot (SNAPSHOT_EVERY_LOGS), which serializes the whole state.
# In quick mode (2,000) they may not.
step commit_1rec_c64_after_fill "$STEP_TIMEOUT" 1 commit --zone a.test. --batches "$AFTER_BATCHES" --batch-size 1 --concurrency 64
step commit_rate1000_after_fill "$STEP_TIMEOUT" 1 commit --zone b.test. --batches "$AFTER_BATCHES" --batch-size 1 \
    --concurrency "$RATE_CONC" --rate 1000
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
    echo "command=$([[ $QUICK == 1 ]] && echo 'BENCH_QUICK=1 ')bench/control.sh"
    echo "control_metrics=$CONTROL_METRICS"
    echo "ports=$((PORT_BASE + 1))-$((PORT_BASE + 3))"
    echo "data_dir_fs=$(stat -f -c %T "$WORK") on $(df --output=source "$WORK" | tail -1)"
    echo "fill_sets=$FILL_SETS"
    echo "fill_sets_fmt=$(printf "%'d" "$FILL_SETS")"
    echo "fill_batch_size=$FILL_BATCH"
    echo "fill_batch_size_fmt=$(printf "%'d" "$FILL_BATCH")"
    echo "fill_batches=$((FILL_SETS / FILL_BATCH))"
    echo "loadavg_before=$(cut -d' ' -f1-3 "$R/loadavg_before")"
    echo "loadavg_after=$(cut -d' ' -f1-3 "$R/loadavg_after")"
    echo "total_s=$(python3 -c "import time; print(round(time.time() - $T0, 1))")"
} >"$R/meta.env"
# Node logs' warnings, for the record (replication timeouts and backoffs show up here).
grep -hE ' (WARN|ERROR) ' "$WORK"/node*.log | cut -c1-300 | tail -50 >"$R/log_warnings.txt" || true
mkdir -p "$OUT_DIR"
python3 "$HELPER" assemble control "$R" "$OUT_DIR/$OUT_NAME.json"
python3 "$HELPER" report control "$OUT_DIR/$OUT_NAME.json" "$OUT_DIR/$OUT_NAME.md"
say "results: $OUT_DIR/$OUT_NAME.md and $OUT_DIR/$OUT_NAME.json"
cat "$OUT_DIR/$OUT_NAME.md"
