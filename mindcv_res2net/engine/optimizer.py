"""Optimizers (``create_optimizer``) and helpers to save / restore optimizer state.

Names follow MindCV's ``create_optimizer``: ``sgd`` (``nn.SGD`` with momentum), ``momentum``
(``nn.Momentum``), ``nesterov`` (``nn.Momentum`` with Nesterov), ``adam`` (``nn.Adam``),
``adamw`` (bias-corrected Adam with decoupled weight decay, MindCV's formula, run by MindSpore's
fused Adam kernel, ``ops.Adam``, given a per-step eps and preceded by the decoupled decay:
``nn.AdamWeightDecay`` has no bias correction), ``rmsprop`` (``nn.RMSProp``, ``eps`` is its
epsilon), ``lamb`` (written here: ``nn.Lamb`` has no CPU kernel) and ``lion`` (written here,
arXiv:2302.06675).

``lr`` is a float or a per-step array (``create_scheduler``); the optimizer picks
``lr[global_step]`` and increments ``global_step`` (an int32 Parameter named ``global_step``)
once per call. Resume = restore ``global_step`` (``set_global_step``) and the moment buffers
(``optimizer_state`` / ``load_optimizer_state``).

Optimizer state Parameter names (what ``optimizer_state`` returns and checkpoints hold):

=========  ======================================================================
all        ``global_step``, ``learning_rate`` (the LR value or the whole array)
sgd        ``momentum``, ``accum.<param>``, ``stat.<param>``
momentum   ``momentum``, ``moments.<param>``
adam       ``beta1_power``, ``beta2_power``, ``moment1.<param>``, ``moment2.<param>``
adamw      ``beta1_power``, ``beta2_power``, ``adam_m.<param>``, ``adam_v.<param>``
rmsprop    ``mean_square.<param>``, ``moment.<param>`` (+ ``mean_grad.<param>`` if centered)
lamb       ``beta1_power``, ``beta2_power``, ``lamb_m.<param>``, ``lamb_v.<param>``
lion       ``lion_m.<param>``
=========  ======================================================================

Weight-decay filter (``weight_decay_filter``):

* ``disable``: decay on every trainable parameter, BN gamma/beta and biases included (MindCV's
  recipes). Passed as a parameter group, so MindSpore's built-in gamma/beta filter for flat
  parameter lists does not apply.
* ``norm_and_bias``: no decay on normalisation weights (``gamma``/``beta``), biases and any other
  parameter with ``ndim <= 1``.
* ``auto``: no decay on parameters with ``ndim <= 1`` (which covers norm weights and biases).
"""
import numpy as np

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore.common.initializer import initializer
from mindspore.nn.optim.optimizer import Optimizer

from ..errors import UserError

__all__ = [
    "create_optimizer",
    "OPTIMIZERS",
    "WEIGHT_DECAY_FILTERS",
    "AdamW",
    "Lion",
    "Lamb",
    "split_weight_decay",
    "optimizer_state",
    "load_optimizer_state",
    "set_global_step",
    "get_global_step",
    "assign_parameter",
]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "lamb", "lion")
WEIGHT_DECAY_FILTERS = ("disable", "norm_and_bias", "auto")


# --------------------------------------------------------------------------------------------
# weight-decay filter
# --------------------------------------------------------------------------------------------
def _is_norm_or_bias(param):
    leaf = param.name.rsplit(".", 1)[-1]
    return leaf in ("gamma", "beta", "bias") or len(param.shape) <= 1


def split_weight_decay(params, weight_decay_filter="disable"):
    """Split parameters into (decayed, not decayed) lists by the filter rule (see module doc)."""
    if weight_decay_filter not in WEIGHT_DECAY_FILTERS:
        raise UserError(
            f"unknown weight_decay_filter: {weight_decay_filter!r}. "
            f"Use one of: {', '.join(WEIGHT_DECAY_FILTERS)}."
        )
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


