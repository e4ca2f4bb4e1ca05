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

from .base import ClassifierNet
from .layers import DropPath, MultiScaleBlock, batch_norm, conv2d, init_weights, stochastic_depth_rates
from .registry import ModelCfg, mindcv, official, official_release, register_model, timm_hub


def _cfg(layers, base_width=26, scale=4, cardinality=1, v1b=False, **kwargs):
    """The ``ModelCfg`` of a Res2Net variant: blocks per stage, width per scale, scales, groups of
    the 3x3 convs, v1b (deep stem and avg-pool shortcut); ``kwargs``: weights, timm's name ..."""
    arch = dict(layers=tuple(layers), base_width=base_width, scale=scale, cardinality=cardinality,
                deep_stem=v1b, avg_down=v1b)
    return ModelCfg(family="res2net", arch=arch, first_conv="conv1.0" if v1b else "conv1", **kwargs)


class Bottle2neck(MultiScaleBlock):
    """The Res2Net bottleneck: hierarchical residual-like connections inside one block."""

    expansion = 4

    def __init__(self, in_channels, planes, stride=1, down_sample=None, cardinality=1,
                 base_width=26, scale=4, is_stage=False, drop_path=0.0):
        super().__init__()
        width = int(math.floor(planes * (base_width / 64.0))) * cardinality
        self.init_layers(in_channels, width, planes * self.expansion, scale, stride, cardinality, is_stage)
        self.down_sample = down_sample
        self.drop_path = DropPath(drop_path)

    def construct(self, x):
        out = self.forward_body(x)
        shortcut = x if self.down_sample is None else self.down_sample(x)
        return self.relu(self.drop_path(out) + shortcut)


class Res2Net(ClassifierNet):
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

    feature_stages = (("conv1", "bn1", "relu"), ("max_pool", "layer1"), ("layer2",), ("layer3",), ("layer4",))

    def __init__(self, layers, base_width=26, scale=4, cardinality=1, deep_stem=False, avg_down=False,
                 num_classes=1000, in_channels=3, global_pool="avg", drop_rate=0.0, drop_path_rate=0.0,
                 zero_init_last=False, features_only=False, out_indices=None):
        super().__init__()
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

        feature_info = [
            dict(num_chs=stem_width, reduction=2, module="bn1"),
            dict(num_chs=256, reduction=4, module="layer1"),
            dict(num_chs=512, reduction=8, module="layer2"),
            dict(num_chs=1024, reduction=16, module="layer3"),
            dict(num_chs=2048, reduction=32, module="layer4"),
        ]
        self.init_head(512 * Bottle2neck.expansion, feature_info, num_classes, global_pool, drop_rate,
                       features_only, out_indices)
        init_weights(self, zero_init_last=zero_init_last)


# ---- the variants: one registration each (registration order = the order of benchmark.py's table) ---
# Published ImageNet-1k top-1 / top-5 (%): official (README: 100 - error), MindCV (configs/res2net/README.md).
# The hash in a file name is the first 8 hex digits of its SHA-256 (the publishers give no more).

register_model(Res2Net, name="res2net50", aliases=("res2net50_26w_4s",), cfg=_cfg(
    (3, 4, 6, 3), base_width=26, scale=4, timm_name="res2net50_26w_4s",
    weights=(mindcv("res2net50-f42cf71b.ckpt", 79.35, 94.64),
             mindcv("res2net50-aa758355-910v2.ckpt", 79.33, 94.64, tag="mindcv_910v2"),
             *official_release("res2net50_26w_4s.in1k", "res2net50_26w_4s-06e79181.pth", 77.99, 93.85))))

register_model(Res2Net, name="res2net101", aliases=("res2net101_26w_4s",), cfg=_cfg(
    (3, 4, 23, 3), base_width=26, scale=4, timm_name="res2net101_26w_4s",
    weights=(mindcv("res2net101-8ae60132.ckpt", 79.56, 94.70),
             *official_release("res2net101_26w_4s.in1k", "res2net101_26w_4s-02a759a1.pth", 79.19, 94.43))))

register_model(Res2Net, name="res2net152", cfg=_cfg((3, 8, 36, 3), base_width=26, scale=4))  # no weights

register_model(Res2Net, name="res2net50_26w_6s", cfg=_cfg(
    (3, 4, 6, 3), base_width=26, scale=6, timm_name="res2net50_26w_6s",
    weights=official_release("res2net50_26w_6s.in1k", "res2net50_26w_6s-19041792.pth", 78.58, 94.13)))

register_model(Res2Net, name="res2net50_26w_8s", cfg=_cfg(
    (3, 4, 6, 3), base_width=26, scale=8, timm_name="res2net50_26w_8s",
    weights=official_release("res2net50_26w_8s.in1k", "res2net50_26w_8s-2c7c9f12.pth", 79.20, 94.37)))

register_model(Res2Net, name="res2net50_48w_2s", cfg=_cfg(
    (3, 4, 6, 3), base_width=48, scale=2, timm_name="res2net50_48w_2s",
    weights=official_release("res2net50_48w_2s.in1k", "res2net50_48w_2s-afed724a.pth", 77.32, 93.53)))

register_model(Res2Net, name="res2net50_14w_8s", cfg=_cfg(
    (3, 4, 6, 3), base_width=14, scale=8, timm_name="res2net50_14w_8s",
    weights=official_release("res2net50_14w_8s.in1k", "res2net50_14w_8s-6527dddc.pth", 78.14, 93.86)))

# Res2NeXt-50: 4w x 8 groups, 4 scales
register_model(Res2Net, name="res2next50", cfg=_cfg(
    (3, 4, 6, 3), base_width=4, scale=4, cardinality=8, timm_name="res2next50",
    weights=official_release("res2next50.in1k", "res2next50_4s-6ef7e7bf.pth", 78.24, 93.91, origin="res2next50")))

register_model(Res2Net, name="res2net50_v1b", aliases=("res2net50d",), cfg=_cfg(
    (3, 4, 6, 3), base_width=26, scale=4, v1b=True, timm_name="res2net50d",
    weights=(mindcv("res2net50_v1b-99304e92.ckpt", 80.32, 95.09),
             timm_hub("res2net50d.in1k", 80.27, 95.04),
             official("res2net50_v1b_26w_4s-3cf99910.pth", 80.27, 95.04))))

register_model(Res2Net, name="res2net101_v1b", aliases=("res2net101d",), cfg=_cfg(
    (3, 4, 23, 3), base_width=26, scale=4, v1b=True, timm_name="res2net101d",
    weights=(mindcv("res2net101_v1b-7e6db001.ckpt", 81.14, 95.41),
             timm_hub("res2net101d.in1k", 81.23, 95.36),
             official("res2net101_v1b_26w_4s-0812c246.pth", 81.23, 95.36))))

register_model(Res2Net, name="res2net152_v1b", cfg=_cfg((3, 8, 36, 3), base_width=26, scale=4, v1b=True))
