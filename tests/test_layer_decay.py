"""layer_decay: per-parameter lr = schedule * layer_decay ** (5 - layer id) over stem / stages /
head, weight decay by weight_decay_filter, every optimizer, resume. Expected values by hand."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn

from mindcv_res2net.optim.optim_factory import (
    OPTIMIZERS,
    create_optimizer,
    get_global_step,
    is_schedule_parameter,
    load_optimizer_state,
    optimizer_state,
    set_global_step,
)
from mindcv_res2net.optim.param_groups import layer_id
from mindcv_res2net.errors import UserError
from mindcv_res2net.models.factory import create_model

LR = np.array([0.4, 0.3, 0.2, 0.1, 0.05, 0.025], np.float32)


@pytest.fixture(scope="module")
def v1b():
    """res2net50_v1b (deep stem: conv1.0 / conv1.1 / ... / conv1.6, then bn1), 3 classes."""
    return create_model("res2net50_v1b", num_classes=3)


def _lr_by_name(opt, step):
    set_global_step(opt, step)
    lrs = opt.get_lr()  # what construct uses: one lr per parameter, in parameter order
    set_global_step(opt, 0)
    return {p.name: float(lr.asnumpy()) for p, lr in zip(opt.parameters, lrs)}


# hand-made table: parameter -> (layer id, decayed with norm_and_bias)
NAMED = {
    "conv1.0.weight": (0, True), "conv1.1.gamma": (0, False), "conv1.6.weight": (0, True),
    "bn1.beta": (0, False),
    "layer1.0.conv1.weight": (1, True), "layer1.0.bn1.gamma": (1, False),
    "layer2.1.convs.0.weight": (2, True),
    "layer3.0.down_sample.1.weight": (3, True), "layer3.0.down_sample.2.gamma": (3, False),
    "layer4.2.conv3.weight": (4, True), "layer4.2.bn3.beta": (4, False),
    "classifier.weight": (5, True), "classifier.bias": (5, False),
}


@pytest.mark.parametrize("filt", ["disable", "norm_and_bias", "auto"])
def test_per_parameter_lr_and_weight_decay(v1b, filt):
    opt = create_optimizer(v1b, "momentum", lr=LR, weight_decay=0.05, weight_decay_filter=filt, layer_decay=0.5)
    params = {p.name: p for p in opt.parameters}
    assert len(params) == len(v1b.trainable_params())
    missing = set(NAMED) - set(params)
    assert not missing, missing
    for step in (0, 2, 5):
        lrs = _lr_by_name(opt, step)
        for name, (lid, _) in NAMED.items():
            want = float(LR[step]) * 0.5 ** (5 - lid)
            assert abs(lrs[name] - want) <= 1e-7 * want, (name, step, lrs[name], want)
        # every parameter got one of the six layer lrs
        allowed = {round(float(LR[step]) * 0.5 ** k, 12) for k in range(6)}
        assert all(min(abs(v - a) for a in allowed) <= 1e-7 for v in lrs.values())
    wd = {p.name: float(w.asnumpy()) if f else 0.0
          for p, w, f in zip(opt.parameters, opt.weight_decay, opt.decay_flags)}
    for name, (_, decayed_nb) in NAMED.items():
        decayed = {"disable": True, "norm_and_bias": decayed_nb, "auto": decayed_nb}[filt]
        assert abs(wd[name] - (0.05 if decayed else 0.0)) < 1e-9, (name, wd[name])
    if filt == "disable":  # BN gamma and biases decayed too
        assert all(abs(v - 0.05) < 1e-9 for v in wd.values())


def test_float_lr_and_no_weight_decay(v1b):
    opt = create_optimizer(v1b, "adamw", lr=0.1, layer_decay=0.75)
    lrs = _lr_by_name(opt, 0)
    assert abs(lrs["conv1.0.weight"] - 0.1 * 0.75 ** 5) < 1e-8
    assert abs(lrs["layer3.0.conv1.weight"] - 0.1 * 0.75 ** 2) < 1e-8
    assert abs(lrs["classifier.weight"] - 0.1) < 1e-8
    assert not any(opt.decay_flags)


def test_one_sgd_step_matches_numpy():
    """Real update (nn.SGD, momentum 0, L2 decay): p - lr_p * (g + wd_p * p) at step 3 of the array.
    Only the parameters of the table train (the rest frozen): the same groups, a 10x faster compile."""
    rng = np.random.default_rng(0)
    net = create_model("res2net50_v1b", num_classes=3)
    for p in net.trainable_params():
        p.requires_grad = p.name in NAMED
    opt = create_optimizer(net, "sgd", lr=LR, momentum=0.0, weight_decay=0.1,
                           weight_decay_filter="norm_and_bias", layer_decay=0.5)
    assert sorted(p.name for p in opt.parameters) == sorted(NAMED)
    set_global_step(opt, 3)
    before = {p.name: p.asnumpy().astype(np.float64) for p in opt.parameters}
    grads = {p.name: rng.standard_normal(p.shape).astype(np.float32) for p in opt.parameters}
    opt(tuple(Tensor(grads[p.name]) for p in opt.parameters))
    after = {p.name: p.asnumpy() for p in opt.parameters}
    for name, (lid, decayed) in NAMED.items():
        lr = float(LR[3]) * 0.5 ** (5 - lid)
        wd = 0.1 if decayed else 0.0
        want = before[name] - lr * (grads[name] + wd * before[name])
        np.testing.assert_allclose(after[name], want, rtol=1e-5, atol=1e-7, err_msg=name)
    assert get_global_step(opt) == 4


class ZooLike(nn.Cell):
    """The zoo's top-level names on a tiny net (fast enough for every optimizer)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, has_bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.layer1 = nn.Dense(4, 4)
        self.layer2 = nn.Dense(4, 4)
        self.layer3 = nn.Dense(4, 4)
        self.layer4 = nn.Dense(4, 4)
        self.classifier = nn.Dense(4, 3)

    def construct(self, x):
        x = self.bn1(self.conv1(x)).mean((2, 3))
        return self.classifier(self.layer4(self.layer3(self.layer2(self.layer1(x)))))


