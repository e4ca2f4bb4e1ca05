"""Checkpoint files: reading and writing MindSpore checkpoints and their metadata.

- ``open_checkpoint(path)``: the file read once, as a ``CheckpointFile`` (its entries, metadata, class
  names and stored preprocessing) that a command passes down wherever a checkpoint path goes;
- ``read_checkpoint(path)``: every entry as numpy arrays / strings; ``read_checkpoint_meta(path)``
  (or ``meta_of(entries)``): the metadata stored with it (both take a ``CheckpointFile`` too).
- ``save_checkpoint_atomic(params_or_net, path, extra=None)``: writes under a unique staging name
  beside ``path`` and renames, so a kill never leaves a partial file under the final name and a
  failed write keeps the old file; ``extra`` holds metadata.
- ``strip_wrapper_prefix(arrays, model_names)``: names without a wrapper cell's prefix.

Loading weights into a model (and PyTorch files) is ``weights/model_loading.py``'s.
"""
import json
import logging
import os
import shutil
import tempfile

import numpy as np

from .. import atomic_io
from ..errors import UserError

_logger = logging.getLogger(__name__)

# Wrapper cells whose auto-prefix may appear in front of every parameter name.
WRAPPER_PREFIXES = ("network.", "_backbone.", "backbone.", "model.", "module.", "net.")
# Suffix marking a JSON-encoded metadata value (lists, dicts, None).
_JSON_SUFFIX = "__json"
PYTORCH_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".pth.tar", ".npz")


def _check_file(path, what="checkpoint"):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"{what} file not found: {path}. Check the path (and --ckpt_path / checkpoint_path).")
    if os.path.isdir(path):
        raise UserError(f"{what} path is a directory, not a file: {path}. Pass the .ckpt file itself.")
    return path


def _to_numpy(value):
    """A Parameter / Tensor / numpy value -> numpy array (strings pass through)."""
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "asnumpy"):
        return value.asnumpy()
    if hasattr(value, "detach"):  # a torch tensor
        return value.detach().cpu().numpy()
    return np.asarray(value)


class CheckpointFile(os.PathLike):
    """A MindSpore checkpoint read once: ``entries`` (``{name: numpy array or str}``), ``meta``,
    ``class_names`` and ``preprocessing`` (what train.py stored; None when absent).

    It stands for its path (``os.fspath``, ``str``), so functions that take a checkpoint path take
    it too, and those of this module return what was read instead of reading the file again."""

    def __init__(self, path, entries):
        self.path = os.fspath(path)
        self.entries = entries
        self._meta = None

    def __fspath__(self):
        return self.path

    def __str__(self):
        return self.path

    def __repr__(self):
        return f"CheckpointFile({self.path!r})"

    @property
    def meta(self):
        if self._meta is None:
            self._meta = meta_of(self.entries)
        return self._meta

    @property
    def class_names(self):
        return self.meta.get("class_names")

    @property
    def preprocessing(self):
        return self.meta.get("preprocessing")


def open_checkpoint(path):
    """``path`` read once as a ``CheckpointFile``; a PyTorch / safetensors path is returned as it is
    (the loader converts it when it loads it; it holds no metadata)."""
    if isinstance(path, CheckpointFile) or str(path).lower().endswith(PYTORCH_SUFFIXES):
        return path
    return CheckpointFile(path, read_checkpoint(path))


