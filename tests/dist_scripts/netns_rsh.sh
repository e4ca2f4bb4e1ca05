#!/usr/bin/env bash
# OpenMPI launch agent (plm_rsh_agent) for the two-"host" test: instead of ssh, run the
# command inside the network namespace that owns the host address.
#   netns_rsh.sh [ssh-style options] HOST COMMAND...
# The address -> namespace map comes from NETNS_MAP="10.x.y.1=nsA 10.x.y.2=nsB"; each
# namespace also gets its own hostname (UTS namespace) so the ranks look like two machines.
set -euo pipefail
while [ $# -gt 0 ] && [[ "$1" == -* ]]; do shift; done
host=$1; shift
ns=""
for pair in ${NETNS_MAP:-}; do
  [ "${pair%%=*}" = "$host" ] && ns=${pair#*=}
done
[ -n "$ns" ] || { echo "netns_rsh.sh: no namespace for host $host (NETNS_MAP=$NETNS_MAP)" >&2; exit 255; }
exec ip netns exec "$ns" unshare --uts sh -c "hostname $ns; $*"
