"""Training engine parts: LR schedule, optimizer, loss, EMA and the train-step cell.

The epoch loop (``trainer.py``) builds these with the factories below.
"""
from .ema import EMA
from .loss import BinaryCrossEntropySmooth, CrossEntropySmooth, create_loss
from .optimizer import (
    create_optimizer,
    get_global_step,
    load_optimizer_state,
    optimizer_state,
    set_global_step,
    split_weight_decay,
)
from .scheduler import create_scheduler
from .train_step import NetWithLoss, TrainStep, apply_amp

__all__ = [
    "create_scheduler",
    "create_optimizer",
    "split_weight_decay",
    "optimizer_state",
    "load_optimizer_state",
    "set_global_step",
    "get_global_step",
    "create_loss",
    "CrossEntropySmooth",
    "BinaryCrossEntropySmooth",
    "EMA",
    "TrainStep",
    "NetWithLoss",
    "apply_amp",
]
