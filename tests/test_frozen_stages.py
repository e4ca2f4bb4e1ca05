"""frozen_stages / norm_eval (mmpretrain's meaning): frozen parameters and, with norm_eval, the frozen
BatchNorm statistics stay bit-identical through training while the rest learns; the optimizer holds
no state and applies no weight decay for them; a resumed fine-tuning run ends with the same weights."""
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mindcv_res2net import create_model  # noqa: E402
from mindcv_res2net.errors import UserError  # noqa: E402
from mindcv_res2net.loss.losses import create_loss  # noqa: E402
from mindcv_res2net.optim.optim_factory import create_optimizer  # noqa: E402
from mindcv_res2net.training.frozen_stages import freeze_stages  # noqa: E402
from mindcv_res2net.training.train_step import TrainStep  # noqa: E402
from mindcv_res2net.weights.checkpoint_file import read_checkpoint, save_checkpoint_atomic  # noqa: E402

FROZEN_PREFIXES = ("conv1", "bn1", "layer1.", "layer2.", "layer3.")  # frozen_stages 3 of a Res2Net


def _snapshot(net):
    return {name: p.asnumpy().copy() for name, p in net.parameters_and_names()}


def _train_steps(net, steps=3, weight_decay=1e-2):
    rng = np.random.default_rng(0)
    opt = create_optimizer(net, opt="momentum", lr=0.05, weight_decay=weight_decay)
    step = TrainStep(net, create_loss("CE"), opt)
    step.set_train(True)
    for _ in range(steps):
        x = Tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
        y = Tensor(rng.integers(0, 3, 4).astype(np.int32))
        step(x, y)
    return opt


@pytest.mark.parametrize("norm_eval", [True, False])
def test_frozen_stages_keep_their_weights_and_the_rest_learns(norm_eval):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(1)
    net = create_model("res2net50", num_classes=3)
    frozen, held = freeze_stages(net, 3, norm_eval=norm_eval)
    before = _snapshot(net)
    expected = {n for n in before if n.startswith(FROZEN_PREFIXES) and not n.endswith(("moving_mean", "moving_variance"))}
    assert set(frozen) == expected  # computed from the names, independently of layer_decay's table
    opt = _train_steps(net)
    # the optimizer holds exactly the trainable parameters: no state for frozen ones
    assert {p.name for p in opt.parameters} == {n for n in before if n not in expected
                                                and not n.endswith(("moving_mean", "moving_variance"))}
    after = _snapshot(net)
    for name in expected:
        assert after[name].tobytes() == before[name].tobytes(), name
    stats = [n for n in before if n.startswith(FROZEN_PREFIXES) and n.endswith(("moving_mean", "moving_variance"))]
    unchanged = [after[n].tobytes() == before[n].tobytes() for n in stats]
    if norm_eval:
        assert all(unchanged) and len(held) == len(stats) // 2
    else:
        assert not any(unchanged) and held == []  # normalised by the batch, statistics updated
    assert not np.array_equal(after["classifier.weight"], before["classifier.weight"])
    assert not np.array_equal(after["layer4.0.conv1.weight"], before["layer4.0.conv1.weight"])


def test_frozen_stages_bounds_and_foreign_networks():
    net = create_model("res2net50", num_classes=3)
    assert freeze_stages(net, -1) == ([], [])
    with pytest.raises(UserError, match="frozen_stages"):
        freeze_stages(net, 5)
    from mindspore import nn

    with pytest.raises(UserError, match="frozen_stages"):
        freeze_stages(nn.SequentialCell([nn.Dense(2, 2)]), 0)
    dla = create_model("res2net_dla60", num_classes=3)
    frozen, _ = freeze_stages(dla, 1)  # the /2 stem (base_layer, level0, level1) and stage 1 (level2, /4)
    assert all(n.startswith(("base_layer.", "level0.", "level1.", "level2.")) for n in frozen)
    assert any(n.startswith("level2.") for n in frozen) and not any(n.startswith("level3.") for n in frozen)


# ------------------------------------------------------------------------------- train.py, resumed
def _run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=900, env=env, cwd=ROOT)


@pytest.mark.slow
def test_fine_tuning_with_frozen_stages_through_train_py_resumes_exactly(fashion_mnist_subset, tmp_path):
    data = fashion_mnist_subset(600)
    start = str(tmp_path / "start.ckpt")
    ms.set_seed(5)
    save_checkpoint_atomic(create_model("res2net50", num_classes=10), start)
    common = ["-c", os.path.join(ROOT, "configs", "res2net", "res2net_fashion_mnist_cpu.yaml"), "--data_dir", data,
              "--mode", 0, "--batch_size", 32, "--num_samples", 96, "--val_while_train", False,
              "--num_parallel_workers", 1, "--warmup_epochs", 0, "--decay_epochs", 2, "--epoch_size", 2,
              "--ckpt_path", start, "--frozen_stages", 3, "--norm_eval", True]
    full = tmp_path / "full"
    proc = _run(*common, "--ckpt_save_dir", full)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "frozen_stages 3:" in proc.stdout + proc.stderr
    initial = read_checkpoint(start)
    first = read_checkpoint(full / "res2net50-1_3.ckpt")
    frozen = [n for n in initial if n.startswith(FROZEN_PREFIXES)]
    assert len(frozen) > 300
    for name in frozen:  # weights and moving statistics alike
        assert first[name].tobytes() == initial[name].tobytes(), name
    assert not np.array_equal(first["classifier.weight"], initial["classifier.weight"])
    # resumed from the epoch-1 checkpoint in another folder: the same epoch-2 weights
    part = tmp_path / "part"
    part.mkdir()
    resume_from = part / "res2net50-1_3.ckpt"
    resume_from.write_bytes((full / "res2net50-1_3.ckpt").read_bytes())
    proc = _run(*common, "--ckpt_save_dir", part, "--resume", resume_from)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_checkpoint(full / "res2net50-2_3.ckpt"), read_checkpoint(part / "res2net50-2_3.ckpt")
    arrays = [k for k in a if isinstance(a[k], np.ndarray) and a[k].dtype.kind == "f"]
    assert arrays and all(a[k].tobytes() == b[k].tobytes() for k in arrays)


def test_benchmark_reports_the_frozen_speed_up_in_one_run():
    from mindcv_res2net.benchmark.speed import _ratios
    from mindcv_res2net.cli.benchmark_args import build_parser, validate

    ratios = _ratios({"ours": {"images_per_sec": 4.0}, "ours_frozen3": {"images_per_sec": 9.0},
                      "mindcv": {"images_per_sec": 3.0}})
    assert ratios["ours_frozen3/ours"] == pytest.approx(2.25) and ratios["ours/mindcv"] == pytest.approx(4 / 3)
    for argv, expected in ((["--task", "train", "--frozen_stages", "5"], "frozen_stages"),
                           (["--task", "infer", "--frozen_stages", "3"], "--task train only")):
        args = build_parser().parse_args(argv)
        args.argv = argv
        with pytest.raises(UserError, match=expected):
            validate(args)
