"""Published weights of the Res2Net family: where they are, how to check them, how to use them.

Per model, the sources (``get_pretrained_cfg(name)['sources']``):
- ``mindcv``: MindCV's MindSpore checkpoints (Apache-2.0), loaded unchanged;
- ``official``: the paper's PyTorch release (Res2Net/Res2Net-PretrainedModels), converted here;
- ``timm``: the same weights as re-published by timm on the Hugging Face hub (``model.safetensors``:
  no torch needed to convert);
- ``timm_legacy``: timm's GitHub release copies of the official files (``.pth``).

The official weights (and timm's copies of them) are licensed CC BY-NC-SA 4.0 (non-commercial,
share-alike): this package downloads the user's copy from the publisher and converts it locally; it
never redistributes them.

``download_weights(name, source=None)`` fetches a file into ``~/.cache/mindcv_res2net`` (or
``$MINDCV_RES2NET_CACHE``) through a ``.part`` file, checks its size and SHA-256 (the full hash
where published, else the 8-hex prefix in the file name) before use, converts PyTorch files to a
cached ``.ckpt`` and returns the ``.ckpt`` path. ``$MINDCV_RES2NET_WEIGHTS_URL`` replaces the base
URL of every source (a mirror holding the files under their file names).
``load_pretrained(net, name)`` is what ``create_model(name, pretrained=True)`` calls.
"""
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

from ..errors import UserError

_logger = logging.getLogger(__name__)

ENV_CACHE = "MINDCV_RES2NET_CACHE"
ENV_BASE_URL = "MINDCV_RES2NET_WEIGHTS_URL"
ENV_SOURCE = "MINDCV_RES2NET_WEIGHTS_SOURCE"
DEFAULT_CACHE = os.path.join("~", ".cache", "mindcv_res2net")

APACHE = "Apache-2.0"
CC_BY_NC_SA = "CC BY-NC-SA 4.0 (non-commercial; converted locally from the user's download, never redistributed)"

MINDCV_BASE = "https://download.mindspore.cn/toolkits/mindcv/res2net/"
MINDCV_BASE_910V2 = "https://download-mindspore.osinfra.cn/toolkits/mindcv/res2net/"
NANKAI_BASE = "http://mc.nankai.edu.cn/projects/res2net/pretrainmodels/"
KAIZHAO_BASE = "http://data.kaizhao.net/projects/res2net/pretrained/"
OSS_BASE = "https://shanghuagao.oss-cn-beijing.aliyuncs.com/res2net/"
TIMM_GITHUB_BASE = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-res2net/"
HF_BASE = "https://huggingface.co/"

PREPROCESSING = {
    "input_size": (3, 224, 224), "crop_pct": 0.875, "resize": 256, "interpolation": "bilinear",
    "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
}


@dataclass(frozen=True)
class WeightSource:
    """One downloadable weights file."""

    tag: str                 # 'mindcv', 'mindcv_910v2', 'official', 'timm', 'timm_legacy'
    url: str
    filename: str            # its name in the cache and on a mirror
    fmt: str                 # 'ckpt' (MindSpore), 'pth' (PyTorch pickle), 'safetensors'
    sha256: str = None       # full hex digest or a prefix of it (the 8 hex digits in the file name)
    size: int = None         # bytes, where published
    top1: float = None       # published ImageNet-1k top-1 / top-5 (%) at 224 px
    top5: float = None
    licence: str = APACHE
    origin: str = ""         # the model's name at the source
    notes: str = ""


def _mindcv(file, sha, top1, top5, origin, base=MINDCV_BASE, tag="mindcv", notes="MindCV, 8x Ascend 910"):
    return WeightSource(tag, base + file, file, "ckpt", sha, None, top1, top5, APACHE, origin, notes)


def _official(base, file, sha, top1, top5, origin):
    return WeightSource("official", base + file, file, "pth", sha, None, top1, top5, CC_BY_NC_SA, origin,
                        "the paper's PyTorch release (Res2Net/Res2Net-PretrainedModels)")


