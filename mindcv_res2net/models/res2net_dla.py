"""DLA-60 (Deep Layer Aggregation) with Res2Net / Res2NeXt bottlenecks.

Structure as timm's ``dla60_res2net`` / ``dla60_res2next``: levels (1, 1, 1, 2, 3, 1), channels
(16, 32, 128, 256, 512, 1024); the official release's unused ``project`` layers in trees of level
> 1 are left out (the converter drops them), so the counts are timm's: 20,848,072 and 17,032,984
learnable parameters at 1000 classes. timm's 1x1-conv classifier ``fc`` is a Dense named
``classifier`` here (the converter reshapes its weight).
"""
import math

from mindspore import nn, ops

from .base import ClassifierNet
from .layers import DropPath, MultiScaleBlock, batch_norm, conv2d, init_weights, stochastic_depth_rates
from .registry import ModelCfg, official_release, register_model


def _cfg(base_width, cardinality=1, scale=4, levels=(1, 1, 1, 2, 3, 1), channels=(16, 32, 128, 256, 512, 1024),
         **kwargs):
    """The ``ModelCfg`` of a DLA variant: width per scale, groups of the 3x3 convs, scales, tree levels
    and channels; ``kwargs``: weights, timm's name ..."""
    arch = dict(levels=tuple(levels), channels=tuple(channels), scale=scale, cardinality=cardinality,
                base_width=base_width)
    return ModelCfg(family="res2net_dla", arch=arch, first_conv="base_layer.0",
                    input_multiple=Res2NetDLA.input_multiple, **kwargs)


class DlaBottle2neck(MultiScaleBlock):
    """Res2Net bottleneck as used in DLA: expansion 2; a stage block exactly when stride > 1."""

    expansion = 2

    def __init__(self, in_channels, out_channels, stride=1, scale=4, cardinality=1, base_width=28,
                 drop_path=0.0):
        super().__init__()
        mid = int(math.floor(out_channels * (base_width / 64.0)) * cardinality) // self.expansion
        self.init_layers(in_channels, mid, out_channels, scale, stride, cardinality, is_stage=stride > 1)
        self.drop_path = DropPath(drop_path)

    def construct(self, x, shortcut):
        return self.relu(self.drop_path(self.forward_body(x)) + shortcut)


