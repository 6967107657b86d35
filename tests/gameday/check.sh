#!/usr/bin/env bash
# Lab-side checks for game-day hooks (run from a client namespace; needs the lab's env file in
# the environment: LAB_PREFIX, BIRD_SOCKET_RTR, ...).
#   check.sh announced POP...       the router holds an anycast route (v4 and v6) from each POP
#   check.sh answers POP ADDRESS    POP's edge (its unicast address) answers www with ADDRESS
#                                   (within 3 s)
set -euo pipefail
declare -A UNICAST=([pop1]=10.1.1.2 [pop2]=10.1.2.2)
cmd=${1:?usage: check.sh announced POP... | answers POP ADDRESS}; shift
case "$cmd" in
  announced)
    routes=$(ip netns exec "${LAB_PREFIX}rtr" birdc -s "$BIRD_SOCKET_RTR" show route all 2>&1)
    for pop in "$@"; do
      for proto in "${pop}_v4" "${pop}_v6"; do
        if ! grep -q "\[$proto " <<<"$routes"; then
          echo "router has no anycast route from $proto"; echo "$routes"; exit 1
        fi
      done
    done
    echo "router holds anycast routes from: $*" ;;
  answers)
    # Edges apply a change independently: the probed POP moving first says nothing of the other
    # one's lag, so allow it up to 3 s (the catalog stream delivers in milliseconds).
    pop=$1 want=$2
    for _ in $(seq 30); do
      got=$(dig +time=1 +tries=1 +short @"${UNICAST[$pop]}" "www.${ZONE:-gameday.test.}" A || true)
      [ "$got" = "$want" ] && { echo "$pop answers $want"; exit 0; }
      sleep 0.1
    done
    echo "$pop answers ${got:-nothing}, not $want"; exit 1 ;;
  *) echo "unknown check $cmd"; exit 2 ;;
esac
