"""create_optimizer: weight-decay filter, LR arrays + global_step, AdamW / Lion / Lamb vs numpy,
state save / restore."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn

from mindcv_res2net.optim.optim_factory import (
    OPTIMIZERS,
    create_optimizer,
    get_global_step,
    load_optimizer_state,
    optimizer_state,
    set_global_step,
    split_weight_decay,
)
from mindcv_res2net.errors import UserError


class Tiny(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, has_bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.classifier = nn.Dense(3, 4)

    def construct(self, x):
        x = self.bn(self.conv(x)).mean((2, 3))
        return self.classifier(x)


def values(params):
    return {p.name: p.asnumpy().copy() for p in params}


def test_weight_decay_filter_picks_params():
    net = Tiny()
    params = net.trainable_params()
    names = lambda ps: sorted(p.name for p in ps)  # noqa: E731
    d, nd = split_weight_decay(params, "disable")
    assert names(d) == names(params) and nd == []
    d, nd = split_weight_decay(params, "norm_and_bias")
    assert names(d) == ["classifier.weight", "conv.weight"]
    assert names(nd) == ["bn.beta", "bn.gamma", "classifier.bias"]
    d, nd = split_weight_decay(params, "auto")
    assert names(nd) == ["bn.beta", "bn.gamma", "classifier.bias"]
    with pytest.raises(UserError):
        split_weight_decay(params, "everything")


@pytest.mark.parametrize("filt", ["disable", "norm_and_bias"])
def test_weight_decay_applied_only_where_filter_says(filt):
    """Zero gradients, plain SGD: p <- p - lr * wd * p exactly on the decayed params."""
    net = Tiny()
    lr, wd = 0.5, 0.1
    opt = create_optimizer(net, "momentum", lr=lr, momentum=0.0, weight_decay=wd, weight_decay_filter=filt)
    before = values(opt.parameters)
    opt(tuple(Tensor(np.zeros(p.shape, np.float32)) for p in opt.parameters))
    after = values(opt.parameters)
    decayed = {"disable": set(before), "norm_and_bias": {"conv.weight", "classifier.weight"}}[filt]
    for name in before:
        factor = 1 - lr * wd if name in decayed else 1.0
        np.testing.assert_allclose(after[name], before[name] * factor, rtol=1e-6, atol=1e-7, err_msg=name)
    # "disable" really decays BN gamma (MindSpore's own flat-list filter would skip it)
    if filt == "disable":
        assert np.allclose(after["bn.gamma"], 1 - lr * wd)


def test_lr_array_follows_global_step_and_resume():
    net = nn.Dense(3, 2)
    sched = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], np.float32)
    opt = create_optimizer(net, "sgd", lr=sched, momentum=0.0)
    g = tuple(Tensor(np.ones(p.shape, np.float32)) for p in opt.parameters)
    w = net.weight.asnumpy().copy()
    opt(g)
    np.testing.assert_allclose(net.weight.asnumpy(), w - 0.1, atol=1e-6)
    opt(g)
    np.testing.assert_allclose(net.weight.asnumpy(), w - 0.3, atol=1e-6)
    assert get_global_step(opt) == 2
    set_global_step(opt, 4)  # resume at step 4: the next update uses lr[4]
    w = net.weight.asnumpy().copy()
    opt(g)
    np.testing.assert_allclose(net.weight.asnumpy(), w - 0.5, atol=1e-6)
    assert get_global_step(opt) == 5


def _np_adamw(p, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        upd = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + wd * p
        p = p - lr * upd
    return p


def _np_lion(p, grads, lr, wd, b1=0.9, b2=0.99):
    m = np.zeros_like(p)
    for g in grads:
        p = p - lr * (np.sign(b1 * m + (1 - b1) * g) + wd * p)
        m = b2 * m + (1 - b2) * g
    return p


def _np_lamb(p, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        upd = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + wd * p
        trust = np.linalg.norm(p) / np.linalg.norm(upd)
        p = p - lr * trust * upd
    return p


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
@pytest.mark.parametrize("name,ref", [("adamw", _np_adamw), ("lion", _np_lion), ("lamb", _np_lamb)])
def test_custom_optimizers_vs_numpy(name, ref, mode):
    ms.set_context(mode=mode)
    rng = np.random.default_rng(0)
    net = nn.Dense(4, 3)  # weight: decayed; bias: not decayed with norm_and_bias
    lr, wd = 0.01, 0.05
    w0, b0 = net.weight.asnumpy().copy(), net.bias.asnumpy().copy()
    opt = create_optimizer(net, name, lr=lr, weight_decay=wd, weight_decay_filter="norm_and_bias")
    gw = [rng.standard_normal(w0.shape).astype(np.float32) for _ in range(3)]
    gb = [rng.standard_normal(b0.shape).astype(np.float32) for _ in range(3)]
    order = [p.name for p in opt.parameters]
    for i in range(3):
        by_name = {"weight": gw[i], "bias": gb[i]}
        opt(tuple(Tensor(by_name[n]) for n in order))
    np.testing.assert_allclose(net.weight.asnumpy(), ref(w0.astype(np.float64), gw, lr, wd), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(net.bias.asnumpy(), ref(b0.astype(np.float64), gb, lr, 0.0), rtol=2e-5, atol=2e-6)


def test_optimizer_loss_scale_means_scaled_gradients():
    """An optimizer built with loss_scale S given S * g does the same update as S=1 given g."""
    rng = np.random.default_rng(3)
    g = rng.standard_normal((3, 4)).astype(np.float32)
    for name in ("momentum", "adamw"):
        outs = []
        for scale in (1.0, 8.0):
            net = nn.Dense(4, 3, has_bias=False)
            net.weight.set_data(Tensor(np.ones((3, 4), np.float32)))
            opt = create_optimizer(net, name, lr=0.1, weight_decay=0.01, loss_scale=scale)
            opt((Tensor(g * scale),))
            outs.append(net.weight.asnumpy())
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_steps_and_has_state(name):
    net = Tiny()
    opt = create_optimizer(net, name, lr=np.full(5, 0.01, np.float32), weight_decay=1e-4,
                           weight_decay_filter="auto", nesterov=(name == "sgd"))
    w = net.conv.weight.asnumpy().copy()
    opt(tuple(Tensor(np.ones(p.shape, np.float32)) for p in opt.parameters))
    assert not np.allclose(net.conv.weight.asnumpy(), w)
    state = optimizer_state(opt)
    assert "global_step" in state and "learning_rate" not in state
    assert not any(n in state for n in ("conv.weight", "bn.gamma"))
    assert len(state) > 1


def test_state_roundtrip_through_checkpoint(tmp_path):
    def build():
        net = Tiny()
        return net, create_optimizer(net, "momentum", lr=np.linspace(0.1, 0.01, 8).astype(np.float32),
                                     weight_decay=1e-4)

    net, opt = build()
    rng = np.random.default_rng(0)
    for _ in range(2):
        opt(tuple(Tensor(rng.standard_normal(p.shape).astype(np.float32)) for p in opt.parameters))
    path = str(tmp_path / "opt.ckpt")
    ms.save_checkpoint([{"name": n, "data": p} for n, p in optimizer_state(opt).items()], path)

    net2, opt2 = build()
    missing = load_optimizer_state(opt2, ms.load_checkpoint(path))
    assert missing == []
    assert get_global_step(opt2) == 2
    for n, p in optimizer_state(opt).items():
        np.testing.assert_array_equal(optimizer_state(opt2)[n].asnumpy(), p.asnumpy(), err_msg=n)
    assert np.abs(optimizer_state(opt2)["moments.conv.weight"].asnumpy()).sum() > 0

    # a checkpoint from another optimizer is refused
    net3 = Tiny()
    adam = create_optimizer(net3, "adam", lr=0.1)
    with pytest.raises(UserError):
        load_optimizer_state(adam, ms.load_checkpoint(path))


def test_optimizer_user_errors():
    net = Tiny()
    with pytest.raises(UserError):
        create_optimizer(net, "adagradx")
    with pytest.raises(UserError):
        create_optimizer(net, "momentum", weight_decay_filter="bias_only")
    with pytest.raises(UserError):
        create_optimizer(net, "momentum", lr=[0.1, -0.1])


def _np_adamw_state(p, grads, lrs, wd, b1=0.9, b2=0.999, eps=1e-8):
    """``_np_adamw`` with a per-step lr, returning (p, m, v) in float64."""
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * ((m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + wd * p)
    return p, m, v


def _adamw_pair(layout, fused):
    """A Tiny net and its AdamW: ``flat`` (no decay: one lr and wd), ``groups`` (create_optimizer:
    decay groups, per-step lr array) or ``group_lr`` (groups with their own lr and decay)."""
    from mindcv_res2net.optim.optim_factory import AdamW
    ms.set_seed(0)
    net = Tiny()
    params = net.trainable_params()
    lrs = np.array([0.01, 0.02, 0.015, 0.005, 0.01, 0.01], np.float32)
    if layout == "flat":
        return net, AdamW(params, learning_rate=0.01, fused=fused), {p.name: (np.full(5, 0.01), 0.0) for p in params}
    if layout == "groups":
        opt = create_optimizer(net, "adamw", lr=lrs, weight_decay=0.05, weight_decay_filter="norm_and_bias",
                               loss_scale=8.0)
        opt.fused = fused
        decayed = {"conv.weight", "classifier.weight"}
        return net, opt, {p.name: (lrs[:5], 0.05 if p.name in decayed else 0.0) for p in params}
    decay = [p for p in params if p.name in ("conv.weight", "classifier.weight")]
    rest = [p for p in params if p.name not in ("conv.weight", "classifier.weight")]
    groups = [{"params": decay, "weight_decay": 0.1, "lr": 0.02}, {"params": rest, "weight_decay": 0.0, "lr": 0.005},
              {"order_params": params}]
    expect = {p.name: (np.full(5, 0.02), 0.1) for p in decay}
    expect.update({p.name: (np.full(5, 0.005), 0.0) for p in rest})
    return net, AdamW(groups, fused=fused), expect


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
@pytest.mark.parametrize("layout", ["flat", "groups", "group_lr"])
def test_fused_adamw_equals_the_elementwise_formula(layout, mode):
    """5 steps of the fused AdamWeightDecay path (bias corrections folded into lr / eps / decay) give
    the element-wise implementation's (MindCV's formula) weights and moments to 1e-6 relative, and
    numpy's float64 re-computation as closely as the element-wise one does."""
    ms.set_context(mode=mode)
    rng = np.random.default_rng(7)
    nets = {}
    for fused in (False, True):
        net, opt, expect = _adamw_pair(layout, fused)
        assert opt.fused is fused
        nets[fused] = (net, opt)
    start = {p.name: p.asnumpy().astype(np.float64) for p in nets[True][1].parameters}
    scale = 8.0 if layout == "groups" else 1.0  # that optimizer's gradients are still loss-scaled
    steps = []
    for step in range(5):
        grads = {}
        for p in nets[True][1].parameters:
            g = rng.standard_normal(p.shape).astype(np.float32) * [1.0, 1e-3, 0.5, 1e-6, 2.0][step]
            if step == 3:
                g.reshape(-1)[: g.size // 2] = 0.0  # zero gradients: v ~ 0 where eps dominates
            grads[p.name] = g
        steps.append(grads)
        for fused in (False, True):
            opt = nets[fused][1]
            opt(tuple(Tensor(grads[p.name] * scale) for p in opt.parameters))
    old_opt, new_opt = nets[False][1], nets[True][1]
    for i, p in enumerate(new_opt.parameters):
        new = (p.asnumpy(), new_opt.moments1[i].asnumpy(), new_opt.moments2[i].asnumpy())
        old = (old_opt.parameters[i].asnumpy(), old_opt.moments1[i].asnumpy(), old_opt.moments2[i].asnumpy())
        for what, a, b in zip(("weights", "m", "v"), new, old):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max(), err_msg=f"{p.name} {what}")
        lrs, wd = expect[p.name]
        ref = _np_adamw_state(start[p.name], [s[p.name].astype(np.float64) for s in steps], lrs, wd)
        for what, a, b, r in zip(("weights", "m", "v"), new, old, ref):
            fused_err, old_err = np.abs(a - r).max(), np.abs(b - r).max()
            assert fused_err <= 2 * old_err + 1e-6 * np.abs(r).max(), (p.name, what, fused_err, old_err)
    for name in ("beta1_power", "beta2_power", "global_step"):
        assert getattr(new_opt, name).asnumpy() == getattr(old_opt, name).asnumpy()


