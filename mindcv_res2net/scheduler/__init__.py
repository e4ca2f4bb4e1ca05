"""The learning-rate schedule: one value per step, as MindCV's ``create_scheduler`` computes it
(``scheduler_factory``).

``SCHEDULERS`` is the one list of schedule names: train.py's ``scheduler`` key offers exactly these.
"""
from ..lazy_exports import lazy_exports

SCHEDULERS = ("constant", "cosine_decay", "warmup_cosine_decay", "step_decay", "multi_step_decay",
              "exponential_decay", "polynomial_decay", "one_cycle", "cyclic")

_EXPORTS = {"create_scheduler": "scheduler_factory"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["SCHEDULERS", *sorted(_EXPORTS)]
