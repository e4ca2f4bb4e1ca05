"""Optimizer parameter groups: the weight-decay filter and layer-wise learning-rate decay.

Weight-decay filter (``weight_decay_filter``):

* ``disable``: decay on every trainable parameter, BN gamma/beta and biases included (MindCV's
  recipes). Passed as a parameter group, so MindSpore's built-in gamma/beta filter for flat
  parameter lists does not apply.
* ``norm_and_bias``: no decay on normalisation weights (``gamma``/``beta``), biases and any other
  parameter with ``ndim <= 1``.
* ``auto``: no decay on parameters with ``ndim <= 1`` (which covers norm weights and biases).

Layer-wise learning-rate decay (``layer_decay``, MindCV's / timm's key): every trainable parameter
gets a layer id, 0 = stem, 1..4 = the four stages, 5 = head (the classifier), and its learning rate
is the schedule times ``layer_decay ** (5 - id)``: the head trains at the full lr, the stem at
``lr * layer_decay ** 5``.

==========  ====================================  ==================================
layer id    Res2Net (all variants)                Res2Net-DLA
==========  ====================================  ==================================
0 (stem)    ``conv1*`` (deep stem of v1b too),    ``base_layer``, ``level0``,
            ``bn1``                               ``level1`` (the /2 stem)
1 .. 4      ``layer1`` .. ``layer4``              ``level2`` .. ``level5``
5 (head)    ``classifier``                        ``classifier``
==========  ====================================  ==================================

The DLA levels map to the stages of the same output stride (/4, /8, /16, /32), so a recipe tuned
on Res2Net scales the same parts of a DLA model. A parameter outside these parts (a model that is
not from the zoo) is refused: its depth is unknown.

Weight decay with ``layer_decay`` follows ``weight_decay_filter`` exactly as without it (each layer
group is split into a decayed and a non-decayed group). MindCV instead takes every 1-D parameter
out of weight decay whenever ``layer_decay`` is set, whatever the filter, and ignores
``layer_decay`` with ``weight_decay_filter: auto``: its result is ``norm_and_bias`` here.
"""
import numpy as np

from ..errors import UserError
from . import WEIGHT_DECAY_FILTERS

__all__ = [
    "WEIGHT_DECAY_FILTERS",
    "NUM_LAYER_IDS",
    "split_weight_decay",
    "decay_groups",
    "layer_id",
    "layer_decay_groups",
]


# layer id of each top-level cell of the zoo's models (module doc)
_LAYER_IDS = {
    "conv1": 0, "bn1": 0, "layer1": 1, "layer2": 2, "layer3": 3, "layer4": 4,
    "base_layer": 0, "level0": 0, "level1": 0, "level2": 1, "level3": 2, "level4": 3, "level5": 4,
    "classifier": 5,
}
NUM_LAYER_IDS = 6  # stem, 4 stages, head


# --------------------------------------------------------------------------------------------
# weight-decay filter
# --------------------------------------------------------------------------------------------
def _is_norm_or_bias(param):
    leaf = param.name.rsplit(".", 1)[-1]
    return leaf in ("gamma", "beta", "bias") or len(param.shape) <= 1


def _check_filter(weight_decay_filter):
    if weight_decay_filter not in WEIGHT_DECAY_FILTERS:
        raise UserError(
            f"unknown weight_decay_filter: {weight_decay_filter!r}. "
            f"Use one of: {', '.join(WEIGHT_DECAY_FILTERS)}."
        )


def split_weight_decay(params, weight_decay_filter="disable"):
    """Split parameters into (decayed, not decayed) lists by the filter rule (see module doc)."""
    _check_filter(weight_decay_filter)
    if weight_decay_filter == "disable":
        return list(params), []
    if weight_decay_filter == "norm_and_bias":
        skip = _is_norm_or_bias
    else:  # auto
        skip = lambda p: len(p.shape) <= 1  # noqa: E731
    decay, no_decay = [], []
    for p in params:
        (no_decay if skip(p) else decay).append(p)
    return decay, no_decay


