"""The package's shape: every module imports on its own, the module-level import graph has no
cycle, an import inside a function only defers a heavy package (never our own modules, unless that
is what defers MindSpore or torch), and no .py file is over 600 lines.

The graph is read from the source (``ast``), not from a running interpreter: an edge ``a -> b``
is a module-level ``import``/``from ... import`` in ``a`` (relative imports resolved) that
names ``b``; ``from p import x`` names ``p/x.py`` when ``x`` is a submodule, else ``p/__init__.py``.
"""
import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "mindcv_res2net"
ENTRY_SCRIPTS = ("train", "validate", "predict", "export", "benchmark", "config")
ENTRY_DIRS = ()
# Our own top-level names: the package, the entry scripts and the benchmark helpers.
OWN = (PACKAGE,) + ENTRY_SCRIPTS + ENTRY_DIRS
MAX_LINES = 600
# Imports inside functions may only defer these (heavy, optional or platform-specific) packages.
DEFERRABLE = {
    "mindspore", "torch", "torchvision", "timm", "onnx", "onnxruntime", "matplotlib", "mpi4py", "tqdm", "PIL",
    "tensorboard", "tensorboardX", "safetensors", "mindcv", "psutil",
    "google",  # google.protobuf, MindSpore's protobuf: imported after MindSpore (onnx before MindSpore breaks it)
    "fcntl", "msvcrt",  # platform-specific
}
SKIP_DIRS = {"__pycache__", "build", "dist", "node_modules", "outputs", "data_cache"}


# ---------------------------------------------------------------------------------------------
# source discovery and the import graph
# ---------------------------------------------------------------------------------------------
def _package_modules(root=ROOT, package=PACKAGE):
    """{module name: path} for every .py file of the package."""
    modules = {}
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, package)):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                parts = os.path.relpath(path, root)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = path
    return modules


def _entry_files():
    """{module name: path} for the entry scripts and the benchmark helpers."""
    files = {n: os.path.join(ROOT, n + ".py") for n in ENTRY_SCRIPTS if os.path.isfile(os.path.join(ROOT, n + ".py"))}
    for d in ENTRY_DIRS:
        for name in sorted(os.listdir(os.path.join(ROOT, d))) if os.path.isdir(os.path.join(ROOT, d)) else ():
            if name.endswith(".py"):
                files[f"{d}.{name[:-3]}" if name != "__init__.py" else d] = os.path.join(ROOT, d, name)
    return files


def _parse(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def _is_package(path):
    return os.path.basename(path) == "__init__.py"


def _module_level_imports(tree):
    """Import nodes executed when the module is imported: everything outside function bodies
    (inside ``if``/``try``/``with`` and class bodies too)."""
    found = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)
    visit(tree)
    return found


def _function_level_imports(tree):
    """Import nodes inside function bodies, with the name of the enclosing function."""
    found = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if func is not None and isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, func))
            visit(child, inner)
    visit(tree, None)
    return found


def _absolute(node, module, path):
    """The absolute dotted name an ``ImportFrom`` starts from (``None`` for ``import``)."""
    if node.level == 0:
        return node.module
    package = module if _is_package(path) else module.rpartition(".")[0]
    parts = package.split(".")
    if node.level > 1:
        parts = parts[:len(parts) - (node.level - 1)]
    base = ".".join(parts)
    return f"{base}.{node.module}" if node.module else base


def _targets(node, module, path, known):
    """The modules in ``known`` that an import node names (see the module docstring)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    base = _absolute(node, module, path)
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in known:
            out.append(sub)
        elif base in known:
            out.append(base)
    return sorted(set(out))


def _external_names(node, module, path):
    """Top-level names of what an import node imports (``mindspore`` for ``mindspore.nn``)."""
    if isinstance(node, ast.Import):
        return {a.name.split(".")[0] for a in node.names}
    return {_absolute(node, module, path).split(".")[0]}


def _sources():
    """{module name: path}: the package's modules, the entry scripts and the benchmark helpers."""
    return {**_package_modules(), **_entry_files()}


