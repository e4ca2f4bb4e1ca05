"""Eval-only rewrites of the Res2Net family for fast inference and clean export.

``optimize_for_inference(net)`` builds a *new* network from a trained model's weights (the original
is left untouched) that computes the same function in eval mode with fewer, larger operations:

- every BatchNorm is folded into the convolution before it:
  ``w' = w * gamma / sqrt(var + eps)``, ``b' = beta + (b - mean) * gamma / sqrt(var + eps)``
  (computed in float64, stored in the model's dtype);
- in a stage block (the first block of a stage) the ``scale - 1`` independent 3x3 convolutions,
  one per chunk, are merged. ``stage_convs="merged"`` (the default): the last chunk's
  ``AvgPool(3, stride, padding 1, zero padding counted)`` is a fixed 3x3 convolution (1/9 on each
  channel's own input), so it joins the same grouped convolution as one more group block; a stage
  block is then ``1x1 -> grouped 3x3 (groups = scale * cardinality) -> 1x1`` with no split and no
  concatenation at all (the pooled chunk is a ReLU output, so the shared ReLU leaves it unchanged).
  ``stage_convs="grouped"``: one grouped convolution (``groups = (scale - 1) * cardinality``) over
  the first ``scale - 1`` chunks, the avg-pool on the last, one split and one concatenation.
  ``stage_convs="separate"``: one convolution per chunk, as the original;
- the other blocks keep their hierarchical 3x3 chain (each conv needs the previous one's output),
  with one split and one concatenation;
- ReLU follows each convolution directly (MindSpore 2.8 has no public fused conv + ReLU primitive
  for CPU/GPU; the graph compiler may fuse them where the backend can);
- dropout and drop-path (identities in eval) are left out;
- only operations that MindSpore 2.8's ONNX exporter knows are used: ``Conv2D`` + ``BiasAdd``,
  ``ReLU``, ``Add`` (never an in-place add), ``Split``, ``Concat``, ``Pad``, ``MaxPool`` and
  ``AvgPool`` with ``valid`` / ``same`` padding, ``ReduceMean`` / ``ReduceMax`` and ``MatMul``.
  ``nn.MaxPool2d`` / ``nn.AvgPool2d`` with ``pad_mode='pad'`` lower to 3-D pooling primitives the
  exporter does not support, so the stem max-pool is zero padding (concatenated zeros: its input
  is a ReLU output) + ``MaxPool(valid)`` and the v1b shortcut's ``AvgPool(2, 2, ceil_mode, padding
  not counted)`` is ``AvgPool(2, 2, 'same')`` (SAME padding at the bottom/right, not counted in the
  average).

Measured speed-ups: ``docs/benchmarks.md`` (``python benchmark.py``, ``ours_optimized``).

The result works in graph and PyNative mode, for every registered model (Res2Net, Res2NeXt, v1b,
DLA-60 with Res2Net/Res2NeXt blocks), with ``features_only``, ``num_classes=0`` and every
``global_pool``. It keeps ``default_cfg``, ``num_classes``, ``num_features``, ``feature_info``,
``features_only`` and ``out_indices`` of the original; its head, feature maps and ``construct``
are the training models' own (``models/base.py``), and the non-stage blocks run the training
block's ``multi_scale`` with the folded convolutions.

Building a model from a checkpoint for ``predict.py`` / ``export.py``: ``mindcv_res2net.deploy.inference_model``.
"""
import copy

import numpy as np
from mindspore import Tensor, nn, ops

from .base import ClassifierNet
from .layers import MultiScaleBlock, SelectAdaptivePool2d
from .res2net import Res2Net
from .res2net_dla import DlaTreeBase, Res2NetDLA

__all__ = ["optimize_for_inference", "fold_conv_bn", "FusedConv", "FusedBottle2neck", "FusedDlaBottle2neck",
           "FusedRes2Net", "FusedRes2NetDLA", "STAGE_CONV_MODES"]


# ------------------------------------------------------------------------------------------------
# weight arithmetic (numpy, float64)
# ------------------------------------------------------------------------------------------------