def decay_groups(params, weight_decay, weight_decay_filter):
    """MindSpore parameter groups: the decayed parameters, the others (weight decay 0), order."""
    decay, no_decay = split_weight_decay(params, weight_decay_filter)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": float(weight_decay)})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    groups.append({"order_params": list(params)})
    return groups


# --------------------------------------------------------------------------------------------
# layer-wise lr decay
# --------------------------------------------------------------------------------------------
def layer_id(name):
    """Layer id (0 stem .. 5 head) of a parameter of a zoo model from its name, e.g.
    ``layer2.0.conv1.weight`` -> 2; ``UserError`` for a name outside the stem / stages / head."""
    top = str(name).split(".", 1)[0]
    if top not in _LAYER_IDS:
        raise UserError(
            f"layer_decay: cannot place parameter {name!r} in the stem, a stage or the head. "
            "layer_decay works with the zoo's Res2Net and Res2Net-DLA models "
            "(conv1/bn1, layer1..layer4 or base_layer, level0..level5, and classifier); "
            "set layer_decay: null for other networks."
        )
    return _LAYER_IDS[top]


def _named_trainable(params_or_net):
    """``[(name, Parameter)]``: the names of ``parameters_and_names()`` for a Cell, else ``.name``."""
    if hasattr(params_or_net, "parameters_and_names"):
        return [(n, p) for n, p in params_or_net.parameters_and_names() if p.requires_grad]
    return [(p.name, p) for p in params_or_net]


def _scaled_lr(lr, scale):
    """``lr * scale``: a float, or a float32 array (per step) computed in float64."""
    if isinstance(lr, (float, int)):
        return float(lr) * scale
    arr = lr.asnumpy() if hasattr(lr, "asnumpy") else np.asarray(lr)
    return (arr.astype(np.float64) * scale).astype(np.float32)


def layer_decay_groups(params_or_net, lr, layer_decay, weight_decay=0.0, weight_decay_filter="disable"):
    """MindSpore parameter groups with per-layer lr (module doc).

    Args:
        params_or_net: a zoo model (a Cell: its trainable parameters, named by
            ``parameters_and_names()``) or a list of its Parameters (named by ``Parameter.name``).
        lr: float, or the per-step array of ``create_scheduler`` (numpy or 1-D Tensor).
        layer_decay: the factor per layer, in (0, 1].
        weight_decay, weight_decay_filter: as in ``create_optimizer``.

    Returns:
        ``[{"params", "lr", "weight_decay"}, ..., {"order_params"}]``: one group per (layer id,
        decayed or not) that has parameters, ``lr`` a float or a float32 numpy array per step.
    """
    try:
        layer_decay = float(layer_decay)
    except (TypeError, ValueError):
        raise UserError(f"layer_decay must be a number in (0, 1] or null: {layer_decay!r}.") from None
    if not 0.0 < layer_decay <= 1.0:
        raise UserError(f"layer_decay must be in (0, 1] (e.g. 0.75), or null to turn it off: {layer_decay}.")
    _check_filter(weight_decay_filter)
    named = _named_trainable(params_or_net)
    if not named:
        raise UserError("the optimizer got no trainable parameters. Check that the model has "
                        "trainable weights (nothing frozen by mistake).")
    if any(isinstance(p, dict) for _, p in named):
        raise UserError("layer_decay needs the model or its parameters, not parameter groups.")
    params = [p for _, p in named]
    decayed = set()
    if weight_decay > 0:
        decayed = {id(p) for p in split_weight_decay(params, weight_decay_filter)[0]}
    buckets = {}  # (layer id, decayed) -> params, in model order
    for name, p in named:
        buckets.setdefault((layer_id(name), id(p) in decayed), []).append(p)
    top = NUM_LAYER_IDS - 1
    groups = []
    for (lid, dec), members in sorted(buckets.items()):
        groups.append({
            "params": members,
            "lr": _scaled_lr(lr, layer_decay ** (top - lid)),
            "weight_decay": float(weight_decay) if dec else 0.0,
        })
    groups.append({"order_params": params})
    return groups
