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
"""
import math

from ..errors import UserError

# overflowing steps logged one by one in an epoch; the rest are counted in the epoch's summary line
LOGGED_PER_EPOCH = 5


def startup_note(args):
    """The one line to log at start-up about ``drop_overflow_update``, or None."""
    if args.drop_overflow_update or args.amp_level == "O0":
        return None
    return ("drop_overflow_update is false (MindCV's default): a step whose gradients overflow is "
            "skipped all the same, since applying non-finite gradients would turn the weights into NaN; "
            f"the run stops after {args.max_consecutive_overflows} overflowing steps in a row")


class OverflowGuard:
    """Counts overflowing steps and stops the run when it must (see the module docstring)."""

    def __init__(self, amp_level, max_consecutive, ckpt_dir, logger):
        self.fp32 = str(amp_level).upper() == "O0"
        self.max_consecutive = int(max_consecutive)
        self.ckpt_dir = ckpt_dir
        self.logger = logger
        self.consecutive = 0
        self.in_epoch = 0

    def start_epoch(self):
        self.in_epoch = 0

    def step(self, overflow, loss_value, scale, epoch, step):
        """Record one step (``epoch``, ``step`` counted from 1). Returns True when the step was
        skipped; raises ``UserError`` when the run must stop."""
        if not overflow:
            self.consecutive = 0
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
            raise UserError(
                f"{count} overflowed (NaN/Inf gradients; loss {loss_value}, loss "
                f"scale {scale:g}) up to {where}: training stopped and the last good checkpoint in "
                f"{self.ckpt_dir} is kept. Lower --loss_scale or use --loss_scale_type dynamic, lower --lr, "
                "or enable --clip_grad (--max_consecutive_overflows sets how many are tolerated).")
        if self.in_epoch <= LOGGED_PER_EPOCH:
            self.logger.warning("overflow at %s: update skipped (loss %s, loss scale %g, %d in a row)",
                                where, loss_value, scale, self.consecutive)
        return True

    def end_epoch(self, epoch):
        if self.in_epoch > LOGGED_PER_EPOCH:
            self.logger.warning("epoch %d: %d overflowing steps skipped in all (the first %d are logged above)",
                                epoch, self.in_epoch, LOGGED_PER_EPOCH)
        return self.in_epoch