def _np(param):
    return param.asnumpy().astype(np.float64)


def fold_conv_bn(conv, bn=None):
    """(weight, bias) as float64 arrays of ``bn(conv(x))`` written as one convolution with bias."""
    weight = _np(conv.weight)
    bias = _np(conv.bias) if conv.has_bias else np.zeros(weight.shape[0])
    if bn is None:
        return weight, bias
    scale = _np(bn.gamma) / np.sqrt(_np(bn.moving_variance) + float(bn.eps))
    return weight * scale[:, None, None, None], _np(bn.beta) + (bias - _np(bn.moving_mean)) * scale


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _padding(conv):
    """The symmetric padding of a ``pad_mode='pad'`` convolution as one int (or a 4-tuple)."""
    pad = conv.padding
    if isinstance(pad, (tuple, list)):
        return pad[0] if len(set(pad)) == 1 else tuple(pad)
    return pad


class FusedConv(nn.Cell):
    """A convolution with bias (a folded conv + BN), optionally followed by ReLU."""

    def __init__(self, weight, bias, stride=1, padding=0, groups=1, relu=False, dilation=1, dtype=None):
        super().__init__()
        dtype = dtype or np.float32
        weight = np.ascontiguousarray(weight, dtype=dtype)
        bias = np.ascontiguousarray(bias, dtype=dtype)
        out_ch, in_per_group, kh, kw = weight.shape
        has_pad = padding != 0 and padding != (0, 0, 0, 0)
        self.conv = nn.Conv2d(
            in_per_group * groups, out_ch, (kh, kw), stride=stride,
            pad_mode="pad" if has_pad else "valid", padding=padding if has_pad else 0,
            dilation=dilation, group=groups, has_bias=True,
            weight_init=Tensor(weight), bias_init=Tensor(bias))
        self.use_relu = bool(relu)
        self.relu = nn.ReLU()

    @classmethod
    def from_conv_bn(cls, conv, bn=None, relu=False):
        weight, bias = fold_conv_bn(conv, bn)
        return cls(weight, bias, stride=_pair(conv.stride), padding=_padding(conv), groups=conv.group,
                   relu=relu, dilation=_pair(conv.dilation), dtype=_dtype(conv))

    def construct(self, x):
        x = self.conv(x)
        if self.use_relu:
            x = self.relu(x)
        return x


def _dtype(conv):
    return {"Float16": np.float16, "Float64": np.float64}.get(str(conv.weight.dtype), np.float32)


class StemMaxPool(nn.Cell):
    """``MaxPool(3, 2, padding 1)`` of a non-negative input: zero padding + ``MaxPool(valid)``.

    (Exact only because the input is a ReLU output: a zero in the padding never wins the max.)
    The zeros are concatenated around the input, which is faster on CPU than ``ops.Pad`` + MaxPool
    or ``nn.MaxPool2d`` with ``pad_mode='pad'`` (a 3-D max-pool with argmax). The zeros are slices of
    the input times 0, not constants of the traced shape, so that an exported file keeps a variable
    batch dimension (a constant would fix it to the traced batch in ONNX).
    """

    def __init__(self, kernel_size=3, stride=2, padding=1):
        super().__init__()
        self.padding = int(padding)
        self.pool = ops.MaxPool(kernel_size=kernel_size, strides=stride, pad_mode="VALID")

    def construct(self, x):
        if self.padding:
            p = self.padding
            rows = x[:, :, :p, :] * 0
            x = ops.cat((rows, x, rows), 2)
            cols = x[:, :, :, :p] * 0
            x = ops.cat((cols, x, cols), 3)
        return self.pool(x)


def _kernel(pool_attr):
    value = pool_attr if isinstance(pool_attr, (tuple, list)) else (pool_attr, pool_attr)
    return tuple(int(v) for v in value[-2:])


# ------------------------------------------------------------------------------------------------
# the bottleneck
# ------------------------------------------------------------------------------------------------

STAGE_CONV_MODES = ("merged", "grouped", "separate")