def _timm_hf(hub_name, top1, top5):
    return WeightSource("timm", f"{HF_BASE}timm/{hub_name}/resolve/main/model.safetensors",
                        f"{hub_name}.safetensors", "safetensors", None, None, top1, top5, CC_BY_NC_SA,
                        f"timm/{hub_name}", "timm's copy of the official weights (no published hash: the first "
                        "download's SHA-256 is recorded and checked from then on)")


def _timm_legacy(file, sha, top1, top5, origin):
    return WeightSource("timm_legacy", TIMM_GITHUB_BASE + file, file, "pth", sha, None, top1, top5, CC_BY_NC_SA,
                        origin, "timm's GitHub copy of the official file")


# published top-1 / top-5: official (README: 100 - error) and MindCV (configs/res2net/README.md)
_WEIGHTS = {
    "res2net50": [
        _mindcv("res2net50-f42cf71b.ckpt", "f42cf71b", 79.35, 94.64, "res2net50"),
        _mindcv("res2net50-aa758355-910v2.ckpt", "aa758355", 79.33, 94.64, "res2net50", base=MINDCV_BASE_910V2,
                tag="mindcv_910v2", notes="MindCV, 8x Ascend 910*"),
        _timm_hf("res2net50_26w_4s.in1k", 77.99, 93.85),
        _official(NANKAI_BASE, "res2net50_26w_4s-06e79181.pth", "06e79181", 77.99, 93.85, "res2net50_26w_4s"),
        _timm_legacy("res2net50_26w_4s-06e79181.pth", "06e79181", 77.99, 93.85, "res2net50_26w_4s"),
    ],
    "res2net101": [
        _mindcv("res2net101-8ae60132.ckpt", "8ae60132", 79.56, 94.70, "res2net101"),
        _timm_hf("res2net101_26w_4s.in1k", 79.19, 94.43),
        _official(NANKAI_BASE, "res2net101_26w_4s-02a759a1.pth", "02a759a1", 79.19, 94.43, "res2net101_26w_4s"),
        _timm_legacy("res2net101_26w_4s-02a759a1.pth", "02a759a1", 79.19, 94.43, "res2net101_26w_4s"),
    ],
    "res2net50_26w_6s": [
        _timm_hf("res2net50_26w_6s.in1k", 78.58, 94.13),
        _official(NANKAI_BASE, "res2net50_26w_6s-19041792.pth", "19041792", 78.58, 94.13, "res2net50_26w_6s"),
        _timm_legacy("res2net50_26w_6s-19041792.pth", "19041792", 78.58, 94.13, "res2net50_26w_6s"),
    ],
    "res2net50_26w_8s": [
        _timm_hf("res2net50_26w_8s.in1k", 79.20, 94.37),
        _official(NANKAI_BASE, "res2net50_26w_8s-2c7c9f12.pth", "2c7c9f12", 79.20, 94.37, "res2net50_26w_8s"),
        _timm_legacy("res2net50_26w_8s-2c7c9f12.pth", "2c7c9f12", 79.20, 94.37, "res2net50_26w_8s"),
    ],
    "res2net50_48w_2s": [
        _timm_hf("res2net50_48w_2s.in1k", 77.32, 93.53),
        _official(NANKAI_BASE, "res2net50_48w_2s-afed724a.pth", "afed724a", 77.32, 93.53, "res2net50_48w_2s"),
        _timm_legacy("res2net50_48w_2s-afed724a.pth", "afed724a", 77.32, 93.53, "res2net50_48w_2s"),
    ],
    "res2net50_14w_8s": [
        _timm_hf("res2net50_14w_8s.in1k", 78.14, 93.86),
        _official(NANKAI_BASE, "res2net50_14w_8s-6527dddc.pth", "6527dddc", 78.14, 93.86, "res2net50_14w_8s"),
        _timm_legacy("res2net50_14w_8s-6527dddc.pth", "6527dddc", 78.14, 93.86, "res2net50_14w_8s"),
    ],
    "res2next50": [
        _timm_hf("res2next50.in1k", 78.24, 93.91),
        _official(KAIZHAO_BASE, "res2next50_4s-6ef7e7bf.pth", "6ef7e7bf", 78.24, 93.91, "res2next50"),
        _timm_legacy("res2next50_4s-6ef7e7bf.pth", "6ef7e7bf", 78.24, 93.91, "res2next50"),
    ],
    "res2net50_v1b": [
        _mindcv("res2net50_v1b-99304e92.ckpt", "99304e92", 80.32, 95.09, "res2net50_v1b"),
        _timm_hf("res2net50d.in1k", 80.27, 95.04),
        _official(OSS_BASE, "res2net50_v1b_26w_4s-3cf99910.pth", "3cf99910", 80.27, 95.04, "res2net50_v1b_26w_4s"),
    ],
    "res2net101_v1b": [
        _mindcv("res2net101_v1b-7e6db001.ckpt", "7e6db001", 81.14, 95.41, "res2net101_v1b"),
        _timm_hf("res2net101d.in1k", 81.23, 95.36),
        _official(OSS_BASE, "res2net101_v1b_26w_4s-0812c246.pth", "0812c246", 81.23, 95.36, "res2net101_v1b_26w_4s"),
    ],
    "res2net_dla60": [
        _timm_hf("dla60_res2net.in1k", 78.47, 94.20),
        _official(KAIZHAO_BASE, "res2net_dla60_4s-d88db7f9.pth", "d88db7f9", 78.47, 94.20, "res2net_dla60"),
        _timm_legacy("res2net_dla60_4s-d88db7f9.pth", "d88db7f9", 78.47, 94.20, "dla60_res2net"),
    ],
    "res2next_dla60": [
        _timm_hf("dla60_res2next.in1k", 78.45, 94.14),
        _official(KAIZHAO_BASE, "res2next_dla60_4s-d327927b.pth", "d327927b", 78.45, 94.14, "res2next_dla60"),
        _timm_legacy("res2next_dla60_4s-d327927b.pth", "d327927b", 78.45, 94.14, "dla60_res2next"),
    ],
}


