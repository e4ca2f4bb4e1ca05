"""Crafted weight files: each ends in one ``UserError`` naming the file, in bounded memory, never a crash.

The ``.pth`` files are written here opcode by opcode (pickle protocol 2, what ``torch.save`` writes), in
the zip layout of torch >= 1.6 and in the legacy stream layout; no PyTorch is needed. Reads that could
over-read, allocate gigabytes or crash run in a child interpreter that reports its outcome and the
growth of its peak resident memory during the read (``VmHWM`` of ``/proc/self/status``: unlike
``ru_maxrss``, it does not start from the parent's peak, which a child keeps across ``exec``). The
child runs under an address space limit: a reader that lets a file allocate without bound fails the
test instead of exhausting the machine. The ``.safetensors`` cases exercise the reader used where the
``safetensors`` package is absent (``convert._read_safetensors_manually``).
"""
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from mindcv_res2net import UserError
from mindcv_res2net.weights.torch_conversion import _read_safetensors_manually
from mindcv_res2net.weights.pth_reader import read_pth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUTS = ["zip", "legacy"]
MAX_GROWTH_MIB = 100  # the peak memory a refused file may add (without the checks: 1-2 GiB each)

# -- pickle protocol 2, written by hand -------------------------------------------------------------


def _global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _int(n):  # LONG1: any size and sign
    data = pickle.encode_long(n)
    return b"\x8a" + bytes([len(data)]) + data


def _str(text):  # BINUNICODE
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _tuple(*items):
    return b"(" + b"".join(items) + b"t"


def _dict(*pairs):
    return b"}(" + b"".join(k + v for k, v in pairs) + b"u"


def _call(func, *args):
    return func + _tuple(*args) + b"R"


def _build(state):
    return state + b"b"


NONE, FALSE = b"N", b"\x89"


def _storage(key, numel, layout, view=None, cls="FloatStorage"):
    parts = [_str("storage"), _global("torch", cls), _str(key), _str("cpu"), _int(numel)]
    if layout == "legacy":
        parts.append(NONE if view is None else _tuple(_str(view[0]), _int(view[1]), _int(view[2])))
    return _tuple(*parts) + b"Q"  # BINPERSID


def _tensor(storage, offset, size, stride):
    return _call(_global("torch._utils", "_rebuild_tensor_v2"), storage, _int(offset),
                 _tuple(*map(_int, size)), _tuple(*map(_int, stride)), FALSE,
                 _call(_global("collections", "OrderedDict")))


