"""PyTorch / safetensors Res2Net weights -> MindSpore checkpoint.

    python -m mindcv_res2net.convert SRC --model NAME --out DST.ckpt [--num-classes N] [--ema]

SRC: a state dict of the official Res2Net release (``res2net50_26w_4s-06e79181.pth`` ...) or of
timm (``res2net50d``, ``dla60_res2net`` ...; ``.pth`` / ``.bin`` / ``.safetensors``). No torch is
needed: ``.pth`` files (zip format of torch >= 1.6 and the legacy format of the official release) are
read by ``pth_reader``, which unpickles nothing but tensors and plain containers, like
``torch.load(weights_only=True)``.

The mapping (checked against the parameters of ``create_model(NAME)``, shapes included):
- ``state_dict`` / ``model`` wrappers and the ``module.`` prefix are removed; ``num_batches_tracked``
  counters dropped;
- BatchNorm ``weight/bias/running_mean/running_var`` -> ``gamma/beta/moving_mean/moving_variance``;
- ``downsample`` -> ``down_sample``, ``fc`` -> ``classifier`` (a 1x1-conv classifier is reshaped
  to the Dense weight);
- v1b (timm ``res2net50d``): the shortcut's parameter-free AvgPool sits at index 0 in PyTorch in
  every stage, while the MindSpore model has no pool where the stride is 1 (layer1):
  ``layer1.0.downsample.1/.2`` -> ``layer1.0.down_sample.0/.1``;
- DLA: the official files' ``project`` layers in trees of level > 1, which the forward pass never
  uses, are dropped with a note.
Anything else that does not fit is refused with the list of missing / unexpected / mismatched keys.
"""
import json
import logging
import math
import os
import re
import struct
from collections import OrderedDict

import numpy as np

from . import pth_reader
from .checkpoint_file import fit_problems, save_checkpoint_atomic
from ..errors import UserError
from ..models.registry import get_model_cfg, is_model, list_models, model_entrypoint, resolve_name

_logger = logging.getLogger(__name__)

_BN_LEAVES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
_MODULE_RENAMES = {"downsample": "down_sample", "fc": "classifier", "maxpool": "max_pool"}
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network", "module")
_EMA_KEYS = ("state_dict_ema", "model_ema", "ema")


# ----------------------------------------------------------------------------------------------
# reading PyTorch / safetensors files
# ----------------------------------------------------------------------------------------------

def _read_safetensors(path):
    try:
        from safetensors.numpy import load_file
    except ImportError:
        load_file = None
    if load_file is not None:
        try:
            return dict(load_file(path))
        except Exception as exc:  # bfloat16 has no numpy dtype; fall through to the manual reader
            if "bf16" not in str(exc).lower() and "bfloat16" not in str(exc).lower():
                raise UserError(f"could not read {path} as safetensors: {exc}") from exc
    return _read_safetensors_manually(path)


# safetensors dtype -> numpy type (BF16 read as uint16 and widened to float32)
_SAFETENSORS_DTYPES = {"F64": "f8", "F32": "f4", "F16": "f2", "BF16": "u2", "I64": "i8", "I32": "i4", "I16": "i2",
                       "I8": "i1", "U8": "u1", "BOOL": "?"}
_SAFETENSORS_MAX_HEADER = 100_000_000  # the format's limit on the JSON header


def _read_safetensors_manually(path):
    """A minimal safetensors reader (also for BF16, which numpy lacks): header JSON + raw data.

    The header is checked as the format requires, before any array is made: each tensor's
    ``data_offsets`` [begin, end] inside the data area with ``end - begin`` = its elements x the dtype's
    size, and no two tensors sharing bytes; a header that does not fit the file is one ``UserError``."""
    header, data = _safetensors_header_and_data(path)
    entries = [_safetensors_entry(path, name, info, len(data))
               for name, info in header.items() if name != "__metadata__"]
    spans = sorted((begin, end, name) for name, _, _, begin, end in entries)
    for (begin1, end1, name1), (begin2, end2, name2) in zip(spans, spans[1:]):
        if begin2 < end1:
            raise UserError(f"{path}: tensors {name1} and {name2} overlap (bytes {begin1}..{end1} and "
                            f"{begin2}..{end2} of the data); in a safetensors file each tensor has its own bytes. "
                            f"Is it a complete safetensors file?")
    out = {}
    view = memoryview(data)
    for name, dtype, shape, begin, end in entries:
        arr = np.frombuffer(view[begin:end], dtype=np.dtype(_SAFETENSORS_DTYPES[dtype]).newbyteorder("<"))
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.reshape(shape).copy()
    return out


