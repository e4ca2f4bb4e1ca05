"""Training: the train step and the epoch loop, and what a run writes.

* ``trainer``: ``train(args)``, train.py's work: data, model, optimizer, schedule, resume, the
  epoch loop, validation, checkpoints.
* ``train_step``: ``TrainStep``, one optimizer step (AMP, loss scale, clipping, gradient
  accumulation, EMA, gradient all-reduce); ``amp_cast_list``: the ``amp_cast_list`` key's text.
* ``overflow``: what a non-finite step does to the run; ``ema``: the EMA weights.
* ``data_setup``: the training and validation loaders of a run.
* ``checkpoint_manager``: ``ckpt_save_dir``: its lock, index, rotation and resume decisions.
* ``run_log`` / ``summary``: logs, ``metrics.csv``, ``result.log``, curves, TensorBoard events.
"""
from ..lazy_exports import lazy_exports

_EXPORTS = {"train": "trainer", "TrainStep": "train_step", "NetWithLoss": "train_step", "apply_amp": "train_step",
            "EMA": "ema"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
