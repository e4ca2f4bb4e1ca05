"""Per-step learning-rate schedules (``create_scheduler``).

The result is a numpy float32 array with one learning rate per training step
(``steps_per_epoch * num_epochs`` values). MindSpore optimizers take such an array as
``learning_rate`` and pick ``lr[global_step]`` at every update, so resuming a run only needs
the optimizer's ``global_step`` restored.

The curves follow MindCV's ``create_scheduler`` (mindcv/scheduler/scheduler_factory.py and
dynamic_lr.py), so the same YAML keys give the same LR at every step:

* warmup (``warmup_epochs > 0``): linear from ``lr * warmup_factor`` towards ``lr``. Per step
  (``lr[i] = lr * (f + (1 - f) * i / (warmup_epochs * steps_per_epoch))``), or per epoch when
  ``lr_epoch_stair`` (``lr * (f + (1 - f) * epoch / warmup_epochs)``). The first step after warmup
  has exactly ``lr``.
* the main phase covers the remaining ``num_epochs - warmup_epochs`` epochs; its epoch counter
  ``t`` restarts at 0 after warmup (so ``milestones`` and ``decay_epochs`` count from the end of
  warmup, as in MindCV). ``t`` is fractional (``step / steps_per_epoch``) unless
  ``lr_epoch_stair``, then it is the integer epoch index.

  ===================  ==========================================================================
  constant             ``lr``
  cosine_decay         ``num_cycles`` cosine cycles of ``decay_epochs`` each, from
                       ``lr * cycle_decay**c`` to ``min_lr``; ``min_lr`` after the last cycle
                       (``warmup_cosine_decay`` is an alias)
  step_decay           ``lr * decay_rate ** floor(epoch / decay_epochs)`` (always per epoch)
  multi_step_decay     ``lr * decay_rate ** (number of milestones <= epoch)`` (always per epoch)
  exponential_decay    ``lr * decay_rate ** t``
  polynomial_decay     ``lr * (1 - t / main_epochs) ** decay_rate`` (reaches 0, not ``min_lr``:
                       MindCV's definition, ``decay_rate`` is the power)
  one_cycle            MindCV's ``one_cycle_lr``: cosine from ``lr / 25`` up to ``lr`` over the
                       first 30 % of the steps, then cosine down to ``min_lr``; per step only,
                       no separate warmup
  cyclic               MindCV's ``cyclic_lr`` (Smith 2017, arXiv:1506.01186, "triangular"):
                       ``num_cycles`` triangles over all the steps, each rising linearly from
                       ``min_lr`` to ``lr`` in ``int(steps / num_cycles / 2)`` steps and falling
                       back in as many; steps left after the last whole cycle start a new one.
                       Per step only, no separate warmup (as in MindCV)
  ===================  ==========================================================================
"""
import logging
import math
from bisect import bisect_right

import numpy as np

from ..errors import UserError
from . import SCHEDULERS

__all__ = ["create_scheduler", "SCHEDULERS"]

_logger = logging.getLogger(__name__)

def _epoch_position(num_steps, steps_per_epoch, stair):
    """Epoch counter of every step: fractional, or the integer epoch index when ``stair``."""
    steps = np.arange(num_steps, dtype=np.float64)
    if stair:
        return np.floor(steps / steps_per_epoch)
    return steps / steps_per_epoch


def _warmup(lr, warmup_factor, warmup_epochs, steps_per_epoch, stair):
    t = _epoch_position(warmup_epochs * steps_per_epoch, steps_per_epoch, stair)
    start = lr * warmup_factor
    return start + (lr - start) * np.minimum(t, warmup_epochs) / warmup_epochs


def _cosine(lr, min_lr, decay_epochs, num_cycles, cycle_decay, main_epochs, steps_per_epoch, stair):
    total = main_epochs * steps_per_epoch
    cycle_steps = decay_epochs * steps_per_epoch
    t = _epoch_position(cycle_steps, steps_per_epoch, stair)
    cosine = 0.5 * (1.0 + np.cos(np.pi * np.minimum(t, decay_epochs) / decay_epochs))
    pieces = []
    for c in range(num_cycles):
        peak = lr * cycle_decay ** c
        pieces.append(min_lr + (peak - min_lr) * cosine)
    out = np.concatenate(pieces) if pieces else np.zeros(0)
    out = out[:total]
    if out.size < total:  # after the last cycle: flat at min_lr
        out = np.concatenate([out, np.full(total - out.size, min_lr)])
    return out


