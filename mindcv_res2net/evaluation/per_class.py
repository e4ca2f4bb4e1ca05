"""``validate.py --per_class``: each class's support, recall, precision and F1, the confusion
matrix and the misclassified images, exact under ``mpirun``.

Counting. Each rank counts the images it evaluates into a confusion matrix (rows: true class,
columns: the predicted top-1 class, ``argmax`` of the logits, the first index on an exact tie) and
keeps one row per wrong image: its dataset index, true class, predicted class and confidence (the
softmax probability of the predicted class, in float64 from the logits). Which image a row is:
the evaluation order of a rank is a pure function of (seed, rank) (``EpochSampler.indices``), so
the k-th image a rank reads is ``source[sampler.indices(epoch)[k]]``; unreadable images (label -1)
keep their place in that order and are left out, as in the figures. At the end the matrices are
summed across ranks (integers: exact) and the wrong rows gathered bit for bit to every rank, then
sorted by dataset index: the report equals a single-process run's, whatever the number of ranks
(the confidences are those of the logits: on CPU a network's float32 logits of an image may change
in the 6th digit with the other images of its batch, as the loss does).

Figures (``support``: images of the class; ``predicted``: images given the class):
``recall = tp / support`` (the class's top-1; null without images), ``precision = tp / predicted``
(null when never predicted), ``f1 = 2 tp / (support + predicted)`` (their harmonic mean; null for
a class without images that is never predicted). The macro averages run over the classes with
images, a precision that is null counting 0 (as scikit-learn's ``zero_division=0`` on a val set
holding every class).

Files, in ``per_class_dir`` (default: the folder of ``--json``, else ``./per_class``), written by
rank 0 through ``atomic_io``: ``per_class.csv`` (class, support, recall, precision, f1),
``confusion_matrix.csv`` (header row and first column: the class names), ``confusion_matrix.png``
(a heatmap; only when matplotlib imports) and ``misclassified.csv`` (path, true_class,
predicted_class, confidence; dataset order). With several models evaluated together (a checkpoint
and its exported files) each model's files get its file name as a suffix, e.g.
``confusion_matrix_model.onnx.csv``.
"""
import csv
import io
import os

import numpy as np

from .. import atomic_io
from ..data.dataset import ArraySource, ImageFileSource, get_dataset_info
from ..distributed import all_gather_exact, all_reduce_sum
from ..errors import UserError

DEFAULT_DIR = "per_class"
SHOW_ALL_UP_TO = 20  # the console table lists every class up to this many, else the worst by recall
WORST_SHOWN = 10
_ROW_WIDTH = 4  # a misclassified row: dataset index, true class, predicted class, confidence


def output_dir(args):
    """Where the files go: ``per_class_dir``, else the folder of ``--json``, else ``./per_class``."""
    if getattr(args, "per_class_dir", None):
        return os.fspath(args.per_class_dir)
    if getattr(args, "json", None):
        return os.path.dirname(os.path.abspath(os.fspath(args.json)))
    return DEFAULT_DIR


def check_output_dir(args):
    """``UserError`` when the output folder of ``--per_class`` is an existing file (checked before
    anything is evaluated)."""
    directory = output_dir(args)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UserError(f"--per_class_dir {directory} is a file, not a folder: pass a folder for the per-class "
                        f"report (it is created when missing)")


def image_namer(source):
    """``index -> name`` of the images of a data set's source: the file path for image folders,
    ``ROOT:SPLIT[i]`` for idx files, ``FOLDER[i]`` (image number in file order) for MindRecord."""
    if isinstance(source, ImageFileSource):
        return lambda index: source.paths[index]
    if isinstance(source, ArraySource):
        return lambda index: f"{source.names_prefix}[{index}]"
    folder = getattr(source, "folder", "image")
    return lambda index: f"{folder}[{index}]"


def evaluation_order(loader):
    """``(indices, namer)``: the dataset indices this rank reads, in reading order, and
    ``image_namer`` of the data set."""
    info = get_dataset_info(loader)
    if info.shuffle:
        raise ValueError("per-class reports need an evaluation loader (shuffle off)")
    return np.asarray(info.sampler.indices(info.sampler.epoch), np.int64), image_namer(info.source)


def softmax_confidence(logits, predicted):
    """The softmax probability of class ``predicted[i]`` in row ``i``, in float64."""
    z = np.asarray(logits, np.float64)
    top = z.max(axis=1, keepdims=True)
    weights = np.exp(z - top)
    return weights[np.arange(len(z)), predicted] / weights.sum(axis=1)


