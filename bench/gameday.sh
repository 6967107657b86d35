#!/usr/bin/env bash
# Game-day figures: drain → traffic shift, edge kill → shift, endpoint failure → every POP on
# the secondary, lost queries per event. Runs every scenario in tests/gameday on the netns lab
# and writes bench/results/gameday.md plus each scenario's report (Markdown, JSON, SVG).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/results/gameday
rm -rf "$OUT"
tests/gameday/run_all.sh "$OUT" "$@"
cp "$OUT/gameday.md" bench/results/gameday.md
rm -f "$OUT"/*.log
echo "wrote bench/results/gameday.md and $OUT/<scenario>/"
