"""TensorBoard event files of a training run (``--summary_dir DIR``, off by default).

Written with tensorboardX (an optional dependency: ``pip install tensorboardX``, or
``pip install -e ".[tensorboard]"`` in a checkout, which also brings the ``tensorboard`` viewer) on
rank 0 only; view them with ``tensorboard --logdir DIR``.

Step axis: every value sits at a *global step* = the number of training steps done when it was
measured (1-based: the first step of the run is step 1, the last step of epoch ``e`` (1-based) is
``e * steps_per_epoch``). Per-epoch values sit at the step that ends their epoch, so
``epoch/lr`` of epoch ``e`` and the ``train/lr`` logged at that epoch's last step share one x value.

Tags (all scalars):

==========================  ==================================================================
``train/loss``              loss of the step that closes each log interval (as the console line)
``train/lr``                learning rate of that step
``train/loss_scale``        loss scale after that step (1 without AMP)
``train/img_per_s``         images per second over the log interval, all ranks together
``train/data_wait_pct``     % of the log interval spent waiting for the data pipeline
``epoch/epoch``             the epoch number (1-based), to map steps to epochs
``epoch/train_loss``        mean train loss of the epoch (steps that overflowed left out)
``epoch/lr``                learning rate of the epoch's last step
``epoch/time_s``            wall time of the epoch
``epoch/train_img_per_s``   images per second over the epoch, all ranks together
``epoch/loader_img_per_s``  the data pipeline's own speed (measured once, before training)
``epoch/data_wait_pct``     % of the epoch spent waiting for data
``epoch/skipped_images``    unreadable images skipped in the epoch
``epoch/overflow_steps``    steps of the epoch skipped because their gradients overflowed
``val/top1``, ``val/top5``  validation accuracy as a fraction (0..1), epochs that validated only
``val/loss``                validation loss
==========================  ==================================================================

The ``epoch/`` and ``val/`` values are those of ``metrics.csv`` (float32 in the event file).

Resume: a run resumed after ``resume_step`` steps writes a new event file that marks every event
at a step > ``resume_step`` as orphaned (TensorBoard's ``purge_step`` mechanism: a
``SessionLog.START`` at step ``resume_step + 1``), so what the abandoned tail of the interrupted
run had written does not show up twice, and the new events continue the same step axis. A fresh
run (no resume) in a folder that holds event files of an earlier run moves them into
``previous-run-<time stamp>/`` inside it, where TensorBoard shows them as a run of their own.
TensorBoard's Python loader (``tensorboard --load_fast=false``, and ``EventAccumulator``, which the
tests read with) applies that marker exactly; the faster default loader drops the later points of a
series when its steps go back, which hides the same events once the resumed run logs that tag.

Every call writes its event synchronously and flushes it: a few small writes per log interval.
"""
import os
import sys
import time

from ..errors import UserError
from .checkpoint_manager import probe_writable

INSTALL_HINT = 'pip install tensorboardX (in a checkout: .venv/bin/pip install -e ".[tensorboard]")'

STEP_TAGS = {"loss": "train/loss", "lr": "train/lr", "loss_scale": "train/loss_scale",
             "img_per_s": "train/img_per_s", "data_wait_pct": "train/data_wait_pct"}
# metrics.csv column -> tag
EPOCH_TAGS = {"epoch": "epoch/epoch", "train_loss": "epoch/train_loss", "lr": "epoch/lr",
              "epoch_time_s": "epoch/time_s", "train_img_per_s": "epoch/train_img_per_s",
              "loader_img_per_s": "epoch/loader_img_per_s", "data_wait_pct": "epoch/data_wait_pct",
              "skipped_images": "epoch/skipped_images", "overflow_steps": "epoch/overflow_steps",
              "val_top1": "val/top1", "val_top5": "val/top5",
              "val_loss": "val/loss"}
EVENT_FILE_MARK = "tfevents"  # what TensorBoard looks for in a file name


def _tensorboardx():
    """tensorboardX's synchronous event-file writer and protobuf classes, or a UserError that says
    how to install it.

    ``tensorboardX`` imports PyTorch at import time when it is installed (only to accept torch
    tensors); a MindSpore training process has no use for a second framework (seconds and hundreds
    of MB), so PyTorch is hidden while tensorboardX is imported, unless it is loaded already.
    MindSpore is imported first: its protobuf modules fail to load (and the process aborts at
    exit) when another package's protobuf modules were loaded before them.
    """
    import mindspore  # noqa: F401 -- a no-op in the trainer, which has it already
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # ``import torch`` raises ImportError, which tensorboardX expects
    try:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary
    except ImportError as exc:
        raise UserError(f"--summary_dir needs the tensorboardX package, which is not installed ({exc}). "
                        f"Install it: {INSTALL_HINT}; or drop --summary_dir.") from None
    finally:
        if hide_torch and "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
    return EventsWriter, Event, SessionLog, Summary


def _event_files(directory):
    return sorted(n for n in os.listdir(directory)
                  if EVENT_FILE_MARK in n and os.path.isfile(os.path.join(directory, n)))


