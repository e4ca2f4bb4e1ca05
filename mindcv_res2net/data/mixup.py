"""Mixup / CutMix on whole batches, producing soft labels.

Per batch, with probability ``prob`` the batch is mixed with its reverse (image i with image
B-1-i). Which of the two: CutMix with probability ``switch_prob`` when both are enabled.

* Mixup: ``lam ~ Beta(mixup_alpha, mixup_alpha)``, ``x = lam * x + (1 - lam) * x[::-1]``.
* CutMix: ``lam ~ Beta(cutmix_alpha, cutmix_alpha)``; a box of side ``sqrt(1 - lam)`` times the
  image side, centred uniformly (clipped at the borders), is pasted from the reversed batch;
  ``lam`` is then corrected to ``1 - box_area / image_area`` (the label weight equals the
  area really kept).

Labels: ``lam * onehot(y) + (1 - lam) * onehot(y[::-1])`` with optional label smoothing
(``off = smoothing / num_classes``, ``on = 1 - smoothing + off``); float32, rows sum to 1.
A batch left unmixed still gets (smoothed) one-hot labels, so the label type never changes.

The random draws of a batch come from ``numpy.random.default_rng([seed, rank, epoch, batch])``,
so they do not depend on thread scheduling.
"""
import numpy as np

from ..errors import UserError


def one_hot(labels, num_classes, on_value=1.0, off_value=0.0):
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"label out of range [0, {num_classes}): min {labels.min()}, max "
                        f"{labels.max()}. Check num_classes against the data set's classes")
    out = np.full((labels.size, num_classes), off_value, dtype=np.float32)
    out[np.arange(labels.size), labels] = on_value
    return out


def cutmix_box(height, width, lam, rng):
    """(y0, y1, x0, x1) of a box with area about (1 - lam) of the image, clipped at the border."""
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = np.clip(cy - ch // 2, 0, height), np.clip(cy + ch // 2, 0, height)
    x0, x1 = np.clip(cx - cw // 2, 0, width), np.clip(cx + cw // 2, 0, width)
    return int(y0), int(y1), int(x0), int(x1)


class MixupCutmix:
    """Batch op: (images [B,C,H,W] float32, labels [B] int) -> (images, soft labels [B,K] float32)."""

    def __init__(self, mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5,
                 label_smoothing=0.0, num_classes=1000, seed=0, rank=0):
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.label_smoothing = float(label_smoothing)
        self.num_classes = int(num_classes)
        self.seed = int(seed or 0)
        self.rank = int(rank)
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise UserError(f"mixup / cutmix alphas must be >= 0, got {mixup_alpha}, {cutmix_alpha}")
        if not 0.0 <= self.prob <= 1.0 or not 0.0 <= self.switch_prob <= 1.0:
            raise UserError(f"cutmix_prob and switch_prob are probabilities, got {prob}, {switch_prob}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UserError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if self.num_classes < 1:
            raise UserError(f"num_classes must be positive, got {num_classes}")
        self.last = None  # (mode, lam, box) of the last batch, for tests and logs

    def draw(self, rng):
        """(mode, lam) for one batch: mode in {'none', 'mixup', 'cutmix'}."""
        if rng.random() >= self.prob or (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0):
            return "none", 1.0
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = rng.random() < self.switch_prob
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return ("cutmix" if use_cutmix else "mixup"), float(rng.beta(alpha, alpha))

    def mix(self, images, labels, rng):
        images = np.asarray(images, dtype=np.float32)
        labels = np.asarray(labels).reshape(-1)
        mode, lam = self.draw(rng)
        box = None
        if mode == "mixup":
            images = images * np.float32(lam) + images[::-1] * np.float32(1.0 - lam)
        elif mode == "cutmix":
            h, w = images.shape[-2:]
            y0, y1, x0, x1 = box = cutmix_box(h, w, lam, rng)
            images = images.copy()
            images[..., y0:y1, x0:x1] = images[::-1][..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        off = self.label_smoothing / self.num_classes
        on = 1.0 - self.label_smoothing + off
        y1h = one_hot(labels, self.num_classes, on, off)
        soft = y1h * np.float32(lam) + y1h[::-1] * np.float32(1.0 - lam)
        self.last = (mode, lam, box)
        return np.ascontiguousarray(images, dtype=np.float32), soft.astype(np.float32)

    def __call__(self, images, labels, batch_info=None):
        epoch = batch_info.get_epoch_num() if batch_info is not None else 0
        batch = batch_info.get_batch_num() if batch_info is not None else 0
        rng = np.random.default_rng([self.seed, self.rank, int(epoch), int(batch)])
        # per_batch_map hands lists of per-sample arrays and accepts whole-batch arrays back
        images, soft = self.mix(np.stack(images) if isinstance(images, list) else images,
                                np.stack(labels) if isinstance(labels, list) else labels, rng)
        return images, soft
