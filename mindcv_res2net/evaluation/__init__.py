"""Evaluation: top-1, top-5 and loss over a validation set.

* ``evaluate``: one network over a loader, summed across ranks.
* ``validation``: validate.py's work (settings from the checkpoint / exported file, labels, JSON).
* ``compare``: a checkpoint and its exported files on the same batches, image by image.
"""
from ..lazy_exports import lazy_exports

_EXPORTS = {"validate": "validation", "evaluate_together": "compare"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