def _stage_grouped_weights(block, with_pool=True):
    """Weights and bias of a stage block's grouped 3x3 conv over its chunks (``with_pool``: the
    last chunk's avg-pool too)."""
    ws, bs = [], []
    for conv, bn in zip(block.convs, block.bns):
        w, b = fold_conv_bn(conv, bn)
        ws.append(w)
        bs.append(b)
    if block.scale > 1 and with_pool:
        # AvgPool(3, stride, pad 1, count_include_pad) == conv with 1/9 on each channel's own input.
        width, per_group = ws[0].shape[0], ws[0].shape[1]
        pool_w = np.zeros((width, per_group, 3, 3))
        for o in range(width):
            pool_w[o, o % per_group] = 1.0 / 9.0
        ws.append(pool_w)
        bs.append(np.zeros(width))
    return np.concatenate(ws, 0), np.concatenate(bs, 0)


class FusedBottle2neck(MultiScaleBlock):
    """Eval-only Res2Net bottleneck with BN folded, built from a trained ``Bottle2neck`` (or DLA's
    ``DlaBottle2neck``) and its fused shortcut; ``stage_convs``: see the module docstring.

    A chain block (and a stage block with ``stage_convs="separate"``) runs the training block's
    ``multi_scale`` over its folded convolutions (``chunk_conv``: conv + ReLU, no BN)."""

    def __init__(self, block, shortcut=None, stage_convs="merged"):
        super().__init__()
        if stage_convs not in STAGE_CONV_MODES:
            raise ValueError(f"stage_convs must be one of {STAGE_CONV_MODES}, got {stage_convs!r}")
        self.width = int(block.width)
        self.scale = int(block.scale)
        self.num_convs = int(block.num_convs)
        self.is_stage = bool(block.is_stage)
        first = block.convs[0]
        stride = _pair(first.stride)
        cardinality = int(first.group)
        self.conv1 = FusedConv.from_conv_bn(block.conv1, block.bn1, relu=True)
        self.grouped = None
        self.convs = None
        self.pool = None
        self.stage_mode = "chain"
        if self.is_stage and stage_convs == "merged" and self.scale > 1 and not _pool_is_conv(block):
            stage_convs = "grouped"  # an avg-pool that is not the convs' 3x3 window: keep it apart
        if self.scale == 1 or (self.is_stage and stage_convs == "merged"):
            # one grouped conv over every chunk (the last chunk's avg-pool as a fixed 1/9 kernel)
            weight, bias = _stage_grouped_weights(block, with_pool=True)
            groups = cardinality * (self.scale if self.scale > 1 else 1)
            self.grouped = FusedConv(weight, bias, stride=stride, padding=_padding(first), groups=groups,
                                     relu=True, dtype=_dtype(first))
            self.stage_mode = "merged"
        elif self.is_stage and stage_convs == "grouped":
            # one grouped conv over the first scale - 1 chunks; the last chunk through the avg-pool
            weight, bias = _stage_grouped_weights(block, with_pool=False)
            self.grouped = FusedConv(weight, bias, stride=stride, padding=_padding(first),
                                     groups=cardinality * self.num_convs, relu=True, dtype=_dtype(first))
            self.pool = _stage_avg_pool(block.pool)
            self.stage_mode = "grouped"
        else:
            self.convs = nn.CellList([FusedConv.from_conv_bn(c, b, relu=True)
                                      for c, b in zip(block.convs, block.bns)])
            if self.is_stage:
                self.pool = _stage_avg_pool(block.pool)
                self.stage_mode = "separate"
        self.conv3 = FusedConv.from_conv_bn(block.conv3, block.bn3, relu=False)
        self.shortcut = shortcut
        self.relu = nn.ReLU()

    def forward_body(self, x):
        """Everything up to (and including) conv3 + bn3: the residual branch."""
        out = self.conv1(x)
        if self.stage_mode == "merged":
            return self.conv3(self.grouped(out))
        if self.stage_mode == "grouped":
            head, last = ops.split(out, (self.width * self.num_convs, self.width), axis=1)
            return self.conv3(ops.cat((self.grouped(head), self.pool(last)), 1))
        return self.conv3(self.multi_scale(out))

    def chunk_conv(self, i, x):
        """The i-th folded 3x3 conv of the chain (its BN folded in, ReLU included)."""
        return self.convs[i](x)

    def construct(self, x):
        out = self.forward_body(x)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + shortcut)


