"""The Res2Net model zoo: the architectures and the registry. Each variant is registered once, with
its config, in its model module.

``create_model`` (``models/factory.py``, also ``mindcv_res2net.create_model``) sits above the weight
loading and conversion code, which themselves use this package: it is not imported here, so the
dependencies flow one way (weights/ -> factory).
"""
from ..lazy_exports import lazy_exports
from . import res2net, res2net_dla  # noqa: F401  (importing a variant module registers its variants, in table order)

_EXPORTS = {
    **dict.fromkeys(("ModelCfg", "WeightSource", "get_model_cfg", "is_model", "list_models", "register_model"),
                    "registry"),
    "Res2Net": "res2net", "Bottle2neck": "res2net", "Res2NetDLA": "res2net_dla",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
