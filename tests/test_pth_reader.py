"""``pth_reader.read_pth``: PyTorch files read without PyTorch.

Files are written with ``torch.save`` in both layouts (the zip archive of torch >= 1.6 and the legacy
stream of ``_use_new_zipfile_serialization=False``, the format of the official 2019 Res2Net release);
every array must equal ``torch.load(weights_only=True)`` bit for bit, dtype included. Pickles that
name anything but tensors are refused before any code in them runs, and ``python -m
mindcv_res2net.weights.torch_conversion`` writes the same checkpoint with and without torch installed.
"""
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from mindcv_res2net import UserError
from mindcv_res2net.weights.torch_conversion import read_state_dict_file
from mindcv_res2net.weights.pth_reader import read_pth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = [pytest.param(True, id="zip"), pytest.param(False, id="legacy")]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _save(torch, obj, path, zip_format):
    torch.save(obj, str(path), _use_new_zipfile_serialization=zip_format)
    return str(path)


def _tensors(torch):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 6, generator=g)
    return OrderedDict([
        ("conv.weight", torch.randn(4, 3, 3, 3, generator=g)),
        ("half", torch.randn(7, generator=g).half()),
        ("bf16", torch.randn(3, generator=g).bfloat16()),
        ("long", torch.arange(-3, 9, dtype=torch.int64).reshape(3, 4)),
        ("bool", torch.tensor([True, False, True])),
        ("bn.num_batches_tracked", torch.tensor(1000, dtype=torch.long)),  # 0-d
        ("base", base),
        ("tail", base[2:]),  # a view sharing base's storage at an offset
        ("transposed", base.t()),  # non-contiguous
        ("strided", base[1:, ::2]),  # non-contiguous, offset
        ("empty", torch.zeros(0, 3)),
        ("param", torch.nn.Parameter(torch.randn(2, generator=g))),
    ])


def _assert_same(got, ref, torch, where="root"):
    """``got`` (read_pth) equals ``ref`` (torch.load): containers alike, arrays bit for bit."""
    if isinstance(ref, torch.Tensor):
        want = ref.detach()
        want = want.float().numpy() if want.dtype == torch.bfloat16 else want.numpy()  # bf16: exact widening
        assert isinstance(got, np.ndarray), where
        assert got.dtype == want.dtype and got.shape == want.shape, (where, got.dtype, want.dtype, got.shape)
        assert got.tobytes() == np.ascontiguousarray(want).tobytes(), where
    elif isinstance(ref, dict):
        assert type(got) is type(ref) and list(got) == list(ref), where
        for k in ref:
            _assert_same(got[k], ref[k], torch, f"{where}.{k}")
    elif isinstance(ref, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(ref), where
        for i, (a, b) in enumerate(zip(got, ref)):
            _assert_same(a, b, torch, f"{where}[{i}]")
    else:
        assert got == ref, where


@pytest.mark.torch
@pytest.mark.parametrize("zip_format", FORMATS)
def test_arrays_equal_torch_load(torch, tmp_path, zip_format):
    sd = _tensors(torch)
    obj = {"epoch": 3, "arch": "res2net50", "best": 0.75, "shape": torch.Size([2, 3]),
           "state_dict": OrderedDict(("module." + k, v) for k, v in sd.items()),
           "model": {"model": {"fc.weight": sd["base"], "fc.bias": sd["tail"][0]}},
           "history": [sd["long"], (sd["half"], None)]}
    path = _save(torch, obj, tmp_path / "w.pth", zip_format)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    got = read_pth(path)
    _assert_same(got, ref, torch)
    assert got["shape"] == (2, 3)
    # arrays are independent copies: a view and its base do not share memory
    assert not np.shares_memory(got["state_dict"]["module.base"], got["state_dict"]["module.tail"])


@pytest.mark.torch
@pytest.mark.parametrize("zip_format", FORMATS)
def test_every_dtype_and_a_modules_state_dict_equal_torch_load(torch, tmp_path, zip_format):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, generator=g) * 100
    dtypes = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
              torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128]
    if zip_format:  # torch >= 2.3 writes these as untyped storages, which its legacy format cannot load
        dtypes += [torch.uint16, torch.uint32, torch.uint64]
    obj = OrderedDict((str(dt), torch.complex(x, -x).to(dt) if dt.is_complex else
                       (x.abs() if dt in (torch.uint8, torch.uint16, torch.uint32, torch.uint64) else x).to(dt))
                      for dt in dtypes)
    # model.state_dict(): an OrderedDict whose `_metadata` torch.save writes with the pickle BUILD instruction
    obj["module"] = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3)).state_dict()
    path = _save(torch, obj, tmp_path / "dtypes.pth", zip_format)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    got = read_pth(path)
    _assert_same(got, ref, torch)
    assert got["module"]._metadata == ref["module"]._metadata == {"": {"version": 1}, "0": {"version": 1},
                                                                   "1": {"version": 2}}


@pytest.mark.torch
@pytest.mark.parametrize("zip_format", FORMATS)
@pytest.mark.parametrize("wrap", ["state_dict", "model", "plain"])
def test_converter_reads_wrapped_files_without_torch(torch, tmp_path, monkeypatch, zip_format, wrap):
    sd = _tensors(torch)
    del sd["param"]
    body = OrderedDict(("module." + k, v) for k, v in sd.items())
    obj = body if wrap == "plain" else {wrap: body, "epoch": 1}
    path = _save(torch, obj, tmp_path / "w.pth", zip_format)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    ref = ref if wrap == "plain" else ref[wrap]
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    got = read_state_dict_file(path)
    assert list(got) == list(sd)  # wrapper and module. prefix removed
    for k in sd:
        _assert_same(got[k], ref["module." + k], torch, k)