class DlaRoot(nn.Cell):
    """Aggregation node: 1x1 conv over the concatenated children, BN, ReLU."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = conv2d(in_channels, out_channels, 1)
        self.bn = batch_norm(out_channels)
        self.relu = nn.ReLU()

    def construct(self, children):
        return self.relu(self.bn(self.conv(ops.cat(children, 1))))


class DlaTreeBase(nn.Cell):
    """The forward pass of a DLA tree, shared by ``DlaTree`` and its inference-optimised version.

    Subclasses set ``levels``, ``level_root``, ``down_sample`` (or None), and ``tree1``, ``tree2``
    (two blocks taking ``(x, shortcut)`` at level 1, else two subtrees), ``project`` (or None) and
    ``root`` (level 1 only).
    """

    def construct(self, x, children=()):
        bottom = x if self.down_sample is None else self.down_sample(x)
        if self.level_root:
            children = children + (bottom,)
        if self.levels == 1:
            shortcut = bottom if self.project is None else self.project(bottom)
            x1 = self.tree1(x, shortcut)
            x2 = self.tree2(x1, x1)
            return self.root((x2, x1) + children)
        x1 = self.tree1(x)
        return self.tree2(x1, children + (x1,))


class DlaTree(DlaTreeBase):
    """A DLA tree of ``levels`` levels; a level-1 tree holds two blocks and the root."""

    def __init__(self, levels, in_channels, out_channels, stride, rates, block_kwargs,
                 level_root=False, root_dim=0):
        super().__init__()
        if root_dim == 0:
            root_dim = 2 * out_channels
        if level_root:
            root_dim += in_channels
        self.levels = levels
        self.level_root = level_root
        self.down_sample = nn.MaxPool2d(kernel_size=stride, stride=stride) if stride > 1 else None
        self.project = None
        self.root = None
        if levels == 1:
            self.tree1 = DlaBottle2neck(in_channels, out_channels, stride, drop_path=next(rates), **block_kwargs)
            self.tree2 = DlaBottle2neck(out_channels, out_channels, 1, drop_path=next(rates), **block_kwargs)
            if in_channels != out_channels:
                self.project = nn.SequentialCell([conv2d(in_channels, out_channels, 1), batch_norm(out_channels)])
            self.root = DlaRoot(root_dim, out_channels)
        else:
            self.tree1 = DlaTree(levels - 1, in_channels, out_channels, stride, rates, block_kwargs)
            self.tree2 = DlaTree(levels - 1, out_channels, out_channels, 1, rates, block_kwargs,
                                 root_dim=root_dim + out_channels)


def _num_blocks(levels):
    """Bottlenecks in a tree of ``levels`` levels: 2 ** levels."""
    return 2 ** levels


class Res2NetDLA(ClassifierNet):
    """DLA-60 backbone with Res2Net (or, with cardinality > 1, Res2NeXt) blocks; with
    ``features_only``, the maps of levels 1-5 (/2, /4, /8, /16, /32) selected by ``out_indices``."""

    # input height and width must be multiples of this: the aggregation nodes concatenate maps of
    # strided convolutions (sizes rounded up) with max-pooled ones (rounded down)
    input_multiple = 32

    feature_stages = (("base_layer", "level0", "level1"), ("level2",), ("level3",), ("level4",), ("level5",))

    def __init__(self, levels=(1, 1, 1, 2, 3, 1), channels=(16, 32, 128, 256, 512, 1024), scale=4,
                 cardinality=1, base_width=28, num_classes=1000, in_channels=3, global_pool="avg",
                 drop_rate=0.0, drop_path_rate=0.0, zero_init_last=False, features_only=False,
                 out_indices=None):
        super().__init__()
        self.base_layer = nn.SequentialCell([conv2d(in_channels, channels[0], 7), batch_norm(channels[0]), nn.ReLU()])
        self.level0 = self._conv_level(channels[0], channels[0], levels[0], 1)
        self.level1 = self._conv_level(channels[0], channels[1], levels[1], 2)
        block_kwargs = dict(scale=scale, cardinality=cardinality, base_width=base_width)
        rates = iter(stochastic_depth_rates(drop_path_rate, sum(_num_blocks(n) for n in levels[2:])))
        self.level2 = DlaTree(levels[2], channels[1], channels[2], 2, rates, block_kwargs, level_root=False)
        self.level3 = DlaTree(levels[3], channels[2], channels[3], 2, rates, block_kwargs, level_root=True)
        self.level4 = DlaTree(levels[4], channels[3], channels[4], 2, rates, block_kwargs, level_root=True)
        self.level5 = DlaTree(levels[5], channels[4], channels[5], 2, rates, block_kwargs, level_root=True)
        feature_info = [dict(num_chs=channels[i], reduction=2 ** i, module=f"level{i}") for i in range(1, 6)]
        self.init_head(channels[-1], feature_info, num_classes, global_pool, drop_rate, features_only, out_indices)
        init_weights(self, zero_init_last=zero_init_last)

    @staticmethod
    def _conv_level(in_channels, out_channels, num_convs, stride):
        cells = []
        for i in range(num_convs):
            cells += [conv2d(in_channels, out_channels, 3, stride=stride if i == 0 else 1),
                      batch_norm(out_channels), nn.ReLU()]
            in_channels = out_channels
        return nn.SequentialCell(cells)


# ---- the variants: one registration each (published top-1 / top-5 of the official release) --------

# timm's dla60_res2net: 28w x 4s
register_model(Res2NetDLA, name="res2net_dla60", cfg=_cfg(
    base_width=28, cardinality=1, timm_name="dla60_res2net",
    weights=official_release("dla60_res2net.in1k", "res2net_dla60_4s-d88db7f9.pth", 78.47, 94.20,
                             origin="res2net_dla60", timm_origin="dla60_res2net")))

# timm's dla60_res2next: 4w x 8 groups x 4s
register_model(Res2NetDLA, name="res2next_dla60", cfg=_cfg(
    base_width=4, cardinality=8, timm_name="dla60_res2next",
    weights=official_release("dla60_res2next.in1k", "res2next_dla60_4s-d327927b.pth", 78.45, 94.14,
                             origin="res2next_dla60", timm_origin="dla60_res2next")))
