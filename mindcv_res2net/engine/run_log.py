"""What a training run tells the user: console and per-rank log files, a progress bar, the
per-epoch ``result.log`` and ``metrics.csv``, and a PNG plot of the curves at the end."""
import csv
import logging
import os
import sys

METRIC_FIELDS = ["epoch", "train_loss", "val_top1", "val_top5", "val_loss", "lr", "epoch_time_s",
                 "train_img_per_s", "loader_img_per_s", "data_wait_pct", "skipped_images"]


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


class EpochRecords:
    """``result.log`` (MindCV's tab-separated layout) and ``metrics.csv``, one row per epoch (rank 0)."""

    def __init__(self, directory, enabled, resume=False):
        self.enabled = enabled
        self.result_path = os.path.join(directory, "result.log")
        self.csv_path = os.path.join(directory, "metrics.csv")
        self.rows = []
        if not enabled:
            return
        if resume and os.path.exists(self.csv_path):
            with open(self.csv_path) as f:
                self.rows = list(csv.DictReader(f))
        else:
            with open(self.result_path, "w") as f:
                f.write("Epoch\tTrainLoss\tValAcc@1\tValAcc@5\tValLoss\tLR\tTime(s)\n")
            with open(self.csv_path, "w", newline="") as f:
                csv.writer(f).writerow(METRIC_FIELDS)

    def add(self, row):
        if not self.enabled:
            return
        self.rows = [r for r in self.rows if int(r["epoch"]) != int(row["epoch"])]
        self.rows.append({k: row.get(k, "") for k in METRIC_FIELDS})
        fmt = lambda v, spec: "" if v in (None, "") else format(v, spec)  # noqa: E731
        with open(self.result_path, "a") as f:
            f.write(f"{row['epoch']}\t{fmt(row['train_loss'], '.4f')}\t{fmt(row.get('val_top1'), '.4f')}\t"
                    f"{fmt(row.get('val_top5'), '.4f')}\t{fmt(row.get('val_loss'), '.4f')}\t"
                    f"{fmt(row['lr'], '.6f')}\t{fmt(row['epoch_time_s'], '.1f')}\n")
        tmp = self.csv_path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.csv_path)

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
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
