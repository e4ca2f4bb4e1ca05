"""The checkpoint folder's life over several runs: a reused folder, a resume from an earlier epoch or
from another working directory, a kill between the best and the epoch checkpoint, write errors
(EIO, a full disk), concurrent writers, two runs in one folder, the run logs on resume.

Unit-level on a tiny cell (fast); ``train.py`` itself in ``test_resume_checks.py``.
"""
import errno
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from mindcv_res2net import atomic_io
from mindcv_res2net.weights.checkpoint_file import read_checkpoint, read_checkpoint_meta, save_checkpoint_atomic
from mindcv_res2net.training.checkpoint_manager import CheckpointManager, RunLock
from mindcv_res2net.training.run_log import EpochRecords, keep_previous_version
from mindcv_res2net.errors import UserError

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _params(value):
    """A small 'train-step' state whose every value is ``value`` (tells files apart)."""
    return {"fc.weight": np.full((4, 3), value, np.float32), "fc.bias": np.full((4,), value, np.float32)}


def _save_epochs(manager, epochs, steps=10, marker=0.0, metric=None):
    for e in epochs:
        manager.save(_params(marker + e), e, steps, {"epoch": e, "model": "res2net50", "best_top1": -1.0},
                     metric=metric(e) if metric else None)


def _marker(path):
    return float(read_checkpoint(path)["fc.bias"][0])


def _files(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".ckpt"))


# ----------------------------------------------------------------------------- 1. a reused folder
def test_fresh_run_in_used_folder_is_refused_and_overwrite_leaves_old_files(tmp_path):
    old = CheckpointManager(str(tmp_path), "res2net50", keep_max=2)
    old.start_fresh()
    _save_epochs(old, [1, 2, 3], steps=10, marker=100.0)
    old_files = _files(tmp_path)
    assert old_files == ["res2net50-2_10.ckpt", "res2net50-3_10.ckpt"]

    with pytest.raises(UserError) as info:
        CheckpointManager(str(tmp_path), "res2net50").start_fresh()
    assert "--overwrite" in str(info.value) and "--resume auto" in str(info.value)
    assert str(tmp_path) in str(info.value) and "res2net50-3_10.ckpt" in str(info.value)

    new = CheckpointManager(str(tmp_path), "res2net50", keep_max=1)
    new.start_fresh(overwrite=True)
    assert new.find_latest() is None, "a fresh run's --resume auto must not pick the earlier run's epoch 3"
    _save_epochs(new, [1, 2], steps=20, marker=200.0)
    # the new run rotated its own epoch 1 and nothing of the earlier run
    assert _files(tmp_path) == sorted(old_files + ["res2net50-2_20.ckpt"])
    latest = CheckpointManager(str(tmp_path), "res2net50").find_latest()
    assert latest == str(tmp_path / "res2net50-2_20.ckpt") and _marker(latest) == 202.0


def test_resume_from_earlier_epoch_drops_later_entries(tmp_path):
    run = CheckpointManager(str(tmp_path), "res2net50", keep_max=2)
    run.start_fresh()
    _save_epochs(run, [1, 2, 3, 4], marker=0.0)  # files 3, 4 kept
    meta = read_checkpoint_meta(str(tmp_path / "res2net50-3_10.ckpt"))

    again = CheckpointManager(str(tmp_path), "res2net50", keep_max=2)
    again.continue_run(meta, str(tmp_path / "res2net50-3_10.ckpt"))
    assert [r["epoch"] for r in again.records] == [3]
    _save_epochs(again, [4], marker=50.0)  # the resumed branch's epoch 4 replaces the abandoned one
    latest = CheckpointManager(str(tmp_path), "res2net50").find_latest()
    assert latest == str(tmp_path / "res2net50-4_10.ckpt") and _marker(latest) == 54.0
    _save_epochs(again, [5], marker=50.0)
    assert _files(tmp_path) == ["res2net50-4_10.ckpt", "res2net50-5_10.ckpt"]


