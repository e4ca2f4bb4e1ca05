"""Exact collectives from 3 ranks on (``mpirun -n 3``, tiny cells): where a float32 sum divided by the
rank count rounds, ``parameters_divergence`` and ``average_batch_norm_statistics`` must not. With 2
ranks, ``x + x`` is exact and hides the rounding."""
import json
import os
import sys

import numpy as np
import pytest

from test_distributed import SCRIPT, _child_env, _mpirun_cmd, _run, _tail, needs_mpirun


@needs_mpirun
def test_mpirun_three_ranks_divergence_and_batch_norm_means_are_exact(tmp_path):
    """From 3 ranks on, a float32 sum divided by the rank count rounds: weights that agree on every
    rank must still read as 0.0 apart, and statistics that agree must stay bit for bit; weights that
    differ report the largest difference to rank 0 (not a sum of the ranks' figures), and the
    averaged statistics equal numpy's float64 mean rounded once."""
    sys.path.insert(0, os.path.dirname(SCRIPT))
    from dist_check import stats_values  # pylint: disable=import-outside-toplevel
    world = 3
    out = tmp_path / "out"
    rc, log, secs, _ = _run(_mpirun_cmd(world, "stats", out), _child_env(tmp_path), timeout=300)
    assert rc == 0, _tail(log)
    print(f"mpirun: {world} ranks, stats {secs:.1f} s")
    values = [stats_values(r, differ=True) for r in range(world)]
    expected_divergence = max(float(np.max(np.abs(v[0].astype(np.float64) - values[0][0]))) for v in values)
    expected_mean = np.mean([v[1].astype(np.float64) for v in values], axis=0).astype(np.float32)
    expected_var = np.mean([v[2].astype(np.float64) for v in values], axis=0).astype(np.float32)
    same = stats_values(0, differ=False)
    for r in range(world):
        res = json.loads((out / f"stats_rank{r}.json").read_text())
        assert res["world_size"] == world
        assert res["divergence_same"] == 0.0, res["divergence_same"]
        assert res["mean_same"] == same[1].view(np.uint32).tolist()
        assert res["var_same"] == same[2].view(np.uint32).tolist()
        assert res["divergence_differ"] == pytest.approx(expected_divergence, rel=1e-6)
        assert res["mean_differ"] == expected_mean.view(np.uint32).tolist()
        assert res["var_differ"] == expected_var.view(np.uint32).tolist()
