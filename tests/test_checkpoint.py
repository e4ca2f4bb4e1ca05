"""Checkpoints in MindCV's layout: names, training state (optimizer moments, EMA), strict errors,
classifier drop, in_channels adaptation, atomic save and metadata. No torch needed."""
import logging
import os

import mindspore as ms
import numpy as np
import pytest

from mindcv_res2net import UserError, create_model
from mindcv_res2net.weights.checkpoint_file import read_checkpoint, read_checkpoint_meta, save_checkpoint_atomic
from mindcv_res2net.weights.model_loading import adapt_input_conv, load_model_weights

KEYS_DIR = os.environ.get("RES2NET_KEYS_DIR",
                          os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "res2net_keys"))
SIZE = 32


def tsv_rows(name):
    path = os.path.join(KEYS_DIR, f"{name}.tsv")
    if not os.path.exists(path):
        pytest.skip(f"reference key list {path} not available")
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            torch_key, shape, ms_name = line.rstrip("\n").split("\t")
            rows.append((torch_key, tuple(int(s) for s in shape.strip("[]").split(",") if s.strip()), ms_name))
    return rows


def mindcv_names(name):
    """MindCV's parameter names and shapes (third column of the reference tsv)."""
    return {ms_name: shape for _, shape, ms_name in tsv_rows(name) if ms_name != "-"}


def randomize(net, seed=0):
    """Random weights and BN statistics, so that a wrong mapping shows in the outputs."""
    rng = np.random.default_rng(seed)
    for name, p in net.parameters_dict().items():
        shape = tuple(p.shape)
        if name.endswith("moving_variance") or name.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif name.endswith("moving_mean") or name.endswith("beta"):
            value = rng.standard_normal(shape, dtype=np.float32) * 0.1
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(1.0 / fan_in))
        p.set_data(ms.Tensor(value))
    return net


def params_np(net):
    return {n: p.asnumpy().copy() for n, p in net.parameters_dict().items()}


def logits(net, x):
    net.set_train(False)
    return net(ms.Tensor(x)).asnumpy()


@pytest.fixture(scope="module")
def x32():
    return np.random.RandomState(1).randn(2, 3, SIZE, SIZE).astype(np.float32)


@pytest.fixture(scope="module")
def source_net():
    return randomize(create_model("res2net50"), seed=3)


@pytest.fixture(scope="module")
def training_ckpt(source_net, tmp_path_factory):
    """A MindCV-style training checkpoint: weights, Momentum moments, EMA copies and counters."""
    path = str(tmp_path_factory.mktemp("ckpt") / "res2net50-train.ckpt")
    weights = params_np(source_net)
    entries = dict(weights)
    for n, v in weights.items():
        entries["moments." + n] = v * np.float32(-0.5)
        entries["ema." + n] = v * np.float32(1.01) + np.float32(0.001)
    entries["learning_rate"] = np.linspace(0.1, 0.0, 100).astype(np.float32)  # dynamic LR: one per step
    entries["global_step"] = np.array([1234], np.int32)
    entries["momentum"] = np.array(0.9, np.float32)
    save_checkpoint_atomic(entries, path, extra={"epoch_num": 12, "step_num": 1234})
    return path, entries


def test_model_names_are_mindcv_names():
    for arch in ("res2net50", "res2net50_v1b", "res2next50"):
        net_shapes = {n: tuple(p.shape) for n, p in create_model(arch).parameters_dict().items()}
        assert net_shapes == mindcv_names(arch), arch


def test_training_checkpoint_loads_and_reproduces(source_net, training_ckpt, x32):
    path, _ = training_ckpt
    net = create_model("res2net50", checkpoint_path=path)
    np.testing.assert_allclose(logits(net, x32), logits(source_net, x32), rtol=1e-5, atol=1e-5)
    report = load_model_weights(net, path)
    assert len(report.loaded) == 427 and not report.used_ema
    assert report.ignored_training_state == 2 * 427 + 1  # moments, unused EMA copies, the LR array
    assert report.meta["global_step"] == 1234 and report.meta["epoch_num"] == 12
    assert report.meta["momentum"] == pytest.approx(0.9)
    assert read_checkpoint_meta(path)["global_step"] == 1234


def test_use_ema_loads_the_ema_copies(training_ckpt):
    path, entries = training_ckpt
    net = create_model("res2net50")
    report = load_model_weights(net, path, use_ema=True)
    assert report.used_ema
    loaded = params_np(net)
    for n in ("conv1.weight", "layer3.2.convs.1.weight", "bn1.moving_mean", "classifier.bias"):
        np.testing.assert_array_equal(loaded[n], entries["ema." + n])


