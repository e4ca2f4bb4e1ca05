"""Checkpoint folders and the weights cache when the folder is shared or hostile: symbolic links
planted at the names the toolkit creates, file systems without locks, staging files left by killed
writers. No torch needed."""
import errno
import fcntl
import logging
import os
import socket
import subprocess
import sys

import pytest

from mindcv_res2net import UserError
from mindcv_res2net import atomic_io
from mindcv_res2net.training import checkpoint_manager as cm
from mindcv_res2net.training.checkpoint_manager import CheckpointManager, RunLock, probe_writable
from mindcv_res2net.weights import download_cache as weights_cache


@pytest.fixture
def victim(tmp_path):
    """A file outside the folder that a symbolic link points at; it must never change."""
    path = tmp_path / "outside" / "precious.txt"
    path.parent.mkdir()
    path.write_bytes(b"the user's own file\n")
    os.chmod(path, 0o600)
    return path


def _unchanged(victim):
    return victim.read_bytes() == b"the user's own file\n" and os.stat(victim).st_mode & 0o777 == 0o600


# ----------------------------------------------------------------------------- symbolic links
def test_run_lock_refuses_a_symlink_and_leaves_its_target_alone(tmp_path, victim):
    folder = tmp_path / "run"
    folder.mkdir()
    os.symlink(victim, folder / ".run.lock")
    with pytest.raises(UserError) as err:
        RunLock(str(folder)).acquire()
    msg = str(err.value)
    assert str(folder / ".run.lock") in msg and "symbolic link" in msg and "remove it" in msg.lower()
    assert _unchanged(victim)
    os.remove(folder / ".run.lock")  # doing what the message says works
    RunLock(str(folder)).acquire().release()


def test_write_probe_never_writes_through_a_symlink(tmp_path, victim):
    folder = tmp_path / "run"
    folder.mkdir()
    os.symlink(victim, folder / f".write_probe_{os.getpid()}")  # the name the probe used to take
    probe_writable(str(folder))
    assert _unchanged(victim)
    assert os.listdir(folder) == [f".write_probe_{os.getpid()}"]  # the probe left nothing of its own


def test_write_probe_takes_a_fresh_name_when_its_name_is_taken(tmp_path, victim, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    tokens = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(cm.secrets, "token_hex", lambda n: next(tokens))
    planted = folder / f".write_probe_{os.getpid()}_aaaaaaaaaaaa"
    os.symlink(victim, planted)
    probe_writable(str(folder))
    assert _unchanged(victim) and os.listdir(folder) == [planted.name]


def test_weights_cache_lock_refuses_a_symlink(tmp_path, victim):
    cache = tmp_path / "cache"
    cache.mkdir()
    target = str(cache / "res2net50-f42cf71b.ckpt")
    os.symlink(victim, target + ".lock")
    with pytest.raises(UserError) as err:
        with weights_cache.cache_lock(target):
            pass
    msg = str(err.value)
    assert target + ".lock" in msg and "symbolic link" in msg and "remove it" in msg.lower()
    assert _unchanged(victim) and os.path.islink(target + ".lock")


def test_atomic_write_replaces_a_symlink_and_never_follows_one(tmp_path, victim):
    folder = tmp_path / "run"
    folder.mkdir()
    # a link at the final name is replaced by the new file; its target is untouched
    os.symlink(victim, folder / "checkpoints.json")
    atomic_io.write_text_atomic(str(folder / "checkpoints.json"), "{}\n", "checkpoint index")
    assert not os.path.islink(folder / "checkpoints.json")
    assert (folder / "checkpoints.json").read_text() == "{}\n" and _unchanged(victim)
    # a staging name swapped for a link before the commit: refused, nothing renamed, no chmod through it
    staged = atomic_io.staging_path(str(folder / "metrics.csv"))
    os.symlink(victim, staged)
    with pytest.raises(UserError, match="could not write metrics file .*metrics.csv"):
        atomic_io.commit_staged(staged, str(folder / "metrics.csv"), "metrics file")
    assert _unchanged(victim) and not os.path.lexists(folder / "metrics.csv")
    assert not os.path.lexists(staged)


# ----------------------------------------------------------------------------- file systems without locks
def test_a_folder_without_file_locks_is_not_called_busy(tmp_path, monkeypatch, caplog):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    monkeypatch.delenv(cm.ENV_NO_RUN_LOCK, raising=False)
    with pytest.raises(UserError) as err:
        RunLock(str(tmp_path)).acquire()
    msg = str(err.value)
    assert "in use by another training run" not in msg
    assert str(tmp_path) in msg and "ENOLCK" in msg and "does not support file locks" in msg
    assert "local disk" in msg and f"{cm.ENV_NO_RUN_LOCK}=1" in msg
    # the documented way out: run without the lock, said in the log
    monkeypatch.setenv(cm.ENV_NO_RUN_LOCK, "1")
    with caplog.at_level(logging.WARNING, logger=cm.__name__):
        lock = RunLock(str(tmp_path)).acquire()
    lock.release()
    assert "without the run lock" in caplog.text and str(tmp_path) in caplog.text


def test_a_busy_folder_is_still_refused_as_busy(tmp_path, monkeypatch):
    def busy(fd, op):
        raise BlockingIOError(errno.EWOULDBLOCK, "Resource temporarily unavailable")

    monkeypatch.setattr(fcntl, "flock", busy)
    monkeypatch.setenv(cm.ENV_NO_RUN_LOCK, "1")  # never lets two runs share a folder
    with pytest.raises(UserError, match="is in use by another training run"):
        RunLock(str(tmp_path)).acquire()


# ----------------------------------------------------------------------------- staging leftovers
def _exited_pid():
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                         text=True, check=True, timeout=60)
    return int(out.stdout)