def _param_groups(params, weight_decay, weight_decay_filter):
    decay, no_decay = split_weight_decay(params, weight_decay_filter)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": float(weight_decay)})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    groups.append({"order_params": list(params)})
    return groups


# --------------------------------------------------------------------------------------------
# AdamW and Lion
# --------------------------------------------------------------------------------------------
_adamw_update = ops.MultitypeFuncGraph("adamw_update")
_lion_update = ops.MultitypeFuncGraph("lion_update")


@_adamw_update.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Tensor", "Tensor", "Tensor", "Tensor", "Bool")
def _adamw_one(beta1, beta2, eps, bc1, bc2, lr, weight_decay, param, m, v, grad, decay_flag):
    """m, v <- moments; p <- p - lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)."""
    p32 = param.astype(ms.float32)
    g32 = grad.astype(ms.float32)
    m_new = beta1 * m + (1.0 - beta1) * g32
    v_new = beta2 * v + (1.0 - beta2) * ops.square(g32)
    update = (m_new / bc1) / (ops.sqrt(v_new / bc2) + eps)
    if decay_flag:
        update = update + weight_decay * p32
    p_new = p32 - lr * update
    ok = ops.assign(m, m_new)
    ok = ops.depend(ok, ops.assign(v, v_new))
    return ops.depend(ops.assign(param, p_new.astype(param.dtype)), ok)


@_lion_update.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Bool")
def _lion_one(beta1, beta2, lr, weight_decay, param, m, grad, decay_flag):
    """p <- p - lr * (sign(b1 m + (1-b1) g) + wd * p);  m <- b2 m + (1-b2) g."""
    p32 = param.astype(ms.float32)
    g32 = grad.astype(ms.float32)
    update = ops.sign(beta1 * m + (1.0 - beta1) * g32)
    if decay_flag:
        update = update + weight_decay * p32
    p_new = p32 - lr * update
    ok = ops.assign(m, beta2 * m + (1.0 - beta2) * g32)
    return ops.depend(ops.assign(param, p_new.astype(param.dtype)), ok)


_lamb_update = ops.MultitypeFuncGraph("lamb_update")


@_lamb_update.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                       "Tensor", "Tensor", "Tensor", "Tensor", "Bool")
def _lamb_one(beta1, beta2, eps, bc1, bc2, lr, weight_decay, param, m, v, grad, decay_flag):
    """Adam direction r (+ wd * p), scaled by the trust ratio ||p|| / ||r|| (1 if either is 0)."""
    p32 = param.astype(ms.float32)
    g32 = grad.astype(ms.float32)
    m_new = beta1 * m + (1.0 - beta1) * g32
    v_new = beta2 * v + (1.0 - beta2) * ops.square(g32)
    update = (m_new / bc1) / (ops.sqrt(v_new / bc2) + eps)
    if decay_flag:
        update = update + weight_decay * p32
    w_norm = ops.sqrt(ops.square(p32).sum())
    u_norm = ops.sqrt(ops.square(update).sum())
    both = ops.logical_and(w_norm > 0.0, u_norm > 0.0)
    trust = ops.select(both, w_norm / ops.maximum(u_norm, 1e-30), ops.ones_like(w_norm))
    p_new = p32 - lr * trust * update
    ok = ops.assign(m, m_new)
    ok = ops.depend(ok, ops.assign(v, v_new))
    return ops.depend(ops.assign(param, p_new.astype(param.dtype)), ok)


_adamw_fused = ops.MultitypeFuncGraph("adamw_fused")


