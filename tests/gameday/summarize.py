#!/usr/bin/env python3
"""Summarizes game-day reports (OUT/<scenario>/report.json) as one Markdown table of figures."""
import json
import os
import sys


def main():
    out, names = sys.argv[1], sys.argv[2:]
    rows, figures = [], []
    for name in names:
        path = os.path.join(out, name, "report.json")
        if not os.path.exists(path):
            rows.append("| %s | no report | | | | | |" % name)
            continue
        r = json.load(open(path))
        t = r["total"]
        by_edge = ", ".join("%s %d" % kv for kv in sorted(t["by_edge"].items()))
        rows.append("| [%s](%s/report.md) | %s | %d | %d | %d | %.4f%% (burn %.2f×) | %s |" % (
            name, name, "passed" if r["passed"] else "**FAILED**", t["sent"], t["lost"], t["wrong"],
            r["availability"] * 100, r["slo_burn"], by_edge))
        for m in r["measures"]:
            s = m["seconds"]
            limit = m["measure"].get("max_s")
            figures.append("| %s | %s | %s | %s |" % (
                name, m["measure"]["name"], "not reached" if s is None else "%.3f s" % s,
                "–" if limit is None else "≤ %s s %s" % (limit, "✓" if m["ok"] else "✗")))
    print("# Game days on the lab\n")
    print("Reproduce: `bench/gameday.sh` (runs `tests/gameday/run_all.sh bench/results/gameday`): the")
    print("netns lab (BIRD router, 2 POPs, 3 control nodes) built from the Ansible-rendered configs;")
    print("4 probers (2 client namespaces × IPv4/IPv6 anycast) at 100 queries/s each, 1 s timeout.\n")
    print("| scenario | result | queries | lost | wrong | availability | answered by |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n## Figures\n\n| scenario | figure | measured | limit |\n|---|---|---|---|")
    print("\n".join(figures))


if __name__ == "__main__":
    main()