def import_graph(sources=None):
    """{module: {module it imports at module level: line}}, over ``sources`` (default: the
    package, the entry scripts and the benchmark helpers)."""
    sources = _sources() if sources is None else sources
    graph = {}
    for module, path in sources.items():
        edges = {}
        for node in _module_level_imports(_parse(path)):
            for target in _targets(node, module, path, sources):
                if target != module:
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def find_cycle(graph):
    """One cycle as a list of modules ``[a, b, ..., a]``, or ``None`` (iterative DFS)."""
    state = {}  # 1: on the stack, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
    return None


def _reaches(graph, start, goal):
    """Whether ``goal`` is reachable from ``start`` along module-level imports."""
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return False


def heavy_packages(module, sources, graph):
    """The DEFERRABLE packages that importing ``module`` loads at module level: its own imports,
    those of every module of ours it imports, and those of the ``__init__`` of each package above."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen or m not in sources:
            continue
        seen.add(m)
        todo.extend(graph.get(m, ()))
        todo.append(m.rpartition(".")[0])
    heavy = set()
    for m in seen:
        for node in _module_level_imports(_parse(sources[m])):
            heavy |= _external_names(node, m, sources[m]) & DEFERRABLE
    return heavy


# ---------------------------------------------------------------------------------------------
# (a) every module imports in a fresh interpreter
# ---------------------------------------------------------------------------------------------
def _import_in_fresh_interpreter(module):
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)
    return module, proc.returncode, (proc.stdout + proc.stderr).strip()[-1500:]


def _check_fresh_imports(names):
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_import_in_fresh_interpreter, names))
    failed = [f"{m} (exit {rc}):\n{out}" for m, rc, out in results if rc != 0]
    assert not failed, "modules that do not import on their own:\n\n" + "\n\n".join(failed)


def _importable():
    """The package's modules and the entry scripts (the benchmark helpers need PyTorch)."""
    return sorted(_package_modules()) + [n for n in ENTRY_SCRIPTS if os.path.isfile(os.path.join(ROOT, n + ".py"))]


def _split_by_mindspore():
    """(modules that import without MindSpore, those that load it), from the source."""
    sources = _sources()
    graph = import_graph(sources)
    heavy = [m for m in _importable() if "mindspore" in heavy_packages(m, sources, graph)]
    return [m for m in _importable() if m not in heavy], heavy


def test_modules_without_mindspore_import_alone():
    """Each module that imports without MindSpore (config parsing, ``--help``) imports on its own in
    a new interpreter (two at a time)."""
    light, _ = _split_by_mindspore()
    assert PACKAGE in light and f"{PACKAGE}.errors" in light
    _check_fresh_imports(light)


def test_modules_import_alone_with_fresh_package_state():
    """Each module imported first, with none of our modules loaded before it (MindSpore itself is
    loaded once, in one interpreter: only the order in which our modules load matters here)."""
    modules = _importable()
    script = (
        "import importlib, sys, traceback\n"
        "import mindspore, mindspore.nn, numpy\n"
        f"own = {OWN!r}\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for m in [m for m in sys.modules if m.split('.')[0] in own]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except BaseException:\n"
        "        failed.append(name + ':\\n' + traceback.format_exc()[-1500:])\n"
        "print('\\n\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)
    assert proc.returncode == 0, "modules that do not import on their own:\n\n" + (proc.stdout + proc.stderr)[-6000:]


@pytest.mark.slow
def test_modules_with_mindspore_import_alone_in_fresh_interpreters():
    """The same, one new interpreter per module (two at a time): nothing shared at all."""
    _, heavy = _split_by_mindspore()
    _check_fresh_imports(heavy)


# ---------------------------------------------------------------------------------------------
# (b) no import cycle
# ---------------------------------------------------------------------------------------------
def test_find_cycle_finds_cycles():
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {}}) is None
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y": 1}, "y": {"y2": 1}, "y2": {"y": 1}}) == ["y", "y2", "y"]


