"""The model registry: every variant, its configuration and its published weights, in one place.

A model module registers each variant once::

    register_model(Res2Net, name="res2net50", aliases=("res2net50_26w_4s",), cfg=_cfg(
        (3, 4, 6, 3), base_width=26, scale=4, timm_name="res2net50_26w_4s",
        weights=(mindcv("res2net50-f42cf71b.ckpt", 79.35, 94.64), ...)))

and everything else reads it: ``create_model`` and ``list_models`` (names, aliases, which have
weights), ``pretrained`` (where the weights are and how to check them), ``convert`` (which
variant a PyTorch state dict belongs to, from ``ModelCfg.arch``), ``benchmark.py`` (its table
order is the registration order) and ``mindcv_res2net/benchmark/torch_models.py`` (the PyTorch reference of each
``ModelCfg.family`` and timm's name). ``@register_model`` on a plain function (its name is the
model's) registers a model without a config, as in earlier versions.

This module holds data only: it imports nothing else of the package.
"""
import fnmatch
import functools
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

APACHE = "Apache-2.0"
CC_BY_NC_SA = "CC BY-NC-SA 4.0 (non-commercial; converted locally from the user's download, never redistributed)"

MINDCV_BASE = "https://download.mindspore.cn/toolkits/mindcv/res2net/"
MINDCV_BASE_910V2 = "https://download-mindspore.osinfra.cn/toolkits/mindcv/res2net/"
# The paper's authors first served their files over plain http (mc.nankai.edu.cn,
# data.kaizhao.net); Res2Net/Res2Net-PretrainedModels now points every model at the same files
# (same names, same hash prefixes) in this https bucket.
OSS_BASE = "https://shanghuagao.oss-cn-beijing.aliyuncs.com/res2net/"
TIMM_GITHUB_BASE = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-res2net/"
HF_BASE = "https://huggingface.co/"


@dataclass(frozen=True)
class WeightSource:
    """One downloadable weights file."""

    tag: str                 # 'mindcv', 'mindcv_910v2', 'official', 'timm', 'timm_legacy'
    url: str
    filename: str            # its name in the cache and on a mirror
    fmt: str                 # 'ckpt' (MindSpore), 'pth' (PyTorch pickle), 'safetensors'
    sha256: str = None       # all 64 hex digits where published; else the prefix published in the file name
    size: int = None         # bytes, where published
    top1: float = None       # published ImageNet-1k top-1 / top-5 (%) at 224 px
    top5: float = None
    licence: str = APACHE
    origin: str = ""         # the model's name at the source
    notes: str = ""


# ---- the publishers: one helper each --------------------------------------------------------

def _name_and_hash(filename):
    """``res2net50-f42cf71b.ckpt`` -> ``('res2net50', 'f42cf71b')``: the publishers put the first
    8 hex digits of the file's SHA-256 in its name (a prefix, not the full hash)."""
    stem, digest = filename.split("-")[:2]
    return stem, digest.split(".")[0]


def mindcv(filename, top1, top5, origin=None, tag="mindcv"):
    """MindCV's MindSpore checkpoint (Apache-2.0, loaded unchanged); ``tag='mindcv_910v2'`` for the
    files trained on Ascend 910*."""
    stem, digest = _name_and_hash(filename)
    base, notes = (MINDCV_BASE_910V2, "MindCV, 8x Ascend 910*") if tag == "mindcv_910v2" else \
        (MINDCV_BASE, "MindCV, 8x Ascend 910")
    return WeightSource(tag, base + filename, filename, "ckpt", digest, None, top1, top5, APACHE, origin or stem,
                        notes)


def official(filename, top1, top5, origin=None):
    """The paper's PyTorch release (Res2Net/Res2Net-PretrainedModels, CC BY-NC-SA 4.0)."""
    stem, digest = _name_and_hash(filename)
    return WeightSource("official", OSS_BASE + filename, filename, "pth", digest, None, top1, top5, CC_BY_NC_SA,
                        origin or stem, "the paper's PyTorch release (Res2Net/Res2Net-PretrainedModels)")


def timm_hub(hub_name, top1, top5):
    """timm's copy of the official weights on the Hugging Face hub (safetensors, no published hash)."""
    return WeightSource("timm", f"{HF_BASE}timm/{hub_name}/resolve/main/model.safetensors",
                        f"{hub_name}.safetensors", "safetensors", None, None, top1, top5, CC_BY_NC_SA,
                        f"timm/{hub_name}", "timm's copy of the official weights (no published hash: the first "
                        "download's SHA-256 is recorded and checked from then on)")


def timm_github(filename, top1, top5, origin=None):
    """timm's GitHub release copy of an official file."""
    stem, digest = _name_and_hash(filename)
    return WeightSource("timm_legacy", TIMM_GITHUB_BASE + filename, filename, "pth", digest, None, top1, top5,
                        CC_BY_NC_SA, origin or stem, "timm's GitHub copy of the official file")


def official_release(hub_name, filename, top1, top5, origin=None, timm_origin=None):
    """The three copies of one official file, in order of preference: timm's Hugging Face copy,
    the paper's release and timm's GitHub copy (``timm_origin``: the model's name there, if not
    ``origin``)."""
    return (timm_hub(hub_name, top1, top5), official(filename, top1, top5, origin=origin),
            timm_github(filename, top1, top5, origin=timm_origin or origin))


