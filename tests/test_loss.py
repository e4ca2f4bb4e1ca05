"""CE / BCE with label smoothing, soft labels and both reductions vs numpy (JSD: test_aug_splits.py)."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor

from mindcv_res2net.loss.losses import create_loss
from mindcv_res2net.errors import UserError

B, C = 6, 5


def np_log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_ce(x, y_rows, eps):
    y = y_rows * (1 - eps) + eps / x.shape[-1]
    return -(y * np_log_softmax(x)).sum(-1)


def np_bce(x, y_rows, eps):
    x = x.astype(np.float64)
    y = y_rows * (1 - eps) + eps / x.shape[-1]
    p = 1 / (1 + np.exp(-x))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((B, C)) * 2).astype(np.float32)
    y = rng.integers(0, C, B).astype(np.int32)
    soft = rng.random((B, C)).astype(np.float32)
    soft /= soft.sum(-1, keepdims=True)
    return x, y, soft


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_ce_int_and_soft_labels(data, eps, mode):
    ms.set_context(mode=mode)
    x, y, soft = data
    loss = create_loss("CE", label_smoothing=eps)
    got_int = loss(Tensor(x), Tensor(y)).asnumpy()
    want_int = np_ce(x, np.eye(C)[y], eps).mean()
    assert abs(got_int - want_int) < 1e-5
    got_soft = loss(Tensor(x), Tensor(soft)).asnumpy()
    want_soft = np_ce(x, soft, eps).mean()
    assert abs(got_soft - want_soft) < 1e-5
    # one-hot float labels == int labels
    assert abs(loss(Tensor(x), Tensor(np.eye(C, dtype=np.float32)[y])).asnumpy() - got_int) < 1e-6


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
@pytest.mark.parametrize("name,ref", [("CE", np_ce), ("BCE", np_bce)])
def test_reduction_mean_and_sum(data, mode, name, ref):
    ms.set_context(mode=mode)
    x, y, soft = data
    for labels, rows in ((y, np.eye(C)[y]), (soft, soft)):
        per = ref(x, rows, 0.1)  # CE: per sample [B]; BCE: per element [B, C]
        got_mean = float(create_loss(name, 0.1, reduction="mean")(Tensor(x), Tensor(labels)).asnumpy())
        got_sum = float(create_loss(name, 0.1, reduction="sum")(Tensor(x), Tensor(labels)).asnumpy())
        assert abs(got_mean - per.mean()) < 1e-5
        assert abs(got_sum - per.sum()) < 1e-4
        assert abs(got_sum - got_mean * per.size) < 1e-4 * per.size


def test_ce_aux_and_fp16_logits(data):
    x, y, _ = data
    aux = x[::-1].copy()
    got = create_loss("CE", 0.0, aux_factor=0.4)((Tensor(x), Tensor(aux)), Tensor(y)).asnumpy()
    want = np_ce(x, np.eye(C)[y], 0).mean() + 0.4 * np_ce(aux, np.eye(C)[y], 0).mean()
    assert abs(got - want) < 1e-5
    out16 = create_loss("CE")(Tensor(x.astype(np.float16)), Tensor(y))
    assert out16.dtype == ms.float32


def test_ce_numerically_stable():
    x = np.array([[1e4, -1e4, 0.0], [-3e4, 3e4, 1.0]], np.float32)
    y = np.array([1, 0], np.int32)
    got = create_loss("CE", 0.1)(Tensor(x), Tensor(y)).asnumpy()
    assert np.isfinite(got)
    assert abs(got - np_ce(x, np.eye(3)[y], 0.1).mean()) / got < 1e-5


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_bce_one_hot_int_and_soft(data, eps):
    x, y, soft = data
    loss = create_loss("BCE", label_smoothing=eps)
    want = np_bce(x, np.eye(C)[y], eps).mean()
    assert abs(loss(Tensor(x), Tensor(y)).asnumpy() - want) < 1e-5
    assert abs(loss(Tensor(x), Tensor(np.eye(C, dtype=np.float32)[y])).asnumpy() - want) < 1e-5
    assert abs(loss(Tensor(x), Tensor(soft)).asnumpy() - np_bce(x, soft, eps).mean()) < 1e-5
    big = np.array([[80.0, -80.0]], np.float32)
    assert np.isfinite(loss(Tensor(big), Tensor(np.array([0], np.int32))).asnumpy())


def test_loss_user_errors():
    with pytest.raises(UserError):
        create_loss("focal")
    with pytest.raises(UserError):
        create_loss("CE", label_smoothing=1.5)
    for bad in ("avg", "none", "MEAN", None):
        with pytest.raises(UserError, match="reduction must be one of mean, sum"):
            create_loss("CE", reduction=bad)
    with pytest.raises(UserError, match="reduction"):
        create_loss("BCE", reduction="avg")