def _one_cycle(lr, min_lr, num_steps, pct_start=0.3, div_factor=25.0):
    """MindCV ``one_cycle_lr`` (two phases, cosine annealing) with final LR ``min_lr``."""
    initial = lr / div_factor
    up = float(pct_start * num_steps) - 1
    end = float(num_steps) - 1
    if up <= 0 or end <= up:
        raise UserError(
            f"one_cycle needs more steps: {num_steps} steps in total. "
            "Use more epochs or a smaller batch size, or another scheduler."
        )

    def anneal(start, stop, pct):
        return stop + (start - stop) / 2.0 * (math.cos(math.pi * pct) + 1)

    out = np.empty(num_steps, dtype=np.float64)
    for i in range(num_steps):
        if i <= up:
            out[i] = anneal(initial, lr, i / up)
        else:
            out[i] = anneal(lr, min_lr, (i - up) / (end - up))
    return out


def _cyclic(lr, min_lr, num_steps, num_cycles):
    """MindCV ``cyclic_lr`` (mode "triangular") as ``create_scheduler`` calls it for ``cyclic``."""
    half = int(num_steps / num_cycles / 2)
    if half < 1:
        raise UserError(
            f"cyclic needs at least 2 steps per cycle: {num_steps} steps for num_cycles={num_cycles}. "
            "Use fewer num_cycles, more epochs or a smaller batch size."
        )
    i = np.arange(num_steps, dtype=np.float64)
    pos = i / (2.0 * half) - np.floor(i / (2.0 * half))  # position in the cycle, [0, 1)
    height = np.where(pos <= 0.5, pos / 0.5, (pos - 1.0) / (0.5 - 1.0))
    return min_lr + (lr - min_lr) * height


def create_scheduler(
    steps_per_epoch,
    scheduler="constant",
    lr=0.01,
    min_lr=1e-6,
    warmup_epochs=0,
    warmup_factor=0.0,
    decay_epochs=10,
    decay_rate=0.9,
    milestones=None,
    num_epochs=200,
    num_cycles=1,
    cycle_decay=1.0,
    lr_epoch_stair=False,
):
    """Per-step learning rates, numpy float32 array of length ``steps_per_epoch * num_epochs``.

    ``lr[i]`` is the learning rate of the i-th optimizer call (i counts every training batch; see
    ``TrainStep`` for gradient accumulation). Unknown ``scheduler`` or impossible values raise
    ``UserError``.
    """
    name, steps_per_epoch, num_epochs, warmup_epochs = _checked_schedule_inputs(
        scheduler, steps_per_epoch, num_epochs, warmup_epochs, lr, min_lr, warmup_factor)
    main_epochs = num_epochs - warmup_epochs

    parts = []
    if name == "cyclic" and (warmup_epochs > 0 or lr_epoch_stair):
        raise UserError(
            f"cyclic changes the LR every step and starts at min_lr by itself: it cannot be combined with "
            f"warmup_epochs={warmup_epochs} or lr_epoch_stair={lr_epoch_stair} (as in MindCV). "
            "Set warmup_epochs: 0 and lr_epoch_stair: False."
        )
    if warmup_epochs > 0:
        if name == "one_cycle":
            raise UserError(
                f"one_cycle has its own warm-up and cannot be combined with warmup_epochs={warmup_epochs}. "
                "Set warmup_epochs: 0."
            )
        if warmup_factor == 0 and lr_epoch_stair:
            _logger.warning("warmup_factor is 0 with lr_epoch_stair: the whole first epoch has LR 0.")
        parts.append(_warmup(lr, warmup_factor, warmup_epochs, steps_per_epoch, lr_epoch_stair))

    if name in ("cosine_decay", "warmup_cosine_decay"):
        main = _checked_cosine(lr, min_lr, decay_epochs, num_cycles, cycle_decay, warmup_epochs, num_epochs,
                               steps_per_epoch, lr_epoch_stair)
    else:
        main = _main_phase(name, lr, min_lr, decay_epochs, decay_rate, milestones, num_cycles, main_epochs,
                           steps_per_epoch, lr_epoch_stair)
    parts.append(np.asarray(main, dtype=np.float64))

    out = np.concatenate(parts).astype(np.float32)
    assert out.size == steps_per_epoch * num_epochs, (out.size, steps_per_epoch, num_epochs)
    return out


