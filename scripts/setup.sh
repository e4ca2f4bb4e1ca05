#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for mindcv_res2net: system packages, a virtual
# environment in .venv, and the Python packages. Safe to run again (it skips what is done).
#   bash scripts/setup.sh            # runtime + test dependencies
#   RUNTIME_ONLY=1 bash scripts/setup.sh  # runtime only (what the demo needs)
#   SKIP_APT=1 bash scripts/setup.sh # without apt (packages already there, or not root)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ "${SKIP_APT:-0}" != "1" ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  # OpenMPI for mpirun launches (mpi4py builds against it); Debian's full Fashion-MNIST for the demo.
  pkgs="openmpi-bin libopenmpi-dev dataset-fashion-mnist"
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "== apt-get install$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if [ "${RUNTIME_ONLY:-0}" = "1" ]; then
  # what train/validate/predict need (the demo): no test tools, no PyTorch, no MindCV
  echo "== pip install (mindspore==2.8.0; a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q -e ".[plot]"
else
  echo "== pip install (mindspore==2.8.0 and the test tools; a few minutes the first time)"
  "$VENV/bin/python" -m pip install -q -e ".[test]"
  # PyTorch is only the reference the conversion tests compare against (CPU build).
  "$VENV/bin/python" -m pip install -q "torch==2.13.0" || echo "warning: torch not installed; the PyTorch comparison tests will be skipped"
  # MindCV, only as the reference that the MindCV-checkpoint and benchmark comparisons use. Its
  # pinned dependencies would replace our MindSpore, so it is installed without them.
  "$VENV/bin/python" -m pip install -q --no-deps "mindcv==0.3.0" || echo "warning: mindcv not installed; the MindCV comparison tests will be skipped"
fi
"$VENV/bin/python" -c "import mindspore, sys; print('mindspore', mindspore.__version__, 'python', sys.version.split()[0])"
