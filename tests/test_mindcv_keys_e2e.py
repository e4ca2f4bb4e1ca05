"""MindCV's newer keys together through train.py and validate.py (subprocesses, res2net50 at 32 px):
a MindRecord copy of the data, repeated augmentation, AugMix splits with the JSD loss, layer-wise lr
decay with NAdam on a cyclic schedule, summed loss, TensorBoard events, then validate.py at another
val_amp_level with shuffled evaluation data."""
import csv
import json
import os

import pytest

from tests.fault.test_bad_input import make_image_folder
from tests.test_train_e2e import run

pytestmark = pytest.mark.slow  # two subprocesses, ~1 min on 2 CPU cores


def test_mindcv_keys_train_and_validate_together(tmp_path):
    pytest.importorskip("tensorboardX")
    from mindcv_res2net.data.mindrecord import prepare_mindrecord

    folder = make_image_folder(tmp_path / "images", classes=("a", "b", "c"), per_class=4, size=40)
    records = tmp_path / "records"
    assert prepare_mindrecord(folder, str(records), shards=2, log=lambda *a: None) == {"train": 12, "val": 12}
    save, events = tmp_path / "ckpt", tmp_path / "tb"
    proc = run("train.py", "--data_dir", records, "--ckpt_save_dir", save, "--image_resize", 32,
               "--batch_size", 4, "--epoch_size", 2, "--num_parallel_workers", 8, "--device_target", "CPU",
               "--aug_repeats", 3, "--aug_splits", 3, "--auto_augment", "augmix-m3-w3", "--opt", "nadam",
               "--layer_decay", 0.7, "--scheduler", "cyclic", "--warmup_epochs", 0, "--lr", 0.01,
               "--reduction", "sum", "--summary_dir", events, "--val_while_train", "true", "--log_interval", 1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (save / "logs" / "rank_0.log").read_text()
    assert "MindRecord" in log or "mindrecord" in log
    with open(save / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["val_top1"] != "" for r in rows)
    assert [int(r["overflow_steps"]) for r in rows] == [0, 0]
    assert any(name.startswith("events") for name in os.listdir(events))

    result = tmp_path / "val.json"
    proc = run("validate.py", "--data_dir", records, "--ckpt_path", save / "res2net50_best.ckpt",
               "--image_resize", 32, "--batch_size", 5, "--val_amp_level", "O2", "--eval_shuffle", "true",
               "--device_target", "CPU", "--json", result)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads(result.read_text())
    assert metrics["num_samples"] == 12
