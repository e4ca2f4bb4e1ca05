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
``$MINDCV_RES2NET_CACHE``), converts PyTorch files to a cached ``.ckpt`` and returns the ``.ckpt``
path. ``$MINDCV_RES2NET_WEIGHTS_URL`` replaces the base URL of every source (a mirror holding the
files under their file names). ``load_pretrained(net, name)`` is what
``create_model(name, pretrained=True)`` calls.

Integrity (``get_pretrained_cfg(name)['sources'][tag]['check']`` says which applies):
- a source with a full published SHA-256 is checked against all 64 hex digits;
- the MindCV and official files publish only the first 8 hex digits of their SHA-256, in the file
  name (``res2net50-f42cf71b.ckpt``): a download is checked against that prefix, and its full
  SHA-256 is then recorded beside it (``<file>.sha256``) and enforced on every later load;
- timm's Hugging Face files publish no hash: the first download's full SHA-256 is recorded and
  enforced from then on (a text/HTML page is never accepted as weights).
A download that fails its check is deleted; a cached file that no longer matches its record is
kept and the error names the file(s) to delete. Converted checkpoints get a record too.

Several processes (every rank of a job, or several jobs) may share one cache: files are staged
under unique names and one writer per file (``<file>.lock``, ``flock``) downloads or converts it
while the others wait and then check the result.
"""
import codecs
import contextlib
import glob
import hashlib
import http.client
import logging
import os
import secrets
import shlex
import socket
import time
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
# The paper's authors first served their files over plain http (mc.nankai.edu.cn,
# data.kaizhao.net); Res2Net/Res2Net-PretrainedModels now points every model at the same files
# (same names, same hash prefixes) in this https bucket.
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
        _official(OSS_BASE, "res2net50_26w_4s-06e79181.pth", "06e79181", 77.99, 93.85, "res2net50_26w_4s"),
        _timm_legacy("res2net50_26w_4s-06e79181.pth", "06e79181", 77.99, 93.85, "res2net50_26w_4s"),
    ],
    "res2net101": [
        _mindcv("res2net101-8ae60132.ckpt", "8ae60132", 79.56, 94.70, "res2net101"),
        _timm_hf("res2net101_26w_4s.in1k", 79.19, 94.43),
        _official(OSS_BASE, "res2net101_26w_4s-02a759a1.pth", "02a759a1", 79.19, 94.43, "res2net101_26w_4s"),
        _timm_legacy("res2net101_26w_4s-02a759a1.pth", "02a759a1", 79.19, 94.43, "res2net101_26w_4s"),
    ],
    "res2net50_26w_6s": [
        _timm_hf("res2net50_26w_6s.in1k", 78.58, 94.13),
        _official(OSS_BASE, "res2net50_26w_6s-19041792.pth", "19041792", 78.58, 94.13, "res2net50_26w_6s"),
        _timm_legacy("res2net50_26w_6s-19041792.pth", "19041792", 78.58, 94.13, "res2net50_26w_6s"),
    ],
    "res2net50_26w_8s": [
        _timm_hf("res2net50_26w_8s.in1k", 79.20, 94.37),
        _official(OSS_BASE, "res2net50_26w_8s-2c7c9f12.pth", "2c7c9f12", 79.20, 94.37, "res2net50_26w_8s"),
        _timm_legacy("res2net50_26w_8s-2c7c9f12.pth", "2c7c9f12", 79.20, 94.37, "res2net50_26w_8s"),
    ],
    "res2net50_48w_2s": [
        _timm_hf("res2net50_48w_2s.in1k", 77.32, 93.53),
        _official(OSS_BASE, "res2net50_48w_2s-afed724a.pth", "afed724a", 77.32, 93.53, "res2net50_48w_2s"),
        _timm_legacy("res2net50_48w_2s-afed724a.pth", "afed724a", 77.32, 93.53, "res2net50_48w_2s"),
    ],
    "res2net50_14w_8s": [
        _timm_hf("res2net50_14w_8s.in1k", 78.14, 93.86),
        _official(OSS_BASE, "res2net50_14w_8s-6527dddc.pth", "6527dddc", 78.14, 93.86, "res2net50_14w_8s"),
        _timm_legacy("res2net50_14w_8s-6527dddc.pth", "6527dddc", 78.14, 93.86, "res2net50_14w_8s"),
    ],
    "res2next50": [
        _timm_hf("res2next50.in1k", 78.24, 93.91),
        _official(OSS_BASE, "res2next50_4s-6ef7e7bf.pth", "6ef7e7bf", 78.24, 93.91, "res2next50"),
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
        _official(OSS_BASE, "res2net_dla60_4s-d88db7f9.pth", "d88db7f9", 78.47, 94.20, "res2net_dla60"),
        _timm_legacy("res2net_dla60_4s-d88db7f9.pth", "d88db7f9", 78.47, 94.20, "dla60_res2net"),
    ],
    "res2next_dla60": [
        _timm_hf("dla60_res2next.in1k", 78.45, 94.14),
        _official(OSS_BASE, "res2next_dla60_4s-d327927b.pth", "d327927b", 78.45, 94.14, "res2next_dla60"),
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
        "sources": {s.tag: {**asdict(s), "url": source_url(s), "check": _check_kind(s)}
                    for s in _WEIGHTS[canonical]},
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


_HEX = set("0123456789abcdef")


def _published(src):
    """``('full', hex)``, ``('prefix', hex)`` (fewer than 64 hex digits published) or ``(None, None)``."""
    value = (getattr(src, "sha256", None) or "").strip().lower()
    if not value:
        return None, None
    return ("full" if len(value) == 64 else "prefix"), value


def _check_kind(src):
    kind, value = _published(src)
    if kind == "full":
        return "sha256 (published, all 64 hex digits)"
    if kind == "prefix":
        return (f"sha256 prefix ({len(value)} hex digits published, in the file name); the full SHA-256 is "
                f"recorded at the first download and enforced on every later load")
    return "no published hash; the first download's SHA-256 is recorded and enforced on every later load"


# ---- records: "<64 hex sha256> <size>" in <file>.sha256 ---------------------------------------

def _sidecar(path):
    return path + ".sha256"


def _read_sidecar(path):
    """``(digest, size)`` recorded for ``path``; ``(None, None)`` without a record.

    A record that cannot be parsed is reported (it was edited or damaged by hand), never ignored:
    ignoring it would silently accept another file."""
    record = _sidecar(path)
    try:
        with open(record) as f:
            text = f.read()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise UserError(f"cannot read the hash record {record} ({exc}); fix its permissions or delete it "
                        f"together with {path}, and run again") from exc
    parts = text.split()
    if len(parts) != 2 or len(parts[0]) != 64 or not set(parts[0].lower()) <= _HEX or not parts[1].isdigit():
        raise UserError(f"the hash record {record} is damaged (expected '<64 hex digits> <size>', got "
                        f"{text[:80]!r}): delete it and {path}, and run again to download a fresh copy")
    return parts[0].lower(), int(parts[1])


def _new_temp(target, suffix):
    """Create a unique staging file beside ``target`` (mode 0666 less the umask); ``(fd, path)``."""
    directory, base = os.path.split(target)
    while True:
        path = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _write_sidecar(path, digest, size=None):
    """Record ``digest`` for ``path`` (atomically, under a unique staging name)."""
    size = os.path.getsize(path) if size is None else size
    fd, tmp = _new_temp(_sidecar(path), ".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{digest} {size}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, _sidecar(path))
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _remove_stale_temps(target, older_than_s=3600):
    """Under ``target``'s lock: remove staging files of ``target`` left by killed processes (a live
    writer appends to its file continuously, so an hour without a change means nobody owns it)."""
    directory, base = os.path.split(target)
    base = glob.escape(base)
    now = time.time()
    for pattern in (f".{base}.*.part", f".{base}.*.tmp", f".{base}.*.ckpt*", f"{base}.*.part"):
        for path in glob.glob(os.path.join(glob.escape(directory), pattern)):
            try:
                if now - os.path.getmtime(path) > older_than_s:
                    os.remove(path)
            except OSError:
                pass


# ---- one writer per cached file ---------------------------------------------------------------

_LOCKING_WARNED = []


@contextlib.contextmanager
def _cache_lock(target):
    """Hold ``<target>.lock`` exclusively (``flock``) while ``target`` is produced.

    The lock file is removed on release; a process that locked a file that was removed meanwhile
    (its inode no longer under that name) locks again, so two holders are never possible.
    Where the filesystem has no locks, writers still never clash (unique staging names, atomic
    renames), they only duplicate the work; this is said once in the log."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = target + ".lock"
    fd = _acquire(fcntl, lock, target)
    try:
        yield
    finally:
        if fd is not None:
            _remove_quietly(lock)
            os.close(fd)


