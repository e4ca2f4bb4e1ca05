"""mindcv_res2net: train, evaluate, convert, benchmark and export the Res2Net family on MindSpore."""
__version__ = "0.1.0"

from .errors import UserError
from .models import create_model, list_models


def optimize_for_inference(net):
    """An eval-only copy of ``net`` with BatchNorm folded into the convolutions (see inference.py)."""
    from .inference import optimize_for_inference as _optimize
    return _optimize(net)


__all__ = ["create_model", "list_models", "optimize_for_inference", "UserError", "__version__"]
