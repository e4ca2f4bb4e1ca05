"""The train-step cell: AMP, loss scaling, overflow skip, all-reduce, clipping, accumulation, EMA.

``TrainStep(net, loss_fn, optimizer, ...)`` is a Cell; ``train_step(images, labels)`` runs one
forward/backward and returns ``(loss, overflow, loss_scale)``:

* ``loss``: float32 scalar, the (unscaled) loss of this batch / micro-batch;
* ``overflow``: bool scalar, True when the gradients (or the loss) were not finite, in which case
  no weight, optimizer moment, EMA value or BatchNorm moving statistic was changed;
* ``loss_scale``: float32 scalar, the loss scale used for this call.

Order of operations on an update call::

    grads = d(loss * scale)/dw / scale / accumulation_steps
    [accumulate: buffer += grads; apply the buffer at the last micro-batch]
    grads = all-reduce-mean(grads)                    (data parallel only)
    overflow = any(non-finite grads or loss)           (flag all-reduced across ranks)
    if not overflow:
        grads = clip_by_global_norm(grads, clip_value) (clip_grad only)
        optimizer(grads); ema()
    dynamic scale: overflow -> scale = max(scale / factor, 1), good steps = 0;
                   else good steps += 1, and every `scale_window` good steps scale *= factor

The optimizer's ``global_step`` (the LR-array index) advances by one on EVERY call: applied
updates, skipped (overflow) updates and non-final micro-batches of an accumulation cycle. So
``lr[i]`` belongs to the i-th training batch, ``create_scheduler(steps_per_epoch=<batches per
epoch>)`` gives the same curve with or without accumulation, and on resume
``global_step = batches done``. (No optimizer here uses ``global_step`` for anything but the LR:
Adam / AdamW / Lamb keep their own ``beta*_power`` counters.)

A fixed loss scale never changes; an overflow still skips the update (non-finite gradients would
destroy the weights) and is reported; the trainer decides whether the run goes on
(:mod:`.overflow`). ``drop_overflow_update`` is accepted for MindCV config compatibility; updates
on overflow are always dropped, whatever its value.

State Parameters (all float32 / int32 scalars unless said; names as saved by
``ms.save_checkpoint(train_step, ...)``):

=============================  ===============================================================
``scale_sense``                current loss scale (MindSpore / MindCV name)
``loss_scale_good_steps``      finite updates since the last scale change (dynamic scale)
``accum_step``                 micro-batches in the current accumulation cycle (accumulation)
``accum_grad.<param>``         gradient accumulation buffers (accumulation)
``ema.<param>``, ``updates``   EMA weights and update count (ema)
optimizer state                ``global_step``, ``learning_rate``, moments (optim.optim_factory)
=============================  ===============================================================
"""
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore.common.initializer import initializer

from .amp_cast_list import parse_cast_list
from ..errors import UserError
from .ema import EMA
from ..optim.optim_factory import assign_parameter

__all__ = ["TrainStep", "NetWithLoss", "apply_amp", "AMP_LEVELS", "LOSS_SCALE_TYPES"]

AMP_LEVELS = ("O0", "O1", "O2", "O3")
LOSS_SCALE_TYPES = ("fixed", "dynamic", "auto")

_O1_WHITE_LIST = (
    nn.Dense,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Conv1dTranspose,
    nn.Conv2dTranspose,
    nn.Conv3dTranspose,
)


# --------------------------------------------------------------------------------------------
# AMP
# --------------------------------------------------------------------------------------------
_O2_BLACK_LIST = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm)


class _CastWrapper(nn.Cell):
    """Runs ``cell`` in ``compute`` precision and casts its output to ``out``.

    Adds no name prefix (parameter names unchanged) and forwards attribute reads to the wrapped
    cell, so ``net.conv.weight`` still works after AMP.
    """

    def __init__(self, cell, compute, out):
        super().__init__(auto_prefix=False)
        self.cell = cell.to_float(compute) if compute is not None else cell
        self.out_dtype = out

    def construct(self, *args):
        out = self.cell(*args)
        if isinstance(out, tuple):
            return tuple([o.astype(self.out_dtype) for o in out])
        return out.astype(self.out_dtype)

    def __getattr__(self, name):
        cells = self.__dict__.get("_cells")
        try:
            return super().__getattr__(name)
        except AttributeError:
            if cells is not None and "cell" in cells:
                return getattr(cells["cell"], name)
            raise