def _acquire(fcntl, lock, target):
    """An open descriptor holding ``lock`` exclusively, or None where locks are unavailable."""
    waited = False
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            _warn_no_locking(lock, exc)
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited:
                    waited = True
                    _logger.info("waiting for another process that is writing %s (%s, %s)", target, lock,
                                 _lock_holder(lock))
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # ENOLCK / EOPNOTSUPP: a filesystem without locks
            os.close(fd)
            _warn_no_locking(lock, exc)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file this one waited on: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    except OSError:
        pass
    return fd


def _lock_holder(lock):
    try:
        with open(lock) as f:
            return f.read().strip() or "holder unknown"
    except OSError:
        return "holder unknown"


def _warn_no_locking(lock, exc):
    if not _LOCKING_WARNED:
        _LOCKING_WARNED.append(lock)
        _logger.warning("cannot lock %s (%s): processes sharing this cache may each download the same "
                        "weights (they do not corrupt each other)", lock, exc)


# ---- checks -----------------------------------------------------------------------------------

def _manual_instructions(src, url, directory):
    kind, value = _published(src)
    if kind == "full":
        tail = f"; its SHA-256 must be {value}."
    elif kind == "prefix":
        tail = f"; its SHA-256 must start with {value} (only these {len(value)} hex digits are published)."
    else:
        tail = "."
    return (f"Download {url} by hand and put it at {os.path.join(directory, src.filename)} "
            f"(or point ${ENV_CACHE} at the folder holding it, or ${ENV_BASE_URL} at a mirror serving "
            f"{src.filename})" + tail)