def _checked_schedule_inputs(scheduler, steps_per_epoch, num_epochs, warmup_epochs, lr, min_lr, warmup_factor):
    """Check the keys every schedule uses; returns (name, steps_per_epoch, num_epochs, warmup_epochs)."""
    name = str(scheduler).lower()
    if name not in SCHEDULERS:
        raise UserError(
            f"unknown LR scheduler: {scheduler!r}. Use one of: {', '.join(SCHEDULERS)}."
        )
    steps_per_epoch = int(steps_per_epoch)
    num_epochs = int(num_epochs)
    if steps_per_epoch < 1:
        raise UserError(
            f"steps_per_epoch must be at least 1: {steps_per_epoch}. "
            "The dataset gives fewer samples than one batch; use a smaller batch size."
        )
    if num_epochs < 1:
        raise UserError(f"epoch_size must be at least 1: {num_epochs}. Set a positive number of epochs.")
    if warmup_epochs < 0 or int(warmup_epochs) != warmup_epochs:
        raise UserError(f"warmup_epochs must be a whole number >= 0: {warmup_epochs}. Fix warmup_epochs.")
    warmup_epochs = int(warmup_epochs)
    if warmup_epochs > num_epochs:
        raise UserError(
            f"warmup_epochs ({warmup_epochs}) is larger than the number of epochs ({num_epochs}). "
            "Reduce warmup_epochs or train longer."
        )
    if lr < 0 or min_lr < 0:
        raise UserError(f"learning rates must be >= 0: lr={lr}, min_lr={min_lr}. Fix lr / min_lr.")
    if not 0.0 <= warmup_factor <= 1.0:
        raise UserError(f"warmup_factor must be in [0, 1]: {warmup_factor}. Fix warmup_factor.")
    return name, steps_per_epoch, num_epochs, warmup_epochs


def _checked_cosine(lr, min_lr, decay_epochs, num_cycles, cycle_decay, warmup_epochs, num_epochs, steps_per_epoch,
                    stair):
    """The cosine_decay main phase, after checking its decay_epochs and num_cycles."""
    if decay_epochs < 1 or int(decay_epochs) != decay_epochs:
        raise UserError(f"decay_epochs must be a whole number >= 1 for cosine_decay: {decay_epochs}.")
    if num_cycles < 1 or int(num_cycles) != num_cycles:
        raise UserError(f"num_cycles must be a whole number >= 1: {num_cycles}. Fix num_cycles.")
    if warmup_epochs + decay_epochs * num_cycles > num_epochs:
        _logger.warning(
            "warmup_epochs + decay_epochs * num_cycles > num_epochs: the cosine curve is cut "
            "before it reaches min_lr."
        )
    return _cosine(lr, min_lr, int(decay_epochs), int(num_cycles), cycle_decay, num_epochs - warmup_epochs,
                   steps_per_epoch, stair)


def _main_phase(name, lr, min_lr, decay_epochs, decay_rate, milestones, num_cycles, main_epochs, steps_per_epoch,
                stair):
    """The main phase of every schedule but cosine_decay, after checking its keys."""
    main_steps = main_epochs * steps_per_epoch
    if name == "step_decay":
        if decay_epochs < 1:
            raise UserError(f"decay_epochs must be >= 1 for step_decay: {decay_epochs}. Fix decay_epochs.")
        epoch = _epoch_position(main_steps, steps_per_epoch, True)
        return lr * decay_rate ** np.floor(epoch / decay_epochs)
    if name == "multi_step_decay":
        if not milestones:
            raise UserError(
                "multi_step_decay needs milestones (a list of epochs, counted after warmup), "
                "e.g. milestones: [30, 60, 90]."
            )
        marks = sorted(int(m) for m in milestones)
        epoch = _epoch_position(main_steps, steps_per_epoch, True)
        return np.array([lr * decay_rate ** bisect_right(marks, e) for e in epoch], dtype=np.float64)
    if name == "exponential_decay":
        t = _epoch_position(main_steps, steps_per_epoch, stair)
        return lr * np.power(float(decay_rate), t)
    if name == "polynomial_decay":
        if main_epochs < 1:
            raise UserError("polynomial_decay needs at least one epoch after warmup. Reduce warmup_epochs.")
        t = _epoch_position(main_steps, steps_per_epoch, stair)
        return lr * (1.0 - np.minimum(t, main_epochs) / main_epochs) ** decay_rate
    if name == "one_cycle":
        if stair:
            raise UserError("one_cycle changes the LR every step; set lr_epoch_stair: False.")
        return _one_cycle(lr, min_lr, main_steps)
    if name == "cyclic":
        if num_cycles < 1 or int(num_cycles) != num_cycles:
            raise UserError(f"num_cycles must be a whole number >= 1: {num_cycles}. Fix num_cycles.")
        return _cyclic(lr, min_lr, main_steps, int(num_cycles))
    # constant
    return np.full(main_steps, lr, dtype=np.float64)