def _write_pth(path, layout, body, storages, itemsize=4):
    """``body`` (pickle opcodes of one object) and ``storages`` ({key: raw bytes}) as a .pth file."""
    data_pkl = b"\x80\x02" + body + b"."
    if layout == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            z.writestr("archive/data.pkl", data_pkl)
            z.writestr("archive/byteorder", "little")
            z.writestr("archive/version", "3\n")
            for key, raw in storages.items():
                z.writestr(f"archive/data/{key}", raw)
        return str(path)
    with open(path, "wb") as f:
        for part in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(part, f, protocol=2)
        f.write(data_pkl)
        pickle.dump(list(storages), f, protocol=2)
        for raw in storages.values():
            f.write(struct.pack("<q", len(raw) // itemsize) + raw)
    return str(path)


# -- reading in a child interpreter --------------------------------------------------------------------

_CHILD = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from mindcv_res2net.errors import UserError
from mindcv_res2net.weights.pth_reader import read_pth

def status_bytes(field):  # VmSize: address space; VmHWM: peak resident memory of this process
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

# a reader that lets the file allocate without bound gets MemoryError, not the machine's memory
resource.setrlimit(resource.RLIMIT_AS, (status_bytes("VmSize") + (3 << 30), resource.RLIM_INFINITY))
outcomes = []
for path in sys.argv[2:]:
    before = status_bytes("VmHWM")
    try:
        outcome = "read: " + repr(read_pth(path))[:300]
    except UserError as exc:
        outcome = "UserError: " + str(exc)
    except MemoryError:
        outcome = "MemoryError"
    outcomes.append({"outcome": outcome, "growth_mib": (status_bytes("VmHWM") - before) / (1 << 20)})
print(json.dumps(outcomes))
"""


def _read_in_child(*paths, root=ROOT, timeout=180):
    """[{"outcome": ..., "growth_mib": ...}] for each path, read one after the other in one child."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, root, *map(str, paths)], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"the reader crashed (exit status {proc.returncode}): {proc.stderr[-2000:]}"
    reports = json.loads(proc.stdout.strip().splitlines()[-1])
    for path, report in zip(paths, reports):  # shown with pytest -s
        print(f"{os.path.basename(str(path))}: peak +{report['growth_mib']:.1f} MiB, {report['outcome'][:160]}")
    return reports


def _assert_refused(report, path, *phrases):
    outcome = report["outcome"]
    assert outcome.startswith("UserError: "), outcome
    assert os.path.basename(str(path)) in outcome, outcome
    for phrase in phrases:
        assert phrase in outcome, outcome
    assert report["growth_mib"] < MAX_GROWTH_MIB, report


# -- 1. BUILD cannot rewrite what the reader checked ----------------------------------------------------

# (offset, size, stride) set by BUILD after _rebuild_tensor_v2 checked the tensor: 4096 floats of a
# 4-float storage (an over-read of process memory), and an address 8 TiB away (a segmentation fault)
_REWRITES = {"over_read": (-4092, (4096,), (1,)), "far_address": (-(2 ** 40), (2,), (2 ** 40,))}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rewrite", list(_REWRITES))
def test_build_cannot_rewrite_a_checked_tensor(tmp_path, layout, rewrite):
    offset, size, stride = _REWRITES[rewrite]
    state = _tuple(NONE, _dict((_str("offset"), _int(offset)), (_str("size"), _tuple(*map(_int, size))),
                               (_str("stride"), _tuple(*map(_int, stride)))))
    body = _dict((_str("w"), _tensor(_storage("0", 4, layout), 0, (4,), (1,)) + _build(state)))
    path = _write_pth(tmp_path / f"{rewrite}.pth", layout, body, {"0": np.arange(4, dtype="<f4").tobytes()})
    (report,) = _read_in_child(path)
    _assert_refused(report, path, "BUILD")


@pytest.mark.parametrize("target", ["storage_type", "torch.Size", "storage"])
def test_build_is_refused_on_the_readers_objects(tmp_path, target):
    """BUILD on a name the reader resolves would change it for the rest of the process; it is refused, and
    a file read afterwards in the same process is read as before."""
    defaults = _build(_tuple(NONE, _dict((_str("__defaults__"), _tuple(_tuple(_int(9)))))))
    hostile = {
        "storage_type": _global("torch", "FloatStorage") + _build(_dict((_str("name"), _str("DoubleStorage")))),
        "torch.Size": _global("torch", "Size") + defaults + b")R",  # then called: torch.Size()
        "storage": _storage("0", 4, "zip") + _build(_tuple(NONE, _dict((_str("key"), _str("1"))))),
    }[target]
    raw = {"0": np.arange(4, dtype="<f4").tobytes(), "1": np.arange(4, dtype="<f4").tobytes()}
    bad = _write_pth(tmp_path / "bad.pth", "zip", _dict((_str("x"), hostile), (_str("y"), _int(1))), raw)
    good = _write_pth(tmp_path / "good.pth", "zip", _dict(
        (_str("shape"), _call(_global("torch", "Size"))),
        (_str("w"), _tensor(_storage("0", 4, "zip"), 0, (4,), (1,)))), raw)
    report_bad, report_good = _read_in_child(bad, good)
    _assert_refused(report_bad, bad, "BUILD")
    assert report_good["outcome"] == "read: {'shape': (), 'w': array([0., 1., 2., 3.], dtype=float32)}"


def test_build_restores_an_ordered_dicts_attributes_only(tmp_path):
    """``model.state_dict()`` is an OrderedDict whose ``_metadata`` torch.save writes with BUILD: kept, as
    torch.load does; an attribute that would hide one of the dict's methods is refused."""
    meta = _dict((_str(""), _dict((_str("version"), _int(1)))))
    items = _str("w"), _tensor(_storage("0", 2, "zip"), 0, (2,), (1,))
    sd = _call(_global("collections", "OrderedDict")) + _dict(items)[1:]  # SETITEMS into the OrderedDict
    raw = {"0": np.array([1.5, -2], "<f4").tobytes()}
    good = _write_pth(tmp_path / "good.pth", "zip", sd + _build(_dict((_str("_metadata"), meta))), raw)
    got = read_pth(good)
    assert type(got) is OrderedDict and list(got) == ["w"] and got._metadata == {"": {"version": 1}}
    np.testing.assert_array_equal(got["w"], np.array([1.5, -2], np.float32))
    bad = _write_pth(tmp_path / "bad.pth", "zip", sd + _build(_dict((_str("items"), _str("x")))), raw)
    with pytest.raises(UserError, match=r"bad\.pth refers to .*BUILD"):
        read_pth(bad)


_RECHECK = r"""
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from mindcv_res2net.errors import UserError
from mindcv_res2net.weights import pth_reader as P
from mindcv_res2net.weights import pth_unpickler as U

raw = {"0": np.arange(4, dtype="<f4").tobytes()}
def cut(offset, size, stride):
    t = U.PendingTensor(U._StorageRef("0", "f4"), 0, (1,), (1,))  # checked here, then changed
    t.offset, t.size, t.stride = offset, size, stride
    return P._Materializer("x.pth", raw, "<").value(t)

assert cut(1, (3,), (1,)).tolist() == [1, 2, 3] and cut(3, (2, 0), (0, 5)).shape == (2, 0)
for layout in [(-4092, (4096,), (1,)), (-(2 ** 40), (2,), (2 ** 40,)), (2, (3,), (1,)), (0, (2, 2), (2 ** 62, 1)),
               (4, (1,), (1,)), (0, (4,), (-1,)), (True, (1,), (1,)), (0, (1.0,), (1,)), (0, "ab", (1,)),
               (0, (2,), (1, 1)), (0, (1,) * 100, (1,) * 100)]:
    try:
        print("read", layout, cut(*layout))
    except UserError as exc:
        assert str(exc).startswith("x.pth: a tensor"), exc
print("ok")
"""


def test_tensor_layout_is_checked_again_where_the_array_is_cut():
    """Whatever changed a tensor after its first check, its array is cut only inside its storage (run in a
    child interpreter: without the check, these layouts read other memory or crash)."""
    proc = subprocess.run([sys.executable, "-c", _RECHECK, ROOT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stdout[-2000:],
                                                                  proc.stderr[-2000:])


_MALFORMED = {  # what each value becomes: a crash, a raw exception, or a 1 TiB allocation
    "dimensions": (_tensor(_storage("0", 4, "zip"), 0, (1,) * 100, (1,) * 100), "100 sizes"),
    "complex_overflow": (_call(_global("__builtin__", "complex"), _int(10 ** 400)), "OverflowError"),
    "bytearray8": (b"\x96" + struct.pack("<Q", 1 << 40) + b"abc", "protocol 5 bytearray"),
}


@pytest.mark.parametrize("case", list(_MALFORMED))
def test_malformed_values_end_in_one_error(tmp_path, case):
    value, phrase = _MALFORMED[case]
    path = _write_pth(tmp_path / f"{case}.pth", "zip", _dict((_str("v"), value)), {"0": bytes(16)})
    (report,) = _read_in_child(path)
    _assert_refused(report, path, phrase)


# -- 2. tiny files that would cost gigabytes --------------------------------------------------------------


def test_bytearray_of_a_size_is_refused(tmp_path):
    body = _dict((_str("b"), _call(_global("__builtin__", "bytearray"), _int(1 << 30))))
    path = _write_pth(tmp_path / "bytearray.pth", "zip", body, {})
    (report,) = _read_in_child(path)
    _assert_refused(report, path, "bytearray")
    # the two forms pickle writes for a bytearray are read
    ok = _dict((_str("p2"), _call(_global("__builtin__", "bytearray"), _str("ab\xff"), _str("latin-1"))),
               (_str("p3"), _call(_global("builtins", "bytearray"),
                                  _call(_global("_codecs", "encode"), _str("cd"), _str("latin1")))))
    assert read_pth(_write_pth(tmp_path / "ok.pth", "zip", ok, {})) == {"p2": bytearray(b"ab\xff"),
                                                                       "p3": bytearray(b"cd")}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stride_zero_tensor_cannot_multiply_its_storage(tmp_path, layout):
    body = _dict((_str("w"), _tensor(_storage("0", 1, layout), 0, (1 << 28,), (0,))))  # 1 GiB of one float
    path = _write_pth(tmp_path / "expanded.pth", layout, body, {"0": np.float32(1.5).tobytes()})
    (report,) = _read_in_child(path)
    _assert_refused(report, path, "1.0 GiB", "2 x the")


def test_many_tensors_over_one_storage_are_bounded(tmp_path):
    n, numel = 20000, 16384  # 20,000 views of one 64 KiB storage: 1.2 GiB of arrays
    storage = _storage("0", numel, "zip") + b"q\x01"  # BINPUT 1
    first = _tensor(storage, 0, (numel,), (1,))
    others = (_tensor(b"h\x01", 0, (numel,), (1,)) for _ in range(n - 1))  # BINGET 1
    body = b"](" + first + b"".join(others) + b"e"  # a list: EMPTY_LIST MARK ... APPENDS
    path = _write_pth(tmp_path / "views.pth", "zip", body, {"0": np.ones(numel, "<f4").tobytes()})
    assert os.path.getsize(path) < 3 << 20
    (report,) = _read_in_child(path)
    _assert_refused(report, path, "2 x the")


def test_compressed_zip_member_is_refused(tmp_path):
    path = tmp_path / "deflated.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        body = _dict((_str("w"), _tensor(_storage("0", 2, "zip"), 0, (2,), (1,))))
        z.writestr("archive/data.pkl", b"\x80\x02" + body + b".", compress_type=zipfile.ZIP_STORED)
        with z.open("archive/data/0", "w", force_zip64=True) as member:  # 1 GiB in ~1 MiB
            chunk = b"\x01" * (64 << 20)
            for _ in range(16):
                member.write(chunk)
    assert os.path.getsize(path) < 4 << 20
    (report,) = _read_in_child(path)
    _assert_refused(report, path, "archive/data/0 is compressed")


# -- 3. legacy storage views and dict keys -----------------------------------------------------------------

_ROOT8 = np.arange(8, dtype="<f4")


def _view_file(path, *tensors):
    """A legacy file {"t0": ..., "t1": ...}; each tensor: (view (key, offset, size), tensor size)."""
    pairs = [(_str(f"t{i}"), _tensor(_storage("0", 8, "legacy", view=view), 0, (size,), (1,)))
             for i, (view, size) in enumerate(tensors)]
    return _write_pth(path, "legacy", _dict(*pairs), {"0": _ROOT8.tobytes()})


def test_legacy_storage_views_are_read_as_torch_reads_them(tmp_path):
    # a view is (key, offset, size) in the root storage; the first view of a key serves every reference
    path = _view_file(tmp_path / "views.pth", (("v", 2, 3), 3), (("v", 4, 3), 2), (("u", 5, 3), 3))
    got = read_pth(path)
    np.testing.assert_array_equal(got["t0"], _ROOT8[2:5])
    np.testing.assert_array_equal(got["t1"], _ROOT8[2:4])
    np.testing.assert_array_equal(got["t2"], _ROOT8[5:8])
    try:
        import torch
    except ImportError:
        return
    ref = torch.load(path, weights_only=True)
    for key in ("t0", "t1", "t2"):
        np.testing.assert_array_equal(got[key], ref[key].numpy())


def test_legacy_view_bounds_are_checked(tmp_path):
    cases = {"tensor_past_view": ((("v", 2, 3), 5), "view of 3"),
             "view_past_storage": ((("v", 6, 5), 2), "storage view"),
             "view_named_as_root": ((("0", 2, 3), 3), "storage view")}
    for name, (tensor, phrase) in cases.items():
        path = _view_file(tmp_path / f"{name}.pth", tensor)
        with pytest.raises(UserError, match=rf"{name}\.pth.*{phrase}"):
            read_pth(path)


@pytest.mark.parametrize("where", ["dict_key", "set_element", "tuple_in_frozenset", "dtype_key"])
def test_tensors_as_keys_are_refused(tmp_path, where):
    tensor = _tensor(_storage("0", 2, "zip"), 0, (2,), (1,))
    obj = {
        "dict_key": b"}" + tensor + _int(1) + b"s",
        "set_element": _call(_global("__builtin__", "set"), b"]" + tensor + b"a"),
        "tuple_in_frozenset": _call(_global("__builtin__", "frozenset"), b"]" + _tuple(tensor) + b"a"),
        "dtype_key": b"}" + _global("torch", "float32") + _int(1) + b"s",
    }[where]
    path = _write_pth(tmp_path / f"{where}.pth", "zip", obj, {"0": bytes(8)})
    what = "dtype" if where == "dtype_key" else "tensor"
    with pytest.raises(UserError, match=rf"{where}\.pth.*a {what} as a dict key or set element"):
        read_pth(path)


# -- 9. the safetensors reader used without the safetensors package ---------------------------------------


def _write_safetensors(path, header, data, header_len=None):
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
    return str(path)


def _entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


def test_safetensors_reader_reads_every_dtype(tmp_path):
    arrays = {"f32": np.arange(6, dtype="<f4").reshape(2, 3), "f16": np.array([1.5, -2], "<f2"),
              "i64": np.array([-(2 ** 40), 7], "<i8"), "u8": np.array([0, 255], "u1"),
              "b": np.array([True, False]), "scalar": np.array(3.25, "<f8")}
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, arr in arrays.items():
        code = {"f4": "F32", "f2": "F16", "i8": "I64", "u1": "U8", "b1": "BOOL", "f8": "F64"}[arr.dtype.str[1:]]
        header[name] = _entry(code, arr.shape, len(data), len(data) + arr.nbytes)
        data += arr.tobytes()
    bf16 = np.array([1.0, -0.5, 3.0], np.float32)
    header["bf16"] = _entry("BF16", (3,), len(data), len(data) + 6)
    data += (bf16.view("<u4") >> 16).astype("<u2").tobytes()
    got = _read_safetensors_manually(_write_safetensors(tmp_path / "ok.safetensors", header, data))
    assert sorted(got) == sorted([*arrays, "bf16"])
    for name, arr in arrays.items():
        assert got[name].dtype == arr.dtype and got[name].shape == arr.shape
        np.testing.assert_array_equal(got[name], arr)
    np.testing.assert_array_equal(got["bf16"], bf16)
    try:
        from safetensors.numpy import load_file
    except ImportError:
        return
    del header["bf16"]
    plain = _write_safetensors(tmp_path / "plain.safetensors", header, data[: header["scalar"]["data_offsets"][1]])
    ref = load_file(plain)
    for name in arrays:
        np.testing.assert_array_equal(got[name], ref[name])


_F32_4 = np.arange(4, dtype="<f4").tobytes()
_SAFETENSORS_CASES = {
    "negative_offset": ({"a": _entry("F32", (2,), -8, 0), "b": _entry("F32", (2,), 0, 8)}, _F32_4, None,
                        "data_offsets"),
    "reversed_offsets": ({"a": _entry("F32", (0,), 8, 0)}, _F32_4, None, "data_offsets"),
    "overlap": ({"a": _entry("F32", (3,), 0, 12), "b": _entry("F32", (2,), 8, 16)}, _F32_4, None, "overlap"),
    "wrong_length": ({"a": _entry("F32", (3,), 0, 16)}, _F32_4, None, "shape"),
    "truncated": ({"a": _entry("F32", (8,), 0, 32)}, _F32_4, None, "ends"),
    "header_past_end": ({"a": _entry("F32", (4,), 0, 16)}, _F32_4, 1 << 40, "header"),
    "not_json": ({"a": _entry("F32", (4,), 0, 16)}, _F32_4, 5, "header"),
    "bad_shape": ({"a": _entry("F32", (-1, -4), 0, 16)}, _F32_4, None, "shape"),
    "many_dimensions": ({"a": _entry("F32", (1,) * 40 + (4,), 0, 16)}, _F32_4, None, "shape"),
    "list_dtype": ({"a": {"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]}}, _F32_4, None, "dtype"),
    "bad_entry": ({"a": {"dtype": "F32", "shape": [4]}}, _F32_4, None, "data_offsets"),
    "unknown_dtype": ({"a": _entry("F8_E4M3", (4,), 0, 4)}, _F32_4, None, "F8_E4M3"),
}


@pytest.mark.parametrize("case", list(_SAFETENSORS_CASES))
def test_safetensors_reader_refuses_inconsistent_files(tmp_path, case):
    header, data, header_len, phrase = _SAFETENSORS_CASES[case]
    path = _write_safetensors(tmp_path / f"{case}.safetensors", header, data, header_len)
    with pytest.raises(UserError, match=rf"{case}\.safetensors.*{phrase}"):
        _read_safetensors_manually(path)