@_adamw_fused.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                       "Tensor", "Tensor", "Tensor", "Tensor", "Bool")
def _adamw_fused_one(kernel, beta1_power, beta2_power, beta1, beta2, eps_t, lr, weight_decay, param, m, v, grad,
                     decay):
    """MindCV's AdamW step with MindSpore's fused Adam kernel (``ops.Adam``, ApplyAdam).

    The kernel updates m and v and does p -= lr * sqrt(bc2) / bc1 * m / (sqrt(v) + eps_t), with
    bc1 = 1 - beta1^t, bc2 = 1 - beta2^t from the beta powers; given eps_t = eps * sqrt(bc2) that is
    lr * m_hat / (sqrt(v_hat) + eps), MindCV's update. The decoupled decay (lr * wd * p of the
    weights before the step) is applied first, as p * (1 - lr * wd).
    """
    if decay:
        ops.assign(param, param * (1.0 - lr * weight_decay))
    kernel(param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps_t, grad.astype(param.dtype))  # in place
    return True


class _CustomOptimizer(Optimizer):
    """Shared plumbing for AdamW / Lamb / Lion: loss-scale handling and the per-parameter map.

    MindSpore's base class multiplies weight decay by ``loss_scale`` (it adds the decay to
    still-scaled gradients); these optimizers apply decoupled decay to the weights, so the base
    class is built with loss_scale 1 and the gradients are unscaled here.
    """

    def _init_loss_scale(self, loss_scale):
        self.loss_scale = float(loss_scale)
        self.reciprocal_scale = Tensor(1.0 / self.loss_scale, ms.float32)
        self.need_scale = self.loss_scale != 1.0

    def _adam_like(self, update, bc1, bc2, grads):
        """hyper_map an Adam-style ``update`` with scalar or per-group lr / weight decay."""
        lr = self.get_lr()
        wd = self.get_weight_decay()
        b1, b2, eps = self.beta1, self.beta2, self.eps
        if self.is_group_lr:
            return self.hyper_map(ops.partial(update, b1, b2, eps, bc1, bc2), lr, wd,
                                  self._parameters, self.moments1, self.moments2, grads, self.decay_flags)
        if self.is_group:
            return self.hyper_map(ops.partial(update, b1, b2, eps, bc1, bc2, lr), wd,
                                  self._parameters, self.moments1, self.moments2, grads, self.decay_flags)
        return self.hyper_map(ops.partial(update, b1, b2, eps, bc1, bc2, lr, wd),
                              self._parameters, self.moments1, self.moments2, grads, self.decay_flags)


