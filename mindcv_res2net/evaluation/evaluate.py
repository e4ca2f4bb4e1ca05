"""Exact evaluation: top-1, top-5 and loss over every validation image, across all ranks.

Each rank evaluates its own disjoint shard (no padding, no duplicates); the correct counts, the
summed loss and the number of images are summed across ranks, so the figures equal a single-process
run over the same set whatever the batch size or the number of ranks.
"""
import time

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ..distributed import all_reduce_sum


class _LogitsAndLoss(nn.Cell):
    """Eval-mode forward returning the logits and the per-sample cross-entropy (float32)."""

    def __init__(self, network):
        super().__init__(auto_prefix=False)
        self.network = network
        self.ce = nn.CrossEntropyLoss(reduction="none")

    def construct(self, images, labels):
        logits = ops.cast(self.network(images), ms.float32)
        return logits, self.ce(logits, labels)


def topk_correct(logits, labels, k):
    """How many rows have their label among the k largest logits (ties broken by index)."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


def evaluate(network, loader, num_batches=None, progress=None, per_class=None):
    """Evaluate ``network`` on ``loader`` (batches of images and int labels).

    Returns {"top1", "top5", "loss", "num_samples"} with top1/top5 as fractions, already summed
    over all ranks, and this rank's speed: ``ms_per_step``, the median forward pass of its full
    batches after the first (steady state: no graph compile; the wait for data excluded), and
    ``img_per_s`` (the batch size over that median); None when there is no such batch.
    ``progress`` is an optional callable(batch_index, num_batches). ``per_class``: None, or a
    callable returning a new ``per_class.PerClassCounter``: the result then also holds
    ``class_counts``, its ``finish()`` (confusion matrix and misclassified images, all ranks).
    """
    network.set_train(False)
    step = _LogitsAndLoss(network)
    classes = per_class() if per_class is not None else None
    correct1 = correct5 = 0
    loss_sum = 0.0
    count = 0
    step_times = []  # (batch size, seconds) of every forward pass
    start = time.time()
    for i, (images, labels) in enumerate(loader):
        labels_np = labels.asnumpy() if hasattr(labels, "asnumpy") else np.asarray(labels)
        if labels_np.ndim > 1:  # soft labels never reach validation, but be safe
            labels_np = labels_np.argmax(1)
        labels_np = labels_np.astype(np.int32)
        valid = labels_np >= 0  # the data set marks an unreadable file with label -1 (a placeholder image)
        t_step = time.time()
        logits, losses = step(images, ms.Tensor(np.where(valid, labels_np, 0).astype(np.int32)))
        logits, losses = logits.asnumpy(), losses.asnumpy()
        step_times.append((len(labels_np), time.time() - t_step))
        logits, losses = logits[valid], losses[valid]
        labels_np = labels_np[valid]
        correct1 += topk_correct(logits, labels_np, 1)
        correct5 += topk_correct(logits, labels_np, 5)
        loss_sum += float(losses.astype(np.float64).sum())
        count += len(labels_np)
        if classes is not None:
            classes.add(logits, labels_np, valid)
        if progress is not None:
            progress(i + 1, num_batches)
    totals = all_reduce_sum(np.array([correct1, correct5, loss_sum, count], np.float64))
    correct1, correct5, loss_sum, count = totals.tolist()
    count = int(round(count))
    speed = _steady_speed(step_times)
    if count == 0:
        result = {"top1": 0.0, "top5": 0.0, "loss": float("nan"), "num_samples": 0, "seconds": time.time() - start,
                  **speed}
    else:
        result = {"top1": correct1 / count, "top5": correct5 / count, "loss": loss_sum / count,
                  "num_samples": count, "seconds": time.time() - start, **speed}
    if classes is not None:
        result["class_counts"] = classes.finish()
    return result


def _steady_speed(step_times):
    """``ms_per_step`` / ``img_per_s`` of the full batches after the first (see ``evaluate``)."""
    if not step_times:
        return {"ms_per_step": None, "img_per_s": None}
    batch = max(n for n, _ in step_times)
    full = [t for n, t in step_times[1:] if n == batch] or [t for _, t in step_times]
    median = float(np.median(full))
    return {"ms_per_step": 1000 * median, "img_per_s": batch / median if median > 0 else None}
