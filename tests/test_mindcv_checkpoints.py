"""MindCV's own Res2Net models: their checkpoints load unchanged and give MindCV's outputs.

Needs MindCV (``pip install --no-deps mindcv==0.3.0``; scripts/setup.sh installs it) and skips
without it. MindCV's network (random weights, random BatchNorm statistics) is saved with
MindSpore's own writer, together with what a MindCV training checkpoint also holds (Momentum
moments, ``ema.`` copies, the LR array, ``global_step``); our ``create_model(checkpoint_path=...)``
and ``validate.py --ckpt_path`` must then reproduce MindCV's logits and loss.
"""
import json
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

mindcv_models = pytest.importorskip("mindcv.models", reason="MindCV is not installed (pip install --no-deps mindcv)")

from mindcv_res2net import create_model  # noqa: E402
from mindcv_res2net.weights.model_loading import load_model_weights  # noqa: E402

from helpers import rel_diff  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def _mindcv_net(name, seed):
    ms.set_seed(seed)
    net = mindcv_models.create_model(name, num_classes=1000, pretrained=False)
    rng = np.random.RandomState(seed)
    for p in net.get_parameters():  # BN statistics and affine parameters away from their defaults
        if p.name.endswith("moving_mean") or p.name.endswith("beta"):
            p.set_data(ms.Tensor(rng.uniform(-0.2, 0.2, p.shape).astype(np.float32)))
        elif p.name.endswith("moving_variance") or p.name.endswith("gamma"):
            p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
    net.set_train(False)
    return net


def _save_training_checkpoint(net, path):
    """What MindCV's training writes: the weights plus optimizer and EMA state."""
    entries = []
    for p in net.get_parameters():
        value = p.asnumpy()
        entries.append({"name": p.name, "data": ms.Tensor(value)})
        if p.requires_grad:
            entries.append({"name": "moments." + p.name, "data": ms.Tensor(value * np.float32(-0.5))})
        entries.append({"name": "ema." + p.name, "data": ms.Tensor(value * np.float32(0.9))})
    entries.append({"name": "learning_rate", "data": ms.Tensor(np.linspace(0.1, 0.0, 50).astype(np.float32))})
    entries.append({"name": "global_step", "data": ms.Tensor(np.array([321], np.int32))})
    ms.save_checkpoint(entries, path)


@pytest.mark.parametrize("name", ["res2net50", "res2net101", "res2net50_v1b", "res2net101_v1b"])
def test_mindcv_checkpoint_gives_mindcv_outputs(name, tmp_path):
    ref_net = _mindcv_net(name, seed=7)
    x = np.random.RandomState(0).randn(2, 3, SIZE, SIZE).astype(np.float32)
    ref = ref_net(ms.Tensor(x)).asnumpy()
    path = str(tmp_path / f"{name}-mindcv.ckpt")
    _save_training_checkpoint(ref_net, path)

    ours = create_model(name, checkpoint_path=path)
    ours.set_train(False)
    assert rel_diff(ref, ours(ms.Tensor(x)).asnumpy()) < 1e-5

    # the EMA copies on request (MindCV's validate.py has no such option)
    ema = create_model(name)
    report = load_model_weights(ema, path, use_ema=True)
    assert report.used_ema
    ema.set_train(False)
    assert rel_diff(ref, ema(ms.Tensor(x)).asnumpy()) > 1e-3  # other weights: the EMA copies were used


def test_validate_py_on_a_mindcv_checkpoint_equals_mindcv(tmp_path):
    """validate.py --ckpt_path on MindCV's file: the loss and top-1 MindCV's own network gives."""
    ref_net = _mindcv_net("res2net50", seed=11)
    path = str(tmp_path / "res2net50-mindcv.ckpt")
    _save_training_checkpoint(ref_net, path)

    # 6 RGB images of SIZE px in two class folders (labels 0 and 1 of 1000): resize and crop are
    # identities at crop_pct 1.0, so the input is exactly (pixel - mean) / std
    rng = np.random.RandomState(5)
    images, labels = [], []
    for label, cls in enumerate(("n01440764", "n01443537")):
        folder = tmp_path / "data" / "val" / cls
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = rng.randint(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
            images.append(pixels)
            labels.append(label)
    x = ((np.stack(images).astype(np.float32) - MEAN) / STD).transpose(0, 3, 1, 2)
    logits = ref_net(ms.Tensor(x)).asnumpy().astype(np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    ref_loss = float(-log_probs[np.arange(6), labels].mean())
    ref_top1 = float((logits.argmax(1) == np.array(labels)).mean())

    out = tmp_path / "val.json"
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "validate.py"), "--model", "res2net50", "--num_classes", "1000",
         "--data_dir", str(tmp_path / "data"), "--image_resize", str(SIZE), "--crop_pct", "1.0",
         "--interpolation", "bilinear", "--batch_size", "4", "--num_parallel_workers", "1", "--mode", "1",
         "--device_target", "CPU", "--ckpt_path", path, "--json", str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["num_samples"] == 6
    assert result["top1"] == ref_top1
    assert abs(result["loss"] - ref_loss) < 1e-4 * max(1.0, ref_loss), (result, ref_loss)
