#!/usr/bin/env bash
# Train in a single process (one device, or the CPU).
#
#   bash scripts/run_standalone_train.sh CONFIG DATA_DIR [train.py options...]
#
#   bash scripts/run_standalone_train.sh configs/res2net/res2net_fashion_mnist_cpu.yaml data/fashion_mnist
#   bash scripts/run_standalone_train.sh configs/res2net/res2net_50_gpu.yaml /data/imagenet --device_target GPU
#
# Environment: PYTHON (default: .venv/bin/python of this checkout, else python3),
# DEVICE_ID / CUDA_VISIBLE_DEVICES to pick the device.
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
  exit 2
}
die() { echo "error: $*" >&2; echo >&2; usage; }

[ $# -ge 2 ] || usage
case "$1" in -h|--help) usage ;; esac
CONFIG=$1; DATA_DIR=$2; shift 2
[ -f "$CONFIG" ] || die "CONFIG not found: $CONFIG"
[ -e "$DATA_DIR" ] || die "DATA_DIR not found: $DATA_DIR"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="$(command -v python3 || command -v python)"; fi
fi
exec "$PYTHON" "$ROOT/train.py" --config "$CONFIG" --data_dir "$DATA_DIR" --distribute False "$@"