def test_resume_from_epoch_2_of_5_keeps_later_files_out_of_rotation(tmp_path):
    run = CheckpointManager(str(tmp_path), "res2net50", keep_max=5)
    run.start_fresh()
    _save_epochs(run, [1, 2, 3, 4, 5])
    meta = read_checkpoint_meta(str(tmp_path / "res2net50-2_10.ckpt"))
    again = CheckpointManager(str(tmp_path), "res2net50", keep_max=1)
    again.continue_run(meta, "x")
    _save_epochs(again, [3], marker=70.0)
    # rotation removed the run's epoch 2 (kept in its index) and the new 3 is the resume point;
    # the abandoned 4 and 5 are no longer indexed: kept on disk, never picked by --resume auto
    assert "res2net50-2_10.ckpt" not in _files(tmp_path)
    assert {"res2net50-4_10.ckpt", "res2net50-5_10.ckpt"} <= set(_files(tmp_path))
    assert CheckpointManager(str(tmp_path), "res2net50").find_latest() == str(tmp_path / "res2net50-3_10.ckpt")


# ----------------------------------------------------------------------------- 2. another cwd
def test_index_names_are_relative_to_the_folder_and_never_reach_outside(tmp_path, monkeypatch):
    exp_a, exp_b = tmp_path / "a", tmp_path / "b"
    (exp_b / "ckpt").mkdir(parents=True)
    monkeypatch.chdir(exp_a.mkdir() or exp_a)
    run = CheckpointManager("ckpt", "res2net50", keep_max=1)
    run.start_fresh()
    _save_epochs(run, [1])
    index = json.loads((exp_a / "ckpt" / "checkpoints.json").read_text())
    assert [r["name"] for r in index["records"]] == ["res2net50-1_10.ckpt"]

    # another experiment's same-named file, in the cwd we resume from
    save_checkpoint_atomic(_params(9.0), str(exp_b / "ckpt" / "res2net50-1_10.ckpt"), extra={"epoch": 1})
    monkeypatch.chdir(exp_b)
    resumed = CheckpointManager(str(exp_a / "ckpt"), "res2net50", keep_max=1)
    path = resumed.find_latest()
    assert path == str(exp_a / "ckpt" / "res2net50-1_10.ckpt")
    resumed.continue_run(read_checkpoint_meta(path), path)
    _save_epochs(resumed, [2])
    assert _files(exp_a / "ckpt") == ["res2net50-2_10.ckpt"], "the run's own epoch 1 is rotated"
    assert _files(exp_b / "ckpt") == ["res2net50-1_10.ckpt"], "the other experiment's file is untouched"

    # a hand-edited index that points outside the folder is ignored, never deleted through
    outside = tmp_path / "outside.ckpt"
    save_checkpoint_atomic(_params(1.0), str(outside), extra={"epoch": 1})
    index = json.loads((exp_a / "ckpt" / "checkpoints.json").read_text())
    index["records"].insert(0, {"name": "../outside.ckpt", "epoch": 0, "metric": None})
    (exp_a / "ckpt" / "checkpoints.json").write_text(json.dumps(index))
    again = CheckpointManager(str(exp_a / "ckpt"), "res2net50", keep_max=1)
    again.continue_run(read_checkpoint_meta(str(exp_a / "ckpt" / "res2net50-2_10.ckpt")), "x")
    _save_epochs(again, [3, 4])
    assert outside.exists()


def test_legacy_index_with_cwd_relative_paths_is_read_by_file_name(tmp_path):
    directory = tmp_path / "ckpt"
    for e in (1, 2):
        save_checkpoint_atomic(_params(e), str(directory / f"res2net50-{e}_10.ckpt"), extra={"epoch": e})
    legacy = [{"path": f"some/cwd/ckpt/res2net50-{e}_10.ckpt", "epoch": e, "metric": None} for e in (1, 2)]
    (directory / "checkpoints.json").write_text(json.dumps(legacy))
    manager = CheckpointManager(str(directory), "res2net50", keep_max=1)
    path = manager.find_latest()
    assert path == str(directory / "res2net50-2_10.ckpt")
    manager.continue_run(read_checkpoint_meta(path), path)
    _save_epochs(manager, [3])
    assert _files(directory) == ["res2net50-3_10.ckpt"]


# ----------------------------------------------------------------------------- 5. best vs epoch order
class _Killed(Exception):
    pass


