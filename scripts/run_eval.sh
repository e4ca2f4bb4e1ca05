#!/usr/bin/env bash
# Evaluate a checkpoint (top-1, top-5, loss over every validation image) with validate.py.
#
#   bash scripts/run_eval.sh CONFIG DATA_DIR CKPT_PATH [validate.py options...]
#
#   bash scripts/run_eval.sh configs/res2net/res2net_50_gpu.yaml /data/imagenet res2net50.ckpt
#   bash scripts/run_eval.sh configs/res2net/res2net_50_gpu.yaml /data/imagenet res2net50.ckpt --json result.json
#   NPROC=8 bash scripts/run_eval.sh configs/res2net/res2net_50_gpu.yaml /data/imagenet res2net50.ckpt
#
# Environment:
#   NPROC    evaluate with N processes under mpirun (exact: counts are summed over ranks); default 1
#   PYTHON   interpreter (default: .venv/bin/python of this checkout, else python3)
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
  exit 2
}
die() { echo "error: $*" >&2; echo >&2; usage; }

[ $# -ge 3 ] || usage
case "$1" in -h|--help) usage ;; esac
CONFIG=$1; DATA_DIR=$2; CKPT=$3; shift 3
[ -f "$CONFIG" ] || die "CONFIG not found: $CONFIG"
[ -e "$DATA_DIR" ] || die "DATA_DIR not found: $DATA_DIR"
[ -f "$CKPT" ] || die "CKPT_PATH not found: $CKPT"
NPROC=${NPROC:-1}
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || die "NPROC must be a positive integer: $NPROC"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="$(command -v python3 || command -v python)"; fi
fi
cmd=("$PYTHON" "$ROOT/validate.py" --config "$CONFIG" --data_dir "$DATA_DIR" --ckpt_path "$CKPT")
if [ "$NPROC" -gt 1 ]; then
  MPIRUN=$(command -v mpirun || true)
  [ -n "$MPIRUN" ] || die "NPROC=$NPROC needs OpenMPI's mpirun (and mpi4py)"
  margs=(-n "$NPROC" --bind-to none --oversubscribe)
  [ "$(id -u)" -eq 0 ] && margs+=(--allow-run-as-root)
  exec "$MPIRUN" "${margs[@]}" "${cmd[@]}" "$@"
fi
exec "${cmd[@]}" --distribute False "$@"
