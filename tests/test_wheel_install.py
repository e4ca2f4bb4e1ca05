"""The installed package stands alone: the wheel built from this tree, installed into a fresh virtual
environment, runs its commands, saves and loads a checkpoint, imports every module and finds its data
files without the repository.

Offline: the wheel is built without build isolation (the project venv's setuptools) from a copy of the
tree (tracked files plus untracked ones git does not ignore, so the repository gets no ``build/`` or
``*.egg-info``); the fresh venv gets pip from ``ensurepip`` and the wheel with ``--no-index --no-deps``;
its dependencies (MindSpore, numpy, ...) come from the project venv's site-packages through a ``.pth``
file written after the install. Lines of a ``.pth`` file only extend ``sys.path``: the ``.pth`` files
in the project venv (among them the editable install's finder, which maps ``mindcv_res2net`` to this
tree) are not run, so the fresh venv sees only the installed copy.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import types
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "mindcv_res2net"
# folders and files never copied when git cannot list the tree
_NOT_SOURCE = (".git", ".venv", "__pycache__", "*.pyc", "build", "dist", "*.egg-info", ".pytest_cache")


def _run(args, cwd, env, timeout=600):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (f"{' '.join(map(str, args))} exited with {result.returncode}\n"
                                    f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def _source_files():
    """Repository-relative paths of the tree's files: tracked plus untracked-but-not-ignored
    (``None`` when git cannot list them)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    names = sorted({n for n in listed.decode("utf-8").split("\0") if n})
    # staged deletions and renames still have index entries: keep what exists
    return [n for n in names if os.path.isfile(os.path.join(ROOT, n))]


def _copy_tree(dest):
    files = _source_files()
    if files is None:
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
        return
    for name in files:
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), target)


def _package_files(tree):
    """``(python_files, data_files)`` of the package in ``tree``: paths relative to ``tree``, ``/``-joined."""
    python_files, data_files = set(), set()
    for folder, dirs, files in os.walk(os.path.join(tree, PACKAGE)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            rel = os.path.relpath(os.path.join(folder, name), tree).replace(os.sep, "/")
            (python_files if name.endswith(".py") else data_files).add(rel)
    return python_files, data_files


def _clean_env(venv_dir):
    """The environment of a command run with the fresh venv: no PYTHONPATH, no user site, no trace
    of the project venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    env["VIRTUAL_ENV"] = venv_dir
    env["PATH"] = os.path.join(venv_dir, "bin") + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel of this tree installed into a fresh venv whose dependencies are the project venv's."""
    base = tmp_path_factory.mktemp("wheel_install")
    source = str(base / "source")
    wheel_dir = str(base / "wheel")
    venv_dir = str(base / "venv")
    build_existed = os.path.exists(os.path.join(ROOT, "build"))

    _copy_tree(source)
    python_files, data_files = _package_files(source)
    env = _clean_env(os.path.dirname(os.path.dirname(sys.executable)))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", wheel_dir, source], cwd=str(base), env=env)
    wheels = [n for n in os.listdir(wheel_dir) if n.endswith(".whl")]
    assert len(wheels) == 1, f"expected one wheel in {wheel_dir}, found {wheels}"
    wheel = os.path.join(wheel_dir, wheels[0])
    assert os.path.exists(os.path.join(ROOT, "build")) == build_existed, "building the wheel touched the repository"

    _run([sys.executable, "-m", "venv", venv_dir], cwd=str(base), env=env)
    python = os.path.join(venv_dir, "bin", "python")
    venv_env = _clean_env(venv_dir)
    # the wheel first: with the project venv visible, pip would take the editable install for it
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", wheel], cwd=str(base), env=venv_env)
    site_packages = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         cwd=str(base), env=venv_env).stdout.strip()
    project_site_packages = sysconfig.get_paths()["purelib"]
    with open(os.path.join(site_packages, "project_venv_dependencies.pth"), "w", encoding="utf-8") as fh:
        fh.write(project_site_packages + "\n")
    return types.SimpleNamespace(python=python, env=venv_env, site_packages=site_packages, wheel=wheel,
                                 python_files=python_files, data_files=data_files,
                                 workdir=tmp_path_factory.mktemp("outside_repository"))


def _python(installed, code, *args):
    """Run ``code`` with the fresh venv's python from a folder outside the repository."""
    return _run([installed.python, "-c", textwrap.dedent(code), *args], cwd=str(installed.workdir),
                env=installed.env)