def _wrap_matching(cell, classes, make):
    """Replace every sub-cell of a type in ``classes`` by ``make(sub)`` (recursively, in place)."""
    changed = False
    for name, sub in list(cell.name_cells().items()):
        if isinstance(sub, classes):
            cell._cells[name] = make(sub)
            changed = True
        elif not isinstance(sub, _CastWrapper):
            _wrap_matching(sub, classes, make)
    if changed and isinstance(cell, nn.SequentialCell):
        cell.cell_list = list(cell.cells())


def resolve_cast_list(amp_cast_list):
    """MindCV's ``amp_cast_list`` (text such as ``"[nn.Conv2d, nn.Dense]"``, or a tuple of names or
    classes) -> a tuple of ``mindspore.nn`` cell classes; None stays None. A name that is not a
    MindSpore cell class is a ``UserError`` naming it."""
    if amp_cast_list is None:
        return None
    if isinstance(amp_cast_list, str):
        try:
            amp_cast_list = parse_cast_list(amp_cast_list)
        except ValueError as exc:
            raise UserError(f"amp_cast_list {amp_cast_list!r}: {exc}. Write it as MindCV does, e.g. "
                            "'[nn.Conv2d, nn.Dense]'.") from None
    classes = []
    for item in amp_cast_list:
        cls = getattr(nn, item, None) if isinstance(item, str) else item
        if not (isinstance(cls, type) and issubclass(cls, nn.Cell)):
            raise UserError(f"amp_cast_list: {item!r} is not a mindspore.nn cell class (e.g. nn.Conv2d, "
                            "nn.Dense, nn.BatchNorm2d). Fix amp_cast_list.")
        classes.append(cls)
    return tuple(classes)


def apply_amp(network, amp_level="O0", amp_cast_list=None):
    """Mixed precision, MindCV levels. Returns the cell to run; parameter names are unchanged.

    * O0: fp32 (``network`` itself).
    * O1: Dense / Conv layers compute in fp16 (outputs cast back to fp32), the rest fp32.
    * O2: everything fp16 except BatchNorm / LayerNorm (fp32, outputs cast to fp16); the network
      output is cast to fp32.
    * O3: everything fp16, BatchNorm included; the network output is cast to fp32.

    ``amp_cast_list`` (MindCV's key; see ``resolve_cast_list``) replaces the built-in list of the
    level: at O1 the cells of these types run in fp16, at O2 all cells but these run in fp16. At
    O0 and O3 it has no effect, as in MindCV.

    ``network`` is changed in place (sub-layers are wrapped; attribute access still works).
    The weights stay float32 Parameters at every level, and the loss is computed in fp32.
    """
    level = str(amp_level).upper()
    if level not in AMP_LEVELS:
        raise UserError(f"unknown amp_level: {amp_level!r}. Use one of: {', '.join(AMP_LEVELS)}.")
    cast_list = resolve_cast_list(amp_cast_list)
    if level == "O0":
        return network
    if level == "O1":
        white = cast_list or _O1_WHITE_LIST
        make = lambda c: _CastWrapper(c, ms.float16, ms.float32)  # noqa: E731
        if isinstance(network, white):
            return make(network)
        _wrap_matching(network, white, make)
        return network
    network.to_float(ms.float16)
    if level == "O2":
        black = cast_list or _O2_BLACK_LIST
        _wrap_matching(network, black, lambda c: _CastWrapper(c, ms.float32, ms.float16))
    return _CastWrapper(network, None, ms.float32)


class NetWithLoss(nn.Cell):
    """``loss_fn(network(data), label)``; adds no name prefix."""

    def __init__(self, network, loss_fn):
        super().__init__(auto_prefix=False)
        self.network = network
        self.loss_fn = loss_fn

    def construct(self, data, label):
        return self.loss_fn(self.network(data), label)


# --------------------------------------------------------------------------------------------
# small graph helpers
# --------------------------------------------------------------------------------------------
_mul = ops.MultitypeFuncGraph("mul")
_flat = ops.MultitypeFuncGraph("flat")
_add_into = ops.MultitypeFuncGraph("add_into")
_zero = ops.MultitypeFuncGraph("zero")
_copy = ops.MultitypeFuncGraph("copy")


@_mul.register("Tensor", "Tensor")
def _mul_tensor(factor, grad):
    return grad * factor.astype(grad.dtype)


@_flat.register("Tensor")
def _flat_tensor(x):
    return x.reshape(-1).astype(ms.float32)


@_add_into.register("Tensor", "Tensor")
def _add_into_tensor(buffer, grad):
    return ops.assign_add(buffer, grad.astype(buffer.dtype))