def _register():
    try:
        from .registry import register_pretrained
    except ImportError:  # pragma: no cover
        return
    for name in _WEIGHTS:
        register_pretrained(name)


_register()


# ----------------------------------------------------------------------------------------------
# lookup
# ----------------------------------------------------------------------------------------------

def _canonical(name):
    try:
        from .registry import resolve_name
        return resolve_name(name)
    except ImportError:  # pragma: no cover
        return name


def models_with_weights():
    return sorted(_WEIGHTS)


def _sources(name):
    canonical = _canonical(name)
    if canonical not in _WEIGHTS:
        raise UserError(f"no published weights for {name!r}. Models with weights: {', '.join(models_with_weights())}. "
                        f"Train it, or pass a checkpoint (checkpoint_path / --ckpt_path).")
    return canonical, _WEIGHTS[canonical]


def default_source(name):
    """``$MINDCV_RES2NET_WEIGHTS_SOURCE`` if the model has it, else MindCV's weights, else timm's."""
    _, sources = _sources(name)
    tags = [s.tag for s in sources]
    wanted = os.environ.get(ENV_SOURCE, "").strip()
    if wanted and wanted in tags:
        return wanted
    for tag in ("mindcv", "timm", "official"):
        if tag in tags:
            return tag
    return tags[0]


def get_source(name, source=None):
    """The ``WeightSource`` ``source`` (a tag; default: ``default_source(name)``) of ``name``."""
    canonical, sources = _sources(name)
    tag = source or default_source(canonical)
    for s in sources:
        if s.tag == tag:
            return s
    raise UserError(f"{canonical} has no {tag!r} weights; available: {', '.join(s.tag for s in sources)}")


