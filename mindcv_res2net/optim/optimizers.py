"""The optimizers written here: AdamW, Lion, Lamb and NAdam (``create_optimizer`` builds them).

All take MindSpore parameter groups (per-group lr, float or per-step array, and weight decay),
keep their state in float32 Parameters named ``<prefix>.<param>`` and handle ``loss_scale``
themselves (``_CustomOptimizer``).

* ``AdamW``: MindCV's AdamW (bias-corrected Adam, decoupled decay), on the fused Adam kernel.
* ``Lion``: arXiv:2302.06675.
* ``Lamb``: You et al. 2019 (``nn.Lamb`` has no CPU kernel).
* ``NAdam``: MindCV's NAdam (Dozat 2016, "Incorporating Nesterov Momentum into Adam", with the
  momentum schedule ``mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * schedule_decay))``), L2 weight decay.
"""
import contextlib
import logging

import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, ops
from mindspore.common.initializer import initializer
from mindspore.nn.optim.optimizer import Optimizer

from ..errors import UserError

__all__ = ["AdamW", "Lion", "Lamb", "NAdam", "without_sparse_adam_notice"]


class _DropNotice(logging.Filter):
    def __init__(self, text):
        super().__init__()
        self.text = text

    def filter(self, record):
        return self.text not in record.getMessage()


@contextlib.contextmanager
def without_sparse_adam_notice():
    """Build ``nn.Adam`` without MindSpore 2.8's "'FusedSparseAdam' is deprecated" log line:
    ``nn.Adam`` creates that sparse-gradient kernel in its constructor whatever the gradients
    (ours are dense, it never runs). Only that line, only while the block runs, is dropped."""
    from mindspore import log as ms_log

    get_logger = getattr(ms_log, "_get_logger", None)
    logger = get_logger() if get_logger is not None else None
    notice = _DropNotice("'FusedSparseAdam' is deprecated")
    if logger is not None:
        logger.addFilter(notice)
    try:
        yield
    finally:
        if logger is not None:
            logger.removeFilter(notice)


_adamw_update = ops.MultitypeFuncGraph("adamw_update")
_lion_update = ops.MultitypeFuncGraph("lion_update")


def _moments(beta1, beta2, m, v, g32):
    """Adam's new first and second moments."""
    return beta1 * m + (1.0 - beta1) * g32, beta2 * v + (1.0 - beta2) * ops.square(g32)


def _adam_direction(beta1, beta2, eps, bc1, bc2, weight_decay, p32, m, v, g32, decay_flag):
    """The new moments and the direction m_hat / (sqrt(v_hat) + eps) (+ wd * p: decoupled decay)."""
    m_new, v_new = _moments(beta1, beta2, m, v, g32)
    update = (m_new / bc1) / (ops.sqrt(v_new / bc2) + eps)
    if decay_flag:
        update = update + weight_decay * p32
    return m_new, v_new, update


def _write_back(param, p_new, m, m_new, v, v_new):
    """Assign the new moments, then the new weights (in the parameter's dtype)."""
    ok = ops.assign(m, m_new)
    ok = ops.depend(ok, ops.assign(v, v_new))
    return ops.depend(ops.assign(param, p_new.astype(param.dtype)), ok)


