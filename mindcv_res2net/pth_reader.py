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
uses for sets, bytes and complex numbers. Each of them is replaced by a small function of this module
that builds plain data; no name is ever imported, so no code in the file runs. Any other name (a
model class, ``os.system`` ...) is refused with ``UserError`` naming the file and the name.

Tensors come back as numpy arrays (contiguous copies, native byte order, the tensor's dtype;
bfloat16, which numpy lacks, widened exactly to float32); ``torch.Size`` as a tuple, dtypes and devices
as strings such as ``'torch.float16'`` / ``'cpu'``; dicts, ``OrderedDict``, lists and tuples as they
were saved.
"""
import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from .errors import UserError

__all__ = ["read_pth"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# storage class -> (numpy type code, element size); "bf16" is read as uint16 and widened
_STORAGE_TYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1", "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16",
    "UntypedStorage": "u1",
}
# torch dtype name -> numpy type code (None: a dtype numpy cannot hold)
_DTYPES = {
    "float64": "f8", "double": "f8", "float32": "f4", "float": "f4", "float16": "f2", "half": "f2",
    "bfloat16": "bf16", "int64": "i8", "long": "i8", "int32": "i4", "int": "i4", "int16": "i2",
    "short": "i2", "int8": "i1", "uint8": "u1", "bool": "b1", "uint16": "u2", "uint32": "u4",
    "uint64": "u8", "complex64": "c8", "cfloat": "c8", "complex128": "c16", "cdouble": "c16",
    "float8_e4m3fn": None, "float8_e5m2": None, "float8_e4m3fnuz": None, "float8_e5m2fnuz": None,
    "complex32": None, "chalf": None, "qint8": None, "quint8": None, "qint32": None, "quint4x2": None,
}


def _element_size(code):
    return 2 if code == "bf16" else np.dtype(code).itemsize


class _Refused(Exception):
    """Raised inside the unpickler; ``read_pth`` turns it into a ``UserError`` naming the file."""


class _StorageType:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _DType:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _TensorClass:
    """``torch.Tensor`` / ``torch.nn.Parameter`` as the ``new_type`` of ``_rebuild_from_type_v2``."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _StorageRef:
    """A storage named in the pickle; its bytes are looked up by ``key`` after unpickling."""
    __slots__ = ("key", "code", "offset")

    def __init__(self, key, code, offset=0):
        self.key, self.code, self.offset = key, code, offset  # offset: in elements of ``code`` (legacy views)


class _PendingTensor:
    """A tensor to cut out of its storage once all storage bytes are at hand."""
    __slots__ = ("storage", "offset", "size", "stride", "code")

    def __init__(self, storage, offset, size, stride, code=None):
        if not isinstance(storage, _StorageRef):
            raise _Refused(f"a tensor whose storage is {type(storage).__name__}, not a storage record")
        self.storage = storage
        self.offset = _int(offset, "storage offset")
        self.size = tuple(_int(s, "size") for s in _seq(size, "size"))
        self.stride = tuple(_int(s, "stride") for s in _seq(stride, "stride"))
        self.code = storage.code if code is None else code
        if len(self.size) != len(self.stride):
            raise _Refused(f"a tensor of size {self.size} with stride {self.stride}")


def _int(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Refused(f"a tensor {what} of {value!r}")
    return value


def _seq(value, what):
    if not isinstance(value, (tuple, list)):
        raise _Refused(f"a tensor {what} of {value!r}")
    return value


# -- the replacements for the names a .pth pickle may use -----------------------------------------

def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    # _rebuild_tensor_v2 adds (requires_grad, backward_hooks[, metadata]), all irrelevant to the values
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, *_ignored):
    # torch >= 2.3 for dtypes without a typed storage class (uint16 ...): an untyped byte storage
    if not isinstance(dtype, _DType):
        raise _Refused(f"a tensor of dtype {dtype!r}")
    code = _DTYPES.get(dtype.name)
    if code is None:
        raise _Refused(f"a tensor of dtype torch.{dtype.name}, which numpy cannot hold")
    return _PendingTensor(storage, storage_offset, size, stride, code=code)


