"""Optimizers (``create_optimizer``) and helpers to save / restore optimizer state.

Names follow MindCV's ``create_optimizer``: ``sgd`` (``nn.SGD`` with momentum), ``momentum``
(``nn.Momentum``), ``nesterov`` (``nn.Momentum`` with Nesterov), ``adam`` (``nn.Adam``),
``adamw`` (bias-corrected Adam with decoupled weight decay, MindCV's formula, run by MindSpore's
fused Adam kernel, ``ops.Adam``, given a per-step eps and preceded by the decoupled decay:
``nn.AdamWeightDecay`` has no bias correction), ``rmsprop`` (``nn.RMSProp``, ``eps`` is its
epsilon), ``adagrad`` (``nn.Adagrad`` as MindCV builds it: initial accumulator 0.1, no epsilon,
L2 weight decay), ``nadam`` (MindCV's NAdam, ``schedule_decay`` 4e-3, L2 weight decay), ``lamb``
(written here: ``nn.Lamb`` has no CPU kernel) and ``lion`` (written here, arXiv:2302.06675).
The optimizers written here are in ``optim/optimizers.py``. As in MindCV, ``eps`` is RMSProp's
epsilon only; adam / adamw / lamb / nadam use ``adam_eps`` (1e-8) and adagrad has none.

``lr`` is a float or a per-step array (``create_scheduler``); the optimizer picks
``lr[global_step]`` and increments ``global_step`` (an int32 Parameter named ``global_step``)
once per call. Resume = restore ``global_step`` (``set_global_step``) and the moment buffers
(``optimizer_state`` / ``load_optimizer_state``).

Optimizer state Parameter names (what ``optimizer_state`` returns and checkpoints hold):

=========  ======================================================================
all        ``global_step``; the schedule (not state): ``learning_rate`` (the LR value or
           the whole array), and with ``layer_decay`` ``learning_rate_group_<n>`` per group
sgd        ``momentum``, ``accum.<param>``, ``stat.<param>``
momentum   ``momentum``, ``moments.<param>``
adam       ``beta1_power``, ``beta2_power``, ``moment1.<param>``, ``moment2.<param>``
adamw      ``beta1_power``, ``beta2_power``, ``adam_m.<param>``, ``adam_v.<param>``
rmsprop    ``mean_square.<param>``, ``moment.<param>`` (+ ``mean_grad.<param>`` if centered)
adagrad    ``accum.<param>``
nadam      ``mu_schedule``, ``beta2_power``, ``nadam_step``, ``nadam_m.<param>``, ``nadam_v.<param>``
lamb       ``beta1_power``, ``beta2_power``, ``lamb_m.<param>``, ``lamb_v.<param>``
lion       ``lion_m.<param>``
=========  ======================================================================

Weight decay follows ``weight_decay_filter`` (``disable`` / ``norm_and_bias`` / ``auto``) and
``layer_decay`` scales the lr per stem / stage / head: both in ``optim/param_groups.py``.
"""
import re

import numpy as np

import mindspore as ms
from mindspore import Tensor, nn, ops

from ..errors import UserError
from . import OPTIMIZERS
from .optimizers import AdamW, Lamb, Lion, NAdam, without_sparse_adam_notice
from .param_groups import WEIGHT_DECAY_FILTERS, decay_groups, layer_decay_groups, split_weight_decay

__all__ = [
    "create_optimizer",
    "OPTIMIZERS",
    "WEIGHT_DECAY_FILTERS",
    "AdamW",
    "Lion",
    "Lamb",
    "NAdam",
    "split_weight_decay",
    "optimizer_state",
    "load_optimizer_state",
    "is_schedule_parameter",
    "set_global_step",
    "get_global_step",
    "assign_parameter",
]

_SCHEDULE_NAME = re.compile(r"learning_rate(_group_\d+)?")


# --------------------------------------------------------------------------------------------
# factory
# --------------------------------------------------------------------------------------------
def _as_params(params_or_net):
    if isinstance(params_or_net, nn.Cell):
        params = params_or_net.trainable_params()
    else:
        params = list(params_or_net)
    if not params:
        raise UserError("the optimizer got no trainable parameters. Check that the model has "
                        "trainable weights (nothing frozen by mistake).")
    return params


