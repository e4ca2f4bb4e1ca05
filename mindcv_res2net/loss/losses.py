"""Classification losses (``create_loss``): cross entropy, binary cross entropy, and AugMix's
JSD cross entropy for augmentation splits.

Both take logits ``[B, C]`` (or a tuple ``(main, aux, ...)`` for networks with auxiliary heads,
weighted by ``aux_factor``) and labels that are either class indices ``[B]`` (int) or
class-probability rows ``[B, C]`` (float: one-hot, mixup / cutmix targets). Logits are cast to
float32 first, so the loss is computed in fp32 under any AMP level.

Label smoothing ``eps`` is applied to both label forms: the target row becomes
``y * (1 - eps) + eps / C`` (MindCV / PyTorch definition).

* CE:  ``-sum_c y_c * log_softmax(x)_c`` per sample.
* BCE: sigmoid cross entropy per element, ``max(x, 0) - x * y + log(1 + exp(-|x|))``;
  ``reduction="mean"`` averages over all ``B * C`` elements (as MindCV /
  ``binary_cross_entropy_with_logits`` do).
* JSD (``aug_splits`` > 0; MindCV's ``JSDCrossEntropy``, timm's ``JsdCrossEntropy``, Hendrycks
  et al. 2020): logits ``[S*B, C]`` = S splits ``[clean; aug1; aug2]``, labels ``[S*B]`` or
  ``[B]`` (the first B are read). With ``p_s = softmax(split s)`` and the mixture
  ``M = clip(mean_s p_s, 1e-7, 1)``::

      loss = CE(clean split, labels[:B]; smoothing, reduction)
             + alpha / S * sum_s sum_{i,c} p_s[i,c] * (log p_s[i,c] - log M[i,c]) / B

  (natural log, ``alpha = 12``). The Jensen-Shannon term is always averaged over the batch
  (``KLDivLoss(reduction="batchmean")``), whatever ``reduction``; ``p log p`` uses
  ``log_softmax`` so an underflowed probability contributes 0.

``reduction``: ``"mean"`` (average over the batch; BCE: over all ``B * C`` elements) or
``"sum"`` (MindCV's two values; key ``reduction``).
"""
import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ..data.loader import check_aug_splits
from ..errors import UserError
from . import LOSSES, REDUCTIONS

__all__ = ["create_loss", "balanced_class_weights", "CrossEntropySmooth", "BinaryCrossEntropySmooth", "JSDCrossEntropy",
           "LOSSES",
           "REDUCTIONS"]

JSD_ALPHA = 12.0
JSD_MIXTURE_MIN = 1e-7


class _SmoothLossBase(nn.Cell):
    def __init__(self, smoothing=0.0, aux_factor=0.0, reduction="mean", class_weights=None):
        super().__init__()
        self.smoothing = float(smoothing)
        self.aux_factor = float(aux_factor)
        self.reduction = reduction
        self.class_weights = None if class_weights is None else ms.Tensor(np.asarray(class_weights, np.float32))

    def _weights(self, num_classes):
        """The class weights as a ``[C]`` tensor; ``UserError`` when their count is not ``num_classes``."""
        if self.class_weights.shape[0] != num_classes:
            raise UserError(f"class_weights gives {self.class_weights.shape[0]} weights for {num_classes} classes: "
                            "give one weight per class (or class_weights: balanced)")
        return self.class_weights

    def _targets(self, labels, num_classes):
        """Dense float32 target rows with label smoothing applied."""
        if labels.ndim == 1:
            y = ops.one_hot(labels.astype(ms.int32), num_classes,
                            ops.ones((), ms.float32), ops.zeros((), ms.float32))
        else:
            y = labels.astype(ms.float32)
        if self.smoothing > 0.0:
            y = y * (1.0 - self.smoothing) + self.smoothing / num_classes
        return y

    def _reduce(self, loss):
        if self.reduction == "sum":
            return loss.sum()
        return loss.mean()

    def _single(self, logits, labels):
        raise NotImplementedError

    def construct(self, logits, labels):
        if isinstance(logits, (tuple, list)):
            loss = self._single(logits[0], labels)
            if self.aux_factor > 0.0:
                for aux in logits[1:]:
                    loss = loss + self.aux_factor * self._single(aux, labels)
            return loss
        return self._single(logits, labels)


class CrossEntropySmooth(_SmoothLossBase):
    """Softmax cross entropy with label smoothing; int labels [B] or soft labels [B, C]."""

    def _single(self, logits, labels):
        logits = logits.astype(ms.float32)
        y = self._targets(labels, logits.shape[-1])
        logp = ops.log_softmax(logits, -1)
        if self.class_weights is None:
            return self._reduce(-(y * logp).sum(-1))
        # PyTorch's cross_entropy(weight=w): -sum_c w_c y_c log p_c per image; with class-index
        # labels, "mean" divides by the summed weight of the images' classes
        w = self._weights(logits.shape[-1])
        loss = -(y * logp * w).sum(-1)
        if self.reduction == "sum":
            return loss.sum()
        if labels.ndim == 1:
            return loss.sum() / ops.gather(w, labels.astype(ms.int32), 0).sum()
        return loss.mean()