@pytest.mark.parametrize("kill_at", [0, 1, 2])
def test_kill_between_best_and_epoch_checkpoint_keeps_the_pair_consistent(tmp_path, monkeypatch, kill_at):
    """Epoch 1 (top-1 0.5) is saved; epoch 2 reaches 0.8 and the process dies at write ``kill_at`` of
    epoch 2 (0: before anything, 1: after the best file, 2: after the epoch file). Whatever was
    written, the resume point's best_top1 never exceeds what ``_best.ckpt`` holds, and the best
    file always holds the best top-1 of a model that was saved."""
    from mindcv_res2net.training import checkpoint_manager as cm

    run = CheckpointManager(str(tmp_path), "res2net50")
    run.start_fresh()
    meta1 = {"epoch": 1, "model": "res2net50", "best_top1": 0.5}
    run.save(_params(1.0), 1, 10, meta1, metric=0.5, new_best=True)

    real, calls = cm.save_checkpoint_atomic, []

    def dying(cell, path, extra=None):
        if len(calls) == kill_at:
            raise _Killed(path)
        calls.append(path)
        return real(cell, path, extra=extra)

    monkeypatch.setattr(cm, "save_checkpoint_atomic", dying)
    if kill_at == 2:  # both files written, the process dies before the index lists the epoch file
        monkeypatch.setattr(run, "_write_index", lambda: (_ for _ in ()).throw(_Killed("index")))
    with pytest.raises(_Killed):
        run.save(_params(2.0), 2, 10, {"epoch": 2, "model": "res2net50", "best_top1": 0.8}, metric=0.8,
                 new_best=True)
    monkeypatch.undo()
    assert len(calls) == kill_at

    resumed = CheckpointManager(str(tmp_path), "res2net50")
    path = resumed.find_latest()
    meta = read_checkpoint_meta(path)
    resumed.continue_run(meta, path)
    best_meta = read_checkpoint_meta(str(tmp_path / "res2net50_best.ckpt"))
    assert meta["best_top1"] <= best_meta["top1"], (kill_at, meta, best_meta)
    on_disk = resumed.best_top1_on_disk()
    assert on_disk == best_meta["top1"]
    # the trainer resumes with max(meta, on disk): re-running epoch 2 to the same 0.8 is not "new best"
    assert max(meta["best_top1"], on_disk) == (0.8 if kill_at >= 1 else 0.5)


def test_resume_from_an_earlier_epoch_does_not_overwrite_a_better_best(tmp_path):
    run = CheckpointManager(str(tmp_path), "res2net50")
    run.start_fresh()
    run.save(_params(1.0), 1, 10, {"epoch": 1, "best_top1": 0.4}, metric=0.4, new_best=True)
    run.save(_params(2.0), 2, 10, {"epoch": 2, "best_top1": 0.9}, metric=0.9, new_best=True)
    meta = read_checkpoint_meta(str(tmp_path / "res2net50-1_10.ckpt"))
    again = CheckpointManager(str(tmp_path), "res2net50")
    again.continue_run(meta, "x")
    assert max(meta["best_top1"], again.best_top1_on_disk()) == 0.9


