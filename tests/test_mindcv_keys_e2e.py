"""MindCV's newer keys together through train.py (a subprocess, res2net50 at 32 px, PyNative, the
recipes' 8 workers on 2 cores): a MindRecord copy of the data, repeated augmentation, AugMix splits with
the JSD loss, layer-wise lr decay with NAdam on a cyclic schedule, summed loss, TensorBoard events,
validation with shuffled evaluation data. Each key's numbers are tested in its own file."""
import csv
import os

import pytest

from tests.fault.test_bad_input import make_image_folder
from tests.test_train_e2e import run

pytestmark = pytest.mark.slow  # a training subprocess: ~40 s on 2 CPU cores


def test_mindcv_keys_train_together(tmp_path):
    pytest.importorskip("tensorboardX")
    from mindcv_res2net.data.readers.mindrecord_writer import prepare_mindrecord

    folder = make_image_folder(tmp_path / "images", classes=("a", "b", "c"), per_class=4, size=40)
    records = tmp_path / "records"
    assert prepare_mindrecord(folder, str(records), shards=2, log=lambda *a: None) == {"train": 12, "val": 12}
    save, events = tmp_path / "ckpt", tmp_path / "tb"
    proc = run("train.py", "--data_dir", records, "--ckpt_save_dir", save, "--image_resize", 32, "--mode", 1,
               "--batch_size", 4, "--epoch_size", 1, "--num_parallel_workers", 8, "--device_target", "CPU",
               "--aug_repeats", 3, "--aug_splits", 3, "--auto_augment", "augmix-m3-w3", "--opt", "nadam",
               "--layer_decay", 0.7, "--scheduler", "cyclic", "--warmup_epochs", 0, "--lr", 0.01,
               "--reduction", "sum", "--summary_dir", events, "--val_while_train", "true", "--eval_shuffle", "true",
               "--log_interval", 1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (save / "logs" / "rank_0.log").read_text()
    assert "MindRecord" in log or "mindrecord" in log
    assert "3 steps/epoch" in log                       # 12 images / batch 4: aug_repeats keeps the length
    with open(save / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["val_top1"] != "" and int(rows[0]["overflow_steps"]) == 0
    assert any(name.startswith("events") for name in os.listdir(events))
