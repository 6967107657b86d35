#!/usr/bin/env bash
# Render the lab's hosts with the Ansible playbooks: tests/lab/ansible_render.sh ROOT
#
# For every host of ansible/inventory/lab.yml, runs ansible/site.yml with a local connection,
# --limit HOST, meridian_root=ROOT/HOST and services off, inside the host's network namespace
# (mrd-HOST; mrd-ctl for ctl1..ctl3; the prefix is $LAB_PREFIX as for lab.sh) when it exists,
# and directly otherwise. `tests/lab/lab.sh up --config-root ROOT` then runs BIRD and meridian
# from ROOT/HOST/etc/... Installs ansible-core with pip if it is missing.
# Extra arguments after ROOT go to every ansible-playbook run (e.g. --check --diff).
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 ROOT [ansible-playbook args...]" >&2
    exit 2
fi
root=$(realpath -m "$1")
shift
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
inventory="$repo/ansible/inventory/lab.yml"
export ANSIBLE_CONFIG="$repo/ansible/ansible.cfg"
export ANSIBLE_NOCOLOR=1

if ! command -v ansible-playbook >/dev/null 2>&1; then
    echo "ansible_render: installing ansible-core (pip)" >&2
    python3 -m pip install -q 'ansible-core==2.16.*' >&2
    hash -r
fi

hosts=$(ansible-inventory -i "$inventory" --list \
    | python3 -c 'import json, sys; print(" ".join(sorted(json.load(sys.stdin)["_meta"]["hostvars"])))')
namespaces=$( (ip netns list 2>/dev/null || true) | awk '{print $1}')

mkdir -p "$root"
for host in $hosts; do
    case "$host" in
        ctl*) ns="${LAB_PREFIX:-mrd-}ctl" ;;
        *) ns="${LAB_PREFIX:-mrd-}$host" ;;
    esac
    run=(ansible-playbook -i "$inventory" "$repo/ansible/site.yml" -c local --limit "$host"
         -e "meridian_root=$root/$host" -e meridian_manage_services=false "$@")
    if printf '%s\n' $namespaces | grep -qx -- "$ns"; then
        echo "ansible_render: $host (in netns $ns)" >&2
        ip netns exec "$ns" "${run[@]}"
    else
        echo "ansible_render: $host" >&2
        "${run[@]}"
    fi
done