def _safetensors_header_and_data(path):
    """The JSON header (a dict) and the data bytes of the safetensors file ``path``."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"{path} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - 8, _SAFETENSORS_MAX_HEADER):
            raise UserError(f"{path}: the safetensors header claims {length} bytes, more than the {size - 8} bytes "
                            f"after its length (or the format's limit of 100 MB). Is it a complete safetensors file?")
        try:
            header = json.loads(f.read(length))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise UserError(f"{path}: the safetensors header is not JSON ({exc}). Is it a complete safetensors "
                            f"file?") from None
        if not isinstance(header, dict):
            raise UserError(f"{path}: the safetensors header is not a JSON object. Is it a safetensors file?")
        return header, f.read()


def _safetensors_entry(path, name, info, data_size):
    """(name, dtype, shape, begin, end) of one header entry, checked against the ``data_size`` bytes of data."""
    if not isinstance(info, dict):
        raise UserError(f"{path}: the header entry of tensor {name} is not a JSON object with dtype, shape and "
                        f"data_offsets. Is it a complete safetensors file?")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not (isinstance(dtype, str) and dtype in _SAFETENSORS_DTYPES):
        raise UserError(f"{path}: tensor {name} has unsupported dtype {str(dtype)[:80]}")
    if not (isinstance(shape, list) and len(shape) <= 32 and all(type(d) is int and d >= 0 for d in shape)):
        raise UserError(f"{path}: tensor {name} has the shape {str(shape)[:80]}, not a list of at most 32 sizes. "
                        f"Is it a complete safetensors file?")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise UserError(f"{path}: tensor {name} has the data_offsets {str(offsets)[:80]}, not [begin, end] with "
                        f"0 <= begin <= end. Is it a complete safetensors file?")
    begin, end = offsets
    nbytes = math.prod(shape) * np.dtype(_SAFETENSORS_DTYPES[dtype]).itemsize
    if end - begin != nbytes:
        raise UserError(f"{path}: tensor {name} of shape {shape} and dtype {dtype} takes {nbytes} bytes, but its "
                        f"data_offsets {offsets} span {end - begin}. Is it a complete safetensors file?")
    if end > data_size:
        raise UserError(f"{path} ends before tensor {name} does (byte {end} of the data, which has {data_size}). Is "
                        f"it a complete safetensors file?")
    return name, dtype, shape, begin, end


def _read_torch(path):
    """A ``.pth`` file: read with ``pth_reader`` (no torch needed, identical arrays to ``torch.load``,
    whether or not torch is installed, so a conversion gives the same checkpoint on every host).
    Only where ``pth_reader`` cannot read a file (quantized or sparse tensors, tensor subclasses ...)
    and torch is importable is ``torch.load(weights_only=True)`` tried; if that fails too, the
    reader's message is raised."""
    try:
        return pth_reader.read_pth(path)
    except UserError as exc:
        reader_error = exc
    try:
        import torch
    except ImportError:
        raise reader_error from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise reader_error from None
    _logger.info("%s: read with torch.load (without PyTorch: %s)", path, reader_error)
    return obj


