"""Training checkpoints: one run per folder, naming, rotation, the best model, where to resume.

Files are ``{ckpt_save_dir}/{model}-{epoch}_{step}.ckpt`` (MindCV's names: ``step`` is the number of
batches per epoch) and ``{model}_best.ckpt``. Each holds the model, the optimizer state, the EMA
weights, the loss-scale state, and metadata (epoch, global step, best top-1, class names, run id).

The folder's index ``checkpoints.json`` belongs to one run (its ``run_id``, stored in every
checkpoint the run writes) and lists that run's epoch checkpoints by file name, relative to the
folder. Rules:

- A fresh run in a folder that holds another run's checkpoints is refused unless ``--overwrite``;
  with it, the new run starts a new index and leaves the earlier files alone (a file is replaced
  only when the new run writes the same name). ``--resume auto`` continues the run of the index.
- A resume from epoch k drops the index entries after k before anything is saved.
- Rotation (``keep_checkpoint_max``) only removes files listed in this run's index, inside the
  folder: never a file of another run, never a file elsewhere.
- The best checkpoint is written before the epoch checkpoint whose metadata records its top-1, and
  a resume takes the best top-1 from the best file itself: after a kill at any point the pair agrees,
  and a better ``_best.ckpt`` is never overwritten by a worse one.
- ``RunLock``: one live run per folder; a second one is refused with the first one's pid and host.
  A folder whose file system has no locks (some NFS / FUSE mounts: ``ENOLCK``) is refused with what
  to do: a local disk, or ``MINDCV_RES2NET_NO_RUN_LOCK=1`` to run there without the lock.
- When a run starts (``start_fresh`` / ``continue_run``), the staging files that killed writers left
  in the folder are removed (``atomic_io.remove_leftover_staging``) and the space freed is logged.
- The lock and the write probe are never created through a symbolic link (``O_NOFOLLOW``).

Every file is written through ``atomic_io`` (unique staging name, fsync, rename).
"""
import errno
import fcntl
import glob
import json
import logging
import os
import re
import secrets
import shlex
import socket
import stat
import time
import uuid

from .. import atomic_io
from ..weights.checkpoint_file import read_checkpoint_meta, save_checkpoint_atomic
from ..errors import UserError

_logger = logging.getLogger(__name__)

POLICIES = ("latest_k", "top_k")
INDEX_NAME = "checkpoints.json"
INDEX_FORMAT = 2
LOCK_NAME = ".run.lock"
ENV_NO_RUN_LOCK = "MINDCV_RES2NET_NO_RUN_LOCK"


def probe_writable(directory, what="checkpoints", key="ckpt_save_dir",
                   fix="Pass --ckpt_save_dir with a writable directory that has free space."):
    """Create ``directory`` and prove a file can be written there, before any training starts;
    else a ``UserError``: "cannot write {what} to {key} {directory}: {reason}. {fix}".

    The probe file gets a fresh unpredictable name, created with ``O_EXCL``: whatever already has
    that name (a symbolic link included) is never opened."""
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = _create_probe(directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\0" * 65536)  # a little data, so a full disk shows now
                f.flush()
                os.fsync(f.fileno())
        finally:
            os.remove(probe)
    except OSError as exc:
        raise UserError(f"cannot write {what} to {key} {directory!r}: {exc.strerror or exc}. {fix}") from None


def _create_probe(directory, tries=100):
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    for _ in range(tries):
        probe = os.path.join(directory, f".write_probe_{os.getpid()}_{secrets.token_hex(6)}")
        try:
            return os.open(probe, flags, 0o600), probe
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, f"no free name for a probe file after {tries} tries")