def get_pretrained_cfg(name):
    """Everything published about ``name``'s weights (``KeyError`` if there are none)."""
    canonical = _canonical(name)
    if canonical not in _WEIGHTS:
        raise KeyError(name)
    return {
        "architecture": canonical,
        "default_source": default_source(canonical),
        "sources": {s.tag: {**asdict(s), "url": source_url(s)} for s in _WEIGHTS[canonical]},
        "preprocessing": dict(PREPROCESSING),
        "licence": {s.tag: s.licence for s in _WEIGHTS[canonical]},
    }


def source_url(src):
    """The URL to fetch ``src`` from: ``$MINDCV_RES2NET_WEIGHTS_URL/<file name>`` when set."""
    base = os.environ.get(ENV_BASE_URL, "").strip()
    if base:
        return base.rstrip("/") + "/" + src.filename
    return src.url


def resolve_cache_dir(path=None):
    """``path``, else ``$MINDCV_RES2NET_CACHE``, else ``~/.cache/mindcv_res2net``."""
    return os.path.abspath(os.path.expanduser(path or os.environ.get(ENV_CACHE) or DEFAULT_CACHE))


# ----------------------------------------------------------------------------------------------
# downloading and checking
# ----------------------------------------------------------------------------------------------

def sha256_of(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _hash_ok(actual, expected):
    return expected is None or actual.lower().startswith(expected.lower())


def _sidecar(path):
    return path + ".sha256"


def _write_sidecar(path, digest):
    tmp = _sidecar(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{digest} {os.path.getsize(path)}\n")
    os.replace(tmp, _sidecar(path))


def _read_sidecar(path):
    try:
        with open(_sidecar(path)) as f:
            digest, size = f.read().split()
        return digest, int(size)
    except (OSError, ValueError):
        return None, None


def _manual_instructions(src, url, directory):
    return (f"Download {url} by hand and put it at {os.path.join(directory, src.filename)} "
            f"(or point ${ENV_CACHE} at the folder holding it, or ${ENV_BASE_URL} at a mirror serving "
            f"{src.filename})" + (f"; its SHA-256 must start with {src.sha256}." if src.sha256 else "."))


def _verify(path, src, url, digest=None):
    """Check a complete file's size and hash; a bad file is deleted and reported."""
    size = os.path.getsize(path)
    digest = digest or sha256_of(path)
    problem = None
    if src.size is not None and size != src.size:
        problem = f"has {size} bytes, expected {src.size}"
    elif not _hash_ok(digest, src.sha256):
        problem = f"has SHA-256 {digest}, expected {src.sha256}{'...' if len(src.sha256) < 64 else ''}"
    else:
        recorded, _ = _read_sidecar(path)
        if src.sha256 is None and recorded and recorded != digest:
            problem = f"has SHA-256 {digest}, but {recorded} was recorded when it was first downloaded"
    if problem:
        os.remove(path)
        for extra in (_sidecar(path),):
            if os.path.exists(extra):
                os.remove(extra)
        raise UserError(f"the weights file {src.filename} (from {url}) {problem}; the file was deleted. The "
                        f"download was corrupted or the server sent another file: retry, or "
                        + _manual_instructions(src, url, os.path.dirname(path)))
    if src.sha256 is None:
        _logger.warning("%s has no published hash; recorded its SHA-256 %s", src.filename, digest)
    return digest


def download_file(url, dest, src, progress=True, timeout=60):
    """Fetch ``url`` into ``dest`` through ``dest.<pid>.part``; hash while writing; verify; rename."""
    from tqdm import tqdm

    directory = os.path.dirname(dest)
    os.makedirs(directory, exist_ok=True)
    part = f"{dest}.{os.getpid()}.part"
    request = urllib.request.Request(url, headers={"User-Agent": "mindcv_res2net"})
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            got = 0
            with open(part, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                             desc=src.filename, disable=not progress, leave=False) as bar:
                while True:
                    block = response.read(1 << 20)
                    if not block:
                        break
                    f.write(block)
                    h.update(block)
                    got += len(block)
                    bar.update(len(block))
                f.flush()
                os.fsync(f.fileno())
        if total is not None and got != total:
            raise UserError(f"the download of {url} stopped after {got} of {total} bytes. Retry, or "
                            + _manual_instructions(src, url, directory))
    except UserError:
        _remove_quietly(part)
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # no network, HTTP errors, timeouts, a connection cut mid-file
        _remove_quietly(part)
        reason = exc if isinstance(exc, urllib.error.HTTPError) else (getattr(exc, "reason", None) or exc)
        raise UserError(f"could not download the {src.tag} weights {src.filename} from {url} ({reason}). "
                        + _manual_instructions(src, url, directory)) from exc
    except BaseException:
        _remove_quietly(part)
        raise
    digest = _verify(part, src, url, h.hexdigest())
    os.replace(part, dest)
    _write_sidecar(dest, digest)
    return dest


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def fetch(name, source=None, cache_dir=None, progress=True):
    """The verified downloaded file of ``name``'s ``source`` weights (downloaded if needed)."""
    src = get_source(name, source)
    directory = resolve_cache_dir(cache_dir)
    dest = os.path.join(directory, src.filename)
    url = source_url(src)
    if os.path.exists(dest):
        recorded, size = _read_sidecar(dest)
        if recorded and size == os.path.getsize(dest) and _hash_ok(recorded, src.sha256):
            return dest  # verified when it was downloaded
        # placed by hand (or the record is stale): check it now
        digest = _verify(dest, src, url)
        _write_sidecar(dest, digest)
        return dest
    return download_file(url, dest, src, progress=progress)


def download_weights(name, source=None, cache_dir=None, progress=True):
    """Path of a MindSpore ``.ckpt`` holding ``name``'s published ``source`` weights.

    ``source``: 'mindcv' (default where MindCV published weights), 'timm' (Hugging Face
    safetensors, the default otherwise), 'official', 'timm_legacy', 'mindcv_910v2'.
    PyTorch files are converted once into ``<cache>/converted/``. Without network, a ``UserError``
    says which file to fetch from where and where to put it.
    """
    canonical = _canonical(name)
    src = get_source(canonical, source)
    path = fetch(canonical, src.tag, cache_dir, progress)
    if src.fmt == "ckpt":
        return path
    digest, _ = _read_sidecar(path)
    converted = os.path.join(resolve_cache_dir(cache_dir), "converted",
                             f"{canonical}-{src.tag}-{(digest or 'unknown')[:8]}.ckpt")
    if os.path.exists(converted):
        return converted
    from ..convert import convert_file
    _logger.info("converting %s into %s", path, converted)
    convert_file(path, canonical, converted)
    return converted


def load_pretrained(net, name, num_classes=None, in_channels=None, source=None, cache_dir=None, progress=True):
    """Load ``name``'s published weights into ``net`` (classifier dropped for another number of
    classes, first conv adapted for other input channels). Returns the ``LoadReport``."""
    from ..checkpoint import load_model_weights

    canonical = _canonical(name)
    src = get_source(canonical, source)
    if src.licence != APACHE:
        _logger.info("%s %s weights: licence %s", canonical, src.tag, src.licence)
    path = download_weights(canonical, src.tag, cache_dir=cache_dir, progress=progress)
    return load_model_weights(net, path, strict=True, num_classes=num_classes, in_channels=in_channels,
                              model_name=canonical)


__all__ = ["WeightSource", "get_pretrained_cfg", "get_source", "default_source", "download_weights",
           "load_pretrained", "fetch", "download_file", "source_url", "resolve_cache_dir", "models_with_weights",
           "sha256_of", "PREPROCESSING", "ENV_CACHE", "ENV_BASE_URL", "ENV_SOURCE"]