def read_state_dict_file(path, use_ema=False):
    """``{name: numpy array}`` from a PyTorch (``.pth/.pt/.bin``), ``.safetensors`` or ``.npz`` file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"weights file not found: {path}")
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory; pass the weights file itself")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        obj = _read_safetensors(path)
    elif lower.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            obj = {k: z[k] for k in z.files}
    elif lower.endswith(".ckpt"):
        raise UserError(f"{path} is already a MindSpore checkpoint: load it directly "
                        f"(--ckpt_path / checkpoint_path); no conversion is needed.")
    else:
        obj = _read_torch(path)
    return unwrap_state_dict(obj, use_ema=use_ema, source_label=path)


def _is_tensor_like(v):
    return isinstance(v, np.ndarray) or hasattr(v, "shape") and (hasattr(v, "numpy") or hasattr(v, "asnumpy"))


def _to_numpy(v):
    if isinstance(v, np.ndarray):
        return v
    if hasattr(v, "detach"):  # torch
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.float()  # bfloat16 / float16 -> float32
        return v.numpy()
    if hasattr(v, "asnumpy"):
        return v.asnumpy()
    return np.asarray(v)


def unwrap_state_dict(obj, use_ema=False, source_label="the state dict"):
    """Find the tensors in a loaded checkpoint: ``state_dict`` / ``model`` wrappers, ``module.``
    prefixes (DataParallel) and, with ``use_ema``, timm's ``state_dict_ema``."""
    if not isinstance(obj, dict):
        raise UserError(f"{source_label} does not hold a state dict (got {type(obj).__name__}); save the "
                        f"model's state_dict(), not the model.")
    if use_ema:
        for key in _EMA_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            raise UserError(f"{source_label} has no EMA weights ({', '.join(_EMA_KEYS)}); convert without --ema")
    for _ in range(3):  # nested wrappers
        if any(_is_tensor_like(v) for v in obj.values()):
            break
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            break
    tensors = OrderedDict((k, v) for k, v in obj.items() if _is_tensor_like(v))
    if not tensors:
        raise UserError(f"{source_label} holds no tensors (keys: {', '.join(list(obj)[:10])})")
    for prefix in ("module.", "model.", "_orig_mod."):
        if all(k.startswith(prefix) for k in tensors):
            tensors = OrderedDict((k[len(prefix):], v) for k, v in tensors.items())
    return OrderedDict((k, _to_numpy(v)) for k, v in tensors.items())


# ----------------------------------------------------------------------------------------------
# name mapping
# ----------------------------------------------------------------------------------------------

def _translate(key, is_bn):
    module, _, leaf = key.rpartition(".")
    if is_bn:
        leaf = _BN_LEAVES.get(leaf, leaf)
    parts = [_MODULE_RENAMES.get(p, p) for p in module.split(".")] if module else []
    return ".".join(parts + [leaf])


def _shortcut_index_shift(keys, model_shapes):
    """{'layer1.0.downsample': -1} where PyTorch's shortcut Sequential has a parameter-free layer
    (the v1b AvgPool) in front that the MindSpore model leaves out."""
    shifts = {}
    src = {}
    for k in keys:
        m = re.match(r"^(.*\.downsample)\.(\d+)\.", k)
        if m:
            src.setdefault(m.group(1), set()).add(int(m.group(2)))
    for prefix, indices in src.items():
        target = prefix.replace("downsample", "down_sample")
        tgt = set()
        for name in model_shapes:
            m = re.match(re.escape(target) + r"\.(\d+)\.", name)
            if m:
                tgt.add(int(m.group(1)))
        # only the documented case: PyTorch (pool, conv, BN) -> MindSpore (conv, BN)
        if indices == {1, 2} and tgt == {0, 1}:
            shifts[prefix] = -1
    return shifts


def _unused_dla_projects(keys):
    """Official DLA ``project`` layers of trees with level > 1 (no ``root`` directly below)."""
    prefixes = {k.split(".project.")[0] for k in keys if ".project." in k}
    has_root = {k.split(".root.")[0] for k in keys if ".root." in k}
    return {p for p in prefixes if p.startswith("level") and p not in has_root}