def _digest_problem(digest, src, recorded=None, record_path=None):
    """Why ``digest`` is not acceptable for ``src`` (None when it is)."""
    kind, value = _published(src)
    if kind == "full" and digest != value:
        return f"has SHA-256 {digest}, expected the published {value}"
    if recorded and digest != recorded:  # all 64 digits: says more than a published prefix
        return (f"has SHA-256 {digest}, but {recorded} was recorded when it was first downloaded"
                + (f" (in {record_path})" if record_path else ""))
    if kind == "prefix" and not digest.startswith(value):
        return (f"has SHA-256 {digest}, expected {value}... (only these {len(value)} hex digits are "
                f"published, in the file name)")
    return None


def _content_problem(path, fmt):
    """Why the file at ``path`` cannot be ``fmt`` weights, from its first bytes (None if it may be).

    Catches what a server sends instead of the file (an error, login or 'moved' page), which is what
    breaks every later run when no hash is published."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "is empty"
    if b"\x00" not in head:
        try:
            text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError:
            text = None
        if text is not None and text.lstrip("\ufeff \t\r\n")[:1] in ("<", "{"):
            shown = " ".join(text.split())[:60]
            return (f"is a text page, not weights (it starts with {shown!r}: a server's error, login or "
                    f"redirect page)")
    if fmt == "safetensors":
        length = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
        if len(head) < 9 or head[8:9] != b"{" or length < 2 or 8 + length > size:
            return "is not a safetensors file (no JSON header after the 8-byte length)"
    elif fmt == "pth":
        if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
            return "is not a PyTorch file (neither a zip archive nor a pickle)"
    return None


def _verify(path, src, url, digest=None, recorded=None, record_path=None):
    """Check a complete download at ``path`` before it is used: the published size and hash, the
    hash recorded by an earlier download of the same file (``recorded``; default: the record of
    ``path`` itself) and its first bytes. A bad file is deleted (with its own record, if any) and
    reported in one ``UserError``. Returns the full SHA-256."""
    size = os.path.getsize(path)
    digest = digest or sha256_of(path)
    if recorded is None:
        recorded, _ = _read_sidecar(path)
        record_path = _sidecar(path)
    problem = None
    if getattr(src, "size", None) is not None and size != src.size:
        problem = f"has {size} bytes, expected {src.size}"
    problem = problem or _digest_problem(digest, src, recorded, record_path) or \
        _content_problem(path, getattr(src, "fmt", None))
    if problem:
        _remove_quietly(path)
        _remove_quietly(_sidecar(path))
        hint = ""
        if recorded and digest != recorded and _published(src)[0] is None:
            hint = (f" If the publisher has replaced the file, delete the record {record_path} to accept "
                    f"the new one.")
        directory = os.path.dirname(record_path or path)
        raise UserError(f"the downloaded weights file {src.filename} (from {url}) {problem}; the download "
                        f"was deleted. The server sent another file (an error page, a changed or damaged "
                        f"file): retry later, or " + _manual_instructions(src, url, directory) + hint)
    return digest


def _check_cached(dest, src, url):
    """Check the cached file ``dest`` on every load: its content against the published hash and
    against the SHA-256 recorded when it was downloaded (recorded now if it was put there by hand).
    A mismatch is not deleted (it may be the user's file): the error names what to delete."""
    recorded, _ = _read_sidecar(dest)
    digest = sha256_of(dest)
    size = os.path.getsize(dest)
    problem = f"has {size} bytes, expected {src.size}" if src.size is not None and size != src.size else None
    problem = problem or _digest_problem(digest, src, recorded, _sidecar(dest)) or _content_problem(dest, src.fmt)
    if problem:
        # the record goes too where it describes this very file or contradicts the published hash
        record_bad = recorded is not None and (recorded == digest or _digest_problem(recorded, src) is not None)
        delete = [dest] + ([_sidecar(dest)] if record_bad else [])
        why = ("it changed after it was downloaded and checked" if recorded and not record_bad else
               "it is not the published file (damaged, replaced, or saved from an error page)")
        raise UserError(f"the cached weights file {dest} {problem}: {why}. Delete it (rm "
                        f"{' '.join(shlex.quote(p) for p in delete)}) and run again to download a fresh "
                        f"copy from {url}, or put a good copy there.")
    if recorded is None:
        try:
            _write_sidecar(dest, digest)
        except OSError as exc:  # a read-only cache: the file is checked on every load anyway
            _logger.warning("could not record the SHA-256 of %s (%s)", dest, exc)
        if _published(src)[0] is None:
            _logger.warning("%s has no published hash; recorded its SHA-256 %s in %s", dest, digest,
                            _sidecar(dest))
    return digest


# ---- downloading ------------------------------------------------------------------------------

def download_file(url, dest, src, progress=True, timeout=60):
    """Fetch ``url`` into ``dest`` through a uniquely named staging file; hash while writing;
    verify (see ``_verify``: against the published hash and ``dest``'s record, if any); record the
    full SHA-256 in ``dest.sha256``; rename onto ``dest``. Callers sharing a cache hold
    ``_cache_lock(dest)`` (``fetch`` does)."""
    from tqdm import tqdm

    directory = os.path.dirname(dest)
    os.makedirs(directory, exist_ok=True)
    recorded, _ = _read_sidecar(dest)
    fd, part = _new_temp(dest, ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "mindcv_res2net"})
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                total = response.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                got = 0
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=src.filename,
                          disable=not progress, leave=False) as bar:
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
    digest = _verify(part, src, url, h.hexdigest(), recorded=recorded or "", record_path=_sidecar(dest))
    try:
        _write_sidecar(dest, digest, got)  # the record first: the file never appears without it
        os.replace(part, dest)
    except BaseException:
        _remove_quietly(part)
        raise
    _fsync_dir(directory)
    kind, value = _published(src)
    if kind == "prefix":
        _logger.info("%s: SHA-256 starts with the published %s (only %d hex digits are published); its full "
                     "SHA-256 %s is recorded in %s and checked on every later load", src.filename, value,
                     len(value), digest, _sidecar(dest))
    elif kind is None and not recorded:
        _logger.warning("%s has no published hash; recorded its SHA-256 %s in %s and checked on every later "
                        "load", src.filename, digest, _sidecar(dest))
    return dest


