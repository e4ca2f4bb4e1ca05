"""Bad input to train.py / validate.py: one clear ``error:`` line naming the input, exit status 2,
no traceback (``--debug`` shows one). Runs the scripts as subprocesses; none reaches training.

Cases that import MindSpore (~5-7 s each) are launched together, two at a time, by one
module-scoped fixture; the config-only cases exit before MindSpore is imported (< 1 s).
"""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable
FAST = ["--device_target", "CPU", "--mode", "1", "--num_parallel_workers", "1", "--image_resize", "32",
        "--batch_size", "2", "--epoch_size", "1"]


def run_script(script, args, timeout=120):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MINDCV_RES2NET_DEBUG", None)
    proc = subprocess.run([PY, os.path.join(ROOT, script)] + [str(a) for a in args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc


def assert_user_error(proc, *needles):
    err = proc.stderr
    assert proc.returncode == 2, f"rc={proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, err[-3000:]
    for needle in needles:
        assert needle in error_lines[0], f"{needle!r} not in {error_lines[0]!r}"
    return error_lines[0]


def make_image_folder(root, classes=("cat", "dog"), per_class=3, size=32):
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            d = os.path.join(root, split, c)
            os.makedirs(d, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(arr).save(os.path.join(d, f"{i}.png"))
    return str(root)


# ----------------------------------------------------------------------------- config-only (fast)
def test_unknown_cli_key_names_closest(tmp_path):
    proc = run_script("train.py", ["--batch_sise", "4"])
    assert_user_error(proc, "--batch_sise", "--batch_size")


def test_unknown_yaml_key_names_closest(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 4\nlearnig_rate_x: 0.1\nwarmup_epoch: 2\n")
    proc = run_script("train.py", ["-c", cfg])
    line = assert_user_error(proc, "learnig_rate_x")
    cfg.write_text("warmup_epoch: 2\n")
    line = assert_user_error(run_script("train.py", ["-c", cfg]), "warmup_epoch", "warmup_epochs")
    assert str(cfg) in line or "c.yaml" in line


def test_wrong_type_cli_and_yaml(tmp_path):
    assert_user_error(run_script("train.py", ["--batch_size", "abc"]), "batch_size", "abc")
    cfg = tmp_path / "t.yaml"
    cfg.write_text("lr: [0.1, 0.2]\n")
    assert_user_error(run_script("validate.py", ["-c", cfg]), "'lr'", "t.yaml")


def test_yaml_syntax_error_names_file(tmp_path):
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("batch_size: 4\nlr: [0.1, \n  model: : res2net50\n")
    assert_user_error(run_script("train.py", ["-c", cfg]), str(cfg), "YAML")


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert_user_error(run_script("validate.py", ["-c", missing]), str(missing))


@pytest.mark.parametrize("value", ["0", "-3"])
def test_batch_size_not_positive(value):
    assert_user_error(run_script("train.py", ["--batch_size", value]), "batch_size", value)


def test_debug_shows_traceback():
    proc = run_script("train.py", ["--batch_size", "abc", "--debug"])
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "UserError" in proc.stderr


# ----------------------------------------------------------------------------- need MindSpore (slow, batched)
@pytest.fixture(scope="module")
def slow_results(tmp_path_factory):
    """Launch every MindSpore-importing case at once (2 in parallel); return {name: CompletedProcess}."""
    base = tmp_path_factory.mktemp("bad_input")
    data = make_image_folder(base / "data")
    data10 = base / "data10"
    for c in range(10):
        (data10 / "train" / f"c{c}").mkdir(parents=True)
    make_image_folder(data10, classes=[f"c{c}" for c in range(10)], per_class=1)

    import mindspore as ms
    from mindspore import nn

    class Tiny(nn.Cell):
        def __init__(self):
            super().__init__()
            self.fc = nn.Dense(4, 2)

        def construct(self, x):
            return self.fc(x)

    tiny_ckpt = str(base / "tiny_dense.ckpt")
    ms.save_checkpoint(Tiny(), tiny_ckpt)

    ck = lambda name: str(base / "ck" / name)  # noqa: E731
    cases = {
        "missing_data_dir": ("train.py", FAST + ["--data_dir", base / "no_such_data", "--ckpt_save_dir", ck("a")]),
        "missing_ckpt": ("validate.py", FAST + ["--data_dir", data, "--ckpt_path", base / "missing.ckpt"]),
        # the checkpoint is checked first: before the data folder, the cluster and the data pipeline
        "missing_ckpt_and_data": ("validate.py", FAST + ["--data_dir", base / "no_such_data",
                                                         "--ckpt_path", base / "missing.ckpt"]),
        "other_arch": ("validate.py", FAST + ["--data_dir", data, "--model", "res2net50", "--num_classes", "2",
                                              "--ckpt_path", tiny_ckpt]),
        "unknown_model": ("train.py", FAST + ["--data_dir", data, "--model", "res2net5O", "--ckpt_save_dir", ck("b")]),
        "num_classes": ("train.py", FAST + ["--data_dir", data10, "--num_classes", "3", "--ckpt_save_dir", ck("c")]),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(run_script, s, a) for k, (s, a) in cases.items()}
        out = {k: f.result() for k, f in futures.items()}
    out["_base"] = base
    return out


def test_missing_data_dir(slow_results):
    assert_user_error(slow_results["missing_data_dir"], str(slow_results["_base"] / "no_such_data"))


def test_missing_checkpoint(slow_results):
    assert_user_error(slow_results["missing_ckpt"], str(slow_results["_base"] / "missing.ckpt"))


def test_missing_checkpoint_reported_before_missing_data(slow_results):
    line = assert_user_error(slow_results["missing_ckpt_and_data"], str(slow_results["_base"] / "missing.ckpt"))
    assert "no_such_data" not in line


def test_checkpoint_of_another_architecture_lists_keys(slow_results):
    line = assert_user_error(slow_results["other_arch"], "tiny_dense.ckpt", "res2net50")
    assert "fc.weight" in line, line          # the unexpected key is named
    assert "missing" in line and "conv1" in line, line  # and the model's missing ones


def test_unknown_model_name(slow_results):
    assert_user_error(slow_results["unknown_model"], "res2net5O")


def test_num_classes_does_not_match_data(slow_results):
    assert_user_error(slow_results["num_classes"], "num_classes", "3", "10")
