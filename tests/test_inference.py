"""optimize_for_inference: same outputs as the original (graph and PyNative), new cells, no BatchNorm."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import nn

from mindcv_res2net.errors import UserError
from mindcv_res2net.deploy.inference_model import build_inference_model, check_image_size
from mindcv_res2net.models.inference import FusedBottle2neck, FusedRes2Net, FusedRes2NetDLA, optimize_for_inference
from mindcv_res2net.models.factory import create_model

from helpers import randomize_bn, rel_diff

RTOL = 1e-5


def outputs(net, x):
    out = net(x)
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.asnumpy() for o in out]


def make(name, **kwargs):
    kwargs.setdefault("num_classes", 10)
    net = randomize_bn(create_model(name, **kwargs))
    net.set_train(False)
    return net


MAIN_MODELS = ["res2net50", "res2net50_v1b", "res2next50", "res2net_dla60"]


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name):
        if name not in cache:
            net = make(name)
            cache[name] = (net, optimize_for_inference(net))
        return cache[name]
    return get


@pytest.mark.parametrize("name", MAIN_MODELS)
def test_same_outputs_pynative_and_graph(name, built):
    net, fused = built(name)
    rng = np.random.default_rng(1)
    # 40 px gives odd feature-map sizes (5 -> 3): the v1b avg-pool shortcut's ceil mode is exercised
    size = 32 if "dla" in name else 40
    x = ms.Tensor(rng.standard_normal((2, 3, size, size)).astype(np.float32))
    ms.set_context(mode=ms.PYNATIVE_MODE)
    ref = outputs(net, x)
    got = outputs(fused, x)
    assert rel_diff(ref[0], got[0]) < RTOL
    # graph mode: the compiled fused network against the original's (PyNative) outputs
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        got_graph = outputs(fused, x)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert rel_diff(ref[0], got_graph[0]) < RTOL


@pytest.mark.parametrize("name,kwargs,size", [
    ("res2net50_v1b", dict(features_only=True), 40),
    ("res2net_dla60", dict(features_only=True, out_indices=(1, 4)), 32),
    ("res2net50", dict(num_classes=0, global_pool="catavgmax"), 32),
    ("res2net50", dict(num_classes=0, global_pool=""), 32),
    ("res2next_dla60", dict(global_pool="avgmax"), 32),
    ("res2net50_48w_2s", dict(global_pool="max"), 32),
])
def test_variants(name, kwargs, size):
    net = make(name, **kwargs)
    fused = optimize_for_inference(net)
    x = ms.Tensor(np.random.default_rng(2).standard_normal((1, 3, size, size)).astype(np.float32))
    ref, got = outputs(net, x), outputs(fused, x)
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        assert r.shape == g.shape
        assert rel_diff(r, g) < RTOL
    for attr in ("features_only", "out_indices", "num_classes", "feature_info", "default_cfg"):
        assert getattr(fused, attr) == getattr(net, attr)


@pytest.mark.parametrize("mode", ["grouped", "separate"])
def test_stage_conv_modes(mode, built):
    net, _ = built("res2next50")  # cardinality 8: the grouping of the merged conv matters
    fused = optimize_for_inference(net, stage_convs=mode)
    x = ms.Tensor(np.random.default_rng(5).standard_normal((1, 3, 40, 40)).astype(np.float32))
    assert rel_diff(outputs(net, x)[0], outputs(fused, x)[0]) < RTOL
    stage = [c for _, c in fused.cells_and_names() if isinstance(c, FusedBottle2neck) and c.is_stage]
    assert all(b.stage_mode == mode for b in stage)
    if mode == "grouped":
        assert all(b.grouped.conv.group == 3 * 8 for b in stage)
    with pytest.raises(ValueError):
        optimize_for_inference(net, stage_convs="fastest")


def test_structure_and_original_untouched(built):
    net, fused = built("res2next50")
    before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    again = optimize_for_inference(net)  # building from the same net twice changes nothing in it
    assert again is not fused
    for p in net.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name])
    assert any(isinstance(c, nn.BatchNorm2d) for _, c in net.cells_and_names())  # original keeps its BNs
    assert isinstance(fused, FusedRes2Net)
    assert not any(isinstance(c, (nn.BatchNorm2d, nn.AvgPool2d, nn.MaxPool2d, nn.Dropout))
                   for _, c in fused.cells_and_names())
    blocks = [c for _, c in fused.cells_and_names() if isinstance(c, FusedBottle2neck)]
    assert len(blocks) == 16
    stage = [b for b in blocks if b.is_stage]
    assert len(stage) == 4
    for block in stage:  # scale 4 x cardinality 8: every chunk's 3x3 conv (and the avg-pool) in one conv
        assert block.convs is None and block.grouped.conv.group == 4 * 8
    assert all(b.grouped is None and len(b.convs) == 3 for b in blocks if not b.is_stage)
    # no parameter shared with the original
    ids = {id(p) for p in net.get_parameters()}
    assert not any(id(p) in ids for p in fused.get_parameters())
    assert optimize_for_inference(fused) is fused


def test_dla_type_and_errors():
    net = create_model("res2net_dla60", num_classes=3)
    assert isinstance(optimize_for_inference(net), FusedRes2NetDLA)
    with pytest.raises(TypeError):
        optimize_for_inference(nn.Dense(2, 2))
    assert check_image_size("res2net_dla60", 64) == 64
    assert check_image_size("res2net50", 40) == 40
    with pytest.raises(UserError, match="divisible by 32"):
        check_image_size("res2next_dla60", 40)
    with pytest.raises(UserError):
        check_image_size("res2net50", 0)


def test_build_inference_model_from_checkpoint(tmp_path):
    from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic

    src = make("res2net50_v1b", num_classes=7)
    path = str(tmp_path / "v1b.ckpt")
    save_checkpoint_atomic(src, path, extra={"class_names": list("abcdefg")})
    fused, info = build_inference_model("res2net50_v1b", ckpt_path=path)
    assert info["num_classes"] == 7 and info["meta"]["class_names"] == list("abcdefg")
    x = ms.Tensor(np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32))
    assert rel_diff(outputs(src, x)[0], outputs(fused, x)[0]) < RTOL
    with pytest.raises(UserError, match="7-class"):
        build_inference_model("res2net50_v1b", ckpt_path=path, num_classes=5)
    with pytest.raises(UserError):
        build_inference_model("res2net50", ckpt_path=path)  # another architecture


@pytest.mark.slow
def test_every_registered_model_optimises():
    from mindcv_res2net.models import list_models

    x = ms.Tensor(np.random.default_rng(4).standard_normal((1, 3, 32, 32)).astype(np.float32))
    for name in list_models(include_aliases=False):
        net = make(name, num_classes=5)
        assert rel_diff(outputs(net, x)[0], outputs(optimize_for_inference(net), x)[0]) < RTOL, name
