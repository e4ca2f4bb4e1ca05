"""``create_model``: build any registered Res2Net variant, optionally with weights."""
import difflib

from ..weights.model_loading import load_model_weights
from ..errors import UserError
from .layers import POOL_TYPES
from ..weights.pretrained import get_pretrained_cfg, load_pretrained
from .registry import get_model_cfg, is_model, list_models, model_entrypoint, resolve_name


def _default_cfg(name, num_classes, in_channels):
    """``net.default_cfg`` of the registered model ``name``: its preprocessing and head entries, the
    architecture, the classes and input channels asked for, and its published weights."""
    cfg = get_model_cfg(name)
    out = cfg.default_cfg()
    out["architecture"] = name
    out["num_classes"] = num_classes
    out["input_size"] = (in_channels,) + tuple(out["input_size"][1:])
    out["weights"] = get_pretrained_cfg(name) if cfg.weights else {}
    return out


def check_model_name(name):
    """Raise ``UserError`` (with the closest names) unless ``name`` is a model or alias of the zoo."""
    if not is_model(name):
        close = difflib.get_close_matches(str(name), list_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown model {name!r}.{hint} See mindcv_res2net.list_models() for all names.")


def create_model(name, pretrained=False, num_classes=1000, in_channels=3, checkpoint_path=None,
                 drop_rate=0.0, drop_path_rate=0.0, global_pool="avg", features_only=False,
                 out_indices=None, **kwargs):
    """Build the model ``name`` (see ``list_models()``).

    Args:
        pretrained: load the published weights (downloaded and hash-checked into the cache).
        num_classes: classifier outputs; 0 returns pooled features [B, num_features].
        in_channels: input channels; pretrained weights are adapted (1 channel sums the first conv).
        checkpoint_path: a MindSpore checkpoint (ours or MindCV's) loaded strictly after building.
        drop_rate: dropout before the classifier. drop_path_rate: stochastic depth.
        global_pool: 'avg', 'max', 'avgmax', 'catavgmax' or '' (unpooled; needs num_classes=0).
        features_only, out_indices: return feature maps instead of logits.
        **kwargs: passed to the model (e.g. ``zero_init_last=True``).
    """
    check_model_name(name)
    if num_classes is None or int(num_classes) < 0:
        raise UserError(f"num_classes must be >= 0, got {num_classes!r}")
    if int(in_channels) <= 0:
        raise UserError(f"in_channels must be > 0, got {in_channels!r}")
    if global_pool not in POOL_TYPES:
        raise UserError(f"unknown global_pool {global_pool!r}: choose one of {', '.join(map(repr, POOL_TYPES))}")
    canonical = resolve_name(name)
    net = model_entrypoint(canonical)(
        num_classes=int(num_classes), in_channels=int(in_channels), drop_rate=drop_rate,
        drop_path_rate=drop_path_rate, global_pool=global_pool, features_only=features_only,
        out_indices=out_indices, **kwargs)
    net.default_cfg = _default_cfg(canonical, int(num_classes), int(in_channels))
    if pretrained:
        load_pretrained(net, canonical, num_classes=int(num_classes), in_channels=int(in_channels))
    if checkpoint_path:
        load_model_weights(net, checkpoint_path, strict=True, num_classes=int(num_classes),
                           in_channels=int(in_channels))
    return net
