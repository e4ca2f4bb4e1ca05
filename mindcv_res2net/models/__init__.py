"""The Res2Net model zoo."""
from . import pretrained, res2net, res2net_dla  # noqa: F401  (registers the models and their weights)
from .factory import create_model
from .registry import is_model, list_models, register_model
from .res2net import Bottle2neck, Res2Net
from .res2net_dla import Res2NetDLA

__all__ = ["create_model", "list_models", "is_model", "register_model", "Res2Net", "Bottle2neck", "Res2NetDLA"]
