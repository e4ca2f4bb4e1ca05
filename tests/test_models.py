"""The model zoo against published facts and an independent numpy computation."""
import math
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from mindcv_res2net import UserError, create_model, list_models
from mindcv_res2net.models.layers import count_params
from mindcv_res2net.models.res2net import Bottle2neck

from helpers import randomize_bn

# Learnable / with-BN-moving-statistics parameter counts at 1000 classes, from the published sources
# (tests/data/README.md). The DLA pair uses timm's counts (no unused `project` layers).
PUBLISHED_COUNTS = {
    "res2net50": (25_699_120, 25_758_612),
    "res2net101": (45_206_688, 45_325_748),
    "res2net152": (61_275_248, 61_446_868),
    "res2net50_26w_6s": (37_051_448, 37_123_212),
    "res2net50_26w_8s": (48_403_776, 48_487_812),
    "res2net50_48w_2s": (25_287_304, 25_342_312),
    "res2net50_14w_8s": (25_059_816, 25_122_612),
    "res2next50": (24_671_464, 24_735_912),
    "res2net50_v1b": (25_718_352, 25_777_972),
    "res2net101_v1b": (45_225_920, 45_345_108),
    "res2net152_v1b": (61_294_480, 61_466_228),
    "res2net_dla60": (20_848_072, None),
    "res2next_dla60": (17_032_984, None),
}
ALIASES = {"res2net50_26w_4s": "res2net50", "res2net101_26w_4s": "res2net101",
           "res2net50d": "res2net50_v1b", "res2net101d": "res2net101_v1b"}


def _x(batch=1, size=32, channels=3, seed=0):
    return ms.Tensor(np.random.default_rng(seed).standard_normal((batch, channels, size, size)).astype(np.float32))


def test_registry_lists_every_variant_and_alias():
    names = set(list_models())
    assert set(PUBLISHED_COUNTS) <= names
    assert set(ALIASES) <= names
    assert list_models("res2net50_*w_*s") == ["res2net50_14w_8s", "res2net50_26w_4s", "res2net50_26w_6s",
                                                "res2net50_26w_8s", "res2net50_48w_2s"]


@pytest.mark.parametrize("name", sorted(PUBLISHED_COUNTS))
def test_parameter_counts_equal_published(name):
    net = create_model(name)
    learnable, total = PUBLISHED_COUNTS[name]
    assert count_params(net) == learnable
    if total is not None:
        assert count_params(net, trainable_only=False) == total


@pytest.mark.parametrize("alias,name", sorted(ALIASES.items()))
def test_timm_aliases_build_the_same_architecture(alias, name):
    a, b = create_model(alias), create_model(name)
    assert [(p.name, p.shape) for p in a.get_parameters()] == [(p.name, p.shape) for p in b.get_parameters()]
    assert a.default_cfg["architecture"] == name


def test_num_classes_changes_only_the_classifier():
    assert count_params(create_model("res2net50", num_classes=10)) == 23_670_610
    assert count_params(create_model("res2net50", num_classes=0)) == 25_699_120 - 2_049_000


@pytest.mark.parametrize("name", ["res2net50", "res2net50_v1b", "res2next50"])
def test_parameter_names_and_shapes_equal_mindcv(name, reference_dir):
    want = {}
    with open(os.path.join(reference_dir, "res2net_keys", f"{name}.tsv")) as f:
        for line in f:
            if line.startswith("#"):
                continue
            _torch_key, shape, ms_name = line.rstrip("\n").split("\t")
            if ms_name != "-":
                want[ms_name] = tuple(int(v) for v in shape.strip("[]").split(",") if v.strip())
    got = {p.name: tuple(p.shape) for p in create_model(name).get_parameters()}
    assert got == want


@pytest.mark.parametrize("name", sorted(PUBLISHED_COUNTS))
def test_output_shape_of_every_variant(name):
    net = create_model(name, num_classes=7)
    net.set_train(False)
    # DLA's tree max-pool needs sizes divisible by 32, as in timm; the others take odd sizes too.
    size = 64 if "dla" in name else 35
    assert net(_x(2, size)).shape == (2, 7)


def test_odd_input_size_and_in_channels():
    net = create_model("res2net50_v1b", num_classes=3, in_channels=1)
    net.set_train(False)
    assert net(_x(1, 37, channels=1)).shape == (1, 3)
    assert net.default_cfg["input_size"] == (1, 224, 224)