class RunLock:
    """An exclusive ``flock`` on ``{directory}/.run.lock`` held for the life of the training process.

    The kernel releases it when the process ends, however it ends, so a killed run never leaves a
    stale lock. The file records the holder (pid, host, start time) for the message a second run gets.
    Only ``EWOULDBLOCK`` means another run holds it; any other ``flock`` error means the folder's file
    system has no locks: refused with the fix, or (``MINDCV_RES2NET_NO_RUN_LOCK=1``) a warning and
    no lock (``locked`` False).
    """

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self.locked = False
        self._fd = None

    def acquire(self):
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise UserError(f"ckpt_save_dir {self.directory} is in use by another training run ({holder}): two "
                            "runs in one folder would overwrite each other's checkpoints. Wait for it to end, or "
                            "pass another --ckpt_save_dir.") from None
        except OSError as exc:
            os.close(fd)
            return self._without_locks(exc)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._fd = fd
        self.locked = True
        return self

    def _open(self):
        """The lock file, opened without following a symbolic link; a ``UserError`` otherwise."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UserError(f"the run lock {self.path} is a symbolic link: the lock file is never written "
                                f"through a link (it would overwrite the file it points to). Remove it (rm "
                                f"{shlex.quote(self.path)}) and start the run again.") from None
            raise UserError(f"cannot create the run lock {self.path}: {exc.strerror or exc}. Pass a "
                            "--ckpt_save_dir you can write to.") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UserError(f"the run lock {self.path} is not a regular file: remove it (rm "
                            f"{shlex.quote(self.path)}) and start the run again.")
        return fd

    def _without_locks(self, exc):
        code = errno.errorcode.get(exc.errno, str(exc.errno))
        if os.environ.get(ENV_NO_RUN_LOCK, "").strip() in ("1", "true", "yes"):
            _logger.warning("ckpt_save_dir %s: its file system does not support file locks (%s: %s); %s=1: "
                            "training without the run lock (make sure no other run uses this folder)",
                            self.directory, code, exc.strerror or exc, ENV_NO_RUN_LOCK)
            return self
        raise UserError(f"cannot lock ckpt_save_dir {self.directory}: its file system does not support file "
                        f"locks ({code}: {exc.strerror or exc}; some NFS and FUSE mounts). The lock is what "
                        f"refuses a second run in the same folder. Put --ckpt_save_dir on a local disk, or set "
                        f"{ENV_NO_RUN_LOCK}=1 to train there without the lock (then make sure no other run "
                        f"uses that folder).") from None

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.locked = False


class CheckpointManager:
    """Saves epoch checkpoints with latest_k / top_k rotation and the best one; finds the resume point.

    Call ``start_fresh`` or ``continue_run`` once before saving. ``enabled`` is False on every rank
    but 0 (only rank 0 writes).
    """

    def __init__(self, directory, model_name, keep_max=10, policy="latest_k", enabled=True):
        if policy not in POLICIES:
            raise UserError(f"unknown ckpt_save_policy {policy!r}: choose one of {', '.join(POLICIES)}")
        self.directory = os.path.abspath(directory)
        self.model_name = model_name
        self.keep_max = max(1, int(keep_max))
        self.policy = policy
        self.enabled = enabled
        self.index_path = os.path.join(self.directory, INDEX_NAME)
        self.run_id = None
        self.records = []
        self._pattern = re.compile(re.escape(model_name) + r"-(\d+)_(\d+)\.ckpt")

    # ---------------------------------------------------------------- naming
    def path_for(self, epoch, steps_per_epoch):
        return os.path.join(self.directory, f"{self.model_name}-{epoch}_{steps_per_epoch}.ckpt")

    @property
    def best_path(self):
        return os.path.join(self.directory, f"{self.model_name}_best.ckpt")

    def _resolve(self, name):
        """A record's file inside the folder, or None for a name that would point elsewhere."""
        if not isinstance(name, str) or not name or name != os.path.basename(name) or name.startswith("."):
            return None
        return os.path.join(self.directory, name)

    # ---------------------------------------------------------------- the index
    def _read_index(self):
        """``(run_id, records)`` of the folder's index; run_id None for an index written before run
        ids existed (a list of ``{"path", "epoch", "metric"}`` with cwd-relative paths: only their
        file names are kept). None when there is no readable index."""
        try:
            with open(self.index_path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            _logger.warning("ignoring unreadable checkpoint index %s: %s", self.index_path, exc)
            return None
        if isinstance(data, list):
            raw, run_id = [{**r, "name": os.path.basename(str(r.get("path", "")))} for r in data
                           if isinstance(r, dict)], None
        elif isinstance(data, dict):
            raw, run_id = data.get("records") or [], data.get("run_id")
        else:
            return None
        records = []
        for r in raw if isinstance(raw, list) else []:
            if not isinstance(r, dict):
                continue
            path = self._resolve(r.get("name"))
            if path and os.path.exists(path) and isinstance(r.get("epoch"), int):
                records.append({"name": r["name"], "epoch": r["epoch"], "metric": r.get("metric")})
        return run_id, sorted(records, key=lambda r: r["epoch"])

    def _write_index(self):
        if not self.enabled:
            return
        data = {"format": INDEX_FORMAT, "run_id": self.run_id, "model": self.model_name,
                "records": self.records}
        os.makedirs(self.directory, exist_ok=True)
        atomic_io.write_text_atomic(self.index_path, json.dumps(data, indent=1) + "\n", "checkpoint index")

    def _legacy_files(self):
        """Epoch checkpoints of this model found by name (folders without an index of our format)."""
        found = []
        for path in glob.glob(os.path.join(glob.escape(self.directory), f"{glob.escape(self.model_name)}-*_*.ckpt")):
            m = self._pattern.fullmatch(os.path.basename(path))
            if m:
                found.append((int(m.group(1)), path))
        return sorted(found, reverse=True)

    def earlier_files(self):
        """Checkpoint files of an earlier run in the folder (its index's files, else any by name)."""
        index = self._read_index()
        names = {r["name"] for r in index[1]} if index else set()
        names |= {os.path.basename(p) for _, p in self._legacy_files()}
        if os.path.exists(self.best_path):
            names.add(os.path.basename(self.best_path))
        return sorted(names)

    # ---------------------------------------------------------------- starting
    def _remove_leftovers(self, logger):
        """Delete the staging files of writes that were killed (a checkpoint's size each), see
        ``atomic_io.remove_leftover_staging``; one log line when there were any."""
        if not self.enabled:
            return
        count, freed = atomic_io.remove_leftover_staging(self.directory)
        if count:
            logger.info("removed %d leftover staging file(s) of interrupted writes from %s: %.1f MiB (%d bytes) "
                        "freed", count, self.directory, freed / 2 ** 20, freed)

    def start_fresh(self, overwrite=False, logger=None):
        """A new run in this folder: refuse a folder holding another run's checkpoints unless
        ``overwrite``; then a new run id and an empty index (the earlier files are left alone)."""
        logger = logger or _logger
        earlier = self.earlier_files()
        if earlier and not overwrite:
            raise UserError(
                f"ckpt_save_dir {self.directory} already holds checkpoints of an earlier run "
                f"({_preview(earlier)}). Pass --resume auto to continue that run, --overwrite to start a new "
                "run in this folder (the earlier files are left alone; same-named ones are replaced when this "
                "run writes them), or another --ckpt_save_dir.")
        if earlier:
            logger.info("--overwrite: starting a new run in %s; the %d earlier checkpoint file(s) there are "
                        "left alone and never rotated (%s)", self.directory, len(earlier), _preview(earlier))
        self._remove_leftovers(logger)
        self.run_id = uuid.uuid4().hex
        self.records = []
        self._write_index()

    def continue_run(self, meta, resume_path, overwrite=False, logger=None):
        """Continue the run that wrote ``resume_path`` (metadata ``meta``) from its epoch k: keep
        this run's index entries up to k, drop the later ones (before anything is saved)."""
        logger = logger or _logger
        epoch = int(meta["epoch"])
        run_id = meta.get("run_id")
        index = self._read_index()
        same_run = index is not None and (index[0] is None or index[0] == run_id)
        if index is not None and not same_run and index[1]:
            if not overwrite:
                raise UserError(
                    f"ckpt_save_dir {self.directory} holds checkpoints of another run ({_preview(r['name'] for r in index[1])}) "
                    f"than the one that wrote {resume_path}. Pass --overwrite to continue in this folder (those "
                    "files are left alone; same-named ones are replaced), or another --ckpt_save_dir.")
            logger.info("--overwrite: %s holds another run's checkpoints; they are left alone and never rotated",
                        self.directory)
        self._remove_leftovers(logger)
        self.run_id = run_id or uuid.uuid4().hex  # checkpoints from before run ids: a new id from now on
        records = index[1] if same_run else []
        self.records = [r for r in records if r["epoch"] <= epoch]
        dropped = [r["name"] for r in records if r["epoch"] > epoch]
        if dropped:
            logger.warning("resuming from epoch %d: the later checkpoint(s) %s leave this run's index (files kept "
                           "on disk, never rotated; same-named ones are replaced as training reaches them)",
                           epoch, ", ".join(dropped))
        self._write_index()

    def best_top1_on_disk(self):
        """The val top-1 recorded in this run's ``_best.ckpt``, or None (no file, another run, unreadable)."""
        if self.run_id is None or not os.path.exists(self.best_path):
            return None
        try:
            meta = read_checkpoint_meta(self.best_path)
        except UserError as exc:
            _logger.warning("cannot read %s: %s", self.best_path, exc)
            return None
        if meta.get("run_id") != self.run_id:
            return None
        value = meta.get("top1", meta.get("best_top1"))
        return float(value) if value is not None else None

    # ---------------------------------------------------------------- saving
    def save(self, train_step_cell, epoch, steps_per_epoch, meta, metric=None, epoch_checkpoint=True,
             new_best=False):
        """Write this epoch's files: the best checkpoint first (when ``new_best``), then the epoch
        checkpoint (when ``epoch_checkpoint``), then the index, then rotation. ``metric`` is the val
        top-1. Returns ``(epoch_path or None, best_path or None)``."""
        if not self.enabled:
            return None, None
        if self.run_id is None:
            raise RuntimeError("CheckpointManager.save before start_fresh / continue_run")
        meta = {**meta, "run_id": self.run_id}
        best = None
        if new_best:
            best = save_checkpoint_atomic(train_step_cell, self.best_path, extra={**meta, "top1": metric})
        path = None
        if epoch_checkpoint:
            path = save_checkpoint_atomic(train_step_cell, self.path_for(epoch, steps_per_epoch), extra=meta)
            name = os.path.basename(path)
            self.records = [r for r in self.records if r["name"] != name]
            self.records.append({"name": name, "epoch": epoch, "metric": metric})
            removed = self._rotate()
            self._write_index()
            for name in removed:  # after the index no longer lists them
                atomic_io.remove_quietly(os.path.join(self.directory, name))
        return path, best

    def _rotate(self):
        """Trim the records to ``keep_max``; returns the names to delete (all from this run's index)."""
        if len(self.records) <= self.keep_max:
            return []
        if self.policy == "top_k":
            key = lambda r: (r["metric"] if r["metric"] is not None else -1.0, r["epoch"])  # noqa: E731
        else:
            key = lambda r: r["epoch"]  # noqa: E731
        ordered = sorted(self.records, key=key, reverse=True)
        keep, drop = ordered[:self.keep_max], ordered[self.keep_max:]
        newest = max(self.records, key=lambda r: r["epoch"])
        if newest not in keep:  # the newest is always kept: it is where a resume starts
            drop.remove(newest)
            keep.append(newest)
        self.records = sorted(keep, key=lambda r: r["epoch"])
        return [r["name"] for r in drop if self._resolve(r["name"])]

    # ---------------------------------------------------------------- resuming
    def find_latest(self):
        """Where ``--resume auto`` continues: the newest readable checkpoint of the folder's run
        (from the index), or, in a folder without an index of this format, the newest complete epoch
        checkpoint of this model by name. None: nothing to resume.

        Temporary files are never considered; a file that cannot be read is skipped with a warning.
        """
        index = self._read_index()
        if index is not None and index[0] is not None:
            candidates = [(r["epoch"], self._resolve(r["name"])) for r in reversed(index[1])]
        else:
            candidates = self._legacy_files()
        for _epoch, path in candidates:
            try:
                meta = read_checkpoint_meta(path)
            except UserError as exc:
                _logger.warning("skipping unreadable checkpoint %s: %s", path, exc)
                continue
            if "epoch" in meta:
                return path
            _logger.warning("skipping %s: it holds no training state (epoch)", path)
        return None


def _preview(names, limit=3):
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