def test_wheel_holds_the_package_and_exactly_its_data_files(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = {n for n in wheel.namelist() if not n.endswith("/")}
    in_package = {n for n in names if n.startswith(PACKAGE + "/")}
    outside = {n for n in names - in_package if ".dist-info/" not in n}
    assert not outside, f"the wheel holds files outside {PACKAGE}/: {sorted(outside)}"
    assert installed.data_files, f"no non-Python files found in {PACKAGE}/ of the tree"
    missing_py = installed.python_files - in_package
    assert not missing_py, f"modules missing from the wheel (a folder without __init__.py?): {sorted(missing_py)}"
    wheel_data = {n for n in in_package if not n.endswith(".py")}
    assert wheel_data == installed.data_files, (
        f"package data in the wheel {sorted(wheel_data)} differ from the tree's {sorted(installed.data_files)}: "
        f"fix [tool.setuptools.package-data] in pyproject.toml")


def test_installed_package_is_the_wheel_not_the_repository(installed):
    out = _python(installed, """
        import json, os, sys
        import mindcv_res2net
        print(json.dumps({"file": mindcv_res2net.__file__, "path": [os.path.realpath(p) for p in sys.path],
                          "editable_finders": [m for m in sys.modules if "__editable__" in m]}))
        """).stdout
    found = json.loads(out.strip().splitlines()[-1])
    package_file = os.path.realpath(found["file"])
    assert package_file.startswith(os.path.realpath(installed.site_packages) + os.sep), found["file"]
    assert not found["editable_finders"], found["editable_finders"]
    root = os.path.realpath(ROOT)
    assert all(p != root and not p.startswith(root + os.sep + PACKAGE) for p in found["path"]), found["path"]


@pytest.mark.parametrize("module", ["mindcv_res2net.convert", "mindcv_res2net.data.prepare"])
def test_command_help_runs_from_the_installed_package(installed, module):
    result = _run([installed.python, "-m", module, "--help"], cwd=str(installed.workdir), env=installed.env)
    assert result.stdout.startswith(f"usage: python -m {module} "), result.stdout


def test_every_module_of_the_installed_package_imports(installed):
    out = _python(installed, """
        import importlib, json, pkgutil, traceback
        import mindcv_res2net

        names, failed = [], {}
        for info in pkgutil.walk_packages(mindcv_res2net.__path__, "mindcv_res2net.",
                                          onerror=lambda name: failed.setdefault(name, "walk failed")):
            names.append(info.name)
            try:
                importlib.import_module(info.name)
            except BaseException:
                failed[info.name] = traceback.format_exc(limit=3)
        print(json.dumps({"names": names, "failed": failed}))
        """).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert not found["failed"], "modules that do not import:\n" + "\n".join(
        f"{name}: {error}" for name, error in sorted(found["failed"].items()))
    expected = {p[:-len(".py")].replace("/", ".").removesuffix(".__init__") for p in installed.python_files}
    assert set(found["names"]) | {PACKAGE} == expected


def test_checkpoint_round_trip_with_the_installed_package(installed):
    out = _python(installed, """
        import sys
        import numpy as np
        import mindspore as ms
        from mindcv_res2net import create_model
        from mindcv_res2net.weights.checkpoint_file import save_checkpoint_atomic
        from mindcv_res2net.weights.model_loading import load_model_weights

        ms.set_device("CPU")
        ms.set_seed(0)
        saved = create_model("res2net50", num_classes=3)
        for param in saved.get_parameters():  # values no fresh model starts with
            param.set_data(ms.Tensor(param.asnumpy() + 0.25))
        path = save_checkpoint_atomic(saved, sys.argv[1], extra={"epoch": 2})
        loaded = create_model("res2net50", num_classes=3)
        report = load_model_weights(loaded, path)
        expected = {p.name: p.asnumpy() for p in saved.get_parameters()}
        actual = {p.name: p.asnumpy() for p in loaded.get_parameters()}
        assert expected.keys() == actual.keys()
        differ = [n for n in expected if not np.array_equal(expected[n], actual[n])]
        assert not differ, differ
        assert report.meta.get("epoch") == 2, report.meta
        print(f"round trip: {len(report.loaded)} parameters loaded")
        """, str(installed.workdir / "res2net50.ckpt")).stdout
    assert "round trip:" in out and " 0 parameters" not in out, out


def test_package_data_is_readable_from_the_installed_package(installed):
    out = _python(installed, """
        import json, os, sys
        import mindcv_res2net
        package_dir = os.path.dirname(mindcv_res2net.__file__)
        lines = {}
        for rel in sys.argv[1:]:
            with open(os.path.join(package_dir, *rel.split("/")[1:]), encoding="utf-8") as fh:
                lines[rel] = len(fh.read().splitlines())
        print(json.dumps(lines))
        """, *sorted(installed.data_files)).stdout
    lines = json.loads(out.strip().splitlines()[-1])
    assert set(lines) == installed.data_files
    assert all(count > 0 for count in lines.values()), lines


def test_imagenet_class_lists_load_from_the_installed_package(installed):
    out = _python(installed, """
        from mindcv_res2net.deploy.class_names import imagenet_class_names, imagenet_wordnet_ids
        print(len(imagenet_class_names()), len(imagenet_wordnet_ids()))
        """).stdout
    assert out.split() == ["1000", "1000"], out
