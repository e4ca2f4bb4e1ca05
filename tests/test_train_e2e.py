"""train.py and validate.py end to end on real data (a Fashion-MNIST subset), and exact resume."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "res2net", "res2net_fashion_mnist_cpu.yaml")

pytestmark = pytest.mark.slow  # each test trains in a subprocess: minutes on 2 CPU cores


def run(script, *args, timeout=900):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)
    return proc


@pytest.fixture(scope="module")
def fashion_subset(fashion_mnist_subset):
    return fashion_mnist_subset(600)


def _ckpt_arrays(path):
    from mindcv_res2net.weights.checkpoint_file import read_checkpoint
    return {k: v for k, v in read_checkpoint(path).items() if isinstance(v, np.ndarray)}


def test_train_then_validate_learns_well_above_chance(fashion_subset, tmp_path):
    save = tmp_path / "ckpt"
    proc = run("train.py", "-c", DEMO, "--data_dir", fashion_subset, "--ckpt_save_dir", save,
               "--epoch_size", 3, "--batch_size", 32, "--warmup_epochs", 1, "--decay_epochs", 2,
               "--num_parallel_workers", 1, "--log_interval", 5)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("res2net50-3_18.ckpt", "res2net50_best.ckpt", "config.yaml", "result.log", "metrics.csv",
                 "logs/rank_0.log"):
        assert (save / name).exists(), name
    with open(save / "metrics.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3  # one row per epoch
    # the loader's own speed beside the training speed: which of the two limits the run
    assert all(float(r["loader_img_per_s"]) > 0 and 0 <= float(r["data_wait_pct"]) <= 100 for r in rows)
    log = (save / "logs/rank_0.log").read_text()
    assert "data pipeline alone:" in log and "loader alone" in log

    result = tmp_path / "val.json"
    proc = run("validate.py", "--model", "res2net50", "--dataset", "fashion_mnist", "--data_dir", fashion_subset,
               "--num_classes", 10, "--image_resize", 28, "--crop_pct", 1.0, "--mean", 72.93, 72.93, 72.93,
               "--std", 90.015, 90.015, 90.015, "--batch_size", 64, "--num_parallel_workers", 1,
               "--ckpt_path", save / "res2net50_best.ckpt", "--json", result, "--device_target", "CPU")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads(result.read_text())
    assert metrics["num_samples"] == 600  # every validation image, none dropped or repeated
    assert metrics["top1"] > 0.4, metrics  # chance is 0.10
    best_row = max(float(r["val_top1"]) for r in rows if r["val_top1"])  # the recipe validates at the end
    assert abs(metrics["top1"] - best_row) < 1e-6  # validate.py reproduces the trainer's validation


def test_resume_ends_with_the_same_weights(fashion_subset, tmp_path):
    common = ["-c", DEMO, "--data_dir", fashion_subset, "--mode", 0, "--batch_size", 32, "--num_samples", 96,
              "--val_while_train", False, "--num_parallel_workers", 1, "--warmup_epochs", 0,
              "--decay_epochs", 3, "--epoch_size", 3]
    full, part = tmp_path / "full", tmp_path / "part"
    proc = run("train.py", *common, "--ckpt_save_dir", full)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The same run, SIGKILLed as soon as its epoch-2 checkpoint is written (during epoch 3).
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3", PYTHONUNBUFFERED="1")
    victim = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *map(str, common),
                               "--ckpt_save_dir", str(part)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env, cwd=ROOT)
    seen = []
    for line in victim.stdout:
        seen.append(line)
        if "res2net50-2_3.ckpt" in line:
            victim.kill()
            break
    victim.wait(timeout=60)
    assert victim.returncode == -9, "".join(seen)[-4000:]
    assert not (part / "res2net50-3_3.ckpt").exists()
    proc = run("train.py", *common, "--ckpt_save_dir", part, "--resume", "auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout + proc.stderr
    a, b = _ckpt_arrays(full / "res2net50-3_3.ckpt"), _ckpt_arrays(part / "res2net50-3_3.ckpt")
    assert set(a) == set(b)
    worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a if a[k].size)
    assert worst <= 1e-5, worst
    # and the weights did move during the resumed epoch
    second = _ckpt_arrays(part / "res2net50-2_3.ckpt")
    assert max(float(np.abs(second[k] - b[k]).max()) for k in second if second[k].dtype.kind == "f") > 0
