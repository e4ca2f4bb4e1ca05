"""``benchmark.py --reproduce``: MindCV's Res2Net table from training runs and from released checkpoints,
on generated image folders. Every number of the table is compared with the file it must come from
(validate.py's JSON, train.py's metrics.csv), the parameter counts with the published counts, and a
reproduction killed in its second row continues without touching the first."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from test_distributed import LAUNCH_ENV_KEYS, MPIRUN, _mpi4py_ok
from tests.fault.test_bad_input import assert_user_error, make_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a scaled-down recipe: 32 px, PyNative (no graph compile), float32 (2 images per rank would overflow fp16)
REHEARSAL = ["--set", "epoch_size=2", "--set", "image_resize=32", "--set", "batch_size=2", "--set", "mode=1",
             "--set", "amp_level=O0", "--set", "num_classes=2", "--set", "num_parallel_workers=1",
             "--set", "device_target=CPU"]
# MindCV's "Params" column: parameters with BatchNorm moving statistics at 1000 classes (shared reference counts)
PARAMS_1000 = {"res2net50": 25_758_612, "res2net101": 45_325_748, "res2net50_v1b": 25_777_972,
               "res2net101_v1b": 45_345_108}


def _params_at(model, classes):
    """The count at ``classes`` outputs, from the 1000-class count: the classifier is 2048 x classes + classes."""
    return PARAMS_1000[model] - (2048 * 1000 + 1000) + (2048 * classes + classes)


def _env():
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_KEYS}
    env.update(PYTHONPATH=ROOT, GLOG_v="3", PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    return env


def _benchmark(args, timeout=900):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmark.py")] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT)
    return proc


def _table(out):
    return json.loads((out / "table.json").read_text())


def _metrics(row_dir):
    import csv  # pylint: disable=import-outside-toplevel
    with open(row_dir / "train" / "metrics.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _check_row_against_its_files(row, row_dir, ranks, accum):
    validation = json.loads((row_dir / "validate.json").read_text())
    metrics = _metrics(row_dir)
    assert [int(m["epoch"]) for m in metrics] == [1, 2]
    assert row["top1"] == 100 * validation["top1"] and row["top5"] == 100 * validation["top5"]
    assert row["infer_ms_per_step"] == validation["ms_per_step"] and validation["ms_per_step"] > 0
    assert row["train_s_per_epoch"] == float(metrics[1]["epoch_time_s"])  # the median of the epochs after the first
    assert row["params"] == _params_at(row["model"], 2) and row["params_m"] == row["params"] / 1e6
    assert row["context"] == f"CPUx{ranks}-F" + (f", accum {accum}" if accum > 1 else "")
    assert all(int(m["ranks"]) == ranks and int(m["global_batch"]) == 2 * ranks * accum for m in metrics)
    assert row["rehearsal"] is True
    with open(row["ckpt"], "rb") as f:
        assert row["ckpt_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert row["published"]["top1"]["value"] == {"res2net50": 79.35, "res2net50_v1b": 80.32}[row["row"]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("reproduce") / "data", classes=("cat", "dog"), per_class=8)


@pytest.mark.slow
@pytest.mark.skipif(MPIRUN is None or not _mpi4py_ok(), reason="needs OpenMPI's mpirun and mpi4py")
def test_two_row_rehearsal_under_mpirun_and_the_table_from_runs(data, tmp_path):
    out = tmp_path / "repro"
    proc = _benchmark(["--reproduce", "--data_dir", data, "--out", out, "--rows", "res2net50,res2net50_v1b",
                       "--devices", 2] + REHEARSAL)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    table = _table(out)
    assert [r["row"] for r in table["rows"]] == ["res2net50", "res2net50_v1b"]
    for row in table["rows"]:
        _check_row_against_its_files(row, out / row["row"], ranks=2, accum=4)  # 8 / 2 devices
    assert table["mindspore"] == "2.8.0" and table["date"] and table["command"].startswith("python benchmark.py")
    text = (out / "table.md").read_text()
    assert "res2net50 (rehearsal)" in text and "Rehearsal rows" in text and "25,777,972" in text
    # the table again from the row folders alone
    rows_before = table["rows"]
    (out / "table.json").unlink()
    proc = _benchmark(["--from_runs", out])
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert _table(out)["rows"] == rows_before


def _digests(folder):
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_reproduction_killed_in_row_2_continues_and_leaves_row_1_alone(data, tmp_path):
    out = tmp_path / "repro"
    args = [sys.executable, os.path.join(ROOT, "benchmark.py"), "--reproduce", "--data_dir", data, "--out", str(out),
            "--rows", "res2net50,res2net50_v1b"] + REHEARSAL
    proc = subprocess.Popen(args, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,  # pylint: disable=consider-using-with
                            start_new_session=True)
    first_epoch = out / "res2net50_v1b" / "train" / "res2net50_v1b-1_8.ckpt"
    deadline = time.time() + 600
    while not first_epoch.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first_epoch.exists(), "row 2 never wrote its first checkpoint"
    assert (out / "res2net50" / "row.json").exists() and not (out / "res2net50_v1b" / "row.json").exists()
    row1 = _digests(out / "res2net50")
    done = _benchmark(args[2:])
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "row res2net50: finished earlier" in done.stdout
    assert _digests(out / "res2net50") == row1  # not one byte or time stamp of row 1 changed
    log = (out / "res2net50_v1b" / "train" / "logs" / "rank_0.log").read_text()
    assert f"resumed from {first_epoch} (epoch 1," in log
    table = _table(out)
    for row in table["rows"]:
        _check_row_against_its_files(row, out / row["row"], ranks=1, accum=8)


def test_checkpoint_mode_validates_mindcv_checkpoints_with_the_recipe(data, tmp_path):
    mindcv = pytest.importorskip("mindcv")
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    ckpt = tmp_path / "res2net50_mindcv.ckpt"
    ms.save_checkpoint(mindcv.models.create_model("res2net50", num_classes=2), str(ckpt))  # MindCV's own layout
    out = tmp_path / "repro"
    proc = _benchmark(["--reproduce", "--ckpt", f"res2net50={ckpt}", "--data_dir", data, "--out", out] + REHEARSAL)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    (row,) = _table(out)["rows"]
    direct = tmp_path / "direct.json"
    check = subprocess.run([sys.executable, os.path.join(ROOT, "validate.py"), "-c",
                            os.path.join(ROOT, "configs", "res2net", "res2net_50_gpu.yaml"), "--data_dir", data,
                            "--ckpt_path", str(ckpt), "--image_resize", "32", "--batch_size", "2", "--mode", "1",
                            "--num_classes", "2", "--num_parallel_workers", "1", "--device_target", "CPU",
                            "--distribute", "False", "--json", str(direct)],
                           capture_output=True, text=True, timeout=300, env=_env(), cwd=ROOT)
    assert check.returncode == 0, check.stderr[-3000:]
    expected = json.loads(direct.read_text())
    assert row["top1"] == 100 * expected["top1"] and row["top5"] == 100 * expected["top5"]
    assert row["train_s_per_epoch"] is None and row["context"] == "CPUx1-F"
    assert row["params"] == _params_at("res2net50", 2) and row["ckpt"] == str(ckpt)


def test_params_are_the_exact_counts_and_match_the_published_column():
    from mindcv_res2net.benchmark.published import ROWS  # pylint: disable=import-outside-toplevel
    from mindcv_res2net.benchmark.reproduce import count_parameters  # pylint: disable=import-outside-toplevel
    for row in ROWS:
        count = count_parameters(row.model, 1000)
        assert count == PARAMS_1000[row.model], row.model
        if row.model == "res2net50_v1b":  # MindCV prints 25.77; the count rounds to 25.78 (table note)
            assert round(count / 1e6, 2) == 25.78 and row.params_m.value == 25.77 and row.notes
        else:
            assert round(count / 1e6, 2) == row.params_m.value, row.model


@pytest.mark.parametrize("args, needle", [
    (["--rows", "res2net51"], "unknown row in --rows: res2net51"),
    (["--ckpt", "res2net50=/no/such.ckpt"], "--ckpt res2net50=/no/such.ckpt: file not found"),
    (["--ckpt", "res2net50"], "write KEY=VALUE"),
    (["--rows", "res2net50", "--set", "no_such_key=1"], "train.py refuses configs/res2net/res2net_50_gpu.yaml"),
    (["--rows", "res2net50", "--devices", "3"], "--devices 3: use 1, 2, 4 or 8"),
])
def test_bad_input_is_one_clear_error(data, tmp_path, args, needle):
    proc = _benchmark(["--reproduce", "--data_dir", data, "--out", tmp_path / "o"] + args, timeout=120)
    assert_user_error(proc, needle)


def test_a_data_folder_without_val_is_refused(tmp_path):
    (tmp_path / "imagenet" / "train" / "a").mkdir(parents=True)
    proc = _benchmark(["--reproduce", "--data_dir", tmp_path / "imagenet", "--out", tmp_path / "o"], timeout=60)
    assert_user_error(proc, "no val/ folder")


def test_from_runs_of_a_folder_without_rows_is_refused(tmp_path):
    proc = _benchmark(["--from_runs", tmp_path], timeout=60)
    assert_user_error(proc, "no row folder with a validate.json")


def _dry_run(*extra):
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "-c",
                           os.path.join(ROOT, "configs", "res2net", "res2net_50_gpu.yaml"), "--dry_run"] + list(extra),
                          capture_output=True, text=True, timeout=60, env=_env(), cwd=ROOT)


def test_a_recipes_warmup_is_shortened_for_a_short_run_and_an_explicit_one_is_refused():
    import yaml  # pylint: disable=import-outside-toplevel
    proc = _dry_run("--epoch_size", "2")
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["warmup_epochs"] == 2
    warnings = [line for line in proc.stderr.splitlines() if "warmup_epochs" in line]
    assert len(warnings) == 1 and "warming up for 2 epoch(s) instead" in warnings[0], proc.stderr
    assert_user_error(_dry_run("--epoch_size", "2", "--warmup_epochs", "5"),
                      "warmup_epochs (5), given on the command line, is larger than the number of epochs (2")


@pytest.mark.parametrize("how, world, accum, expected", [
    ("none", 8, 1, 0.1), ("linear", 2, 1, 0.1 * 64 / 256), ("linear", 2, 4, 0.1), ("sqrt", 1, 1, 0.1 * (32 / 256) ** 0.5),
])
def test_lr_scale_follows_the_global_batch(how, world, accum, expected):
    import argparse  # pylint: disable=import-outside-toplevel
    from mindcv_res2net.training.trainer import scaled_lr  # pylint: disable=import-outside-toplevel
    args = argparse.Namespace(lr=0.1, lr_scale=how, lr_base_batch=256, batch_size=32,
                              gradient_accumulation_steps=accum)
    lr, note = scaled_lr(args, world)
    assert lr == pytest.approx(expected, rel=1e-12)
    assert (note is None) == (how == "none")


def test_rows_and_recipes_exist():
    from mindcv_res2net.benchmark.published import ROWS  # pylint: disable=import-outside-toplevel
    for row in ROWS:
        for device in ("gpu", "ascend"):
            assert os.path.isfile(os.path.join(ROOT, row.config(device))), row.config(device)
