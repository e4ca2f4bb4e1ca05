"""Process setup shared by train.py and validate.py: device, execution mode, ranks, seeds."""
import logging
import random

import mindspore as ms
import numpy as np

from . import init_distributed, resolve_device_target
from ..errors import UserError


def _warn_slow_cpu_convolution(device_target):
    """MindSpore 2.9 / 2.10 run 3x3 convolutions on CPU through oneDNN's reference path."""
    if device_target != "CPU":
        return
    major_minor = tuple(int(p) for p in ms.__version__.split(".")[:2] if p.isdigit())
    if major_minor in ((2, 9), (2, 10)):
        logging.getLogger("mindcv_res2net").warning(
            "MindSpore %s runs 3x3 convolutions on CPU about 300x slower than 2.8.0 (measured: "
            "0.15 against 30-55 GFLOP/s). Install the pinned version: pip install mindspore==2.8.0",
            ms.__version__)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    ms.set_seed(seed)


def setup_runtime(args):
    """Resolve the device, set the execution mode, join the cluster when launched by mpirun/msrun,
    seed every generator identically on every rank (identical initial weights). Returns DistInfo.

    The device is set once, by ``init_distributed`` (``mindspore.set_device``, with the rank's device
    id under a launcher): MindSpore refuses a second ``set_device`` with another id."""
    if args.mode not in (0, 1):
        raise UserError(f"mode must be 0 (graph) or 1 (pynative), got {args.mode!r}")
    device_target = resolve_device_target(args.device_target)
    args.device_target = device_target
    ms.set_context(mode=ms.GRAPH_MODE if args.mode == 0 else ms.PYNATIVE_MODE)
    _warn_slow_cpu_convolution(device_target)
    dist = init_distributed(args.distribute, device_target)
    seed_everything(int(args.seed))
    return dist