def _ensure_directory(directory):
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the weights cache {directory} ({exc}): point ${ENV_CACHE} at a "
                        f"writable folder") from exc


def fetch(name, source=None, cache_dir=None, progress=True):
    """The verified downloaded file of ``name``'s ``source`` weights (downloaded if needed).

    A cached file is checked on every call. Where several processes share the cache, one of them
    downloads (holding ``<file>.lock``) and the others wait, then check the file it wrote."""
    src = get_source(name, source)
    directory = resolve_cache_dir(cache_dir)
    dest = os.path.join(directory, src.filename)
    url = source_url(src)
    if os.path.exists(dest):
        _check_cached(dest, src, url)
        return dest
    _ensure_directory(directory)
    with _cache_lock(dest):
        if os.path.exists(dest):  # another process wrote it while this one waited
            _check_cached(dest, src, url)
            return dest
        _remove_stale_temps(dest)
        return download_file(url, dest, src, progress=progress)


def _check_converted(path, origin):
    """A converted checkpoint must still be the file written by the conversion (recorded then)."""
    recorded, _ = _read_sidecar(path)
    digest = sha256_of(path)
    if recorded is None:  # converted before records were kept
        try:
            _write_sidecar(path, digest)
        except OSError as exc:
            _logger.warning("could not record the SHA-256 of %s (%s)", path, exc)
    elif digest != recorded:
        raise UserError(f"the converted checkpoint {path} has SHA-256 {digest}, but {recorded} was recorded "
                        f"when it was converted: it changed since. Delete it (rm {shlex.quote(path)}) and run "
                        f"again: it is converted again from {origin}.")
    return path