@pytest.mark.parametrize("pool,width", [("avg", 2048), ("max", 2048), ("avgmax", 2048), ("catavgmax", 4096)])
def test_global_pool_options(pool, width):
    net = create_model("res2net50", num_classes=0, global_pool=pool)
    net.set_train(False)
    x = _x(2, 32)
    feats = net(x)
    assert feats.shape == (2, width)
    maps = net.forward_features(x).asnumpy()
    expected = {"avg": maps.mean((2, 3)), "max": maps.max((2, 3)),
                "avgmax": 0.5 * (maps.mean((2, 3)) + maps.max((2, 3))),
                "catavgmax": np.concatenate([maps.mean((2, 3)), maps.max((2, 3))], 1)}[pool]
    np.testing.assert_allclose(feats.asnumpy(), expected, rtol=1e-5, atol=1e-6)
    head = create_model("res2net50", num_classes=5, global_pool=pool)
    assert head.classifier.in_channels == width


def test_unpooled_features_and_pre_logits():
    net = create_model("res2net50", num_classes=0, global_pool="")
    net.set_train(False)
    assert net(_x(2, 64)).shape == (2, 2048, 2, 2)
    with pytest.raises(UserError):
        create_model("res2net50", num_classes=10, global_pool="")
    with pytest.raises(UserError):
        create_model("res2net50", global_pool="median")
    clf = create_model("res2net50", num_classes=10)
    clf.set_train(False)
    x = _x(1, 32)
    pre = clf.forward_head(clf.forward_features(x), pre_logits=True)
    assert pre.shape == (1, 2048)
    logits = pre.asnumpy() @ clf.classifier.weight.asnumpy().T + clf.classifier.bias.asnumpy()
    np.testing.assert_allclose(clf(x).asnumpy(), logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,channels,reductions", [
    ("res2net50", [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),
    ("res2net50_v1b", [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),
    ("res2net_dla60", [32, 128, 256, 512, 1024], [2, 4, 8, 16, 32]),
])
def test_features_only(name, channels, reductions):
    net = create_model(name, features_only=True)
    net.set_train(False)
    maps = net(_x(1, 64))
    assert [m.shape[1] for m in maps] == channels
    assert [64 // m.shape[2] for m in maps] == reductions
    assert [f["num_chs"] for f in net.feature_info] == channels
    assert [f["reduction"] for f in net.feature_info] == reductions
    picked = create_model(name, features_only=True, out_indices=(1, 4))
    assert [f["num_chs"] for f in picked.feature_info] == [channels[1], channels[4]]
    assert len(picked(_x(1, 64))) == 2
    assert not any("classifier" in p.name for p in net.get_parameters())


def test_stem_feature_map_is_taken_before_the_max_pool():
    net = create_model("res2net50", features_only=True, out_indices=(0,))
    net.set_train(False)
    x = _x(1, 32)
    (stem,) = net(x)
    expected = net.relu(net.bn1(net.conv1(x)))
    np.testing.assert_allclose(stem.asnumpy(), expected.asnumpy(), rtol=1e-6)


def test_drop_path_rises_linearly_and_is_active_only_in_training():
    net = create_model("res2net50", num_classes=4, drop_path_rate=0.3)
    rates = [cell.drop_path.drop_prob for _, cell in net.cells_and_names() if isinstance(cell, Bottle2neck)]
    assert len(rates) == 16
    np.testing.assert_allclose(rates, np.linspace(0, 0.3, 16), rtol=1e-6)
    plain = create_model("res2net50", num_classes=4)
    ms.load_param_into_net(plain, {p.name: p for p in net.get_parameters()})
    x = _x(4, 32)
    net.set_train(False)
    plain.set_train(False)
    np.testing.assert_allclose(net(x).asnumpy(), plain(x).asnumpy(), rtol=1e-6)
    net.set_train(True)
    ms.set_seed(1)
    a = net(x).asnumpy()
    b = net(x).asnumpy()
    assert not np.allclose(a, b)  # different branches dropped on each call


def test_drop_rate_is_dropout_before_the_classifier():
    net = create_model("res2net50", num_classes=4, drop_rate=0.5)
    assert isinstance(net.head_drop, nn.Dropout)
    net.set_train(False)
    x = _x(2, 32)
    np.testing.assert_allclose(net(x).asnumpy(), net(x).asnumpy())


def test_init_kaiming_fan_out_bn_and_zero_init_last():
    net = create_model("res2net50", zero_init_last=True)
    w = net.layer3[1].conv1.weight.asnumpy()  # 1x1, fan_out = 512
    assert abs(w.std() - math.sqrt(2.0 / w.shape[0])) < 0.1 * math.sqrt(2.0 / w.shape[0])
    assert np.all(net.layer3[1].bn3.gamma.asnumpy() == 0)
    assert np.all(net.layer3[1].bn1.gamma.asnumpy() == 1)
    assert np.all(net.bn1.beta.asnumpy() == 0)
    default = create_model("res2net50")
    assert np.all(default.layer3[1].bn3.gamma.asnumpy() == 1)


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(UserError, match="res2net50"):
        create_model("res2net05")


def test_every_parameter_gets_a_nonzero_gradient():
    net = create_model("res2net50_v1b", num_classes=5)
    net.set_train(True)
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    params = net.trainable_params()

    def forward(x, y):
        return loss_fn(net(x), y)

    grad_fn = ms.value_and_grad(forward, None, params)
    x = _x(4, 64)
    y = ms.Tensor(np.array([0, 1, 2, 3], np.int32))
    _, grads = grad_fn(x, y)
    zero = [p.name for p, g in zip(params, grads) if not np.any(g.asnumpy() != 0)]
    assert not zero, f"parameters without gradient: {zero[:10]}"


def test_graph_mode_compiles_and_matches_pynative(graph_mode):
    net = create_model("res2net50", num_classes=10)
    net.set_train(False)
    x = _x(2, 32)
    graph_out = net(x).asnumpy()
    ms.set_context(mode=ms.PYNATIVE_MODE)
    np.testing.assert_allclose(graph_out, net(x).asnumpy(), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# An independent numpy computation of one Bottle2neck from the same weights
# ----------------------------------------------------------------------------------------------
def np_conv(x, w, stride=1, pad=0, groups=1):
    """Direct NCHW convolution with OIHW weights and symmetric zero padding."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    og = o // groups
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        ws = w[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    return out


def np_bn(x, bn):
    g, b = bn.gamma.asnumpy(), bn.beta.asnumpy()
    m, v = bn.moving_mean.asnumpy(), bn.moving_variance.asnumpy()
    return (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + 1e-5) * g[None, :, None, None] \
        + b[None, :, None, None]


def np_avgpool3_count_pad(x, stride):
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh = (x.shape[2] + 2 - 3) // stride + 1
    ow = (x.shape[3] + 2 - 3) // stride + 1
    out = np.zeros(x.shape[:2] + (oh, ow))
    for i in range(3):
        for j in range(3):
            out += xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
    return out / 9.0


def np_bottle2neck(blk, x, stride, stage, scale, width, groups):
    relu = lambda t: np.maximum(t, 0)  # noqa: E731
    out = relu(np_bn(np_conv(x, blk.conv1.weight.asnumpy()), blk.bn1))
    chunks = [out[:, i * width:(i + 1) * width] for i in range(scale)]
    ys = []
    for i in range(scale - 1):
        sp = chunks[i] if (i == 0 or stage) else sp + chunks[i]  # noqa: F821
        sp = relu(np_bn(np_conv(sp, blk.convs[i].weight.asnumpy(), stride, 1, groups), blk.bns[i]))
        ys.append(sp)
    ys.append(np_avgpool3_count_pad(chunks[-1], stride) if stage else chunks[-1])
    out = np_bn(np_conv(np.concatenate(ys, 1), blk.conv3.weight.asnumpy()), blk.bn3)
    if blk.down_sample is not None:
        short = np_bn(np_conv(x, blk.down_sample[0].weight.asnumpy(), stride), blk.down_sample[1])
    else:
        short = x
    return relu(out + short)


@pytest.mark.parametrize("stage,stride,groups,scale", [(True, 2, 1, 4), (False, 1, 1, 4), (True, 1, 2, 3),
                                                       (False, 1, 2, 6)])
def test_bottle2neck_matches_numpy(stage, stride, groups, scale):
    from mindcv_res2net.models.layers import batch_norm, conv2d
    rng = np.random.default_rng(3)
    planes, base_width = 16, 32  # width = floor(16 * 32 / 64) * groups = 8 * groups
    in_ch = 64 if not stage else 24
    down = None
    if stage:
        down = nn.SequentialCell([conv2d(in_ch, planes * 4, 1, stride=stride), batch_norm(planes * 4)])
    blk = Bottle2neck(in_ch, planes, stride=stride, down_sample=down, cardinality=groups, base_width=base_width,
                      scale=scale, is_stage=stage)
    randomize_bn(blk, rng)
    blk.set_train(False)
    x = rng.standard_normal((2, in_ch, 9, 9)).astype(np.float32)
    got = blk(ms.Tensor(x)).asnumpy()
    want = np_bottle2neck(blk, x.astype(np.float64), stride, stage, scale, 8 * groups, groups)
    assert got.shape == want.shape
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-5
