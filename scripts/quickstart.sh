#!/usr/bin/env bash
# The demo, on a fresh machine: set up, prepare Fashion-MNIST, train Res2Net-50 on the CPU,
# validate the best checkpoint on the 10,000 test images and print its top-1.
#   bash scripts/quickstart.sh                 # everything
#   EPOCHS=1 bash scripts/quickstart.sh        # shorter
set -euo pipefail
cd "$(dirname "$0")/.."
RUNTIME_ONLY=1 bash scripts/setup.sh  # the runtime only: no PyTorch, no test tools
PY=.venv/bin/python
DATA=${DATA:-data/fashion_mnist}
CKPT=${CKPT:-ckpt/fashion_mnist}
CONFIG=configs/res2net/res2net_fashion_mnist_cpu.yaml

echo "== preparing Fashion-MNIST in $DATA (60,000 train / 10,000 test images)"
$PY -m mindcv_res2net.data.prepare fashion_mnist --out "$DATA"

echo "== training res2net50 ($CONFIG)"
start=$(date +%s)
$PY train.py -c "$CONFIG" --data_dir "$DATA" --ckpt_save_dir "$CKPT" --overwrite ${EPOCHS:+--epoch_size $EPOCHS}
echo "== training took $(( $(date +%s) - start )) s"

echo "== validating $CKPT/res2net50_best.ckpt on all test images"
$PY validate.py -c "$CONFIG" --data_dir "$DATA" --ckpt_path "$CKPT/res2net50_best.ckpt" --json "$CKPT/val.json"
$PY -c "import json; r = json.load(open('$CKPT/val.json')); print(f\"demo result: top-1 {100 * r['top1']:.2f}% on {r['num_samples']} Fashion-MNIST test images\")"
