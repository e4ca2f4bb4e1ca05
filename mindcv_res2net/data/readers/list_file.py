"""List-file data sets (``--train_list`` / ``--val_list``): one image per line,

    relative/path/to/image.jpg<TAB, comma or spaces>label

paths relative to the data directory, labels as class indices (0-based) or class names. Blank lines
and lines starting with ``#`` are skipped; the separator is the last tab on the line, else the last
comma, else the last run of spaces (so a path may hold spaces when a tab or comma separates it).

The class names, in label order, come from ``class_names`` (the classes a model was trained on:
the training split's, or a checkpoint's), else ``class_list``, else the labels themselves: the
sorted distinct names when they are names (as ImageFolder sorts its folders), ``0 .. max`` when
they are indices. The result is ImageFolder's: ``(paths, labels, class_names)``, read by the same
source, with the same transforms, sharding, bad-image handling and exact resume.

A missing file, a label out of range, an unknown class name or a line without a label is one
``UserError`` naming the list file and the line.
"""
import os

import numpy as np

from ...errors import UserError
from .image_folder import read_class_list


def _split_line(text):
    """``(path, label text)`` of a non-empty line, or None when it has no separator."""
    for sep in ("\t", ","):
        if sep in text:
            path, label = text.rsplit(sep, 1)
            return path.strip(), label.strip()
    parts = text.rsplit(None, 1)
    return (parts[0].strip(), parts[1].strip()) if len(parts) == 2 else None


def _entries(list_file):
    """``[(line number, path text, label text)]`` of the list file; ``UserError`` for a bad line."""
    try:
        with open(list_file, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise UserError(f"list file not found: {list_file}. Pass a text file of 'path<TAB>label' lines "
                        "(--train_list / --val_list)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the list file {list_file}: {exc}") from None
    out = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = _split_line(text)
        if parts is None or not parts[0] or not parts[1]:
            raise UserError(f"{list_file}, line {number}: {line!r} is not 'path<TAB>label' (a relative image "
                            "path, then a tab, comma or space, then a class index or name)")
        out.append((number, parts[0], parts[1]))
    if not out:
        raise UserError(f"the list file {list_file} lists no image: give one 'path<TAB>label' line per image")
    return out


def _class_names(entries, class_names, class_list):
    """The label-ordered class names (see the module docstring)."""
    if class_names is not None:
        return [str(c) for c in class_names]
    if class_list is not None:
        return read_class_list(class_list)
    labels = [label for _, _, label in entries]
    if all(label.isdigit() for label in labels):
        return [str(k) for k in range(max(int(label) for label in labels) + 1)]
    return sorted(set(labels))


def _label(list_file, number, text, names, index):
    """The class index a line's label names; ``UserError`` naming the line otherwise."""
    if text in index:
        return index[text]
    if text.lstrip("-").isdigit():
        value = int(text)
        if 0 <= value < len(names):
            return value
        raise UserError(f"{list_file}, line {number}: label {value} is out of range: there are {len(names)} "
                        f"classes (0 .. {len(names) - 1})")
    shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
    raise UserError(f"{list_file}, line {number}: unknown class name {text!r}; the classes are {shown} "
                    "(from --class_list, the training list, or the checkpoint)")


def read_list_file(list_file, root, class_list=None, class_names=None):
    """``(paths, labels, class_names)`` of the list file ``list_file`` (paths relative to ``root``)."""
    list_file = os.fspath(list_file)
    entries = _entries(list_file)
    names = _class_names(entries, class_names, class_list)
    index = {name: k for k, name in enumerate(names)}
    paths, labels = [], []
    for number, rel, label_text in entries:
        path = rel if os.path.isabs(rel) else os.path.join(root, rel)
        if not os.path.isfile(path):
            raise UserError(f"{list_file}, line {number}: image file not found: {path}. Paths are relative to "
                            f"--data_dir ({root})")
        paths.append(path)
        labels.append(_label(list_file, number, label_text, names, index))
    return paths, np.asarray(labels, np.int32), names
