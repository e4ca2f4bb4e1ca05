"""What a training run tells the user: console and per-rank log files, a progress bar, the
per-epoch ``result.log`` and ``metrics.csv``, and a PNG plot of the curves at the end."""
import csv
import io
import logging
import os
import sys
import time

from .. import atomic_io

# train_step_ms: the median train step of the epoch without its first (steady state: no compile, no
# iterator start); ranks and global_batch (batch_size x ranks x gradient_accumulation_steps): the run's shape
METRIC_FIELDS = ["epoch", "train_loss", "val_top1", "val_top5", "val_loss", "lr", "epoch_time_s",
                 "train_img_per_s", "loader_img_per_s", "data_wait_pct", "skipped_images", "overflow_steps",
                 "train_step_ms", "ranks", "global_batch"]


def setup_logging(log_dir, rank, world_size, debug=False):
    """Console output on rank 0 (warnings from every rank), and a log file per rank."""
    logger = logging.getLogger("mindcv_res2net")
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.handlers.clear()
    logger.propagate = False
    prefix = f"[rank {rank}] " if world_size > 1 else ""
    console = logging.StreamHandler(sys.stdout if rank == 0 else sys.stderr)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    console.setFormatter(logging.Formatter(prefix + "%(message)s"))
    logger.addHandler(console)
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(log_dir, f"rank_{rank}.log"))
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(fh)
    logging.captureWarnings(True)
    return logger


class Progress:
    """A tqdm bar per epoch on a terminal (rank 0); nothing otherwise (the step log prints lines)."""

    def __init__(self, total, desc, enabled):
        self.bar = None
        if enabled and sys.stdout.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
            except ImportError:
                self.bar = None

    @property
    def active(self):
        return self.bar is not None

    def update(self, postfix=None):
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix_str(postfix, refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def keep_previous_version(path, new_text=None, ignore_prefixes=()):
    """Move an existing ``path`` aside as ``{stem}.{its last write time}{ext}`` before it is replaced
    (only when its content differs from ``new_text``, if given, apart from the lines that start with
    one of ``ignore_prefixes``); returns the new name, or None."""
    if not os.path.exists(path):
        return None
    if new_text is not None:
        def relevant(text):
            return [line for line in text.splitlines() if not line.startswith(tuple(ignore_prefixes))]
        with open(path, encoding="utf-8", errors="replace") as f:
            if relevant(f.read()) == relevant(new_text):
                return None
    stem, ext = os.path.splitext(path)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(os.path.getmtime(path)))
    kept, n = f"{stem}.{stamp}{ext}", 1
    while os.path.exists(kept):
        n += 1
        kept = f"{stem}.{stamp}-{n}{ext}"
    os.replace(path, kept)
    return kept


def _fmt(value, spec):
    if value in (None, ""):
        return ""
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)


class EpochRecords:
    """``result.log`` (MindCV's tab-separated layout) and ``metrics.csv``, one row per epoch (rank 0).

    A fresh run keeps the files of an earlier run in the folder (moved aside with their time stamp);
    a run resumed at epoch k keeps the rows up to k and drops those of the abandoned later epochs.
    Both files are rewritten atomically after every epoch.
    """

    def __init__(self, directory, enabled, resume_epoch=None):
        self.enabled = enabled
        self.result_path = os.path.join(directory, "result.log")
        self.csv_path = os.path.join(directory, "metrics.csv")
        self.rows = []
        self.kept = []
        if not enabled:
            return
        if resume_epoch is not None and os.path.exists(self.csv_path):
            with open(self.csv_path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if _epoch_of(r) is not None
                             and _epoch_of(r) <= resume_epoch]
        elif resume_epoch is None:
            self.kept = [k for k in (keep_previous_version(self.result_path), keep_previous_version(self.csv_path))
                         if k]
        self._write()

    def add(self, row):
        if not self.enabled:
            return
        self.rows = [r for r in self.rows if _epoch_of(r) != int(row["epoch"])]
        self.rows.append({k: row.get(k, "") for k in METRIC_FIELDS})
        self._write()

    def _write(self):
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=METRIC_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_io.write_text_atomic(self.csv_path, out.getvalue(), "metrics file")
        lines = ["Epoch\tTrainLoss\tValAcc@1\tValAcc@5\tValLoss\tLR\tTime(s)\n"]
        for r in self.rows:
            lines.append(f"{r['epoch']}\t{_fmt(r.get('train_loss'), '.4f')}\t{_fmt(r.get('val_top1'), '.4f')}\t"
                         f"{_fmt(r.get('val_top5'), '.4f')}\t{_fmt(r.get('val_loss'), '.4f')}\t"
                         f"{_fmt(r.get('lr'), '.6f')}\t{_fmt(r.get('epoch_time_s'), '.1f')}\n")
        atomic_io.write_text_atomic(self.result_path, "".join(lines), "result log")

    def plot(self, path):
        """Loss and accuracy curves as a PNG; skipped (returns None) when matplotlib is absent."""
        if not self.enabled or not self.rows:
            return None
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        num = lambda r, k: float(r[k]) if r.get(k) not in (None, "") else float("nan")  # noqa: E731
        epochs = [int(r["epoch"]) for r in self.rows]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        ax1.plot(epochs, [num(r, "train_loss") for r in self.rows], "o-", label="train loss")
        ax1.plot(epochs, [num(r, "val_loss") for r in self.rows], "s-", label="val loss")
        ax1.set_xlabel("epoch")
        ax1.legend()
        ax2.plot(epochs, [100 * num(r, "val_top1") for r in self.rows], "o-", label="val top-1 %")
        ax2.plot(epochs, [100 * num(r, "val_top5") for r in self.rows], "s-", label="val top-5 %")
        ax2.set_xlabel("epoch")
        ax2.legend()
        fig.tight_layout()
        atomic_io.write_figure_atomic(fig, path, "curves")
        return path


def _epoch_of(row):
    try:
        return int(row.get("epoch"))
    except (TypeError, ValueError):
        return None
