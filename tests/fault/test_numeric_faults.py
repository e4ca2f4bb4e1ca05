"""Numeric faults: a NaN batch with a fixed loss scale is reported and leaves the weights alone; with
a dynamic scale the step is skipped and the scale lowered; the trainer stops on overflow with a
fixed scale when told to stop at the first one (UserError) and keeps the last good checkpoint."""
import os

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn

from mindcv_res2net.training.train_step import TrainStep
from mindcv_res2net.loss.losses import create_loss
from mindcv_res2net.optim.optim_factory import create_optimizer


class ConvBN(nn.Cell):
    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, has_bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Dense(4, num_classes)

    def construct(self, x):
        return self.classifier(self.flatten(self.pool(self.relu(self.bn(self.conv(x))))))


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((4, 3, 8, 8)).astype(np.float32), rng.integers(0, 3, 4).astype(np.int32)


def _nan_batch(x):
    x = x.copy()
    x[0, 0, 2, 2] = np.nan
    return x


def _model_state(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def test_fixed_scale_nan_batch_overflows_and_keeps_weights():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = ConvBN()
    opt = create_optimizer(net, "momentum", lr=0.1, weight_decay=1e-4)
    ts = TrainStep(net, create_loss("CE"), opt, loss_scale_type="fixed", loss_scale=64.0)
    ts.set_train()
    x, y = _batch()
    ts(Tensor(x), Tensor(y))                       # one good step: momentum buffers non-zero
    before = _model_state(net)                     # weights and BN moving statistics
    loss, overflow, scale = ts(Tensor(_nan_batch(x)), Tensor(y))
    assert bool(overflow.asnumpy())
    assert float(scale.asnumpy()) == 64.0 and float(ts.scale_sense.asnumpy()) == 64.0
    after = _model_state(net)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert all(np.isfinite(v).all() for v in after.values())
    _, overflow, _ = ts(Tensor(x), Tensor(y))      # a finite batch afterwards trains normally
    assert not bool(overflow.asnumpy())
    assert not np.array_equal(net.conv.weight.asnumpy(), before["conv.weight"])


def test_dynamic_scale_nan_batch_is_skipped_and_scale_lowered():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = ConvBN()
    opt = create_optimizer(net, "momentum", lr=0.1, weight_decay=1e-4)
    ts = TrainStep(net, create_loss("CE"), opt, loss_scale_type="dynamic", loss_scale=1024.0, scale_window=100)
    ts.set_train()
    x, y = _batch()
    before = _model_state(net)
    loss, overflow, scale = ts(Tensor(_nan_batch(x)), Tensor(y))
    assert bool(overflow.asnumpy())
    assert float(scale.asnumpy()) == 1024.0                   # the scale used for this step
    assert float(ts.scale_sense.asnumpy()) == 512.0           # lowered for the next one
    after = _model_state(net)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    _, overflow, scale = ts(Tensor(x), Tensor(y))
    assert not bool(overflow.asnumpy()) and float(scale.asnumpy()) == 512.0


def test_trainer_stops_on_fixed_scale_overflow_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    """The real ``train()`` loop on a 2-class x 3-image set with a tiny conv+BN model (monkeypatched
    in for res2net50): epoch 1 is clean, the first batch of epoch 2 is NaN."""
    import config
    from mindcv_res2net.weights.checkpoint_file import read_checkpoint_meta
    from mindcv_res2net.training import trainer
    from mindcv_res2net.errors import UserError
    from tests.fault.test_bad_input import make_image_folder

    data = make_image_folder(tmp_path / "data")
    save_dir = tmp_path / "ckpt"
    args = config.parse_args(["--data_dir", data, "--ckpt_save_dir", str(save_dir), "--device_target", "CPU",
                              "--mode", "1", "--num_parallel_workers", "1", "--image_resize", "16",
                              "--batch_size", "2", "--epoch_size", "2", "--warmup_epochs", "0",
                              "--opt", "momentum", "--lr", "0.01", "--loss_scale_type", "fixed",
                              "--distribute", "false", "--log_interval", "1", "--max_consecutive_overflows", "1"],
                             script="train")

    # in place of setup_runtime (device, cluster state kept per process): PyNative on CPU, no cluster,
    # seeds
    from types import SimpleNamespace

    from mindcv_res2net.distributed.process_setup import seed_everything

    def runtime(a):
        a.device_target = "CPU"
        ms.set_context(mode=ms.PYNATIVE_MODE)
        seed_everything(int(a.seed))
        return SimpleNamespace(rank=0, world_size=1, launcher="none")

    monkeypatch.setattr(trainer, "setup_runtime", runtime)
    monkeypatch.setattr(trainer, "create_model", lambda name, num_classes=3, **kw: ConvBN(num_classes))

    class PoisonAfterFirstEpoch(TrainStep):
        calls = 0

        def __call__(self, images, labels):
            type(self).calls += 1
            if type(self).calls > 3:  # 6 images / batch 2 = 3 steps per epoch
                images = images * Tensor(float("nan"), images.dtype)
            return super().__call__(images, labels)

    monkeypatch.setattr(trainer, "TrainStep", PoisonAfterFirstEpoch)
    # float32, NaN images: ReLU turns the NaNs into zeros, so the loss stays finite and the gradients do not
    with pytest.raises(UserError, match=r"(?s)a step overflowed \(NaN/Inf gradients.*epoch 2, step 1.*last good "
                                        r"checkpoint"):
        trainer.train(args)
    assert PoisonAfterFirstEpoch.calls == 4
    names = sorted(os.listdir(save_dir))
    assert "res2net50-1_3.ckpt" in names and "res2net50-2_3.ckpt" not in names, names
    assert not [n for n in names if ".tmp" in n], names
    meta = read_checkpoint_meta(str(save_dir / "res2net50-1_3.ckpt"))
    assert meta["epoch"] == 1
