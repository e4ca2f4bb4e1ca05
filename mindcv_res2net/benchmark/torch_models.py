"""A compact PyTorch (``torch.nn``) Res2Net family, the ``torch`` reference of ``benchmark.py``.

timm needs torchvision, which this toolkit does not install; this module gives the benchmark a
PyTorch implementation of every registered model to time against, written from the published
architecture (official Res2Net release = timm), with the official / timm state-dict keys
(``conv1``, ``bn1``, ``layer1.0.convs.0``, ``downsample``, ``fc`` ...; DLA: ``base_layer``,
``level2.tree1``, ``root``, ``project``, a 1x1-conv ``fc``) so that timm-layout state dicts load
with ``strict=True``. The DLA models use timm's layout (no unused ``project`` layers).

The variants are the registry's (``mindcv_res2net.models.registry``): a model is built from its
``ModelCfg.arch`` by the class of its ``ModelCfg.family``, so ``create_torch_model`` accepts exactly
the names and aliases ``create_model`` accepts. ``TORCH_ARCHS`` (name -> family and arguments) and
``TIMM_NAMES`` (name -> timm's name or None) are read-only views of the registry.

Importing this module needs torch (an optional dependency: ``python benchmark.py --compare torch``
imports it only then).
"""
import math
from collections.abc import Mapping

import torch
from torch import nn

from mindcv_res2net.models.registry import get_model_cfg, is_model, list_models, resolve_name

__all__ = ["create_torch_model", "TorchRes2Net", "TorchRes2NetDLA", "TorchBottle2neck", "TORCH_ARCHS",
           "TIMM_NAMES"]


def _bn(ch):
    return nn.BatchNorm2d(ch, eps=1e-5, momentum=0.1)


class TorchBottle2neck(nn.Module):
    """Res2Net bottleneck; ``forward(x, shortcut=None)`` (DLA passes its own shortcut)."""

    def __init__(self, in_ch, width, out_ch, scale=4, cardinality=1, stride=1, is_stage=False, downsample=None):
        super().__init__()
        self.width, self.scale, self.is_stage = width, scale, is_stage
        self.nums = max(1, scale - 1)
        self.conv1 = nn.Conv2d(in_ch, width * scale, 1, bias=False)
        self.bn1 = _bn(width * scale)
        self.convs = nn.ModuleList([nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
                                    for _ in range(self.nums)])
        self.bns = nn.ModuleList([_bn(width) for _ in range(self.nums)])
        self.pool = nn.AvgPool2d(3, stride, 1) if is_stage and scale > 1 else None
        self.conv3 = nn.Conv2d(width * scale, out_ch, 1, bias=False)
        self.bn3 = _bn(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x, shortcut=None):
        if shortcut is None:
            shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        chunks = torch.split(out, self.width, 1)
        outs = []
        sp = chunks[0]
        for i in range(self.nums):
            if i > 0:
                sp = chunks[i] if self.is_stage else sp + chunks[i]
            sp = self.relu(self.bns[i](self.convs[i](sp)))
            outs.append(sp)
        if self.scale > 1:
            last = chunks[self.nums]
            outs.append(self.pool(last) if self.pool is not None else last)
        out = self.bn3(self.conv3(torch.cat(outs, 1)))
        return self.relu(out + shortcut)


class TorchRes2Net(nn.Module):
    """Res2Net / Res2NeXt; ``deep_stem`` and ``avg_down`` together make v1b (timm's ``res2net50d``)."""

    def __init__(self, layers, base_width=26, scale=4, cardinality=1, deep_stem=False, avg_down=False,
                 num_classes=1000, in_chans=3):
        super().__init__()
        if deep_stem:
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_chans, 32, 3, 2, 1, bias=False), _bn(32), nn.ReLU(inplace=True),
                nn.Conv2d(32, 32, 3, 1, 1, bias=False), _bn(32), nn.ReLU(inplace=True),
                nn.Conv2d(32, 64, 3, 1, 1, bias=False))
        else:
            self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = _bn(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = 64
        for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if stage == 0 else 2
            out_ch = planes * 4
            width = int(math.floor(planes * base_width / 64.0)) * cardinality
            if avg_down:  # timm's layout: the (parameter-free) pool is at index 0 in every stage
                down = nn.Sequential(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
                                     nn.Conv2d(in_ch, out_ch, 1, bias=False), _bn(out_ch))
            else:
                down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), _bn(out_ch))
            mods = [TorchBottle2neck(in_ch, width, out_ch, scale, cardinality, stride, True, down)]
            mods += [TorchBottle2neck(out_ch, width, out_ch, scale, cardinality) for _ in range(blocks - 1)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*mods))
            in_ch = out_ch
        self.fc = nn.Linear(2048, num_classes) if num_classes else None
        _init(self)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = x.mean((2, 3))
        return x if self.fc is None else self.fc(x)


