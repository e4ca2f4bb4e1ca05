"""Loading weights into a model.

``load_model_weights(net, source, ...)``: a strict load of a MindSpore checkpoint (MindCV's or ours,
raw or a training checkpoint holding optimizer moments, EMA copies and counters), of a PyTorch /
safetensors file (converted on the fly by ``weights/torch_conversion.py``) or of a ``{name: array}`` dict; a
classifier of another size is dropped, the first conv is adapted to another number of input
channels; anything that does not fit is reported in one ``UserError``.
"""
import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .checkpoint_file import (PYTORCH_SUFFIXES, _check_file, _to_numpy, fit_problems, is_meta_entry, meta_of,
                         preview_names, read_checkpoint, strip_wrapper_prefix)
from .torch_conversion import convert_state_dict, guess_model_name, read_state_dict_file
from ..errors import UserError

_logger = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What ``load_model_weights`` did."""

    source: str
    loaded: list = field(default_factory=list)          # model parameter names set from the checkpoint
    adapted: dict = field(default_factory=dict)         # name -> how it was adapted
    dropped: dict = field(default_factory=dict)         # checkpoint name -> why it was not used
    kept_fresh: list = field(default_factory=list)      # model parameters left as initialised
    ignored_training_state: int = 0                     # optimizer moments, EMA copies not used
    missing: list = field(default_factory=list)         # (strict=False only)
    unexpected: list = field(default_factory=list)      # (strict=False only)
    mismatched: list = field(default_factory=list)      # (strict=False only) (name, ckpt, model)
    used_ema: bool = False
    meta: dict = field(default_factory=dict)

    def summary(self):
        parts = [f"loaded {len(self.loaded)} parameters from {self.source}"]
        if self.used_ema:
            parts.append("(EMA weights)")
        if self.adapted:
            parts.append(f"adapted {', '.join(f'{k} ({v})' for k, v in self.adapted.items())}")
        if self.kept_fresh:
            parts.append(f"kept {len(self.kept_fresh)} freshly initialised ({preview_names(self.kept_fresh)})")
        if self.dropped:
            parts.append(f"dropped {len(self.dropped)} ({preview_names(list(self.dropped))})")
        if self.ignored_training_state:
            parts.append(f"ignored {self.ignored_training_state} optimizer/EMA entries")
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("shape-mismatched", [m[0] for m in self.mismatched])):
            if items:
                parts.append(f"{len(items)} {label} ({preview_names(items)})")
        return "; ".join(parts)

    __str__ = summary


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------

def adapt_input_conv(weight, in_channels):
    """Adapt a first-conv weight [O, I, kh, kw] to ``in_channels`` inputs, as timm does.

    1 channel: the weight summed over the input channels (over each RGB triple if I is a multiple
    of 3); other counts from an RGB weight: the weight tiled over the channels and scaled by 3 / C
    so that the activations keep their scale.
    """
    weight = np.asarray(weight)
    out_ch, in_ch = weight.shape[:2]
    if in_ch == in_channels:
        return weight
    dtype = weight.dtype
    w = weight.astype(np.float32)
    if in_channels == 1:
        if in_ch > 3 and in_ch % 3 == 0:
            w = w.reshape(out_ch, in_ch // 3, 3, *w.shape[2:]).sum(axis=2)
        else:
            w = w.sum(axis=1, keepdims=True)
    elif in_ch == 3:
        reps = int(math.ceil(in_channels / 3))
        w = np.tile(w, (1, reps, 1, 1))[:, :in_channels] * (3.0 / float(in_channels))
    else:
        raise UserError(f"cannot adapt a first convolution of {in_ch} input channels to {in_channels}: "
                        f"only RGB (3-channel) weights can be adapted.")
    return w.astype(dtype)


def _model_name(net, model_name=None):
    if model_name:
        return model_name
    cfg = getattr(net, "default_cfg", None) or {}
    return cfg.get("architecture") or type(net).__name__


def _classifier_prefix(net):
    cfg = getattr(net, "default_cfg", None) or {}
    return cfg.get("classifier") or "classifier"


def _first_conv_name(net, model_shapes):
    cfg = getattr(net, "default_cfg", None) or {}
    first = cfg.get("first_conv")
    if first and first + ".weight" in model_shapes:
        return first + ".weight"
    for name, shape in model_shapes.items():  # parameter order: the stem comes first
        if len(shape) == 4:
            return name
    return None


def _training_state_name(name, known_names, module_names):
    """``moments.conv1.weight`` -> ('moments', 'conv1.weight'): a copy of a parameter under a
    one-word prefix (``moments``, ``adam_m``, ``adam_v``, ``ema``, ``accu_grads`` ...) that is not a
    module of the model (``layer3.6.conv1.weight`` is an extra block, not a copy of ``conv1.weight``)."""
    prefix, _, rest = name.partition(".")
    if not rest or prefix in module_names or prefix.isdigit() or rest not in known_names:
        return None
    return prefix, rest


def _guess_hint(arrays):
    try:
        guess = guess_model_name({k: np.shape(v) for k, v in arrays.items()})
    except Exception:  # a hint only
        guess = None
    return f" It looks like a {guess} checkpoint." if guess else ""


def _read_source(net, source, arch, strict):
    """Read ``source`` (a dict, a PyTorch / safetensors file or a MindSpore checkpoint) into entries."""
    if isinstance(source, dict):
        return "the given weights", {k: _to_numpy(v) for k, v in source.items()}
    src_label = os.fspath(source)
    _check_file(src_label)
    if src_label.lower().endswith(PYTORCH_SUFFIXES):
        state = read_state_dict_file(src_label)
        entries = convert_state_dict(state, arch, strict=strict, net=net, source_label=src_label,
                                     for_loading=True)
    else:
        entries = read_checkpoint(source)  # a CheckpointFile gives what it read
    return src_label, entries


def _separate_meta(entries, model_names, report):
    """Move metadata into ``report.meta``; return the weight arrays and the dot-free state names removed."""
    meta_entries = {k: v for k, v in entries.items() if is_meta_entry(k, v) and k not in model_names}
    report.meta = meta_of(meta_entries)
    arrays = {k: v for k, v in entries.items() if k not in meta_entries and not isinstance(v, str)}
    arrays = strip_wrapper_prefix(arrays, model_names)
    # other dot-free training state: a dynamic learning rate (one value per step), loss-scale state ...
    state_arrays = [k for k in arrays if "." not in k and k not in model_names]
    for k in state_arrays:
        del arrays[k]
    return arrays, state_arrays


def _sort_training_state(arrays, model_names):
    """Split arrays into raw model weights, prefixed training-state copies and unexpected names."""
    # training state: copies of model parameters under a prefix (moments., adam_m., ema., ...)
    raw, copies, unexpected = {}, {}, []
    known = model_names | set(arrays)  # copies of the checkpoint's own weights count too (e.g. a dropped head)
    modules = {n.split(".", 1)[0] for n in model_names}
    for name, value in arrays.items():
        if name in model_names:
            raw[name] = value
            continue
        split = _training_state_name(name, known, modules)
        if split:
            copies.setdefault(split[0], {})[split[1]] = value
        else:
            unexpected.append(name)
    return raw, copies, unexpected


def _choose_weights(raw, copies, state_arrays, use_ema, src_label, report):
    """Pick the raw or the EMA weights and count the training state left unused."""
    chosen = raw
    ema = copies.pop("ema", None)
    if use_ema:
        if not ema:
            raise UserError(f"checkpoint {src_label} holds no EMA weights (ema.* entries): load it "
                            f"without use_ema / --ema, or pick a checkpoint saved with EMA.")
        chosen = dict(raw)
        chosen.update(ema)
        fallback = [n for n in raw if n not in ema]
        if fallback:
            _logger.warning("checkpoint %s: %d parameters have no EMA copy; using their raw values (%s)",
                            src_label, len(fallback), preview_names(fallback))
        report.used_ema = True
        report.ignored_training_state = (sum(len(c) for c in copies.values()) + len(raw) - len(fallback)
                                         + len(state_arrays))
    else:
        report.ignored_training_state = sum(len(c) for c in copies.values()) + len(ema or {}) + len(state_arrays)
    return chosen


def _fit_classifier(net, model_shapes, chosen, arrays, unexpected, num_classes, src_label, arch, report):
    """Drop a checkpoint classifier of another size (keeping the model's fresh one); return the unexpected."""
    # classifier: another number of classes (or none in the model) -> keep the fresh one
    cls_prefix = _classifier_prefix(net) + "."
    model_cls = [n for n in model_shapes if n.startswith(cls_prefix)]
    ckpt_cls = [n for n in chosen if n.startswith(cls_prefix)]
    ckpt_cls += [n for n in unexpected if n.startswith(cls_prefix)]
    cls_mismatch = any(n in chosen and tuple(np.shape(chosen[n])) != model_shapes[n] for n in model_cls)
    cls_gone = bool(ckpt_cls) and not model_cls
    if cls_mismatch or cls_gone:
        ckpt_classes = next((np.shape(arrays[n])[0] for n in ckpt_cls if n.endswith("weight") and n in arrays), "?")
        model_classes = num_classes if num_classes is not None else (
            model_shapes[cls_prefix + "weight"][0] if cls_prefix + "weight" in model_shapes else 0)
        _logger.warning("checkpoint %s has a %s-class classifier, the model %s has %s classes: dropping the "
                        "checkpoint's classifier and keeping the model's freshly initialised one.",
                        src_label, ckpt_classes, arch, model_classes)
        for n in ckpt_cls:
            chosen.pop(n, None)
            report.dropped[n] = f"classifier of {ckpt_classes} classes (model: {model_classes})"
        unexpected = [n for n in unexpected if not n.startswith(cls_prefix)]
        report.kept_fresh.extend(model_cls)
    elif model_cls and not any(n in chosen for n in model_cls):
        # a backbone-only checkpoint (e.g. converted with another num_classes)
        _logger.warning("checkpoint %s has no classifier: keeping the model's freshly initialised one.", src_label)
        report.kept_fresh.extend(model_cls)
    return unexpected


def _fit_first_conv(net, model_shapes, chosen, in_channels, arch, report):
    """Adapt a first conv of another number of input channels to the model's."""
    # first conv: another number of input channels -> adapt
    first = _first_conv_name(net, model_shapes)
    if first and first in chosen:
        ck_shape, m_shape = tuple(np.shape(chosen[first])), model_shapes[first]
        if len(ck_shape) == 4 and ck_shape != m_shape and ck_shape[0] == m_shape[0] and ck_shape[2:] == m_shape[2:]:
            want = m_shape[1]
            if in_channels is not None and int(in_channels) != want:
                raise UserError(f"in_channels={in_channels} but the model {arch} takes {want} input channels")
            chosen[first] = adapt_input_conv(chosen[first], want)
            how = "summed over RGB" if want == 1 else f"RGB tiled to {want} channels, scaled by 3/{want}"
            report.adapted[first] = f"{ck_shape[1]} -> {want} input channels, {how}"


def _check_fit(model_shapes, chosen, arrays, unexpected, strict, src_label, arch, report):
    """Find missing and shape-mismatched parameters; refuse them (strict) or log them into the report."""
    missing = [n for n in model_shapes if n not in chosen and n not in report.kept_fresh]
    mismatched = [(n, tuple(np.shape(chosen[n])), model_shapes[n]) for n in model_shapes
                  if n in chosen and tuple(np.shape(chosen[n])) != model_shapes[n]]
    if strict and (missing or unexpected or mismatched):
        problems = fit_problems(missing, unexpected, mismatched)
        raise UserError(f"checkpoint {src_label} does not fit model {arch}: {problems}."
                        f"{_guess_hint(arrays)} Is it a checkpoint of another architecture? Pass --model "
                        f"<its architecture> (or load with strict=False to keep only what fits).")
    if missing or unexpected or mismatched:
        _logger.warning("checkpoint %s, model %s: %d missing (%s), %d unexpected (%s), %d shape-mismatched (%s); "
                        "loading the rest", src_label, arch, len(missing), preview_names(missing), len(unexpected),
                        preview_names(unexpected), len(mismatched), preview_names([m[0] for m in mismatched]))
    report.missing, report.unexpected, report.mismatched = missing, unexpected, mismatched


def _set_parameters(params, chosen, report, tensor_type):
    """Copy the chosen arrays that fit into the model's parameters."""
    bad = {m[0] for m in report.mismatched}
    for name, param in params.items():
        if name not in chosen or name in bad:
            continue
        value = np.ascontiguousarray(chosen[name])
        param.set_data(tensor_type(value, dtype=param.dtype))
        report.loaded.append(name)


def load_model_weights(net, source, strict=True, num_classes=None, in_channels=None, use_ema=False,
                       model_name=None):
    """Load weights into ``net`` and return a ``LoadReport``.

    Args:
        net: the model (parameter names as MindCV's).
        source: a MindSpore ``.ckpt`` path (MindCV's or ours; training checkpoints too), a PyTorch /
            safetensors file (converted on the fly), or a dict ``{name: array/Tensor/Parameter}``.
        strict: missing, unexpected or shape-mismatched parameters raise one ``UserError`` listing
            them; ``strict=False`` loads what fits and logs the rest.
        num_classes: the model's classes (default: read from the model). A checkpoint classifier of
            another size is dropped with a warning and the model's fresh classifier kept.
        in_channels: the model's input channels (default: read from the model). An RGB first conv is
            adapted to them (1 channel: summed over RGB).
        use_ema: load the EMA copies (``ema.<name>``) instead of the raw weights.
        model_name: for messages (default: ``net.default_cfg['architecture']``).

    Optimizer moments (``moments.*``, ``adam_m.*`` ...: any copy of a parameter under a prefix),
    unused EMA copies and dot-free training state (``learning_rate``, also as a per-step array,
    ``global_step``, ``scale_sense`` ...) are ignored; scalars and strings go to ``report.meta``.
    """
    import mindspore as ms

    arch = _model_name(net, model_name)
    params = net.parameters_dict()
    model_shapes = {name: tuple(p.shape) for name, p in params.items()}
    model_names = set(model_shapes)

    src_label, entries = _read_source(net, source, arch, strict)
    report = LoadReport(source=src_label)
    arrays, state_arrays = _separate_meta(entries, model_names, report)
    raw, copies, unexpected = _sort_training_state(arrays, model_names)
    chosen = _choose_weights(raw, copies, state_arrays, use_ema, src_label, report)
    unexpected = _fit_classifier(net, model_shapes, chosen, arrays, unexpected, num_classes, src_label, arch,
                                 report)
    _fit_first_conv(net, model_shapes, chosen, in_channels, arch, report)
    _check_fit(model_shapes, chosen, arrays, unexpected, strict, src_label, arch, report)
    _set_parameters(params, chosen, report, ms.Tensor)
    _logger.info("%s", report.summary())
    return report



__all__ = ["LoadReport", "load_model_weights", "adapt_input_conv"]