class AdamW(_CustomOptimizer):
    """Adam with bias correction and decoupled weight decay (Loshchilov & Hutter; MindCV's AdamW).

    State: ``adam_m.<param>``, ``adam_v.<param>`` (float32), ``beta1_power``, ``beta2_power``.

    ``fused`` (default): per parameter, the decay multiply and one fused Adam kernel (``ops.Adam``
    with eps * sqrt(1 - beta2^t) as its eps, ``_adamw_fused_one``); the same numbers as the
    element-wise formula (``fused=False``, ``_adamw_one``, MindCV's AdamW bit for bit) up to float32
    rounding, in two passes over the weights instead of a dozen. The element-wise formula is used
    for parameters that are not float32 and for eps <= 0. (``ops.AdamWeightDecay`` would be one
    kernel, but its CPU kernel is 2-3x slower than ApplyAdam's on res2net50.)
    """

    def __init__(self, params, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                 weight_decay=0.0, loss_scale=1.0, fused=True):
        super().__init__(learning_rate, params, weight_decay)
        self._init_loss_scale(loss_scale)
        for name, val in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= float(val) < 1.0:
                raise UserError(f"AdamW {name} must be in [0, 1): {val}.")
        self.beta1 = Tensor(float(beta1), ms.float32)
        self.beta2 = Tensor(float(beta2), ms.float32)
        self.eps = Tensor(float(eps), ms.float32)
        self.moments1 = self._fp32_clone("adam_m")
        self.moments2 = self._fp32_clone("adam_v")
        self.beta1_power = Parameter(initializer(1.0, (), ms.float32), name="beta1_power")
        self.beta2_power = Parameter(initializer(1.0, (), ms.float32), name="beta2_power")
        self.fused = bool(fused) and float(eps) > 0.0 and all(p.dtype == ms.float32 for p in self._parameters)
        self.fused_kernel = ops.Adam()
        # the parameters that are decayed (a flat list: decay_flags, when weight_decay > 0)
        self.fused_decay = tuple(bool(f) and bool(self.exec_weight_decay) for f in self.decay_flags)

    def _fp32_clone(self, prefix):
        return ParameterTuple(
            Parameter(initializer("zeros", p.shape, ms.float32), name=f"{prefix}.{p.name}")
            for p in self._parameters
        )

    def construct(self, gradients):
        gradients = self.scale_grad(gradients)
        b1p = self.beta1_power * self.beta1
        b2p = self.beta2_power * self.beta2
        ops.assign(self.beta1_power, b1p)
        ops.assign(self.beta2_power, b2p)
        if self.fused:
            result = self._fused(b1p, b2p, gradients)
        else:
            result = self._adam_like(_adamw_update, 1.0 - b1p, 1.0 - b2p, gradients)
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        return result

    def _fused(self, b1p, b2p, grads):
        """hyper_map ``_adamw_fused_one`` with scalar or per-group lr / weight decay."""
        lr = self.get_lr()
        wd = self.get_weight_decay()
        kernel, b1, b2, eps_t = self.fused_kernel, self.beta1, self.beta2, self.eps * ops.sqrt(1.0 - b2p)
        if self.is_group_lr:
            return self.hyper_map(ops.partial(_adamw_fused, kernel, b1p, b2p, b1, b2, eps_t), lr, wd,
                                  self._parameters, self.moments1, self.moments2, grads, self.fused_decay)
        if self.is_group:
            return self.hyper_map(ops.partial(_adamw_fused, kernel, b1p, b2p, b1, b2, eps_t, lr), wd,
                                  self._parameters, self.moments1, self.moments2, grads, self.fused_decay)
        return self.hyper_map(ops.partial(_adamw_fused, kernel, b1p, b2p, b1, b2, eps_t, lr, wd),
                              self._parameters, self.moments1, self.moments2, grads, self.fused_decay)


class Lion(_CustomOptimizer):
    """Lion (Chen et al. 2023, arXiv:2302.06675): sign update, decoupled weight decay.

    Use a 3-10x smaller lr and a 3-10x larger weight decay than for AdamW.
    State: ``lion_m.<param>`` (float32).
    """

    def __init__(self, params, learning_rate=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0,
                 loss_scale=1.0):
        super().__init__(learning_rate, params, weight_decay)
        self._init_loss_scale(loss_scale)
        for name, val in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= float(val) <= 1.0:
                raise UserError(f"Lion {name} must be in [0, 1]: {val}.")
        self.beta1 = Tensor(float(beta1), ms.float32)
        self.beta2 = Tensor(float(beta2), ms.float32)
        self.moments1 = ParameterTuple(
            Parameter(initializer("zeros", p.shape, ms.float32), name=f"lion_m.{p.name}")
            for p in self._parameters
        )

    def construct(self, gradients):
        gradients = self.scale_grad(gradients)
        lr = self.get_lr()
        wd = self.get_weight_decay()
        b1, b2 = self.beta1, self.beta2
        if self.is_group_lr:
            result = self.hyper_map(ops.partial(_lion_update, b1, b2), lr, wd,
                                    self._parameters, self.moments1, gradients, self.decay_flags)
        elif self.is_group:
            result = self.hyper_map(ops.partial(_lion_update, b1, b2, lr), wd,
                                    self._parameters, self.moments1, gradients, self.decay_flags)
        else:
            result = self.hyper_map(ops.partial(_lion_update, b1, b2, lr, wd),
                                    self._parameters, self.moments1, gradients, self.decay_flags)
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        return result