def test_fused_adamw_falls_back_where_the_kernel_cannot_run():
    from mindcv_res2net.optim.optim_factory import AdamW
    net = Tiny()
    assert create_optimizer(net, "adamw", lr=0.01).fused
    assert not create_optimizer(net, "adamw", lr=0.01, adam_eps=0.0).fused  # the kernel needs eps > 0
    half = ms.Parameter(Tensor(np.zeros(3, np.float16)), name="half")
    assert not AdamW([half], learning_rate=0.01).fused  # float16 weights: the element-wise formula


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
def test_adamw_vs_mindcv_adamw(mode):
    """MindCV 0.3's AdamW: the element-wise formula gives its numbers bit for bit, the fused kernel
    to float32 rounding (1e-6 relative), over 5 steps of a per-step lr schedule with decay."""
    mindcv_adamw = pytest.importorskip("mindcv.optim.adamw")
    from mindcv_res2net.optim.optim_factory import AdamW
    ms.set_context(mode=mode)
    w0 = np.random.default_rng(0).standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.1
    lrs = np.array([0.01, 0.02, 0.015, 0.005, 0.01, 0.01], np.float32)
    out = {}
    for name in ("mindcv", "elementwise", "fused"):
        p = ms.Parameter(Tensor(w0.copy()), name="w")
        if name == "mindcv":
            opt = mindcv_adamw.AdamW([p], learning_rate=Tensor(lrs), weight_decay=0.05, eps=1e-8)
        else:
            opt = AdamW([p], learning_rate=Tensor(lrs), weight_decay=0.05, eps=1e-8, fused=name == "fused")
        rng = np.random.default_rng(1)
        for s in (1.0, 1e-3, 0.5, 1e-6, 2.0):
            opt((Tensor(rng.standard_normal(w0.shape).astype(np.float32) * s),))
        out[name] = p.asnumpy()
    np.testing.assert_array_equal(out["elementwise"], out["mindcv"])
    np.testing.assert_allclose(out["fused"], out["mindcv"], rtol=1e-6, atol=1e-6 * np.abs(out["mindcv"]).max())


