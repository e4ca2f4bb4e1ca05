"""Building blocks shared by the Res2Net and DLA models.

Convolutions use explicit symmetric padding (``pad_mode='pad'``), as PyTorch does: MindSpore's
default ``pad_mode='same'`` pads bottom/right on stride 2 and would shift the pixels of
converted PyTorch weights.
"""
import math

import mindspore as ms
from mindspore import nn, ops
from mindspore.common import initializer as init

from ..errors import UserError


def conv2d(in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False):
    """A convolution padded symmetrically by ``kernel_size // 2`` (PyTorch's ``padding=k//2``)."""
    padding = kernel_size // 2
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride,
        pad_mode="pad" if padding else "valid", padding=padding,
        group=groups, has_bias=bias)


def batch_norm(num_features):
    """BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1 = MindSpore momentum 0.9)."""
    return nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.9)


class DropPath(nn.Cell):
    """Stochastic depth: drops a whole residual branch per sample, only in training."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)
        # nn.Dropout is active only in training mode and rescales kept samples by 1/keep.
        self.dropout = nn.Dropout(p=self.drop_prob) if self.drop_prob > 0 else None

    def construct(self, x):
        if self.dropout is None or not self.training:
            return x
        mask = self.dropout(ops.ones((x.shape[0],) + (1,) * (x.ndim - 1), x.dtype))
        return x * mask


class MultiScaleBlock(nn.Cell):
    """The Res2Net multi-scale core shared by Bottle2neck and DLA's bottleneck.

    ``init_layers`` builds the branch: 1x1 conv (``width * scale`` channels), ``scale - 1`` 3x3
    convs over ``width``-channel chunks, the stage block's avg-pool, 1x1 conv. In a stage block each
    3x3 conv takes its own chunk and the last chunk is pooled; otherwise chunk i is added to the
    previous output first and the last chunk passes through. The inference-optimised block sets the
    same attributes with BN folded into ``convs`` and overrides ``chunk_conv`` and ``forward_body``.
    """

    def init_layers(self, in_channels, width, out_channels, scale, stride=1, cardinality=1, is_stage=False):
        """Set ``width``, ``scale``, ``num_convs``, ``is_stage`` and the cells ``conv1``, ``bn1``,
        ``convs``, ``bns``, ``pool`` (a stage block's, else None), ``conv3``, ``bn3``, ``relu``."""
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

    def forward_body(self, x):
        """The residual branch: conv1 + bn1 + ReLU, the multi-scale convs, conv3 + bn3."""
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn3(self.conv3(self.multi_scale(out)))

    def chunk_conv(self, i, x):
        """The i-th 3x3 conv of the chain with its BN and ReLU."""
        return self.relu(self.bns[i](self.convs[i](x)))

    def multi_scale(self, out):
        chunks = ops.split(out, self.width, axis=1)
        outputs = []
        sp = chunks[0]
        for i in range(self.num_convs):
            if i > 0:
                sp = chunks[i] if self.is_stage else sp + chunks[i]
            sp = self.chunk_conv(i, sp)
            outputs.append(sp)
        if self.scale > 1:
            last = chunks[self.num_convs]
            outputs.append(self.pool(last) if self.is_stage else last)
        return ops.cat(outputs, 1)


POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")


class SelectAdaptivePool2d(nn.Cell):
    """Global pooling over H and W: 'avg', 'max', 'avgmax' (mean of both), 'catavgmax'
    (both concatenated: twice the channels) or '' (no pooling)."""

    def __init__(self, pool_type="avg"):
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise UserError(f"unknown global_pool {pool_type!r}: choose one of {', '.join(map(repr, POOL_TYPES))}")
        self.pool_type = pool_type

    @property
    def feature_multiplier(self):
        return 2 if self.pool_type == "catavgmax" else 1

    def construct(self, x):
        if self.pool_type == "avg":
            return ops.mean(x, (2, 3))
        if self.pool_type == "max":
            return ops.amax(x, (2, 3))
        if self.pool_type == "avgmax":
            return 0.5 * (ops.mean(x, (2, 3)) + ops.amax(x, (2, 3)))
        if self.pool_type == "catavgmax":
            return ops.cat((ops.mean(x, (2, 3)), ops.amax(x, (2, 3))), 1)
        return x


def build_head(num_features, num_classes, global_pool="avg", drop_rate=0.0):
    """The classifier head's parts: (global pool, dropout or None, Dense or None, pooled width).

    They are set as attributes of the model itself (not a sub-cell) so that the classifier's
    parameters are named ``classifier.weight`` / ``classifier.bias``, as in MindCV.
    ``num_classes=0`` leaves no classifier: the model returns the pooled features.
    """
    pool = SelectAdaptivePool2d(global_pool)
    num_pooled = num_features * pool.feature_multiplier
    if num_classes > 0 and not global_pool:
        raise UserError("global_pool='' (unpooled feature maps) needs num_classes=0")
    dropout = nn.Dropout(p=drop_rate) if drop_rate > 0 else None
    classifier = nn.Dense(num_pooled, num_classes) if num_classes > 0 else None
    return pool, dropout, classifier, num_pooled


def stochastic_depth_rates(drop_path_rate, num_blocks):
    """Drop-path probability per block, rising linearly from 0 to ``drop_path_rate``."""
    if num_blocks <= 1:
        return [float(drop_path_rate)] * num_blocks
    return [float(drop_path_rate) * i / (num_blocks - 1) for i in range(num_blocks)]


def init_weights(net, zero_init_last=False):
    """Kaiming-normal (fan_out, ReLU) convs; BN gamma 1 / beta 0; Dense like PyTorch's Linear
    (uniform +-1/sqrt(fan_in)). ``zero_init_last`` zeroes the last BN gamma of each residual block
    (the cells named ``bn3``), so every block starts as the identity."""
    for name, cell in net.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            cell.weight.set_data(init.initializer(
                init.HeNormal(mode="fan_out", nonlinearity="relu"), cell.weight.shape, cell.weight.dtype))
            if cell.bias is not None:
                cell.bias.set_data(init.initializer("zeros", cell.bias.shape, cell.bias.dtype))
        elif isinstance(cell, nn.BatchNorm2d):
            gamma = "zeros" if zero_init_last and name.endswith("bn3") else "ones"
            cell.gamma.set_data(init.initializer(gamma, cell.gamma.shape, cell.gamma.dtype))
            cell.beta.set_data(init.initializer("zeros", cell.beta.shape, cell.beta.dtype))
        elif isinstance(cell, nn.Dense):
            bound = 1.0 / math.sqrt(cell.in_channels)
            cell.weight.set_data(init.initializer(init.Uniform(bound), cell.weight.shape, cell.weight.dtype))
            if cell.bias is not None:
                cell.bias.set_data(init.initializer(init.Uniform(bound), cell.bias.shape, cell.bias.dtype))


def count_params(net, trainable_only=True):
    params = net.trainable_params() if trainable_only else net.get_parameters()
    return int(sum(math.prod(p.shape) for p in params))


__all__ = ["conv2d", "batch_norm", "DropPath", "MultiScaleBlock", "SelectAdaptivePool2d", "build_head",
           "stochastic_depth_rates", "init_weights", "count_params", "POOL_TYPES", "ms"]
