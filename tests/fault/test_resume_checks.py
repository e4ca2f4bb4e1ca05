"""``train.py`` on a used folder: a fresh run is refused without --overwrite, a resume of another
model or of other classes is refused, a run is extended by resuming with a larger --epoch_size (the
schedule is rebuilt, the metrics and config history kept); the cheap input checks come first; an
epoch in which every step overflowed logs a NaN train loss."""
import csv
import math
import os
import types

import numpy as np
import pytest

from tests.fault.test_bad_input import FAST, assert_user_error, make_image_folder, run_script

ARGS = FAST + ["--warmup_epochs", "0", "--val_while_train"]


@pytest.fixture(scope="module")
def used_folder(tmp_path_factory):
    """One finished 1-epoch run, then the follow-up runs in the same folder, one at a time (each
    holds the folder's run lock while it lives)."""
    base = tmp_path_factory.mktemp("resume_checks")
    data = make_image_folder(base / "data")
    other = make_image_folder(base / "other", classes=("ant", "bee"))
    ck = str(base / "ck")
    out = {"_ck": ck, "first": run_script("train.py", ARGS + ["--data_dir", data, "--ckpt_save_dir", ck], 300)}
    first_ckpt = os.path.join(ck, "res2net50-1_3.ckpt")
    out["fresh"] = run_script("train.py", ARGS + ["--data_dir", data, "--ckpt_save_dir", ck])
    out["model"] = run_script("train.py", ARGS + ["--data_dir", data, "--ckpt_save_dir", ck, "--model", "res2net101",
                                                  "--resume", first_ckpt])
    out["classes"] = run_script("train.py", ARGS + ["--data_dir", other, "--ckpt_save_dir", ck, "--resume", "auto"])
    out["extend"] = run_script("train.py", ARGS + ["--data_dir", data, "--ckpt_save_dir", ck, "--resume", "auto",
                                                   "--epoch_size", "2"], 300)
    return out


@pytest.mark.slow
def test_first_run_finished(used_folder):
    proc = used_folder["first"]
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_fresh_run_in_a_used_folder_is_refused(used_folder):
    line = assert_user_error(used_folder["fresh"], used_folder["_ck"], "--overwrite", "--resume auto")
    assert "res2net50-1_3.ckpt" in line


@pytest.mark.slow
def test_resume_of_another_model_is_refused(used_folder):
    assert_user_error(used_folder["model"], "res2net50-1_3.ckpt", "res2net50 run", "res2net101")


@pytest.mark.slow
def test_resume_with_other_classes_is_refused(used_folder):
    assert_user_error(used_folder["classes"], "res2net50-1_3.ckpt", "classes", "'ant'")


@pytest.mark.slow
def test_a_run_is_extended_by_resuming_with_more_epochs(used_folder):
    proc = used_folder["extend"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "learning-rate schedule of this config (6 steps) differs" in proc.stdout
    ck = used_folder["_ck"]
    with open(os.path.join(ck, "metrics.csv")) as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    kept = [n for n in os.listdir(ck) if n.startswith("config.") and n != "config.yaml"]
    assert len(kept) == 1, os.listdir(ck)
    assert "epoch_size: 1" in open(os.path.join(ck, kept[0])).read()
    assert "epoch_size: 2" in open(os.path.join(ck, "config.yaml")).read()


def test_missing_ckpt_path_is_reported_before_the_data_pipeline(tmp_path):
    data = make_image_folder(tmp_path / "data")
    proc = run_script("train.py", FAST + ["--data_dir", data, "--ckpt_path", tmp_path / "nope.ckpt",
                                          "--ckpt_save_dir", tmp_path / "ck"])
    assert_user_error(proc, str(tmp_path / "nope.ckpt"), "--ckpt_path")
    assert "training images" not in proc.stdout and "mindcv_res2net training" not in proc.stdout


# ----------------------------------------------------------------------------- 14. all steps overflowed
class _Data:
    steps_per_epoch = 3

    def __iter__(self):
        import mindspore as ms
        for _ in range(3):
            yield ms.Tensor(np.zeros((2, 3, 8, 8), np.float32)), ms.Tensor(np.zeros(2, np.int32))

    @staticmethod
    def take_skipped_count():
        return 0


def _fake_step(overflow):
    import mindspore as ms

    def step(images, labels):
        return ms.Tensor(np.float32(np.inf if overflow else 1.5)), ms.Tensor(np.bool_(overflow)), \
            ms.Tensor(np.float32(512.0))
    return step


@pytest.mark.parametrize("overflow", [True, False])
def test_epoch_where_every_step_overflowed_logs_nan(overflow):
    import logging

    from mindcv_res2net.training.trainer import _train_epoch

    args = types.SimpleNamespace(epoch_size=1, loss_scale_type="dynamic", log_interval=10, batch_size=2, aug_splits=0,
                                 ckpt_save_dir="ck")
    from mindcv_res2net.training.overflow import OverflowGuard
    from mindcv_res2net.training.summary import TrainingSummary

    logger = logging.getLogger("test")
    row = _train_epoch(args, 0, _Data(), _fake_step(overflow), np.full(3, 0.1, np.float32), 1, None, logger,
                       main_process=False, guard=OverflowGuard("O2", 100, "ck", logger),
                       summary=TrainingSummary(None, enabled=False))
    assert math.isnan(row["train_loss"]) if overflow else row["train_loss"] == 1.5
