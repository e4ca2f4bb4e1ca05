"""Optimizers and their parameter groups.

* ``optim_factory``: ``create_optimizer`` (MindCV's names and options), the optimizer state a
  checkpoint keeps, the global step.
* ``optimizers``: the optimizers MindSpore lacks or that differ from MindCV's (AdamW, Lion, Lamb, NAdam).
* ``param_groups``: weight-decay filters and layer-wise lr decay.

``OPTIMIZERS`` and ``WEIGHT_DECAY_FILTERS`` are the one lists of their names: train.py's ``opt`` and
``weight_decay_filter`` keys offer exactly these.
"""
from ..lazy_exports import lazy_exports

WEIGHT_DECAY_FILTERS = ("disable", "norm_and_bias", "auto")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "nadam", "lamb", "lion")

_EXPORTS = {"create_optimizer": "optim_factory", "optimizer_state": "optim_factory",
            "load_optimizer_state": "optim_factory", "get_global_step": "optim_factory",
            "set_global_step": "optim_factory", "split_weight_decay": "optim_factory"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["OPTIMIZERS", "WEIGHT_DECAY_FILTERS", *sorted(_EXPORTS)]
