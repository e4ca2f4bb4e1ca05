"""An independent PyTorch reference for the Res2Net family: state-dict layouts and a forward pass
written with ``torch.nn.functional`` only (no nn.Module, no timm/torchvision).

It is written from the published architecture facts (tests/data/README.md), not from
the MindSpore models, so that comparing the two checks the converter *and* the models:

- Res2Net / Res2NeXt (official ``res2net.py`` / ``res2next.py`` = timm ``res2net50_26w_4s`` ...):
  7x7/2 stem, BN, ReLU, max-pool 3/2 pad 1; four stages of Bottle2necks; the first block of every
  stage is a "stage" block (own chunk per 3x3 conv, last chunk through AvgPool(3, stride, pad 1,
  zero padding counted)); shortcut conv1x1 (stride) + BN.
- v1b (official ``res2net_v1b.py`` = timm ``res2net50d``): deep stem 3x3/2 (32) -> 3x3 (32) ->
  3x3 (64); shortcut AvgPool(stride, stride, ceil_mode, padding not counted) -> conv1x1 -> BN, the
  pool sitting at index 0 of the shortcut Sequential (keys ``downsample.1`` / ``downsample.2``).
- DLA-60 (official ``dla.py`` / timm ``dla60_res2net``, ``dla60_res2next``): levels
  (1, 1, 1, 2, 3, 1), channels (16, 32, 128, 256, 512, 1024), DLA bottlenecks of expansion 2,
  trees with max-pool downsampling, ``project`` shortcut, 1x1 root over the concatenated
  children; classifier a 1x1 conv ``fc``. The official files also hold ``project`` layers in
  trees of level > 1 which the forward pass never uses (``layout='official'`` adds them).

Public: ``ARCHS``, ``make_state_dict(name, ...)``, ``forward(name, state_dict, x)``,
``count_learnable(state_dict)``.
"""
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F

# name -> architecture spec
ARCHS = {
    "res2net50": dict(kind="resnet", layers=(3, 4, 6, 3), base_width=26, scale=4),
    "res2net101": dict(kind="resnet", layers=(3, 4, 23, 3), base_width=26, scale=4),
    "res2net152": dict(kind="resnet", layers=(3, 8, 36, 3), base_width=26, scale=4),
    "res2net50_26w_6s": dict(kind="resnet", layers=(3, 4, 6, 3), base_width=26, scale=6),
    "res2net50_26w_8s": dict(kind="resnet", layers=(3, 4, 6, 3), base_width=26, scale=8),
    "res2net50_48w_2s": dict(kind="resnet", layers=(3, 4, 6, 3), base_width=48, scale=2),
    "res2net50_14w_8s": dict(kind="resnet", layers=(3, 4, 6, 3), base_width=14, scale=8),
    "res2next50": dict(kind="resnet", layers=(3, 4, 6, 3), base_width=4, scale=4, cardinality=8),
    "res2net50_v1b": dict(kind="resnet", layers=(3, 4, 6, 3), base_width=26, scale=4, v1b=True),
    "res2net101_v1b": dict(kind="resnet", layers=(3, 4, 23, 3), base_width=26, scale=4, v1b=True),
    "res2net152_v1b": dict(kind="resnet", layers=(3, 8, 36, 3), base_width=26, scale=4, v1b=True),
    "res2net_dla60": dict(kind="dla", base_width=28, scale=4, cardinality=1),
    "res2next_dla60": dict(kind="dla", base_width=4, scale=4, cardinality=8),
}

DLA_LEVELS = (1, 1, 1, 2, 3, 1)
DLA_CHANNELS = (16, 32, 128, 256, 512, 1024)
BN_EPS = 1e-5


# ----------------------------------------------------------------------------------------------
# state-dict layouts (keys, shapes) and random weights
# ----------------------------------------------------------------------------------------------