class BinaryCrossEntropySmooth(_SmoothLossBase):
    """Sigmoid (multi-label) cross entropy with label smoothing; one-hot / soft / int labels."""

    def _single(self, logits, labels):
        x = logits.astype(ms.float32)
        y = self._targets(labels, x.shape[-1])
        loss = ops.relu(x) - x * y + ops.log1p(ops.exp(-ops.abs(x)))
        if self.class_weights is not None:  # binary_cross_entropy_with_logits(weight=w): w_c per class column
            loss = loss * self._weights(x.shape[-1])
        return self._reduce(loss)


class JSDCrossEntropy(_SmoothLossBase):
    """CE on the clean split + ``alpha`` x Jensen-Shannon divergence between the splits' softmax
    distributions (see the module docstring). Logits ``[num_splits * B, C]``."""

    def __init__(self, num_splits=3, alpha=JSD_ALPHA, smoothing=0.0, aux_factor=0.0, reduction="mean"):
        super().__init__(smoothing=smoothing, aux_factor=aux_factor, reduction=reduction)
        self.num_splits = int(num_splits)
        self.alpha = float(alpha)

    def _single(self, logits, labels):
        logits = logits.astype(ms.float32)
        n = logits.shape[0] // self.num_splits
        num_classes = logits.shape[-1]
        clean_y = self._targets(labels[:n], num_classes)
        logp = ops.log_softmax(logits[:n * self.num_splits].reshape(self.num_splits, n, num_classes), -1)
        loss = self._reduce(-(clean_y * logp[0]).sum(-1))
        probs = ops.exp(logp)
        log_mixture = ops.log(ops.clamp(probs.mean(0), JSD_MIXTURE_MIN, 1.0))
        kl = (probs * (logp - log_mixture)).sum() / n  # sum over the splits of batch-mean KL(p_s || M)
        return loss + (self.alpha / self.num_splits) * kl


def balanced_class_weights(labels, num_classes):
    """``class_weights: balanced``: ``n / (C * n_c)`` for each class ``c`` of the ``n`` training labels,
    ``C`` the classes that have images (scikit-learn's "balanced"); 0 for a class without images."""
    counts = np.bincount(np.asarray(labels, np.int64).reshape(-1), minlength=int(num_classes)).astype(np.float64)
    present = int((counts > 0).sum())
    weights = np.zeros(int(num_classes))
    weights[counts > 0] = counts.sum() / (present * counts[counts > 0])
    return weights


def _check_class_weights(class_weights, splits):
    """The class weights as floats (None: none); ``UserError`` for negative values or with AugMix's JSD."""
    if class_weights is None:
        return None
    values = [float(w) for w in class_weights]
    if not values or any(not np.isfinite(w) or w < 0 for w in values):
        raise UserError(f"class_weights must be non-negative numbers, one per class, got {list(class_weights)}")
    if splits:
        raise UserError("class_weights apply to the CE and BCE losses, not to the JSD loss of aug_splits: set "
                        "aug_splits to 0, or class_weights to null")
    return values


def create_loss(name="CE", label_smoothing=0.0, aux_factor=0.0, reduction="mean", aug_splits=0, class_weights=None):
    """Build the loss cell: ``loss(logits, labels) -> scalar``.

    ``class_weights``: one weight per class, as PyTorch's ``weight`` (CE: each image's loss weighted
    by its classes' weights, the mean divided by the summed weight of the images' classes; BCE: each
    class column weighted).

    ``reduction``: 'mean' or 'sum'. ``aug_splits``: 0, or 3 for AugMix's JSD training (the loader's
    ``aug_splits``): the JSD cross entropy with ``label_smoothing`` on the clean split (``name`` must
    be 'CE', as in MindCV's ``jsd``, which is a softmax loss).
    """
    key = str(name).upper()
    if key not in LOSSES:
        raise UserError(f"unknown loss: {name!r}. Use 'CE' (softmax cross entropy) or 'BCE' (sigmoid).")
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise UserError(f"label_smoothing must be in [0, 1): {label_smoothing}. Fix label_smoothing.")
    if float(aux_factor) < 0.0:
        raise UserError(f"aux_factor must be >= 0: {aux_factor}. Fix aux_factor.")
    if reduction not in REDUCTIONS:
        raise UserError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}. Fix the reduction key.")
    splits = check_aug_splits(aug_splits)
    weights = _check_class_weights(class_weights, splits)
    if splits:
        if key != "CE":
            raise UserError(f"aug_splits={splits} trains with the JSD cross entropy, a softmax loss: set loss to CE "
                            f"(got {name!r}), or aug_splits to 0")
        return JSDCrossEntropy(num_splits=splits, smoothing=label_smoothing, aux_factor=aux_factor,
                               reduction=reduction)
    cls = CrossEntropySmooth if key == "CE" else BinaryCrossEntropySmooth
    return cls(smoothing=label_smoothing, aux_factor=aux_factor, reduction=reduction, class_weights=weights)
