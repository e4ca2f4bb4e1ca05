"""mindcv_res2net: train, evaluate, convert, benchmark and export the Res2Net family on MindSpore.

The MindSpore-backed names are imported on first use, so that ``import mindcv_res2net.errors``
(config parsing, ``--help``, ``--dry_run``) does not pay for importing MindSpore.
"""
__version__ = "0.1.0"

import importlib

from .errors import UserError

_LAZY = {
    "create_model": ("models.factory", "create_model"),
    "list_models": ("models", "list_models"),
    "optimize_for_inference": ("models.inference", "optimize_for_inference"),
}


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["create_model", "list_models", "optimize_for_inference", "UserError", "__version__"]
