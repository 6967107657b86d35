#!/bin/sh
# The anycast lab: network namespaces, BIRD 2, a 3-node control plane and two POPs (see lab.py).
#   tests/lab/lab.sh up [--config-root DIR] | down | status | edge-kill POP | ... (lab.sh -h)
# Env: LAB_PREFIX (default mrd-), LAB_DIR (default /tmp/meridian-lab), MERIDIAN (the binary).
exec python3 "$(dirname "$0")/lab.py" "$@"
