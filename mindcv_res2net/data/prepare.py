"""Turn the Fashion-MNIST / MNIST idx files into ImageFolder trees of PNGs.

    python -m mindcv_res2net.data.prepare fashion_mnist --out DIR [--limit N] [--source RAW_DIR]
    python -m mindcv_res2net.data.prepare mnist --out DIR

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
import argparse
import gzip
import hashlib
import json
import multiprocessing
import os
import shutil
import urllib.error
import urllib.request

import numpy as np
from PIL import Image

from ..errors import UserError
from .idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, read_idx

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

DATASETS = {
    "fashion_mnist": {
        "classes": FASHION_MNIST_CLASSES,
        "mirrors": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        # MD5 of the official .gz files (Zalando's README; torchvision uses the same).
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        # SHA-256 of the uncompressed idx content (same for any gzip of the official data).
        "sha256_raw": {
            "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        "system_dirs": ("/usr/share/datasets/fashion-mnist",),
    },
    "mnist": {
        "classes": MNIST_CLASSES,
        "mirrors": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "sha256_raw": {},
        "system_dirs": ("/usr/share/datasets/mnist",),
    },
}
SPLITS = (("train", "train", 60000), ("val", "t10k", 10000))
MARKER = ".prepared.json"


def _digest(path, algo, uncompressed=False):
    h = hashlib.new(algo)
    opener = gzip.open if uncompressed else open
    with opener(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(name, path, dataset="fashion_mnist"):
    """True if ``path`` is the official file ``name`` (gz MD5, or content SHA-256)."""
    spec = DATASETS[dataset]
    if _digest(path, "md5") == spec["md5"][name]:
        return True
    want = spec["sha256_raw"].get(name)
    if want is not None:
        try:
            return _digest(path, "sha256", uncompressed=True) == want
        except (OSError, EOFError):
            return False
    return False


def _download(url, dest):
    from tqdm import tqdm

    tmp = dest + ".part"
    req = urllib.request.Request(url, headers={"User-Agent": "mindcv_res2net"})
    with urllib.request.urlopen(req, timeout=60) as resp, open(tmp, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(dest)) as bar:
            for chunk in iter(lambda: resp.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))
    return tmp


def fetch_raw_files(dataset, raw_dir, verify=True):
    """Make sure the four official files are in ``raw_dir`` (download + check); return paths."""
    spec = DATASETS[dataset]
    os.makedirs(raw_dir, exist_ok=True)
    paths = {}
    for name in FILES:
        dest = os.path.join(raw_dir, name)
        if os.path.isfile(dest):
            if not verify or verify_file(name, dest, dataset):
                paths[name] = dest
                continue
            raise UserError(f"{dest} does not match the official {dataset} file (hash check failed). "
                            f"Delete it and run again to download a fresh copy")
        errors = []
        for mirror in spec["mirrors"]:
            try:
                tmp = _download(mirror + name, dest)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                errors.append(f"{mirror}{name}: {exc}")
                continue
            if _digest(tmp, "md5") != spec["md5"][name]:
                os.remove(tmp)
                errors.append(f"{mirror}{name}: MD5 mismatch")
                continue
            os.replace(tmp, dest)
            paths[name] = dest
            break
        else:
            raise UserError(f"could not download {name} for {dataset}: {'; '.join(errors)}. Copy the "
                            f"official files into {raw_dir} (or pass --source)")
    return paths


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
    tmp_marker = marker_path + ".tmp"
    with open(tmp_marker, "w", encoding="utf-8") as fh:
        json.dump(dict(wanted, counts=counts, source={k: os.path.abspath(v) for k, v in raw.items()}), fh,
                  indent=1)
    os.replace(tmp_marker, marker_path)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mindcv_res2net.data.prepare",
                                     description="Write Fashion-MNIST / MNIST as PNG class folders.")
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--out", required=True, help="output folder (gets train/ and val/)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N images per split")
    parser.add_argument("--source", default=None, help="folder with the four official .gz files")
    parser.add_argument("--workers", type=int, default=2, help="writer processes (default 2)")
    parser.add_argument("--no-verify", action="store_true", help="skip the hash check of local files")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    prepare(args.dataset, args.out, limit=args.limit, source=args.source, workers=max(1, args.workers),
            verify=not args.no_verify)
    return 0


if __name__ == "__main__":
    from ..cli import run_main

    run_main(main)