def _convert_into_cache(path, canonical, converted, src):
    """Convert ``path`` into ``converted`` (one writer: the caller holds its lock) through a unique
    staging name; record the result's SHA-256 before it appears under its name."""
    from ..convert import convert_file

    _remove_stale_temps(converted)
    fd, staging = _new_temp(converted, ".ckpt")
    os.close(fd)
    leftovers = (staging, staging + ".tmp", staging + ".tmp.ckpt", staging + ".tmp.tmp")
    try:
        _logger.info("converting %s into %s", path, converted)
        try:
            convert_file(path, canonical, staging)
        except UserError as exc:
            if _published(src)[0] is None:
                raise UserError(f"{exc} (the cached {path} has no published hash to check it against: if it "
                                f"is damaged, delete it and {_sidecar(path)}, and run again to download it "
                                f"anew)") from exc
            raise
        _write_sidecar(converted, sha256_of(staging), os.path.getsize(staging))
        os.replace(staging, converted)
    finally:
        for leftover in leftovers:
            if os.path.lexists(leftover):
                _remove_quietly(leftover)
    _fsync_dir(os.path.dirname(converted))
    return converted


def download_weights(name, source=None, cache_dir=None, progress=True):
    """Path of a MindSpore ``.ckpt`` holding ``name``'s published ``source`` weights.

    ``source``: 'mindcv' (default where MindCV published weights), 'timm' (Hugging Face
    safetensors, the default otherwise), 'official', 'timm_legacy', 'mindcv_910v2'.
    PyTorch files are converted once into ``<cache>/converted/`` (by one process where several
    share the cache). Without network, a ``UserError`` says which file to fetch from where and
    where to put it.
    """
    canonical = _canonical(name)
    src = get_source(canonical, source)
    if src.fmt == "ckpt":
        return fetch(canonical, src.tag, cache_dir, progress)
    directory = resolve_cache_dir(cache_dir)
    downloaded = os.path.join(directory, src.filename)

    def converted_path(digest):
        return os.path.join(directory, "converted", f"{canonical}-{src.tag}-{digest[:8]}.ckpt")

    recorded, _ = _read_sidecar(downloaded)
    if recorded and os.path.exists(converted_path(recorded)):  # the source was checked when converted
        return _check_converted(converted_path(recorded), downloaded)
    path = fetch(canonical, src.tag, cache_dir, progress)
    digest = _read_sidecar(path)[0] or sha256_of(path)
    converted = converted_path(digest)
    _ensure_directory(os.path.dirname(converted))
    with _cache_lock(converted):
        if os.path.exists(converted):  # converted by another process while this one waited
            return _check_converted(converted, path)
        return _convert_into_cache(path, canonical, converted, src)


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