@_adamw_update.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Tensor", "Tensor", "Tensor", "Tensor", "Bool")
def _adamw_one(beta1, beta2, eps, bc1, bc2, lr, weight_decay, param, m, v, grad, decay_flag):
    """m, v <- moments; p <- p - lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)."""
    p32 = param.astype(ms.float32)
    m_new, v_new, update = _adam_direction(beta1, beta2, eps, bc1, bc2, weight_decay, p32, m, v,
                                           grad.astype(ms.float32), decay_flag)
    return _write_back(param, p32 - lr * update, m, m_new, v, v_new)


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
    m_new, v_new, update = _adam_direction(beta1, beta2, eps, bc1, bc2, weight_decay, p32, m, v,
                                           grad.astype(ms.float32), decay_flag)
    w_norm = ops.sqrt(ops.square(p32).sum())
    u_norm = ops.sqrt(ops.square(update).sum())
    both = ops.logical_and(w_norm > 0.0, u_norm > 0.0)
    trust = ops.select(both, w_norm / ops.maximum(u_norm, 1e-30), ops.ones_like(w_norm))
    return _write_back(param, p32 - lr * trust * update, m, m_new, v, v_new)


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
    """Shared plumbing for AdamW / Lamb / Lion / NAdam: loss-scale handling, the per-parameter map.

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



_nadam_update = ops.MultitypeFuncGraph("nadam_update")


@_nadam_update.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Tensor", "Tensor", "Tensor", "Tensor", "Bool")
def _nadam_one(beta1, beta2, eps, c_m, c_g, bc2, lr, weight_decay, param, m, v, grad, decay_flag):
    """g (+ wd * p); m, v <- moments; p <- p - lr * (c_m * m + c_g * g) / (eps + sqrt(v / bc2)),
    with c_m = mu_{t+1} / (1 - prod mu_1..mu_{t+1}) and c_g = (1 - mu_t) / (1 - prod mu_1..mu_t)."""
    p32 = param.astype(ms.float32)
    g32 = grad.astype(ms.float32)
    if decay_flag:
        g32 = g32 + weight_decay * p32
    m_new, v_new = _moments(beta1, beta2, m, v, g32)
    m_bar = c_m * m_new + c_g * g32
    return _write_back(param, p32 - lr * m_bar / (eps + ops.sqrt(v_new / bc2)), m, m_new, v, v_new)


class NAdam(_CustomOptimizer):
    """NAdam as MindCV defines it (``mindcv/optim/nadam.py``; Dozat 2016), step t = 1, 2, ...::

        g     = grad + wd * p                       (L2 decay, decayed parameters only)
        mu_t  = beta1 * (1 - 0.5 * 0.96 ** (t * schedule_decay))
        m     = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g**2
        m_bar = mu_{t+1} * m / (1 - mu_1 ... mu_{t+1}) + (1 - mu_t) * g / (1 - mu_1 ... mu_t)
        p     = p - lr * m_bar / (eps + sqrt(v / (1 - beta2 ** t)))

    t counts this optimizer's updates (``nadam_step``), not ``global_step``: MindCV reads its
    ``global_step`` after the lr lookup has already advanced it (t = 2 at the first update with
    an lr schedule, t stuck at 1 with a constant lr), which moves mu_t by less than 2e-4 relative.
    State: ``nadam_m.<param>``, ``nadam_v.<param>`` (float32), ``mu_schedule`` (mu_1 ... mu_t),
    ``beta2_power``, ``nadam_step``.
    """

    def __init__(self, params, learning_rate=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 loss_scale=1.0, schedule_decay=4e-3):
        super().__init__(learning_rate, params, weight_decay)
        self._init_loss_scale(loss_scale)
        for name, val in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= float(val) < 1.0:
                raise UserError(f"NAdam {name} must be in [0, 1): {val}.")
        if float(eps) <= 0.0:
            raise UserError(f"NAdam eps must be > 0: {eps}.")
        if float(schedule_decay) < 0.0:
            raise UserError(f"NAdam schedule_decay must be >= 0: {schedule_decay}.")
        self.beta1 = Tensor(float(beta1), ms.float32)
        self.beta2 = Tensor(float(beta2), ms.float32)
        self.eps = Tensor(float(eps), ms.float32)
        self.schedule_decay = Tensor(float(schedule_decay), ms.float32)
        self.moments1 = ParameterTuple(
            Parameter(initializer("zeros", p.shape, ms.float32), name=f"nadam_m.{p.name}")
            for p in self._parameters
        )
        self.moments2 = ParameterTuple(
            Parameter(initializer("zeros", p.shape, ms.float32), name=f"nadam_v.{p.name}")
            for p in self._parameters
        )
        self.mu_schedule = Parameter(initializer(1.0, (), ms.float32), name="mu_schedule")
        self.beta2_power = Parameter(initializer(1.0, (), ms.float32), name="beta2_power")
        self.nadam_step = Parameter(initializer(0.0, (), ms.float32), name="nadam_step")

    def _mu(self, t):
        return self.beta1 * (1.0 - 0.5 * ops.pow(Tensor(0.96, ms.float32), t * self.schedule_decay))

    def construct(self, gradients):
        gradients = self.scale_grad(gradients)
        t = self.nadam_step + 1.0
        mu, mu_next = self._mu(t), self._mu(t + 1.0)
        mu_sched = self.mu_schedule * mu
        b2p = self.beta2_power * self.beta2
        ops.assign(self.nadam_step, t)
        ops.assign(self.mu_schedule, mu_sched)
        ops.assign(self.beta2_power, b2p)
        c_m = mu_next / (1.0 - mu_sched * mu_next)
        c_g = (1.0 - mu) / (1.0 - mu_sched)
        lr = self.get_lr()
        wd = self.get_weight_decay()
        b1, b2, eps, bc2 = self.beta1, self.beta2, self.eps, 1.0 - b2p
        if self.is_group_lr:
            result = self.hyper_map(ops.partial(_nadam_update, b1, b2, eps, c_m, c_g, bc2), lr, wd,
                                    self._parameters, self.moments1, self.moments2, gradients, self.decay_flags)
        elif self.is_group:
            result = self.hyper_map(ops.partial(_nadam_update, b1, b2, eps, c_m, c_g, bc2, lr), wd,
                                    self._parameters, self.moments1, self.moments2, gradients, self.decay_flags)
        else:
            result = self.hyper_map(ops.partial(_nadam_update, b1, b2, eps, c_m, c_g, bc2, lr, wd),
                                    self._parameters, self.moments1, self.moments2, gradients, self.decay_flags)
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        return result
