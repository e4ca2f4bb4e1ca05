"""A resume under ``mpirun -n 2`` when only rank 0 can see the checkpoints (no shared file system).

Every rank gets its own ``--ckpt_save_dir`` (``out_$OMPI_COMM_WORLD_RANK``), so rank 0's folder
alone holds checkpoints. One epoch is trained, then ``--resume auto --epoch_size 2`` is run the
same way: rank 0 decides to resume from epoch 1 and sends its state (``broadcast_object``, then
``broadcast_parameters``), so rank 1, which sees an empty folder, resumes too instead of starting
from scratch. Both ranks must log the resume, train epoch 2 only, hold identical weights, and end
with exactly the weights of an uninterrupted 2-epoch 2-rank run (constant LR: the schedule of the
1-epoch run is the first half of the 2-epoch one).

A 40-image Fashion-MNIST subset (28 px), 2 steps per epoch, PyNative mode, no validation.
"""
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from test_distributed import MPIRUN, _mpi4py_ok, launch_env  # one launcher detection for every test

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "res2net", "res2net_fashion_mnist_cpu.yaml")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(MPIRUN is None, reason="needs OpenMPI's mpirun on PATH"),
    pytest.mark.skipif(not _mpi4py_ok(), reason="needs mpi4py (pip install mpi4py)"),
]


@pytest.fixture(scope="module")
def subset(fashion_mnist_subset):
    return fashion_mnist_subset(40)


def per_rank_train_command(data, base, *extra):
    """``sh -c 'python train.py ... --ckpt_save_dir BASE/out_<rank>'`` for mpirun: a folder per rank,
    with the demo recipe cut down to 2 steps per epoch on 40 images (PyNative, constant LR)."""
    args = ["-c", DEMO, "--data_dir", data, "--mode", 1, "--num_samples", "null", "--batch_size", 8,
            "--scheduler", "constant", "--lr", 0.001, "--warmup_epochs", 0, "--val_while_train", False,
            "--log_interval", 1, "--num_parallel_workers", 1, "--keep_checkpoint_max", 5] + list(extra)
    train = " ".join([sys.executable, os.path.join(ROOT, "train.py")] + [f"'{a}'" for a in args])
    return ["sh", "-c", f"exec {train} --ckpt_save_dir '{base}'/out_$OMPI_COMM_WORLD_RANK"]


def _mpirun_train(data, base, *extra, timeout=600):
    cmd = [MPIRUN] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + ["--oversubscribe", "-n", "2"]
    for key in ("PYTHONPATH", "PATH", "GLOG_v"):
        cmd += ["-x", key]
    start = time.time()
    proc = subprocess.run(cmd + per_rank_train_command(data, base, *extra), capture_output=True, text=True,
                          timeout=timeout, env=launch_env(ROOT), cwd=ROOT, check=False)
    return proc.returncode, proc.stdout + proc.stderr, time.time() - start


def rank_log(base, rank, skip=0):
    path = os.path.join(base, f"out_{rank}", "logs", f"rank_{rank}.log")
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read()[skip:]


def _final_checkpoint(base):
    folder = os.path.join(base, "out_0")
    names = sorted(n for n in os.listdir(folder) if re.fullmatch(r"res2net50-2_\d+\.ckpt", n))
    assert len(names) == 1, sorted(os.listdir(folder))
    return os.path.join(folder, names[0])


def test_resume_is_decided_by_rank0_and_every_rank_follows(subset, tmp_path):
    from mindcv_res2net.weights.checkpoint_file import read_checkpoint

    resumed = tmp_path / "resumed"
    rc, out, t1 = _mpirun_train(subset, resumed, "--epoch_size", 1)
    assert rc == 0, out[-4000:]
    assert any(n.endswith(".ckpt") for n in os.listdir(resumed / "out_0")), os.listdir(resumed / "out_0")
    assert not any(n.endswith(".ckpt") for n in os.listdir(resumed / "out_1"))  # rank 1 sees no checkpoint
    seen = [len(rank_log(resumed, r)) for r in range(2)]

    rc, out, t2 = _mpirun_train(subset, resumed, "--epoch_size", 2, "--resume", "auto")
    assert rc == 0, out[-4000:]
    logs = [rank_log(resumed, r, skip=seen[r]) for r in range(2)]
    assert re.search(r"resumed from \S+res2net50-1_\d+\.ckpt \(epoch 1,", logs[0]), logs[0][-3000:]
    assert "resumed at epoch 1 with rank 0's state" in logs[1], logs[1][-3000:]
    for r, text in enumerate(logs):
        assert "starting from scratch" not in text, (r, text[-3000:])
        assert "epoch 1/2 " not in text, (r, text[-3000:])  # epoch 1 is not trained again
        assert "epoch 2/2 done in" in text, (r, text[-3000:])  # both ranks finish epoch 2
        assert "epoch 2: largest weight difference between ranks 0\n" in text, (r, text[-3000:])

    # the same as never stopping
    straight = tmp_path / "straight"
    rc, out, t3 = _mpirun_train(subset, straight, "--epoch_size", 2)
    assert rc == 0, out[-4000:]
    assert "epoch 2: largest weight difference between ranks 0\n" in rank_log(straight, 1)
    a, b = read_checkpoint(_final_checkpoint(resumed)), read_checkpoint(_final_checkpoint(straight))
    tensors = sorted(n for n, v in b.items() if isinstance(v, np.ndarray) and n != "learning_rate")
    assert len(tensors) > 100 and sorted(n for n, v in a.items() if isinstance(v, np.ndarray)
                                         and n != "learning_rate") == tensors
    # weights, BatchNorm statistics, Adam moments and step counters: bit for bit
    different = [n for n in tensors if a[n].dtype != b[n].dtype or a[n].tobytes() != b[n].tobytes()]
    assert not different, different[:5]
    print(f"mpirun -n 2: 1 epoch {t1:.0f} s, resume to epoch 2 {t2:.0f} s, 2 epochs straight {t3:.0f} s")
