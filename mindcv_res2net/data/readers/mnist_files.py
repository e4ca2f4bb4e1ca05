"""The raw MNIST / Fashion-MNIST idx files: where they come from, their hashes, and fetching and
verifying them (used by ``create_dataset(download=True)`` and ``python -m mindcv_res2net.data.prepare``).
"""
import gzip
import hashlib
import os
import urllib.error
import urllib.request

from ...errors import UserError
from .idx import FASHION_MNIST_CLASSES, MNIST_CLASSES

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
            if not verify_file(name, tmp, dataset):  # the gz MD5, or the content of a recompressed copy
                os.remove(tmp)
                errors.append(f"{mirror}{name}: MD5 / content hash mismatch")
                continue
            os.replace(tmp, dest)
            paths[name] = dest
            break
        else:
            raise UserError(f"could not download {name} for {dataset}: {'; '.join(errors)}. Copy the "
                            f"official files into {raw_dir} (or pass --source)")
    return paths


