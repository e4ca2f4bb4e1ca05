"""Class-folder data sets (ImageNet layout): ``root/split/<class>/<image>``.

``scan_image_folder`` lists the images and their labels: by default the sorted folder names are the
classes; ``class_list`` maps folders onto fixed indices; ``class_names`` (the classes a model was
trained on) maps validation folders through the training classes, so a missing or extra folder never
shifts another label. Scans are cached while no class folder changes.
"""
import logging
import os
from collections import Counter

import numpy as np

from ...errors import UserError
from ..decode import IMAGE_EXTENSIONS

_logger = logging.getLogger(__name__)


def read_class_list(class_list):
    """A list of names, or a text file with one name per line (blank lines and '#' ignored)."""
    if isinstance(class_list, (list, tuple)):
        names = [str(c).strip() for c in class_list]
    else:
        path = os.fspath(class_list)
        if not os.path.isfile(path):
            raise UserError(f"class list file not found: {path}. Pass a text file with one class "
                            f"(folder) name per line, in label order")
        with open(path, encoding="utf-8") as fh:
            names = [line.strip() for line in fh]
        names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise UserError(f"class list is empty: {class_list}. Give one class name per line")
    dup = sorted(n for n, c in Counter(names).items() if c > 1)
    if dup:
        raise UserError(f"class list names a class twice: {', '.join(dup[:10])}. "
                        f"Each class must appear once")
    return names


def _split_dir(root, split):
    root = os.fspath(root) if root is not None else None
    if not root:
        raise UserError("no data directory given. Pass --data_dir (root holding the split folders)")
    if not os.path.isdir(root):
        raise UserError(f"data directory not found: {root}. Check --data_dir; it must hold "
                        f"<split>/<class>/<image> folders")
    path = os.path.join(root, split) if split else root
    if not os.path.isdir(path):
        present = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        raise UserError(f"split folder not found: {path}. Expected {root}/{split}/<class>/<image>; "
                        f"folders present: {', '.join(present[:10]) or 'none'}. Fix --data_dir or "
                        f"the split name (--train_split / --val_split)")
    return path


# Scans of large trees (1.28 M files: seconds) are reused while no class folder changed: the
# key holds every class folder's mtime, which moves when a file is added, removed or renamed.
_SCAN_CACHE = {}
_SCAN_CACHE_SIZE = 8


# (split folder, missing classes) already warned about: the warning is logged once per process
_WARNED_MISSING = set()


def scan_image_folder(root, split, class_list=None, class_names=None):
    """(paths, labels, class_names) for ``root/split/<class>/<image>``, files sorted by name.

    Labels: the index of the folder in ``class_names`` when given (the classes a model was
    trained on, in label order: validation folders are mapped through it), else in
    ``class_list`` when given, else in the sorted folder names. With ``class_names``, a folder
    that is not a training class is a ``UserError`` naming it, and training classes without a
    folder here are logged once as a warning (the other labels keep their training index).
    """
    path = _split_dir(root, split)
    entries = sorted((d.name, d.stat().st_mtime_ns) for d in os.scandir(path)
                     if d.is_dir() and not d.name.startswith("."))
    list_key = tuple(class_list) if isinstance(class_list, (list, tuple)) else class_list
    if isinstance(list_key, str) and os.path.isfile(list_key):
        list_key = (list_key, os.stat(list_key).st_mtime_ns)
    names_key = None if class_names is None else tuple(str(c) for c in class_names)
    key = (os.path.abspath(path), list_key, names_key, tuple(entries))
    hit = _SCAN_CACHE.get(key)
    if hit is None:
        hit = _scan(path, [name for name, _ in entries], class_list, names_key)
        if len(_SCAN_CACHE) >= _SCAN_CACHE_SIZE:
            _SCAN_CACHE.pop(next(iter(_SCAN_CACHE)))
        _SCAN_CACHE[key] = hit
    paths, labels, names = hit
    if names_key is not None:
        present = {name for name, _ in entries}
        missing = tuple(c for c in names_key if c not in present)
        warn_key = (os.path.abspath(path), missing)
        if missing and warn_key not in _WARNED_MISSING:
            _WARNED_MISSING.add(warn_key)
            _logger.warning("%s has no folder for %d of the %d training classes: %s%s. Their images are "
                            "simply absent; every other folder keeps its training label",
                            path, len(missing), len(names_key), ", ".join(missing[:20]),
                            f" ... ({len(missing) - 20} more)" if len(missing) > 20 else "")
    return list(paths), labels.copy(), list(names)


def _training_class_names(path, folders, class_names):
    """Check the folders of ``path`` against the training classes; return those as a list."""
    class_names = list(class_names)
    if not class_names:
        raise UserError("the training class list is empty; it comes from the training data or the "
                        "checkpoint's class_names")
    dup = sorted(n for n, c in Counter(class_names).items() if c > 1)
    if dup:
        raise UserError(f"the training class list names a class twice: {', '.join(dup[:10])}")
    known = set(class_names)
    unknown = [f for f in folders if f not in known]
    if unknown:
        shown = ", ".join(os.path.join(path, f) for f in unknown[:10])
        raise UserError(f"class folder(s) not among the {len(class_names)} classes the model was trained "
                        f"on: {shown}{' ...' if len(unknown) > 10 else ''}. Labels follow the training "
                        f"classes ({', '.join(class_names[:10])}{' ...' if len(class_names) > 10 else ''}): "
                        f"remove or rename the folder(s), or evaluate with the data the model was "
                        f"trained on (--data_dir / --val_split)")
    return class_names


def _scan(path, folders, class_list, reference=None):
    if reference is not None:
        class_names = _training_class_names(path, folders, reference)
    elif class_list is not None:
        class_names = read_class_list(class_list)
        known = set(class_names)
        unknown = [f for f in folders if f not in known]
        if unknown:
            raise UserError(f"class folders not in the class list: {', '.join(unknown[:10])}"
                            f"{' ...' if len(unknown) > 10 else ''} (in {path}). Add them to the class "
                            f"list file or remove the folders")
    else:
        class_names = folders
    if not folders:
        raise UserError(f"no class folders in {path}. Expected {path}/<class>/<image> "
                        f"(one folder per class)")
    index = {name: k for k, name in enumerate(class_names)}
    paths, labels, ignored = [], [], []
    for folder in folders:
        cdir = os.path.join(path, folder)
        names = sorted(e.name for e in os.scandir(cdir) if e.is_file() and not e.name.startswith("."))
        for fname in names:
            if fname.lower().endswith(IMAGE_EXTENSIONS):
                paths.append(os.path.join(cdir, fname))
                labels.append(index[folder])
            else:
                ignored.append(os.path.join(cdir, fname))
    if ignored:
        _logger.warning("ignoring %d file(s) without an image extension in %s, e.g. %s",
                        len(ignored), path, ", ".join(ignored[:3]))
    if not paths:
        raise UserError(f"no images found in {path}. Expected {path}/<class>/<image> with "
                        f"extensions {', '.join(IMAGE_EXTENSIONS[:6])} ...")
    return paths, np.asarray(labels, np.int32), class_names


# ----------------------------------------------------------------------------------------------
# idx files
