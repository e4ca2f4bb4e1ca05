"""train.py and validate.py under ``mpirun -n 2`` and ``msrun --worker_num=2`` with the demo recipe.

A 101-image Fashion-MNIST subset (train and val): the validation set is odd-sized, so the two
ranks hold 51 and 50 images. The 2-rank validation figures written by the trainer must equal
single-process ``validate.py`` on the checkpoint rank 0 saved (the BatchNorm statistics are
averaged over the ranks before validation, so both evaluate one model).
"""
import csv
import json
import os
import socket
import subprocess
import sys

import pytest

from test_distributed import MPIRUN, MSRUN, _mpi4py_ok, launch_env  # one launcher detection for both files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "configs", "res2net", "res2net_fashion_mnist_cpu.yaml")

pytestmark = pytest.mark.slow  # two ranks train in subprocesses: a minute or more each on 2 CPU cores


@pytest.fixture(scope="module")
def subset(fashion_mnist_subset):
    return fashion_mnist_subset(101)


def _train_args(data, save, mode):
    return ["-c", DEMO, "--data_dir", data, "--ckpt_save_dir", save, "--mode", mode, "--epoch_size", 1,
            "--num_samples", "null", "--batch_size", 16, "--warmup_epochs", 0, "--decay_epochs", 1,
            "--val_interval", 1, "--log_interval", 1, "--num_parallel_workers", 1]


def _run(cmd, timeout=420):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=launch_env(ROOT),
                          cwd=ROOT)
    return proc.returncode, proc.stdout + proc.stderr


def _validate_single(data, ckpt, tmp_path):
    result = tmp_path / "single.json"
    rc, out = _run([sys.executable, os.path.join(ROOT, "validate.py"), "-c", DEMO, "--data_dir", data,
                    "--ckpt_path", ckpt, "--batch_size", 32, "--num_parallel_workers", 1, "--distribute", False,
                    "--json", result])
    assert rc == 0, out[-3000:]
    return json.loads(result.read_text())


def _check_run(data, save, tmp_path, out):
    logs = sorted(p.name for p in (save / "logs").glob("rank_*.log"))
    assert logs == ["rank_0.log", "rank_1.log"], out[-3000:]  # every rank writes its own log
    rank0_log = (save / "logs" / "rank_0.log").read_text()
    assert "2 rank(s)" in rank0_log  # the step log names the ranks
    assert "largest weight difference between ranks 0\n" in rank0_log  # one model on both ranks
    ckpts = sorted(p.name for p in save.glob("*.ckpt"))
    assert ckpts == ["res2net50-1_3.ckpt", "res2net50_best.ckpt"], ckpts  # 51 / 50 images per rank, batch 16
    with open(save / "metrics.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    single = _validate_single(data, save / "res2net50-1_3.ckpt", tmp_path)
    assert single["num_samples"] == 101
    # the trainer's 2-rank validation (51 + 50 images) is exactly single-process validation
    assert abs(float(rows[0]["val_top1"]) - single["top1"]) < 1e-9, (rows[0], single)
    assert abs(float(rows[0]["val_top5"]) - single["top5"]) < 1e-9, (rows[0], single)
    assert abs(float(rows[0]["val_loss"]) - single["loss"]) < 1e-4 * max(1.0, single["loss"]), (rows[0], single)


@pytest.mark.skipif(MPIRUN is None or not _mpi4py_ok(), reason="needs OpenMPI's mpirun and mpi4py")
def test_mpirun_two_ranks_train_then_validate_equals_single_process(subset, tmp_path):
    save = tmp_path / "ckpt"
    cmd = [MPIRUN] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + ["--oversubscribe", "-n", 2]
    for key in ("PYTHONPATH", "PATH", "GLOG_v"):
        cmd += ["-x", key]
    rc, out = _run(cmd + [sys.executable, os.path.join(ROOT, "train.py")] + _train_args(subset, save, 0))
    assert rc == 0, out[-4000:]
    _check_run(subset, save, tmp_path, out)

    # validate.py under mpirun: the same figures as single-process validate.py
    result = tmp_path / "mpi.json"
    rc, out = _run(cmd + [sys.executable, os.path.join(ROOT, "validate.py"), "-c", DEMO, "--data_dir", subset,
                          "--ckpt_path", save / "res2net50-1_3.ckpt", "--batch_size", 32,
                          "--num_parallel_workers", 1, "--json", result])
    assert rc == 0, out[-4000:]
    mpi = json.loads(result.read_text())
    single = _validate_single(subset, save / "res2net50-1_3.ckpt", tmp_path)
    assert mpi["num_samples"] == single["num_samples"] == 101
    assert (mpi["top1"], mpi["top5"]) == (single["top1"], single["top5"])
    assert abs(mpi["loss"] - single["loss"]) < 1e-4 * max(1.0, single["loss"])


@pytest.mark.skipif(MSRUN is None, reason="needs MindSpore's msrun")
def test_msrun_two_ranks_train_pynative(subset, tmp_path):
    save = tmp_path / "ckpt"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rc, out = _run([MSRUN, "--worker_num=2", "--local_worker_num=2", f"--master_port={port}",
                    f"--log_dir={tmp_path / 'msrun_logs'}", "--join=True", os.path.join(ROOT, "train.py")]
                   + _train_args(subset, save, 1))
    logs = "".join(p.read_text(errors="replace")[-2000:] for p in (tmp_path / "msrun_logs").glob("*.log"))
    assert rc == 0, out[-3000:] + logs
    _check_run(subset, save, tmp_path, out + logs)