def _classifier_rows(state):
    for key in ("fc.weight", "classifier.weight", "head.fc.weight", "last_linear.weight"):
        if key in state:
            return int(np.shape(state[key])[0])
    return None


_SHAPE_CACHE = {}


def _check_model(model_name):
    if not is_model(model_name):
        raise UserError(f"unknown model {model_name!r}; choose one of: {', '.join(list_models())}")


def model_param_shapes(model_name, num_classes=1000):
    """``{name: shape}`` of the registered model ``model_name`` at ``num_classes`` (cached)."""
    _check_model(model_name)
    key = (resolve_name(model_name), num_classes)
    if key not in _SHAPE_CACHE:
        net = model_entrypoint(model_name)(num_classes=num_classes)
        _SHAPE_CACHE[key] = OrderedDict((n, tuple(p.shape)) for n, p in net.parameters_dict().items())
    return _SHAPE_CACHE[key]


def _clean_state(state_dict, label):
    """Unwrap ``state_dict`` and drop the ``num_batches_tracked`` counters."""
    state = unwrap_state_dict(state_dict, source_label=label)
    for key in [k for k in state if k.endswith("num_batches_tracked")]:
        del state[key]
    return state


def _target_shapes(model_name, num_classes, net, ckpt_classes):
    """``{name: shape}`` of the model the state dict is converted for."""
    if net is not None:
        return OrderedDict((n, tuple(p.shape)) for n, p in net.parameters_dict().items())
    want = ckpt_classes if num_classes is None else int(num_classes)
    return model_param_shapes(model_name, 1000 if want is None else want)


def _target_name(key, is_bn, shifts, model_shapes):
    """The MindSpore name of the PyTorch ``key`` in a model of ``model_shapes``."""
    k = key
    for prefix, shift in shifts.items():
        if k.startswith(prefix + "."):
            idx, rest = k[len(prefix) + 1:].split(".", 1)
            k = f"{prefix}.{int(idx) + shift}.{rest}"
            break
    name = _translate(k, is_bn)
    if name not in model_shapes:
        plain = ".".join(_MODULE_RENAMES.get(p, p) for p in k.split("."))  # a norm without running stats
        name = plain if plain in model_shapes else name
    if name.startswith("classifier.") and "classifier.weight" not in model_shapes and "fc.weight" in model_shapes:
        name = "fc." + name[len("classifier."):]
    return name


def _translate_entries(state, model_shapes, model_cls):
    """Rename and convert the entries; return them with the unexpected, unused-project and classifier keys."""
    bn_modules = {k.rsplit(".", 1)[0] for k in state if k.endswith(".running_mean")}
    shifts = _shortcut_index_shift(state.keys(), model_shapes)
    unused_projects = _unused_dla_projects(state.keys())

    out = OrderedDict()
    unexpected, dropped_projects, ckpt_cls = [], [], []
    for key, value in state.items():
        name = _target_name(key, key.rpartition(".")[0] in bn_modules, shifts, model_shapes)
        is_cls = name.startswith(("classifier.", "fc."))
        if is_cls:
            ckpt_cls.append(name)
        if name not in model_shapes:
            tree = key.split(".project.")[0] if ".project." in key else None
            if tree is not None and tree in unused_projects:
                dropped_projects.append(key)
            elif is_cls and not model_cls:
                pass  # the model has no classifier (num_classes=0): dropped below
            else:
                unexpected.append(key)
            continue
        arr = np.asarray(value)
        if np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float32)
        target = model_shapes[name]
        if is_cls and arr.ndim == 4 and arr.shape[2:] == (1, 1) and len(target) == 2:
            arr = arr.reshape(arr.shape[:2])  # 1x1-conv classifier [O, I, 1, 1] -> Dense [O, I]
        out[name] = arr
    return out, unexpected, dropped_projects, ckpt_cls


