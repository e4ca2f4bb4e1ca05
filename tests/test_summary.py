"""TensorBoard event files (``training/summary.py``): what is written is what TensorBoard's own reader
(``EventAccumulator``, the Python loader of ``tensorboard --load_fast=false``) reads back, to the
float32 bit; a resumed run hides the abandoned tail of the interrupted one; off means no file; a
missing tensorboardX or an unwritable folder is a clear UserError. The end-to-end test trains a tiny
run with ``train.py --summary_dir`` and compares the events with ``metrics.csv``."""
import csv
import glob
import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from mindcv_res2net.training.summary import EPOCH_TAGS, STEP_TAGS, TrainingSummary
from mindcv_res2net.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "res2net", "res2net_fashion_mnist_cpu.yaml")

if importlib.util.find_spec("tensorboardX") is None:  # not imported here: it would load PyTorch
    pytest.skip("tensorboardX is not installed (pip install -e '.[test]')", allow_module_level=True)
# after MindSpore (imported by mindcv_res2net.engine): MindSpore's protobuf modules fail after another's
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


# ------------------------------------------------------------------------------------- readers
def read_scalars(directory):
    """{tag: [(step, value), ...]} as TensorBoard shows the run in ``directory`` (every value: no
    reservoir sampling; orphaned events purged)."""
    acc = event_accumulator.EventAccumulator(str(directory), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def raw_scalars(directory):
    """[(step, tag, value)] of every scalar event on disk in ``directory``, with nothing purged."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    found = []
    for path in sorted(glob.glob(os.path.join(str(directory), "*tfevents*"))):
        for event in LegacyEventFileLoader(path).Load():  # the events as written, not migrated
            for value in event.summary.value:
                found.append((event.step, value.tag, value.simple_value))
    return found


def f32(x):
    return float(np.float32(x))


def same(a, b):
    """Equal as float32, NaN equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or a == b


def _fake_run(summary, rng, steps_per_epoch, epochs, log_interval, start_epoch=0, validate_every=2, nan_at=None):
    """Log epochs ``start_epoch`` .. ``epochs - 1`` like the trainer does; returns
    ({tag: [(step, value)]} expected, rows)."""
    expected, rows = {}, []
    for epoch in range(start_epoch, epochs):
        for s in range(steps_per_epoch):
            step = epoch * steps_per_epoch + s + 1
            if (s + 1) % log_interval and s + 1 != steps_per_epoch:
                continue
            values = {"loss": float(rng.uniform(0.5, 3.0)), "lr": float(rng.uniform(1e-5, 0.1)),
                      "loss_scale": float(2 ** rng.integers(0, 16)), "img_per_s": float(rng.uniform(10, 5000)),
                      "data_wait_pct": float(rng.uniform(0, 100))}
            if step == nan_at:
                values["loss"] = float("nan")
            summary.log_step(step, **values)
            for key, tag in STEP_TAGS.items():
                expected.setdefault(tag, []).append((step, f32(values[key])))
        end = (epoch + 1) * steps_per_epoch
        row = {"epoch": epoch + 1, "train_loss": float(rng.uniform(0.5, 3)), "lr": float(rng.uniform(0, 0.1)),
               "epoch_time_s": float(rng.uniform(1, 100)), "train_img_per_s": float(rng.uniform(10, 5000)),
               "loader_img_per_s": float(rng.uniform(10, 5000)), "data_wait_pct": float(rng.uniform(0, 100)),
               "skipped_images": int(rng.integers(0, 3)), "overflow_steps": int(rng.integers(0, 3)),
               "val_top1": "", "val_top5": "", "val_loss": ""}
        if (epoch + 1) % validate_every == 0:
            row.update(val_top1=float(rng.uniform(0, 1)), val_top5=float(rng.uniform(0, 1)),
                       val_loss=float(rng.uniform(0, 3)))
        # as metrics.csv holds it: text
        csv_row = {k: ("" if v == "" else str(v)) for k, v in row.items()}
        summary.log_epoch(epoch + 1, end, csv_row)
        for key, tag in EPOCH_TAGS.items():
            if row[key] != "":
                expected.setdefault(tag, []).append((end, f32(row[key])))
        rows.append(row)
    return expected, rows


def _assert_same_series(got, expected):
    assert set(got) == set(expected)
    for tag in expected:
        assert [s for s, _ in got[tag]] == [s for s, _ in expected[tag]], tag
        assert all(same(a, b) for (_, a), (_, b) in zip(got[tag], expected[tag])), tag


# ------------------------------------------------------------------------------------- unit tests
def test_steps_and_epochs_read_back_exactly(tmp_path):
    out = tmp_path / "tb" / "run"  # created, parents too
    with TrainingSummary(str(out), resume_step=None) as summary:
        expected, _ = _fake_run(summary, np.random.default_rng(0), steps_per_epoch=7, epochs=4, log_interval=3,
                                nan_at=13)
    got = read_scalars(out)
    _assert_same_series(got, expected)
    # the epoch axis: the global step at the end of each epoch; val only where validated
    assert [s for s, _ in got["epoch/epoch"]] == [7, 14, 21, 28]
    assert [v for _, v in got["epoch/epoch"]] == [1, 2, 3, 4]
    assert [s for s, _ in got["val/top1"]] == [14, 28]
    assert [s for s, _ in got["train/loss"]][:4] == [3, 6, 7, 10]  # every log_interval and each epoch's end
    assert math.isnan(dict(got["train/loss"])[13])
    assert len(glob.glob(str(out / "*tfevents*"))) == 1


def test_values_are_on_disk_while_the_writer_is_open(tmp_path):
    summary = TrainingSummary(str(tmp_path))
    summary.log_step(1, loss=2.5, lr=0.1)
    summary.log_epoch(1, 1, {"train_loss": "2.25", "lr": "0.1"})
    try:  # read while the writer is still open, as TensorBoard does during training (or after a kill)
        got = read_scalars(tmp_path)
        assert got["epoch/train_loss"] == [(1, 2.25)] and got["train/loss"] == [(1, 2.5)]
    finally:
        summary.close()
    summary.close()  # twice is fine


def test_resume_hides_the_abandoned_tail_and_continues_the_steps(tmp_path):
    rng = np.random.default_rng(1)
    # run 1: 3 epochs of 10 steps, "killed" after its epoch-2 checkpoint: its epoch 3 is abandoned
    first = TrainingSummary(str(tmp_path))
    exp1, _ = _fake_run(first, rng, steps_per_epoch=10, epochs=3, log_interval=4)
    first.flush()  # not closed yet: a killed process does not close its file
    # run 2: resumed from the epoch-2 checkpoint (20 steps done); trains epochs 3-4, killed during 5
    second = TrainingSummary(str(tmp_path), resume_step=20)
    exp2, _ = _fake_run(second, rng, steps_per_epoch=10, epochs=5, log_interval=4, start_epoch=2)
    second.flush()
    # run 3: resumed from run 2's epoch-4 checkpoint
    third = TrainingSummary(str(tmp_path), resume_step=40)
    exp3, _ = _fake_run(third, rng, steps_per_epoch=10, epochs=5, log_interval=4, start_epoch=4)
    for summary in (third, second, first):
        summary.close()
    assert len({first.event_file, second.event_file, third.event_file}) == 3
    assert all(os.path.isfile(s.event_file) for s in (first, second, third))

    expected = {tag: [p for p in exp1.get(tag, []) if p[0] <= 20] + [p for p in exp2.get(tag, []) if p[0] <= 40]
                + exp3.get(tag, []) for tag in set(exp1) | set(exp2) | set(exp3)}
    got = read_scalars(tmp_path)
    _assert_same_series(got, expected)
    for tag, series in got.items():
        steps = [s for s, _ in series]
        assert steps == sorted(set(steps)), tag  # each step once, in order
    assert [s for s, _ in got["epoch/epoch"]] == [10, 20, 30, 40, 50]
    # the abandoned epochs are still on disk: it is TensorBoard's reader that hides them
    on_disk = sorted((s, f32(v)) for s, t, v in raw_scalars(tmp_path) if t == "epoch/train_loss")
    assert [s for s, _ in on_disk] == [10, 20, 30, 30, 40, 50, 50]
    assert set(on_disk) == set(exp1["epoch/train_loss"]) | set(exp2["epoch/train_loss"]) | set(exp3["epoch/train_loss"])


def test_fresh_run_moves_an_earlier_run_aside(tmp_path):
    with TrainingSummary(str(tmp_path)) as first:
        first.log_epoch(1, 10, {"train_loss": 1.0})
        first.log_epoch(2, 20, {"train_loss": 0.5})
    with TrainingSummary(str(tmp_path)) as second:  # a new run from scratch in the same folder
        second.log_epoch(1, 10, {"train_loss": 2.0})
    assert second.moved_aside and os.path.basename(second.moved_aside).startswith("previous-run-")
    assert read_scalars(tmp_path)["epoch/train_loss"] == [(10, 2.0)]
    assert read_scalars(second.moved_aside)["epoch/train_loss"] == [(10, 1.0), (20, 0.5)]


def _without_tensorboardx(monkeypatch):
    """Imports of tensorboardX and its modules fail from now on, as where it is not installed."""
    for name in ["tensorboardX"] + [m for m in sys.modules if m.startswith("tensorboardX.")]:
        monkeypatch.setitem(sys.modules, name, None)


def test_disabled_writer_writes_nothing(tmp_path, monkeypatch):
    _without_tensorboardx(monkeypatch)  # not even needed when off
    for summary in (TrainingSummary(str(tmp_path / "off"), enabled=False), TrainingSummary(None),
                    TrainingSummary("", enabled=True)):
        assert not summary.enabled
        summary.log_step(1, loss=1.0, lr=0.1, loss_scale=1.0, img_per_s=1.0, data_wait_pct=0.0)
        summary.log_epoch(1, 1, {"train_loss": 1.0})
        summary.flush()
        summary.close()
    assert not (tmp_path / "off").exists()
    assert os.listdir(tmp_path) == []


def test_missing_tensorboardx_is_a_user_error_with_the_install_command(tmp_path, monkeypatch):
    _without_tensorboardx(monkeypatch)
    with pytest.raises(UserError) as info:
        TrainingSummary(str(tmp_path / "tb"))
    message = str(info.value)
    assert "tensorboardX" in message and "pip install tensorboardX" in message and ".[tensorboard]" in message
    assert "--summary_dir" in message
    assert not (tmp_path / "tb").exists()


def test_unwritable_folder_is_a_user_error_naming_it(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "tb"
    with pytest.raises(UserError) as info:
        TrainingSummary(str(target))
    assert str(target) in str(info.value) and "summary_dir" in str(info.value)


def test_pytorch_is_not_loaded_by_the_writer(tmp_path):
    """tensorboardX imports PyTorch when it is installed; the training process must not load it."""
    code = ("import sys\n"
            "from mindcv_res2net.training.summary import TrainingSummary\n"
            f"s = TrainingSummary({str(tmp_path)!r}); s.log_step(1, loss=1.0); s.close()\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "import importlib.util\n"
            "if importlib.util.find_spec('torch') is not None:\n"
            "    import torch  # still importable afterwards\n"
            "    print('torch importable')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_scalars(tmp_path)["train/loss"] == [(1, 1.0)]


# ------------------------------------------------------------------------------------- end to end
def _train(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=900, env=env, cwd=ROOT)


def _metrics(path):
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_train_py_summary_matches_metrics_csv_and_resume_continues(fashion_mnist_subset, tmp_path):
    data = fashion_mnist_subset(96)
    save, tb = tmp_path / "ckpt", tmp_path / "tb"
    common = ["-c", DEMO, "--data_dir", data, "--mode", 1, "--batch_size", 32, "--num_samples", 96,
              "--val_interval", 1, "--log_interval", 2, "--num_parallel_workers", 1, "--warmup_epochs", 0,
              "--decay_epochs", 3, "--epoch_size", 3, "--ckpt_save_dir", save, "--summary_dir", tb]
    proc = _train(*common)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps_per_epoch = 3

    def check(rows):
        got = read_scalars(tb)
        assert len(rows) == 3
        for tag, series in got.items():
            steps = [s for s, _ in series]
            assert steps == sorted(set(steps)), tag  # one value per step: nothing shown twice
        for key, tag in EPOCH_TAGS.items():
            wanted = [(int(r["epoch"]) * steps_per_epoch, f32(r[key])) for r in rows if r.get(key) not in ("", None)]
            assert len(got.get(tag, [])) == len(wanted), tag
            assert all(s == ws and same(v, wv) for (s, v), (ws, wv) in zip(got[tag], wanted)), (tag, got[tag], wanted)
        # the step log: every 2nd step and each epoch's last one, the lr of the last equal to the epoch's
        assert [s for s, _ in got["train/loss"]] == [2, 3, 5, 6, 8, 9]
        lr_at = dict(got["train/lr"])
        assert all(lr_at[int(r["epoch"]) * steps_per_epoch] == f32(r["lr"]) for r in rows)
        assert all(v > 0 for _, v in got["train/img_per_s"]) and all(v == 1.0 for _, v in got["train/loss_scale"])
        return got

    first = check(_metrics(save / "metrics.csv"))
    # resume from the epoch-2 checkpoint: epoch 3 is trained again and replaces the first run's epoch 3
    proc = _train(*common, "--resume", save / "res2net50-2_3.ckpt")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _metrics(save / "metrics.csv")
    second = check(rows)
    assert len(glob.glob(str(tb / "*tfevents*"))) == 2
    assert second["epoch/time_s"][:2] == first["epoch/time_s"][:2]  # epochs 1-2: the first run's values
    assert second["epoch/time_s"][2] != first["epoch/time_s"][2]  # epoch 3: the resumed run's
