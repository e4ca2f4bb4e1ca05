"""Class names for predictions.

``imagenet_class_names()``: the 1000 ImageNet-1k classes in the standard index order (the sorted
WordNet-id order every ImageNet-1k checkpoint uses), as short human-readable names (the common
Keras / PyTorch-hub list, underscores as spaces; the two duplicated names told apart:
134 ``crane (bird)`` / 517 ``crane (machine)``, 638 ``maillot`` / 639 ``tank suit``).

``imagenet_wordnet_ids()``: the same 1000 classes as their WordNet ids (``n01440764`` ...
``n15075141``, sorted: the index order), i.e. the folder names of the ImageNet-1k train and val
sets, so the label names of a 1000-class model trained on ImageNet (``IMAGENET_WNIDS_FILE``, also
usable as ``validate.py --class_list``).

``read_class_names(path)``: one name per line (blank lines and ``#`` comments skipped).

``resolve_class_names(num_classes, class_names_file=None, ckpt_path=None)``: the names to show for a
model's outputs (display names): the given file, else the names saved with a fine-tuned checkpoint,
else ImageNet's for 1000 classes, else ``class_<i>``. Display names are for people; the labels a
model was trained on are the class-folder names (``label_names`` in an exported file).
"""
import os

from ..errors import UserError
from ..weights.checkpoint_file import read_checkpoint_meta

_IMAGENET_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_classes.txt")
IMAGENET_WNIDS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_wnids.txt")
_cache = {}


def read_class_names(path):
    """Names from a text file, one per line; blank lines and lines starting with ``#`` are skipped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"class-names file not found: {path}. Pass a text file with one class name per line.")
    try:
        with open(path, encoding="utf-8-sig") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"could not read class-names file {path}: {exc}. It must be UTF-8 text, "
                        f"one class name per line.") from exc
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise UserError(f"class-names file {path} holds no names. Write one class name per line.")
    return names


def imagenet_class_names():
    """The 1000 ImageNet-1k class names in index order (a fresh list)."""
    if "imagenet" not in _cache:
        names = read_class_names(_IMAGENET_FILE)
        if len(names) != 1000:  # a damaged installation
            raise RuntimeError(f"{_IMAGENET_FILE} holds {len(names)} names, expected 1000")
        _cache["imagenet"] = names
    return list(_cache["imagenet"])


def imagenet_wordnet_ids():
    """The 1000 ImageNet-1k WordNet ids in index order (sorted; a fresh list)."""
    if "wnids" not in _cache:
        ids = read_class_names(IMAGENET_WNIDS_FILE)
        if len(ids) != 1000 or ids != sorted(set(ids)):  # a damaged installation
            raise RuntimeError(f"{IMAGENET_WNIDS_FILE} holds {len(ids)} ids, expected 1000 sorted unique ones")
        _cache["wnids"] = ids
    return list(_cache["wnids"])


def _names_from_checkpoint(ckpt_path):
    return (read_checkpoint_meta(ckpt_path) or {}).get("class_names")


def resolve_class_names(num_classes, class_names_file=None, ckpt_path=None, saved_names=None, source=None):
    """The display names of a ``num_classes``-way classifier (see the module docstring).

    ``saved_names``: the names stored with a checkpoint or an exported file when the caller has read
    its metadata already (``source`` names it in messages, e.g. ``checkpoint best.ckpt``); otherwise
    ``ckpt_path`` is read.
    A file or checkpoint list of the wrong length raises ``UserError``.
    """
    num_classes = int(num_classes)
    if class_names_file:
        names = read_class_names(class_names_file)
        if len(names) != num_classes:
            raise UserError(f"class-names file {class_names_file} holds {len(names)} names but the model has "
                            f"{num_classes} classes. Give one name per class (or set --num_classes).")
        return names
    if saved_names is None and ckpt_path:
        saved_names = _names_from_checkpoint(ckpt_path)
        source = source or f"checkpoint {ckpt_path}"
    if isinstance(saved_names, (list, tuple)) and saved_names:
        names = [str(n) for n in saved_names]
        if len(names) != num_classes:
            raise UserError(f"{source or 'the checkpoint'} stores {len(names)} class names but the model has "
                            f"{num_classes} classes. Set --num_classes {len(names)} or pass --class_names.")
        return names
    if num_classes == 1000:
        return imagenet_class_names()
    return [f"class_{i}" for i in range(num_classes)]


__all__ = ["imagenet_class_names", "imagenet_wordnet_ids", "read_class_names", "resolve_class_names",
           "IMAGENET_WNIDS_FILE"]