def _drop_other_classifier(out, model_shapes, model_cls, ckpt_cls, ckpt_classes, model_name, label, for_loading,
                           notes):
    """Drop a checkpoint classifier of another size (or one the model lacks); return whether it is gone."""
    # a classifier of another size, or none in the model
    cls_other = [n for n in model_cls if n in out and tuple(out[n].shape) != model_shapes[n]]
    if (cls_other and not for_loading) or (ckpt_cls and not model_cls):
        model_classes = model_shapes[model_cls[0]][0] if model_cls else 0
        _logger.warning("%s: the checkpoint's classifier has %s classes, %s has %s: dropping it (the model keeps "
                        "a freshly initialised classifier)", label, ckpt_classes, model_name, model_classes)
        notes.append(f"dropped the {ckpt_classes}-class classifier (model: {model_classes} classes)")
        for n in ckpt_cls:
            out.pop(n, None)
    return bool(ckpt_cls) and not any(n in out for n in model_cls)


def _check_converted(out, state, model_shapes, model_cls, unexpected, cls_dropped, model_name, label, strict,
                     for_loading):
    """Refuse (strict) or log and drop the missing, unexpected and shape-mismatched entries."""
    first_conv = next((n for n, s in model_shapes.items() if len(s) == 4), None)
    missing = [n for n in model_shapes if n not in out and not (cls_dropped and n in model_cls)]
    mismatched = []
    for n in out:
        a, b = tuple(out[n].shape), model_shapes[n]
        if a == b:
            continue
        if for_loading and (n in model_cls or (n == first_conv and a[0] == b[0] and a[2:] == b[2:])):
            continue
        mismatched.append((n, a, b))
    if missing or unexpected or mismatched:
        problems = fit_problems(missing, unexpected, mismatched)
        guess = guess_model_name({k: np.shape(v) for k, v in state.items()})
        hint = f" It looks like {guess} weights." if guess and guess != model_name else ""
        message = (f"{label} does not fit model {model_name}: {problems}.{hint} Is it a checkpoint "
                   f"of another architecture? Pass --model <its architecture>.")
        if strict:
            raise UserError(message)
        _logger.warning("%s", message)
        for n, _, _ in mismatched:
            del out[n]


def convert_state_dict(state_dict, model_name, num_classes=None, strict=True, net=None, source_label=None,
                       for_loading=False, notes=None):
    """PyTorch-layout ``state_dict`` -> ``{mindspore name: float32 numpy array}`` for ``model_name``.

    Args:
        state_dict: ``{key: torch tensor / numpy array}``, possibly wrapped (``state_dict``, ``model``)
            or prefixed (``module.``).
        model_name: a name of ``mindcv_res2net.list_models()`` (timm's names are aliases).
        num_classes: the classes wanted; default: the checkpoint's. Another number drops the
            checkpoint's classifier (warning); 0 drops it as well.
        strict: refuse (``UserError``) with the lists of missing / unexpected / mismatched keys;
            otherwise log them and return what fits.
        net: a model to check against instead of building ``create_model(model_name, num_classes)``.
        for_loading: keep a classifier or first conv of another size as it is (``load_model_weights``
            then drops / adapts them).
        notes: a list that receives human-readable notes on what was dropped.
    """
    label = source_label or "the state dict"
    notes = [] if notes is None else notes
    state = _clean_state(state_dict, label)
    ckpt_classes = _classifier_rows(state)
    model_shapes = _target_shapes(model_name, num_classes, net, ckpt_classes)
    model_cls = [n for n in model_shapes if n.startswith(("classifier.", "fc."))]

    out, unexpected, dropped_projects, ckpt_cls = _translate_entries(state, model_shapes, model_cls)
    if dropped_projects:
        trees = len({k.split(".project.")[0] for k in dropped_projects})
        notes.append(f"dropped {len(dropped_projects)} entries of {trees} 'project' layers that the official DLA "
                     f"forward pass never uses")
        _logger.info("%s: %s", label, notes[-1])

    cls_dropped = _drop_other_classifier(out, model_shapes, model_cls, ckpt_cls, ckpt_classes, model_name, label,
                                         for_loading, notes)
    _check_converted(out, state, model_shapes, model_cls, unexpected, cls_dropped, model_name, label, strict,
                     for_loading)
    return OrderedDict((n, out[n]) for n in model_shapes if n in out)  # the model's (MindCV's) order


