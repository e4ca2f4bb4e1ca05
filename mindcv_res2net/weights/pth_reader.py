"""Read PyTorch ``.pth`` files without PyTorch: ``read_pth(path)``.

Both layouts that ``torch.save`` writes are read:

- the zip archive of torch >= 1.6 (``<name>/data.pkl`` plus one ``<name>/data/<key>`` record of raw
  bytes per storage, ``<name>/byteorder`` saying little or big endian);
- the legacy stream (``torch.save(..., _use_new_zipfile_serialization=False)``, and every file of
  torch < 1.6, such as the official 2019 Res2Net release): five pickles in a row -- magic number,
  protocol version, system info (byte order), the object, the list of storage keys -- followed by
  the storages in that order, each an 8-byte element count and the raw elements.

The object pickle is read by an unpickler that resolves only a fixed list of names: the tensor
rebuild functions of ``torch._utils``, the storage classes and dtypes, ``torch.Size``,
``torch.device``, ``collections.OrderedDict`` / ``Counter`` and the builtins that pickle protocol 2
uses for sets, bytes and complex numbers (``pth_unpickler``). Each of them is replaced by a small function
that builds plain data; no name is ever imported, so no code in the file runs. Any other name (a
model class, ``os.system`` ...) is refused with ``UserError`` naming the file and the name.

Tensors come back as numpy arrays (contiguous copies, native byte order, the tensor's dtype;
bfloat16, which numpy lacks, widened exactly to float32); ``torch.Size`` as a tuple, dtypes and devices
as strings such as ``'torch.float16'`` / ``'cpu'``; dicts, ``OrderedDict``, lists and tuples as they
were saved.

A crafted file is refused (``UserError`` naming the file) rather than read into memory it does not hold:

- the pickle BUILD instruction (restore an object's attributes) is applied to an ``OrderedDict`` only,
  as ``torch.load(weights_only=True)`` does for a state dict's ``_metadata``, with a dict of attribute
  names that hide none of its methods; on a tensor, storage, dtype or replacement function it is
  refused, so nothing can change a tensor's layout after it was checked (the layout is checked again
  where the array is cut: non-negative integers, first and last element inside the storage);
- ``bytearray`` of a size, protocol 5's ``BYTEARRAY8``, tensors of more than 32 dimensions (numpy's
  limit), and zip records that are compressed (torch.save stores them uncompressed) or claim more
  bytes than the archive holds;
- arrays that would take more than ``2 x`` the bytes of the storages read ``+ 64 MiB`` (a state dict
  takes about what it stores; a stride-0 tensor or thousands of tensors over one storage can take
  gigabytes from a few bytes; bfloat16 counts at its stored 2 bytes per element);
- legacy storage views (torch < 0.4) that reach past their storage, tensors that reach past their view,
  and view keys that name a storage (a view's first reference defines it, as in torch.load);
- a tensor, dtype or storage used as a dict key or set element (torch would load it; a numpy array
  cannot be a dict key).
"""
import io
import math
import os
import pickle
import struct
import zipfile

import numpy as np

from ..errors import UserError
from .pth_unpickler import (MAX_DIMS, OUTPUT_FACTOR, OUTPUT_FLOOR, BoundedFile, DType, PendingTensor, Refused,
                            Unpickler, element_size, kind)

__all__ = ["read_pth"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# -- the two file layouts -------------------------------------------------------------------------

def _read_record(path, zf, name, archive_size):
    """The bytes of the zip record ``name``, refused where it is compressed (torch.save stores records
    as they are; a deflated record can expand without bound) or claims more than the archive holds."""
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        raise UserError(f"{path}: the record {name} is compressed or encrypted, which is not expanded: torch.save "
                        f"writes its records uncompressed. Save the file again with torch.save.")
    if max(info.file_size, info.compress_size) > archive_size:
        raise UserError(f"{path}: the record {name} claims {info.file_size} bytes, more than the {archive_size} "
                        f"bytes of the archive. Is it a complete PyTorch file?")
    return zf.read(name)


def _load_zip(path, zf, archive_size):
    names = zf.namelist()
    prefix = names[0].split("/", 1)[0] if names and "/" in names[0] else ""
    base = prefix + "/" if prefix else ""
    if base + "data.pkl" not in names:
        if base + "constants.pkl" in names or any(n.startswith(base + "code/") for n in names):
            raise UserError(f"{path} is a TorchScript archive (torch.jit.save), not a state dict: load it in "
                            f"PyTorch and save model.state_dict() with torch.save, or use a .safetensors file.")
        raise UserError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl): pass the .pth file "
                        f"that torch.save wrote.")
    byteorder = "little"
    if base + "byteorder" in names:
        byteorder = _read_record(path, zf, base + "byteorder", archive_size).decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise UserError(f"{path}: unknown byte order {byteorder!r}. Is it a complete PyTorch file?")
    storages = {}
    obj = Unpickler(io.BytesIO(_read_record(path, zf, base + "data.pkl", archive_size)), storages,
                     zip_format=True).load()
    raw = {}
    for key in storages:
        record = f"{base}data/{key}"
        if record not in names:
            raise UserError(f"{path} lacks the storage record {record}. Is it a complete PyTorch file?")
        raw[key] = _read_record(path, zf, record, archive_size)
    return obj, raw, "<" if byteorder == "little" else ">"