class PerClassCounter:
    """One model's confusion matrix and misclassified images on this rank (see the module docstring).

    ``order``: this rank's dataset indices in reading order (``evaluation_order``)."""

    def __init__(self, num_classes, order):
        self.num_classes = int(num_classes)
        self.order = np.asarray(order, np.int64)
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.position = 0  # images of the order read so far, unreadable ones included
        self.wrong = []

    def add(self, logits, labels, valid):
        """One batch: ``valid`` marks its readable images (all of them, in order); ``logits`` and
        ``labels`` are those of the readable ones."""
        valid = np.asarray(valid, bool).reshape(-1)
        where = self.order[self.position:self.position + valid.size]
        if where.size != valid.size:
            raise RuntimeError(f"the loader gave more images than its sampler's {self.order.size}: the per-class "
                               "report cannot name them")
        self.position += valid.size
        where = where[valid]
        labels = np.asarray(labels, np.int64).reshape(-1)
        predicted = np.asarray(logits).argmax(axis=1).astype(np.int64)
        cells = np.bincount(labels * self.num_classes + predicted, minlength=self.num_classes ** 2)
        self.confusion += cells.reshape(self.num_classes, self.num_classes)
        wrong = predicted != labels
        if wrong.any():
            confidence = softmax_confidence(np.asarray(logits)[wrong], predicted[wrong])
            self.wrong.append(np.stack([where[wrong], labels[wrong], predicted[wrong], confidence], axis=1))

    def finish(self):
        """``(confusion matrix, misclassified rows)`` over all ranks (every rank calls it): rows of
        (dataset index, true class, predicted class, confidence), float64, in dataset order."""
        if self.position != self.order.size:
            raise RuntimeError(f"the loader gave {self.position} of its sampler's {self.order.size} images: the "
                               "per-class report cannot name them")
        confusion = all_reduce_sum(self.confusion)
        rows = np.concatenate(self.wrong) if self.wrong else np.zeros((0, _ROW_WIDTH), np.float64)
        return confusion, gather_rows(rows.astype(np.float64))


def gather_rows(rows):
    """Every rank's ``(n, 4)`` float64 rows, bit for bit, sorted by their first column (each rank
    may hold another number of rows)."""
    counts = all_gather_exact(np.array([len(rows)], np.int64))[:, 0]
    longest = int(counts.max())
    if longest == 0:
        return np.zeros((0, _ROW_WIDTH), np.float64)
    padded = np.zeros((longest, _ROW_WIDTH), np.float64)
    padded[:len(rows)] = rows
    gathered = all_gather_exact(padded)
    merged = np.concatenate([gathered[r, :int(n)] for r, n in enumerate(counts)])
    return merged[np.argsort(merged[:, 0], kind="stable")]


def _ratio(numerator, denominator):
    return [float(n) / float(d) if d else None for n, d in zip(numerator, denominator)]


def _mean(values):
    return float(np.mean(values)) if len(values) else None


def summarise(confusion, class_names):
    """The JSON object of a confusion matrix (``files`` and ``misclassified`` added by the caller)."""
    confusion = np.asarray(confusion, np.int64)
    tp = np.diag(confusion)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    recall, precision = _ratio(tp, support), _ratio(tp, predicted)
    f1 = _ratio(2 * tp, support + predicted)
    present = np.flatnonzero(support > 0)
    return {"classes": list(class_names), "support": support.tolist(), "recall": recall, "precision": precision,
            "f1": f1, "confusion_matrix": confusion.tolist(),
            "macro_recall": _mean([recall[c] for c in present]),
            "macro_precision": _mean([precision[c] or 0.0 for c in present]),
            "macro_f1": _mean([f1[c] for c in present])}


def report_class_names(class_names, num_classes):
    """The names of the model's classes: the label names, then ``#i`` for outputs without one."""
    names = [str(n) for n in class_names][:num_classes]
    return names + [f"#{i}" for i in range(len(names), num_classes)]