# ---------------------------------------------------------------------------- adagrad, nadam
def _np_adagrad(p, grads, lrs, wd, accum0=0.1):
    """MindCV's adagrad (nn.Adagrad, accum 0.1, L2 decay added to the gradient), float64."""
    acc = np.full_like(p, accum0)
    for g, lr in zip(grads, lrs):
        g = g + wd * p
        acc = acc + g * g
        p = p - lr * g / np.sqrt(acc)
    return p


def _np_nadam(p, grads, lrs, wd, b1=0.9, b2=0.999, eps=1e-8, sd=4e-3):
    """mindcv/optim/nadam.py's formula (Dozat's NAdam) with t = 1, 2, ..., float64."""
    mu = lambda t: b1 * (1 - 0.5 * 0.96 ** (t * sd))  # noqa: E731
    m, v, prod = np.zeros_like(p), np.zeros_like(p), 1.0
    for t, (g, lr) in enumerate(zip(grads, lrs), 1):
        g = g + wd * p
        prod *= mu(t)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_bar = mu(t + 1) * m / (1 - prod * mu(t + 1)) + (1 - mu(t)) * g / (1 - prod)
        p = p - lr * m_bar / (eps + np.sqrt(v / (1 - b2 ** t)))
    return p


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
@pytest.mark.parametrize("name,ref", [("adagrad", _np_adagrad), ("nadam", _np_nadam)])
@pytest.mark.parametrize("scale", [1.0, 16.0])
def test_adagrad_nadam_vs_numpy(name, ref, mode, scale):
    """5 steps of a per-step lr with decay on the weight only (norm_and_bias), gradients still
    multiplied by the optimizer's loss_scale: numpy's float64 formula to float32 rounding."""
    ms.set_context(mode=mode)
    rng = np.random.default_rng(11)
    net = nn.Dense(4, 3)
    wd = 0.05
    lrs = np.array([0.05, 0.02, 0.1, 0.01, 0.03, 0.03], np.float32)
    w0, b0 = net.weight.asnumpy().astype(np.float64), net.bias.asnumpy().astype(np.float64)
    opt = create_optimizer(net, name, lr=lrs, weight_decay=wd, weight_decay_filter="norm_and_bias",
                           loss_scale=scale, eps=0.5)  # eps: RMSProp's only, no effect here (MindCV)
    gw = [rng.standard_normal(w0.shape) * s for s in (1.0, 0.1, 2.0, 1.0, 0.5)]
    gb = [rng.standard_normal(b0.shape) * s for s in (1.0, 0.1, 2.0, 1.0, 0.5)]
    order = [p.name for p in opt.parameters]
    for i in range(5):
        by_name = {"weight": gw[i], "bias": gb[i]}
        opt(tuple(Tensor((by_name[n] * scale).astype(np.float32)) for n in order))
    np.testing.assert_allclose(net.weight.asnumpy(), ref(w0, gw, lrs[:5], wd), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.bias.asnumpy(), ref(b0, gb, lrs[:5], 0.0), rtol=1e-5, atol=1e-6)
    assert get_global_step(opt) == 5


