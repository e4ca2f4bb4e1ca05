"""Every MindCV config key does what it says here, or is refused with the reason.

MindCV's keys and ``choices`` below are copied from MindCV's ``config.py`` (mindspore-lab/mindcv,
commit 51b0636); the ModelArts keys come from its older releases. The numeric meaning of each key
is tested in the file of its part (optimizers, schedulers, losses, samplers); this file checks the
key table, the refusals and the keys that live in the trainer and the train step: the overflow
policy, ``amp_cast_list`` (against MindCV 0.3.0's own ``auto_mixed_precision``),
``loss_scale_type: auto``, ``resume_opt``, ``dataset_download`` and ``eval_shuffle``.
"""
import logging
import math
import os
import shutil
import types

import numpy as np
import pytest

import config
from mindcv_res2net.errors import UserError
from mindcv_res2net.training.overflow import OverflowGuard, startup_note

MINDCV_KEYS = [
    "mode", "distribute", "val_while_train", "val_interval", "log_interval", "seed", "device_target", "dataset",
    "data_dir", "train_split", "val_split", "dataset_download", "num_parallel_workers", "shuffle", "num_samples",
    "batch_size", "drop_remainder", "image_resize", "scale", "ratio", "hflip", "vflip", "color_jitter",
    "interpolation", "auto_augment", "aug_splits", "re_prob", "re_scale", "re_ratio", "re_value", "re_max_attempts",
    "mean", "std", "crop_pct", "mixup", "cutmix", "cutmix_prob", "aug_repeats", "model", "num_classes",
    "in_channels", "drop_rate", "drop_path_rate", "pretrained", "ckpt_path", "resume_opt", "keep_checkpoint_max",
    "ckpt_save_dir", "ckpt_save_interval", "ckpt_save_policy", "epoch_size", "dataset_sink_mode", "ema",
    "ema_decay", "clip_grad", "clip_value", "layer_decay", "gradient_accumulation_steps", "opt", "momentum",
    "weight_decay", "use_nesterov", "weight_decay_filter", "eps", "scheduler", "lr", "min_lr", "warmup_epochs",
    "warmup_factor", "decay_epochs", "decay_rate", "multi_step_decay_milestones", "lr_epoch_stair", "num_cycles",
    "cycle_decay", "loss", "label_smoothing", "aux_factor", "reduction", "amp_level", "val_amp_level",
    "amp_cast_list", "loss_scale_type", "loss_scale", "drop_overflow_update", "eval_shuffle",
]
MODELARTS_KEYS = {"enable_modelarts", "multi_data_url", "data_url", "ckpt_url", "train_url"}
MINDCV_CHOICES = {
    "opt": ["sgd", "momentum", "adam", "adamw", "lion", "rmsprop", "adagrad", "lamb", "nadam"],
    "weight_decay_filter": ["disable", "auto", "norm_and_bias"],
    "scheduler": ["constant", "cosine_decay", "exponential_decay", "step_decay", "multi_step_decay", "one_cycle",
                  "cyclic"],
    "loss": ["BCE", "CE"],
    "loss_scale_type": ["fixed", "dynamic", "auto"],
}


# ----------------------------------------------------------------------------- the key table
def test_every_mindcv_key_is_a_config_key_and_only_modelarts_keys_have_no_effect():
    assert len(MINDCV_KEYS) == 86
    keys = set(config.config_keys("train"))
    assert set(MINDCV_KEYS) <= keys
    assert set(config.NO_EFFECT_KEYS) == MODELARTS_KEYS


@pytest.mark.parametrize("key", sorted(MINDCV_CHOICES))
def test_every_mindcv_choice_is_accepted(key):
    for value in MINDCV_CHOICES[key]:
        args = config.parse_args([f"--{key}", value])
        assert str(getattr(args, key)).lower() == value.lower()


@pytest.mark.parametrize("argv, words", [
    (["--dataset", "cifar10"], ["cifar10", "class folders"]),
    (["--aux_factor", "0.4"], ["aux_factor", "auxiliary head"]),
    (["--enable_modelarts", "true"], ["enable_modelarts", "ModelArts"]),
    (["--amp_cast_list", "[os.system]"], ["amp_cast_list", "os.system"]),
    (["--aug_splits", "2"], ["aug_splits", "3"]),
    (["--reduction", "batchmean"], ["reduction", "mean", "sum"]),
    (["--layer_decay", "1.5"], ["layer_decay", "(0, 1]"]),
])
def test_unsupported_values_are_refused_with_the_reason(argv, words):
    with pytest.raises(UserError) as err:
        config.parse_args(argv)
    for word in words:
        assert word in str(err.value)


