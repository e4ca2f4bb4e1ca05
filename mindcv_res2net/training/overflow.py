"""What the training loop does when a step overflows (non-finite gradients or loss).

The train step never applies such an update: the weights, optimizer moments, EMA and BatchNorm
statistics stay as they were (:mod:`.train_step`). This module decides whether the run goes on:

* Under AMP (``amp_level`` O1/O2/O3) an fp16 overflow is an ordinary event, above all with a fixed
  loss scale such as the 1024 of MindCV's published recipes: the step is skipped, logged, and
  training continues. Only ``max_consecutive_overflows`` overflowing steps in a row (default 100)
  stop the run: then the model has stopped learning and the loss scale is wrong for it.
* In float32 (``amp_level`` O0) a non-finite *loss* means the run diverged: it stops at once. A
  finite loss with non-finite gradients is skipped and counted as under AMP.
* ``drop_overflow_update: false`` (MindCV's default) would apply the update anyway in MindCV's
  fixed-scale path; here it is treated like ``true``, because non-finite gradients turn every weight
  into NaN. This is said once at start-up (``startup_note``).

A stop is a ``UserError``: the run ends before the epoch's checkpoint is written, so the last good
checkpoint in ``ckpt_save_dir`` is what ``--resume auto`` continues from.

When no step of the run has gone through, the stop message and the epoch's warning name the likely
cause (``likely_cause``). The common one in small rehearsals: few values per channel in the last
stage's BatchNorm (2 images per rank at 32 px give layer4's 1x1 map 2 values per channel). Its
backward pass divides by the batch's standard deviation at every layer, which multiplies the
gradients by up to ~150 per layer, beyond float16's range at any loss scale. MindCV would write the
NaN into the weights; here the update is skipped, and the user is told why.
"""
import math

from ..errors import UserError

# overflowing steps logged one by one in an epoch; the rest are counted in the epoch's summary line
LOGGED_PER_EPOCH = 5
# the last stage's output stride, and the most values per channel for which its BatchNorm is named as
# the cause. Measured on 2026-12-05 with res2net50_gpu.yaml (O2, fixed loss scale 1024) on CPU at
# 32 px (a 1x1 map) and random images: batch 2, 4 and 8 overflowed on every step, batch 16 on none
# (train.py ... --distribute False --image_resize 32 --batch_size B --warmup_epochs 0 --mode 1)
LAST_STAGE_STRIDE = 32
FEW_VALUES_PER_CHANNEL = 8


def startup_note(args):
    """The one line to log at start-up about ``drop_overflow_update``, or None."""
    if args.drop_overflow_update or args.amp_level == "O0":
        return None
    return ("drop_overflow_update is false (MindCV's default): a step whose gradients overflow is "
            "skipped all the same, since applying non-finite gradients would turn the weights into NaN; "
            f"the run stops after {args.max_consecutive_overflows} overflowing steps in a row")


class OverflowGuard:
    """Counts overflowing steps and stops the run when it must (see the module docstring)."""

    def __init__(self, amp_level, max_consecutive, ckpt_dir, logger, batch_per_rank=None, image_size=None):
        self.fp32 = str(amp_level).upper() == "O0"
        self.max_consecutive = int(max_consecutive)
        self.ckpt_dir = ckpt_dir
        self.logger = logger
        self.batch_per_rank, self.image_size = batch_per_rank, image_size
        self.consecutive = 0
        self.in_epoch = 0
        self.any_update = False  # has any step of this process gone through?

    def likely_cause(self, scale):
        """Why every step overflows, as far as the run's shape tells (one sentence)."""
        if self.fp32:
            return ("in float32 this means NaN/Inf gradients from a finite loss: check the data (a constant or "
                    "corrupt image) and lower --lr")
        if self.batch_per_rank and self.image_size:
            side = max(1, -(-int(self.image_size) // LAST_STAGE_STRIDE))
            values = int(self.batch_per_rank) * side * side
            if values <= FEW_VALUES_PER_CHANNEL:
                return (f"the likely cause: the last stage's BatchNorm sees {values} value(s) per channel "
                        f"({self.batch_per_rank} image(s) per rank at {self.image_size} px, a {side}x{side} "
                        "feature map); its backward pass multiplies the gradients by up to the inverse of that "
                        "tiny batch's standard deviation at every layer, beyond float16's range at any loss "
                        "scale. Give each rank more images (--batch_size) or larger ones (--image_resize), "
                        "or train in float32 (--amp_level O0)")
        return (f"the likely cause: the loss scale ({scale:g}) is too large for this model, or the learning rate "
                "makes it diverge: use --loss_scale_type dynamic or a lower --loss_scale, lower --lr, or "
                "enable --clip_grad")

    def start_epoch(self):
        self.in_epoch = 0

    def step(self, overflow, loss_value, scale, epoch, step):
        """Record one step (``epoch``, ``step`` counted from 1). Returns True when the step was
        skipped; raises ``UserError`` when the run must stop."""
        if not overflow:
            self.consecutive = 0
            self.any_update = True
            return False
        self.consecutive += 1
        self.in_epoch += 1
        where = f"epoch {epoch}, step {step}"
        if self.fp32 and not math.isfinite(loss_value):
            raise UserError(
                f"the loss became {loss_value} (NaN/Inf) at {where} in float32 (amp_level O0): training "
                f"diverged and stopped; the last good checkpoint in {self.ckpt_dir} is kept. Lower --lr, "
                "enable --clip_grad, or check the data.")
        if self.consecutive >= self.max_consecutive:
            count = f"{self.consecutive} consecutive steps" if self.consecutive > 1 else "a step"
            advice = ("Lower --loss_scale or use --loss_scale_type dynamic, lower --lr, or enable --clip_grad"
                      if self.any_update else f"Every step of the run overflowed: {self.likely_cause(scale)}")
            raise UserError(
                f"{count} overflowed (NaN/Inf gradients; loss {loss_value}, loss "
                f"scale {scale:g}) up to {where}: training stopped and the last good checkpoint in "
                f"{self.ckpt_dir} is kept. {advice} (--max_consecutive_overflows sets how many are tolerated).")
        if self.in_epoch <= LOGGED_PER_EPOCH:
            self.logger.warning("overflow at %s: update skipped (loss %s, loss scale %g, %d in a row)",
                                where, loss_value, scale, self.consecutive)
        return True

    def end_epoch(self, epoch):
        if self.in_epoch > LOGGED_PER_EPOCH:
            self.logger.warning("epoch %d: %d overflowing steps skipped in all (the first %d are logged above)",
                                epoch, self.in_epoch, LOGGED_PER_EPOCH)
        return self.in_epoch
