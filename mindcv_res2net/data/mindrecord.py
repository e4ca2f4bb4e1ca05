"""MindRecord copies of ImageFolder trees: writing (``prepare mindrecord``), checking, reading helpers.

    python -m mindcv_res2net.data.prepare mindrecord --src IMAGEFOLDER --out DIR --shards N [--overwrite]

Layout: one folder per split found in ``IMAGEFOLDER`` (``train``, ``val``, ...)::

    DIR/<split>/data.mindrecord0 ... data.mindrecord<N-1>   (+ a ``.db`` index file each)
    DIR/<split>/rows.npy          int64, rows[i] = MindDataset row of image i (file order)
    DIR/<split>/mindrecord.json   classes, image count, byte size of every shard and index file,
                                  unreadable files found while writing

Each row holds ``image`` (the file's bytes, unchanged), ``label`` (int32, index into the class
list), ``file_name`` (path relative to the split folder, '/'-separated), ``index`` (int64, the
image's position in ImageFolder's file order) and ``kind`` (int32: 0 = JPEG the C++ decoder
reads as it is, 1 = converted to RGB by Pillow when read, 2 = unreadable). The images, labels and
class order are those of :func:`.image_folder.scan_image_folder`. The class list is also stored in
the schema description. ``mindrecord.json`` is written last and each split is written under
``DIR/.<split>.partial`` and renamed when complete, so an interrupted run never leaves a set that
looks finished.

Reading (:mod:`.dataset`): ``create_dataset('mindrecord', root=DIR, split=...)``, or any
ImageFolder name when ``DIR/<split>/mindrecord.json`` exists. :func:`open_split` checks every
file against the sizes recorded in ``mindrecord.json`` first: a missing or truncated shard or
index file is one ``UserError`` naming the file, before any data is read.
"""
import json
import logging
import os
import shutil

import numpy as np

from ..errors import UserError
from . import decode as _decode
from .image_folder import read_class_list, scan_image_folder

_logger = logging.getLogger("mindcv_res2net.data.dataset")

META_NAME = "mindrecord.json"
ROWS_NAME = "rows.npy"
FILE_STEM = "data.mindrecord"
FORMAT = "mindcv_res2net.mindrecord/1"
KIND_FAST, KIND_CONVERT, KIND_BAD = 0, 1, 2
_WRITE_BATCH = 256
_SCHEMA = {"image": {"type": "bytes"}, "label": {"type": "int32"}, "file_name": {"type": "string"},
           "index": {"type": "int64"}, "kind": {"type": "int32"}}


def rerun_hint(folder):
    parent = os.path.dirname(os.path.abspath(folder))
    return (f"Re-run 'python -m mindcv_res2net.data.prepare mindrecord --src IMAGEFOLDER --out {parent} "
            f"--overwrite' to write the set again")


# ----------------------------------------------------------------------------------------------
# Writing

def find_splits(src):
    """Split folders of an ImageFolder root: sub-folders that hold folders (the class folders)."""
    splits = []
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            if any(sub.is_dir() and not sub.name.startswith(".") for sub in os.scandir(entry.path)):
                splits.append(entry.name)
    return splits


def classify_image(data):
    """(kind, reason) of one file's bytes: what :func:`.decode.prepare_encoded` will do with it."""
    try:
        out = _decode.prepare_encoded(data)
    except _decode.BadImage as exc:
        return KIND_BAD, str(exc)
    return (KIND_FAST if out is data else KIND_CONVERT), None


def _write_split(src, split, stage, shards, class_list):
    from mindspore.mindrecord import FileWriter

    paths, labels, classes = scan_image_folder(src, split, class_list)
    split_dir = os.path.join(src, split)
    n = len(paths)
    shards = max(1, min(int(shards), n))
    os.makedirs(stage)
    writer = FileWriter(os.path.join(stage, FILE_STEM), shard_num=shards, overwrite=True)
    writer.add_schema(_SCHEMA, json.dumps({"format": FORMAT, "classes": list(classes)}))
    writer.add_index(["file_name", "label"])
    bad, bad_index, kinds, image_bytes, batch = {}, {}, [0, 0, 0], 0, []
    for i, (path, label) in enumerate(zip(paths, labels)):
        name = os.path.relpath(path, split_dir).replace(os.sep, "/")
        try:
            data = _decode.read_file(path)
        except _decode.BadImage as exc:
            raise UserError(f"cannot read {path} ({exc}) while writing MindRecord. Check the file and "
                            f"run prepare again") from None
        kind, reason = classify_image(data)
        if kind == KIND_BAD:
            bad[name] = reason
            bad_index[name] = i
            _logger.warning("unreadable image %s: %s (stored; skipped or refused when read, as ImageFolder "
                            "does)", path, reason)
        kinds[kind] += 1
        image_bytes += len(data)
        # MindRecord cannot store an empty blob: a 0-byte file (unreadable, kind 2) is stored as one zero byte
        batch.append({"image": data or b"\x00", "label": int(label), "file_name": name, "index": i, "kind": kind})
        if len(batch) >= _WRITE_BATCH:
            writer.write_raw_data(batch)
            batch = []
    if batch:
        writer.write_raw_data(batch)
    writer.commit()
    files = [f"{FILE_STEM}{k}" for k in range(shards)] if shards > 1 else [FILE_STEM]
    rows = _read_back_rows(stage, files, n)
    np.save(os.path.join(stage, ROWS_NAME), rows, allow_pickle=False)
    meta = {"format": FORMAT, "split": split, "source": os.path.abspath(split_dir), "classes": list(classes),
            "num_images": n, "image_bytes": image_bytes,
            "kinds": {"jpeg": kinds[0], "converted": kinds[1], "unreadable": kinds[2]}, "unreadable": bad,
            "unreadable_index": bad_index,
            "files": [{"name": f, "bytes": os.path.getsize(os.path.join(stage, f)),
                       "index_bytes": os.path.getsize(os.path.join(stage, f + ".db"))} for f in files]}
    tmp = os.path.join(stage, META_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1)
    os.replace(tmp, os.path.join(stage, META_NAME))
    return n, shards