@pytest.mark.parametrize("name", ["adagrad", "nadam"])
def test_adagrad_nadam_resume_equals_uninterrupted(name):
    """3 steps straight == 2 steps, state through a checkpoint into a fresh optimizer, 1 step."""
    rng = np.random.default_rng(5)
    lrs = np.linspace(0.05, 0.01, 6).astype(np.float32)
    grads = [tuple(rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (3,))) for _ in range(3)]
    w0 = rng.standard_normal((3, 4)).astype(np.float32)

    def build():
        net = nn.Dense(4, 3)
        net.weight.set_data(Tensor(w0))
        net.bias.set_data(Tensor(np.zeros(3, np.float32)))
        return net, create_optimizer(net, name, lr=lrs, weight_decay=0.01)

    net, opt = build()
    for g in grads:
        opt(tuple(Tensor(x) for x in g))
    net_a, opt_a = build()
    for g in grads[:2]:
        opt_a(tuple(Tensor(x) for x in g))
    state = {n: Tensor(p.asnumpy()) for n, p in optimizer_state(opt_a).items()}
    net_b, opt_b = build()
    net_b.weight.set_data(Tensor(net_a.weight.asnumpy()))
    net_b.bias.set_data(Tensor(net_a.bias.asnumpy()))
    assert load_optimizer_state(opt_b, state) == []
    opt_b(tuple(Tensor(x) for x in grads[2]))
    np.testing.assert_array_equal(net_b.weight.asnumpy(), net.weight.asnumpy())
    assert get_global_step(opt_b) == 3


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
def test_nadam_and_adagrad_vs_mindcv(mode):
    """MindCV 0.3's own optimizers on the same inputs. Adagrad: the same kernel, equal. NAdam:
    MindCV reads its step counter after the lr lookup has advanced it (t = 2, 3, ... with an lr
    schedule), the formula here counts t = 1, 2, ...: the same weights to 1e-4 relative change."""
    mindcv_nadam = pytest.importorskip("mindcv.optim.nadam")
    mindcv_factory = pytest.importorskip("mindcv.optim.optim_factory")
    ms.set_context(mode=mode)
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((6, 5)).astype(np.float32)
    grads = [rng.standard_normal(w0.shape).astype(np.float32) for _ in range(5)]
    lrs = np.array([0.01, 0.02, 0.015, 0.005, 0.01, 0.01], np.float32)
    out = {}
    for who in ("mindcv_nadam", "nadam", "mindcv_adagrad", "adagrad"):
        p = ms.Parameter(Tensor(w0.copy()), name="w")
        if who == "mindcv_nadam":
            opt = mindcv_nadam.NAdam([p], learning_rate=Tensor(lrs), weight_decay=0.05)
        elif who == "mindcv_adagrad":
            opt = mindcv_factory.create_optimizer([p], opt="adagrad", lr=Tensor(lrs), weight_decay=0.05)
        else:
            opt = create_optimizer([p], who, lr=lrs, weight_decay=0.05)
        for g in grads:
            opt((Tensor(g),))
        out[who] = p.asnumpy()
    np.testing.assert_array_equal(out["adagrad"], out["mindcv_adagrad"])
    step = np.abs(out["nadam"] - w0).max()
    assert np.abs(out["nadam"] - out["mindcv_nadam"]).max() < 1e-3 * step