# ----------------------------------------------------------------------------- 6. write errors
def test_fsync_error_keeps_the_old_file_and_fails_loudly(tmp_path, monkeypatch):
    target = tmp_path / "res2net50_best.ckpt"
    save_checkpoint_atomic(_params(1.0), str(target), extra={"epoch": 1})
    before = target.read_bytes()

    def eio(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(UserError) as info:
        save_checkpoint_atomic(_params(2.0), str(target), extra={"epoch": 2})
    monkeypatch.undo()
    assert str(target) in str(info.value) and "Input/output error" in str(info.value)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["res2net50_best.ckpt"], "no staging file left behind"


def test_index_write_error_is_loud(tmp_path, monkeypatch):
    run = CheckpointManager(str(tmp_path), "res2net50")
    run.start_fresh()
    _save_epochs(run, [1])
    index_before = (tmp_path / "checkpoints.json").read_text()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(UserError, match="No space left"):
        _save_epochs(run, [2])
    monkeypatch.undo()
    assert (tmp_path / "checkpoints.json").read_text() == index_before


@pytest.mark.skipif(not IS_ROOT, reason="mounting a tiny tmpfs needs root")
def test_full_disk_during_save_keeps_the_old_checkpoint(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(full)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        target = full / "res2net50_best.ckpt"
        save_checkpoint_atomic(_params(1.0), str(target), extra={"epoch": 1})
        before = target.read_bytes()
        big = {"w": np.ones((256, 1024), np.float32)}  # 1 MiB: does not fit
        with pytest.raises(UserError) as info:
            save_checkpoint_atomic(big, str(target), extra={"epoch": 2})
        assert str(target) in str(info.value)
        assert target.read_bytes() == before
        assert sorted(os.listdir(full)) == ["res2net50_best.ckpt"]
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)


def test_checkpoint_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = save_checkpoint_atomic(_params(1.0), str(tmp_path / "a.ckpt"))
        index = atomic_io.write_text_atomic(str(tmp_path / "i.json"), "{}")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert os.stat(index).st_mode & 0o777 == 0o640


# ----------------------------------------------------------------------------- 7. concurrent writers
def test_fifteen_concurrent_saves_of_one_file_all_succeed(tmp_path):
    target = str(tmp_path / "res2net50-1_10.ckpt")
    errors, barrier = [], threading.Barrier(15)

    def save(i):
        barrier.wait()
        try:
            save_checkpoint_atomic(_params(float(i)), target, extra={"epoch": 1, "writer": i})
        except Exception as exc:  # noqa: BLE001 - every failure is the finding
            errors.append(repr(exc))

    threads = [threading.Thread(target=save, args=(i,)) for i in range(15)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    writer = read_checkpoint_meta(target)["writer"]
    assert _marker(target) == float(writer), "the file is one writer's whole checkpoint"
    assert os.listdir(tmp_path) == ["res2net50-1_10.ckpt"]


def test_second_run_in_a_held_folder_is_refused(tmp_path):
    lock = RunLock(str(tmp_path)).acquire()
    try:
        code = ("import sys; from mindcv_res2net.training.checkpoint_manager import RunLock\n"
                "from mindcv_res2net.errors import UserError\n"
                f"try:\n RunLock({str(tmp_path)!r}).acquire()\nexcept UserError as e:\n print(e); sys.exit(2)\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert str(tmp_path) in proc.stdout and f"pid {os.getpid()}" in proc.stdout
    finally:
        lock.release()
    RunLock(str(tmp_path)).acquire().release()  # free again once the first run ends


# ----------------------------------------------------------------------------- 8. logs
def _row(e):
    return {"epoch": e, "train_loss": 1.0 / e, "lr": 0.1, "epoch_time_s": 1.0, "val_top1": 0.1 * e}


def test_metrics_on_resume_drop_abandoned_epochs(tmp_path):
    records = EpochRecords(str(tmp_path), enabled=True)
    for e in (1, 2, 3, 4):
        records.add(_row(e))
    resumed = EpochRecords(str(tmp_path), enabled=True, resume_epoch=2)
    resumed.add(_row(3))
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3"]
    result = (tmp_path / "result.log").read_text().splitlines()
    assert [line.split("\t")[0] for line in result[1:]] == ["1", "2", "3"]


def test_fresh_run_keeps_the_earlier_logs(tmp_path):
    records = EpochRecords(str(tmp_path), enabled=True)
    records.add(_row(1))
    earlier = (tmp_path / "result.log").read_text()
    fresh = EpochRecords(str(tmp_path), enabled=True)
    assert len(fresh.kept) == 2
    kept_result = [k for k in fresh.kept if k.endswith(".log")][0]
    assert open(kept_result).read() == earlier
    assert (tmp_path / "result.log").read_text().count("\n") == 1  # the new run's header only


def test_config_is_kept_when_it_changes(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("epoch_size: 2\n")
    assert keep_previous_version(str(path), "epoch_size: 2\n") is None  # same config: nothing to keep
    kept = keep_previous_version(str(path), "epoch_size: 4\n")
    assert kept and open(kept).read() == "epoch_size: 2\n" and not path.exists()


def test_config_is_not_kept_for_a_resume_with_the_same_configuration(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("epoch_size: 2\nresume: null\noverwrite: false\n")
    same = "epoch_size: 2\nresume: auto\noverwrite: false\n"
    assert keep_previous_version(str(path), same, ignore_prefixes=("resume:", "overwrite:")) is None
    assert path.exists()
    assert keep_previous_version(str(path), "epoch_size: 4\nresume: auto\n", ignore_prefixes=("resume:",))


def test_a_damaged_index_is_ignored_not_fatal(tmp_path):
    (tmp_path / "checkpoints.json").write_text('{"format": 2, "run_id": "x", "records": [1, "a", null]}')
    manager = CheckpointManager(str(tmp_path), "res2net50")
    assert manager.find_latest() is None
    manager.start_fresh()  # nothing of another run is listed: a fresh start is allowed