def _rebuild_parameter(data, *_ignored):
    if not isinstance(data, _PendingTensor):
        raise _Refused(f"a parameter holding {type(data).__name__}")
    return data


def _rebuild_from_type(func, new_type, args, state=None):
    # a plain Tensor / Parameter with Python attributes (``state``, dropped); other subclasses refused
    known = (_rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter)
    if func not in known or not isinstance(new_type, _TensorClass):
        raise _Refused("a tensor subclass")
    if not isinstance(args, tuple):
        raise _Refused(f"tensor arguments {type(args).__name__}")
    return func(*args)


def _torch_size(dims=()):
    return tuple(_int(d, "size") for d in _seq(dims, "size"))


def _torch_device(kind, index=None):
    if not isinstance(kind, str) or not (index is None or isinstance(index, int)):
        raise _Refused(f"a device {kind!r}, {index!r}")
    return kind if index is None else f"{kind}:{index}"


def _codecs_encode(text, encoding="utf-8"):
    # how pickle protocol 2 writes bytes objects: _codecs.encode(str, 'latin1')
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode of {type(text).__name__} with {encoding!r}")
    return text.encode("latin1")


def _plain(cls):
    def build(*args):
        if len(args) > 1 or not all(isinstance(a, (list, tuple, str, bytes, int, float, complex)) for a in args):
            raise _Refused(f"{cls.__name__}() of {[type(a).__name__ for a in args]}")
        return cls(*args)
    return build


def _ordered_dict(*args):
    if args and not (len(args) == 1 and isinstance(args[0], (list, tuple))):
        raise _Refused("collections.OrderedDict() of other than a list of pairs")
    return collections.OrderedDict(*args)


def _counter(*args):
    if args and not (len(args) == 1 and isinstance(args[0], (dict, list, tuple))):
        raise _Refused("collections.Counter() of other than a dict or list")
    return collections.Counter(*args)


_TORCH_UTILS = {
    "_rebuild_tensor": _rebuild_tensor,
    "_rebuild_tensor_v2": _rebuild_tensor,
    "_rebuild_tensor_v3": _rebuild_tensor_v3,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter,
}
_BUILTINS = {"set": _plain(set), "frozenset": _plain(frozenset), "bytearray": _plain(bytearray),
             "complex": _plain(complex)}


def _resolve(module, name):
    """The replacement for the global ``module.name``, or None where it is not allowed."""
    if module == "torch._utils":
        return _TORCH_UTILS.get(name)
    if module == "torch._tensor" and name == "_rebuild_from_type_v2":
        return _rebuild_from_type
    if module in ("torch", "torch.storage") and name in _STORAGE_TYPES:
        return _StorageType(name)
    if module == "torch":
        if name in _DTYPES:
            return _DType(name)
        if name == "Size":
            return _torch_size
        if name == "device":
            return _torch_device
        if name == "Tensor":
            return _TensorClass(name)
    if module == "torch.nn.parameter" and name == "Parameter":
        return _TensorClass(name)
    if module == "collections":
        return {"OrderedDict": _ordered_dict, "Counter": _counter}.get(name)
    if module in ("builtins", "__builtin__"):  # protocol 2 writes Python 3's builtins as __builtin__
        return _BUILTINS.get(name)
    if module == "_codecs" and name == "encode":
        return _codecs_encode
    return None


class _Unpickler(pickle.Unpickler):
    """Resolves only the names of ``_resolve`` and storage records; records the storages seen."""

    def __init__(self, file, storages, zip_format):
        super().__init__(file, encoding="utf-8")
        self.storages = storages  # key -> type code of the first reference
        self.zip_format = zip_format

    def find_class(self, module, name):
        found = _resolve(module, name)
        if found is None:
            raise _Refused(f"the Python name {module}.{name}")
        return found

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise _Refused(f"the persistent record {str(pid)[:80]}")
        if self.zip_format:
            if len(pid) != 5:
                raise _Refused(f"the storage record {str(pid)[:80]}")
            _, storage_type, key, _location, _numel = pid
            view = None
        else:
            if len(pid) != 6:
                raise _Refused(f"the storage record {str(pid)[:80]}")
            _, storage_type, key, _location, _numel, view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise _Refused(f"the storage record {str(pid)[:80]}")
        code = _STORAGE_TYPES[storage_type.name]
        self.storages.setdefault(key, code)
        if view is None:
            return _StorageRef(key, code)
        # storages of torch < 0.4 could be views (offset, size) into another storage
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[1], int)):
            raise _Refused(f"the storage view {view!r}")
        return _StorageRef(key, code, offset=_int(view[1], "storage view offset"))