class _Builder:
    """Collects (key, tensor) in PyTorch's registration order with random, well-scaled values."""

    def __init__(self, seed, empty=False):
        self.gen = torch.Generator().manual_seed(seed)
        self.sd = OrderedDict()
        if empty:  # shapes only (fast): uninitialised values
            self.randn = lambda *shape, generator=None: torch.empty(*shape)
            self.rand = self.randn
        else:
            self.randn, self.rand = torch.randn, torch.rand

    def conv(self, prefix, out_ch, in_ch_per_group, k, bias=False):
        fan_in = in_ch_per_group * k * k
        w = self.randn(out_ch, in_ch_per_group, k, k, generator=self.gen) * math.sqrt(2.0 / fan_in)
        self.sd[prefix + ".weight"] = w
        if bias:
            self.sd[prefix + ".bias"] = self.randn(out_ch, generator=self.gen) * 0.1

    def bn(self, prefix, ch, gamma_scale=1.0):
        g = self.gen
        self.sd[prefix + ".weight"] = (0.5 + self.rand(ch, generator=g)) * gamma_scale   # U(0.5, 1.5)
        self.sd[prefix + ".bias"] = self.randn(ch, generator=g) * 0.1
        self.sd[prefix + ".running_mean"] = self.randn(ch, generator=g) * 0.1                # N(0, 0.1)
        self.sd[prefix + ".running_var"] = 0.5 + self.rand(ch, generator=g)                 # U(0.5, 1.5)
        self.sd[prefix + ".num_batches_tracked"] = torch.tensor(1000, dtype=torch.long)

    def linear(self, prefix, out_f, in_f):
        bound = 1.0 / math.sqrt(in_f)
        self.sd[prefix + ".weight"] = (self.rand(out_f, in_f, generator=self.gen) * 2 - 1) * bound * 4
        self.sd[prefix + ".bias"] = (self.rand(out_f, generator=self.gen) * 2 - 1) * bound


def _res2net_width(planes, base_width, cardinality):
    return int(math.floor(planes * (base_width / 64.0))) * cardinality


def _bottle2neck_keys(b, prefix, in_ch, width, scale, cardinality, out_ch, residual_gain=0.3):
    b.conv(prefix + ".conv1", width * scale, in_ch, 1)
    b.bn(prefix + ".bn1", width * scale)
    for i in range(max(1, scale - 1)):
        b.conv(f"{prefix}.convs.{i}", width, width // cardinality, 3)
    for i in range(max(1, scale - 1)):
        b.bn(f"{prefix}.bns.{i}", width)
    b.conv(prefix + ".conv3", out_ch, width * scale, 1)
    # keep the residual stream from growing too fast over 30+ blocks
    b.bn(prefix + ".bn3", out_ch, gamma_scale=residual_gain)


def _resnet_state_dict(spec, num_classes, seed, empty=False):
    b = _Builder(seed, empty)
    scale, bw, card = spec["scale"], spec["base_width"], spec.get("cardinality", 1)
    if spec.get("v1b"):
        b.conv("conv1.0", 32, 3, 3)
        b.bn("conv1.1", 32)
        b.conv("conv1.3", 32, 32, 3)
        b.bn("conv1.4", 32)
        b.conv("conv1.6", 64, 32, 3)
    else:
        b.conv("conv1", 64, 3, 7)
    b.bn("bn1", 64)
    in_ch = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), spec["layers"])):
        width = _res2net_width(planes, bw, card)
        out_ch = planes * 4
        for i in range(blocks):
            p = f"layer{stage + 1}.{i}"
            _bottle2neck_keys(b, p, in_ch, width, scale, card, out_ch)
            if i == 0:
                # the shortcut Sequential: v1b = (AvgPool, conv, BN) even in layer1, else (conv, BN)
                first = 1 if spec.get("v1b") else 0
                b.conv(f"{p}.downsample.{first}", out_ch, in_ch, 1)
                b.bn(f"{p}.downsample.{first + 1}", out_ch)
            in_ch = out_ch
    if num_classes:
        b.linear("fc", num_classes, 2048)
    return b.sd


def _dla_block_keys(b, prefix, in_ch, out_ch, spec):
    mid = int(math.floor(out_ch * (spec["base_width"] / 64.0)) * spec["cardinality"]) // 2
    _bottle2neck_keys(b, prefix, in_ch, mid, spec["scale"], spec["cardinality"], out_ch)


