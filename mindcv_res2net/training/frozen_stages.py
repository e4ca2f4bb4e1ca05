"""Frozen stages for fine-tuning, with mmpretrain's names and meaning.

``frozen_stages: K``: -1 freezes nothing (the default); 0 freezes the stem; K = 1..4 the stem and
stages 1..K. The head (the classifier) is never frozen. A frozen parameter gets
``requires_grad = False``: it is left out of the optimizer (no state, no weight decay, no update) and
of the gradients. The parts are those of ``layer_decay`` (:func:`..optim.param_groups.layer_id`):
Res2Net's ``conv1``/``bn1`` and ``layer1..4``, Res2Net-DLA's ``base_layer``/``level0``/``level1`` and
``level2..5``.

``norm_eval: True``: the BatchNorm layers of the frozen part normalise with their moving statistics
and never update them, in training as in evaluation (MindSpore's ``use_batch_statistics=False``).
With ``norm_eval: False`` their scale and shift stay frozen but, in training, they normalise with the
batch's statistics and update the moving ones, as every BatchNorm does.
"""
from mindspore import nn

from ..errors import UserError
from ..optim.param_groups import layer_id

# the deepest stage that can be frozen: 4 (layer4 / level5); the head (id 5) never is
MAX_FROZEN_STAGES = 4


def check_frozen_stages(frozen_stages):
    """``frozen_stages`` as an int in [-1, 4]; ``UserError`` otherwise."""
    try:
        value = int(frozen_stages)
    except (TypeError, ValueError):
        value = None
    if value is None or value != frozen_stages or not -1 <= value <= MAX_FROZEN_STAGES:
        raise UserError(f"frozen_stages must be a whole number from -1 (nothing frozen) to {MAX_FROZEN_STAGES} "
                        f"(the stem and every stage; the head is never frozen), got {frozen_stages!r}")
    return value


def freeze_stages(net, frozen_stages, norm_eval=False):
    """Freeze the stem and stages 1..``frozen_stages`` of ``net`` (see the module docstring).

    Returns ``(frozen parameter names, BatchNorm cell names in evaluation mode)``. ``net`` must be a
    zoo model (its parameters named by stem / stage / head); another network is a ``UserError``."""
    k = check_frozen_stages(frozen_stages)
    if k < 0:
        return [], []
    frozen = []
    for name, param in net.parameters_and_names():
        if _stage_of(name) <= k:
            if param.requires_grad:
                frozen.append(name)
            param.requires_grad = False
    held = []
    if norm_eval:
        for name, cell in net.cells_and_names():
            if isinstance(cell, nn.BatchNorm2d) and name and _stage_of(name) <= k:
                cell.use_batch_statistics = False
                held.append(name)
    return frozen, held


def _stage_of(name):
    try:
        return layer_id(name)
    except UserError:
        raise UserError(f"frozen_stages: cannot place {name!r} in the stem, a stage or the head; frozen_stages "
                        "works with the zoo's Res2Net and Res2Net-DLA models (set frozen_stages: -1 for other "
                        "networks)") from None
