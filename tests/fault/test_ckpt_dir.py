"""ckpt_save_dir that cannot be written (under a file, read-only, full) is reported before training
starts; atomic checkpoint writes never leave a partial file under the final name; ``find_latest``
skips temporary and unreadable checkpoints."""
import os
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.fault.test_bad_input import FAST, assert_user_error, make_image_folder, run_script

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _no_training(proc):
    assert "steps/epoch" not in proc.stderr + proc.stdout
    assert "epoch 1/1" not in proc.stderr + proc.stdout


def _fill(directory):
    """Fill the file system holding ``directory``; returns the names now there."""
    for name, chunk in (("filler.bin", 4096), ("filler2.bin", 1)):
        fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while True:
                os.write(fd, b"\1" * chunk)
        except OSError:
            pass
        finally:
            os.close(fd)
    return sorted(os.listdir(directory))


@pytest.fixture(scope="module")
def dir_results(tmp_path_factory):
    base = tmp_path_factory.mktemp("ckpt_dir")
    data = make_image_folder(base / "data")
    a_file = base / "plain_file"
    a_file.write_text("x")
    under_file = str(a_file / "ckpt")
    if IS_ROOT:
        read_only = f"/proc/mindcv_ro_{uuid.uuid4().hex[:6]}"   # root ignores permission bits
    else:
        ro = base / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        read_only = str(ro / "ckpt")
    cases = {"under_file": under_file, "read_only": read_only}

    full = base / "full"
    full.mkdir()
    mounted = False
    if IS_ROOT:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)],
                                 capture_output=True).returncode == 0
    before = None
    try:
        if mounted:
            before = _fill(str(full))
            cases["full"] = str(full)
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {k: pool.submit(run_script, "train.py",
                                      FAST + ["--data_dir", data, "--ckpt_save_dir", d]) for k, d in cases.items()}
            results = {k: (cases[k], f.result()) for k, f in futures.items()}
        after = sorted(os.listdir(full)) if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", str(full)], capture_output=True)
        if not IS_ROOT:
            (base / "ro").chmod(0o755)
    results["_full_listing"] = (before, after)
    return results


def test_ckpt_dir_under_a_file(dir_results):
    d, proc = dir_results["under_file"]
    assert_user_error(proc, d, "ckpt_save_dir")
    _no_training(proc)


def test_ckpt_dir_read_only(dir_results):
    d, proc = dir_results["read_only"]
    assert_user_error(proc, d, "ckpt_save_dir")
    _no_training(proc)


def test_ckpt_dir_full_disk(dir_results):
    if "full" not in dir_results:
        pytest.skip("cannot mount a tiny tmpfs here (needs root / CAP_SYS_ADMIN)")
    d, proc = dir_results["full"]
    assert_user_error(proc, d, "ckpt_save_dir")
    _no_training(proc)


def test_ckpt_dir_full_disk_leaves_no_file(dir_results):
    if "full" not in dir_results:
        pytest.skip("cannot mount a tiny tmpfs here (needs root / CAP_SYS_ADMIN)")
    before, after = dir_results["_full_listing"]
    assert after == before, f"left behind: {sorted(set(after) - set(before))}"


# ----------------------------------------------------------------------------- atomic save / find_latest
class _Tiny:
    @staticmethod
    def make():
        from mindspore import nn

        class Tiny(nn.Cell):
            def __init__(self):
                super().__init__()
                self.fc = nn.Dense(3, 2)

            def construct(self, x):
                return self.fc(x)
        return Tiny()


def test_kill_during_write_leaves_no_file(tmp_path, monkeypatch):
    import mindspore as ms
    from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic

    final = tmp_path / "res2net50-3_10.ckpt"
    calls = []

    def half_then_die(save_obj, ckpt_file_name, *a, **kw):
        calls.append(ckpt_file_name)
        name = ckpt_file_name if ckpt_file_name.endswith(".ckpt") else ckpt_file_name + ".ckpt"
        with open(name, "wb") as f:
            f.write(b"\x0a\x05half")
        with open(ckpt_file_name + ".tmp", "wb") as f:  # MindSpore's own partial file
            f.write(b"half")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(ms, "save_checkpoint", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint_atomic(_Tiny.make(), str(final), extra={"epoch": 3})
    assert calls, "the monkeypatched writer was not used"
    assert not final.exists()
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


def test_find_latest_skips_tmp_and_unreadable(tmp_path):
    from mindcv_res2net.weights.checkpoint_file import read_checkpoint_meta, save_checkpoint_atomic
    from mindcv_res2net.training.checkpoint_manager import CheckpointManager

    net = _Tiny.make()
    good = tmp_path / "res2net50-4_10.ckpt"
    save_checkpoint_atomic(net, str(good), extra={"epoch": 4, "global_step": 40})
    assert read_checkpoint_meta(str(good))["epoch"] == 4
    # garbage under a newer final name
    (tmp_path / "res2net50-5_10.ckpt").write_bytes(b"\x00garbage\xff" * 10)
    # a truncated copy of a valid file under an even newer name
    newer = tmp_path / "res2net50-6_10.ckpt.src"
    save_checkpoint_atomic(net, str(tmp_path / "src.ckpt"), extra={"epoch": 6})
    blob = (tmp_path / "src.ckpt").read_bytes()
    (tmp_path / "src.ckpt").unlink()
    (tmp_path / "res2net50-6_10.ckpt").write_bytes(blob[: len(blob) // 2])
    # complete, valid files left under temporary names (kill between write and rename)
    for tmp_name in ("res2net50-7_10.ckpt.tmp", "res2net50-8_10.ckpt.tmp.ckpt", "res2net50-9_10.ckpt.tmp.tmp"):
        (tmp_path / tmp_name).write_bytes(blob)
    assert not newer.exists()

    manager = CheckpointManager(str(tmp_path), "res2net50")
    assert manager.find_latest() == str(good)

    # control: without the bad files the newest valid one wins (the test can tell them apart)
    save_checkpoint_atomic(net, str(tmp_path / "res2net50-10_10.ckpt"), extra={"epoch": 10})
    assert manager.find_latest() == str(tmp_path / "res2net50-10_10.ckpt")
