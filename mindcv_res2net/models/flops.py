"""Analytical multiply-accumulate count (MACs) of a MindSpore network.

``count_macs(net, input_size=(3, 224, 224))`` counts, for one image, the MACs of every
convolution and fully connected layer -- the convention of the Res2Net paper's and timm's tables
("conv + fc"; BatchNorm, ReLU, pooling, additions and biases are not counted):

* ``nn.Conv2d``: ``out_h * out_w * out_channels * (in_channels / groups) * k_h * k_w``
* ``nn.Dense``:  ``in_channels * out_channels``

The shapes come from the network's own forward pass, run once in PyNative mode with batch 1, so
any cell structure (Res2Net, v1b, Res2NeXt, DLA trees, AMP wrappers, ``optimize_for_inference``
outputs) is handled without a model-specific walker. With ``method="shapes"`` (the default) every
convolution and Dense layer is replaced, for the duration of the call, by a stub that computes
its output *shape* from the layer's attributes (kernel, stride, padding mode, padding, dilation)
and returns zeros of that shape, and BatchNorm layers pass their input through; only the cheap
parameter-free operations (pooling, ReLU, additions, concatenations) really run, and no weight is
read, so the network may even be built under ``mindspore.nn.utils.no_init_parameters()``.
``method="hooks"`` runs the real layers and reads the shapes with
``Cell.register_forward_hook`` (available in PyNative mode in MindSpore 2.8); it is slower and is
kept as a cross-check of the stub's shape arithmetic.

The network's execution mode, training flag and layers are restored afterwards.
"""
import math

import numpy as np

from ..errors import UserError

__all__ = ["count_macs", "conv_macs", "dense_macs", "conv_output_hw"]


def _pair(value):
    if isinstance(value, (tuple, list)):
        value = tuple(int(v) for v in value)
        return value[-2:] if len(value) >= 2 else (value[0], value[0])
    return int(value), int(value)


def _pads(conv):
    """(top, bottom, left, right) padding of a ``pad_mode='pad'`` convolution."""
    pad = conv.padding
    if isinstance(pad, (tuple, list)):
        pad = tuple(int(p) for p in pad)
        if len(pad) == 4:
            return pad
        if len(pad) == 2:
            return pad[0], pad[0], pad[1], pad[1]
        return (pad[0],) * 4
    return (int(pad),) * 4


def conv_output_hw(conv, in_h, in_w):
    """Output height and width of ``nn.Conv2d`` ``conv`` for an input of ``in_h x in_w``."""
    kh, kw = _pair(conv.kernel_size)
    sh, sw = _pair(conv.stride)
    dh, dw = _pair(conv.dilation)
    mode = str(conv.pad_mode).lower()
    if mode == "same":
        return -(-in_h // sh), -(-in_w // sw)
    top, bottom, left, right = _pads(conv) if mode == "pad" else (0, 0, 0, 0)
    out_h = (in_h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    out_w = (in_w + left + right - dw * (kw - 1) - 1) // sw + 1
    return out_h, out_w


def conv_macs(conv, out_h, out_w):
    kh, kw = _pair(conv.kernel_size)
    return int(out_h * out_w * conv.out_channels * (conv.in_channels // conv.group) * kh * kw)


def dense_macs(dense):
    return int(dense.in_channels * dense.out_channels)


def _spatial_axes(conv):
    return (1, 2) if str(getattr(conv, "data_format", "NCHW")).upper() == "NHWC" else (2, 3)


def _conv_stub(conv, record):
    from mindspore import ops

    def construct(x, *args):
        ha, wa = _spatial_axes(conv)
        out_h, out_w = conv_output_hw(conv, int(x.shape[ha]), int(x.shape[wa]))
        if out_h <= 0 or out_w <= 0:
            raise UserError(f"input too small for count_macs: a {tuple(conv.kernel_size)} convolution "
                            f"gets {int(x.shape[ha])}x{int(x.shape[wa])} px. Use a larger input_size")
        record.append(("conv", conv_macs(conv, out_h, out_w)))
        shape = [int(x.shape[0]), conv.out_channels, out_h, out_w]
        if (ha, wa) == (1, 2):
            shape = [shape[0], out_h, out_w, conv.out_channels]
        return ops.zeros(tuple(shape), x.dtype)

    return construct


def _dense_stub(dense, record):
    from mindspore import ops

    def construct(x, *args):
        record.append(("dense", dense_macs(dense)))
        return ops.zeros(tuple(x.shape[:-1]) + (dense.out_channels,), x.dtype)

    return construct


def _shape_preserving(nn):
    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _identity(x, *args):
    return x


def count_macs(net, input_size=(3, 224, 224), method="shapes", detail=False):
    """MACs of one forward pass of ``net`` on one image of ``input_size`` (C, H, W).

    Returns an int; with ``detail=True`` a dict ``{"total", "conv", "dense", "layers"}``.
    ``method``: ``"shapes"`` (stubs, fast; default) or ``"hooks"`` (real forward with
    ``register_forward_hook``). See the module docstring for the counting convention.
    """
    import mindspore as ms
    from mindspore import nn

    if method not in ("shapes", "hooks"):
        raise ValueError(f"count_macs: method must be 'shapes' or 'hooks', got {method!r}")
    input_size = tuple(int(v) for v in input_size)
    if len(input_size) != 3 or min(input_size) <= 0:
        raise UserError(f"input_size must be (channels, height, width) with positive values: {input_size}")

    record = []
    layers = [cell for _, cell in net.cells_and_names() if isinstance(cell, (nn.Conv2d, nn.Dense))]
    handles, stubbed = [], []
    old_mode = ms.get_context("mode")
    was_training = bool(getattr(net, "training", False))
    try:
        if old_mode != ms.PYNATIVE_MODE:
            ms.set_context(mode=ms.PYNATIVE_MODE)
        net.set_train(False)
        if method == "shapes":
            norms = [cell for _, cell in net.cells_and_names() if isinstance(cell, _shape_preserving(nn))]
            for cell in layers + norms:
                if isinstance(cell, nn.Conv2d):
                    stub = _conv_stub(cell, record)
                elif isinstance(cell, nn.Dense):
                    stub = _dense_stub(cell, record)
                else:
                    stub = _identity
                object.__setattr__(cell, "construct", stub)
                # the stubs read no weights: skip PyNative's first-call parameter initialisation
                # (matters for networks built under mindspore.nn.utils.no_init_parameters)
                stubbed.append((cell, cell.__dict__.get("_init_flag", False)))
                object.__setattr__(cell, "_init_flag", True)
        else:
            def hook(cell, inputs, output):
                if isinstance(cell, nn.Conv2d):
                    ha, wa = _spatial_axes(cell)
                    record.append(("conv", conv_macs(cell, int(output.shape[ha]), int(output.shape[wa]))))
                else:
                    record.append(("dense", dense_macs(cell)))
            handles = [cell.register_forward_hook(hook) for cell in layers]
        x = ms.Tensor(np.zeros((1,) + input_size, np.float32))
        net(x)
    finally:
        for cell, init_flag in stubbed:
            cell.__dict__.pop("construct", None)
            object.__setattr__(cell, "_init_flag", init_flag)
        for handle in handles:
            handle.remove()
        net.set_train(was_training)
        if old_mode != ms.PYNATIVE_MODE:
            ms.set_context(mode=old_mode)

    conv = sum(m for kind, m in record if kind == "conv")
    dense = sum(m for kind, m in record if kind == "dense")
    if not detail:
        return int(conv + dense)
    return {"total": int(conv + dense), "conv": int(conv), "dense": int(dense), "layers": len(record)}