class _RunsCommand:
    """A pickled object whose unpickling would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _legacy_stream(path, obj):
    """A legacy-layout file (magic, protocol, system info, object, keys) written with plain pickle."""
    with open(path, "wb") as f:
        for part in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}, obj, []):
            pickle.dump(part, f, protocol=2)
    return str(path)


def _zip_archive(path, obj):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        z.writestr("archive/version", "3\n")
    return str(path)


@pytest.mark.parametrize("writer", [_legacy_stream, _zip_archive], ids=["legacy", "zip"])
def test_code_in_the_pickle_does_not_run(tmp_path, monkeypatch, writer):
    marker = tmp_path / "ran"
    path = writer(tmp_path / "evil.pth", {"state_dict": {"w": 1}, "x": _RunsCommand(marker)})
    with pytest.raises(UserError, match=r"evil\.pth refers to the Python name posix\.system.*weights_only"):
        read_pth(path)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(UserError, match="posix.system"):
        read_state_dict_file(path)
    assert not marker.exists()
    # the payload is real: a plain unpickler runs it
    if writer is _zip_archive:
        pickle.loads(zipfile.ZipFile(path).read("archive/data.pkl"))
    else:
        with open(path, "rb") as f:
            for _ in range(4):  # magic, protocol, system info, object
                pickle.load(f)
    assert marker.exists()


@pytest.mark.torch
@pytest.mark.parametrize("zip_format", FORMATS)
def test_torch_saved_payload_and_whole_models_are_refused(torch, tmp_path, zip_format):
    marker = tmp_path / "ran"
    path = _save(torch, {"w": torch.ones(2), "x": _RunsCommand(marker)}, tmp_path / "evil.pth", zip_format)
    with pytest.raises(UserError, match="posix.system"):
        read_pth(path)
    assert not marker.exists()
    model = _save(torch, torch.nn.Linear(2, 3), tmp_path / "model.pth", zip_format)
    with pytest.raises(UserError, match=r"model\.pth refers to the Python name torch\.nn\.modules\.linear\.Linear"
                                        r".*model\.state_dict\(\)"):
        read_pth(model)


def test_other_files_name_the_file_and_the_fix(tmp_path):
    plain = tmp_path / "plain.pth"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    for path in (plain, text):
        with pytest.raises(UserError, match=rf"{path.name} is not a PyTorch file.*pip install torch.*\.safetensors"):
            read_pth(path)
    script = tmp_path / "script.pt"
    with zipfile.ZipFile(script, "w") as z:
        z.writestr("script/constants.pkl", b"")
        z.writestr("script/code/__torch__.py", b"")
    with pytest.raises(UserError, match=r"script\.pt is a TorchScript archive.*state_dict"):
        read_pth(script)
    with pytest.raises(UserError, match="could not read"):
        read_pth(tmp_path / "missing.pth")


@pytest.mark.torch
@pytest.mark.parametrize("zip_format", FORMATS)
def test_truncated_files_are_reported(torch, tmp_path, zip_format):
    path = _save(torch, {"w": torch.randn(64, 64)}, tmp_path / "full.pth", zip_format)
    data = open(path, "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.pth.*complete PyTorch file"):
        read_pth(cut)


def _ckpt_arrays(path):
    from mindcv_res2net.weights.checkpoint_file import read_checkpoint
    return {k: v for k, v in read_checkpoint(str(path)).items() if isinstance(v, np.ndarray)}


@pytest.mark.torch
def test_convert_gives_the_same_checkpoint_with_and_without_torch(torch, tmp_path, monkeypatch):
    import torch_reference as R

    from mindcv_res2net.cli.convert_args import main as convert_main
    from mindcv_res2net.weights import pth_reader

    sd = R.make_state_dict("res2net50", num_classes=10, seed=3)
    # the official release's layout: legacy format, DataParallel prefix
    src = _save(torch, {"state_dict": OrderedDict(("module." + k, v) for k, v in sd.items())},
                tmp_path / "res2net50_26w_4s.pth", zip_format=False)

    # without torch: the CLI in a fresh interpreter where `import torch` fails
    no_torch = tmp_path / "no_torch.ckpt"
    wrapper = ("import runpy, sys\n"
               "sys.modules['torch'] = None\n"
               "sys.argv = ['convert'] + sys.argv[1:]\n"
               "runpy.run_module('mindcv_res2net.convert', run_name='__main__')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", wrapper, src, "--model", "res2net50", "--out", str(no_torch)],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote" in proc.stdout

    # with torch, read by torch.load(weights_only=True) (the converter's fallback)
    def refuse(path):
        raise UserError("read with torch instead")

    monkeypatch.setattr(pth_reader, "read_pth", refuse)
    with_torch = tmp_path / "torch.ckpt"
    assert convert_main([src, "--model", "res2net50", "--out", str(with_torch)]) == 0

    a, b = _ckpt_arrays(no_torch), _ckpt_arrays(with_torch)
    assert list(a) == list(b) and len(a) > 300
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    np.testing.assert_array_equal(a["classifier.weight"], sd["fc.weight"].numpy())