@_zero.register("Tensor")
def _zero_tensor(buffer):
    return ops.assign(buffer, ops.zeros_like(buffer))


@_copy.register("Tensor")
def _copy_tensor(x):
    return x + ops.zeros_like(x)


_restore_if = ops.MultitypeFuncGraph("restore_if")


@_restore_if.register("Tensor", "Tensor", "Tensor")
def _restore_if_tensor(cond, param, saved):
    return ops.assign(param, ops.where(cond, saved, param))


def _default_grad_reducer(optimizer):
    """Mean all-reduce in data-parallel mode, else None."""
    mode = ms.context.get_auto_parallel_context("parallel_mode")
    if mode != "data_parallel":
        return None
    from mindspore.communication import get_group_size

    return nn.DistributedGradReducer(optimizer.parameters, mean=True, degree=get_group_size())


class _KeepGradients(nn.Cell):
    """The gradient reducer of a single process: the gradients as they are (``ops.identity`` would do
    the same, but MindSpore 2.8 logs its deprecation at every PyNative step)."""

    def construct(self, grads):
        return grads


def _checked_step_options(loss_scale_type, amp_level, loss_scale, scale_factor, scale_window, clip_grad,
                          clip_value, accumulation_steps):
    """Check ``TrainStep``'s options; returns (loss scale type, amp level, loss scale) as resolved."""
    lst = str(loss_scale_type).lower()
    if lst not in LOSS_SCALE_TYPES:
        raise UserError(
            f"unknown loss_scale_type: {loss_scale_type!r}. Use one of: {', '.join(LOSS_SCALE_TYPES)}."
        )
    level = str(amp_level).upper()
    if lst == "auto":
        lst = "fixed" if level == "O0" else "dynamic"
        if lst == "fixed":
            loss_scale = 1.0
    if not float(loss_scale) > 0:
        raise UserError(f"loss_scale must be > 0: {loss_scale}. Fix loss_scale.")
    if int(accumulation_steps) != accumulation_steps or accumulation_steps < 1:
        raise UserError(f"gradient accumulation steps must be a whole number >= 1: {accumulation_steps}.")
    if clip_grad and not float(clip_value) > 0:
        raise UserError(f"clip_value must be > 0 when clip_grad is on: {clip_value}. Fix clip_value.")
    if lst == "dynamic" and (float(scale_factor) <= 1.0 or int(scale_window) < 1):
        raise UserError(f"dynamic loss scale needs scale_factor > 1 and scale_window >= 1: "
                        f"{scale_factor}, {scale_window}.")
    return lst, level, loss_scale