def test_new_keys_reach_the_dumped_config():
    args = config.parse_args(["--aug_repeats", "3", "--layer_decay", "0.7", "--max_consecutive_overflows", "5",
                              "--summary_dir", "tb", "--eval_shuffle", "true"])
    text = config.dump_config(args)
    for line in ("aug_repeats: 3", "layer_decay: 0.7", "max_consecutive_overflows: 5", "summary_dir: tb",
                 "eval_shuffle: true"):
        assert line in text


# ----------------------------------------------------------------------------- overflow policy
def _guard(amp_level="O2", limit=3):
    return OverflowGuard(amp_level, limit, "ckpt", logging.getLogger("test"))


def test_amp_overflows_are_skipped_until_too_many_in_a_row():
    guard = _guard(limit=3)
    pattern = [True, True, False, True, True, False, True]  # never 3 in a row
    skipped = [guard.step(o, math.inf if o else 1.0, 1024.0, 1, i + 1) for i, o in enumerate(pattern)]
    assert skipped == pattern
    guard.step(True, math.inf, 1024.0, 1, 8)
    with pytest.raises(UserError, match=r"3 consecutive steps overflowed.*epoch 1, step 9.*last good checkpoint"):
        guard.step(True, math.inf, 1024.0, 1, 9)


def test_fp32_nan_loss_stops_at_once_but_a_finite_loss_with_bad_gradients_is_skipped():
    guard = _guard("O0", limit=100)
    assert guard.step(True, 2.3, 1.0, 1, 1) is True        # finite loss, non-finite gradients: skipped
    with pytest.raises(UserError, match=r"NaN/Inf.*epoch 2, step 5.*float32.*last good checkpoint"):
        guard.step(True, math.nan, 1.0, 2, 5)


def test_drop_overflow_update_false_is_said_once_under_amp():
    args = types.SimpleNamespace(drop_overflow_update=False, amp_level="O2", max_consecutive_overflows=100)
    assert "skipped all the same" in startup_note(args)
    assert startup_note(types.SimpleNamespace(drop_overflow_update=True, amp_level="O2",
                                              max_consecutive_overflows=100)) is None
    assert startup_note(types.SimpleNamespace(drop_overflow_update=False, amp_level="O0",
                                              max_consecutive_overflows=100)) is None


def _conv_net(num_classes=3):
    from tests.fault.test_numeric_faults import ConvBN
    return ConvBN(num_classes)


def test_fixed_scale_fp16_overflow_applies_no_update_with_drop_overflow_update_false():
    """MindCV's recipe setting (O2, fixed scale, drop_overflow_update false) with a scale so large that
    the fp16 backward overflows: nothing in the model may change."""
    import mindspore as ms
    from mindspore import Tensor

    from mindcv_res2net.training.train_step import TrainStep
    from mindcv_res2net.loss.losses import create_loss
    from mindcv_res2net.optim.optim_factory import create_optimizer

    ms.set_context(mode=ms.PYNATIVE_MODE)
    net = _conv_net()
    opt = create_optimizer(net, "momentum", lr=0.1, weight_decay=1e-4)
    step = TrainStep(net, create_loss("CE"), opt, amp_level="O2", loss_scale_type="fixed", loss_scale=1e9,
                     drop_overflow_update=False)
    step.set_train()
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
    y = Tensor(rng.integers(0, 3, 4).astype(np.int32))
    _, overflow, _ = step(x, y)
    assert bool(overflow.asnumpy())
    for p in net.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name], err_msg=p.name)


@pytest.mark.parametrize("amp_level, dynamic, scale", [("O0", False, 1.0), ("O2", True, 512.0)])
def test_loss_scale_type_auto(amp_level, dynamic, scale):
    import mindspore as ms

    from mindcv_res2net.training.train_step import TrainStep
    from mindcv_res2net.loss.losses import create_loss
    from mindcv_res2net.optim.optim_factory import create_optimizer

    ms.set_context(mode=ms.PYNATIVE_MODE)
    args = config.parse_args(["--loss_scale_type", "auto", "--amp_level", amp_level, "--loss_scale", "512"])
    net = _conv_net()
    step = TrainStep(net, create_loss("CE"), create_optimizer(net, "momentum", lr=0.1),
                     amp_level=args.amp_level, loss_scale_type=args.loss_scale_type, loss_scale=args.loss_scale)
    assert step.dynamic is dynamic and step.loss_scale_value == scale