def read_checkpoint(path):
    """All entries of a MindSpore checkpoint: ``{name: numpy array or str}``.

    A missing or unreadable file raises ``UserError`` naming it. Files without the ``.ckpt``
    suffix (``x.ckpt.bak``) are read through a temporary link, since MindSpore insists on it.
    A ``CheckpointFile`` gives its entries (a new dict; the arrays are shared).
    """
    import mindspore as ms

    if isinstance(path, CheckpointFile):
        return dict(path.entries)
    path = _check_file(path)
    if path.lower().endswith(PYTORCH_SUFFIXES):
        raise UserError(f"{path} is a PyTorch / safetensors file, not a MindSpore checkpoint. Convert it: "
                        f"python -m mindcv_res2net.convert {path} --model <name> --out <file>.ckpt")
    link_dir = None
    ms_path = path
    if not path.endswith(".ckpt"):
        link_dir = tempfile.mkdtemp(prefix="mindcv_res2net_ckpt_")
        ms_path = os.path.join(link_dir, "checkpoint.ckpt")
        os.symlink(os.path.abspath(path), ms_path)
    try:
        raw = ms.load_checkpoint(ms_path)
    except Exception as exc:  # MindSpore raises ValueError / RuntimeError on bad files
        raise UserError(f"could not read checkpoint {path}: {exc}. Is it a complete MindSpore .ckpt file "
                        f"(not truncated, not another format)?") from exc
    finally:
        if link_dir:
            shutil.rmtree(link_dir, ignore_errors=True)
    return {name: _to_numpy(value) for name, value in raw.items()}


def is_meta_entry(name, value):
    """Strings, and dot-free scalars (``global_step``, ``learning_rate``, ``epoch_num``, ...)."""
    if isinstance(value, str):
        return True
    return "." not in name and np.size(value) <= 1


def _decode_meta(entries):
    meta = {}
    for name, value in entries.items():
        if isinstance(value, str):
            if name.endswith(_JSON_SUFFIX):
                try:
                    meta[name[:-len(_JSON_SUFFIX)]] = json.loads(value)
                    continue
                except ValueError:
                    pass
            meta[name] = value
        else:
            arr = np.asarray(value).reshape(-1)
            meta[name] = arr[0].item() if arr.size else None
    return meta


def meta_of(entries):
    """The metadata among ``read_checkpoint``'s entries (see ``read_checkpoint_meta``)."""
    return _decode_meta({k: v for k, v in entries.items() if is_meta_entry(k, v)})


def read_checkpoint_meta(path):
    """The metadata stored with a checkpoint: ``save_checkpoint_atomic``'s ``extra`` (JSON values
    decoded) plus scalar training counters such as ``global_step`` or ``learning_rate``."""
    if isinstance(path, CheckpointFile):
        return dict(path.meta)
    return meta_of(read_checkpoint(path))


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------

def _encode_extra(extra):
    import mindspore as ms

    out = {}
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not key:
            raise UserError(f"checkpoint metadata keys must be non-empty strings, got {key!r}")
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool):
            out[key] = ms.Tensor(np.array(value))
        elif isinstance(value, int):
            out[key] = ms.Tensor(np.array(value, dtype=np.int64))
        elif isinstance(value, float):
            out[key] = ms.Tensor(np.array(value, dtype=np.float64))
        elif isinstance(value, str):
            out[key] = value
        else:  # lists (class names), tuples, dicts, None
            try:
                out[key + _JSON_SUFFIX] = json.dumps(value)
            except TypeError as exc:
                raise UserError(f"checkpoint metadata {key!r} must be a scalar, a string or "
                                f"JSON-serialisable, got {type(value).__name__}") from exc
    return out


def _param_list(params_or_net):
    """Something ``mindspore.save_checkpoint`` accepts, from a Cell, a dict or a list."""
    import mindspore as ms
    from mindspore import nn

    if isinstance(params_or_net, nn.Cell):
        return params_or_net
    if isinstance(params_or_net, dict):
        items = []
        for name, value in params_or_net.items():
            if isinstance(value, str):
                items.append({"name": name, "data": value})
                continue
            if isinstance(value, ms.Parameter):
                data = ms.Tensor(value.asnumpy())
            elif isinstance(value, ms.Tensor):
                data = value
            else:
                data = ms.Tensor(np.ascontiguousarray(_to_numpy(value)))
            items.append({"name": name, "data": data})
        return items
    if isinstance(params_or_net, (list, tuple)):
        return list(params_or_net)
    raise TypeError(f"save_checkpoint_atomic: expected a Cell, a dict or a list, got {type(params_or_net).__name__}")


