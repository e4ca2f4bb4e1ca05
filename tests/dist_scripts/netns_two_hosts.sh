#!/usr/bin/env bash
# Two "hosts" on one machine: two network namespaces joined by a veth pair (10.213.47.1 and
# .2, addresses that exist only inside these namespaces), mpirun in the first, the second rank
# started in the other namespace through netns_rsh.sh. Needs root (ip netns).
#   netns_two_hosts.sh OUT_DIR [MODE [dist_check.py args after OUT_DIR...]]
# Runs:  mpirun -n 2 --hostfile (10.213.47.1, 10.213.47.2) python dist_check.py MODE OUT_DIR ...
# CUT_LINK=1: once OUT_DIR/alive_rank1 appears (dist_check.py die), the link between the two
# namespaces goes down (a host that vanishes without closing its connections); the time
# of the cut is written to OUT_DIR/killed_at.
# Everything it creates is removed on exit.
set -euo pipefail
OUT=$1; shift
MODE=${1:-basic}; [ $# -gt 0 ] && shift
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=${PYTHON:-python3}
tag="mcr2$$"
NSA="${tag}a"; NSB="${tag}b"; VA="${tag}va"; VB="${tag}vb"
A=10.213.47.1; B=10.213.47.2
cutter=""
cleanup() {
  [ -n "$cutter" ] && kill "$cutter" 2>/dev/null || true
  ip netns pids "$NSA" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns pids "$NSB" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$NSA" 2>/dev/null || true
  ip netns del "$NSB" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 143' TERM INT
ip netns add "$NSA"; ip netns add "$NSB"
ip link add "$VA" type veth peer name "$VB"
ip link set "$VA" netns "$NSA"; ip link set "$VB" netns "$NSB"
ip -n "$NSA" addr add "$A/24" dev "$VA"; ip -n "$NSB" addr add "$B/24" dev "$VB"
for ns in "$NSA" "$NSB"; do ip -n "$ns" link set lo up; done
ip -n "$NSA" link set "$VA" up; ip -n "$NSB" link set "$VB" up
mkdir -p "$OUT"
printf '%s slots=1\n%s slots=1\n' "$A" "$B" > "$OUT/hostfile"
export NETNS_MAP="$A=$NSA $B=$NSB"
if [ "${CUT_LINK:-0}" = "1" ]; then
  (
    for _ in $(seq 1 1200); do [ -e "$OUT/alive_rank1" ] && break; sleep 0.2; done
    sleep 1
    ip -n "$NSB" link set "$VB" down
    python3 -c 'import time; print(repr(time.time()))' > "$OUT/killed_at.tmp"
    mv "$OUT/killed_at.tmp" "$OUT/killed_at"
    echo "netns_two_hosts.sh: link to $B cut" >&2
  ) &
  cutter=$!
fi
root=""
[ "$(id -u)" -eq 0 ] && root="--allow-run-as-root"
# in the background + wait, so that a TERM runs the clean-up at once (mpirun may hang when a
# host is unreachable)
# shellcheck disable=SC2086
ip netns exec "$NSA" unshare --uts sh -c "hostname $NSA; exec mpirun $root -n 2 --hostfile '$OUT/hostfile' \
  --mca plm_rsh_agent '$HERE/netns_rsh.sh' --mca btl self,tcp --mca oob_tcp_if_include $A/24 \
  --mca btl_tcp_if_include $A/24 --bind-to none \
  --mca oob_tcp_keepalive_time 10 --mca oob_tcp_keepalive_intvl 5 --mca oob_tcp_keepalive_probes 6 \
  -x PATH -x PYTHONPATH -x GLOG_v -x MINDCV_RES2NET_DIST_LOG_DIR -x NETNS_MAP \
  '$PY' '$HERE/dist_check.py' $MODE '$OUT' $*" &
launcher=$!
status=0
wait "$launcher" || status=$?
exit "$status"
