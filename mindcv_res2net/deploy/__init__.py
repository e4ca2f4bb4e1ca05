"""Deployment: from weights to a model that serves.

* ``inference_model``: ``build_inference_model`` (a model, its weights, inference-optimised), what a
  checkpoint says about itself, the preprocessing a built model needs.
* ``export_model``: export.py's work (MINDIR / ONNX / AIR, int8 ONNX) with the metadata.
* ``runtimes``: exported files written atomically and run (onnxruntime, MindSpore ``GraphCell``).
* ``prediction``: predict.py's work (images -> top-k classes).
* ``quantize``: int8 ONNX by onnxruntime's static quantization, calibrated through the eval transform.
* ``class_names``: ImageNet's class names and WordNet ids, class-name files.
"""
from ..lazy_exports import lazy_exports

_EXPORTS = {"build_inference_model": "inference_model",
            "export_network": "runtimes", "open_deployed": "runtimes", "predict": "prediction"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