def _dla_tree_keys(b, prefix, levels, in_ch, out_ch, spec, level_root, root_dim, layout):
    if root_dim == 0:
        root_dim = 2 * out_ch
    if level_root:
        root_dim += in_ch
    if levels == 1:
        _dla_block_keys(b, prefix + ".tree1", in_ch, out_ch, spec)
        _dla_block_keys(b, prefix + ".tree2", out_ch, out_ch, spec)
        b.conv(prefix + ".root.conv", out_ch, root_dim, 1)
        b.bn(prefix + ".root.bn", out_ch)
    else:
        _dla_tree_keys(b, prefix + ".tree1", levels - 1, in_ch, out_ch, spec, False, 0, layout)
        _dla_tree_keys(b, prefix + ".tree2", levels - 1, out_ch, out_ch, spec, False,
                       root_dim + out_ch, layout)
    # official: a project layer in every tree whose channels change (used only when levels == 1);
    # timm keeps only the used ones
    if in_ch != out_ch and (levels == 1 or layout == "official"):
        b.conv(prefix + ".project.0", out_ch, in_ch, 1)
        b.bn(prefix + ".project.1", out_ch)


def _dla_state_dict(spec, num_classes, seed, layout, empty=False):
    b = _Builder(seed, empty)
    ch = DLA_CHANNELS
    b.conv("base_layer.0", ch[0], 3, 7)
    b.bn("base_layer.1", ch[0])
    b.conv("level0.0", ch[0], ch[0], 3)
    b.bn("level0.1", ch[0])
    b.conv("level1.0", ch[1], ch[0], 3)
    b.bn("level1.1", ch[1])
    for lvl in range(2, 6):
        _dla_tree_keys(b, f"level{lvl}", DLA_LEVELS[lvl], ch[lvl - 1], ch[lvl], spec,
                       level_root=lvl > 2, root_dim=0, layout=layout)
    if num_classes:
        b.conv("fc", num_classes, ch[-1], 1, bias=True)
    return b.sd


def make_state_dict(name, num_classes=1000, seed=0, layout="official", empty=False):
    """A random state dict with the PyTorch keys and shapes of ``name``.

    BN statistics: running mean ~ N(0, 0.1), running var ~ U(0.5, 1.5), gamma ~ U(0.5, 1.5)
    (the last BN of each residual block scaled by 0.3), beta ~ N(0, 0.1); convs He-normal.
    ``layout``: 'official' (DLA: with the unused ``project`` layers) or 'timm'.
    ``empty``: keys and shapes only, values uninitialised (fast).
    """
    spec = ARCHS[name]
    if spec["kind"] == "dla":
        return _dla_state_dict(spec, num_classes, seed, layout, empty)
    return _resnet_state_dict(spec, num_classes, seed, empty)


def count_learnable(state_dict):
    """Learnable parameters (no BN running statistics, no counters)."""
    return sum(v.numel() for k, v in state_dict.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


# ----------------------------------------------------------------------------------------------
# functional forward
# ----------------------------------------------------------------------------------------------

def _conv(sd, p, x, stride=1, padding=0, groups=1):
    return F.conv2d(x, sd[p + ".weight"], sd.get(p + ".bias"), stride=stride, padding=padding, groups=groups)


def _bn(sd, p, x):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                        sd[p + ".bias"], training=False, eps=BN_EPS)


def _bottle2neck(sd, p, x, shortcut, width, scale, cardinality, stride, is_stage):
    out = F.relu(_bn(sd, p + ".bn1", _conv(sd, p + ".conv1", x)))
    chunks = torch.split(out, width, dim=1)
    assert len(chunks) == scale, (p, len(chunks), scale)
    outs = []
    sp = None
    for i in range(max(1, scale - 1)):
        sp = chunks[i] if (i == 0 or is_stage) else sp + chunks[i]
        sp = _conv(sd, f"{p}.convs.{i}", sp, stride=stride, padding=1, groups=cardinality)
        sp = F.relu(_bn(sd, f"{p}.bns.{i}", sp))
        outs.append(sp)
    if scale > 1:
        last = chunks[scale - 1]
        if is_stage:
            last = F.avg_pool2d(last, kernel_size=3, stride=stride, padding=1, count_include_pad=True)
        outs.append(last)
    out = _bn(sd, p + ".bn3", _conv(sd, p + ".conv3", torch.cat(outs, dim=1)))
    return F.relu(out + shortcut)


