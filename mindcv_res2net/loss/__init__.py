"""The training losses: cross entropy with label smoothing (softmax ``CE``, sigmoid ``BCE``) and
AugMix's Jensen-Shannon consistency loss (``losses``).

``LOSSES`` and ``REDUCTIONS`` are the one lists of their names: train.py's ``loss`` and ``reduction``
keys offer exactly these.
"""
from ..lazy_exports import lazy_exports

LOSSES = ("CE", "BCE")
REDUCTIONS = ("mean", "sum")

_EXPORTS = {"create_loss": "losses", "CrossEntropySmooth": "losses", "BinaryCrossEntropySmooth": "losses",
            "JSDCrossEntropy": "losses"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["LOSSES", "REDUCTIONS", *sorted(_EXPORTS)]
