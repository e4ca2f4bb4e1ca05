"""Exponential moving average of the model's weights (``EMA``), MindCV semantics.

Every parameter of the network is averaged: the trainable weights AND the BatchNorm moving
statistics (``moving_mean`` / ``moving_variance``), as MindCV's ``TrainStep`` does with
``network.get_parameters()``.

At the k-th update (k = 1, 2, ...) the decay is warmed up as in MindCV:

    d_k = ema_decay * (1 - exp(-k / 2000))
    ema <- d_k * ema + (1 - d_k) * weight

(MindCV does not use the ``min(decay, (1 + k) / (10 + k))`` warm-up of timm / TF.)

State Parameters (checkpoint names, same layout as MindCV): ``ema.<param name>`` for every
network parameter, and ``updates`` (float32 scalar, the update count k).

For validation with the averaged weights: ``with ema.swapped(): validate(net)``, or
``ema.swap()`` twice. ``ema_state_for_inference()`` gives the averaged weights under the plain
parameter names (for an inference checkpoint).
"""
import contextlib

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from ..errors import UserError
from ..optim.optim_factory import assign_parameter

__all__ = ["EMA"]

_ema_update = ops.MultitypeFuncGraph("ema_update")


@_ema_update.register("Tensor", "Tensor", "Tensor")
def _ema_one(decay, ema_weight, weight):
    new = ema_weight * decay + weight.astype(ema_weight.dtype) * (1.0 - decay)
    return ops.assign(ema_weight, new)


class EMA(nn.Cell):
    """EMA of ``network``'s parameters. Call the cell (no inputs) after each optimizer update.

    Args:
        network: the model (the Cell whose ``get_parameters()`` names are the checkpoint names).
        decay: ``ema_decay`` (MindCV default 0.9999).
        warmup_steps: the ``T`` of the ``1 - exp(-k / T)`` warm-up (MindCV: 2000); 0 disables it.
    """

    def __init__(self, network, decay=0.9999, warmup_steps=2000):
        super().__init__(auto_prefix=False)
        if not 0.0 <= float(decay) <= 1.0:
            raise UserError(f"ema_decay must be in [0, 1]: {decay}. Fix ema_decay.")
        self.decay = Tensor(float(decay), ms.float32)
        self.warmup_steps = float(warmup_steps)
        params = list(network.get_parameters())
        self.weights = ParameterTuple(params)
        self.ema_weights = ParameterTuple(
            Parameter(Tensor(p.asnumpy().copy(), p.dtype), name=f"ema.{p.name}", requires_grad=False)
            for p in params
        )
        self.updates = Parameter(Tensor(0.0, ms.float32), name="updates", requires_grad=False)
        self._hyper_map = ops.HyperMap()

    def construct(self):
        updates = self.updates + 1.0
        ops.assign(self.updates, updates)
        if self.warmup_steps > 0:
            decay = self.decay * (1.0 - ops.exp(-updates / self.warmup_steps))
        else:
            decay = self.decay
        return self._hyper_map(ops.partial(_ema_update, decay), self.ema_weights, self.weights)

    # ---- host-side helpers (not for use inside a graph) ---------------------------------------
    def state_dict(self):
        """``{name: Parameter}``: ``ema.<param>`` and ``updates`` (for checkpoints / resume)."""
        out = {p.name: p for p in self.ema_weights}
        out[self.updates.name] = self.updates
        return out

    def ema_state_for_inference(self):
        """``{plain param name: Tensor}`` with the averaged values (no ``ema.`` prefix)."""
        return {w.name: Tensor(e.asnumpy().astype(ms.dtype_to_nptype(w.dtype)))
                for w, e in zip(self.weights, self.ema_weights)}

    def swap(self):
        """Exchange the live weights and the averaged weights (call again to undo)."""
        for w, e in zip(self.weights, self.ema_weights):
            live = w.asnumpy().copy()
            avg = e.asnumpy().copy()
            assign_parameter(w, avg)
            assign_parameter(e, live)

    @contextlib.contextmanager
    def swapped(self):
        """Context manager: the network holds the EMA weights inside the block."""
        self.swap()
        try:
            yield self
        finally:
            self.swap()

    def load_state(self, param_dict):
        """Restore ``ema.*`` and ``updates`` from a loaded checkpoint dict; returns missing names."""
        missing = []
        for name, p in self.state_dict().items():
            if name not in param_dict:
                missing.append(name)
                continue
            assign_parameter(p, param_dict[name])
        return missing
