#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what the tests need, builds, runs
# unit/golden/property/no-alloc tests, the end-to-end tests and the differential test vs Knot.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pkg in knot nsd dnsperf bind9-dnsutils knot-dnsutils bird2 protobuf-compiler libclang-dev nftables \
    iproute2 prometheus; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
python3 -c 'import dns' 2>/dev/null || python3 -m pip install -q 'dnspython==2.9.*'
# Ansible renders the lab's hosts (tests/lab/ansible_render.sh, tests/deploy/check.sh).
command -v ansible-playbook >/dev/null || python3 -m pip install -q 'ansible-core==2.16.*'

# One cargo invocation style everywhere (--release --workspace --all-targets): feature sets
# stay identical, so RocksDB's C++ (11 minutes on 2 cores) is compiled once.
CARGO_FLAGS=(--release --workspace --all-targets)

echo "== build"
cargo build "${CARGO_FLAGS[@]}"

echo "== cargo fmt / clippy"
cargo fmt --all -- --check
cargo clippy "${CARGO_FLAGS[@]}" -q -- -D warnings

echo "== cargo test"
cargo test "${CARGO_FLAGS[@]}" -q

if [ -f tests/e2e/e2e.py ]; then
  echo "== end-to-end (real binary, dig/kdig, UDP/TCP, IPv4/IPv6, SIGHUP/SIGTERM)"
  python3 tests/e2e/e2e.py --meridian target/release/meridian
fi
if [ -f tests/cluster/cluster_e2e.py ]; then
  echo "== control plane + edges, multi-process on loopback (3 control nodes, 3 edges)"
  python3 tests/cluster/cluster_e2e.py --meridian target/release/meridian
fi
if [ -f tests/policy/policy_e2e.py ]; then
  echo "== routing policies end to end (meridian dev, dig +subnet, test and CC0 geo databases)"
  python3 tests/policy/policy_e2e.py --meridian target/release/meridian
fi
if [ -f tests/health/health_e2e.py ]; then
  echo "== health checks end to end (HTTP/HTTPS/TCP endpoints on loopback, 3 POPs, quorum, leader kill)"
  python3 tests/health/health_e2e.py --meridian target/release/meridian
fi
if [ -f tests/diff/knot_diff.py ]; then
  echo "== differential test against Knot DNS on tests/zones"
  python3 tests/diff/knot_diff.py --meridian target/release/meridian
fi
echo "== deploy/ and ansible/: promtool rule tests, systemd units, BIRD configs, Ansible render + idempotence"
tests/deploy/check.sh
echo "== anycast lab smoke (netns, BIRD router, 2 POPs, 3 control nodes): edge SIGKILL -> route withdrawn"
MERIDIAN=target/release/meridian python3 tests/lab/lab_smoke.py
echo "== game days on the lab built from the Ansible-rendered configs (every tests/gameday scenario)"
tests/gameday/run_all.sh "$(mktemp -d /tmp/meridian-gameday-XXXX)"
echo "== all tests passed"
