"""LR schedules vs values worked out by hand at the points that matter (warmup end, half-way
cosine, step boundaries, milestones), with MindCV's definitions."""
import math

import numpy as np
import pytest

from mindcv_res2net.scheduler.scheduler_factory import SCHEDULERS, create_scheduler
from mindcv_res2net.errors import UserError

SPE = 10  # steps per epoch


def close(a, b):
    return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))


@pytest.mark.parametrize("name", SCHEDULERS)
def test_length_dtype_and_finite(name):
    kw = dict(milestones=[3, 6]) if name == "multi_step_decay" else {}
    warm = 0 if name in ("one_cycle", "cyclic") else 2
    lr = create_scheduler(SPE, name, lr=0.5, min_lr=0.01, warmup_epochs=warm, decay_epochs=5,
                          num_epochs=12, **kw)
    assert lr.dtype == np.float32 and lr.shape == (SPE * 12,)
    assert np.all(np.isfinite(lr)) and np.all(lr >= 0)


def test_constant():
    lr = create_scheduler(SPE, "constant", lr=0.3, num_epochs=4)
    assert np.all(lr == np.float32(0.3))


def test_warmup_per_step_then_cosine():
    lr0, wf, warm, decay, mn = 1.0, 0.1, 2, 4, 0.01
    lr = create_scheduler(SPE, "cosine_decay", lr=lr0, min_lr=mn, warmup_epochs=warm,
                          warmup_factor=wf, decay_epochs=decay, num_epochs=10)
    n_warm = warm * SPE
    # linear warmup, per step: lr * (wf + (1 - wf) * i / n_warm)
    assert close(lr[0], 0.1)
    assert close(lr[5], 0.1 + 0.9 * 5 / 20)
    assert close(lr[n_warm - 1], 0.1 + 0.9 * 19 / 20)
    # first step after warmup: the full lr (cosine at t = 0)
    assert close(lr[n_warm], 1.0)
    # half-way through the cosine (t = decay / 2 epochs after warmup): (lr + min) / 2
    assert close(lr[n_warm + decay * SPE // 2], (lr0 + mn) / 2)
    # a quarter: min + (lr - min) * (1 + cos(pi/4)) / 2
    assert close(lr[n_warm + SPE], mn + (lr0 - mn) * (1 + math.cos(math.pi / 4)) / 2)
    # fractional epoch inside the cosine (per-step curve)
    t = 13 / SPE
    assert close(lr[n_warm + 13], mn + (lr0 - mn) * (1 + math.cos(math.pi * t / decay)) / 2)
    # after decay_epochs: flat at min_lr
    assert np.allclose(lr[n_warm + decay * SPE:], mn, rtol=1e-6)


def test_warmup_and_cosine_epoch_stair():
    lr = create_scheduler(SPE, "cosine_decay", lr=1.0, min_lr=0.0, warmup_epochs=2, warmup_factor=0.2,
                          decay_epochs=4, num_epochs=8, lr_epoch_stair=True)
    # warmup per epoch: epoch 0 -> 0.2, epoch 1 -> 0.2 + 0.8 / 2
    assert np.allclose(lr[:SPE], 0.2) and np.allclose(lr[SPE:2 * SPE], 0.6)
    # cosine per epoch: constant inside an epoch, value at integer t
    for e in range(4):
        want = 0.5 * (1 + math.cos(math.pi * e / 4))
        seg = lr[(2 + e) * SPE:(3 + e) * SPE]
        assert np.allclose(seg, want, atol=1e-7), (e, seg[:2], want)


def test_cosine_cycles_with_decay():
    lr = create_scheduler(SPE, "cosine_decay", lr=1.0, min_lr=0.0, decay_epochs=3, num_cycles=2,
                          cycle_decay=0.5, num_epochs=8)
    assert close(lr[0], 1.0)
    assert close(lr[3 * SPE], 0.5)  # second cycle restarts at lr * cycle_decay
    assert close(lr[3 * SPE + 15], 0.25 * (1 + math.cos(math.pi * 1.5 / 3)))
    assert np.allclose(lr[6 * SPE:], 0.0, atol=1e-7)  # after both cycles: min_lr


def test_step_decay_boundaries():
    lr = create_scheduler(SPE, "step_decay", lr=0.8, decay_epochs=3, decay_rate=0.5, num_epochs=9)
    assert close(lr[3 * SPE - 1], 0.8)
    assert close(lr[3 * SPE], 0.4)
    assert close(lr[6 * SPE - 1], 0.4)
    assert close(lr[6 * SPE], 0.2)


def test_multi_step_milestones_count_after_warmup():
    lr = create_scheduler(SPE, "multi_step_decay", lr=1.0, warmup_epochs=1, warmup_factor=0.5,
                          milestones=[2, 5], decay_rate=0.1, num_epochs=8)
    main = lr[SPE:]  # main phase starts after 1 warmup epoch
    assert np.allclose(main[:2 * SPE], 1.0)
    assert close(main[2 * SPE], 0.1) and close(main[5 * SPE - 1], 0.1)
    assert close(main[5 * SPE], 0.01) and close(main[-1], 0.01)


def test_exponential_decay_fractional_and_stair():
    lr = create_scheduler(SPE, "exponential_decay", lr=1.0, decay_rate=0.9, num_epochs=4)
    assert close(lr[15], 0.9 ** 1.5)
    lr_s = create_scheduler(SPE, "exponential_decay", lr=1.0, decay_rate=0.9, num_epochs=4,
                            lr_epoch_stair=True)
    assert close(lr_s[15], 0.9) and close(lr_s[29], 0.81)


def test_polynomial_decay():
    lr = create_scheduler(SPE, "polynomial_decay", lr=2.0, decay_rate=2.0, num_epochs=4)
    assert close(lr[0], 2.0)
    assert close(lr[20], 2.0 * 0.5 ** 2)  # half-way, power 2
    assert close(lr[35], 2.0 * (1 - 3.5 / 4) ** 2)


def test_one_cycle():
    n = SPE * 10
    lr = create_scheduler(SPE, "one_cycle", lr=1.0, min_lr=1e-4, num_epochs=10)
    up = 0.3 * n - 1
    assert close(lr[0], 1.0 / 25)
    assert close(lr[int(up)], 1.0)
    assert close(lr[-1], 1e-4)
    i = 60
    pct = (i - up) / (n - 1 - up)
    assert close(lr[i], 1e-4 + (1.0 - 1e-4) / 2 * (math.cos(math.pi * pct) + 1))


def test_user_errors():
    with pytest.raises(UserError):
        create_scheduler(SPE, "cosine_annealing")
    with pytest.raises(UserError):
        create_scheduler(SPE, "multi_step_decay", num_epochs=5)
    with pytest.raises(UserError):
        create_scheduler(SPE, "constant", warmup_epochs=6, num_epochs=5)
    with pytest.raises(UserError):
        create_scheduler(0, "constant")
    with pytest.raises(UserError):
        create_scheduler(SPE, "one_cycle", warmup_epochs=1, num_epochs=5)


def _smith_triangular(i, base, top, half):
    """Smith's triangular CLR (arXiv:1506.01186, section 3.1), half-cycle ``half`` steps."""
    cycle = np.floor(1 + i / (2 * half))
    x = np.abs(i / half - 2 * cycle + 1)
    return base + (top - base) * np.maximum(0.0, 1 - x)


@pytest.mark.parametrize("spe,epochs,cycles", [(SPE, 6, 1), (SPE, 6, 3), (7, 5, 2), (3, 3, 4)])
def test_cyclic_vs_smith_formula(spe, epochs, cycles):
    """MindCV's ``cyclic``: base min_lr, peak lr, half-cycle int(steps / num_cycles / 2) steps."""
    lr = create_scheduler(spe, "cyclic", lr=0.9, min_lr=0.1, num_epochs=epochs, num_cycles=cycles,
                          warmup_epochs=0)
    n = spe * epochs
    i = np.arange(n, dtype=np.float64)
    half = int(n / cycles / 2)
    np.testing.assert_allclose(lr, _smith_triangular(i, 0.1, 0.9, half), rtol=1e-6, atol=1e-7)
    assert lr.dtype == np.float32 and lr.shape == (n,)
    assert close(lr[0], 0.1) and close(lr[half], 0.9)
    if 2 * half < n:  # a second cycle starts at min_lr
        assert close(lr[2 * half], 0.1)


def test_cyclic_hand_values():
    # 2 epochs of 5 steps, 1 cycle: up 0.1 -> 1.0 in 5 steps, down in 5
    lr = create_scheduler(5, "cyclic", lr=1.0, min_lr=0.1, num_epochs=2, warmup_epochs=0)
    want = [0.1, 0.28, 0.46, 0.64, 0.82, 1.0, 0.82, 0.64, 0.46, 0.28]
    np.testing.assert_allclose(lr, want, rtol=1e-6)


def test_cyclic_refuses_warmup_stair_and_too_many_cycles():
    for kw in (dict(warmup_epochs=1), dict(lr_epoch_stair=True), dict(num_cycles=20), dict(num_cycles=0)):
        with pytest.raises(UserError):
            create_scheduler(SPE, "cyclic", num_epochs=3, **dict(dict(warmup_epochs=0), **kw))


def test_cyclic_vs_mindcv():
    mindcv_sched = pytest.importorskip("mindcv.scheduler.scheduler_factory")
    for spe, epochs, cycles in ((SPE, 6, 1), (7, 5, 2), (3, 3, 4)):
        ref = mindcv_sched.create_scheduler(spe, "cyclic", lr=0.9, min_lr=0.1, warmup_epochs=0,
                                            num_epochs=epochs, num_cycles=cycles)
        ours = create_scheduler(spe, "cyclic", lr=0.9, min_lr=0.1, warmup_epochs=0, num_epochs=epochs,
                                num_cycles=cycles)
        np.testing.assert_allclose(ours, np.asarray(ref, np.float32), rtol=1e-6, atol=1e-7)