def test_use_ema_without_ema_copies_is_refused(source_net, tmp_path):
    path = str(tmp_path / "plain.ckpt")
    ms.save_checkpoint(source_net, path)  # MindSpore's own writer: a plain MindCV-style checkpoint
    with pytest.raises(UserError, match="no EMA weights"):
        load_model_weights(create_model("res2net50"), path, use_ema=True)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = str(tmp_path / "v1b.ckpt")
    save_checkpoint_atomic({n: np.zeros(s, np.float32) for n, s in mindcv_names("res2net50_v1b").items()}, path)
    with pytest.raises(UserError) as err:
        create_model("res2net50", checkpoint_path=path)
    msg = str(err.value)
    assert path in msg and "res2net50" in msg
    assert "16 missing (conv1.weight, layer2.0.down_sample.0.weight" in msg
    assert "unexpected (conv1.0.weight" in msg
    assert "res2net50_v1b" in msg  # the guess
    assert "--model" in msg


def test_extra_blocks_are_not_mistaken_for_optimizer_state(source_net):
    weights = params_np(source_net)
    for n in [n for n in weights if n.startswith("layer3.5.")]:  # a deeper model: layer3.6 ...
        weights["layer3.6." + n[len("layer3.5."):]] = weights[n]
    weights["moments.layer3.5.conv1.weight"] = weights["layer3.5.conv1.weight"]
    with pytest.raises(UserError, match=r"does not fit model res2net50: \d+ unexpected \(layer3.6."):
        load_model_weights(create_model("res2net50"), weights)


def test_shape_mismatch_is_listed(tmp_path):
    names = mindcv_names("res2net50")
    names["layer1.0.convs.0.weight"] = (26, 26, 5, 5)
    path = str(tmp_path / "bad.ckpt")
    save_checkpoint_atomic({n: np.zeros(s, np.float32) for n, s in names.items()}, path)
    with pytest.raises(UserError, match=r"1 with another shape \(layer1.0.convs.0.weight: checkpoint \[26, 26, 5, 5\] "
                                        r"vs model \[26, 26, 3, 3\]\)"):
        load_model_weights(create_model("res2net50"), path)
    report = load_model_weights(create_model("res2net50"), path, strict=False)
    assert [m[0] for m in report.mismatched] == ["layer1.0.convs.0.weight"] and len(report.loaded) == 426


def test_missing_and_corrupt_files(tmp_path):
    net = create_model("res2net_dla60")
    missing = str(tmp_path / "nope.ckpt")
    with pytest.raises(UserError, match="not found: " + missing):
        load_model_weights(net, missing)
    bad = tmp_path / "corrupt.ckpt"
    bad.write_bytes(os.urandom(300))
    with pytest.raises(UserError, match="could not read checkpoint"):
        load_model_weights(net, str(bad))
    with pytest.raises(UserError, match="directory"):
        load_model_weights(net, str(tmp_path))


def test_other_num_classes_drops_classifier(training_ckpt, caplog):
    path, entries = training_ckpt
    net = create_model("res2net50", num_classes=10)
    fresh_cls = net.parameters_dict()["classifier.weight"].asnumpy().copy()
    with caplog.at_level(logging.WARNING):
        report = load_model_weights(net, path, num_classes=10)
    assert any("1000-class classifier" in r.getMessage() and "10 classes" in r.getMessage() for r in caplog.records)
    assert set(report.dropped) == {"classifier.weight", "classifier.bias"}
    loaded = params_np(net)
    np.testing.assert_array_equal(loaded["classifier.weight"], fresh_cls)
    np.testing.assert_array_equal(loaded["layer4.2.conv3.weight"], entries["layer4.2.conv3.weight"])
    # and through create_model, and without any classifier
    create_model("res2net50", num_classes=10, checkpoint_path=path)
    features = create_model("res2net50", num_classes=0, checkpoint_path=path)
    assert "classifier.weight" not in features.parameters_dict()


