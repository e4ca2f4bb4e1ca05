"""TrainStep: accumulation == big batch, clipping vs numpy, EMA vs numpy, loss scale on NaN/Inf,
AMP in graph and PyNative mode, resume of the step state."""
import math

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn

from mindcv_res2net.training.ema import EMA
from mindcv_res2net.training.train_step import TrainStep, apply_amp
from mindcv_res2net.loss.losses import create_loss
from mindcv_res2net.optim.optim_factory import create_optimizer
from mindcv_res2net.optim.optim_factory import set_global_step

MODES = [pytest.param(ms.PYNATIVE_MODE, id="pynative"), pytest.param(ms.GRAPH_MODE, id="graph")]


class MLP(nn.Cell):
    """BN-free: N micro-batches of b must give exactly the update of one batch of N*b."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Dense(6, 8)
        self.act = nn.ReLU()
        self.classifier = nn.Dense(8, 3)

    def construct(self, x):
        return self.classifier(self.act(self.fc1(x)))


class ConvBN(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, has_bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Dense(4, 5)

    def construct(self, x):
        return self.classifier(self.flatten(self.pool(self.relu(self.bn(self.conv(x))))))


def copy_weights(src, dst):
    ms.load_param_into_net(dst, {p.name: ms.Parameter(Tensor(p.asnumpy().copy()), name=p.name)
                                 for p in src.get_parameters()}, strict_load=True)


def snapshot(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def mlp_data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)).astype(np.float32), rng.integers(0, 3, n).astype(np.int32)


@pytest.mark.parametrize("mode", MODES)
def test_accumulation_equals_big_batch(mode):
    ms.set_context(mode=mode)
    net_a, net_b = MLP(), MLP()
    copy_weights(net_a, net_b)
    steps = []
    for net, accum in ((net_a, 4), (net_b, 1)):
        opt = create_optimizer(net, "momentum", lr=0.1, momentum=0.9, weight_decay=1e-3)
        ts = TrainStep(net, create_loss("CE", 0.1), opt, accumulation_steps=accum)
        ts.set_train()
        steps.append((ts, opt))
    (ts_a, opt_a), (ts_b, opt_b) = steps
    start = snapshot(net_a)
    for rnd in range(2):
        x, y = mlp_data(seed=rnd)
        for i in range(4):
            loss, overflow, _ = ts_a(Tensor(x[2 * i:2 * i + 2]), Tensor(y[2 * i:2 * i + 2]))
            assert not overflow.asnumpy()
            if rnd == 0 and i < 3:  # no update before the last micro-batch
                for k, v in snapshot(net_a).items():
                    np.testing.assert_array_equal(v, start[k])
        ts_b(Tensor(x), Tensor(y))
    a, b = snapshot(net_a), snapshot(net_b)
    assert any(np.abs(a[k] - start[k]).max() > 1e-4 for k in a)
    for k in a:
        assert np.abs(a[k] - b[k]).max() < 1e-6, k
    # the LR index advances once per call (batch), not per update
    assert int(opt_a.global_step.asnumpy()[0]) == 8 and int(opt_b.global_step.asnumpy()[0]) == 2
    assert int(ts_a.accum_step.asnumpy()) == 0
    assert all(np.all(p.asnumpy() == 0) for p in ts_a.accum_grads)


def test_clip_by_global_norm_vs_numpy():
    net = nn.Dense(6, 3)
    w0, b0 = net.weight.asnumpy().astype(np.float64), net.bias.asnumpy().astype(np.float64)
    x, y = mlp_data()
    # numpy gradient of mean softmax CE of a linear layer
    logits = x @ w0.T + b0
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = (p - np.eye(3)[y]) / len(y)
    gw, gb = d.T @ x, d.sum(0)
    norm = math.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    clip = 0.25 * norm
    lr = 0.5
    opt = create_optimizer(net, "sgd", lr=lr, momentum=0.0)
    ts = TrainStep(net, create_loss("CE"), opt, clip_grad=True, clip_value=clip)
    ts.set_train()
    ts(Tensor(x), Tensor(y))
    np.testing.assert_allclose(net.weight.asnumpy(), w0 - lr * gw * clip / norm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.bias.asnumpy(), b0 - lr * gb * clip / norm, rtol=1e-5, atol=1e-6)


class _HalfReducer(nn.Cell):
    """Stands in for the all-reduce: scales every gradient by 0.5."""

    def construct(self, grads):
        return tuple([g * 0.5 for g in grads])


@pytest.mark.parametrize("mode", MODES)
def test_grad_reducer_runs_before_clipping(mode):
    ms.set_context(mode=mode)
    x, y = mlp_data()
    grads = {}
    for reducer, clip in ((None, None), (_HalfReducer(), 0.4)):
        net = nn.Dense(6, 3)
        net.weight.set_data(Tensor(np.full((3, 6), 0.1, np.float32)))
        net.bias.set_data(Tensor(np.zeros(3, np.float32)))
        opt = create_optimizer(net, "sgd", lr=1.0, momentum=0.0)
        kw = dict(clip_grad=True, clip_value=1.0) if clip is None else {}
        if clip is not None:
            norm = math.sqrt(sum((g ** 2).sum() for g in grads["plain"].values()))
            kw = dict(clip_grad=True, clip_value=clip * norm)
        ts = TrainStep(net, create_loss("CE"), opt, grad_reducer=reducer, **kw)
        ts.set_train()
        w0 = {p.name: p.asnumpy().copy() for p in opt.parameters}
        ts(Tensor(x), Tensor(y))
        grads["plain" if reducer is None else "reduced"] = {
            p.name: w0[p.name] - p.asnumpy() for p in opt.parameters}
    # the unreduced gradient has norm < 1 here, so the first run is unclipped
    norm = math.sqrt(sum((g ** 2).sum() for g in grads["plain"].values()))
    assert norm < 1.0
    # reduce (x0.5 -> norm 0.5|g|) then clip to 0.4|g|: update = 0.4 g  (clip-then-reduce would give 0.2 g)
    for k, g in grads["plain"].items():
        np.testing.assert_allclose(grads["reduced"][k], 0.4 * g, rtol=1e-4, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("mode", MODES)
def test_ema_vs_numpy_formula(mode):
    ms.set_context(mode=mode)
    net = nn.SequentialCell([nn.Dense(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Dense(5, 3)])
    decay = 0.9
    opt = create_optimizer(net, "momentum", lr=0.2)
    ts = TrainStep(net, create_loss("CE"), opt, ema=True, ema_decay=decay)
    ts.set_train()
    names = [p.name for p in net.get_parameters()]
    assert {p.name for p in ts.ema.ema_weights} == {"ema." + n for n in names}
    assert any("moving_mean" in n for n in names)  # BN statistics are averaged too
    ema = snapshot(net)
    for k in range(1, 4):
        x, y = mlp_data(seed=k)
        ts(Tensor(x), Tensor(y))
        d = decay * (1 - math.exp(-k / 2000))
        now = snapshot(net)
        ema = {n: d * ema[n] + (1 - d) * now[n] for n in names}
    got = {p.name[4:]: p.asnumpy() for p in ts.ema.ema_weights}
    for n in names:
        np.testing.assert_allclose(got[n], ema[n], rtol=1e-5, atol=1e-6, err_msg=n)
    assert float(ts.ema.updates.asnumpy()) == 3.0
    # swap in for validation and back
    live = snapshot(net)
    with ts.ema.swapped():
        for n, v in snapshot(net).items():
            np.testing.assert_allclose(v, ema[n], rtol=1e-5, atol=1e-6)
    for n, v in snapshot(net).items():
        np.testing.assert_array_equal(v, live[n])


def _poison(x, bad):
    x = x.copy()
    x[0, 0] = bad
    return x


@pytest.mark.parametrize("mode,bad", [(ms.GRAPH_MODE, np.nan), (ms.PYNATIVE_MODE, np.nan),
                                      (ms.PYNATIVE_MODE, np.inf)], ids=["graph-nan", "pynative-nan", "pynative-inf"])
def test_dynamic_loss_scale_skips_and_halves(mode, bad):
    ms.set_context(mode=mode)
    net = MLP()
    opt = create_optimizer(net, "momentum", lr=0.1, weight_decay=1e-4)
    ts = TrainStep(net, create_loss("CE"), opt, loss_scale_type="dynamic", loss_scale=1024.0,
                   scale_window=2, ema=True)
    ts.set_train()
    x, y = mlp_data()
    _, of, sc = ts(Tensor(x), Tensor(y))
    assert not of.asnumpy() and float(sc.asnumpy()) == 1024.0
    assert int(ts.good_steps.asnumpy()) == 1
    before = snapshot(ts)  # weights, moments, EMA, counters
    loss, of, sc = ts(Tensor(_poison(x, bad)), Tensor(y))
    assert bool(of.asnumpy()) and float(sc.asnumpy()) == 1024.0
    after = snapshot(ts)
    changed = {k for k in before if not np.array_equal(before[k], after[k], equal_nan=True)}
    # only the LR step counter, the scale and the good-step counter move
    assert changed == {"global_step", "scale_sense", "loss_scale_good_steps"}, changed
    assert float(ts.scale_sense.asnumpy()) == 512.0 and int(ts.good_steps.asnumpy()) == 0
    assert int(opt.global_step.asnumpy()[0]) == 2
    # two good steps at the new scale -> grows back (scale_window=2)
    for _ in range(2):
        _, of, sc = ts(Tensor(x), Tensor(y))
        assert not of.asnumpy() and float(sc.asnumpy()) == 512.0
    assert float(ts.scale_sense.asnumpy()) == 1024.0 and int(ts.good_steps.asnumpy()) == 0
    assert float(ts.ema.updates.asnumpy()) == 3.0


@pytest.mark.parametrize("mode", MODES)
def test_fixed_scale_nan_leaves_weights_and_reports(mode):
    ms.set_context(mode=mode)
    net = MLP()
    opt = create_optimizer(net, "adamw", lr=0.01, weight_decay=0.05)
    ts = TrainStep(net, create_loss("CE"), opt, loss_scale_type="fixed", loss_scale=128.0)
    ts.set_train()
    x, y = mlp_data()
    before = snapshot(ts)
    loss, of, sc = ts(Tensor(_poison(x, np.nan)), Tensor(y))
    assert bool(of.asnumpy())  # (ReLU may hide the NaN from the loss, not from the gradients)
    assert float(sc.asnumpy()) == 128.0 and float(ts.scale_sense.asnumpy()) == 128.0
    after = snapshot(ts)
    assert {k for k in before if not np.array_equal(before[k], after[k])} == {"global_step"}
    _, of, _ = ts(Tensor(x), Tensor(y))  # a finite batch afterwards updates normally
    assert not of.asnumpy()
    assert not np.array_equal(net.fc1.weight.asnumpy(), before["fc1.weight"])


@pytest.mark.parametrize("mode", MODES)
def test_skipped_step_keeps_batchnorm_statistics(mode):
    """The forward pass of a NaN batch must not leave NaN in BN moving mean / variance."""
    ms.set_context(mode=mode)
    net = ConvBN()
    opt = create_optimizer(net, "momentum", lr=0.05)
    ts = TrainStep(net, create_loss("CE"), opt, loss_scale_type="dynamic", loss_scale=16.0)
    ts.set_train()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 12, 12)).astype(np.float32)
    y = Tensor(np.array([0, 1, 2, 3], np.int32))
    ts(Tensor(x), y)
    before = snapshot(net)
    bad = x.copy()
    bad[1, :, 3:5, 3:5] = np.nan
    _, of, _ = ts(Tensor(bad), y)
    assert bool(of.asnumpy())
    for k, v in snapshot(net).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    ts(Tensor(x), y)  # a good step still moves the statistics
    assert not np.array_equal(net.bn.moving_mean.asnumpy(), before["bn.moving_mean"])


@pytest.mark.parametrize("mode", MODES)
def test_nan_micro_batch_skips_whole_accumulated_update(mode):
    ms.set_context(mode=mode)
    net = MLP()
    opt = create_optimizer(net, "momentum", lr=0.1)
    ts = TrainStep(net, create_loss("CE"), opt, loss_scale_type="dynamic", loss_scale=64.0,
                   accumulation_steps=2)
    ts.set_train()
    x, y = mlp_data()
    w = snapshot(net)
    _, of1, _ = ts(Tensor(_poison(x[:4], np.nan)), Tensor(y[:4]))
    _, of2, _ = ts(Tensor(x[4:]), Tensor(y[4:]))
    assert bool(of1.asnumpy()) and bool(of2.asnumpy())
    for k, v in snapshot(net).items():
        np.testing.assert_array_equal(v, w[k])
    assert float(ts.scale_sense.asnumpy()) == 32.0
    assert all(np.all(p.asnumpy() == 0) for p in ts.accum_grads)  # buffers cleared for the next cycle
    _, of, _ = ts(Tensor(x[:4]), Tensor(y[:4]))
    _, of, _ = ts(Tensor(x[4:]), Tensor(y[4:]))
    assert not of.asnumpy() and not np.array_equal(net.fc1.weight.asnumpy(), w["fc1.weight"])


@pytest.mark.parametrize("mode", MODES)
def test_o2_step_runs_conv_bn(mode):
    ms.set_context(mode=mode)
    net = ConvBN()
    names = sorted(p.name for p in net.get_parameters())
    opt = create_optimizer(net, "momentum", lr=0.05, weight_decay=1e-4)
    ts = TrainStep(net, create_loss("CE", 0.1), opt, amp_level="O2", loss_scale_type="dynamic",
                   loss_scale=1024.0, clip_grad=True, clip_value=5.0)
    ts.set_train()
    assert sorted(p.name for p in net.get_parameters()) == names  # AMP keeps checkpoint names
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3, 16, 16)).astype(np.float32))
    y = Tensor(np.array([0, 1, 2, 3], np.int32))
    w = snapshot(net)
    for _ in range(2):
        loss, of, _ = ts(x, y)
        assert np.isfinite(loss.asnumpy()) and loss.dtype == ms.float32 and not of.asnumpy()
    now = snapshot(net)
    for k in ("conv.weight", "bn.gamma", "classifier.weight", "bn.moving_mean"):
        assert not np.array_equal(now[k], w[k]), k
    assert now["conv.weight"].dtype == np.float32


def test_apply_amp_levels_precision():
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    net = apply_amp(ConvBN(), "O0")
    assert net.conv(x).dtype == ms.float32
    net = ConvBN()
    run = apply_amp(net, "O1")
    assert net.conv(x).dtype == ms.float32 and net.conv.cell(x).dtype == ms.float16
    assert net.conv.weight.name == "conv.weight"  # attribute access passes through the wrapper
    assert run(x).dtype == ms.float32
    net = ConvBN()
    run = apply_amp(net, "O2")
    h = net.conv(x)
    assert h.dtype == ms.float16  # conv in fp16
    assert net.bn.cell(h).dtype == ms.float32  # BN kept in fp32 ...
    assert net.bn(h).dtype == ms.float16  # ... and handed on in fp16
    assert run(x).dtype == ms.float32
    net = ConvBN()
    run = apply_amp(net, "O3")
    assert net.bn(net.conv(x)).dtype == ms.float16  # BN in fp16 too
    assert run(x).dtype == ms.float32


def test_resume_continues_exactly(tmp_path):
    """Save the whole step cell after 2 calls, reload into a fresh one: calls 3-4 are identical
    (LR index, moments, loss scale, EMA, accumulation state all restored)."""
    lr = np.linspace(0.2, 0.02, 6).astype(np.float32)

    def build():
        net = MLP()
        opt = create_optimizer(net, "momentum", lr=lr, weight_decay=1e-3)
        ts = TrainStep(net, create_loss("CE"), opt, loss_scale_type="dynamic", loss_scale=256.0,
                       scale_window=3, accumulation_steps=1, ema=True, ema_decay=0.5)
        ts.set_train()
        return net, opt, ts

    net, opt, ts = build()
    batches = [mlp_data(seed=s) for s in range(4)]
    for x, y in batches[:2]:
        ts(Tensor(x), Tensor(y))
    path = str(tmp_path / "step.ckpt")
    ms.save_checkpoint(ts, path)
    for x, y in batches[2:]:
        ts(Tensor(x), Tensor(y))
    want = snapshot(ts)

    net2, opt2, ts2 = build()
    state_names = set(ts2.state_parameters())
    assert {"scale_sense", "loss_scale_good_steps", "updates"} <= state_names
    ms.load_param_into_net(ts2, ms.load_checkpoint(path), strict_load=True)
    set_global_step(opt2, 2)
    for x, y in batches[2:]:
        ts2(Tensor(x), Tensor(y))
    got = snapshot(ts2)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_ema_instance_and_user_errors():
    from mindcv_res2net.errors import UserError

    net = MLP()
    opt = create_optimizer(net, "momentum", lr=0.1)
    ema = EMA(net, decay=0.99)
    ts = TrainStep(net, create_loss("CE"), opt, ema=ema)
    assert ts.ema is ema
    with pytest.raises(UserError):
        TrainStep(net, create_loss("CE"), opt, amp_level="O4")
    with pytest.raises(UserError):
        TrainStep(net, create_loss("CE"), opt, loss_scale_type="static")
    with pytest.raises(UserError):
        TrainStep(net, create_loss("CE"), opt, accumulation_steps=0)