def _load_legacy(path, f):
    pickles = BoundedFile(f)

    def load(what, storages=None):
        try:
            return Unpickler(pickles, {} if storages is None else storages, zip_format=False).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
                struct.error) as exc:
            if what == "magic":
                raise _NotPth(str(exc)) from exc
            raise

    magic = load("magic")
    if isinstance(magic, bool) or magic != _LEGACY_MAGIC:
        raise _NotPth("no PyTorch magic number")
    protocol = load("protocol")
    if protocol != _LEGACY_PROTOCOL:
        raise UserError(f"{path} is a PyTorch file of protocol {protocol!r}, which is not read without PyTorch "
                        f"(only {_LEGACY_PROTOCOL}): re-save it with torch.save(state_dict, f) or install "
                        f"PyTorch (pip install torch, the CPU build is enough).")
    sys_info = load("sys_info")
    order = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
    storages = {}
    obj = load("object", storages)
    keys = load("keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise UserError(f"{path}: the storage key list is damaged. Is it a complete PyTorch file?")
    raw = {}
    end = os.fstat(f.fileno()).st_size
    for key in keys:
        if key not in storages:
            raise UserError(f"{path}: storage {key} is listed but no tensor uses it. Is it a complete PyTorch file?")
        size = element_size(storages[key])
        head = f.read(8)
        if len(head) != 8:
            raise UserError(f"{path} ends before storage {key}. Is it a complete PyTorch file?")
        (count,) = struct.unpack(order + "q", head)
        data = f.read(count * size) if 0 <= count * size <= end - f.tell() else b""
        if len(data) != count * size:
            raise UserError(f"{path} ends inside storage {key}. Is it a complete PyTorch file?")
        raw[key] = data
    missing = [k for k in storages if k not in raw]
    if missing:
        raise UserError(f"{path} lacks the data of storage {missing[0]}. Is it a complete PyTorch file?")
    return obj, raw, order


class _NotPth(Exception):
    pass


# -- tensors out of storages ----------------------------------------------------------------------

def _size_text(nbytes):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):.1f} {unit}"
    return f"{nbytes} B"


class _Materializer:
    """The unpickled object as plain data: each pending tensor cut out of its storage bytes (``raw``),
    at most ``2 x`` the storage bytes ``+ 64 MiB`` of arrays in all."""

    def __init__(self, path, raw, order):
        self.path, self.raw, self.order = path, raw, order
        self.memo = {}  # id -> what the object became (shared tensors and containers stay shared)
        self.stored = sum(len(b) for b in raw.values())
        self.budget = OUTPUT_FACTOR * self.stored + OUTPUT_FLOOR
        self.used = 0

    def value(self, obj):
        """``obj`` with every pending tensor replaced by its array (dicts and lists changed in place)."""
        if isinstance(obj, (str, bytes, bytearray, int, float, complex, type(None))):
            return obj
        key = id(obj)
        if key in self.memo:
            return self.memo[key]
        if isinstance(obj, PendingTensor):
            out = self.memo[key] = self.array(obj)
        elif isinstance(obj, dict):
            self.memo[key] = out = obj
            for k in obj:
                self.check_key(k)
            for k, v in obj.items():
                obj[k] = self.value(v)
            attributes = getattr(obj, "__dict__", {})  # an OrderedDict's BUILD state (``_metadata``)
            for name, v in attributes.items():
                attributes[name] = self.value(v)
        elif isinstance(obj, list):
            self.memo[key] = out = obj
            for i, v in enumerate(obj):
                obj[i] = self.value(v)
        elif isinstance(obj, tuple):
            out = self.memo[key] = tuple(self.value(v) for v in obj)
        elif isinstance(obj, (set, frozenset)):
            for v in obj:
                self.check_key(v)
            out = self.memo[key] = obj
        elif isinstance(obj, DType):
            out = "torch." + obj.name
        else:  # a storage or a class token on its own: nothing numpy could hold
            raise UserError(f"{self.path} holds a bare {kind(obj)} outside a tensor, which is not read without "
                            f"PyTorch: save the state dict (torch.save(model.state_dict(), f)).")
        return out

    def check_key(self, obj):
        """A dict key or set element must be plain data: a numpy array cannot be hashed."""
        if isinstance(obj, (str, bytes, int, float, complex, type(None))):
            return
        if isinstance(obj, (tuple, frozenset)):
            for v in obj:
                self.check_key(v)
            return
        raise UserError(f"{self.path} uses a {kind(obj)} as a dict key or set element, which is not read "
                        f"without PyTorch (a numpy array cannot be a dict key): save a state dict, whose keys are "
                        f"names (torch.save(model.state_dict(), f)).")

    def storage_bytes(self, ref):
        """The bytes of the storage (or legacy storage view) ``ref``."""
        buf = self.raw[ref.key]
        if ref.view is None:
            return buf
        start, length = ref.view
        if start + length > len(buf):
            raise UserError(f"{self.path}: a storage view of bytes {start}..{start + length} reaches past its "
                            f"storage of {len(buf)} bytes. Is it a complete PyTorch file?")
        return memoryview(buf)[start:start + length]

    def array(self, t):
        code = t.code
        size = element_size(code)
        buf = self.storage_bytes(t.storage)
        numel = len(buf) // size
        offset, shape, stride = _checked_layout(t, numel, self.path)
        nbytes = math.prod(shape) * size
        if self.used + nbytes > self.budget:
            raise UserError(f"{self.path}: its tensors would take {_size_text(self.used + nbytes)} of arrays from "
                            f"{_size_text(self.stored)} of storage, more than the limit of 2 x the storage bytes + "
                            f"64 MiB for a PyTorch file read without PyTorch (a stride-0 tensor or many tensors "
                            f"over one storage are refused). Load it with torch.load and save a state dict of "
                            f"contiguous tensors (torch.save({{k: v.contiguous() ...}}, f)).")
        self.used += nbytes
        dtype = np.dtype(self.order + ("u2" if code == "bf16" else code)) if code != "b1" else np.dtype(np.bool_)
        if nbytes == 0:
            out = np.zeros(shape, dtype=dtype)
        else:
            flat = np.frombuffer(buf, dtype=dtype, count=numel)
            view = np.lib.stride_tricks.as_strided(flat[offset:], shape=shape, strides=[s * size for s in stride],
                                                   writeable=False)
            out = np.array(view, order="C")  # a contiguous copy (ascontiguousarray would make 0-d arrays 1-d)
        out = out.astype(out.dtype.newbyteorder("="), copy=False)
        if code == "bf16":
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out