def _move_earlier_run_aside(directory):
    """Move the event files of an earlier run into ``previous-run-<stamp>/``; returns that folder."""
    names = _event_files(directory)
    if not names:
        return None
    newest = max(os.path.getmtime(os.path.join(directory, n)) for n in names)
    base = os.path.join(directory, "previous-run-" + time.strftime("%Y%m%d-%H%M%S", time.localtime(newest)))
    target, n = base, 1
    while os.path.exists(target):
        n += 1
        target = f"{base}-{n}"
    try:
        os.makedirs(target)
        for name in names:
            os.replace(os.path.join(directory, name), os.path.join(target, name))
    except OSError as exc:
        raise UserError(f"cannot move the earlier run's event files in summary_dir {directory!r} aside: "
                        f"{exc.strerror or exc}. Move or delete them, or pass another --summary_dir.") from None
    return target


def _wait_for_a_later_file_name(directory):
    """TensorBoard reads a run's event files in the order of their names, which start with the
    creation time in whole seconds (and tensorboardX truncates a file of the same name): wait (at
    most ~1 s) until a new name sorts after the files there."""
    stamps = []
    for name in _event_files(directory):
        parts = name.split(EVENT_FILE_MARK + ".", 1)[-1].split(".")
        if parts and parts[0].isdigit():
            stamps.append(int(parts[0]))
    if not stamps:
        return
    deadline = time.time() + 2.0
    while int(time.time()) <= max(stamps) and time.time() < deadline:
        time.sleep(0.05)


def _number(value):
    """A finite or non-finite float, or None for a missing value ("" / None in a metrics row)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class TrainingSummary:
    """Scalars of a training run as TensorBoard event files in ``summary_dir``.

    Args:
        summary_dir: the folder (created if missing); None turns the writer off.
        enabled: False (e.g. on ranks other than 0) turns it off: every method is then a no-op and
            no file or folder is made, nor is tensorboardX needed.
        resume_step: None for a fresh run; for a resumed run, the number of training steps done at
            the checkpoint it resumed from (``start_epoch * steps_per_epoch``). Events of earlier
            runs at later steps are then hidden from TensorBoard (see the module docstring).

    Every call writes its values synchronously (one event, flushed): TensorBoard sees them at once,
    and a killed run loses nothing it logged.

    Raises UserError when tensorboardX is missing or ``summary_dir`` cannot be written.
    """

    def __init__(self, summary_dir, enabled=True, resume_step=None):
        self.summary_dir = summary_dir
        self.enabled = bool(enabled and summary_dir)
        self.moved_aside = None  # where the event files of an earlier run were moved (fresh start)
        self.event_file = None  # the file this writer appends to
        self._file = None
        if not self.enabled:
            return
        if resume_step is not None and int(resume_step) < 0:
            raise ValueError(f"resume_step must be >= 0, got {resume_step}")
        events_writer, self._event, session_log, self._summary = _tensorboardx()
        probe_writable(summary_dir, "TensorBoard event files", "summary_dir",
                       "Pass --summary_dir with a folder you can write to, or drop --summary_dir.")
        if resume_step is None:
            self.moved_aside = _move_earlier_run_aside(summary_dir)
        else:
            _wait_for_a_later_file_name(summary_dir)
        before = set(_event_files(summary_dir))
        try:
            self._file = events_writer(os.path.join(summary_dir, "events"), filename_suffix=f".{os.getpid()}")
            if resume_step is not None:
                # TensorBoard drops every event of this run's earlier files at a step >= this one
                self._file.write_event(self._event(wall_time=time.time(), step=int(resume_step) + 1,
                                                   session_log=session_log(status=session_log.START)))
            self._file.flush()
        except OSError as exc:
            raise UserError(f"cannot write TensorBoard event files to summary_dir {summary_dir!r}: "
                            f"{exc.strerror or exc}. Pass --summary_dir with a folder you can write to.") from None
        new = sorted(set(_event_files(summary_dir)) - before)
        self.event_file = os.path.join(summary_dir, new[-1]) if new else None

    def _write(self, step, tagged_values):
        """One event at ``step`` with the (tag, value) pairs whose value is not None, on disk at once."""
        values = [self._summary.Value(tag=tag, simple_value=value) for tag, value in tagged_values
                  if value is not None]
        if values:
            self._file.write_event(self._event(wall_time=time.time(), step=int(step),
                                               summary=self._summary(value=values)))
            self._file.flush()

    def log_step(self, step, loss=None, lr=None, loss_scale=None, img_per_s=None, data_wait_pct=None):
        """The values of one log interval, at global ``step`` (steps done, 1-based). A None value
        is left out; a NaN loss is written as NaN. On disk when the call returns."""
        if self._file is None:
            return
        values = {"loss": loss, "lr": lr, "loss_scale": loss_scale, "img_per_s": img_per_s,
                  "data_wait_pct": data_wait_pct}
        self._write(step, [(tag, _number(values[key])) for key, tag in STEP_TAGS.items()])

    def log_epoch(self, epoch, step, row):
        """One epoch's ``metrics.csv`` row (a dict with its column names; missing or empty values,
        such as ``val_top1`` in an epoch that did not validate, are left out), at global ``step``:
        the steps done at the end of the epoch. ``epoch`` (1-based) is written as ``epoch/epoch``.
        On disk when the call returns."""
        if self._file is None:
            return
        values = dict(row, epoch=epoch)
        self._write(step, [(tag, _number(values.get(key))) for key, tag in EPOCH_TAGS.items()])

    def flush(self):
        """Nothing to do (every call flushes); kept for the usual writer interface."""
        if self._file is not None:
            self._file.flush()

    def close(self):
        """Close the event file; safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