class _DlaRoot(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn = _bn(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, children):
        return self.relu(self.bn(self.conv(torch.cat(children, 1))))


class _DlaTree(nn.Module):
    def __init__(self, levels, in_ch, out_ch, stride, spec, level_root=False, root_dim=0):
        super().__init__()
        root_dim = root_dim or 2 * out_ch
        if level_root:
            root_dim += in_ch
        self.levels, self.level_root = levels, level_root
        self.downsample = nn.MaxPool2d(stride, stride) if stride > 1 else None
        self.project = None
        if levels == 1:
            mid = int(math.floor(out_ch * spec["base_width"] / 64.0) * spec["cardinality"]) // 2
            kw = dict(scale=spec["scale"], cardinality=spec["cardinality"])
            self.tree1 = TorchBottle2neck(in_ch, mid, out_ch, stride=stride, is_stage=stride > 1, **kw)
            self.tree2 = TorchBottle2neck(out_ch, mid, out_ch, **kw)
            if in_ch != out_ch:
                self.project = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), _bn(out_ch))
            self.root = _DlaRoot(root_dim, out_ch)
        else:
            self.tree1 = _DlaTree(levels - 1, in_ch, out_ch, stride, spec)
            self.tree2 = _DlaTree(levels - 1, out_ch, out_ch, 1, spec, root_dim=root_dim + out_ch)

    def forward(self, x, children=None):
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample is not None else x
        if self.level_root:
            children.append(bottom)
        if self.levels == 1:
            shortcut = self.project(bottom) if self.project is not None else bottom
            x1 = self.tree1(x, shortcut)
            x2 = self.tree2(x1, x1)
            return self.root([x2, x1] + children)
        x1 = self.tree1(x)
        children.append(x1)
        return self.tree2(x1, children)


class TorchRes2NetDLA(nn.Module):
    def __init__(self, levels=(1, 1, 1, 2, 3, 1), channels=(16, 32, 128, 256, 512, 1024), scale=4, cardinality=1,
                 base_width=28, num_classes=1000, in_chans=3):
        super().__init__()
        spec = dict(base_width=base_width, scale=scale, cardinality=cardinality)

        def conv_bn_relu(cin, cout, k, stride=1):
            return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), _bn(cout), nn.ReLU(inplace=True)]

        self.base_layer = nn.Sequential(*conv_bn_relu(in_chans, channels[0], 7))
        self.level0 = nn.Sequential(*conv_bn_relu(channels[0], channels[0], 3))
        self.level1 = nn.Sequential(*conv_bn_relu(channels[0], channels[1], 3, 2))
        for lvl in range(2, 6):
            setattr(self, f"level{lvl}", _DlaTree(levels[lvl], channels[lvl - 1], channels[lvl], 2, spec,
                                                  level_root=lvl > 2))
        self.fc = nn.Conv2d(channels[-1], num_classes, 1, bias=True) if num_classes else None
        _init(self)

    def forward(self, x):
        x = self.level1(self.level0(self.base_layer(x)))
        for lvl in range(2, 6):
            x = getattr(self, f"level{lvl}")(x)
        x = x.mean((2, 3), keepdim=True)
        return (x if self.fc is None else self.fc(x)).flatten(1)


def _init(model):
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m is not getattr(model, "fc", None):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# the PyTorch class of each architecture family of the registry
_FAMILIES = {"res2net": TorchRes2Net, "res2net_dla": TorchRes2NetDLA}


class _RegistryView(Mapping):
    """``{registered model name: value(cfg)}`` for the models whose family has a torch class, read
    from the registry on every access (models registered later are seen; aliases are not keys)."""

    def __init__(self, value):
        self._value = value

    def _names(self):
        return [n for n in list_models(include_aliases=False, sort=False) if get_model_cfg(n).family in _FAMILIES]

    def __getitem__(self, name):
        if name not in self._names():
            raise KeyError(name)
        return self._value(get_model_cfg(name))

    def __iter__(self):
        return iter(self._names())

    def __len__(self):
        return len(self._names())


TORCH_ARCHS = _RegistryView(lambda cfg: dict(kind=cfg.family, **cfg.arch))
TIMM_NAMES = _RegistryView(lambda cfg: cfg.timm_name)  # None: timm has no such model


def create_torch_model(name, num_classes=1000, in_chans=3):
    """The ``torch.nn`` model ``name`` (a registered name or alias), randomly initialised, in train mode."""
    if not is_model(name) or resolve_name(name) not in TORCH_ARCHS:
        raise KeyError(f"no torch reference for {name!r}")
    cfg = get_model_cfg(name)
    return _FAMILIES[cfg.family](num_classes=num_classes, in_chans=in_chans, **cfg.arch)