def create_optimizer(
    params_or_net,
    opt="momentum",
    lr=0.001,
    weight_decay=0.0,
    momentum=0.9,
    nesterov=False,
    weight_decay_filter="disable",
    layer_decay=None,
    loss_scale=1.0,
    eps=1e-10,
    beta1=0.9,
    beta2=0.999,
    **kwargs,
):
    """Build a MindSpore optimizer.

    Args:
        params_or_net: a Cell (its ``trainable_params()``), a list of Parameters, or a list of
            MindSpore parameter-group dicts (used as given; ``weight_decay_filter`` is then ignored).
        opt: one of ``OPTIMIZERS``.
        lr: float, or a per-step array / 1-D Tensor (``create_scheduler``).
        weight_decay: decay factor (L2 added to the gradient for sgd / momentum / adam / rmsprop /
            adagrad / nadam; decoupled for adamw / lion / lamb).
        momentum: momentum for sgd / momentum / nesterov / rmsprop.
        nesterov: Nesterov momentum (sgd, momentum; Adam's ``use_nesterov``).
        weight_decay_filter: ``disable`` / ``norm_and_bias`` / ``auto`` (``optim/param_groups.py``).
        layer_decay: None (off), or a factor in (0, 1]: the lr of each parameter is ``lr`` times
            ``layer_decay ** (5 - layer id)``, stem 0, stages 1..4, head 5 (``param_groups.py``);
            works with every optimizer; needs a zoo model (or its parameters), not groups.
        loss_scale: the factor the gradients handed to the optimizer are still multiplied by
            (MindSpore's optimizer ``loss_scale``). ``TrainStep`` unscales gradients itself, so
            1.0 is the normal value; ``TrainStep`` compensates if it is not.
        eps: RMSProp epsilon (MindCV's ``eps``); adam / adamw / lamb / nadam use ``adam_eps``
            (default 1e-8); adagrad has none (MindCV passes ``eps`` to RMSProp only).
        beta1, beta2: Adam-family / Lion betas (Lion's default beta2 is 0.99 when 0.999 is given).
        kwargs: ``adam_eps``, ``rmsprop_decay`` (default 0.9), ``centered`` (RMSProp),
            ``dampening`` (SGD), ``schedule_decay`` (NAdam, default 4e-3, MindCV's).
    """
    name = str(opt).lower()
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer: {opt!r}. Use one of: {', '.join(OPTIMIZERS)}.")
    if weight_decay < 0:
        raise UserError(f"weight_decay must be >= 0: {weight_decay}. Fix weight_decay.")
    if loss_scale <= 0:
        raise UserError(f"loss_scale must be > 0: {loss_scale}. Fix loss_scale.")
    if weight_decay_filter not in WEIGHT_DECAY_FILTERS:
        raise UserError(
            f"unknown weight_decay_filter: {weight_decay_filter!r}. "
            f"Use one of: {', '.join(WEIGHT_DECAY_FILTERS)}."
        )
    lr = _checked_lr(lr)
    groups = _parameter_groups(params_or_net, lr, weight_decay, weight_decay_filter, layer_decay)
    weight_decay = float(weight_decay)
    loss_scale = float(loss_scale)
    adam_eps = float(kwargs.pop("adam_eps", 1e-8))
    schedule_decay = float(kwargs.pop("schedule_decay", 4e-3))
    unknown = set(kwargs) - {"rmsprop_decay", "centered", "dampening"}
    if unknown:
        raise UserError(f"unknown optimizer option(s): {', '.join(sorted(unknown))}. Remove them.")

    if name == "sgd":
        return nn.SGD(groups, learning_rate=lr, momentum=float(momentum),
                      dampening=float(kwargs.get("dampening", 0.0)),
                      weight_decay=weight_decay, nesterov=bool(nesterov), loss_scale=loss_scale)
    if name in ("momentum", "nesterov"):
        return nn.Momentum(groups, learning_rate=lr, momentum=float(momentum),
                           weight_decay=weight_decay, loss_scale=loss_scale,
                           use_nesterov=bool(nesterov) or name == "nesterov")
    if name == "adam":
        with without_sparse_adam_notice():  # nn.Adam's constructor logs a deprecation of a kernel we never run
            return nn.Adam(groups, learning_rate=lr, beta1=float(beta1), beta2=float(beta2), eps=adam_eps,
                           weight_decay=weight_decay, loss_scale=loss_scale, use_nesterov=bool(nesterov))
    if name == "adamw":
        return AdamW(groups, learning_rate=lr, beta1=float(beta1), beta2=float(beta2), eps=adam_eps,
                     weight_decay=weight_decay, loss_scale=loss_scale)
    if name == "rmsprop":
        return nn.RMSProp(groups, learning_rate=lr, decay=float(kwargs.get("rmsprop_decay", 0.9)),
                          momentum=float(momentum), epsilon=float(eps),
                          centered=bool(kwargs.get("centered", False)),
                          loss_scale=loss_scale, weight_decay=weight_decay)
    if name == "adagrad":  # MindCV: nn.Adagrad(params, learning_rate, weight_decay, loss_scale)
        return nn.Adagrad(groups, accum=0.1, learning_rate=lr, update_slots=True,
                          loss_scale=loss_scale, weight_decay=weight_decay)
    if name == "nadam":
        return NAdam(groups, learning_rate=lr, beta1=float(beta1), beta2=float(beta2), eps=adam_eps,
                     weight_decay=weight_decay, loss_scale=loss_scale, schedule_decay=schedule_decay)
    if name == "lamb":
        return Lamb(groups, learning_rate=lr, beta1=float(beta1), beta2=float(beta2),
                    eps=adam_eps,
                    weight_decay=weight_decay, loss_scale=loss_scale)
    if name == "lion":
        lion_beta2 = 0.99 if float(beta2) == 0.999 else float(beta2)
        return Lion(groups, learning_rate=lr, beta1=float(beta1), beta2=lion_beta2,
                    weight_decay=weight_decay, loss_scale=loss_scale)
    raise NotImplementedError(f"optimizer {name!r} is listed in OPTIMIZERS but create_optimizer does not build it")


