"""Security scan of the product source: safe YAML, no pickle, torch.load(weights_only=True),
np.load without pickles, no unguarded archive extraction; downloads verified by hash."""
import ast
import glob
import os
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def product_sources():
    files = sorted(glob.glob(os.path.join(ROOT, "mindcv_res2net", "**", "*.py"), recursive=True))
    files += sorted(glob.glob(os.path.join(ROOT, "*.py")))
    files += sorted(glob.glob(os.path.join(ROOT, "scripts", "**", "*.py"), recursive=True))
    return files


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _kw(call, name):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_const(node, value):
    return isinstance(node, ast.Constant) and node.value is value


_UNPICKLERS = {"pickle.Unpickler", "pickle._Unpickler"}  # the C unpickler, and the pure-Python one
# what a restricted unpickler may use of pickle: its base class and instruction table, the opcodes it
# replaces (BUILD, BYTEARRAY8) and the error it raises
_ALLOWED_PICKLE_USES = _UNPICKLERS | {"pickle._Unpickler.dispatch", "pickle.BUILD", "pickle.BYTEARRAY8",
                                      "pickle.UnpicklingError"}


def _restricted_unpickler_only(tree):
    """pickle is imported only to subclass its unpickler with an own ``find_class`` and
    ``persistent_load`` (the torch-free .pth reader), or to catch ``pickle.UnpicklingError`` (the module
    that runs that unpickler), and never used otherwise."""
    uses = {_dotted(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _dotted(n).startswith("pickle.")}
    subclasses = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
                  and any(_dotted(b) in _UNPICKLERS for b in n.bases)]
    if not subclasses:
        return uses <= {"pickle.UnpicklingError"} and bool(uses)
    for cls in subclasses:
        methods = {f.name for f in cls.body if isinstance(f, ast.FunctionDef)}
        if not {"find_class", "persistent_load"} <= methods:
            return False
    return uses <= _ALLOWED_PICKLE_USES


def scan(source, filename="<src>"):
    """Problems found in one file's source: list of 'file:line: what'."""
    problems = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names]
            mod = getattr(node, "module", None) or ""
            if "pickle" in names or mod in ("pickle", "cPickle", "dill") or "dill" in names:
                if not _restricted_unpickler_only(tree):
                    problems.append(f"{filename}:{node.lineno}: imports pickle")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        where = f"{filename}:{node.lineno}"
        if name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load"):
            loader = _kw(node, "Loader")
            if len(node.args) > 1:
                loader = node.args[1]
            if loader is None or "Safe" not in _dotted(loader):
                problems.append(f"{where}: {name} without SafeLoader")
        if name.startswith(("pickle.", "cPickle.", "dill.")) and last in ("load", "loads"):
            problems.append(f"{where}: {name}")
        if name == "torch.load" and not _is_const(_kw(node, "weights_only"), True):
            problems.append(f"{where}: torch.load without weights_only=True")
        if name in ("np.load", "numpy.load"):
            ap = _kw(node, "allow_pickle")
            if ap is not None and not _is_const(ap, False):
                problems.append(f"{where}: {name} with allow_pickle")
        if last in ("extractall", "extract"):
            problems.append(f"{where}: archive extraction {name}")
    return problems


BAD_SAMPLES = [
    "import yaml\nyaml.load(open('x'))\n",
    "import yaml\nyaml.load(f, Loader=yaml.Loader)\n",
    "import pickle\n",
    "import pickle\nclass U(pickle.Unpickler):\n    def persistent_load(self, pid):\n        return pid\n",
    "import pickle\nclass U(pickle.Unpickler):\n    def find_class(self, m, n):\n        raise ValueError\n"
    "    def persistent_load(self, pid):\n        return pid\npickle.loads(b'')\n",
    "import torch\ntorch.load('x')\n",
    "import torch\ntorch.load('x', weights_only=False)\n",
    "import numpy as np\nnp.load('x', allow_pickle=True)\n",
    "import tarfile\ntarfile.open('x').extractall('d')\n",
]
GOOD_SAMPLES = [
    "import yaml\nyaml.safe_load(f)\nyaml.load(f, Loader=yaml.SafeLoader)\n",
    "import torch\ntorch.load('x', map_location='cpu', weights_only=True)\n",
    "import numpy as np\nnp.load('x')\nnp.load('x', allow_pickle=False)\n",
]


@pytest.mark.parametrize("src", BAD_SAMPLES)
def test_scanner_catches_bad_code(src):
    assert scan(src), src


@pytest.mark.parametrize("src", GOOD_SAMPLES)
def test_scanner_accepts_safe_code(src):
    assert scan(src) == [], src


def test_product_source_is_clean():
    files = product_sources()
    assert any(f.endswith(os.path.join("mindcv_res2net", "weights/torch_conversion.py")) for f in files)
    assert any(f.endswith("config.py") for f in files)
    problems = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            problems += scan(f.read(), os.path.relpath(path, ROOT))
    # archive extraction: there is none in the product; if some appears it must get a guard + a test
    assert problems == [], "\n".join(problems)


def test_torch_load_calls_exist_and_are_weights_only():
    """The converter does read PyTorch files: make sure the scan above saw that call."""
    with open(os.path.join(ROOT, "mindcv_res2net", "weights/torch_conversion.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _dotted(n.func) == "torch.load"]
    assert calls and all(_is_const(_kw(c, "weights_only"), True) for c in calls)


def test_hash_mismatch_deletes_the_file(tmp_path):
    from mindcv_res2net.errors import UserError
    from mindcv_res2net.weights import pretrained as P

    good = tmp_path / "w.ckpt"
    good.write_bytes(b"the real weights")
    digest = P.sha256_of(str(good))
    src = SimpleNamespace(filename="w.ckpt", size=None, sha256=digest[:10], tag="test")
    assert P._verify(str(good), src, "http://example/w.ckpt") == digest
    assert good.exists()

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"tampered weights")
    (tmp_path / "bad.ckpt.sha256").write_text(f"{digest} 16\n")
    src = SimpleNamespace(filename="bad.ckpt", size=None, sha256=digest[:10], tag="test")
    with pytest.raises(UserError, match="deleted"):
        P._verify(str(bad), src, "http://example/bad.ckpt")
    assert not bad.exists() and not (tmp_path / "bad.ckpt.sha256").exists()

    wrong_size = tmp_path / "short.ckpt"
    wrong_size.write_bytes(b"the real weights"[:5])
    src = SimpleNamespace(filename="short.ckpt", size=16, sha256=None, tag="test")
    with pytest.raises(UserError, match="bytes"):
        P._verify(str(wrong_size), src, "http://example/short.ckpt")
    assert not wrong_size.exists()