def _staging(folder, target, pid, suffix="", size=0, age_s=0):
    """A staging file of ``folder/target`` as process ``pid`` of this host names it, ``size`` bytes."""
    name = os.path.basename(atomic_io.staging_path(os.path.join(folder, target), suffix))
    mark = f"{atomic_io.STAGING_MARK}{os.getpid()}-"
    assert mark in name
    path = os.path.join(folder, name.replace(mark, f"{atomic_io.STAGING_MARK}{pid}-"))
    with open(path, "wb") as f:
        f.write(b"\1" * size)
    if age_s:
        os.utime(path, (os.path.getmtime(path) - age_s,) * 2)
    return path


def test_staging_files_of_killed_writers_are_removed_when_a_run_starts(tmp_path, monkeypatch, caplog, victim):
    folder = str(tmp_path / "run")
    os.makedirs(os.path.join(folder, "logs"))
    dead = _exited_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        gone = [_staging(folder, "res2net50-3_10.ckpt", dead, ".ckpt", 1_500_000),
                _staging(folder, "res2net50-3_10.ckpt", dead, ".tmp", 700_001),  # MindSpore's partial file
                _staging(folder, "checkpoints.json", dead, "", 123)]
        kept = [_staging(folder, "metrics.csv", live.pid, "", 50),  # a live writer on this host
                _staging(folder, "result.log", os.getpid(), "", 60)]  # this very process
        with monkeypatch.context() as m:  # written on another host: its pid says nothing here
            m.setattr(socket, "gethostname", lambda: "another-host.example")
            kept.append(_staging(folder, "config.yaml", dead, "", 70))  # changed a moment ago
            gone.append(_staging(folder, "res2net50_best.ckpt", dead, ".ckpt", 4000, age_s=7200))
        # a name written by an earlier version (no host in it), unchanged for two hours
        old = os.path.join(folder, f".benchmark.json{atomic_io.STAGING_MARK}{dead}-0123456789ab")
        with open(old, "wb") as f:
            f.write(b"\1" * 333)
        os.utime(old, (os.path.getmtime(old) - 7200,) * 2)
        gone.append(old)
        for name in ("res2net50-1_10.ckpt", "plan.staging-notes.txt", ".hidden"):  # not staging files
            kept.append(os.path.join(folder, name))
            with open(kept[-1], "wb") as f:
                f.write(b"x")
        kept.append(os.path.join(folder, os.path.basename(gone[0]) + "-dir"))
        os.mkdir(kept[-1])  # a folder is never removed
        kept.append(os.path.join(folder, os.path.basename(gone[2]).replace(str(dead), str(_exited_pid()))))
        os.symlink(victim, kept[-1])  # nor a symbolic link (nothing this toolkit writes)
        freed = sum(os.path.getsize(p) for p in gone)

        logger = logging.getLogger("mindcv_res2net.test_shared_folders")
        with caplog.at_level(logging.INFO, logger=logger.name):
            CheckpointManager(folder, "res2net50").start_fresh(overwrite=True, logger=logger)
        left = set(os.listdir(folder))
        assert not left & {os.path.basename(p) for p in gone}
        assert {os.path.basename(p) for p in kept} <= left
        assert _unchanged(victim)
        lines = [r.getMessage() for r in caplog.records if "leftover staging" in r.getMessage()]
        assert len(lines) == 1, lines
        assert f"removed {len(gone)} leftover staging file(s)" in lines[0] and folder in lines[0]
        assert f"{freed / 2 ** 20:.1f} MiB ({freed} bytes) freed" in lines[0]
        # a resumed run cleans up the same way
        again = _staging(folder, "res2net50-4_10.ckpt", dead, ".ckpt", 10)
        CheckpointManager(folder, "res2net50").continue_run({"epoch": 3}, "x.ckpt", overwrite=True, logger=logger)
        assert not os.path.exists(again)
    finally:
        live.kill()
        live.wait()


def test_staging_names_carry_pid_and_host():
    name = os.path.basename(atomic_io.staging_path("/somewhere/res2net50-3_10.ckpt", ".ckpt"))
    pid, host = atomic_io.staging_owner(name)
    assert pid == os.getpid() and host == atomic_io.host_tag()
    assert atomic_io.staging_owner(f".m.csv{atomic_io.STAGING_MARK}12-0123456789ab") == (12, None)
    for other in ("plan.staging-notes.txt", ".m.csv.staging-x-0123456789ab", "res2net50-3_10.ckpt"):
        assert atomic_io.staging_owner(other) is None
