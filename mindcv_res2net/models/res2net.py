"""Res2Net, Res2NeXt and Res2Net-v1b ("Res2Net: A New Multi-scale Backbone Architecture", TPAMI 2021).

The architecture is the official PyTorch release's, so converted PyTorch weights reproduce its
logits; parameter names are MindCV's, so MindCV checkpoints load unchanged:

- Bottle2neck: a 1x1 conv gives ``width * scale`` channels, split into ``scale`` chunks. In the
  first ("stage") block of every stage each of the ``scale - 1`` strided 3x3 convs takes its own
  chunk and the last chunk goes through AvgPool(3, stride, padding 1, zero padding counted).
  In the other blocks chunk i is added to the previous 3x3 output before its conv, and the last
  chunk passes through untouched. conv3's input is [y0, ..., y(s-2), x(s-1)].
- v1b: deep stem (3x3/2 32 -> 3x3 32 -> 3x3 64) and, in stages 2-4, a shortcut of
  AvgPool(2, 2, ceil_mode, padding not counted) -> 1x1 conv -> BN.
- Res2NeXt: the 3x3 convs are grouped (``cardinality`` groups).
"""
import math

from mindspore import nn

from .layers import (DropPath, MultiScaleBlock, batch_norm, build_head, conv2d, init_weights,
                     stochastic_depth_rates)
from .registry import register_alias, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _cfg(**kwargs):
    cfg = {
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bilinear",
        "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
        "first_conv": "conv1", "classifier": "classifier",
    }
    cfg.update(kwargs)
    return cfg


default_cfgs = {
    "res2net50": _cfg(),
    "res2net101": _cfg(),
    "res2net152": _cfg(),
    "res2net50_26w_6s": _cfg(),
    "res2net50_26w_8s": _cfg(),
    "res2net50_48w_2s": _cfg(),
    "res2net50_14w_8s": _cfg(),
    "res2next50": _cfg(),
    "res2net50_v1b": _cfg(first_conv="conv1.0"),
    "res2net101_v1b": _cfg(first_conv="conv1.0"),
    "res2net152_v1b": _cfg(first_conv="conv1.0"),
}


class Bottle2neck(MultiScaleBlock):
    """The Res2Net bottleneck: hierarchical residual-like connections inside one block."""

    expansion = 4

    def __init__(self, in_channels, planes, stride=1, down_sample=None, cardinality=1,
                 base_width=26, scale=4, is_stage=False, drop_path=0.0):
        super().__init__()
        width = int(math.floor(planes * (base_width / 64.0))) * cardinality
        out_channels = planes * self.expansion
        self.width = width
        self.scale = scale
        self.num_convs = max(1, scale - 1)
        self.is_stage = is_stage

        self.conv1 = conv2d(in_channels, width * scale, 1)
        self.bn1 = batch_norm(width * scale)
        self.convs = nn.CellList([conv2d(width, width, 3, stride=stride, groups=cardinality)
                                  for _ in range(self.num_convs)])
        self.bns = nn.CellList([batch_norm(width) for _ in range(self.num_convs)])
        self.pool = None
        if is_stage and scale > 1:
            self.pool = nn.AvgPool2d(kernel_size=3, stride=stride, pad_mode="pad", padding=1,
                                     count_include_pad=True)
        self.conv3 = conv2d(width * scale, out_channels, 1)
        self.bn3 = batch_norm(out_channels)
        self.relu = nn.ReLU()
        self.down_sample = down_sample
        self.drop_path = DropPath(drop_path)

    def construct(self, x):
        shortcut = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn3(self.conv3(self.multi_scale(out)))
        if self.down_sample is not None:
            shortcut = self.down_sample(x)
        return self.relu(self.drop_path(out) + shortcut)


