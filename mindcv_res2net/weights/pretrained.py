"""Published weights of the Res2Net family: fetching, caching, checking and loading them.

Each model registers its sources with its config (``ModelCfg.weights`` in ``models/res2net.py`` and
``models/res2net_dla.py``); ``get_pretrained_cfg(name)['sources']`` lists them:
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
while the others wait and then check the result (``weights_cache``: records, staging, locks).
"""
import codecs
import hashlib
import http.client
import json
import logging
import os
import shlex
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict

from . import torch_conversion as convert
from .model_loading import load_model_weights
from .. import atomic_io
from ..errors import UserError
from ..models.registry import (APACHE, CC_BY_NC_SA, ModelCfg, WeightSource, get_model_cfg, is_model, list_models,
                       resolve_name)
from .download_cache import cache_lock, read_record, record_file, remove_stale_temps, write_record

_logger = logging.getLogger(__name__)

ENV_CACHE = "MINDCV_RES2NET_CACHE"
ENV_BASE_URL = "MINDCV_RES2NET_WEIGHTS_URL"
ENV_SOURCE = "MINDCV_RES2NET_WEIGHTS_SOURCE"
DEFAULT_CACHE = os.path.join("~", ".cache", "mindcv_res2net")


def _preprocessing(cfg):
    """How the published weights were evaluated: the model config's input size, crop, interpolation,
    mean and std (``resize``: the short side before the centre crop)."""
    return {"input_size": tuple(cfg.input_size), "crop_pct": cfg.crop_pct,
            "resize": int(cfg.input_size[-1] / cfg.crop_pct), "interpolation": cfg.interpolation,
            "mean": tuple(cfg.mean), "std": tuple(cfg.std)}


PREPROCESSING = _preprocessing(ModelCfg())  # the ImageNet evaluation every published file uses


# ----------------------------------------------------------------------------------------------
# lookup: the sources registered with each model (models/res2net.py, models/res2net_dla.py)
# ----------------------------------------------------------------------------------------------

def models_with_weights():
    return list_models(pretrained=True, include_aliases=False)


def _registered(name):
    """``(canonical name, its registered WeightSource records)``; no records for an unknown name."""
    canonical = resolve_name(name)
    return canonical, (get_model_cfg(canonical).weights if is_model(canonical) else ())