# --------------------------------------------------------------------------------------------
# TrainStep
# --------------------------------------------------------------------------------------------
class TrainStep(nn.Cell):
    """One training call: forward, backward, (accumulate,) all-reduce, overflow check, clip, update.

    Args:
        network: the model (already built; ``apply_amp`` is applied here, in place).
        loss_fn: ``loss_fn(logits, labels) -> scalar`` (``create_loss``).
        optimizer: from ``create_optimizer`` over the network's trainable parameters.
        amp_level: "O0" / "O1" / "O2" / "O3".
        amp_cast_list: None, or the cell types that replace the level's built-in list (``apply_amp``).
        loss_scale_type: "fixed", "dynamic", or "auto" (dynamic when amp_level != O0, else fixed 1).
        loss_scale: the fixed scale, or the initial dynamic scale.
        scale_factor, scale_window: dynamic scale: divide by ``scale_factor`` on overflow, multiply
            after ``scale_window`` consecutive finite updates.
        drop_overflow_update: accepted for compatibility (updates on overflow are always dropped).
        clip_grad, clip_value: clip the global gradient norm (after the all-reduce) to clip_value.
        accumulation_steps: micro-batches per optimizer update (gradients are averaged).
        ema: False, True (build ``EMA(network, ema_decay)``) or an ``EMA`` instance.
        ema_decay: decay for ``ema=True``.
        grad_reducer: a Cell applied to the gradient tuple (None: mean all-reduce when
            ``parallel_mode == "data_parallel"``, else nothing).

    Inputs: ``(data, label)``. Outputs: ``(loss, overflow, loss_scale)``.
    """

    def __init__(
        self,
        network,
        loss_fn,
        optimizer,
        amp_level="O0",
        amp_cast_list=None,
        loss_scale_type="fixed",
        loss_scale=1.0,
        scale_factor=2.0,
        scale_window=2000,
        drop_overflow_update=True,
        clip_grad=False,
        clip_value=15.0,
        accumulation_steps=1,
        ema=False,
        ema_decay=0.9999,
        grad_reducer=None,
    ):
        super().__init__(auto_prefix=False)
        lst, level, loss_scale = _checked_step_options(loss_scale_type, amp_level, loss_scale, scale_factor,
                                                       scale_window, clip_grad, clip_value, accumulation_steps)

        self.network = network  # the plain model (names, EMA, eval)
        amp_net = apply_amp(network, level, amp_cast_list)
        self.net_with_loss = NetWithLoss(amp_net, loss_fn)
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.dynamic = lst == "dynamic"
        self.drop_overflow_update = bool(drop_overflow_update)
        self.scale_factor = float(scale_factor)
        self.scale_window = int(scale_window)
        self.clip_grad = bool(clip_grad)
        self.clip_value = float(clip_value)
        self.accumulation_steps = int(accumulation_steps)
        self._inv_accum = 1.0 / self.accumulation_steps
        # a fixed scale of 1 without accumulation: no scaling of the loss, no per-gradient multiply
        self.scaling = self.dynamic or float(loss_scale) != 1.0 or self.accumulation_steps > 1
        # the optimizer divides gradients by its own loss_scale; we hand it unscaled gradients
        self.opt_loss_scale = float(getattr(optimizer, "loss_scale", 1.0))
        self._opt_scale_t = Tensor(self.opt_loss_scale, ms.float32)

        self._setup_scale_and_accumulation_state(loss_scale)
        self._setup_ema(network, ema, ema_decay)
        self._setup_gradient_reduction(optimizer, grad_reducer)
        self._setup_buffer_protection(network)

        self._hyper_map = ops.HyperMap()
        self._grad_fn = ops.value_and_grad(self._scaled_loss, None, self.weights)
        self._one = Tensor(1, ms.int32)
        self._zero_i = Tensor(0, ms.int32)
        self._step_one = Tensor([1], ms.int32)

    # ---- construction phases -------------------------------------------------------------------
    def _setup_scale_and_accumulation_state(self, loss_scale):
        """Create the loss-scale Parameters and, with accumulation, the gradient buffers."""
        self.scale_sense = Parameter(Tensor(float(loss_scale), ms.float32), name="scale_sense",
                                     requires_grad=False)
        self.good_steps = Parameter(Tensor(0, ms.int32), name="loss_scale_good_steps", requires_grad=False)
        if self.accumulation_steps > 1:
            self.accum_step = Parameter(Tensor(0, ms.int32), name="accum_step", requires_grad=False)
            self.accum_grads = ParameterTuple(
                Parameter(initializer("zeros", p.shape, ms.float32), name=f"accum_grad.{p.name}",
                          requires_grad=False)
                for p in self.weights
            )

    def _setup_ema(self, network, ema, ema_decay):
        """Take the given ``EMA``, build one over ``network`` (``ema=True``), or none."""
        if isinstance(ema, EMA):
            self.ema = ema
        elif ema:
            self.ema = EMA(network, decay=ema_decay)
        else:
            self.ema = None
        self.use_ema = self.ema is not None

    def _setup_gradient_reduction(self, optimizer, grad_reducer):
        """Choose the gradient reducer, and the overflow flag's all-reduce in data-parallel mode."""
        # data parallel: gradients are mean-all-reduced, and the overflow flag too, so that every
        # rank takes the same skip / update decision
        self.distributed = ms.context.get_auto_parallel_context("parallel_mode") == "data_parallel"
        if grad_reducer is None:
            grad_reducer = _default_grad_reducer(optimizer)
        self.grad_reducer = grad_reducer if grad_reducer is not None else _KeepGradients()
        if self.distributed:
            self.allreduce = ops.AllReduce()

    def _setup_buffer_protection(self, network):
        """Collect the model's float buffers (BatchNorm statistics) that a skipped step puts back."""
        # non-trainable float state of the model (BatchNorm moving statistics): the forward pass
        # updates it, so it is put back when the step is skipped (a NaN batch must not poison it)
        self.buffers = ParameterTuple(
            p for p in network.get_parameters()
            if not p.requires_grad and p.dtype in (ms.float32, ms.float16, ms.bfloat16)
        )
        self.protect_buffers = len(self.buffers) > 0

    # ---- forward / backward ------------------------------------------------------------------
    def _scaled_loss(self, data, label, scale):
        loss = self.net_with_loss(data, label)
        if self.scaling:
            loss = loss * scale.astype(loss.dtype)
        return loss

    def _is_overflow(self, loss, grads):
        # All gradients in one flat buffer, summed: the sum is NaN or +-Inf as soon as one element
        # is (a sum past float32's range, 3.4e38, counts as an overflow too). One reduction instead
        # of IsFinite + ReduceAll per parameter: a CPU reduction costs ~0.6 ms a call whatever its
        # size, 0.19 s of a 3.3 s res2net50 step on 2 cores for 257 parameters.
        flat = ops.cat(self._hyper_map(_flat, grads))
        finite = ops.isfinite(flat.sum() + loss.astype(ms.float32))
        overflow = ops.logical_not(finite)
        if self.distributed:
            overflow = self.allreduce(overflow.astype(ms.float32)) > 0.5
        return overflow

    # ---- update --------------------------------------------------------------------------------
    def _advance_lr_step(self):
        return ops.assign_add(self.optimizer.global_step, self._step_one)

    def _optimize(self, grads):
        if self.clip_grad:
            grads = ops.clip_by_global_norm(grads, self.clip_value)
        if self.opt_loss_scale != 1.0:
            grads = self._hyper_map(ops.partial(_mul, self._opt_scale_t), grads)
        ok = self.optimizer(grads)
        if self.use_ema:
            ok = ops.depend(ok, self.ema())
        return ok

    def _update_scale(self, overflow):
        if self.dynamic:
            scale = self.scale_sense * 1.0
            good = ops.select(overflow, self._zero_i, self.good_steps + self._one)
            grow = good >= self.scale_window
            shrunk = ops.maximum(scale / self.scale_factor, ops.ones_like(scale))
            new_scale = ops.select(overflow, shrunk, ops.select(grow, scale * self.scale_factor, scale))
            good = ops.select(grow, self._zero_i, good)
            ops.assign(self.scale_sense, new_scale)
            ops.assign(self.good_steps, good)
        return overflow

    def _apply(self, loss, grads):
        grads = self.grad_reducer(grads)
        overflow = self._is_overflow(loss, grads)
        if overflow:
            self._advance_lr_step()
        else:
            self._optimize(grads)
        return self._update_scale(overflow)

    def _accumulate(self, loss, grads):
        self._hyper_map(_add_into, self.accum_grads, grads)
        step = self.accum_step + self._one
        ops.assign(self.accum_step, step)
        if step >= self.accumulation_steps:
            summed = self._hyper_map(_copy, self.accum_grads)
            overflow = self._apply(loss, summed)
            self._hyper_map(_zero, self.accum_grads)
            ops.assign(self.accum_step, self._zero_i)
        else:
            self._advance_lr_step()
            overflow = self._is_overflow(loss, grads)
        return overflow

    def construct(self, data, label):
        scale = self.scale_sense * 1.0
        if self.protect_buffers:
            saved = self._hyper_map(_copy, self.buffers)
        scaled_loss, grads = self._grad_fn(data, label, scale)
        loss = scaled_loss.astype(ms.float32)
        if self.scaling:
            loss = loss / scale
            grads = self._hyper_map(ops.partial(_mul, self._inv_accum / scale), grads)
        if self.accumulation_steps > 1:
            overflow = self._accumulate(loss, grads)
        else:
            overflow = self._apply(loss, grads)
        if self.protect_buffers:
            self._hyper_map(ops.partial(_restore_if, overflow), self.buffers, saved)
        return loss, overflow, scale

    # ---- host-side helpers ---------------------------------------------------------------------
    def state_parameters(self):
        """``{name: Parameter}`` of this cell's own state (not the weights, not the optimizer)."""
        out = {self.scale_sense.name: self.scale_sense, self.good_steps.name: self.good_steps}
        if self.accumulation_steps > 1:
            out[self.accum_step.name] = self.accum_step
            out.update({p.name: p for p in self.accum_grads})
        if self.use_ema:
            out.update(self.ema.state_dict())
        return out

    def load_state(self, param_dict):
        """Restore ``state_parameters()`` from a loaded checkpoint dict; returns missing names."""
        missing = []
        for name, p in self.state_parameters().items():
            if name not in param_dict:
                missing.append(name)
                continue
            assign_parameter(p, param_dict[name])
        return missing

    @property
    def amp_network(self):
        """The network as run in training (AMP applied; float32 logits). Use it for evaluation
        under AMP: ``network`` itself computes in fp16 for O2/O3 and returns fp16 logits."""
        return self.net_with_loss.network

    @property
    def loss_scale_value(self):
        return float(self.scale_sense.asnumpy())
