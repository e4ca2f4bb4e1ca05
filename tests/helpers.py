"""Helpers shared by the tests (plain functions: ``from helpers import randomize_bn, rel_diff``;
pytest puts ``tests/`` on ``sys.path``). Fixtures live in ``conftest.py``."""
import numpy as np

import mindspore as ms
from mindspore import nn


def randomize_bn(net, seed=0):
    """Give every ``BatchNorm2d`` of ``net`` the statistics and affine parameters a trained network
    has (gamma, var in [0.5, 1.5); beta, mean ~ N(0, 0.1)), so that BN folding and weight mapping are
    really tested. ``seed`` is a seed or a ``numpy.random.Generator`` (drawn from in place). Returns
    ``net``."""
    rng = np.random.default_rng(seed)  # a Generator is returned as it is
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            n = cell.gamma.shape[0]
            cell.gamma.set_data(ms.Tensor(rng.uniform(0.5, 1.5, n).astype(np.float32)))
            cell.beta.set_data(ms.Tensor(rng.normal(0.0, 0.1, n).astype(np.float32)))
            cell.moving_mean.set_data(ms.Tensor(rng.normal(0.0, 0.1, n).astype(np.float32)))
            cell.moving_variance.set_data(ms.Tensor(rng.uniform(0.5, 1.5, n).astype(np.float32)))
    return net


def rel_diff(ref, out):
    """``max|ref - out| / max|ref|`` in float64: the largest difference relative to the reference's
    largest magnitude (the reference first)."""
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    return float(np.abs(ref - out).max() / max(np.abs(ref).max(), 1e-12))