def _checked_layout(t, numel, path):
    """``t``'s (offset, shape, stride), checked where the array is cut (whatever set them): non-negative
    integers, one stride per dimension (at most 32), the first and the last element inside the ``numel``
    elements of its storage (or view)."""
    offset, shape, stride = t.offset, t.size, t.stride
    valid = (isinstance(shape, tuple) and isinstance(stride, tuple) and len(shape) == len(stride) <= MAX_DIMS
             and all(type(v) is int and v >= 0 for v in (offset, *shape, *stride)))
    if not valid:
        raise UserError(f"{path}: a tensor of storage offset {repr(offset)[:80]}, size {repr(shape)[:80]}, stride "
                        f"{repr(stride)[:80]}. Is it a complete PyTorch file?")
    if 0 not in shape:
        last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
        if last >= numel:
            where = "storage view" if t.storage.view is not None else "storage"
            raise UserError(f"{path}: a tensor of shape {list(shape)} reaches element {last} of a {where} of "
                            f"{numel}. Is it a complete PyTorch file?")
    return offset, shape, stride


def read_pth(path):
    """The object saved in the PyTorch file ``path``, with its tensors as numpy arrays.

    Reads the zip format of torch >= 1.6 and the legacy format; resolves no Python name except the
    tensor, storage, dtype and container names listed in the module docstring. Raises
    ``UserError`` (naming ``path``) for a file that is not a PyTorch file, is damaged, or refers to
    anything else (a pickled model class, a function ...).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":  # a zip archive: torch >= 1.6
                f.seek(0)
                with zipfile.ZipFile(f) as zf:
                    obj, raw, order = _load_zip(path, zf, os.fstat(f.fileno()).st_size)
            else:
                f.seek(0)
                obj, raw, order = _load_legacy(path, f)
        return _Materializer(path, raw, order).value(obj)
    except Refused as exc:
        raise UserError(f"{path} refers to {exc}, which is not unpickled: only tensors and plain containers are "
                        f"read from PyTorch files (as torch.load(weights_only=True) does), so no code in the file "
                        f"runs. Save only the state dict (torch.save(model.state_dict(), f)) or use a "
                        f".safetensors file.") from None
    except _NotPth as exc:
        raise UserError(f"{path} is not a PyTorch file this toolkit reads without PyTorch (neither the zip "
                        f"format of torch >= 1.6 nor the legacy format: {exc}). Pass the .pth that torch.save "
                        f"wrote, install PyTorch (pip install torch, the CPU build is enough) to read other "
                        f"formats, or convert a .safetensors file instead.") from None
    except UserError:
        raise
    except OSError as exc:
        raise UserError(f"could not read {path}: {exc}") from exc
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, TypeError, KeyError, IndexError,
            AttributeError, struct.error, RecursionError, MemoryError, OverflowError) as exc:
        raise UserError(f"could not read {path} as a PyTorch file ({type(exc).__name__}: {exc}). Is it a "
                        f"complete PyTorch file?") from None