def test_in_channels_adaptation(training_ckpt):
    path, entries = training_ckpt
    rgb = entries["conv1.weight"]
    gray = create_model("res2net50", in_channels=1, checkpoint_path=path)
    np.testing.assert_allclose(gray.parameters_dict()["conv1.weight"].asnumpy(), rgb.sum(axis=1, keepdims=True),
                               rtol=1e-6, atol=1e-6)
    y = gray(ms.Tensor(np.zeros((1, 1, SIZE, SIZE), np.float32)))
    assert y.shape == (1, 1000)
    four = create_model("res2net50", in_channels=4)
    report = load_model_weights(four, path)
    assert "conv1.weight" in report.adapted
    w4 = four.parameters_dict()["conv1.weight"].asnumpy()
    np.testing.assert_allclose(w4[:, :3], rgb * 0.75, rtol=1e-6)
    np.testing.assert_allclose(w4[:, 3], rgb[:, 0] * 0.75, rtol=1e-6)


def test_adapt_input_conv_rules():
    # 6 input channels = two RGB triples: summed per triple, as timm does -> [O, 2, ...]
    w = np.arange(2 * 6, dtype=np.float32).reshape(2, 6, 1, 1)
    np.testing.assert_array_equal(adapt_input_conv(w, 1)[:, :, 0, 0], [[3, 12], [21, 30]])
    rgb = np.ones((4, 3, 3, 3), np.float32)
    assert adapt_input_conv(rgb, 1).shape == (4, 1, 3, 3) and float(adapt_input_conv(rgb, 1).max()) == 3.0
    np.testing.assert_allclose(adapt_input_conv(rgb, 2), np.ones((4, 2, 3, 3)) * 1.5)
    with pytest.raises(UserError):
        adapt_input_conv(np.ones((4, 2, 3, 3), np.float32), 5)


def test_atomic_save_and_metadata(tmp_path):
    net = create_model("res2net_dla60", num_classes=3)
    path = str(tmp_path / "sub" / "last.ckpt")
    extra = {"epoch": 7, "global_step": 7001, "loss_scale": 1024.0, "lr": 1e-4, "best": True,
             "class_names": ["cat", "dog", "emu, large"], "note": "fine-tuned", "none": None}
    assert save_checkpoint_atomic(net, path, extra=extra) == path
    assert sorted(os.listdir(tmp_path / "sub")) == ["last.ckpt"]  # nothing left beside it
    meta = read_checkpoint_meta(path)
    assert meta == {"epoch": 7, "global_step": 7001, "loss_scale": 1024.0, "lr": 1e-4, "best": True,
                    "class_names": ["cat", "dog", "emu, large"], "note": "fine-tuned", "none": None}
    report = load_model_weights(create_model("res2net_dla60", num_classes=3), path)
    assert report.meta["class_names"] == ["cat", "dog", "emu, large"] and len(report.loaded) == 477
    # a file name MindSpore would not accept (no .ckpt suffix)
    other = str(tmp_path / "last.ckpt.bak")
    os.link(path, other)
    assert read_checkpoint_meta(other)["epoch"] == 7
    # overwrite keeps a writable, complete file
    save_checkpoint_atomic(net, path, extra={"epoch": 8})
    assert read_checkpoint_meta(path)["epoch"] == 8


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    net = create_model("res2net_dla60", num_classes=3)
    path = str(tmp_path / "best.ckpt")
    save_checkpoint_atomic(net, path, extra={"epoch": 1})
    before = open(path, "rb").read()

    def dying_save(obj, name, **kwargs):
        written = name if name.endswith(".ckpt") else name + ".ckpt"  # MindSpore's naming
        with open(written, "wb") as f:  # a partial file, then the process "dies"
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ms, "save_checkpoint", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint_atomic(net, path, extra={"epoch": 2})
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["best.ckpt"]


def test_wrapper_prefix_and_dict_source(source_net, tmp_path, x32):
    weights = params_np(source_net)
    path = str(tmp_path / "wrapped.ckpt")
    save_checkpoint_atomic({"network." + n: v for n, v in weights.items()}, path)
    net = create_model("res2net50", checkpoint_path=path)
    np.testing.assert_allclose(logits(net, x32), logits(source_net, x32), rtol=1e-5, atol=1e-5)
    net2 = create_model("res2net50")
    report = load_model_weights(net2, {n: ms.Parameter(ms.Tensor(v), name=n) for n, v in weights.items()})
    assert len(report.loaded) == 427
    np.testing.assert_array_equal(read_checkpoint(path)["network.bn1.gamma"], weights["bn1.gamma"])


def test_pytorch_file_given_as_checkpoint_is_explained(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"x")
    with pytest.raises(UserError, match="python -m mindcv_res2net.convert"):
        read_checkpoint(str(path))
