"""Classification losses (``create_loss``): cross entropy and binary cross entropy.

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
"""
import mindspore as ms
from mindspore import nn, ops

from ..errors import UserError

__all__ = ["create_loss", "CrossEntropySmooth", "BinaryCrossEntropySmooth", "LOSSES"]

LOSSES = ("ce", "bce")
_REDUCTIONS = ("mean", "sum", "none")


class _SmoothLossBase(nn.Cell):
    def __init__(self, smoothing=0.0, aux_factor=0.0, reduction="mean"):
        super().__init__()
        self.smoothing = float(smoothing)
        self.aux_factor = float(aux_factor)
        self.reduction = reduction

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
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss

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
        return self._reduce(-(y * logp).sum(-1))


class BinaryCrossEntropySmooth(_SmoothLossBase):
    """Sigmoid (multi-label) cross entropy with label smoothing; one-hot / soft / int labels."""

    def _single(self, logits, labels):
        x = logits.astype(ms.float32)
        y = self._targets(labels, x.shape[-1])
        loss = ops.relu(x) - x * y + ops.log1p(ops.exp(-ops.abs(x)))
        return self._reduce(loss)


def create_loss(name="CE", label_smoothing=0.0, aux_factor=0.0, reduction="mean"):
    """Build the loss cell: ``loss(logits, labels) -> scalar`` (or per-sample with reduction='none')."""
    key = str(name).lower()
    if key not in LOSSES:
        raise UserError(f"unknown loss: {name!r}. Use 'CE' (softmax cross entropy) or 'BCE' (sigmoid).")
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise UserError(f"label_smoothing must be in [0, 1): {label_smoothing}. Fix label_smoothing.")
    if float(aux_factor) < 0.0:
        raise UserError(f"aux_factor must be >= 0: {aux_factor}. Fix aux_factor.")
    if reduction not in _REDUCTIONS:
        raise UserError(f"unknown loss reduction: {reduction!r}. Use one of {', '.join(_REDUCTIONS)}.")
    cls = CrossEntropySmooth if key == "ce" else BinaryCrossEntropySmooth
    return cls(smoothing=label_smoothing, aux_factor=aux_factor, reduction=reduction)
