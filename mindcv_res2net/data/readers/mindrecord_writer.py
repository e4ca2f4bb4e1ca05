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
the schema description of every shard header, the source of truth the json is checked against.
``mindrecord.json`` is written last and each split is written under ``DIR/.<split>.partial`` and
renamed when complete, so an interrupted run never leaves a set that looks finished.

Reading (:mod:`.dataset`): ``create_dataset('mindrecord', root=DIR, split=...)``, or any
ImageFolder name when ``DIR/<split>/mindrecord.json`` exists. :func:`open_split` checks the set
before any image is read: the json's fields, file entries that name files in the split folder
itself, every shard and index file against its recorded size, ``rows.npy`` as a permutation of the
records, every shard header against the json (the shard's place in the set, the fields, the class
list), and every stored label against the class list (read from the index files: about 1 ms per
10,000 records). Each failure is one ``UserError`` naming the file and the command that writes
the set again.
"""
import json
import logging
import os
import shutil
import sqlite3
import urllib.parse

import numpy as np

from ... import atomic_io
from ...errors import UserError
from .. import decode as _decode
from .image_folder import read_class_list, scan_image_folder

_logger = logging.getLogger(__name__)

META_NAME = "mindrecord.json"
ROWS_NAME = "rows.npy"
FILE_STEM = "data.mindrecord"
FORMAT = "mindcv_res2net.mindrecord/1"
KIND_FAST, KIND_CONVERT, KIND_BAD = 0, 1, 2
_WRITE_BATCH = 256
_SCHEMA = {"image": {"type": "bytes"}, "label": {"type": "int32"}, "file_name": {"type": "string"},
           "index": {"type": "int64"}, "kind": {"type": "int32"}}
_MAX_HEADER_BYTES = 1 << 26  # far above any real shard header: a larger size is damage
# the index file's SQLite table and columns (MindSpore 2.8.0: '<field>_<schema id>') for the indexed fields
_INDEX_TABLE, _INDEX_LABEL, _INDEX_NAME = "INDEXES", "label_0", "file_name_0"


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


def _schema_description(classes):
    """The schema description stored in every shard header: the format and the class list, the source
    of truth ``mindrecord.json`` is checked against when the set is read."""
    return json.dumps({"format": FORMAT, "classes": list(classes)})


def _write_split(src, split, stage, shards, class_list):
    from mindspore.mindrecord import FileWriter

    paths, labels, classes = scan_image_folder(src, split, class_list)
    split_dir = os.path.join(src, split)
    n = len(paths)
    shards = max(1, min(int(shards), n))
    os.makedirs(stage)
    writer = FileWriter(os.path.join(stage, FILE_STEM), shard_num=shards, overwrite=True)
    writer.add_schema(_SCHEMA, _schema_description(classes))
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
    atomic_io.write_text_atomic(os.path.join(stage, META_NAME), json.dumps(meta, indent=1), "MindRecord index")
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
        except (OSError, ValueError, AttributeError):
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
    """Read ``mindrecord.json`` and check it against the set it describes; ``UserError`` naming the
    first missing, damaged or inconsistent file and the fix.

    Checked: the description's fields and file entries (plain file names in ``folder``); every shard
    and index file exists with the size it was written with; ``rows.npy`` is a permutation of the
    records; every shard header is that shard of this set and holds the json's class list; every
    stored label lies in the class list and the shards hold ``num_images`` records. Labels are read
    from the index files (a few ms per 10,000 records), not from the shards.
    """
    meta_path = os.path.join(folder, META_NAME)
    meta = _load_meta(folder, meta_path)
    n = meta["num_images"]
    shards = _check_file_sizes(folder, meta["files"])
    rows = _check_rows(folder, n)
    _check_headers(folder, meta_path, shards, meta["classes"])
    _check_labels(folder, meta_path, shards, len(meta["classes"]), n)
    return MindRecordSplit(folder, meta, shards, rows)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_plain_name(name):
    """A file name in the set's folder itself: no folder part, not absolute, not '.' or '..'."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\x00" not in name and os.path.basename(name) == name and not os.path.isabs(name))


def _entry_problem(entry):
    if not isinstance(entry, dict):
        return f"file entry {entry!r} is not an object with 'name', 'bytes' and 'index_bytes'"
    name = entry.get("name")
    if not _is_plain_name(name):
        return (f"file entry {name!r} points outside the set's folder (entries name files in it, "
                f"e.g. 'data.mindrecord0')")
    for key in ("bytes", "index_bytes"):
        if not _is_count(entry.get(key)):
            return f"file entry {name!r} has no valid {key!r} (the file's size in bytes)"
    return None