def _resnet_forward(spec, sd, x):
    scale, bw, card = spec["scale"], spec["base_width"], spec.get("cardinality", 1)
    v1b = spec.get("v1b", False)
    if v1b:
        x = F.relu(_bn(sd, "conv1.1", _conv(sd, "conv1.0", x, stride=2, padding=1)))
        x = F.relu(_bn(sd, "conv1.4", _conv(sd, "conv1.3", x, padding=1)))
        x = _conv(sd, "conv1.6", x, padding=1)
    else:
        x = _conv(sd, "conv1", x, stride=2, padding=3)
    x = F.relu(_bn(sd, "bn1", x))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), spec["layers"])):
        stride = 1 if stage == 0 else 2
        width = _res2net_width(planes, bw, card)
        for i in range(blocks):
            p = f"layer{stage + 1}.{i}"
            if i == 0:
                if v1b:
                    short = x
                    if stride > 1:
                        short = F.avg_pool2d(short, kernel_size=stride, stride=stride, ceil_mode=True,
                                             count_include_pad=False)
                    short = _bn(sd, p + ".downsample.2", _conv(sd, p + ".downsample.1", short))
                else:
                    short = _bn(sd, p + ".downsample.1", _conv(sd, p + ".downsample.0", x, stride=stride))
                x = _bottle2neck(sd, p, x, short, width, scale, card, stride, is_stage=True)
            else:
                x = _bottle2neck(sd, p, x, x, width, scale, card, 1, is_stage=False)
    x = x.mean(dim=(2, 3))
    if "fc.weight" not in sd:
        return x
    return F.linear(x, sd["fc.weight"], sd["fc.bias"])


def _dla_block(sd, p, x, shortcut, in_ch, out_ch, stride, spec):
    mid = int(math.floor(out_ch * (spec["base_width"] / 64.0)) * spec["cardinality"]) // 2
    return _bottle2neck(sd, p, x, shortcut, mid, spec["scale"], spec["cardinality"], stride,
                        is_stage=stride > 1)


def _dla_tree(sd, p, x, levels, in_ch, out_ch, stride, spec, level_root, children=None):
    children = [] if children is None else children
    bottom = F.max_pool2d(x, kernel_size=stride, stride=stride) if stride > 1 else x
    if level_root:
        children.append(bottom)
    if levels == 1:
        shortcut = bottom
        if in_ch != out_ch:
            shortcut = _bn(sd, p + ".project.1", _conv(sd, p + ".project.0", bottom))
        x1 = _dla_block(sd, p + ".tree1", x, shortcut, in_ch, out_ch, stride, spec)
        x2 = _dla_block(sd, p + ".tree2", x1, x1, out_ch, out_ch, 1, spec)
        root_in = torch.cat([x2, x1] + children, dim=1)
        return F.relu(_bn(sd, p + ".root.bn", _conv(sd, p + ".root.conv", root_in)))
    x1 = _dla_tree(sd, p + ".tree1", x, levels - 1, in_ch, out_ch, stride, spec, False)
    children.append(x1)
    return _dla_tree(sd, p + ".tree2", x1, levels - 1, out_ch, out_ch, 1, spec, False, children)


def _dla_forward(spec, sd, x):
    ch = DLA_CHANNELS
    x = F.relu(_bn(sd, "base_layer.1", _conv(sd, "base_layer.0", x, padding=3)))
    x = F.relu(_bn(sd, "level0.1", _conv(sd, "level0.0", x, padding=1)))
    x = F.relu(_bn(sd, "level1.1", _conv(sd, "level1.0", x, stride=2, padding=1)))
    for lvl in range(2, 6):
        x = _dla_tree(sd, f"level{lvl}", x, DLA_LEVELS[lvl], ch[lvl - 1], ch[lvl], 2, spec,
                      level_root=lvl > 2)
    x = x.mean(dim=(2, 3), keepdim=True)
    if "fc.weight" not in sd:
        return x.flatten(1)
    return _conv(sd, "fc", x).flatten(1)


@torch.no_grad()
def forward(name, state_dict, x):
    """Logits of ``name`` (eval mode) for the NCHW float32 batch ``x`` (numpy or torch)."""
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(x)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    spec = ARCHS[name]
    if spec["kind"] == "dla":
        return _dla_forward(spec, sd, x.float())
    return _resnet_forward(spec, sd, x.float())