def _run(name, init, grads, **kw):
    ms.set_seed(1)
    net = ZooLike()
    for p in net.trainable_params():
        p.set_data(Tensor(init[p.name]))
    opt = create_optimizer(net, name, weight_decay=0.01, weight_decay_filter="norm_and_bias", **kw)
    for g in grads:
        opt(tuple(Tensor(g[p.name]) for p in opt.parameters))
    return {p.name: p.asnumpy() for p in net.trainable_params()}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_honours_the_layer_lr(name):
    """Two steps with layer_decay 0.5 == two steps without it and lr * 0.5 ** (5 - id), per layer."""
    rng = np.random.default_rng(3)
    net = ZooLike()
    init = {p.name: rng.standard_normal(p.shape).astype(np.float32) for p in net.trainable_params()}
    grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in init.items()} for _ in range(2)]
    lr = np.array([0.02, 0.01, 0.01], np.float32)
    got = _run(name, init, grads, lr=lr, layer_decay=0.5)
    for lid, prefix in ((0, "conv1."), (0, "bn1."), (3, "layer3."), (5, "classifier.")):
        ref = _run(name, init, grads, lr=lr * np.float32(0.5 ** (5 - lid)))
        names = [n for n in init if n.startswith(prefix)]
        assert names
        for n in names:
            assert not np.allclose(got[n], init[n]), n  # it moved
            np.testing.assert_allclose(got[n], ref[n], rtol=1e-5, atol=1e-7, err_msg=f"{name} {n}")


