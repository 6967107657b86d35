#!/usr/bin/env bash
# Every shipped game day, on the lab built from what Ansible renders (so CI runs the playbooks
# and the lab runs on their output). Reports go to OUT/<scenario>/, a summary to OUT/gameday.md.
#   tests/gameday/run_all.sh [OUT] [SCENARIO...]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-$(mktemp -d /tmp/meridian-gameday-XXXX)}
shift || true
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(drain-pop edge-stop edge-kill dns-blocked endpoint-failure control-plane-down leader-kill partition)
MERIDIAN=$(realpath "${MERIDIAN:-target/release/meridian}")
export MERIDIAN
export LAB_PREFIX=${LAB_PREFIX:-mrd-}
export LAB_DIR=${LAB_DIR:-/tmp/meridian-lab}
mkdir -p "$OUT"
ROOT=$(mktemp -d /tmp/meridian-ansible-XXXX)
trap 'tests/lab/lab.sh down >/dev/null 2>&1 || true; rm -rf "$ROOT"' EXIT
# Ansible runs against the lab's namespaces (a local connection inside `ip netns exec`), so the
# lab's own build comes up first; then the lab is rebuilt on what Ansible rendered.
echo "== lab up (its own configs), for Ansible to run in its namespaces"
tests/lab/lab.sh up >"$OUT/lab-bootstrap.log" 2>&1 || { tail -40 "$OUT/lab-bootstrap.log"; exit 1; }
echo "== ansible: rendering the lab's hosts into $ROOT (inside their namespaces)"
tests/lab/ansible_render.sh "$ROOT" >"$OUT/ansible.log" 2>&1 || { tail -40 "$OUT/ansible.log"; exit 1; }
tests/lab/lab.sh down >/dev/null
echo "== lab up on the rendered configs"
tests/lab/lab.sh up --config-root "$ROOT"
set -a; . "$LAB_DIR/env"; set +a
failed=()
for s in "${SCENARIOS[@]}"; do
  echo "== game day $s"
  if ! ip netns exec "${LAB_PREFIX}c1" "$MERIDIAN" --api "$API" gameday run "tests/gameday/$s.yaml" \
      --report "$OUT/$s" >"$OUT/$s.log" 2>&1; then
    failed+=("$s")
    tail -30 "$OUT/$s.log"
  fi
  grep -E "^game day .*(passed|FAILED)" "$OUT/$s.log" | tail -1 || true
done
python3 tests/gameday/summarize.py "$OUT" "${SCENARIOS[@]}" >"$OUT/gameday.md"
cat "$OUT/gameday.md"
if [ ${#failed[@]} -gt 0 ]; then
  echo "game days failed: ${failed[*]}"
  exit 1
fi
echo "all ${#SCENARIOS[@]} game days passed; reports in $OUT"
