"""Turn the Fashion-MNIST / MNIST idx files into ImageFolder trees of PNGs (``prepare``).

The command line (:mod:`mindcv_res2net.cli.prepare_args`)::

    python -m mindcv_res2net.data.prepare fashion_mnist --out DIR [--limit N] [--source RAW_DIR]
    python -m mindcv_res2net.data.prepare mnist --out DIR
    python -m mindcv_res2net.data.prepare mindrecord --src IMAGEFOLDER --out DIR [--shards N] [--overwrite]

The ``mindrecord`` command writes MindRecord copies of an ImageFolder tree (one set per split
folder: ``DIR/<split>/data.mindrecord*``); see :mod:`.readers.mindrecord_writer`.

Writes ``DIR/train/<k>_<name>/train_NNNNN.png`` (60000) and ``DIR/val/<k>_<name>/val_NNNNN.png``
(10000); folder names start with the label, so sorted order is label order. ``--limit N`` keeps
the first N images of each split.

Raw files: ``--source``, else Debian's ``dataset-fashion-mnist`` package
(/usr/share/datasets/fashion-mnist) when installed, else ``DIR/raw`` (downloaded there with a
progress bar when missing). Every file is checked before use: the MD5 of the official ``.gz``
or, for re-compressed copies such as Debian's, the SHA-256 of the uncompressed content.

Idempotent: a finished run leaves ``DIR/.prepared.json``; a second run with the same options
does nothing. Each split is written to a temporary folder and renamed when complete, so an
interrupted run never leaves a half-written split under its final name.
"""
import json
import multiprocessing
import os
import shutil

import numpy as np
from PIL import Image

from .. import atomic_io
from ..errors import UserError
from .readers.idx import read_idx
from .readers.mindrecord_writer import prepare_mindrecord
from .readers.mnist_files import DATASETS, FILES, fetch_raw_files, verify_file  # noqa: F401  (re-exported)

SPLITS = (("train", "train", 60000), ("val", "t10k", 10000))
MARKER = ".prepared.json"


def find_raw_files(dataset, out_dir, source=None, verify=True):
    """Paths of the four files: ``source``, the Debian package, else ``out_dir/raw`` (download)."""
    spec = DATASETS[dataset]
    candidates = [source] if source else list(spec["system_dirs"])
    for folder in candidates:
        if folder and all(os.path.isfile(os.path.join(folder, n)) for n in FILES):
            paths = {n: os.path.join(folder, n) for n in FILES}
            if verify:
                for name, path in paths.items():
                    if not verify_file(name, path, dataset):
                        raise UserError(f"{path} does not match the official {dataset} file (hash check "
                                        f"failed). Replace it, or pass --no-verify if you trust it")
            return paths
        if source:
            missing = [n for n in FILES if not os.path.isfile(os.path.join(folder, n))]
            raise UserError(f"--source {folder} lacks {', '.join(missing)}. Give the folder holding "
                            f"the four official .gz files")
    return fetch_raw_files(dataset, os.path.join(out_dir, "raw"), verify=verify)


# Set before the worker pool forks, read by the workers.
_JOB = {}


def _write_chunk(bounds):
    start, stop = bounds
    images, labels, dest, prefix, classes = (_JOB[k] for k in ("images", "labels", "dest", "prefix", "classes"))
    for i in range(start, stop):
        path = os.path.join(dest, classes[labels[i]], f"{prefix}_{i:05d}.png")
        Image.fromarray(images[i]).save(path, "PNG", compress_level=1)
    return stop - start


def _write_split(images, labels, dest, prefix, classes, workers):
    for name in classes:
        os.makedirs(os.path.join(dest, name), exist_ok=True)
    _JOB.update(images=images, labels=labels, dest=dest, prefix=prefix, classes=classes)
    n = len(images)
    step = max(1, -(-n // (workers * 8)))
    chunks = [(a, min(n, a + step)) for a in range(0, n, step)]
    try:
        if workers > 1 and n > 2000 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                done = sum(pool.imap_unordered(_write_chunk, chunks))
        else:
            done = sum(map(_write_chunk, chunks))
    finally:
        _JOB.clear()
    return done


def prepare(dataset, out_dir, limit=None, source=None, workers=2, verify=True, log=print):
    """Write the two splits; returns {'train': n, 'val': n}. No-op when already complete."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset for prepare: {dataset!r}. Use fashion_mnist or mnist")
    if limit is not None and int(limit) < 1:
        raise UserError(f"--limit must be positive, got {limit}")
    os.makedirs(out_dir, exist_ok=True)
    classes = DATASETS[dataset]["classes"]
    marker_path = os.path.join(out_dir, MARKER)
    wanted = {"dataset": dataset, "limit": None if limit is None else int(limit),
              "classes": classes}
    marker = None
    if os.path.isfile(marker_path):
        with open(marker_path, encoding="utf-8") as fh:
            marker = json.load(fh)
        if all(marker.get(k) == v for k, v in wanted.items()) and all(
                os.path.isdir(os.path.join(out_dir, s)) for s, _, _ in SPLITS):
            log(f"{dataset} already prepared in {out_dir} ({marker['counts']}); nothing to do")
            return marker["counts"]
    for split, _, _ in SPLITS:
        path = os.path.join(out_dir, split)
        if os.path.exists(path) and marker is None:
            raise UserError(f"{path} exists and was not written by this tool. Remove it or choose "
                            f"another --out")
    raw = find_raw_files(dataset, out_dir, source=source, verify=verify)
    counts = {}
    for split, stem, expected in SPLITS:
        images = read_idx(raw[f"{stem}-images-idx3-ubyte.gz"])
        labels = read_idx(raw[f"{stem}-labels-idx1-ubyte.gz"]).astype(np.int64)
        if len(images) != expected or len(labels) != expected:
            raise UserError(f"{stem} files hold {len(images)} images / {len(labels)} labels, expected "
                            f"{expected}. Replace the raw files")
        if limit is not None:
            images, labels = images[:int(limit)], labels[:int(limit)]
        final = os.path.join(out_dir, split)
        tmp = os.path.join(out_dir, f".{split}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        written = _write_split(images, labels, tmp, split, classes, workers)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        counts[split] = written
        log(f"wrote {written} {split} images to {final}")
    marker = dict(wanted, counts=counts, source={k: os.path.abspath(v) for k, v in raw.items()})
    atomic_io.write_text_atomic(marker_path, json.dumps(marker, indent=1), "preparation marker")
    return counts