def _checked_lr(lr):
    """The learning rate as the optimizer takes it: a float, or a float32 Tensor of the per-step schedule."""
    if not isinstance(lr, (float, int, Tensor)):
        lr = np.asarray(lr, dtype=np.float32)
    if isinstance(lr, np.ndarray):
        if lr.ndim == 0:
            lr = float(lr)
        elif lr.size == 0 or not np.all(np.isfinite(lr)) or np.any(lr < 0):
            raise UserError("the learning-rate schedule is empty or has negative / non-finite values.")
        else:
            lr = Tensor(lr, ms.float32)
    elif isinstance(lr, (float, int)):
        if lr < 0:
            raise UserError(f"lr must be >= 0: {lr}. Fix lr.")
        lr = float(lr)
    return lr


def _parameter_groups(params_or_net, lr, weight_decay, weight_decay_filter, layer_decay):
    """The optimizer's parameters: plain, or grouped by weight decay and / or layer decay."""
    params = _as_params(params_or_net)
    if layer_decay is not None:
        if isinstance(params[0], dict):
            raise UserError("layer_decay needs the model or its parameters, not parameter groups.")
        groups = layer_decay_groups(params_or_net if isinstance(params_or_net, nn.Cell) else params, lr,
                                    layer_decay, weight_decay, weight_decay_filter)
        for group in groups:
            if isinstance(group.get("lr"), np.ndarray):
                group["lr"] = Tensor(group["lr"], ms.float32)
    elif isinstance(params[0], dict):
        groups = params
    elif weight_decay > 0:
        groups = decay_groups(params, weight_decay, weight_decay_filter)
    else:
        groups = params
    return groups


# --------------------------------------------------------------------------------------------
# state helpers (resume)
# --------------------------------------------------------------------------------------------
def optimizer_state(optimizer, include_lr=False):
    """``{name: Parameter}`` of the optimizer's own state (moments, step, betas powers...).

    The learning-rate array is left out unless ``include_lr``: a resumed run rebuilds it from the
    config, and its length changes when ``epoch_size`` changes.
    """
    skip = set(p.name for p in optimizer._parameters)  # the model weights themselves
    state = {}
    for p in optimizer.get_parameters():
        if p.name in skip:
            continue
        if not include_lr and is_schedule_parameter(p.name):
            continue
        state[p.name] = p
    return state


def is_schedule_parameter(name):
    """True for the learning-rate schedule Parameters (``learning_rate``, ``learning_rate_group_<n>``
    with per-group lr such as ``layer_decay``), maybe under a ``prefix.``: rebuilt from the config,
    never resumed."""
    return _SCHEDULE_NAME.fullmatch(str(name).rsplit(".", 1)[-1]) is not None


def load_optimizer_state(optimizer, param_dict, strict=True):
    """Copy optimizer state from ``param_dict`` (e.g. ``ms.load_checkpoint(path)``) into ``optimizer``.

    ``learning_rate`` entries are ignored (the schedule comes from the config). Returns the list of
    state names that were not found; with ``strict`` a missing name or a shape mismatch is a
    ``UserError``.
    """
    missing = []
    for name, param in optimizer_state(optimizer).items():
        if name not in param_dict:
            missing.append(name)
            continue
        value = param_dict[name]
        value = value if isinstance(value, Tensor) else Tensor(np.asarray(value))
        if tuple(value.shape) != tuple(param.shape):
            raise UserError(
                f"optimizer state {name!r} has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(param.shape)} here. The checkpoint was saved with another model or optimizer; "
                "resume with the same model/opt or start without --resume."
            )
        assign_parameter(param, value)
    if missing and strict:
        raise UserError(
            f"the checkpoint lacks optimizer state: {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}. It was saved with another optimizer ('opt'); "
            "resume with the same optimizer or load only the weights."
        )
    return missing


def assign_parameter(param, value):
    """Write ``value`` into ``param`` in place (``ops.assign``).

    Use this, not ``Parameter.set_data``, once a graph has run: in PyNative mode a ``@jit``
    construct (every MindSpore optimizer) keeps using the old storage after ``set_data``, so the
    new value would be ignored and later updates would not show in the Parameter.
    """
    arr = value.asnumpy() if isinstance(value, Tensor) else np.asarray(value)
    arr = arr.astype(ms.dtype_to_nptype(param.dtype)).reshape(param.shape)
    ops.assign(param, Tensor(arr))


def set_global_step(optimizer, step):
    """Set the optimizer's step counter (the index into the LR array) for resume."""
    assign_parameter(optimizer.global_step, np.array([int(step)], np.int32))


def get_global_step(optimizer):
    return int(optimizer.global_step.asnumpy().reshape(-1)[0])