def test_graph_resolves_relative_and_package_imports(tmp_path):
    files = {
        "pkg/__init__.py": "from .errors import E\n",
        "pkg/errors.py": "class E(Exception):\n    pass\n",
        "pkg/sub/__init__.py": "from . import a\nfrom .b import f\n",
        "pkg/sub/a.py": "import os\nfrom .. import errors\nfrom ..sub import b\n\n\ndef g():\n    from pkg import c\n",
        "pkg/sub/b.py": ("import pkg.errors\nfrom pkg.sub import helper_name\n"
                         "try:\n    from .a import x\nexcept ImportError:\n    pass\n\n\ndef f():\n    pass\n"),
        "pkg/c.py": "from pkg import sub\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(_package_modules(str(tmp_path), "pkg"))
    assert graph == {
        "pkg": {"pkg.errors": 1},
        "pkg.errors": {},
        "pkg.sub": {"pkg.sub.a": 1, "pkg.sub.b": 2},
        "pkg.sub.a": {"pkg.errors": 2, "pkg.sub.b": 3},  # not pkg.c: imported inside a function
        "pkg.sub.b": {"pkg.errors": 1, "pkg.sub": 2, "pkg.sub.a": 4},  # a package's name: its __init__.py
        "pkg.c": {"pkg.sub": 1},
    }
    assert find_cycle(graph) == ["pkg.sub", "pkg.sub.a", "pkg.sub.b", "pkg.sub"]


def test_module_level_import_graph_has_no_cycle():
    sources = _sources()
    graph = import_graph(sources)
    cycle = find_cycle(graph)
    if cycle:
        steps = [f"  {x} ({os.path.relpath(sources[x], ROOT)}:{graph[x][y]}) imports {y}"
                 for x, y in zip(cycle, cycle[1:])]
        pytest.fail("import cycle between our modules:\n" + "\n".join(steps))


# ---------------------------------------------------------------------------------------------
# (c) imports inside functions
# ---------------------------------------------------------------------------------------------
def _function_imports():
    """[(where, function, code, top-level names, our modules named)] for every import inside a
    function of the package, the entry scripts and the benchmark helpers."""
    sources = _sources()
    out = []
    for module, path in sources.items():
        for node, func in _function_level_imports(_parse(path)):
            out.append((f"{os.path.relpath(path, ROOT)}:{node.lineno}", module, func, ast.unparse(node),
                        _external_names(node, module, path), _targets(node, module, path, sources)))
    return out


def test_our_modules_are_imported_inside_functions_only_to_defer_heavy_packages():
    """An import of our own module inside a function is allowed only to defer a heavy package:
    the imported module loads one (e.g. MindSpore, torch) that the importing module does not load
    at module level (``train.py`` parses its config before MindSpore is loaded, so that a config
    error prints in well under a second), and it does not import the importing module back (a
    cycle dodged)."""
    sources = _sources()
    graph = import_graph(sources)
    bad = []
    for where, module, func, code, names, targets in _function_imports():
        if not names & set(OWN):
            continue
        cycle = [t for t in targets if _reaches(graph, t, module)]
        deferred = set()
        for target in targets:
            deferred |= heavy_packages(target, sources, graph)
        deferred -= heavy_packages(module, sources, graph)
        if cycle:
            bad.append(f"  {where} in {func}(): {code}  (a cycle: {cycle[0]} imports {module})")
        elif not deferred:
            bad.append(f"  {where} in {func}(): {code}")
    assert not bad, ("our own modules imported inside functions that dodge a cycle or defer no heavy "
                     "package (import them at module level):\n" + "\n".join(bad))


def test_other_imports_inside_functions_only_defer_heavy_packages():
    bad = [f"  {where} in {func}(): {code}" for where, _, func, code, names, _ in _function_imports()
           if not names & set(OWN) and not names <= DEFERRABLE]
    assert not bad, ("standard-library or light packages imported inside functions (import them at "
                     "module level):\n" + "\n".join(bad))


# ---------------------------------------------------------------------------------------------
# (d) file size
# ---------------------------------------------------------------------------------------------
def _repo_python_files():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")
                             and not d.endswith(".egg-info") and not d.startswith("rank_"))
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.join(dirpath, name)