# ----------------------------------------------------------------------------- amp_cast_list
@pytest.mark.parametrize("amp_level, cast_list", [("O1", "[nn.Dense]"), ("O2", "[nn.BatchNorm2d, nn.Dense]")])
def test_amp_cast_list_matches_mindcv(amp_level, cast_list):
    """Same weights, same input: our network under (amp_level, amp_cast_list) gives MindCV 0.3.0's
    ``auto_mixed_precision`` output exactly, and differs from the built-in list's."""
    mindcv_amp = pytest.importorskip("mindcv.utils.amp")
    import mindspore as ms
    from mindspore import Tensor

    from mindcv_res2net.training.train_step import apply_amp

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ours, theirs, builtin = _conv_net(), _conv_net(), _conv_net()
    for other in (theirs, builtin):
        ms.load_param_into_net(other, {p.name: ms.Parameter(p.data.copy(), name=p.name)
                                       for p in ours.get_parameters()})
    for net in (ours, theirs, builtin):
        net.set_train(False)
    ours_amp = apply_amp(ours, amp_level, cast_list)
    mindcv_amp.auto_mixed_precision(theirs, amp_level, cast_list)
    apply_amp(builtin, amp_level)  # wraps the built-in list's cells in place
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32) * 3)
    got = ours_amp(x).asnumpy().astype(np.float32)
    ref = theirs(x).asnumpy().astype(np.float32)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)
    cast_types = {type(c.cell).__name__ for _, c in ours.cells_and_names() if type(c).__name__ == "_CastWrapper"}
    builtin_types = {type(c.cell).__name__ for _, c in builtin.cells_and_names()
                     if type(c).__name__ == "_CastWrapper"}
    assert cast_types != builtin_types
    expected = {"O1": {"Dense"}, "O2": {"BatchNorm2d", "Dense"}}[amp_level]
    assert cast_types == expected


def test_amp_cast_list_names_must_be_cells():
    from mindcv_res2net.training.train_step import resolve_cast_list

    assert [c.__name__ for c in resolve_cast_list("[nn.Conv2d, mindspore.nn.Dense]")] == ["Conv2d", "Dense"]
    with pytest.raises(UserError, match="NotACell"):
        resolve_cast_list("[nn.NotACell]")


# ----------------------------------------------------------------------------- resume_opt, download
def _train_args(tmp_path, *extra):
    data = tmp_path / "data"
    (data / "train" / "a").mkdir(parents=True, exist_ok=True)
    return config.parse_args(["--data_dir", str(data), "--ckpt_save_dir", str(tmp_path / "ck"), *extra])


def test_resume_opt_continues_a_training_checkpoint_and_refuses_weights_only(tmp_path):
    from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic
    from mindcv_res2net.training.trainer import _check_inputs

    weights = tmp_path / "w.ckpt"
    save_checkpoint_atomic({"conv1.weight": np.zeros((2, 2), np.float32)}, str(weights))
    run = tmp_path / "run.ckpt"
    save_checkpoint_atomic({"conv1.weight": np.zeros((2, 2), np.float32)}, str(run), extra={"epoch": 3})
    args = _train_args(tmp_path, "--ckpt_path", str(run), "--resume_opt", "true")
    _check_inputs(args)
    assert args.resume == str(run) and args.ckpt_path is None
    for extra, match in ((["--ckpt_path", str(weights)], "holds weights only"), ([], "resume_opt needs ckpt_path"),
                         (["--ckpt_path", str(run), "--resume", "auto"], "keep one of them")):
        with pytest.raises(UserError, match=match):
            _check_inputs(_train_args(tmp_path, "--resume_opt", "true", *extra))


def test_dataset_download_is_refused_for_imagenet_and_fetches_fashion_mnist(tmp_path, monkeypatch):
    from mindcv_res2net.data.readers import mnist_files
    from mindcv_res2net.training import data_setup

    args = config.parse_args(["--dataset_download", "true", "--data_dir", str(tmp_path / "none")])
    with pytest.raises(UserError, match="only fashion_mnist and mnist can be downloaded"):
        data_setup.check_data_dirs(args, ["train"])
    source = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(source):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    fetched = []

    def fake_download(url, dest):  # the official files, from Debian's copy instead of the network
        fetched.append(os.path.basename(url))
        tmp = dest + ".part"
        shutil.copyfile(os.path.join(source, os.path.basename(url)), tmp)
        return tmp

    monkeypatch.setattr(mnist_files, "_download", fake_download)
    root = tmp_path / "fmnist"
    args = config.parse_args(["--dataset", "fashion_mnist", "--dataset_download", "true", "--data_dir", str(root),
                              "--num_parallel_workers", "1"])
    data_setup.check_data_dirs(args, ["val"])               # nothing there yet: fine, it will be fetched
    from mindcv_res2net.data import create_dataset

    dataset = create_dataset("fashion_mnist", root=str(root), split="val", shuffle=False,
                             download=args.dataset_download, num_parallel_workers=1)
    # Debian recompresses the .gz files: they pass by the hash of their content
    assert dataset.dataset_info.num_samples == 10000 and len(fetched) == 4


