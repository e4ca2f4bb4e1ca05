"""The one way a package of ``mindcv_res2net`` exposes its names: imported from their module on
first use, so that importing a package (for a constant, for ``--help``) never imports MindSpore.

    _EXPORTS = {"create_optimizer": "optim_factory", ...}     # name -> module of the package
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
"""
import importlib


def lazy_exports(package, exports):
    """``(__getattr__, __dir__)`` for ``package``, importing ``exports[name]`` (a module of the
    package, relative) when ``name`` is first read."""

    def __getattr__(name):  # noqa: N807
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__():  # noqa: N807
        return sorted(set(vars(importlib.import_module(package))) | set(exports))

    return __getattr__, __dir__
