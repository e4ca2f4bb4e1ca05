"""The restricted unpickler of ``pth_reader``: the only names a PyTorch file's pickle may use, each
replaced by a small function of this module that builds plain data (no name is ever imported, so no
code in the file runs), and the tokens those functions return (storages, dtypes, tensors to cut out
of their storages once every storage's bytes are at hand).

What it refuses, and why, is listed in ``pth_reader``'s docstring: BUILD on anything but an
``OrderedDict``, ``bytearray`` of a size and protocol 5's ``BYTEARRAY8``, tensors of more than
``MAX_DIMS`` dimensions, legacy storage views out of their storage, any other Python name.
"""
import collections
import os
import pickle

import numpy as np

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


# the most bytes of arrays a file is read into: 2 x the bytes of its storages + 64 MiB
OUTPUT_FACTOR = 2
OUTPUT_FLOOR = 64 << 20
MAX_DIMS = 32  # numpy 1.x's limit (numpy crashes on a strided view of more than 64)


def element_size(code):
    return 2 if code == "bf16" else np.dtype(code).itemsize


class Refused(Exception):
    """Raised inside the unpickler; ``read_pth`` turns it into a ``UserError`` naming the file."""


class _StorageType:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class DType:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _TensorClass:
    """``torch.Tensor`` / ``torch.nn.Parameter`` as the ``new_type`` of ``_rebuild_from_type_v2``."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _StorageRef:
    """A storage named in the pickle; its bytes are looked up by ``key`` after unpickling. ``view``: None,
    or the (start, length) in bytes of a legacy storage view into storage ``key``."""
    __slots__ = ("key", "code", "view")

    def __init__(self, key, code, view=None):
        self.key, self.code, self.view = key, code, view


class PendingTensor:
    """A tensor to cut out of its storage once all storage bytes are at hand."""
    __slots__ = ("storage", "offset", "size", "stride", "code")

    def __init__(self, storage, offset, size, stride, code=None):
        if not isinstance(storage, _StorageRef):
            raise Refused(f"a tensor whose storage is {type(storage).__name__}, not a storage record")
        self.storage = storage
        self.offset = _int(offset, "storage offset")
        self.size = tuple(_int(s, "size") for s in _seq(size, "size"))
        self.stride = tuple(_int(s, "stride") for s in _seq(stride, "stride"))
        self.code = storage.code if code is None else code
        if len(self.size) != len(self.stride) or len(self.size) > MAX_DIMS:
            raise Refused(f"a tensor of {len(self.size)} sizes and {len(self.stride)} strides (numpy holds at most "
                           f"{MAX_DIMS} dimensions)")


def _int(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Refused(f"a tensor {what} of {repr(value)[:80]}")
    return value


def _seq(value, what):
    if not isinstance(value, (tuple, list)):
        raise Refused(f"a tensor {what} of {repr(value)[:80]}")
    return value


# -- the replacements for the names a .pth pickle may use -----------------------------------------

def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    # _rebuild_tensor_v2 adds (requires_grad, backward_hooks[, metadata]), all irrelevant to the values
    return PendingTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, *_ignored):
    # torch >= 2.3 for dtypes without a typed storage class (uint16 ...): an untyped byte storage
    if not isinstance(dtype, DType):
        raise Refused(f"a tensor of dtype {repr(dtype)[:80]}")
    code = _DTYPES.get(dtype.name)
    if code is None:
        raise Refused(f"a tensor of dtype torch.{dtype.name}, which numpy cannot hold")
    return PendingTensor(storage, storage_offset, size, stride, code=code)


def _rebuild_parameter(data, *_ignored):
    if not isinstance(data, PendingTensor):
        raise Refused(f"a parameter holding {type(data).__name__}")
    return data


def _rebuild_from_type(func, new_type, args, state=None):
    # a plain Tensor / Parameter with Python attributes (``state``, dropped); other subclasses refused
    known = (_rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter)
    if func not in known or not isinstance(new_type, _TensorClass):
        raise Refused("a tensor subclass")
    if not isinstance(args, tuple):
        raise Refused(f"tensor arguments {type(args).__name__}")
    return func(*args)


def _torch_size(dims=()):
    return tuple(_int(d, "size") for d in _seq(dims, "size"))


def _torch_device(kind, index=None):
    if not isinstance(kind, str) or not (index is None or isinstance(index, int)):
        raise Refused(f"a device {kind!r}, {index!r}")
    return kind if index is None else f"{kind}:{index}"


def _codecs_encode(text, encoding="utf-8"):
    # how pickle protocol 2 writes bytes objects: _codecs.encode(str, 'latin1')
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise Refused(f"_codecs.encode of {type(text).__name__} with {encoding!r}")
    return text.encode("latin1")


def _plain(cls):
    def build(*args):
        if len(args) > 1 or not all(isinstance(a, (list, tuple, str, bytes, int, float, complex)) for a in args):
            raise Refused(f"{cls.__name__}() of {[type(a).__name__ for a in args]}")
        return cls(*args)
    return build


def _bytearray(*args):
    # what pickle writes: bytearray(str, 'latin-1') (protocol 2) or bytearray(bytes) (3, 4); never a size,
    # which would allocate that many bytes from a few bytes of pickle
    if (args == () or (len(args) == 1 and isinstance(args[0], bytes))
            or (len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"))):
        return bytearray(*args)
    raise Refused(f"bytearray() of {[type(a).__name__ for a in args]} (only bytes are read, never a size)")


def _ordered_dict(*args):
    if args and not (len(args) == 1 and isinstance(args[0], (list, tuple))):
        raise Refused("collections.OrderedDict() of other than a list of pairs")
    return collections.OrderedDict(*args)


def _counter(*args):
    if args and not (len(args) == 1 and isinstance(args[0], (dict, list, tuple))):
        raise Refused("collections.Counter() of other than a dict or list")
    return collections.Counter(*args)


_TORCH_UTILS = {
    "_rebuild_tensor": _rebuild_tensor,
    "_rebuild_tensor_v2": _rebuild_tensor,
    "_rebuild_tensor_v3": _rebuild_tensor_v3,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter,
}
_BUILTINS = {"set": _plain(set), "frozenset": _plain(frozenset), "bytearray": _bytearray,
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
            return DType(name)
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


def kind(obj):
    """What ``obj`` is, in words, for a message."""
    tokens = {PendingTensor: "tensor", _StorageRef: "storage", DType: "dtype", _StorageType: "storage class",
              _TensorClass: "tensor class"}
    return tokens.get(type(obj), type(obj).__name__)


def _build(inst, state):
    """The pickle BUILD instruction: ``torch.load(weights_only=True)`` restores attributes on an
    ``OrderedDict`` (the ``_metadata`` of ``model.state_dict()``); nothing else here has state, and
    a BUILD on a tensor or a function would change it after it was checked."""
    if type(inst) is not collections.OrderedDict:
        raise Refused(f"the pickle BUILD instruction on a {kind(inst)} (attributes are restored on an "
                       f"OrderedDict only)")
    if not isinstance(state, dict):
        raise Refused(f"the pickle BUILD instruction with a {kind(state)} state on an OrderedDict")
    for name in state:
        if not isinstance(name, str) or hasattr(collections.OrderedDict, name):
            raise Refused(f"the pickle BUILD instruction setting the attribute {str(name)[:80]!r} of an "
                           f"OrderedDict")
    inst.__dict__.update(state)


class Unpickler(pickle._Unpickler):
    """Resolves only the names of ``_resolve`` and storage records; records the storages seen.

    The pure-Python unpickler of the standard library, whose instructions are a table that can be
    changed: BUILD goes through ``_build`` (the C unpickler would apply it to any object), and protocol
    5's BYTEARRAY8, which allocates its declared size before reading it, is refused."""
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, storages, zip_format):
        super().__init__(file, encoding="utf-8")
        self.storages = storages  # key -> type code of the first reference
        self.views = {}  # legacy view key -> its _StorageRef
        self.zip_format = zip_format

    def load_build(self):
        state = self.stack.pop()
        _build(self.stack[-1], state)

    def load_bytearray8(self):
        raise Refused("a protocol 5 bytearray (torch.save writes pickle protocol 2)")

    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def find_class(self, module, name):
        found = _resolve(module, name)
        if found is None:
            raise Refused(f"the Python name {module}.{name}")
        return found

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise Refused(f"the persistent record {str(pid)[:80]}")
        if self.zip_format:
            if len(pid) != 5:
                raise Refused(f"the storage record {str(pid)[:80]}")
            _, storage_type, key, _location, _numel = pid
            view = None
        else:
            if len(pid) != 6:
                raise Refused(f"the storage record {str(pid)[:80]}")
            _, storage_type, key, _location, _numel, view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise Refused(f"the storage record {str(pid)[:80]}")
        if key in self.views:
            raise Refused(f"a storage named like a storage view ({key!r})")
        code = _STORAGE_TYPES[storage_type.name]
        self.storages.setdefault(key, code)
        return _StorageRef(key, code) if view is None else self._view(key, code, view)

    def _view(self, key, code, view):
        # storages of torch < 0.4 could be views (view key, offset, size) into another storage, offset and
        # size in elements of the referring storage type; as in torch.load, a view key's first reference
        # defines the view and later ones get the same view
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)):
            raise Refused(f"the storage view {str(view)[:80]}")
        view_key = view[0]
        if view_key in self.storages:
            raise Refused(f"a storage view named like a storage ({view_key!r})")
        if view_key not in self.views:
            item = element_size(code)
            start, length = _int(view[1], "storage view offset") * item, _int(view[2], "storage view size") * item
            self.views[view_key] = _StorageRef(key, code, view=(start, length))
        return self.views[view_key]


class BoundedFile:
    """``read`` and ``readline`` of an open file that never ask for more than the bytes left in it: a
    length in a crafted pickle cannot make ``read`` allocate more than the file holds."""

    def __init__(self, f):
        self.f = f
        self.end = os.fstat(f.fileno()).st_size

    def read(self, n=-1):
        left = max(self.end - self.f.tell(), 0)
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readline(self, limit=-1):
        return self.f.readline(limit)