# ----------------------------------------------------------------------------------------------
# guessing the architecture from names and shapes
# ----------------------------------------------------------------------------------------------

# What a state dict shows of a registered variant's ``ModelCfg.arch``, per family:
#   res2net: v1b stem, blocks per stage, width of layer1's 3x3 convs, 3x3 convs per block, groups;
#   res2net_dla: width of level2's 3x3 convs, 3x3 convs per block, groups.

def _res2net_signature(arch):
    width = int(math.floor(64 * (arch["base_width"] / 64.0))) * arch["cardinality"]  # layer1: 64 planes
    return ("res2net", bool(arch["deep_stem"]), tuple(arch["layers"]), width, max(1, arch["scale"] - 1),
            arch["cardinality"])


def _dla_signature(arch):
    width = int(math.floor(arch["channels"][2] * (arch["base_width"] / 64.0)) * arch["cardinality"]) // 2
    return ("res2net_dla", width, max(1, arch["scale"] - 1), arch["cardinality"])


_FAMILY_SIGNATURES = {"res2net": _res2net_signature, "res2net_dla": _dla_signature}


def registered_signatures():
    """``{signature: name}`` of every registered variant of a family above (the first registered of
    two identical architectures wins)."""
    out = {}
    for name in list_models(include_aliases=False, sort=False):
        cfg = get_model_cfg(name)
        if cfg.family not in _FAMILY_SIGNATURES:
            continue
        try:
            out.setdefault(_FAMILY_SIGNATURES[cfg.family](cfg.arch), name)
        except KeyError:  # a config without all of its family's arguments is not recognised
            continue
    return out


def _indices(shapes, pattern):
    return {int(m.group(1)) for k in shapes for m in [re.match(pattern, k)] if m}


def _signature_of_state(shapes):
    if "base_layer.0.weight" in shapes:
        conv = shapes.get("level2.tree1.convs.0.weight")
        if conv is None:
            return None
        convs = _indices(shapes, r"^level2\.tree1\.convs\.(\d+)\.")
        return ("res2net_dla", conv[0], len(convs), conv[0] // conv[1] if conv[1] else 1)
    conv = shapes.get("layer1.0.convs.0.weight")
    if conv is None:
        return None
    layers = tuple(len(_indices(shapes, rf"^layer{i}\.(\d+)\.")) for i in range(1, 5))
    convs = _indices(shapes, r"^layer1\.0\.convs\.(\d+)\.")
    groups = conv[0] // conv[1] if conv[1] else 1
    return ("res2net", "conv1.0.weight" in shapes, layers, conv[0], len(convs), groups)


def guess_model_name(shapes):
    """The registered architecture a ``{name: shape}`` dict (PyTorch or MindSpore names) belongs to,
    or None."""
    shapes = {(k[7:] if k.startswith("module.") else k): tuple(v) for k, v in shapes.items()}
    signature = _signature_of_state(shapes)
    return None if signature is None else registered_signatures().get(signature)


# ----------------------------------------------------------------------------------------------
# files and command line
# ----------------------------------------------------------------------------------------------

def convert_file(src, model_name, dst, num_classes=None, use_ema=False):
    """Convert the PyTorch / safetensors file ``src`` for ``model_name`` into the MindSpore
    checkpoint ``dst`` (written atomically). Returns ``(dst, notes)``."""
    _check_model(model_name)
    state = read_state_dict_file(src, use_ema=use_ema)
    notes = []
    canonical = resolve_name(model_name)
    params = convert_state_dict(state, canonical, num_classes=num_classes, source_label=os.fspath(src), notes=notes)
    extra = {"architecture": canonical, "converted_from": os.path.basename(os.fspath(src))}
    save_checkpoint_atomic(params, os.fspath(dst), extra=extra)
    return os.fspath(dst), notes
