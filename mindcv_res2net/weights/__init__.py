"""Weight I/O, one direction: a file -> arrays -> a model's parameters.

* ``checkpoint_file``: MindSpore checkpoints read (once: ``open_checkpoint``) and written atomically,
  with their metadata.
* ``pth_reader`` / ``pth_unpickler``: PyTorch ``.pth`` files read without torch (and without
  running their pickles).
* ``torch_conversion``: official Res2Net / timm state dicts -> MindCV names (``python -m
  mindcv_res2net.convert``).
* ``model_loading``: ``load_model_weights(net, source, ...)``, a strict load of any of these.
* ``pretrained`` / ``download_cache``: the published weights: download, verify, convert, cache.
"""
from ..lazy_exports import lazy_exports

_EXPORTS = {"open_checkpoint": "checkpoint_file", "read_checkpoint": "checkpoint_file",
            "read_checkpoint_meta": "checkpoint_file", "save_checkpoint_atomic": "checkpoint_file",
            "CheckpointFile": "checkpoint_file", "load_model_weights": "model_loading",
            "convert_state_dict": "torch_conversion", "convert_file": "torch_conversion",
            "load_pretrained": "pretrained"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