def _sources(name):
    canonical, sources = _registered(name)
    if not sources:
        raise UserError(f"no published weights for {name!r}. Models with weights: {', '.join(models_with_weights())}. "
                        f"Train it, or pass a checkpoint (checkpoint_path / --ckpt_path).")
    return canonical, sources


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
    canonical, sources = _registered(name)
    if not sources:
        raise KeyError(name)
    return {
        "architecture": canonical,
        "default_source": default_source(canonical),
        "sources": {s.tag: {**asdict(s), "url": source_url(s), "check": _check_kind(s)} for s in sources},
        "preprocessing": _preprocessing(get_model_cfg(canonical)),
        "licence": {s.tag: s.licence for s in sources},
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


def _content_problem(path, fmt, hash_published=False):
    """Why the file at ``path`` cannot be ``fmt`` weights (None if it may be): its first bytes, and
    the size its own format declares.

    Catches what a server sends instead of the file (an error, login or 'moved' page), which is what
    breaks every later run when no hash is published, and a transfer cut short without a
    Content-Length (see ``_declared_size_problem``)."""
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
        if len(head) < 9 or head[8:9] != b"{" or length < 2:
            return "is not a safetensors file (no JSON header after the 8-byte length)"
        if 8 + length > size:
            return f"is cut short: it has {size} bytes, its safetensors header alone {8 + length} ({_CUT})"
    elif fmt == "pth":
        if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
            return "is not a PyTorch file (neither a zip archive nor a pickle)"
    return _declared_size_problem(path, fmt, size, head, hash_published)


_CUT = "the transfer stopped early or the file is damaged"
_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors format's own limit
_CKPT_MAX_ENTRIES = 4_000_000  # far more than any model's checkpoint: beyond it the walk stops


def _declared_size_problem(path, fmt, size, head, hash_published):
    """Whether the file is as long as its format says: safetensors (8 + header length + the largest
    ``data_offsets`` end), a zip archive (.pth of torch >= 1.6: the central directory at the end, each
    member inside the file), a MindSpore .ckpt (its protobuf entries, walked: only where no hash is
    published, which alone decides otherwise). A legacy-pickle .pth declares no size cheaply."""
    if fmt == "safetensors":
        return _safetensors_size_problem(path, size)
    if fmt == "pth" and head.startswith(b"PK\x03\x04"):
        return _zip_size_problem(path, size)
    if fmt == "ckpt" and not hash_published:
        return _ckpt_size_problem(path, size)
    return None


def _safetensors_size_problem(path, size):
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if length > _SAFETENSORS_MAX_HEADER:
            return f"is not a safetensors file (its header would be {length} bytes)"
        try:
            header = json.loads(f.read(length))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            if not all(isinstance(e, int) and e >= 0 for e in ends):
                raise ValueError("data_offsets")
        except (ValueError, AttributeError, KeyError, IndexError, TypeError):
            return "is not a safetensors file (its JSON header cannot be read)"
    declared = 8 + length + max(ends, default=0)
    if size < declared:
        return f"is cut short: it has {size} bytes, its safetensors header declares {declared} ({_CUT})"
    if size > declared:
        return f"has {size - declared} bytes after the end its safetensors header declares ({declared} bytes)"
    return None


def _zip_size_problem(path, size):
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            directory = getattr(archive, "start_dir", size)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return (f"is cut short: a zip archive (PyTorch file) of {size} bytes without its central directory at "
                f"the end ({_CUT})")
    for m in members:
        end = m.header_offset + 30 + len(m.orig_filename.encode("utf-8", "replace")) + m.compress_size
        if end > min(directory, size):
            return (f"is cut short: its zip member {m.filename} ends at byte {end}, past the data of this "
                    f"{size}-byte file ({_CUT})")
    return None


def _ckpt_size_problem(path, size):
    """A MindSpore .ckpt is a sequence of protobuf entries (field 1, length-delimited), optionally
    followed by MindSpore's 17-byte ``crc_num`` trailer. A cut that falls exactly between two entries
    cannot be seen."""
    pos = entries = 0
    with open(path, "rb") as f:
        while pos < size and entries < _CKPT_MAX_ENTRIES:
            f.seek(pos)
            head = f.read(11)
            if size - pos == 17 and head.startswith(b"crc_num"):
                return None
            length, used = _varint(head, 1)
            if head[:1] != b"\x0a" or length is None:
                return f"is not a MindSpore checkpoint (no checkpoint entry at byte {pos})"
            pos += used + length
            entries += 1
    if pos > size:
        return f"is cut short: it has {size} bytes, its last checkpoint entry ends at byte {pos} ({_CUT})"
    return None


def _varint(data, start):
    """``(value, bytes used incl. start)`` of the protobuf varint at ``data[start:]``; (None, 0) if bad."""
    value = 0
    for i, byte in enumerate(data[start:start + 10]):
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value, start + i + 1
    return None, 0


def _verify(path, src, url, digest=None, recorded=None, record_path=None):
    """Check a complete download at ``path`` before it is used: the published size and hash, the
    hash recorded by an earlier download of the same file (``recorded``; default: the record of
    ``path`` itself) and its first bytes. A bad file is deleted (with its own record, if any) and
    reported in one ``UserError``. Returns the full SHA-256."""
    size = os.path.getsize(path)
    digest = digest or sha256_of(path)
    if recorded is None:
        recorded, _ = read_record(path)
        record_path = record_file(path)
    problem = None
    if getattr(src, "size", None) is not None and size != src.size:
        problem = f"has {size} bytes, expected {src.size}"
    problem = problem or _digest_problem(digest, src, recorded, record_path) or \
        _content_problem(path, getattr(src, "fmt", None), _published(src)[0] is not None)
    if problem:
        atomic_io.remove_quietly(path, record_file(path))
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
    recorded, _ = read_record(dest)
    digest = sha256_of(dest)
    size = os.path.getsize(dest)
    problem = f"has {size} bytes, expected {src.size}" if src.size is not None and size != src.size else None
    problem = problem or _digest_problem(digest, src, recorded, record_file(dest)) or \
        _content_problem(dest, src.fmt, _published(src)[0] is not None)
    if problem:
        # the record goes too where it describes this very file or contradicts the published hash
        record_bad = recorded is not None and (recorded == digest or _digest_problem(recorded, src) is not None)
        delete = [dest] + ([record_file(dest)] if record_bad else [])
        why = ("it changed after it was downloaded and checked" if recorded and not record_bad else
               "it is not the published file (damaged, replaced, or saved from an error page)")
        raise UserError(f"the cached weights file {dest} {problem}: {why}. Delete it (rm "
                        f"{' '.join(shlex.quote(p) for p in delete)}) and run again to download a fresh "
                        f"copy from {url}, or put a good copy there.")
    if recorded is None:
        try:
            write_record(dest, digest)
        except OSError as exc:  # a read-only cache: the file is checked on every load anyway
            _logger.warning("could not record the SHA-256 of %s (%s)", dest, exc)
        if _published(src)[0] is None:
            _logger.warning("%s has no published hash; recorded its SHA-256 %s in %s", dest, digest,
                            record_file(dest))
    return digest


# ---- downloading ------------------------------------------------------------------------------

def download_file(url, dest, src, progress=True, timeout=60):
    """Fetch ``url`` into ``dest`` through a uniquely named staging file; hash while writing;
    verify (see ``_verify``: against the published hash and ``dest``'s record, if any); record the
    full SHA-256 in ``dest.sha256``; rename onto ``dest``. Callers sharing a cache hold
    ``cache_lock(dest)`` (``fetch`` does)."""
    from tqdm import tqdm

    directory = os.path.dirname(dest)
    os.makedirs(directory, exist_ok=True)
    recorded, _ = read_record(dest)
    fd, part = atomic_io.create_staging(dest, ".part")
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
        atomic_io.remove_quietly(part)
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # no network, HTTP errors, timeouts, a connection cut mid-file
        atomic_io.remove_quietly(part)
        reason = exc if isinstance(exc, urllib.error.HTTPError) else (getattr(exc, "reason", None) or exc)
        raise UserError(f"could not download the {src.tag} weights {src.filename} from {url} ({reason}). "
                        + _manual_instructions(src, url, directory)) from exc
    except BaseException:
        atomic_io.remove_quietly(part)
        raise
    digest = _verify(part, src, url, h.hexdigest(), recorded=recorded or "", record_path=record_file(dest))
    try:
        write_record(dest, digest, got)  # the record first: the file never appears without it
    except BaseException:
        atomic_io.remove_quietly(part)
        raise
    atomic_io.commit_staged(part, dest, "downloaded weights")
    kind, value = _published(src)
    if kind == "prefix":
        _logger.info("%s: SHA-256 starts with the published %s (only %d hex digits are published); its full "
                     "SHA-256 %s is recorded in %s and checked on every later load", src.filename, value,
                     len(value), digest, record_file(dest))
    elif kind is None and not recorded:
        _logger.warning("%s has no published hash; recorded its SHA-256 %s in %s and checked on every later "
                        "load", src.filename, digest, record_file(dest))
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
    with cache_lock(dest):
        if os.path.exists(dest):  # another process wrote it while this one waited
            _check_cached(dest, src, url)
            return dest
        remove_stale_temps(dest)
        return download_file(url, dest, src, progress=progress)


def _check_converted(path, origin):
    """A converted checkpoint must still be the file written by the conversion (recorded then)."""
    recorded, _ = read_record(path)
    digest = sha256_of(path)
    if recorded is None:  # converted before records were kept
        try:
            write_record(path, digest)
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
    remove_stale_temps(converted)
    fd, staging = atomic_io.create_staging(converted, ".ckpt")
    os.close(fd)
    leftovers = (staging, staging + ".tmp", staging + ".tmp.ckpt", staging + ".tmp.tmp")
    try:
        _logger.info("converting %s into %s", path, converted)
        try:
            convert.convert_file(path, canonical, staging)
        except UserError as exc:
            if _published(src)[0] is None:
                raise UserError(f"{exc} (the cached {path} has no published hash to check it against: if it "
                                f"is damaged, delete it and {record_file(path)}, and run again to download it "
                                f"anew)") from exc
            raise
        write_record(converted, sha256_of(staging), os.path.getsize(staging))
        atomic_io.commit_staged(staging, converted, "converted checkpoint")
    finally:
        atomic_io.remove_quietly(*leftovers)
    return converted


def download_weights(name, source=None, cache_dir=None, progress=True):
    """Path of a MindSpore ``.ckpt`` holding ``name``'s published ``source`` weights.

    ``source``: 'mindcv' (default where MindCV published weights), 'timm' (Hugging Face
    safetensors, the default otherwise), 'official', 'timm_legacy', 'mindcv_910v2'.
    PyTorch files are converted once into ``<cache>/converted/`` (by one process where several
    share the cache). Without network, a ``UserError`` says which file to fetch from where and
    where to put it.
    """
    canonical = resolve_name(name)
    src = get_source(canonical, source)
    if src.fmt == "ckpt":
        return fetch(canonical, src.tag, cache_dir, progress)
    directory = resolve_cache_dir(cache_dir)
    downloaded = os.path.join(directory, src.filename)

    def converted_path(digest):
        return os.path.join(directory, "converted", f"{canonical}-{src.tag}-{digest[:8]}.ckpt")

    recorded, _ = read_record(downloaded)
    if recorded and os.path.exists(converted_path(recorded)):  # the source was checked when converted
        return _check_converted(converted_path(recorded), downloaded)
    path = fetch(canonical, src.tag, cache_dir, progress)
    digest = read_record(path)[0] or sha256_of(path)
    converted = converted_path(digest)
    _ensure_directory(os.path.dirname(converted))
    with cache_lock(converted):
        if os.path.exists(converted):  # converted by another process while this one waited
            return _check_converted(converted, path)
        return _convert_into_cache(path, canonical, converted, src)


def load_pretrained(net, name, num_classes=None, in_channels=None, source=None, cache_dir=None, progress=True):
    """Load ``name``'s published weights into ``net`` (classifier dropped for another number of
    classes, first conv adapted for other input channels). Returns the ``LoadReport``."""
    canonical = resolve_name(name)
    src = get_source(canonical, source)
    if src.licence != APACHE:
        _logger.info("%s %s weights: licence %s", canonical, src.tag, src.licence)
    path = download_weights(canonical, src.tag, cache_dir=cache_dir, progress=progress)
    return load_model_weights(net, path, strict=True, num_classes=num_classes, in_channels=in_channels,
                              model_name=canonical)


__all__ = ["WeightSource", "get_pretrained_cfg", "get_source", "default_source", "download_weights",
           "load_pretrained", "fetch", "download_file", "source_url", "resolve_cache_dir", "models_with_weights",
           "sha256_of", "PREPROCESSING", "ENV_CACHE", "ENV_BASE_URL", "ENV_SOURCE", "APACHE", "CC_BY_NC_SA"]
