#!/usr/bin/env bash
# Data-parallel training with MindSpore's msrun: one process per Ascend device on this host.
#
#   bash scripts/run_distribute_train_ascend.sh NUM_DEVICES CONFIG DATA_DIR [train.py options...]
#
#   bash scripts/run_distribute_train_ascend.sh 8 configs/res2net/res2net_50_ascend.yaml /data/imagenet
#   # two hosts x 8 devices: run on each host, NODE_RANK 0 on the host given as MASTER_ADDR
#   WORKER_NUM=16 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash scripts/run_distribute_train_ascend.sh 8 CONFIG DATA_DIR
#   WORKER_NUM=16 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash scripts/run_distribute_train_ascend.sh 8 CONFIG DATA_DIR
#
# Environment:
#   WORKER_NUM   processes in the whole job (default NUM_DEVICES: a single host)
#   NODE_RANK    this host's index (default 0 for one host, else required)
#   MASTER_ADDR  address of the host that runs the scheduler (default 127.0.0.1)
#   MASTER_PORT  scheduler port (default 8118)
#   LOG_DIR      msrun's logs: scheduler.log, worker_N.log (default ./msrun_log)
#   PYTHON       interpreter (default: .venv/bin/python of this checkout, else python3)
# Works for CPU too (pass --device_target CPU); cluster time-outs are bounded unless already set.
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
  exit 2
}
die() { echo "error: $*" >&2; echo >&2; usage; }

[ $# -ge 3 ] || usage
case "$1" in -h|--help) usage ;; esac
NDEV=$1; CONFIG=$2; DATA_DIR=$3; shift 3
[[ "$NDEV" =~ ^[1-9][0-9]*$ ]] || die "NUM_DEVICES must be a positive integer: $NDEV"
[ -f "$CONFIG" ] || die "CONFIG not found: $CONFIG"
[ -e "$DATA_DIR" ] || die "DATA_DIR not found: $DATA_DIR"
WORKER_NUM=${WORKER_NUM:-$NDEV}
[[ "$WORKER_NUM" =~ ^[1-9][0-9]*$ ]] && [ "$WORKER_NUM" -ge "$NDEV" ] || die "WORKER_NUM must be >= NUM_DEVICES: $WORKER_NUM"
if [ "$WORKER_NUM" -gt "$NDEV" ] && [ -z "${NODE_RANK:-}" ]; then
  die "WORKER_NUM=$WORKER_NUM spans several hosts: set NODE_RANK (0 on the MASTER_ADDR host) and MASTER_ADDR"
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="$(command -v python3 || command -v python)"; fi
fi
# msrun starts "python" from PATH: put the chosen interpreter's directory first
export PATH="$(dirname "$PYTHON"):$PATH"
MSRUN=$(command -v msrun || true)
[ -n "$MSRUN" ] || die "msrun not found next to $PYTHON: install mindspore==2.8.0 in that environment"

# bounded cluster time-outs (seconds) unless the user set them
export MS_NODE_TIMEOUT=${MS_NODE_TIMEOUT:-45}
export MS_RECEIVE_MSG_TIMEOUT=${MS_RECEIVE_MSG_TIMEOUT:-60}
export HCCL_CONNECT_TIMEOUT=${HCCL_CONNECT_TIMEOUT:-120}
export HCCL_EXEC_TIMEOUT=${HCCL_EXEC_TIMEOUT:-600}

args=(--worker_num="$WORKER_NUM" --local_worker_num="$NDEV" --master_addr="${MASTER_ADDR:-127.0.0.1}"
      --master_port="${MASTER_PORT:-8118}" --log_dir="${LOG_DIR:-./msrun_log}" --join=True
      --cluster_time_out="${MS_TOPO_TIMEOUT:-90}")
[ -n "${NODE_RANK:-}" ] && args+=(--node_rank="$NODE_RANK")

echo "msrun ${args[*]} $ROOT/train.py --config $CONFIG --data_dir $DATA_DIR $*" >&2
exec "$MSRUN" "${args[@]}" "$ROOT/train.py" --config "$CONFIG" --data_dir "$DATA_DIR" "$@"
