#!/usr/bin/env bash
# Data-parallel training with OpenMPI: one process per GPU (or per CPU process for a CPU run).
#
#   bash scripts/run_distribute_train_gpu.sh NUM_PROCESSES CONFIG DATA_DIR [train.py options...]
#
#   bash scripts/run_distribute_train_gpu.sh 8 configs/res2net/res2net_50_gpu.yaml /data/imagenet
#   bash scripts/run_distribute_train_gpu.sh 8 configs/res2net/res2net_50_gpu.yaml /data/imagenet --epoch_size 90
#   HOSTFILE=hosts bash scripts/run_distribute_train_gpu.sh 16 configs/res2net/res2net_50_gpu.yaml /data/imagenet
#
# Environment:
#   HOSTFILE     OpenMPI hostfile for several hosts, one line per host: "node1 slots=8"
#                (same paths, Python environment and data on every host; password-less ssh).
#   PYTHON       interpreter (default: .venv/bin/python of this checkout, else python3)
#   MPIRUN       mpirun to use (default: mpirun on PATH)
#   MPIRUN_ARGS  extra mpirun flags, e.g. "--mca btl_tcp_if_include eth0"
# train.py calls init_distributed(): under mpirun, rank 0 starts MindSpore's scheduler and every
# rank joins the cluster (NCCL on GPU, mccl on CPU). If a rank dies, every process exits non-zero.
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
  exit 2
}
die() { echo "error: $*" >&2; echo >&2; usage; }

[ $# -ge 3 ] || usage
case "$1" in -h|--help) usage ;; esac
NPROC=$1; CONFIG=$2; DATA_DIR=$3; shift 3
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || die "NUM_PROCESSES must be a positive integer: $NPROC"
[ -f "$CONFIG" ] || die "CONFIG not found: $CONFIG"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="$(command -v python3 || command -v python)"; fi
fi
MPIRUN=${MPIRUN:-$(command -v mpirun || true)}
[ -n "$MPIRUN" ] || die "mpirun not found: install OpenMPI (apt-get install openmpi-bin libopenmpi-dev) and mpi4py"
"$PYTHON" -c "import mpi4py" 2>/dev/null || die "mpi4py is not installed for $PYTHON: $PYTHON -m pip install mpi4py"

# --bind-to none: MindSpore's thread pools need more than the one core OpenMPI would bind a rank to.
# OOB keep-alive: mpirun notices a vanished host in ~40 s instead of OpenMPI's default 480 s.
args=(-n "$NPROC" --bind-to none --mca oob_tcp_keepalive_time 10 --mca oob_tcp_keepalive_intvl 5
      --mca oob_tcp_keepalive_probes 6)
[ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
if [ -n "${HOSTFILE:-}" ]; then
  [ -f "$HOSTFILE" ] || die "HOSTFILE not found: $HOSTFILE"
  args+=(--hostfile "$HOSTFILE")
  [ -e "$DATA_DIR" ] || echo "warning: DATA_DIR $DATA_DIR does not exist on this host" >&2
else
  [ -e "$DATA_DIR" ] || die "DATA_DIR not found: $DATA_DIR"
  args+=(--oversubscribe)
fi
# forward the environment the ranks need on other hosts too
for var in PATH LD_LIBRARY_PATH PYTHONPATH; do [ -n "${!var:-}" ] && args+=(-x "$var"); done
for var in $(compgen -e | grep -E '^(MS_|GLOG_|MINDCV_RES2NET_|NCCL_|CUDA_VISIBLE_DEVICES|OMP_NUM_THREADS)' || true); do
  args+=(-x "$var")
done
# shellcheck disable=SC2206
extra=(${MPIRUN_ARGS:-})

echo "mpirun ${args[*]} ${extra[*]} $PYTHON $ROOT/train.py --config $CONFIG --data_dir $DATA_DIR $*" >&2
exec "$MPIRUN" "${args[@]}" "${extra[@]}" "$PYTHON" "$ROOT/train.py" --config "$CONFIG" --data_dir "$DATA_DIR" "$@"