class Lamb(_CustomOptimizer):
    """LAMB (You et al. 2019): Adam direction with decay, scaled per tensor by ||w|| / ||update||.

    Written here because MindSpore's ``nn.Lamb`` has no CPU kernel. Bias correction uses its own
    ``beta1_power`` / ``beta2_power`` (not ``global_step``). State: ``lamb_m.<param>``,
    ``lamb_v.<param>`` (float32), ``beta1_power``, ``beta2_power``.
    """

    def __init__(self, params, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-6,
                 weight_decay=0.0, loss_scale=1.0):
        super().__init__(learning_rate, params, weight_decay)
        self._init_loss_scale(loss_scale)
        for name, val in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= float(val) < 1.0:
                raise UserError(f"Lamb {name} must be in [0, 1): {val}.")
        self.beta1 = Tensor(float(beta1), ms.float32)
        self.beta2 = Tensor(float(beta2), ms.float32)
        self.eps = Tensor(float(eps), ms.float32)
        self.moments1 = ParameterTuple(
            Parameter(initializer("zeros", p.shape, ms.float32), name=f"lamb_m.{p.name}")
            for p in self._parameters
        )
        self.moments2 = ParameterTuple(
            Parameter(initializer("zeros", p.shape, ms.float32), name=f"lamb_v.{p.name}")
            for p in self._parameters
        )
        self.beta1_power = Parameter(initializer(1.0, (), ms.float32), name="beta1_power")
        self.beta2_power = Parameter(initializer(1.0, (), ms.float32), name="beta2_power")

    def construct(self, gradients):
        gradients = self.scale_grad(gradients)
        b1p = self.beta1_power * self.beta1
        b2p = self.beta2_power * self.beta2
        ops.assign(self.beta1_power, b1p)
        ops.assign(self.beta2_power, b2p)
        result = self._adam_like(_lamb_update, 1.0 - b1p, 1.0 - b2p, gradients)
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        return result


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
            lamb; decoupled for adamw / lion).
        momentum: momentum for sgd / momentum / nesterov / rmsprop.
        nesterov: Nesterov momentum (sgd, momentum; Adam's ``use_nesterov``).
        weight_decay_filter: ``disable`` / ``norm_and_bias`` / ``auto`` (module doc).
        loss_scale: the factor the gradients handed to the optimizer are still multiplied by
            (MindSpore's optimizer ``loss_scale``). ``TrainStep`` unscales gradients itself, so
            1.0 is the normal value; ``TrainStep`` compensates if it is not.
        eps: RMSProp epsilon (MindCV's ``eps``); adam / adamw / lamb use ``adam_eps`` (default 1e-8).
        beta1, beta2: Adam-family / Lion betas (Lion's default beta2 is 0.99 when 0.999 is given).
        kwargs: ``adam_eps``, ``rmsprop_decay`` (default 0.9), ``centered`` (RMSProp),
            ``dampening`` (SGD).
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

    params = _as_params(params_or_net)
    if isinstance(params[0], dict):
        groups = params
    elif weight_decay > 0:
        groups = _param_groups(params, weight_decay, weight_decay_filter)
    else:
        groups = params
    weight_decay = float(weight_decay)
    loss_scale = float(loss_scale)
    adam_eps = float(kwargs.pop("adam_eps", 1e-8))
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
    if name == "lamb":
        return Lamb(groups, learning_rate=lr, beta1=float(beta1), beta2=float(beta2),
                    eps=adam_eps,
                    weight_decay=weight_decay, loss_scale=loss_scale)
    # lion
    lion_beta2 = 0.99 if float(beta2) == 0.999 else float(beta2)
    return Lion(groups, learning_rate=lr, beta1=float(beta1), beta2=lion_beta2,
                weight_decay=weight_decay, loss_scale=loss_scale)


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
        if not include_lr and p.name.split(".")[-1] == "learning_rate":
            continue
        state[p.name] = p
    return state


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
