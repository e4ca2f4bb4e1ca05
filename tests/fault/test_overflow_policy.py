"""The overflow policy in the real ``train()`` loop (a tiny conv+BN model monkeypatched in for
res2net50, 6 images, batch 2, 3 steps per epoch): under AMP with MindCV's fixed loss scale, scattered
overflows are skipped and counted and the run finishes; too many in a row stop it with the last good
checkpoint kept."""
import csv
import os
from types import SimpleNamespace

import pytest

import mindspore as ms
from mindspore import Tensor

from mindcv_res2net.training.train_step import TrainStep
from tests.fault.test_numeric_faults import ConvBN


def _run(tmp_path, monkeypatch, poisoned_calls, *extra):
    import config
    from mindcv_res2net.training import trainer
    from mindcv_res2net.distributed.process_setup import seed_everything
    from tests.fault.test_bad_input import make_image_folder

    data = make_image_folder(tmp_path / "data")
    save_dir = tmp_path / "ckpt"
    args = config.parse_args(["--data_dir", data, "--ckpt_save_dir", str(save_dir), "--device_target", "CPU",
                              "--mode", "1", "--num_parallel_workers", "1", "--image_resize", "16",
                              "--batch_size", "2", "--warmup_epochs", "0", "--opt", "momentum", "--lr", "0.01",
                              "--amp_level", "O2", "--loss_scale_type", "fixed", "--loss_scale", "1024",
                              "--distribute", "false", "--log_interval", "1", *extra], script="train")

    def runtime(a):
        a.device_target = "CPU"
        ms.set_context(mode=ms.PYNATIVE_MODE)
        seed_everything(int(a.seed))
        return SimpleNamespace(rank=0, world_size=1, launcher="none")

    class Poisoned(TrainStep):
        calls = 0

        def __call__(self, images, labels):
            type(self).calls += 1
            if type(self).calls in poisoned_calls:
                images = images * Tensor(float("nan"), images.dtype)
            return super().__call__(images, labels)

    monkeypatch.setattr(trainer, "setup_runtime", runtime)
    monkeypatch.setattr(trainer, "create_model", lambda name, num_classes=3, **kw: ConvBN(num_classes))
    monkeypatch.setattr(trainer, "TrainStep", Poisoned)
    return trainer, args, save_dir, Poisoned


def test_scattered_amp_overflows_are_skipped_and_counted(tmp_path, monkeypatch):
    trainer, args, save_dir, step = _run(tmp_path, monkeypatch, {2, 4, 6}, "--epoch_size", "2",
                                         "--max_consecutive_overflows", "2")
    trainer.train(args)
    assert step.calls == 6
    with open(save_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["overflow_steps"]) for r in rows] == [1, 2]
    assert "res2net50-2_3.ckpt" in os.listdir(save_dir)


def test_too_many_overflows_in_a_row_stop_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    from mindcv_res2net.errors import UserError

    trainer, args, save_dir, step = _run(tmp_path, monkeypatch, {4, 5, 6}, "--epoch_size", "2",
                                         "--max_consecutive_overflows", "3")
    with pytest.raises(UserError, match=r"(?s)3 consecutive steps overflowed.*epoch 2, step 3.*last good checkpoint"):
        trainer.train(args)
    names = sorted(os.listdir(save_dir))
    assert "res2net50-1_3.ckpt" in names and "res2net50-2_3.ckpt" not in names, names