def test_resume_with_layer_decay(tmp_path):
    rng = np.random.default_rng(4)
    net = ZooLike()
    init = {p.name: rng.standard_normal(p.shape).astype(np.float32) for p in net.trainable_params()}
    grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in init.items()} for _ in range(3)]
    straight = _run("adamw", init, grads, lr=LR, layer_decay=0.6)

    ms.set_seed(1)
    net_a = ZooLike()
    for p in net_a.trainable_params():
        p.set_data(Tensor(init[p.name]))
    opt_a = create_optimizer(net_a, "adamw", lr=LR, weight_decay=0.01, weight_decay_filter="norm_and_bias",
                             layer_decay=0.6)
    for g in grads[:2]:
        opt_a(tuple(Tensor(g[p.name]) for p in opt_a.parameters))
    state = optimizer_state(opt_a)
    assert not any(n.startswith("learning_rate") for n in state)  # the schedule is not state
    assert any(n.startswith("learning_rate_group_") for n in optimizer_state(opt_a, include_lr=True))
    path = str(tmp_path / "opt.ckpt")
    ms.save_checkpoint([{"name": n, "data": p} for n, p in state.items()]
                       + [{"name": p.name, "data": p} for p in net_a.trainable_params()], path)

    net_b = ZooLike()
    opt_b = create_optimizer(net_b, "adamw", lr=LR, weight_decay=0.01, weight_decay_filter="norm_and_bias",
                             layer_decay=0.6)
    loaded = ms.load_checkpoint(path)
    ms.load_param_into_net(net_b, {k: v for k, v in loaded.items() if k in init})
    assert load_optimizer_state(opt_b, loaded) == []
    assert get_global_step(opt_b) == 2
    opt_b(tuple(Tensor(grads[2][p.name]) for p in opt_b.parameters))
    for n in init:
        np.testing.assert_allclose(net_b.parameters_dict()[n].asnumpy(), straight[n], rtol=1e-6, atol=1e-7,
                                   err_msg=n)


def test_is_schedule_parameter():
    for n in ("learning_rate", "learning_rate_group_0", "learning_rate_group_12", "optimizer.learning_rate"):
        assert is_schedule_parameter(n), n
    for n in ("global_step", "learning_rate_x", "adam_m.learning_rate_group_0.w", "moments.conv1.weight"):
        assert not is_schedule_parameter(n), n


def test_dla_layer_ids():
    net = create_model("res2net_dla60", num_classes=3)
    ids = {n: layer_id(n) for n, p in net.parameters_and_names() if p.requires_grad}
    assert ids["base_layer.0.weight"] == 0 and ids["level1.1.gamma"] == 0
    assert {ids[n] for n in ids if n.startswith("level2.")} == {1}
    assert {ids[n] for n in ids if n.startswith("level5.")} == {4}
    assert ids["classifier.weight"] == 5
    assert set(ids.values()) == set(range(6))
    opt = create_optimizer(net, "sgd", lr=0.8, layer_decay=0.5)
    lrs = _lr_by_name(opt, 0)
    assert abs(lrs["level0.0.weight"] - 0.8 / 32) < 1e-8
    assert abs(lrs["level3.tree1.tree1.conv1.weight"] - 0.8 / 8) < 1e-8


def test_layer_decay_user_errors(v1b):
    class Other(nn.Cell):
        def __init__(self):
            super().__init__()
            self.features = nn.Dense(3, 2)

        def construct(self, x):
            return self.features(x)

    with pytest.raises(UserError, match="features.weight"):
        create_optimizer(Other(), "sgd", lr=0.1, layer_decay=0.5)
    for bad in (0.0, -0.5, 1.5, "x"):
        with pytest.raises(UserError, match="layer_decay"):
            create_optimizer(v1b, "sgd", lr=0.1, layer_decay=bad)
    groups = [{"params": v1b.trainable_params()}]
    with pytest.raises(UserError, match="layer_decay"):
        create_optimizer(groups, "sgd", lr=0.1, layer_decay=0.5)