def _pool_is_conv(block):
    """True when the stage block's avg-pool is the 3x3 convs' own window (kernel, stride and zero
    padding equal, padding counted), i.e. a convolution with 1/9 weights of the same geometry."""
    conv, prim = block.convs[0], getattr(block.pool, "avg_pool", None)
    if prim is None:
        return False
    pads = tuple(prim.attrs.get("pad_list", prim.attrs.get("pad", ())))
    conv_pad = _padding(conv) if conv.pad_mode.lower() == "pad" else 0
    return (_kernel(block.pool.kernel_size) == tuple(_pair(conv.kernel_size)) == (3, 3)
            and _kernel(block.pool.stride) == tuple(_pair(conv.stride))
            and isinstance(conv_pad, int) and pads and set(pads[-4:]) == {conv_pad}
            and bool(prim.attrs.get("count_include_pad", True)) and not prim.attrs.get("ceil_mode", False)
            and tuple(_pair(conv.dilation)) == (1, 1))


class StageAvgPool(nn.Cell):
    """``AvgPool(k, stride, padding p, zero padding counted)``: zero ``Pad`` + ``AvgPool(valid)``."""

    def __init__(self, kernel_size, stride, padding):
        super().__init__()
        self.pad = ops.Pad(((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else None
        self.pool = ops.AvgPool(kernel_size=kernel_size, strides=stride, pad_mode="VALID")

    def construct(self, x):
        if self.pad is not None:
            x = self.pad(x)
        return self.pool(x)


def _stage_avg_pool(pool):
    prim = pool.avg_pool
    pads = tuple(prim.attrs.get("pad_list", prim.attrs.get("pad", (0,))))
    if len(set(pads[-4:])) != 1 or prim.attrs.get("ceil_mode") or not prim.attrs.get("count_include_pad", True):
        raise NotImplementedError(f"unsupported stage avg-pool {pool}")
    return StageAvgPool(_kernel(pool.kernel_size), _kernel(pool.stride), int(pads[-1]))


class FusedDlaBottle2neck(FusedBottle2neck):
    """DLA's bottleneck: the shortcut comes from the tree (``construct(x, shortcut)``)."""

    def __init__(self, block, stage_convs="merged"):
        super().__init__(block, shortcut=None, stage_convs=stage_convs)

    def construct(self, x, shortcut):
        return self.relu(self.forward_body(x) + shortcut)


class FusedAvgDownShortcut(nn.Cell):
    """v1b shortcut ``AvgPool(2, 2, ceil_mode, padding not counted) -> 1x1 conv -> BN``.

    ``AvgPool(k, k, 'same')`` pads only at the bottom/right and leaves the padding out of the
    average, which is exactly ceil_mode with ``count_include_pad=False`` for kernel == stride.
    """

    def __init__(self, pool, conv, bn):
        super().__init__()
        kernel = _kernel(pool.kernel_size)
        stride = _kernel(pool.stride)
        prim = getattr(pool, "avg_pool", None)
        pads = tuple(prim.attrs.get("pad_list", prim.attrs.get("pad", ()))) if prim is not None else ()
        ceil_mode = bool(prim.attrs.get("ceil_mode", False)) if prim is not None else False
        count_pad = bool(prim.attrs.get("count_include_pad", True)) if prim is not None else True
        if kernel != stride or any(pads) or (ceil_mode and count_pad):
            raise NotImplementedError(f"avg-pool shortcut {pool}: only kernel == stride, no padding and, with "
                                      f"ceil_mode, count_include_pad=False are handled")
        self.pool = ops.AvgPool(kernel_size=kernel, strides=stride, pad_mode="SAME" if ceil_mode else "VALID")
        self.conv = FusedConv.from_conv_bn(conv, bn)

    def construct(self, x):
        return self.conv(self.pool(x))


def _fuse_shortcut(down_sample):
    if down_sample is None:
        return None
    cells = list(down_sample.cells()) if isinstance(down_sample, nn.SequentialCell) else [down_sample]
    if len(cells) == 2 and isinstance(cells[0], nn.Conv2d) and isinstance(cells[1], nn.BatchNorm2d):
        return FusedConv.from_conv_bn(cells[0], cells[1])
    if (len(cells) == 3 and isinstance(cells[0], nn.AvgPool2d) and isinstance(cells[1], nn.Conv2d)
            and isinstance(cells[2], nn.BatchNorm2d)):
        return FusedAvgDownShortcut(*cells)
    raise NotImplementedError(f"unsupported shortcut: {down_sample}")


def _fuse_conv_sequence(seq):
    """``SequentialCell`` of Conv2d [BatchNorm2d] [ReLU] ... -> a ``SequentialCell`` of ``FusedConv``."""
    cells = list(seq.cells()) if isinstance(seq, nn.SequentialCell) else [seq]
    fused = []
    i = 0
    while i < len(cells):
        conv = cells[i]
        if not isinstance(conv, nn.Conv2d):
            raise NotImplementedError(f"unexpected cell {type(conv).__name__} in {type(seq).__name__}")
        i += 1
        bn = None
        if i < len(cells) and isinstance(cells[i], nn.BatchNorm2d):
            bn = cells[i]
            i += 1
        relu = i < len(cells) and isinstance(cells[i], nn.ReLU)
        if relu:
            i += 1
        fused.append(FusedConv.from_conv_bn(conv, bn, relu=relu))
    return fused


# ------------------------------------------------------------------------------------------------
# whole networks
# ------------------------------------------------------------------------------------------------

def _copy_head(fused, net):
    """Set ``fused``'s head and attributes from ``net``: a copy of its global pool and classifier
    (no dropout: eval only), ``num_classes``, ``num_features``, ``feature_info``, ``features_only``,
    ``out_indices`` and ``default_cfg``."""
    for name in ("num_classes", "num_features", "num_pooled_features", "feature_info"):
        if hasattr(net, name):
            setattr(fused, name, copy.deepcopy(getattr(net, name)))
    cfg = getattr(net, "default_cfg", None)
    if cfg is not None:
        fused.default_cfg = copy.deepcopy(cfg)
    fused.features_only = bool(net.features_only)
    fused.out_indices = tuple(net.out_indices)
    fused.global_pool, fused.head_drop, fused.classifier = None, None, None
    if net.features_only:
        return
    fused.global_pool = SelectAdaptivePool2d(net.global_pool.pool_type)
    if net.classifier is not None:
        dense = net.classifier
        fused.classifier = nn.Dense(dense.in_channels, dense.out_channels, has_bias=dense.has_bias,
                                    weight_init=Tensor(dense.weight.asnumpy()),
                                    bias_init=Tensor(dense.bias.asnumpy()) if dense.has_bias else "zeros")


class FusedRes2Net(ClassifierNet):
    """Eval-only ``Res2Net`` (Res2Net, Res2NeXt, v1b) with BN folded and merged stage convs."""

    feature_stages = (("stem",), ("max_pool", "layer1"), ("layer2",), ("layer3",), ("layer4",))

    def __init__(self, net, stage_convs="merged"):
        super().__init__()
        if isinstance(net.conv1, nn.SequentialCell):  # v1b deep stem: the last conv's BN is bn1
            stem = _fuse_conv_sequence(net.conv1)
            last_conv = list(net.conv1.cells())[-1]
            stem[-1] = FusedConv.from_conv_bn(last_conv, net.bn1, relu=True)
        else:
            stem = [FusedConv.from_conv_bn(net.conv1, net.bn1, relu=True)]
        self.stem = nn.SequentialCell(stem)
        mp = net.max_pool
        self.max_pool = StemMaxPool(_kernel(mp.kernel_size)[0], _kernel(mp.stride)[0], _max_pool_padding(mp))
        layers = []
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            blocks = [FusedBottle2neck(b, _fuse_shortcut(b.down_sample), stage_convs) for b in layer.cells()]
            layers.append(nn.SequentialCell(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        _copy_head(self, net)


def _max_pool_padding(pool):
    """The symmetric H/W padding of an ``nn.MaxPool2d`` (0 for 'valid')."""
    mode = str(getattr(pool, "pad_mode", "VALID")).upper()
    if mode == "VALID":
        return 0
    pad = getattr(pool, "padding", 0)
    if isinstance(pad, (tuple, list)):
        if len(set(pad[-2:])) != 1:
            raise NotImplementedError(f"asymmetric max-pool padding {pad}")
        pad = pad[-1]
    if mode == "PAD":
        return int(pad)
    raise NotImplementedError(f"max-pool pad_mode {mode}")


class FusedDlaRoot(nn.Cell):
    def __init__(self, root):
        super().__init__()
        self.conv = FusedConv.from_conv_bn(root.conv, root.bn, relu=True)

    def construct(self, children):
        return self.conv(ops.cat(children, 1))


class FusedDlaTree(DlaTreeBase):
    def __init__(self, tree, stage_convs="merged"):
        super().__init__()
        self.levels = int(tree.levels)
        self.level_root = bool(tree.level_root)
        self.down_sample = None
        if tree.down_sample is not None:
            k = _kernel(tree.down_sample.kernel_size)
            s = _kernel(tree.down_sample.stride)
            self.down_sample = ops.MaxPool(kernel_size=k, strides=s, pad_mode="VALID")
        self.project = None
        self.root = None
        if self.levels == 1:
            self.tree1 = FusedDlaBottle2neck(tree.tree1, stage_convs)
            self.tree2 = FusedDlaBottle2neck(tree.tree2, stage_convs)
            if tree.project is not None:
                self.project = _fuse_shortcut(tree.project)
            self.root = FusedDlaRoot(tree.root)
        else:
            self.tree1 = FusedDlaTree(tree.tree1, stage_convs)
            self.tree2 = FusedDlaTree(tree.tree2, stage_convs)


class FusedRes2NetDLA(ClassifierNet):
    """Eval-only ``Res2NetDLA`` with BN folded and merged stage convs."""

    feature_stages = Res2NetDLA.feature_stages
    input_multiple = Res2NetDLA.input_multiple

    def __init__(self, net, stage_convs="merged"):
        super().__init__()
        self.base_layer = nn.SequentialCell(_fuse_conv_sequence(net.base_layer))
        self.level0 = nn.SequentialCell(_fuse_conv_sequence(net.level0))
        self.level1 = nn.SequentialCell(_fuse_conv_sequence(net.level1))
        self.level2 = FusedDlaTree(net.level2, stage_convs)
        self.level3 = FusedDlaTree(net.level3, stage_convs)
        self.level4 = FusedDlaTree(net.level4, stage_convs)
        self.level5 = FusedDlaTree(net.level5, stage_convs)
        _copy_head(self, net)


def optimize_for_inference(net, stage_convs="merged"):
    """An eval-only copy of ``net`` (a Res2Net / Res2NeXt / v1b / DLA model from ``create_model``)
    with BatchNorm folded into the convolutions and each stage block's 3x3 convolutions (and its
    avg-pool) merged into one grouped convolution. ``net`` itself is not changed.

    ``stage_convs``: ``"merged"`` (default), ``"grouped"`` or ``"separate"`` (see the module
    docstring); all three compute the same function.

    The result computes the same outputs as ``net`` in eval mode (float32: within ~1e-6 relative),
    in graph and PyNative mode, and exports with ``mindspore.export`` to MINDIR and ONNX.
    An already optimised network is returned as it is.
    """
    if isinstance(net, (FusedRes2Net, FusedRes2NetDLA)):
        return net
    if isinstance(net, Res2Net):
        fused = FusedRes2Net(net, stage_convs)
    elif isinstance(net, Res2NetDLA):
        fused = FusedRes2NetDLA(net, stage_convs)
    else:
        raise TypeError(f"optimize_for_inference: expected a Res2Net or Res2NetDLA model from create_model, "
                        f"got {type(net).__name__}")
    fused.set_train(False)
    return fused
