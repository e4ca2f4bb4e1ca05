"""A user's mistake under ``mpirun -n 3`` reads as one program's: one ``error:`` line (rank 0
prints what every rank found, grouped), exit status 2, found before any rank joins MindSpore's
cluster, and none of MindSpore's own log lines on the console (``GLOG_v`` left unset, as a user
leaves it). Three ranks on 2 cores: ~6-10 s per job."""
import os
import re
import subprocess
import sys

import pytest

from test_distributed import LAUNCH_ENV_KEYS, MPIRUN, _mpi4py_ok

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_RECIPE = os.path.join(ROOT, "configs", "res2net", "res2net_50_gpu.yaml")

pytestmark = pytest.mark.skipif(MPIRUN is None or not _mpi4py_ok(), reason="needs OpenMPI's mpirun and mpi4py")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    import numpy as np  # pylint: disable=import-outside-toplevel
    from PIL import Image  # pylint: disable=import-outside-toplevel
    root = tmp_path_factory.mktemp("mpirun_errors") / "data"
    rng = np.random.RandomState(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.randint(0, 255, (36, 36, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return str(root)


def _mpirun(script_line, tmp_path, ranks=3):
    """Run ``script_line`` (a shell line; $R is the rank) on ``ranks`` ranks; (rc, console text)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_KEYS and k != "GLOG_v"}
    env.update(PYTHONPATH=ROOT, PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
               MINDCV_RES2NET_DIST_LOG_DIR=str(tmp_path / "dist_logs"))
    cmd = [MPIRUN] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + ["--oversubscribe", "-n", str(ranks)]
    cmd += ["-x", "PYTHONPATH", "-x", "PATH", "-x", "MINDCV_RES2NET_DIST_LOG_DIR", "bash", "-c",
            "R=$OMPI_COMM_WORLD_RANK; " + script_line]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    return proc.returncode, proc.stdout + proc.stderr


def _train_line(data_dir, save_dir, *extra):
    return " ".join([sys.executable, "train.py", "-c", GPU_RECIPE, "--device_target", "CPU", "--data_dir", data_dir,
                     "--ckpt_save_dir", save_dir, "--batch_size", "2", "--image_resize", "32"] + list(extra))


def _framework_lines(text):
    return [line for line in text.splitlines() if re.match(r"\[(INFO|WARNING|ERROR)\] [A-Z_]+\(", line)]


def test_a_mistake_every_rank_makes_is_printed_once_before_the_cluster_is_joined(image_folder, tmp_path):
    # a schedule the scheduler refuses (it used to be built after the cluster was joined)
    rc, text = _mpirun(_train_line(image_folder, str(tmp_path / "ckpt"), "--epoch_size", "6", "--scheduler",
                                   "step_decay", "--decay_epochs", "0"), tmp_path)
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert rc == 2, text[-3000:]
    assert len(errors) == 1 and "decay_epochs" in errors[0], text[-3000:]
    assert "ranks joined" not in text, text[-3000:]  # found before the cluster was joined
    assert not _framework_lines(text), "\n".join(_framework_lines(text))


def test_a_mistake_of_one_rank_is_printed_once_with_its_rank(image_folder, tmp_path):
    # rank 2 alone lacks its data folder (a host without the shared mount)
    line = _train_line(f"$([ $R = 2 ] && echo {tmp_path}/missing || echo {image_folder})", str(tmp_path / "ckpt"),
                       "--epoch_size", "6")
    rc, text = _mpirun(line, tmp_path)
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert rc == 2, text[-3000:]
    assert len(errors) == 1, text[-3000:]
    assert errors[0].startswith(f"error: rank 2 of 3: data directory not found: {tmp_path}/missing"), errors
    assert "ranks joined" not in text, text[-3000:]
    assert not _framework_lines(text), "\n".join(_framework_lines(text))


def test_validate_refuses_a_bad_key_once(image_folder, tmp_path):
    line = " ".join([sys.executable, "validate.py", "--model", "res2net50", "--data_dir", image_folder,
                     "--device_target", "CPU", "--no_such_key", "1"])
    rc, text = _mpirun(line, tmp_path)
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert rc == 2, text[-3000:]
    assert len(errors) == 1 and "no_such_key" in errors[0], text[-3000:]