# ----------------------------------------------------------------------------- eval_shuffle
def test_eval_shuffle_reads_the_same_images_in_another_order_with_exact_shards():
    from mindcv_res2net.data.dataset import EpochSampler

    plain = EpochSampler(23, shuffle=False).indices(0)
    mixed = EpochSampler(23, shuffle=False, eval_shuffle=True, seed=5).indices(0)
    assert sorted(mixed.tolist()) == plain.tolist() and mixed.tolist() != plain.tolist()
    shards = [EpochSampler(23, shuffle=False, eval_shuffle=True, seed=5, num_shards=3, shard_id=r).indices(0)
              for r in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(23))


# ----------------------------------------------------------------------------- val_amp_level
def test_val_amp_level_evaluates_like_mindspore_auto_mixed_precision(tmp_path, monkeypatch):
    """validate.py at val_amp_level O2 against MindCV's way (``mindspore.amp.auto_mixed_precision`` on
    the plain network, then the same evaluation): the same top-1, the loss within fp16 rounding, and not
    the float32 figures."""
    import mindspore as ms

    from mindcv_res2net import create_model
    from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic
    from mindcv_res2net.evaluation import validation
    from mindcv_res2net.training.data_setup import build_val
    from mindcv_res2net.evaluation.evaluate import evaluate
    from mindcv_res2net.distributed.process_setup import seed_everything
    from tests.fault.test_bad_input import make_image_folder

    ms.set_context(mode=ms.PYNATIVE_MODE)
    data = make_image_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=4, size=32)
    seed_everything(3)
    net = create_model("res2net50", num_classes=3)
    ckpt = str(tmp_path / "w.ckpt")
    save_checkpoint_atomic(net, ckpt)

    def runtime(a):
        a.device_target = "CPU"
        return types.SimpleNamespace(rank=0, world_size=1, launcher="none")

    monkeypatch.setattr(validation, "setup_runtime", runtime)
    figures = {}
    for level in ("O0", "O2"):
        args = config.parse_args(["--data_dir", data, "--ckpt_path", ckpt, "--image_resize", "32", "--batch_size",
                                  "4", "--num_parallel_workers", "1", "--val_amp_level", level], script="validate")
        figures[level] = validation.validate(args)
    reference = create_model("res2net50", num_classes=3)
    ms.load_checkpoint(ckpt, reference)
    reference.set_train(False)
    ms.amp.auto_mixed_precision(reference, "O2")
    ref = evaluate(reference, build_val(args, types.SimpleNamespace(rank=0, world_size=1)))
    assert figures["O2"]["num_samples"] == ref["num_samples"] == 12
    assert figures["O2"]["top1"] == ref["top1"]
    assert figures["O2"]["loss"] == pytest.approx(ref["loss"], rel=2e-3)
    assert figures["O2"]["loss"] != figures["O0"]["loss"]


def test_a_run_that_overflows_on_every_step_is_told_the_likely_cause():
    """2 images per rank at 32 px: layer4's BatchNorm sees 2 values per channel, and every fp16 step
    overflows at any loss scale; the stop message (and the epoch warning) say so. Once a step has gone
    through, the usual advice is given instead."""
    guard = OverflowGuard("O2", 3, "ckpt", logging.getLogger("test"), batch_per_rank=2, image_size=32)
    guard.step(True, 2.3, 1024.0, 1, 1)
    guard.step(True, 2.3, 1024.0, 1, 2)
    with pytest.raises(UserError) as info:
        guard.step(True, 2.3, 1024.0, 1, 3)
    message = str(info.value)
    assert "Every step of the run overflowed" in message
    assert "BatchNorm sees 2 value(s) per channel (2 image(s) per rank at 32 px, a 1x1 feature map)" in message
    assert "--batch_size" in message and "--amp_level O0" in message
    # 16 images per rank at 64 px (a 2x2 map: 64 values per channel): the loss scale is named instead
    big = OverflowGuard("O2", 1, "ckpt", logging.getLogger("test"), batch_per_rank=16, image_size=64)
    assert "loss scale (1024) is too large" in big.likely_cause(1024.0)
    # a run that has updated before: the usual advice, no cause guessed
    trained = OverflowGuard("O2", 2, "ckpt", logging.getLogger("test"), batch_per_rank=2, image_size=32)
    trained.step(False, 2.0, 1024.0, 1, 1)
    trained.step(True, 2.3, 1024.0, 1, 2)
    with pytest.raises(UserError) as info:
        trained.step(True, 2.3, 1024.0, 1, 3)
    assert "Every step" not in str(info.value) and "Lower --loss_scale" in str(info.value)
