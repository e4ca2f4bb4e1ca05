"""Building the model that ``predict.py`` and ``export.py`` run: create the architecture, load its
weights (a checkpoint or the published ones) and return the inference-optimised network.

- ``build_inference_model(name, ckpt_path=..., pretrained=..., ...)``: ``(optimised net, info)``;
  the number of classes and input channels default to what the checkpoint holds.
- ``check_image_size(model_or_name, size)``: the input sizes a model can take (DLA: multiples of 32).
- ``checkpoint_metadata(path)``, ``model_from_checkpoint(name, path, meta)``: what a checkpoint
  says about itself (train.py's name their model, classes and preprocessing).
- ``model_preprocessing(layers, info, ckpt_path)``: the evaluation preprocessing of a built model:
  explicit settings first, then the checkpoint's stored ones, then the model's defaults.
- ``export_labels(num_classes, stored_names)``: the training label names an exported file states.

Reading the checkpoint is ``weights/checkpoint_file.py``'s (the same wrapper prefixes as the loader);
the optimised network is ``models/inference.py``'s.
"""
from ..weights.checkpoint_file import PYTORCH_SUFFIXES, read_checkpoint, read_checkpoint_meta, strip_wrapper_prefix
from .class_names import imagenet_wordnet_ids
from ..data.transforms import EvalPreprocessing, resolve_eval_preprocessing
from ..errors import UserError
from ..models import is_model
from ..models.factory import create_model
from ..models.inference import optimize_for_inference
from ..weights.model_loading import load_model_weights
from ..weights.pretrained import load_pretrained
from ..models.registry import get_model_cfg, resolve_name

__all__ = ["build_inference_model", "check_image_size", "input_multiple", "checkpoint_metadata", "model_from_checkpoint",
           "model_preprocessing", "export_labels"]

# The classifier's parameters as the model names them (a checkpoint may add a wrapper's prefix).
_CLASSIFIER_PARAMS = ("classifier.weight", "classifier.bias")


def input_multiple(model_or_name):
    """What the model's input height and width must be a multiple of (its registry entry's
    ``input_multiple``: 32 for the DLA models, else 1)."""
    if isinstance(model_or_name, str):
        return get_model_cfg(model_or_name).input_multiple
    return getattr(model_or_name, "input_multiple", 1)


