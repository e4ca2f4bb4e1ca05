"""The data formats a dataset is read from (one module each; ``data.dataset`` picks one):

* ``image_folder``: class folders (ImageNet's layout), with fixed or stored class lists;
* ``idx`` / ``mnist_files``: MNIST / Fashion-MNIST idx files and their checked downloads;
* ``mindrecord_writer`` / ``mindrecord_reader``: MindRecord sets (``prepare mindrecord``) and their
  integrity checks.
"""
from ...lazy_exports import lazy_exports

_EXPORTS = {"scan_image_folder": "image_folder", "read_idx": "idx", "prepare_mindrecord": "mindrecord_writer"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
