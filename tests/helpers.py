"""Helpers shared by the tests (plain functions: ``from helpers import randomize_bn, rel_diff``;
pytest puts ``tests/`` on ``sys.path``). Fixtures live in ``conftest.py``."""
import os
import subprocess
import sys

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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, *args, extra_env=None, timeout=600):
    """Run a top-level script (train.py, validate.py, ...) in a fresh interpreter, MindSpore quiet."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), GLOG_v="3")
    env.pop("MINDCV_RES2NET_DEBUG", None)
    env.update(extra_env or {})
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout)


def ok(proc):
    """The process ended with status 0 (else its output is the failure message)."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def one_error(proc, *needles):
    """Exit status 2, no traceback, one ``error:`` line that holds each of ``needles``."""
    assert proc.returncode == 2, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]

