#!/usr/bin/env bash
# Data-parallel training on Ascend with an HCCL rank table: one process per device, no scheduler.
#
#   bash scripts/run_distribute_train_ascend_rank_table.sh RANK_TABLE_FILE NUM_DEVICES CONFIG DATA_DIR [train.py options...]
#
#   bash scripts/run_distribute_train_ascend_rank_table.sh hccl_8p.json 8 configs/res2net/res2net_50_ascend.yaml /data/imagenet
#
# Environment:
#   RANK_SIZE    processes in the whole job (default NUM_DEVICES: a single server)
#   RANK_START   first rank on this server (default 0; 8 on the second server of a 16-device table)
#   DEVICE_START first device id used on this server (default 0)
#   LOG_DIR      one log per rank: LOG_DIR/rank_N.log (default ./rank_table_log)
#   PYTHON       interpreter (default: .venv/bin/python of this checkout, else python3)
# If one process fails, the others on this server are stopped and the script exits with its status.
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
  exit 2
}
die() { echo "error: $*" >&2; echo >&2; usage; }

[ $# -ge 4 ] || usage
case "$1" in -h|--help) usage ;; esac
TABLE=$1; NDEV=$2; CONFIG=$3; DATA_DIR=$4; shift 4
[ -f "$TABLE" ] || die "RANK_TABLE_FILE not found: $TABLE"
[[ "$NDEV" =~ ^[1-9][0-9]*$ ]] || die "NUM_DEVICES must be a positive integer: $NDEV"
[ -f "$CONFIG" ] || die "CONFIG not found: $CONFIG"
[ -e "$DATA_DIR" ] || die "DATA_DIR not found: $DATA_DIR"
RANK_SIZE=${RANK_SIZE:-$NDEV}; RANK_START=${RANK_START:-0}; DEVICE_START=${DEVICE_START:-0}
for v in RANK_SIZE RANK_START DEVICE_START; do [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be an integer: ${!v}"; done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="$(command -v python3 || command -v python)"; fi
fi
LOG_DIR=${LOG_DIR:-./rank_table_log}
mkdir -p "$LOG_DIR"
export RANK_TABLE_FILE="$(cd "$(dirname "$TABLE")" && pwd)/$(basename "$TABLE")"
export RANK_SIZE
export HCCL_CONNECT_TIMEOUT=${HCCL_CONNECT_TIMEOUT:-120}
export HCCL_EXEC_TIMEOUT=${HCCL_EXEC_TIMEOUT:-600}

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true; done; }
trap 'cleanup; exit 130' INT TERM
for ((i = 0; i < NDEV; i++)); do
  rank=$((RANK_START + i))
  RANK_ID=$rank DEVICE_ID=$((DEVICE_START + i)) setsid "$PYTHON" "$ROOT/train.py" --config "$CONFIG" \
    --data_dir "$DATA_DIR" --distribute True --device_target Ascend "$@" > "$LOG_DIR/rank_$rank.log" 2>&1 &
  pids+=($!)
  echo "rank $rank (device $((DEVICE_START + i))): pid $!, log $LOG_DIR/rank_$rank.log" >&2
done
status=0
for ((n = 0; n < NDEV; n++)); do
  rc=0
  wait -n || rc=$?
  if [ "$rc" -ne 0 ]; then
    status=$rc
    echo "error: a rank exited with status $status; stopping the others (see $LOG_DIR/rank_*.log)" >&2
    cleanup
    wait || true
    break
  fi
done
exit "$status"
