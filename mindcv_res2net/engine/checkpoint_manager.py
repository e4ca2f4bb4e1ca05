"""Training checkpoints: naming, rotation, the best model, and finding where to resume.

Files are ``{ckpt_save_dir}/{model}-{epoch}_{step}.ckpt`` (MindCV's names: ``step`` is the number of
batches per epoch) and ``{model}_best.ckpt``. Each holds the model, the optimizer state, the EMA
weights, the loss-scale state, and metadata (epoch, global step, best top-1, class names). Every
file is written to a temporary name and renamed, so a kill never leaves a partial checkpoint
under a name that ``--resume auto`` would pick.
"""
import glob
import json
import logging
import os
import re

from ..checkpoint import read_checkpoint_meta, save_checkpoint_atomic
from ..errors import UserError

_logger = logging.getLogger(__name__)

POLICIES = ("latest_k", "top_k")


def probe_writable(directory):
    """Create ``directory`` and prove a file can be written there, before any training starts."""
    probe = os.path.join(directory, f".write_probe_{os.getpid()}")
    try:
        os.makedirs(directory, exist_ok=True)
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 65536)  # a little data, so a full disk shows now
                f.flush()
                os.fsync(f.fileno())
        finally:
            if os.path.exists(probe):
                os.remove(probe)
    except OSError as exc:
        raise UserError(f"cannot write checkpoints to ckpt_save_dir {directory!r}: {exc.strerror or exc}. "
                        "Pass --ckpt_save_dir with a writable directory that has free space.") from None


class CheckpointManager:
    """Saves epoch checkpoints with latest_k / top_k rotation and the best one; finds the resume point."""

    def __init__(self, directory, model_name, keep_max=10, policy="latest_k", enabled=True):
        if policy not in POLICIES:
            raise UserError(f"unknown ckpt_save_policy {policy!r}: choose one of {', '.join(POLICIES)}")
        self.directory = directory
        self.model_name = model_name
        self.keep_max = max(1, int(keep_max))
        self.policy = policy
        self.enabled = enabled  # rank 0 only
        self.index_path = os.path.join(directory, "checkpoints.json")
        self.records = self._read_index()

    # ---------------------------------------------------------------- naming
    def path_for(self, epoch, steps_per_epoch):
        return os.path.join(self.directory, f"{self.model_name}-{epoch}_{steps_per_epoch}.ckpt")

    @property
    def best_path(self):
        return os.path.join(self.directory, f"{self.model_name}_best.ckpt")

    # ---------------------------------------------------------------- saving
    def save(self, train_step_cell, epoch, steps_per_epoch, meta, metric=None):
        """Write the epoch checkpoint and rotate old ones. ``metric`` is the val top-1 (for top_k)."""
        if not self.enabled:
            return None
        path = self.path_for(epoch, steps_per_epoch)
        save_checkpoint_atomic(train_step_cell, path, extra=meta)
        self.records = [r for r in self.records if r["path"] != path]
        self.records.append({"path": path, "epoch": epoch, "metric": metric})
        self._rotate()
        self._write_index()
        return path

    def save_best(self, train_step_cell, meta):
        if self.enabled:
            save_checkpoint_atomic(train_step_cell, self.best_path, extra=meta)
        return self.best_path

    def _rotate(self):
        if len(self.records) <= self.keep_max:
            return
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
        for record in drop:
            try:
                os.remove(record["path"])
            except FileNotFoundError:
                pass
        self.records = sorted(keep, key=lambda r: r["epoch"])

    def _read_index(self):
        try:
            with open(self.index_path) as f:
                records = json.load(f)
            return [r for r in records if os.path.exists(r["path"])]
        except (OSError, ValueError):
            return []

    def _write_index(self):
        tmp = self.index_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.records, f, indent=1)
        os.replace(tmp, self.index_path)

    # ---------------------------------------------------------------- resuming
    def find_latest(self):
        """The newest complete epoch checkpoint of this model in the directory, or None.

        Temporary files are never considered; a file that cannot be read is skipped with a warning.
        """
        pattern = re.compile(re.escape(self.model_name) + r"-(\d+)_(\d+)\.ckpt$")
        found = []
        for path in glob.glob(os.path.join(glob.escape(self.directory), f"{glob.escape(self.model_name)}-*_*.ckpt")):
            m = pattern.search(os.path.basename(path))
            if m:
                found.append((int(m.group(1)), path))
        for _epoch, path in sorted(found, reverse=True):
            try:
                meta = read_checkpoint_meta(path)
            except UserError as exc:
                _logger.warning("skipping unreadable checkpoint %s: %s", path, exc)
                continue
            if "epoch" in meta:
                return path
            _logger.warning("skipping %s: it holds no training state (epoch)", path)
        return None