# ---- a variant's configuration ----------------------------------------------------------------

class _ReadOnlyDict(dict):
    """A dict that refuses changes: a registered config is shared by every model built from it.
    (Copies and pickles are plain reconstructions.)"""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a registered ModelCfg is read-only: use dataclasses.replace(cfg, arch={...})")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):
        return type(self), (dict(self),)


@dataclass(frozen=True)
class ModelCfg:
    """Everything about one registered variant.

    ``family`` names the architecture ``arch`` describes ('res2net', 'res2net_dla'; '' for a model
    registered without one): the converter and the PyTorch reference know these families.
    ``arch`` holds the builder's keyword arguments that make this variant (all of them, defaults
    included). ``weights``: the published files, the preferred publisher first. ``timm_name``:
    timm's name for the same architecture (None: timm has none). ``input_multiple``: the input's height
    and width must be multiples of it (DLA's aggregation nodes line up only at multiples of 32).
    """

    family: str = ""
    arch: Mapping = field(default_factory=dict)
    weights: Tuple[WeightSource, ...] = ()
    timm_name: Optional[str] = None
    num_classes: int = 1000
    input_size: tuple = (3, 224, 224)
    pool_size: tuple = (7, 7)
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    first_conv: str = "conv1"
    classifier: str = "classifier"
    input_multiple: int = 1

    def __post_init__(self):
        object.__setattr__(self, "arch", _ReadOnlyDict(self.arch))
        object.__setattr__(self, "weights", tuple(self.weights))

    def default_cfg(self):
        """The ``net.default_cfg`` entries of a model built from this config (preprocessing, head)."""
        return {"num_classes": self.num_classes, "input_size": tuple(self.input_size),
                "pool_size": tuple(self.pool_size), "crop_pct": self.crop_pct,
                "interpolation": self.interpolation, "mean": tuple(self.mean), "std": tuple(self.std),
                "first_conv": self.first_conv, "classifier": self.classifier}


_ENTRYPOINTS = {}  # name -> builder, in registration order
_CFGS = {}         # name -> ModelCfg
_ALIASES = {}      # alias -> name (e.g. timm's names for the same architectures)


def register_model(fn=None, *, name=None, cfg=None, aliases=()):
    """Register the builder ``fn`` as the model ``name`` (default: ``fn.__name__``), built with
    ``fn(**cfg.arch, **kwargs)``, and its ``aliases``. Returns ``fn``, so it also works as
    ``@register_model`` or ``@register_model(cfg=..., aliases=...)``. A name or alias that is
    already taken raises ``ValueError``."""
    if fn is None:
        return functools.partial(register_model, name=name, cfg=cfg, aliases=aliases)
    name = name or fn.__name__
    cfg = ModelCfg() if cfg is None else cfg
    if not isinstance(cfg, ModelCfg):
        raise TypeError(f"cfg of {name!r} must be a ModelCfg, got {type(cfg).__name__}")
    aliases = (aliases,) if isinstance(aliases, str) else tuple(aliases)
    names = (name,) + aliases
    taken = [n for n in names if n in _ENTRYPOINTS or n in _ALIASES]
    if taken:
        raise ValueError(f"model name {taken[0]!r} is already registered")
    if len(set(names)) != len(names):
        raise ValueError(f"model {name!r}: a name repeats in {names}")
    _ENTRYPOINTS[name] = fn
    _CFGS[name] = cfg
    for alias in aliases:
        _ALIASES[alias] = name
    return fn


def unregister_model(name):
    """Remove the model ``name`` (or the model an alias names) with all its aliases."""
    canonical = resolve_name(name)
    if canonical not in _ENTRYPOINTS:
        raise KeyError(name)
    del _ENTRYPOINTS[canonical], _CFGS[canonical]
    for alias in [a for a, n in _ALIASES.items() if n == canonical]:
        del _ALIASES[alias]


def resolve_name(name):
    """The canonical registered name for ``name`` or one of its aliases."""
    return _ALIASES.get(name, name)


def is_model(name):
    return resolve_name(name) in _ENTRYPOINTS


def get_model_cfg(name):
    """The ``ModelCfg`` of a model or alias (``KeyError`` if none is registered)."""
    return _CFGS[resolve_name(name)]


def model_entrypoint(name):
    """A callable building ``name``: the registered builder with the variant's ``arch`` bound."""
    canonical = resolve_name(name)
    fn, arch = _ENTRYPOINTS[canonical], _CFGS[canonical].arch
    return functools.partial(fn, **arch) if arch else fn


def list_models(pattern=None, pretrained=False, include_aliases=True, sort=True):
    """Model names, optionally filtered by a shell-style ``pattern`` and by published weights.

    Sorted by name; with ``sort=False`` in registration order (models, then aliases)."""
    names = list(_ENTRYPOINTS)
    if include_aliases:
        names += list(_ALIASES)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if pretrained:
        names = [n for n in names if _CFGS[resolve_name(n)].weights]
    return sorted(names) if sort else names