class Res2Net(nn.Cell):
    """Res2Net backbone and classifier.

    Args:
        layers: blocks per stage, e.g. (3, 4, 6, 3) for the 50-layer models.
        base_width, scale, cardinality: the block's width per scale, number of scales, and groups
            of the 3x3 convs (Res2NeXt).
        deep_stem, avg_down: the v1b stem and shortcut.
        num_classes: classifier outputs; 0 gives the pooled features.
        global_pool: 'avg', 'max', 'avgmax', 'catavgmax' or '' (no pooling; needs num_classes=0).
        drop_rate: dropout before the classifier. drop_path_rate: stochastic depth, rising
            linearly over the blocks, active only in training.
        zero_init_last: zero the last BN gamma of each block.
        features_only: return the feature maps selected by ``out_indices`` from
            (stem before max-pool /2, layer1 /4, layer2 /8, layer3 /16, layer4 /32).
    """

    def __init__(self, layers, base_width=26, scale=4, cardinality=1, deep_stem=False, avg_down=False,
                 num_classes=1000, in_channels=3, global_pool="avg", drop_rate=0.0, drop_path_rate=0.0,
                 zero_init_last=False, features_only=False, out_indices=None):
        super().__init__()
        self.num_classes = num_classes
        self.features_only = features_only
        stem_width = 64
        if deep_stem:
            half = stem_width // 2
            self.conv1 = nn.SequentialCell([
                conv2d(in_channels, half, 3, stride=2), batch_norm(half), nn.ReLU(),
                conv2d(half, half, 3), batch_norm(half), nn.ReLU(),
                conv2d(half, stem_width, 3)])
        else:
            self.conv1 = conv2d(in_channels, stem_width, 7, stride=2)
        self.bn1 = batch_norm(stem_width)
        self.relu = nn.ReLU()
        self.max_pool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)

        rates = iter(stochastic_depth_rates(drop_path_rate, sum(layers)))
        in_ch = stem_width
        stages = []
        for stage_index, (planes, num_blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if stage_index == 0 else 2
            out_ch = planes * Bottle2neck.expansion
            down_sample = None
            if stride != 1 or in_ch != out_ch:
                if avg_down and stride != 1:
                    down_sample = nn.SequentialCell([
                        nn.AvgPool2d(kernel_size=stride, stride=stride, pad_mode="pad", padding=0,
                                     ceil_mode=True, count_include_pad=False),
                        conv2d(in_ch, out_ch, 1), batch_norm(out_ch)])
                else:
                    down_sample = nn.SequentialCell([conv2d(in_ch, out_ch, 1, stride=stride), batch_norm(out_ch)])
            blocks = []
            for block_index in range(num_blocks):
                first = block_index == 0
                blocks.append(Bottle2neck(
                    in_ch, planes, stride=stride if first else 1, down_sample=down_sample if first else None,
                    cardinality=cardinality, base_width=base_width, scale=scale, is_stage=first,
                    drop_path=next(rates)))
                in_ch = out_ch
            stages.append(nn.SequentialCell(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        self.num_features = 512 * Bottle2neck.expansion
        self.feature_info = [
            dict(num_chs=stem_width, reduction=2, module="bn1"),
            dict(num_chs=256, reduction=4, module="layer1"),
            dict(num_chs=512, reduction=8, module="layer2"),
            dict(num_chs=1024, reduction=16, module="layer3"),
            dict(num_chs=2048, reduction=32, module="layer4"),
        ]
        if features_only:
            self.out_indices = tuple(range(5)) if out_indices is None else tuple(out_indices)
            self.feature_info = [self.feature_info[i] for i in self.out_indices]
            self.global_pool, self.head_drop, self.classifier = None, None, None
        else:
            self.out_indices = ()
            self.global_pool, self.head_drop, self.classifier, self.num_pooled_features = build_head(
                self.num_features, num_classes, global_pool, drop_rate)
        init_weights(self, zero_init_last=zero_init_last)

    def forward_stem(self, x):
        return self.relu(self.bn1(self.conv1(x)))

    def forward_features(self, x):
        x = self.max_pool(self.forward_stem(x))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x, pre_logits=False):
        x = self.global_pool(x)
        if self.head_drop is not None:
            x = self.head_drop(x)
        if pre_logits or self.classifier is None:
            return x
        return self.classifier(x)

    def forward_feature_maps(self, x):
        """The five feature maps (stem /2, layer1-4), filtered by ``out_indices``."""
        x = self.forward_stem(x)
        maps = [x]
        x = self.layer1(self.max_pool(x))
        maps.append(x)
        x = self.layer2(x)
        maps.append(x)
        x = self.layer3(x)
        maps.append(x)
        x = self.layer4(x)
        maps.append(x)
        return tuple(maps[i] for i in self.out_indices)

    def construct(self, x):
        if self.features_only:
            return self.forward_feature_maps(x)
        return self.forward_head(self.forward_features(x))


def _res2net(layers, **kwargs):
    return Res2Net(layers, **kwargs)


@register_model
def res2net50(**kwargs):
    """Res2Net-50 26w x 4s."""
    return _res2net((3, 4, 6, 3), base_width=26, scale=4, **kwargs)


@register_model
def res2net101(**kwargs):
    """Res2Net-101 26w x 4s."""
    return _res2net((3, 4, 23, 3), base_width=26, scale=4, **kwargs)


@register_model
def res2net152(**kwargs):
    """Res2Net-152 26w x 4s (no published weights)."""
    return _res2net((3, 8, 36, 3), base_width=26, scale=4, **kwargs)


@register_model
def res2net50_26w_6s(**kwargs):
    return _res2net((3, 4, 6, 3), base_width=26, scale=6, **kwargs)


@register_model
def res2net50_26w_8s(**kwargs):
    return _res2net((3, 4, 6, 3), base_width=26, scale=8, **kwargs)


@register_model
def res2net50_48w_2s(**kwargs):
    return _res2net((3, 4, 6, 3), base_width=48, scale=2, **kwargs)


@register_model
def res2net50_14w_8s(**kwargs):
    return _res2net((3, 4, 6, 3), base_width=14, scale=8, **kwargs)


@register_model
def res2next50(**kwargs):
    """Res2NeXt-50: 4w x 8 cardinality, 4 scales (grouped 3x3 convs)."""
    return _res2net((3, 4, 6, 3), base_width=4, scale=4, cardinality=8, **kwargs)


@register_model
def res2net50_v1b(**kwargs):
    """Res2Net-50-v1b 26w x 4s: deep stem, avg-pool shortcut (timm's res2net50d)."""
    return _res2net((3, 4, 6, 3), base_width=26, scale=4, deep_stem=True, avg_down=True, **kwargs)


@register_model
def res2net101_v1b(**kwargs):
    return _res2net((3, 4, 23, 3), base_width=26, scale=4, deep_stem=True, avg_down=True, **kwargs)


@register_model
def res2net152_v1b(**kwargs):
    return _res2net((3, 8, 36, 3), base_width=26, scale=4, deep_stem=True, avg_down=True, **kwargs)


# timm's names for the same architectures
register_alias("res2net50_26w_4s", "res2net50")
register_alias("res2net101_26w_4s", "res2net101")
register_alias("res2net50d", "res2net50_v1b")
register_alias("res2net101d", "res2net101_v1b")