def save_checkpoint_atomic(params_or_net, path, extra=None):
    """Save a Cell's parameters (or a ``{name: array/Tensor/Parameter}`` dict, or MindSpore's list of
    ``{"name", "data"}``) to ``path`` so that a kill never leaves a partial file under that name.

    The file is written under a unique hidden staging name beside ``path`` (process id and a random
    token, so concurrent writers never touch each other's files), fsynced and renamed onto ``path``
    (see ``atomic_io``). A failed write or fsync raises ``UserError`` and keeps the old ``path``.
    ``extra``: metadata, e.g. ``{"epoch": 3, "global_step": 1200, "loss_scale": 1024.0,
    "class_names": [...]}``: ints, floats, bools and strings are stored as they are, anything else
    JSON-encoded; ``read_checkpoint_meta`` returns it. Returns ``path``.
    """
    import mindspore as ms

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    staged = atomic_io.staging_path(path, suffix=".ckpt")  # MindSpore appends .ckpt to other names
    # MindSpore's own partial file: X.tmp for X.ckpt in 2.8 (X.ckpt.tmp in some versions)
    partials = (staged[:-len(".ckpt")] + ".tmp", staged + ".tmp")
    append = _encode_extra(extra)
    try:
        ms.save_checkpoint(_param_list(params_or_net), staged, append_dict=append or None)
        if not os.path.isfile(staged):
            raise OSError(5, "MindSpore reported no error but wrote no file")
    except OSError as exc:
        atomic_io.remove_quietly(staged, *partials)
        raise atomic_io.write_error(path, exc, "checkpoint") from exc
    except BaseException as exc:
        atomic_io.remove_quietly(staged, *partials)
        # MindSpore wraps I/O errors (a full disk) in RuntimeError; anything else is a bug: re-raise
        if isinstance(exc, RuntimeError) and not isinstance(exc, NotImplementedError):
            raise atomic_io.write_error(path, exc, "checkpoint") from exc
        raise
    atomic_io.remove_quietly(*partials)
    return atomic_io.commit_staged(staged, path, "checkpoint")


# ----------------------------------------------------------------------------------------------
# loading into a model
# ----------------------------------------------------------------------------------------------

def preview_names(names, limit=10):
    """``a, b, c, ... N more``: the first ``limit`` names of a list, for messages."""
    names = [str(n) for n in names]
    text = ", ".join(names[:limit])
    if len(names) > limit:
        text += f", ... {len(names) - limit} more"
    return text


def fit_problems(missing, unexpected, mismatched):
    """One text for weights that do not fit a model: counts and the first names of the ``missing``
    and ``unexpected`` names and of the ``mismatched`` (name, checkpoint shape, model shape)."""
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({preview_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({preview_names(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} with another shape ("
                        + preview_names([f"{n}: checkpoint {list(a)} vs model {list(b)}" for n, a, b in mismatched]) + ")")
    return ", ".join(problems)


def strip_wrapper_prefix(arrays, model_names):
    """Remove a wrapper cell's prefix (``network.``, ...) if that makes the names match."""
    direct = sum(1 for n in model_names if n in arrays)
    if direct >= len(model_names) // 2:
        return arrays
    best, best_hits = None, direct
    for prefix in WRAPPER_PREFIXES:
        hits = sum(1 for n in model_names if prefix + n in arrays)
        if hits > best_hits:
            best, best_hits = prefix, hits
    if best is None:
        return arrays
    return {(k[len(best):] if k.startswith(best) else k): v for k, v in arrays.items()}



__all__ = ["save_checkpoint_atomic", "read_checkpoint_meta", "meta_of", "read_checkpoint", "is_meta_entry",
           "strip_wrapper_prefix", "PYTORCH_SUFFIXES", "WRAPPER_PREFIXES"]