def check_image_size(model_or_name, image_size):
    """Raise ``UserError`` for an input size the model cannot take.

    DLA's aggregation nodes concatenate maps produced by strided convolutions (sizes rounded up)
    with max-pooled ones (sizes rounded down); they line up only when the size is a multiple of 32.
    """
    try:
        size = int(image_size)
    except (TypeError, ValueError):
        raise UserError(f"image size must be a whole number of pixels, got {image_size!r}") from None
    if size != image_size or size < 1:
        raise UserError(f"image size must be a positive whole number of pixels, got {image_size!r}")
    multiple = input_multiple(model_or_name)
    if size % multiple:
        lower, upper = max(multiple, size // multiple * multiple), (size // multiple + 1) * multiple
        raise UserError(f"DLA models need an image size divisible by {multiple}, got {size}: use e.g. "
                        f"--image_size {lower} or {upper}")
    return size


def _checkpoint_classes(ckpt_path, meta):
    """The classifier size saved in a MindSpore checkpoint (meta first; else its classifier weight,
    raw or EMA, under a wrapper prefix as the loader strips it), or 0 for a backbone-only one."""
    if isinstance(meta.get("num_classes"), int):
        return meta["num_classes"]
    arrays = strip_wrapper_prefix(read_checkpoint(ckpt_path), _CLASSIFIER_PARAMS)
    for name in ("classifier.weight", "ema.classifier.weight"):
        if name in arrays and len(getattr(arrays[name], "shape", ())) == 2:
            return int(arrays[name].shape[0])
    return 0  # a backbone-only checkpoint


def build_inference_model(model_name, ckpt_path=None, pretrained=False, num_classes=None, in_channels=None,
                          use_ema=False, global_pool="avg", meta=None):
    """Create ``model_name``, load its weights and return ``(optimised_net, info)``.

    ``num_classes`` / ``in_channels`` default to what the checkpoint holds (its saved metadata or its
    classifier), else 1000 / 3. A checkpoint whose classifier does not match ``num_classes`` raises
    ``UserError`` (predicting with a freshly initialised classifier is never wanted). ``info`` holds
    ``num_classes``, ``in_channels``, ``default_cfg``, ``meta`` (the checkpoint's metadata, e.g.
    ``class_names``) and ``weights`` (a description of where the weights came from). ``meta``: the
    checkpoint's metadata when the caller has read it already.
    """
    if not is_model(model_name):
        create_model(model_name)  # raises the factory's UserError with suggestions
    if ckpt_path and pretrained:
        raise UserError("pass either --ckpt_path or --pretrained, not both")
    ckpt_classes = None
    if ckpt_path and not str(ckpt_path).lower().endswith(PYTORCH_SUFFIXES):
        meta = checkpoint_metadata(ckpt_path) if meta is None else meta
        ckpt_classes = _checkpoint_classes(ckpt_path, meta)
    meta = meta or {}
    if num_classes is None:
        num_classes = ckpt_classes if ckpt_classes is not None else 1000
    if ckpt_classes is not None and ckpt_classes and int(num_classes) != ckpt_classes:
        raise UserError(f"checkpoint {ckpt_path} has a {ckpt_classes}-class classifier but --num_classes is "
                        f"{num_classes}: pass --num_classes {ckpt_classes} (or leave it out)")
    if in_channels is None:
        in_channels = meta.get("in_channels") if isinstance(meta.get("in_channels"), int) else 3
    net = create_model(model_name, num_classes=int(num_classes), in_channels=int(in_channels),
                       global_pool=global_pool)
    weights = "random initialisation"
    report, source = None, None
    if pretrained:
        report = load_pretrained(net, resolve_name(model_name), num_classes=int(num_classes),
                                 in_channels=int(in_channels))
        weights = source = f"the published {model_name} weights"
    if ckpt_path:
        report = load_model_weights(net, ckpt_path, strict=True, num_classes=int(num_classes),
                                    in_channels=int(in_channels), use_ema=bool(use_ema))
        weights = str(ckpt_path) + (" (EMA)" if use_ema else "")
        source = f"checkpoint {ckpt_path}"
    fresh = [n for n in getattr(report, "kept_fresh", None) or [] if n.startswith("classifier.")]
    if fresh and int(num_classes) > 0:
        held = f"a {ckpt_classes}-class one" if ckpt_classes else "another size"
        raise UserError(f"{source} has no {num_classes}-class classifier (it holds {held}): its predictions "
                        f"would come from an untrained classifier. Pass the --num_classes it was trained with "
                        f"(or leave --num_classes out).")
    net.set_train(False)
    info = {"model": model_name, "num_classes": int(num_classes), "in_channels": int(in_channels),
            "default_cfg": dict(getattr(net, "default_cfg", {}) or {}), "meta": meta, "weights": weights}
    return optimize_for_inference(net), info


# ------------------------------------------------------------------------------------------------
# what a checkpoint says about itself
# ------------------------------------------------------------------------------------------------

def checkpoint_metadata(ckpt_path):
    """The metadata stored with a MindSpore checkpoint (``{}`` for a PyTorch file, which has none)."""
    if str(ckpt_path).lower().endswith(PYTORCH_SUFFIXES):
        return {}
    return read_checkpoint_meta(ckpt_path) or {}


def model_from_checkpoint(model_name, ckpt_path, meta, given_by="--model"):
    """The model to build: ``model_name`` when given (it must be the checkpoint's, if that names one),
    else the one the checkpoint names (train.py's do). ``UserError`` when there is neither."""
    stored = meta.get("model") if isinstance(meta.get("model"), str) and is_model(meta.get("model")) else None
    if model_name:
        if not is_model(model_name):
            create_model(model_name)  # the factory's UserError, with suggestions
        if stored and resolve_name(stored) != resolve_name(model_name):
            raise UserError(f"checkpoint {ckpt_path} holds a {stored} model: it does not fit {model_name} "
                            f"({given_by}). Leave --model out (the checkpoint names its model) or pass --model "
                            f"{stored}")
        return model_name
    if stored:
        return stored
    if ckpt_path:
        raise UserError(f"checkpoint {ckpt_path} does not name its model (a MindCV, PyTorch or converted "
                        f"checkpoint): pass --model NAME")
    raise UserError("no model: pass --model NAME (with --pretrained), or --ckpt_path FILE of a checkpoint that "
                    "names its model (train.py's do)")


def model_preprocessing(layers, info, ckpt_path=None):
    """``(EvalPreprocessing, {key: source})`` of a model from ``build_inference_model``: each key from
    the first of ``layers`` (``(source, {config key: value})``, the explicit settings), the
    checkpoint's stored preprocessing, the model's defaults. ``UserError`` when it does not fit the
    model (its input channels; DLA: sizes that are multiples of 32) or the stored one is damaged."""
    layers = list(layers)
    stored = info["meta"].get("preprocessing")
    if stored is not None:
        where = f"checkpoint {ckpt_path}"
        layers.append((where, EvalPreprocessing.from_keys(stored, source=where).keys()))
    defaults = EvalPreprocessing.from_model_cfg(info["default_cfg"], info["in_channels"])
    layers.append((f"the {info['model']} defaults", defaults.keys()))
    prep, sources = resolve_eval_preprocessing(layers)
    if prep.in_channels != info["in_channels"]:
        raise UserError(f"in_channels {prep.in_channels} ({sources['in_channels']}) does not fit the model, which "
                        f"takes {info['in_channels']} channels: leave in_channels out")
    check_image_size(info["model"], prep.image_resize)
    return prep, sources


def export_labels(num_classes, stored_names):
    """``(label_names, label_source)`` an exported file states: the class-folder names training used
    (``training``), else for a 1000-class model the sorted ImageNet-1k WordNet ids (``imagenet``),
    else ``(None, None)``."""
    if isinstance(stored_names, list) and len(stored_names) == num_classes and \
            all(isinstance(n, str) for n in stored_names):
        return list(stored_names), "training"
    if num_classes == 1000:
        return imagenet_wordnet_ids(), "imagenet"
    return None, None
