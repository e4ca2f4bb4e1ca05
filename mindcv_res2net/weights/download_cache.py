"""The weights cache's files: hash records, one writer per file.

- ``<file>.sha256`` records ``"<64 hex sha256> <size>"`` of a cached file; it is written (atomically)
  before the file appears under its name;
- files are written as every kept file is (:mod:`mindcv_res2net.atomic_io`: a unique staging name
  beside the target, fsync, rename); ``remove_stale_temps`` removes the staging files of killed
  processes;
- ``cache_lock(target)`` holds ``<target>.lock`` (``flock``) while one process produces ``target``;
  a symbolic link at that name is refused (``O_NOFOLLOW``), never written through.
"""
import contextlib
import errno
import glob
import logging
import os
import shlex
import socket
import time

from .. import atomic_io
from ..errors import UserError


_logger = logging.getLogger(__name__)

_HEX = set("0123456789abcdef")


# ---- records: "<64 hex sha256> <size>" in <file>.sha256 ---------------------------------------

def record_file(path):
    return path + ".sha256"


def read_record(path):
    """``(digest, size)`` recorded for ``path``; ``(None, None)`` without a record.

    A record that cannot be parsed is reported (it was edited or damaged by hand), never ignored:
    ignoring it would silently accept another file."""
    record = record_file(path)
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


def write_record(path, digest, size=None):
    """Record ``digest`` for ``path`` (atomically)."""
    size = os.path.getsize(path) if size is None else size
    atomic_io.write_text_atomic(record_file(path), f"{digest} {size}\n", "hash record")


def remove_stale_temps(target, older_than_s=3600):
    """Under ``target``'s lock: remove the staging files of ``target``'s folder left by killed
    processes (``atomic_io.remove_leftover_staging``), and those of ``target`` named as versions
    before 0.1.0 named them (``.<file>.<pid>.<random>.part`` ...) once unchanged for an hour (a live
    writer appends to its file continuously)."""
    directory, base = os.path.split(target)
    atomic_io.remove_leftover_staging(directory)
    base = glob.escape(base)
    now = time.time()
    for pattern in (f".{base}.*.part", f".{base}.*.tmp", f".{base}.*.ckpt*", f"{base}.*.part"):
        for path in glob.glob(os.path.join(glob.escape(directory), pattern)):
            try:
                if not atomic_io.is_staging_name(os.path.basename(path)) and now - os.path.getmtime(path) > older_than_s:
                    os.remove(path)
            except OSError:
                pass


# ---- one writer per cached file ---------------------------------------------------------------

_LOCKING_WARNED = []


@contextlib.contextmanager
def cache_lock(target):
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
            atomic_io.remove_quietly(lock)
            os.close(fd)


def _acquire(fcntl, lock, target):
    """An open descriptor holding ``lock`` exclusively, or None where locks are unavailable."""
    waited = False
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UserError(f"the lock file {lock} of the weights cache is a symbolic link: it is never "
                                f"written through a link (that would overwrite the file it points to). Remove it "
                                f"(rm {shlex.quote(lock)}) and run again.") from None
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
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return "holder unknown"
    try:
        return os.read(fd, 4096).decode(errors="replace").strip() or "holder unknown"
    except OSError:
        return "holder unknown"
    finally:
        os.close(fd)


def _warn_no_locking(lock, exc):
    if not _LOCKING_WARNED:
        _LOCKING_WARNED.append(lock)
        _logger.warning("cannot lock %s (%s): processes sharing this cache may each download the same "
                        "weights (they do not corrupt each other)", lock, exc)