def _meta_problem(meta):
    """What is wrong with the fields of a parsed ``mindrecord.json``, or None."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return f"format {meta.get('format') if isinstance(meta, dict) else meta!r}, not {FORMAT!r}"
    classes, n, files = meta.get("classes"), meta.get("num_images"), meta.get("files")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return "'classes' must be a non-empty list of class names"
    if len(set(classes)) != len(classes):
        return f"class {next(c for c in classes if classes.count(c) > 1)!r} is listed twice in 'classes'"
    if not _is_count(n):
        return f"'num_images' must be a whole number, not {n!r}"
    if not isinstance(files, list) or not files:
        return "'files' must be a non-empty list of shard entries"
    problem = next((p for p in map(_entry_problem, files) if p), None)
    if problem:
        return problem
    names = [entry["name"] for entry in files]
    if len(set(names)) != len(names):
        return f"shard {next(x for x in names if names.count(x) > 1)!r} is listed twice in 'files'"
    if not isinstance(meta.get("unreadable") or {}, dict):
        return "'unreadable' must map file names to reasons"
    unreadable_index = meta.get("unreadable_index") or {}
    if not isinstance(unreadable_index, dict) or not all(_is_count(i) and i < n for i in unreadable_index.values()):
        return f"'unreadable_index' must map file names to image numbers below {n}"
    return None


def _load_meta(folder, meta_path):
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as exc:
        raise UserError(f"MindRecord description {meta_path} is unreadable ({exc}). {rerun_hint(folder)}") from None
    problem = _meta_problem(meta)
    if problem:
        raise UserError(f"MindRecord description {meta_path} is refused: {problem}. {rerun_hint(folder)}")
    return meta


def _check_file_sizes(folder, files):
    """Absolute shard paths; ``UserError`` for a missing or resized shard or index file."""
    shards = []
    for entry in files:
        path = os.path.join(folder, entry["name"])
        for fpath, want in ((path, entry["bytes"]), (path + ".db", entry["index_bytes"])):
            what = "index file" if fpath.endswith(".db") else "shard"
            if not os.path.isfile(fpath):
                raise UserError(f"MindRecord {what} missing: {fpath}. {rerun_hint(folder)}")
            have = os.path.getsize(fpath)
            if have != want:
                raise UserError(f"MindRecord {what} {fpath} is damaged or truncated: {have} bytes, "
                                f"{want} were written. {rerun_hint(folder)}")
        shards.append(os.path.abspath(path))
    return shards


def _check_rows(folder, n):
    """``rows.npy`` as int64; ``UserError`` unless it is a permutation of the ``n`` records."""
    rows_path = os.path.join(folder, ROWS_NAME)
    try:
        rows = np.load(rows_path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"MindRecord row table {rows_path} is missing or unreadable ({exc}). "
                        f"{rerun_hint(folder)}") from None
    if rows.shape != (n,) or rows.dtype.kind not in "iu":
        raise UserError(f"MindRecord row table {rows_path} does not match {n} images. {rerun_hint(folder)}")
    rows = rows.astype(np.int64)
    outside = (rows < 0) | (rows >= n)
    if outside.any():
        raise UserError(f"MindRecord row table {rows_path} lists row {rows[outside][0]}, outside the {n} records. "
                        f"{rerun_hint(folder)}")
    counts = np.bincount(rows, minlength=n)
    if n and counts.max() > 1:
        twice = int(np.argmax(counts > 1))
        raise UserError(f"MindRecord row table {rows_path} is not a permutation of the {n} records: row {twice} "
                        f"is read for {counts[twice]} images and {int(np.count_nonzero(counts == 0))} record(s) "
                        f"never. {rerun_hint(folder)}")
    return rows


def read_shard_header(path):
    """The header of a MindRecord shard as a dict: the JSON MindSpore's ``ShardHeader`` writes at the
    start of every shard, after its size (8 bytes, little-endian). It holds the schema with its
    description, the index fields, ``shard_addresses`` and ``shard_id``; ``FileReader.schema()``
    gives only the schema's fields. ``ValueError`` (or ``OSError``) when it cannot be read."""
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        if not 0 < size <= min(_MAX_HEADER_BYTES, os.path.getsize(path) - 8):
            raise ValueError(f"header size {size}")
        header = json.loads(fh.read(size).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header


def _header_classes(folder, meta_path, path, k, names):
    """The class list in shard ``k``'s header (None when it holds none); ``UserError`` unless the header
    is readable and says this file is shard ``k`` of the shards ``names`` with this set's fields."""
    try:
        header = read_shard_header(path)
        schema = header["schema"][0]
        fields, desc = schema["schema"], schema.get("desc") or ""
        addresses = [os.path.basename(str(a)) for a in header["shard_addresses"]]
        shard_id = header["shard_id"]
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise UserError(f"MindRecord shard {path} has an unreadable header ({exc}). {rerun_hint(folder)}") from None
    if fields != _SCHEMA:
        raise UserError(f"MindRecord shard {path} has the fields {sorted(fields)}, not those 'prepare mindrecord' "
                        f"writes ({sorted(_SCHEMA)}). {rerun_hint(folder)}")
    if addresses != names or shard_id != k:
        raise UserError(f"MindRecord shard {path} is shard {shard_id} of {addresses} by its header, but {meta_path} "
                        f"lists it as shard {k} of {names}. {rerun_hint(folder)}")
    try:
        classes = json.loads(desc).get("classes")
    except (ValueError, AttributeError):
        return None
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise UserError(f"MindRecord shard {path} has a damaged class list in its header. {rerun_hint(folder)}")
    return classes


def _check_headers(folder, meta_path, shards, classes):
    """Every shard header belongs to this set and holds ``classes`` (the json's class list); a set whose
    headers hold no class list (an earlier writer) is checked by its labels only, with a log note."""
    names = [os.path.basename(p) for p in shards]
    noted = False
    for k, path in enumerate(shards):
        stored = _header_classes(folder, meta_path, path, k, names)
        if stored is None:
            if not noted:
                noted = True
                _logger.warning("%s: the MindRecord shard header holds no class list (a set written by an "
                                "earlier version); the class list of %s is checked against the stored labels "
                                "only. %s", path, meta_path, rerun_hint(folder))
            continue
        if stored != classes:
            diff = next((i for i, (a, b) in enumerate(zip(classes, stored)) if a != b), min(len(classes), len(stored)))
            json_name = classes[diff] if diff < len(classes) else None
            header_name = stored[diff] if diff < len(stored) else None
            raise UserError(f"the class list in {meta_path} ({len(classes)} classes) differs from the one stored in "
                            f"the header of MindRecord shard {path}: label {diff} is {json_name!r} in the json and "
                            f"{header_name!r} in the shard, so every label would name the wrong class. "
                            f"{rerun_hint(folder)}")


def _index_labels(db_path, num_classes):
    """(records, first (label, file name) outside 0..num_classes-1 or None) from a shard's index file
    (the SQLite table MindSpore writes for the indexed fields ``file_name`` and ``label``)."""
    con = sqlite3.connect(f"file:{urllib.parse.quote(db_path)}?mode=ro", uri=True)
    try:
        count = con.execute(f"SELECT COUNT(*) FROM {_INDEX_TABLE}").fetchone()[0]
        bad = con.execute(f"SELECT {_INDEX_LABEL}, {_INDEX_NAME} FROM {_INDEX_TABLE} WHERE typeof({_INDEX_LABEL}) "
                          f"!= 'integer' OR {_INDEX_LABEL} < 0 OR {_INDEX_LABEL} >= ? LIMIT 1",
                          (num_classes,)).fetchone()
    finally:
        con.close()
    return count, bad


def _record_labels(path, num_classes):
    """As :func:`_index_labels`, from the shard's records (slower: for index files of another layout)."""
    import mindspore.dataset as ds

    data = ds.MindDataset([path], columns_list=["label", "file_name", "index"], shuffle=False,
                          num_parallel_workers=1)
    count, bad = 0, None
    for label, name, _ in data.create_tuple_iterator(num_epochs=1, output_numpy=True):
        count += 1
        if bad is None and not 0 <= int(label) < num_classes:
            bad = (int(label), name.item() if hasattr(name, "item") else name)
    return count, bad


def _shard_labels(folder, path, num_classes):
    db_path = path + ".db"
    try:
        return _index_labels(db_path, num_classes), db_path
    except sqlite3.OperationalError as exc:  # not the table MindSpore 2.8.0 writes: read the records
        _logger.info("%s: labels read from the records (%s)", db_path, exc)
    except sqlite3.DatabaseError as exc:
        raise UserError(f"MindRecord index file {db_path} is damaged ({exc}). {rerun_hint(folder)}") from None
    try:
        return _record_labels(path, num_classes), path
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"cannot read the labels of MindRecord shard {path} ({str(exc).splitlines()[0][:300]}). "
                        f"{rerun_hint(folder)}") from None