def _read_back_rows(folder, files, n):
    """rows[i] = MindDataset row number of image i; checks that every image was written once."""
    import mindspore.dataset as ds

    reader = ds.MindDataset([os.path.join(folder, f) for f in files], columns_list=["index"], shuffle=False,
                            num_parallel_workers=1)
    order = np.fromiter((int(r[0]) for r in reader.create_tuple_iterator(num_epochs=1, output_numpy=True)),
                        dtype=np.int64)
    if len(order) != n or not np.array_equal(np.sort(order), np.arange(n)):
        raise UserError(f"MindRecord read-back check failed in {folder}: {len(order)} rows for {n} images. "
                        f"Run prepare again")
    rows = np.empty(n, np.int64)
    rows[order] = np.arange(n, dtype=np.int64)
    return rows


def prepare_mindrecord(src, out, shards=1, splits=None, overwrite=False, class_list=None, log=print):
    """Write one MindRecord set per split of the ImageFolder root ``src`` into ``out/<split>``.

    Args:
        src: ImageFolder root (``src/<split>/<class>/<image>``). out: output folder.
        shards: MindRecord files per split (at most one per image). splits: split names (None:
            every sub-folder of ``src`` that holds class folders).
        overwrite: replace existing sets (otherwise an existing ``out/<split>`` is a ``UserError``).
        class_list: as for ``create_dataset`` (label = index in the list).

    Returns ``{split: number of images}``.
    """
    src = os.fspath(src) if src else None
    if not src or not os.path.isdir(src):
        raise UserError(f"--src not found: {src}. Point it at an ImageFolder root holding "
                        f"<split>/<class>/<image> folders (e.g. train/ and val/)")
    if int(shards) < 1:
        raise UserError(f"--shards must be at least 1, got {shards}")
    if splits is None:
        splits = find_splits(src)
        if not splits:
            raise UserError(f"no split folders in {src}: expected {src}/<split>/<class>/<image> "
                            f"(e.g. train/ and val/)")
    out = os.fspath(out)
    if os.path.abspath(out) == os.path.abspath(src):
        raise UserError("--out must differ from --src (the split folders would be replaced)")
    for split in splits:
        final = os.path.join(out, split)
        if os.path.exists(final) and not overwrite:
            raise UserError(f"{final} already exists. Pass --overwrite to replace it, or choose another --out")
    os.makedirs(out, exist_ok=True)
    counts = {}
    for split in splits:
        final = os.path.join(out, split)
        stage = os.path.join(out, f".{split}.partial")
        shutil.rmtree(stage, ignore_errors=True)
        try:
            n, used = _write_split(src, split, stage, shards, class_list)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        if os.path.exists(final):
            old = os.path.join(out, f".{split}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(stage, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, final)
        counts[split] = n
        log(f"wrote {n} {split} images to {final} ({used} MindRecord file(s))")
    return counts


# ----------------------------------------------------------------------------------------------
# Reading

def find_split(root, split):
    """The MindRecord folder for ``split`` under ``root`` (``root/split``, or ``root`` itself when it is
    that split's folder), or None."""
    if root is None:
        return None
    root = os.fspath(root)
    cand = os.path.join(root, split) if split else root
    if os.path.isfile(os.path.join(cand, META_NAME)):
        return cand
    meta = os.path.join(root, META_NAME)
    if os.path.isfile(meta):
        try:
            with open(meta, encoding="utf-8") as fh:
                if not split or json.load(fh).get("split") == split:
                    return root
        except (OSError, ValueError):
            return root  # open_split reports the damage
    return None


class MindRecordSplit:
    """A checked MindRecord split: ``folder``, ``meta``, ``files`` (absolute), ``rows``, ``classes``."""

    def __init__(self, folder, meta, files, rows):
        self.folder = folder
        self.meta = meta
        self.files = files
        self.rows = rows
        self.classes = list(meta["classes"])
        self.num_images = int(meta["num_images"])
        self.unreadable = dict(meta.get("unreadable") or {})

    def __len__(self):
        return self.num_images

    @property
    def paths(self):
        """The files this split reads (the shards)."""
        return list(self.files)


def open_split(folder):
    """Read ``mindrecord.json`` and check every shard, index file and ``rows.npy``; ``UserError``
    naming the first missing or damaged file and the fix."""
    meta_path = os.path.join(folder, META_NAME)
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        files = meta["files"]
        n = int(meta["num_images"])
        list(meta["classes"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"MindRecord description {meta_path} is unreadable ({exc}). {rerun_hint(folder)}") from None
    shards = []
    for entry in files:
        path = os.path.join(folder, entry["name"])
        for fpath, want in ((path, entry["bytes"]), (path + ".db", entry["index_bytes"])):
            what = "index file" if fpath.endswith(".db") else "shard"
            if not os.path.isfile(fpath):
                raise UserError(f"MindRecord {what} missing: {fpath}. {rerun_hint(folder)}")
            have = os.path.getsize(fpath)
            if have != int(want):
                raise UserError(f"MindRecord {what} {fpath} is damaged or truncated: {have} bytes, "
                                f"{int(want)} were written. {rerun_hint(folder)}")
        shards.append(os.path.abspath(path))
    rows_path = os.path.join(folder, ROWS_NAME)
    try:
        rows = np.load(rows_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"MindRecord row table {rows_path} is missing or unreadable ({exc}). "
                        f"{rerun_hint(folder)}") from None
    if rows.shape != (n,) or rows.dtype.kind not in "iu":
        raise UserError(f"MindRecord row table {rows_path} does not match {n} images. {rerun_hint(folder)}")
    return MindRecordSplit(folder, meta, shards, rows.astype(np.int64))


def label_map(split, class_list=None, class_names=None):
    """(stored label -> output label array, output class names), checked like ImageFolder's labels."""
    stored = split.classes
    if class_names is not None:
        names = [str(c) for c in class_names]
        unknown = [c for c in stored if c not in names]
        if unknown:
            raise UserError(f"class(es) of {split.folder} not among the {len(names)} classes the model was "
                            f"trained on: {', '.join(unknown[:10])}. Evaluate with the data the model was "
                            f"trained on (--data_dir / --val_split)")
        missing = [c for c in names if c not in stored]
        if missing:
            _logger.warning("%s has no images for %d of the %d training classes: %s. Every other class keeps "
                            "its training label", split.folder, len(missing), len(names), ", ".join(missing[:20]))
    elif class_list is not None:
        names = read_class_list(class_list)
        unknown = [c for c in stored if c not in names]
        if unknown:
            raise UserError(f"classes of {split.folder} not in the class list: {', '.join(unknown[:10])}. "
                            f"Add them to the class list file, or prepare the set with the same --class_list")
    else:
        names = list(stored)
    index = {c: k for k, c in enumerate(names)}
    return np.asarray([index[c] for c in stored], np.int32), names


class RowDecoder:
    """Map operation (image, label, kind) -> (image, label): the bytes the C++ decoders get, as
    ImageFolder's encoded mode gives them (:func:`.decode.prepare_encoded`).

    Unreadable rows (only met in evaluation: training reads a replacement, see :mod:`.dataset`):
    strict -> ``UserError``; otherwise a grey placeholder with label -1, counted in ``bad_images``.
    """

    def __init__(self, labels, bad_images, folder, strict=False, large_pixels=None):
        self.labels = labels
        self.bad_images = bad_images
        self.folder = folder
        self.strict = strict
        self.large_pixels = large_pixels

    def _bad(self, name, reason):
        if self.strict:
            err = UserError(f"unreadable image: {name} ({reason}). Remove or replace the file and prepare the "
                            f"MindRecord set again, or run without strict_data to skip unreadable images")
            self.bad_images.fatal = err
            raise err
        self.bad_images.record(name, reason)
        return np.frombuffer(_decode.PLACEHOLDER_PPM, dtype=np.uint8), np.array(-1, np.int32)

    def __deepcopy__(self, memo):  # shares the counter: MindSpore copies the pipeline for every iterator
        return self

    def _name(self, file_name):
        name = file_name.item() if hasattr(file_name, "item") else file_name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return f"{self.folder}:{name}"

    def __call__(self, image, label, kind, file_name):
        kind = int(kind)
        if kind == KIND_FAST and self.large_pixels is None:
            return image, np.array(self.labels[int(label)], np.int32)
        data = np.asarray(image).tobytes()
        if kind == KIND_BAD:
            return self._bad(self._name(file_name), "unreadable when the MindRecord set was written")
        try:
            out = _decode.prepare_encoded(data, self.large_pixels)
        except _decode.BadImage as exc:
            return self._bad(self._name(file_name), str(exc))
        return np.frombuffer(out, dtype=np.uint8), np.array(self.labels[int(label)], np.int32)
