"""The Res2Net model zoo: the architectures and the registry. Each variant is registered once, with
its config, in its model module.

``create_model`` (``models/factory.py``, also ``mindcv_res2net.create_model``) sits above the weight
loading and conversion code, which themselves use this package: it is not imported here, so the
dependencies flow one way (checkpoint -> convert -> weights / pretrained -> factory).
"""
from . import res2net, res2net_dla  # noqa: F401  (register the variants; their order is the table's)
from .registry import ModelCfg, WeightSource, get_model_cfg, is_model, list_models, register_model
from .res2net import Bottle2neck, Res2Net
from .res2net_dla import Res2NetDLA

__all__ = ["list_models", "is_model", "register_model", "get_model_cfg", "ModelCfg", "WeightSource",
           "Res2Net", "Bottle2neck", "Res2NetDLA"]