def _check_labels(folder, meta_path, shards, num_classes, n):
    """Every stored label is an index into the class list; the shards hold ``n`` records in all."""
    total = 0
    for path in shards:
        (count, bad), source = _shard_labels(folder, path, num_classes)
        if bad is not None:
            label, name = bad
            where = f" (read from {source})" if source != path else ""
            raise UserError(f"record {name} of MindRecord shard {path} has label {label}{where}, outside the "
                            f"{num_classes} classes of {meta_path} (0..{num_classes - 1}). {rerun_hint(folder)}")
        total += count
    if total != n:
        raise UserError(f"{meta_path} describes {n} images but its shards hold {total} records. {rerun_hint(folder)}")


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

    def _label(self, label, file_name):
        """The output label of a stored label; a label outside the map (a record that disagrees with
        its index file, checked when the set was opened) is fatal."""
        label = int(label)
        if 0 <= label < len(self.labels):
            return np.array(self.labels[label], np.int32)
        err = UserError(f"MindRecord record {self._name(file_name)} has label {label}, outside the "
                        f"{len(self.labels)} classes of the set. {rerun_hint(self.folder)}")
        self.bad_images.fatal = err
        raise err

    def __call__(self, image, label, kind, file_name):
        kind = int(kind)
        if kind == KIND_FAST and self.large_pixels is None:
            return image, self._label(label, file_name)
        data = np.asarray(image).tobytes()
        if kind == KIND_BAD:
            return self._bad(self._name(file_name), "unreadable when the MindRecord set was written")
        try:
            out = _decode.prepare_encoded(data, self.large_pixels)
        except _decode.BadImage as exc:
            return self._bad(self._name(file_name), str(exc))
        return np.frombuffer(out, dtype=np.uint8), self._label(label, file_name)
