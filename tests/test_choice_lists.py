"""Each choice list is defined once, by the package that builds it, and the command line offers
exactly what the factories build: every listed name builds, a name outside the list is refused by
both (the command line before any work, the factory when called from Python)."""
import os
import sys

import numpy as np
import pytest
from mindspore import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import config  # noqa: E402
from mindcv_res2net.cli.keys import SPECS  # noqa: E402
from mindcv_res2net.data import DATASETS, INTERPOLATIONS, SAMPLERS  # noqa: E402
from mindcv_res2net.data.dataset import canonical_name  # noqa: E402
from mindcv_res2net.data.transforms import create_transforms, parse_interpolation  # noqa: E402
from mindcv_res2net.errors import UserError  # noqa: E402
from mindcv_res2net.loss import LOSSES, REDUCTIONS  # noqa: E402
from mindcv_res2net.loss.losses import create_loss  # noqa: E402
from mindcv_res2net.optim import OPTIMIZERS, WEIGHT_DECAY_FILTERS  # noqa: E402
from mindcv_res2net.optim.optim_factory import create_optimizer  # noqa: E402
from mindcv_res2net.scheduler import SCHEDULERS  # noqa: E402
from mindcv_res2net.scheduler.scheduler_factory import create_scheduler  # noqa: E402

LISTS = {"opt": OPTIMIZERS, "weight_decay_filter": WEIGHT_DECAY_FILTERS, "scheduler": SCHEDULERS,
         "loss": LOSSES, "reduction": REDUCTIONS, "dataset": DATASETS, "interpolation": INTERPOLATIONS,
         "sampler": SAMPLERS}


@pytest.mark.parametrize("key", sorted(LISTS))
def test_the_command_line_offers_the_packages_list(key):
    assert tuple(SPECS[key].choices) == tuple(LISTS[key])
    for name in LISTS[key]:
        args = config.parse_args([f"--{key}", name], script="train")
        assert getattr(args, key).lower() == name.lower()
    with pytest.raises(UserError, match=key):
        config.parse_args([f"--{key}", "no_such_choice"], script="train")


def _params():
    return nn.Dense(3, 2).trainable_params()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_listed_optimizer_builds(name):
    opt = create_optimizer(_params(), opt=name, lr=0.01, weight_decay=1e-4)
    assert isinstance(opt, nn.Optimizer)


@pytest.mark.parametrize("name", WEIGHT_DECAY_FILTERS)
def test_every_listed_weight_decay_filter_builds(name):
    assert isinstance(create_optimizer(_params(), opt="momentum", weight_decay_filter=name), nn.Optimizer)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_listed_schedule_builds(name):
    warmup = 0 if name in ("one_cycle", "cyclic") else 1  # these two set their own start (as in MindCV)
    lr = create_scheduler(4, scheduler=name, lr=0.1, min_lr=0.001, warmup_epochs=warmup, decay_epochs=2,
                          milestones=[1, 2], num_epochs=3)
    assert lr.shape == (12,) and np.isfinite(lr).all() and lr.max() <= 0.1 + 1e-7


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_listed_loss_builds(name, reduction):
    assert isinstance(create_loss(name, reduction=reduction), nn.Cell)


@pytest.mark.parametrize("name", DATASETS)
def test_every_listed_dataset_is_known_to_the_dataset_factory(name):
    assert canonical_name(name) == name


@pytest.mark.parametrize("name", INTERPOLATIONS)
def test_every_listed_interpolation_builds(name):
    parse_interpolation(name)
    assert create_transforms("imagenet", image_resize=32, is_training=False, interpolation=name)


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_listed_sampler_builds(name, tmp_path):
    from fault.test_bad_input import make_image_folder
    from mindcv_res2net.data.dataset import create_dataset

    root = make_image_folder(str(tmp_path / "data"), classes=("a", "b"), per_class=2, size=8)
    assert create_dataset("imagefolder", root=root, split="train", sampler=name).get_dataset_size() == 4


def test_the_factories_refuse_what_is_not_listed():
    for build in (lambda: create_optimizer(_params(), opt="adan"),
                  lambda: create_scheduler(4, scheduler="linear_decay", num_epochs=2),
                  lambda: create_loss("focal"), lambda: create_loss("CE", reduction="none"),
                  lambda: canonical_name("cifar10"), lambda: parse_interpolation("lanczos"),
                  lambda: create_optimizer(_params(), weight_decay_filter="bn_only")):
        with pytest.raises(UserError):
            build()
