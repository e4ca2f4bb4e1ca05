"""Evaluating a model and its exported files on the same batches, image by image.

``validate.py --onnx_path / --mindir_path`` (with or without ``--ckpt_path``) runs here: one pass
over the validation data; every batch goes through the MindSpore network built from the
checkpoint (the reference, when there is one) and through each exported file
(``runtimes.DeployedModel``). Each gets its own top-1, top-5 and loss, computed the same way from
its logits (cross entropy in float64), summed across ranks as ``evaluate`` does.

Against the reference, an exported file must give every image the same top-1 class (an int8
file, ``export.py --quantize int8``, excepted: ``validation`` reports its differences instead). A different
class counts as a tie, not a disagreement, when the reference's logit for the file's class is
within ``TIE_RTOL`` (1e-5) of the reference's largest logit, relative to the largest magnitude in
that row: float rounding may break such a tie either way.
"""
import time

import numpy as np

from ..distributed import all_reduce_sum
from .evaluate import topk_correct

TIE_RTOL = 1e-5


def cross_entropy(logits, labels):
    """Per-image cross entropy of float logits against integer labels, in float64."""
    z = np.asarray(logits, np.float64)
    top = z.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
    return log_sum - z[np.arange(len(z)), labels]


def disagreements(logits, reference, rtol=TIE_RTOL):
    """``(differences, ties)``: images whose top-1 class differs from the reference's beyond a tie,
    and those where it differs within one (see the module docstring)."""
    ref = np.asarray(reference, np.float64)
    picked = np.asarray(logits).argmax(axis=1)
    best = ref.argmax(axis=1)
    differ = picked != best
    rows = np.arange(len(ref))
    gap = ref[rows, best] - ref[rows, picked]
    scale = np.maximum(np.abs(ref).max(axis=1), np.finfo(np.float64).tiny)
    tie = differ & (gap <= rtol * scale)
    return int((differ & ~tie).sum()), int(tie.sum())


class Tally:
    """Running sums of one model: correct top-1 / top-5, loss, images; against the reference:
    disagreements, ties, the largest logit difference and the largest reference logit."""

    def __init__(self, label, forward, compare=False):
        self.label = label
        self.forward = forward
        self.compare = compare
        self.sums = np.zeros(6, np.float64)  # correct1, correct5, loss, count, disagreements, ties
        self.max_diff = 0.0
        self.ref_max = 0.0
        self.seconds = 0.0
        self.classes = None  # a per_class.PerClassCounter with validate.py --per_class

    def run(self, images):
        start = time.perf_counter()
        try:
            return np.asarray(self.forward(images), np.float32)
        finally:
            self.seconds += time.perf_counter() - start

    def add(self, logits, labels, reference=None):
        self.sums[:4] += (topk_correct(logits, labels, 1), topk_correct(logits, labels, 5),
                          float(cross_entropy(logits, labels).sum()), len(labels))
        if reference is not None and len(labels):
            self.sums[4:] += disagreements(logits, reference)
            self.max_diff = max(self.max_diff, float(np.abs(logits.astype(np.float64) - reference).max()))
            self.ref_max = max(self.ref_max, float(np.abs(reference).max()))


def _max_over_ranks(values, rank, world_size):
    """Element-wise maximum of a few floats over all ranks (through the sum: one slot per rank)."""
    slots = np.zeros((max(world_size, 1), len(values)), np.float64)
    slots[rank] = values
    return all_reduce_sum(slots).max(axis=0)


def evaluate_together(reference, deployed, loader, rank=0, world_size=1, progress=None, per_class=None):
    """Evaluate ``reference`` (a MindSpore network, or None) and the ``deployed`` models on the same
    batches of ``loader``; return one result dict per model, the reference first:
    ``label``, ``top1``, ``top5``, ``loss``, ``num_samples``, ``seconds`` (time in the model), and
    for each deployed model when there is a reference: ``argmax_differences``, ``ties``,
    ``max_abs_logit_diff``, ``max_rel_logit_diff`` (relative to the reference's largest logit).
    ``per_class``: None, or a callable returning a new ``per_class.PerClassCounter``: each model gets
    one, and its result ``class_counts`` (as ``evaluate``)."""
    tallies = []
    if reference is not None:
        reference.set_train(False)
        tallies.append(Tally("reference", lambda images: reference(images).asnumpy()))
    for model in deployed:
        tallies.append(Tally(model.label, lambda images, m=model: m(images.asnumpy()), compare=reference is not None))
    for tally in tallies:
        tally.classes = per_class() if per_class is not None else None
    for i, (images, labels) in enumerate(loader):
        labels_np = labels.asnumpy() if hasattr(labels, "asnumpy") else np.asarray(labels)
        if labels_np.ndim > 1:
            labels_np = labels_np.argmax(1)
        labels_np = labels_np.astype(np.int64)
        valid = labels_np >= 0  # an unreadable file: a placeholder image labelled -1
        labels_np = labels_np[valid]
        ref_logits = None
        for tally in tallies:
            logits = tally.run(images)[valid]
            tally.add(logits, labels_np, ref_logits if tally.compare else None)
            if tally.classes is not None:
                tally.classes.add(logits, labels_np, valid)
            if tally.label == "reference":
                ref_logits = logits.astype(np.float64)
        if progress is not None:
            progress(i + 1)
    results = []
    for tally in tallies:
        sums = all_reduce_sum(tally.sums)
        max_diff, ref_max = _max_over_ranks([tally.max_diff, tally.ref_max], rank, world_size)
        count = int(round(sums[3]))
        result = {"label": tally.label, "top1": sums[0] / count if count else 0.0,
                  "top5": sums[1] / count if count else 0.0, "loss": sums[2] / count if count else float("nan"),
                  "num_samples": count, "seconds": tally.seconds}
        if tally.compare:
            result.update(argmax_differences=int(round(sums[4])), ties=int(round(sums[5])),
                          max_abs_logit_diff=float(max_diff),
                          max_rel_logit_diff=float(max_diff / ref_max) if ref_max > 0 else float(max_diff))
        if tally.classes is not None:
            result["class_counts"] = tally.classes.finish()
        results.append(result)
    return results