def _csv_text(rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


def _cell(value):
    return "" if value is None else repr(float(value))


def per_class_csv(report):
    rows = [("class", "support", "recall", "precision", "f1")]
    rows += [(name, support, _cell(r), _cell(p), _cell(f)) for name, support, r, p, f in
             zip(report["classes"], report["support"], report["recall"], report["precision"], report["f1"])]
    return _csv_text(rows)


def confusion_csv(report):
    names = report["classes"]
    rows = [["true_class\\predicted_class"] + names]
    rows += [[name] + counts for name, counts in zip(names, report["confusion_matrix"])]
    return _csv_text(rows)


def misclassified_csv(rows, class_names, namer):
    """``misclassified.csv``: one line per wrong image, in dataset order."""
    lines = [("path", "true_class", "predicted_class", "confidence")]
    lines += [(namer(int(index)), class_names[int(true)], class_names[int(pred)], repr(float(confidence)))
              for index, true, pred, confidence in rows]
    return _csv_text(lines)


def write_heatmap(path, report):
    """``confusion_matrix.png``: the matrix as a heatmap (class names on the axes up to 30 classes,
    the counts in the cells up to 20); None, nothing written, when matplotlib is absent."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    names, matrix = report["classes"], np.asarray(report["confusion_matrix"])
    side = min(max(4.0, 0.45 * len(names) + 2.0), 20.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(matrix, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="images").ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if len(names) <= 30:
        ax.set_xticks(range(len(names)), labels=names, rotation=90)
        ax.set_yticks(range(len(names)), labels=names)
    if len(names) <= SHOW_ALL_UP_TO:
        threshold = matrix.max() / 2.0
        for (row, col), count in np.ndenumerate(matrix):
            ax.text(col, row, str(count), ha="center", va="center",
                    color="white" if count > threshold else "black", fontsize=8)
    fig.tight_layout()
    atomic_io.write_figure_atomic(fig, path, "confusion matrix heatmap")
    return path


def write_files(directory, suffix, report, rows, namer):
    """Write a model's four files; ``{kind: path}`` of those written."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the per-class report folder {directory}: {exc.strerror or exc}. Pass "
                        f"another --per_class_dir") from None
    paths = {kind: os.path.join(directory, f"{stem}{suffix}.csv") for kind, stem in
             (("per_class", "per_class"), ("confusion_matrix", "confusion_matrix"),
              ("misclassified", "misclassified"))}
    atomic_io.write_text_atomic(paths["per_class"], per_class_csv(report), "per-class report")
    atomic_io.write_text_atomic(paths["confusion_matrix"], confusion_csv(report), "confusion matrix")
    atomic_io.write_text_atomic(paths["misclassified"], misclassified_csv(rows, report["classes"], namer),
                                "misclassified images")
    heatmap = write_heatmap(os.path.join(directory, f"confusion_matrix{suffix}.png"), report)
    if heatmap is not None:
        paths["confusion_matrix_png"] = heatmap
    return paths


def _percent(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def shown_classes(report):
    """The classes of the console table: all up to ``SHOW_ALL_UP_TO`` classes, else the
    ``WORST_SHOWN`` with images and the lowest recall (ties: class order)."""
    count = len(report["classes"])
    if count <= SHOW_ALL_UP_TO:
        return list(range(count))
    present = [c for c in range(count) if report["support"][c] > 0]
    return sorted(present, key=lambda c: (report["recall"][c], c))[:WORST_SHOWN]


def log_table(logger, label, report, directory):
    """A few lines on the console: the macro figures, then a table of ``shown_classes``."""
    shown = shown_classes(report)
    count = len(report["classes"])
    which = "every class" if count <= SHOW_ALL_UP_TO else f"the {len(shown)} classes with the lowest recall"
    logger.info("per-class report of %s (%d classes; %s below): macro recall %s, precision %s, F1 %s; %d "
                "misclassified image(s); files in %s", label, count, which, _percent(report["macro_recall"]),
                _percent(report["macro_precision"]), _percent(report["macro_f1"]), report["misclassified"],
                directory)
    width = min(max([len("class")] + [len(report["classes"][c]) for c in shown]), 40)
    logger.info("  %-*s %8s %8s %9s %8s", width, "class", "support", "recall", "precision", "f1")
    for c in shown:
        logger.info("  %-*s %8d %8s %9s %8s", width, report["classes"][c][:width], report["support"][c],
                    _percent(report["recall"][c]), _percent(report["precision"][c]), _percent(report["f1"][c]))


def file_suffixes(labels):
    """No suffix for one model; else ``_<label>`` per model, made unique with ``-2``, ``-3`` ..."""
    if len(labels) <= 1:
        return [""] * len(labels)
    suffixes = []
    for label in labels:
        suffix, number = f"_{label}", 2
        while suffix in suffixes:
            suffix, number = f"_{label}-{number}", number + 1
        suffixes.append(suffix)
    return suffixes


def add_reports(args, runs, labels, class_names, namer, write=False):
    """Replace each run's ``class_counts`` (from ``PerClassCounter.finish``) by its ``per_class``
    JSON object. ``labels``: a short name per run (its file name), for the file suffixes;
    ``write`` (rank 0 only): write the files."""
    directory = output_dir(args)
    for run, suffix in zip(runs, file_suffixes(labels)):
        confusion, rows = run.pop("class_counts")
        report = summarise(confusion, class_names)
        report["misclassified"] = int(len(rows))
        report["files"] = write_files(directory, suffix, report, rows, namer) if write else {}
        run["per_class"] = report
    return runs


def log_reports(logger, args, runs, labels):
    """``log_table`` of every run (after ``add_reports``)."""
    for run, label in zip(runs, labels):
        log_table(logger, label, run["per_class"], output_dir(args))
