"""More data workers than cores, and the order of validate.py's checks (issue 12, item 12).

``num_parallel_workers`` is 8 in every published recipe and by default; MindSpore raises a
``ValueError`` for more workers than ``os.cpu_count()``. The loader clamps to the cores the
process may use, with a one-line warning logged once. validate.py checks the checkpoint file, the
model name and the data folder before it joins a cluster or builds a pipeline.
"""
import os
import subprocess
import sys
import time

import pytest

from mindcv_res2net.errors import UserError
from tests.fault.test_bad_input import make_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WARNING = "num_parallel_workers="


def _folder(root):
    return make_image_folder(root, per_class=2)


# ----------------------------------------------------------------------------- the clamp

def test_workers_are_clamped_to_the_cores_of_the_process(monkeypatch, dataset_warnings):
    from mindcv_res2net.data import dataset

    monkeypatch.setattr(dataset, "_WORKERS_WARNED", set())
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)  # e.g. taskset -c 0-2
    assert dataset.available_cores() == 3
    assert dataset.resolve_workers(8) == 3
    assert dataset.resolve_workers(8) == 3
    assert dataset.resolve_workers(2) == 2
    assert dataset.resolve_workers(None) == 3
    clamps = [m for m in dataset_warnings if WARNING in m]
    assert len(clamps) == 1, dataset_warnings  # once per process, one line
    assert "num_parallel_workers=8" in clamps[0] and "3 CPU core" in clamps[0] and "\n" not in clamps[0]

    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # platforms without affinity masks
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert dataset.available_cores() == 4 and dataset.resolve_workers(None) == 4
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert dataset.available_cores() == 1


def test_loader_with_more_workers_than_cores_runs(tmp_path, dataset_warnings):
    from mindcv_res2net.data import create_dataset, create_loader

    data = _folder(tmp_path)
    too_many = (os.cpu_count() or 1) + 6  # MindSpore refuses this many (ValueError) unless clamped
    ds = create_dataset("imagefolder", root=data, split="val", shuffle=False, num_parallel_workers=too_many)
    loader = create_loader(ds, batch_size=2, num_parallel_workers=too_many, image_resize=32)
    labels = [int(v) for _x, y in loader.create_tuple_iterator(num_epochs=1, output_numpy=True) for v in y]
    assert labels == [0, 0, 1, 1]
    assert len([m for m in dataset_warnings if f"num_parallel_workers={too_many}" in m]) <= 1


# ----------------------------------------------------------------------------- the scripts

def _run(script, args, timeout=300):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MINDCV_RES2NET_DEBUG", None)
    return subprocess.run([sys.executable, os.path.join(ROOT, script)] + [str(a) for a in args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _assert_ran_and_warned_once(name, proc, cores):
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name}: rc {proc.returncode}\n{output[-4000:]}"
    assert "Traceback" not in output and "ValueError" not in output, f"{name}\n{output[-4000:]}"
    lines = [line for line in output.splitlines() if WARNING in line]
    assert len(lines) == 1, f"{name}: {lines}\n{output[-3000:]}"
    assert f"{cores} CPU core" in lines[0]


def _script_args(data):
    """Common arguments, and the recipes' 8 workers (the default) or more than the cores."""
    from mindcv_res2net.data.dataset import available_cores

    cores = available_cores()
    workers = [] if cores < 8 else ["--num_parallel_workers", cores + 1]
    return ["--device_target", "CPU", "--mode", "1", "--model", "res2net50", "--data_dir", data,
            "--image_resize", "32", "--batch_size", "2"] + workers, cores


def test_validate_with_the_default_workers_runs_and_warns_once(tmp_path):
    from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic
    from mindcv_res2net.models.factory import create_model

    data = _folder(tmp_path / "data")
    ckpt = str(tmp_path / "r50.ckpt")
    save_checkpoint_atomic(create_model("res2net50", num_classes=2), ckpt)
    args, cores = _script_args(data)
    proc = _run("validate.py", args + ["--ckpt_path", ckpt])
    _assert_ran_and_warned_once("validate.py", proc, cores)
    assert "top-1" in proc.stdout


@pytest.mark.slow
def test_train_with_the_default_workers_runs_and_warns_once(tmp_path):
    """One epoch of two steps with validation; the training pipeline is rebuilt every epoch and
    the val pipeline once: still one warning."""
    args, cores = _script_args(_folder(tmp_path / "data"))
    proc = _run("train.py", args + ["--epoch_size", "1", "--warmup_epochs", "0", "--val_while_train", "True",
                                    "--ckpt_save_dir", tmp_path / "ck"])
    _assert_ran_and_warned_once("train.py", proc, cores)


# ----------------------------------------------------------------------------- validate.py's check order

@pytest.fixture
def no_pipeline(monkeypatch):
    """validate() with the runtime set-up and the data pipeline replaced by failures."""
    from mindcv_res2net.evaluation import validation

    def fail(*_args, **_kwargs):
        raise AssertionError("reached the runtime set-up / data pipeline before the cheap checks")

    monkeypatch.setattr(validation, "setup_runtime", fail)
    monkeypatch.setattr(validation.data_setup, "build_val", fail)
    return validation.validate


def _validate_args(*argv):
    import config

    return config.parse_args(["--device_target", "CPU", "--mode", "1"] + [str(a) for a in argv],
                             script="validate")


def test_cheap_checks_come_before_the_pipeline(tmp_path, no_pipeline):
    ckpt = tmp_path / "missing.ckpt"
    data = tmp_path / "no_data"
    start = time.perf_counter()
    with pytest.raises(UserError, match="checkpoint file not found") as info:  # first: the checkpoint
        no_pipeline(_validate_args("--ckpt_path", ckpt, "--data_dir", data, "--model", "res2net5O"))
    assert str(ckpt) in str(info.value) and str(data) not in str(info.value)

    (tmp_path / "there.ckpt").write_bytes(b"not read yet")
    with pytest.raises(UserError, match="unknown model 'res2net5O'"):  # then the model name
        no_pipeline(_validate_args("--ckpt_path", tmp_path / "there.ckpt", "--data_dir", data,
                                   "--model", "res2net5O"))
    with pytest.raises(UserError, match="data directory not found") as info:  # then the data folder
        no_pipeline(_validate_args("--ckpt_path", tmp_path / "there.ckpt", "--data_dir", data))
    assert str(data) in str(info.value)
    (data / "train").mkdir(parents=True)
    with pytest.raises(UserError, match="split folder not found") as info:
        no_pipeline(_validate_args("--ckpt_path", tmp_path / "there.ckpt", "--data_dir", data))
    assert str(data / "val") in str(info.value)
    with pytest.raises(UserError, match="fashion_mnist"):
        no_pipeline(_validate_args("--ckpt_path", tmp_path / "there.ckpt", "--data_dir", data,
                                   "--dataset", "fashion_mnist"))
    assert time.perf_counter() - start < 10