def test_no_python_file_over_600_lines():
    too_long = []
    for path in _repo_python_files():
        with open(path, encoding="utf-8") as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            too_long.append(f"  {os.path.relpath(path, ROOT)}: {n} lines")
    assert not too_long, f"files over {MAX_LINES} lines:\n" + "\n".join(too_long)


# ---------------------------------------------------------------------------------------------
# (e) layers: the library never imports the command-line layer
# ---------------------------------------------------------------------------------------------
CLI = f"{PACKAGE}.cli"
# ``python -m`` entry points of the package: thin, like train.py; they may use the CLI layer
ENTRY_MODULES = (f"{PACKAGE}.convert", f"{PACKAGE}.data.prepare")


def _cli_imports(module, path, sources):
    """The CLI-layer modules that ``module`` imports anywhere (module level or in a function)."""
    tree = _parse(path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom) and _absolute(node, module, path) in (CLI,) \
                    or any(t == CLI or t.startswith(CLI + ".") for t in _targets(node, module, path, sources)):
                found.add(f"{os.path.relpath(path, ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_library_does_not_import_the_cli_layer():
    sources = _package_modules()
    bad = []
    for module, path in sources.items():
        if module == CLI or module.startswith(CLI + ".") or module in ENTRY_MODULES:
            continue
        bad += sorted(_cli_imports(module, path, sources))
    assert not bad, "library modules that import the command-line layer (mindcv_res2net.cli):\n" + "\n".join(bad)
    # and the rule sees such an import
    probe = {"p": "x", "p.cli": "x", "p.lib": "x"}
    assert _targets(ast.parse("from .cli import config").body[0], "p.lib", "p/lib.py", {**probe, "p.cli.config": 1})


def test_entry_modules_are_thin():
    for module in ENTRY_MODULES:
        tree = _parse(_package_modules()[module])
        defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not defs, f"{module} defines {defs}: its work belongs in the library, its parser in cli/"


# ---------------------------------------------------------------------------------------------
# (f) functions a reader can hold in their head; one module per name
# ---------------------------------------------------------------------------------------------
MAX_FUNCTION_LINES = 80


def function_body_lines(node):
    """Lines of a function's body, from its first statement after the docstring to its end."""
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return node.end_lineno - body[0].lineno + 1


def test_function_body_lines_counts_from_after_the_docstring():
    tree = ast.parse('def f():\n    """doc\n    more"""\n    a = 1\n    return a\n\n\ndef g():\n    pass\n')
    assert [function_body_lines(n) for n in tree.body] == [2, 1]


def test_no_function_body_over_80_lines():
    too_long = []
    for path in list(_package_modules().values()) + list(_entry_files().values()):
        for node in ast.walk(_parse(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = function_body_lines(node)
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"  {os.path.relpath(path, ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named phases):\n" + \
        "\n".join(too_long)


def test_no_two_package_modules_share_a_stem():
    stems = {}
    for module in _package_modules():
        if module == PACKAGE:
            continue
        stems.setdefault(module.rpartition(".")[2], []).append(module)
    shared = {stem: names for stem, names in stems.items() if len(names) > 1}
    assert not shared, "modules sharing a name (rename one so each name says one thing):\n" + \
        "\n".join(f"  {stem}: {', '.join(names)}" for stem, names in sorted(shared.items()))