# -- the two file layouts -------------------------------------------------------------------------

def _load_zip(path, zf):
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
        byteorder = zf.read(base + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise UserError(f"{path}: unknown byte order {byteorder!r}. Is it a complete PyTorch file?")
    storages = {}
    obj = _Unpickler(io.BytesIO(zf.read(base + "data.pkl")), storages, zip_format=True).load()
    raw = {}
    for key in storages:
        record = f"{base}data/{key}"
        if record not in names:
            raise UserError(f"{path} lacks the storage record {record}. Is it a complete PyTorch file?")
        raw[key] = zf.read(record)
    return obj, raw, "<" if byteorder == "little" else ">"


def _load_legacy(path, f):
    def load(what, storages=None):
        try:
            return _Unpickler(f, {} if storages is None else storages, zip_format=False).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
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
        size = _element_size(storages[key])
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

def _array(t, raw, order, path):
    code = t.code
    size = _element_size(code)
    buf = raw[t.storage.key]
    offset = t.offset
    if t.storage.offset:  # a legacy storage view: element offset in the root storage's type
        offset += t.storage.offset * _element_size(t.storage.code) // size
    numel = len(buf) // size
    shape, stride = t.size, t.stride
    if 0 in shape:
        last = -1
    else:
        last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
    if last >= numel:
        raise UserError(f"{path}: a tensor of shape {list(shape)} reaches element {last} of a storage of {numel}. "
                        f"Is it a complete PyTorch file?")
    dtype = np.dtype(order + ("u2" if code == "bf16" else code)) if code != "b1" else np.dtype(np.bool_)
    flat = np.frombuffer(buf, dtype=dtype, count=numel)
    if last < 0:
        out = np.zeros(shape, dtype=dtype)
    else:
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape=shape, strides=[s * size for s in stride],
                                               writeable=False)
        out = np.array(view, order="C")  # a contiguous copy (ascontiguousarray would make 0-d arrays 1-d)
    out = out.astype(out.dtype.newbyteorder("="), copy=False)
    if code == "bf16":
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def _materialize(obj, raw, order, path, memo):
    """``obj`` with every pending tensor replaced by its array (dicts and lists changed in place)."""
    if isinstance(obj, (str, bytes, int, float, complex, type(None))):
        return obj
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, _PendingTensor):
        out = memo[key] = _array(obj, raw, order, path)
    elif isinstance(obj, dict):
        memo[key] = out = obj
        for k, v in obj.items():
            obj[k] = _materialize(v, raw, order, path, memo)
    elif isinstance(obj, list):
        memo[key] = out = obj
        for i, v in enumerate(obj):
            obj[i] = _materialize(v, raw, order, path, memo)
    elif isinstance(obj, tuple):
        out = memo[key] = tuple(_materialize(v, raw, order, path, memo) for v in obj)
    elif isinstance(obj, _DType):
        out = "torch." + obj.name
    elif isinstance(obj, (set, frozenset, bytearray)) and not any(isinstance(v, _PendingTensor) for v in obj):
        out = obj
    else:  # a storage or a class token on its own: nothing numpy could hold
        raise UserError(f"{path} holds a bare {type(obj).__name__.strip('_')} outside a tensor, which is not read "
                        f"without PyTorch: save the state dict (torch.save(model.state_dict(), f)).")
    return out


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
                    obj, raw, order = _load_zip(path, zf)
            else:
                f.seek(0)
                obj, raw, order = _load_legacy(path, f)
        return _materialize(obj, raw, order, path, {})
    except _Refused as exc:
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
            AttributeError, struct.error, RecursionError, MemoryError) as exc:
        raise UserError(f"could not read {path} as a PyTorch file ({type(exc).__name__}: {exc}). Is it a "
                        f"complete PyTorch file?") from None
